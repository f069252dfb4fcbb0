/* poprelay-login: the Dovecot post-login script (poprelay-login(8)).
 *
 * Dovecot runs it with the client connection on fds 0 and 1, its log on 2,
 * the socket back to the mail process on 3, and as arguments the options
 * from the executable line, then the command that continues the login
 * (script-login). The client waits for this program, not for Node: it
 * leaves the login in the queue beside the map and continues the login,
 * and one recorder (dist/poprelay-login.cjs) at a time records every login
 * left there. docs/design.md has the protocol as a state table; in short,
 * the queue directory's flock is the only sign of a running recorder: a
 * front leaves its login, then tries the lock; busy, the holder looks at the
 * queue after it lets go, so this front becomes the login; free, it runs a
 * recorder. Without a command (IP=192.0.2.7 poprelay-login) it only records.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "protocol.h"

/* Dovecot's log pipe: "\1", the type + 1 ("\4" error, "\3" warning), the pid. */
static void say(char type, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  int n = snprintf(line, sizeof line, "\001%c%ld poprelay: ", type, (long)getpid());
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = strlen(line);
  line[len] = '\n';
  (void)!write(2, line, len + 1);
}

/* How to start the recorder: recorder.conf beside this program's file
 * (written by the build, the installer or the package's postinst), read only
 * when a recorder is to start. */
struct recorder {
  char text[4096];
  const char *node;
  const char *script;
  char *argv[24];
  int flags;
};

static int read_recorder(struct recorder *r) {
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 32);
  if (n <= 0) return -1;
  path[n] = '\0';
  char *slash = strrchr(path, '/');
  if (slash == NULL) return -1;
  strcpy(slash + 1, "recorder.conf");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    say('\4', "not recorded: cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  n = read(fd, r->text, sizeof r->text - 1);
  close(fd);
  if (n < 0) n = 0;
  r->text[n] = '\0';
  r->node = r->script = NULL;
  r->flags = 0;
  char *flags = NULL;
  for (char *line = strtok(r->text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
    if (strncmp(line, "node=", 5) == 0) r->node = line + 5;
    else if (strncmp(line, "script=", 7) == 0) r->script = line + 7;
    else if (strncmp(line, "flags=", 6) == 0) flags = line + 6;
  }
  if (r->node == NULL || r->script == NULL) {
    say('\4', "not recorded: %s gives no node= or script= line", path);
    return -1;
  }
  r->argv[0] = (char *)r->node;
  for (char *f = flags == NULL ? NULL : strtok(flags, " "); f != NULL && r->flags < 8; f = strtok(NULL, " "))
    r->argv[1 + r->flags++] = f;
  r->argv[1 + r->flags] = (char *)r->script;
  return 0;
}

/* The recorder's arguments: its own, then the options Dovecot gave (options[0..count)). */
static char **recorder_argv(struct recorder *r, char **own, char **options, int count) {
  static char *argv[256];
  int n = 0;
  for (int i = 0; i <= r->flags + 1; i++) argv[n++] = r->argv[i];
  for (int i = 0; own[i] != NULL; i++) argv[n++] = own[i];
  for (int i = 0; i < count && n < 255; i++) argv[n++] = options[i];
  argv[n] = NULL;
  return argv;
}

static int only(const char *s, const char *chars, size_t max) {
  size_t n = strlen(s);
  return n <= max && strspn(s, chars) == n;
}

/* The queue, opened without following a link, when no other account can
 * write names into it or into the map's directory, or open it (and so hold
 * its lock): owned by this process's user, as is the map's directory.
 * Otherwise -1, and the login is recorded directly: run as root where the
 * map belongs to the hook's user, the recorder first takes that user's
 * rights, and this program writes nothing there. */
static int open_queue(const char *queue) {
  char parent[PATH_MAX];
  const char *slash = strrchr(queue, '/');
  if (queue[0] != '/' || slash == NULL || slash[1] == '\0' || (size_t)(slash - queue) >= sizeof parent) return -1;
  size_t len = slash == queue ? 1 : (size_t)(slash - queue);
  memcpy(parent, queue, len);
  parent[len] = '\0';
  int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (pfd < 0) return -1;
  struct stat ps, qs;
  int qfd = -1;
  uid_t me = geteuid();
  if (fstat(pfd, &ps) == 0 && ps.st_uid == me && (ps.st_mode & 022) == 0)
    qfd = openat(pfd, slash + 1, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  close(pfd);
  if (qfd < 0) return -1;
  if (fstat(qfd, &qs) != 0 || qs.st_uid != me) {
    close(qfd);
    return -1;
  }
  if ((qs.st_mode & 077) != 0) {
    /* Older installations made it 0755; the recorder that records this login directly makes it 0700. */
    say('\3', "the login queue %s can be opened by other accounts (mode %04o), who could hold its lock: recording this login directly",
        queue, (unsigned)(qs.st_mode & 07777));
    close(qfd);
    return -1;
  }
  /* Above 3, whatever Dovecot left open: fds 0, 1 and 3 become /dev/null later. */
  int high = fcntl(qfd, F_DUPFD_CLOEXEC, 10);
  close(qfd);
  return high;
}

/* Leaves the login: an empty file created with O_EXCL, which follows no link and opens no FIFO. */
static int leave_login(int qfd, const char *ip, const char *tag, const char *user) {
  char name[256];
  snprintf(name, sizeof name, "f%ld_%s_%s_%s", (long)getpid(), ip, tag, user);
  int fd = openat(qfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  close(fd);
  return 0;
}

/* Whether a login waits in the queue (a regular file at a name f[0-9]*_*); with `since`, one stamped after
 * it (a file system that stamps coarsely may stamp one left just after it earlier: that login waits for the
 * next recorder or the sweep). */
static int waiting(int qfd, const struct timespec *since) {
  int fd = openat(qfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *dir = fd < 0 ? NULL : fdopendir(fd);
  if (dir == NULL) {
    if (fd >= 0) close(fd);
    return 0;
  }
  int found = 0;
  struct dirent *e;
  while (!found && (e = readdir(dir)) != NULL) {
    const char *n = e->d_name;
    if (n[0] != 'f' || n[1] < '0' || n[1] > '9' || strchr(n + 2, '_') == NULL) continue;
    struct stat st;
    if (fstatat(dirfd(dir), n, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    found = since == NULL || st.st_mtim.tv_sec > since->tv_sec ||
            (st.st_mtim.tv_sec == since->tv_sec && st.st_mtim.tv_nsec > since->tv_nsec);
  }
  closedir(dir);
  return found;
}

/* Dovecot's signal settings, which the continued login gets back. */
static sigset_t dovecot_mask;
static struct sigaction dovecot_chld;

/* Runs the command that continues the login, as `exec "$@"` would: with
 * Dovecot's signal settings; exits 1 when it cannot. */
static void become_login(char **command) {
  sigaction(SIGCHLD, &dovecot_chld, NULL);
  signal(SIGALRM, SIG_DFL);
  sigprocmask(SIG_SETMASK, &dovecot_mask, NULL);
  execvp(command[0], command);
  say('\4', "cannot continue the login: cannot run \"%s\": %s", command[0], strerror(errno));
  _exit(1);
}

/* Continues the login in a child, then lets go of the client's fds and the
 * socket back to the mail process (as /dev/null, so nothing opened later
 * takes their numbers): holding them would delay the client's disconnect. */
static pid_t continue_login(char **command) {
  /* Dovecot may leave SIGCHLD ignored, which would make its children unwaitable. */
  signal(SIGCHLD, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  pid_t pid = fork();
  if (pid == 0) become_login(command);
  if (pid < 0) {
    say('\4', "cannot continue the login: fork: %s", strerror(errno));
    exit(1);
  }
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 3);
    close(null);
  }
  return pid;
}

static volatile sig_atomic_t alarmed;
static void on_alarm(int sig) {
  (void)sig;
  alarmed = 1;
}

/* Runs the recorder at nice 10 (the logins going on meanwhile get the CPU
 * first), with one malloc arena (Node then fits Dovecot's default
 * vsz_limit), bounded by RUN_SECONDS (Node can hang at start under a low
 * vsz_limit): a stuck recorder cannot keep its post-login slot. Its status,
 * or -1 when it was stopped. */
static int run_recorder(char **argv, int lock_fd) {
  pid_t pid = fork();
  if (pid == 0) {
    if (lock_fd >= 0 && dup2(lock_fd, LOCK_FD) < 0) _exit(127);
    errno = 0;
    (void)!nice(RECORDER_NICE);
    setenv("MALLOC_ARENA_MAX", "1", 1);
    execv(argv[0], argv);
    say('\4', "not recorded: cannot run %s: %s", argv[0], strerror(errno));
    _exit(127);
  }
  if (pid < 0) {
    say('\4', "not recorded: fork: %s", strerror(errno));
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  alarmed = 0;
  alarm(RUN_SECONDS);
  int status, stopped = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return 1;
    if (alarmed) {
      alarmed = 0;
      kill(pid, stopped ? SIGKILL : SIGTERM);
      stopped = 1;
      alarm(KILL_GRACE_SECONDS);
    }
  }
  alarm(0);
  if (stopped || !WIFEXITED(status) || WEXITSTATUS(status) > 1) {
    if (stopped)
      say('\4', "not recorded: the recorder (%s %s) was stopped after %d s", argv[0], argv[1], RUN_SECONDS);
    else if (WIFSIGNALED(status))
      say('\4', "not recorded: the recorder (%s) ended with status %d, killed by signal %d", argv[0],
          128 + WTERMSIG(status), WTERMSIG(status));
    else
      say('\4', "not recorded: the recorder (%s) ended with status %d", argv[0], WEXITSTATUS(status));
    return -1;
  }
  return WEXITSTATUS(status);
}

/* The continued login's wait status, once reaped. */
static int login_reaped, login_wstatus;

/* Lets the continued login go first: script-login hands the client back to
 * the mail process, which then answers it, and a recorder's Node start
 * beside it on a small machine would delay that answer. Bounded by `ms`: a
 * login that goes on longer is not waited for. */
static void let_login_go_first(pid_t login, long ms) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  struct timespec now, end;
  clock_gettime(CLOCK_MONOTONIC, &end);
  end.tv_nsec += ms * 1000000L;
  end.tv_sec += end.tv_nsec / 1000000000L;
  end.tv_nsec %= 1000000000L;
  for (;;) {
    if (waitpid(login, &login_wstatus, WNOHANG) == login) {
      login_reaped = 1;
      break;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    long left = (end.tv_sec - now.tv_sec) * 1000000000L + (end.tv_nsec - now.tv_nsec);
    if (left <= 0) break;
    struct timespec wait = {left / 1000000000L, left % 1000000000L};
    if (sigtimedwait(&chld, NULL, &wait) < 0 && errno == EAGAIN) break;
  }
  sigprocmask(SIG_UNBLOCK, &chld, NULL);
}

static int login_status(pid_t login) {
  while (!login_reaped && waitpid(login, &login_wstatus, 0) < 0)
    if (errno != EINTR) return 1;
  return WIFEXITED(login_wstatus) ? WEXITSTATUS(login_wstatus) : 128 + WTERMSIG(login_wstatus);
}

int main(int argc, char **argv) {
  sigaction(SIGCHLD, NULL, &dovecot_chld);
  sigprocmask(SIG_SETMASK, NULL, &dovecot_mask);
  /* The options come first; the first other word starts the command. */
  const char *tag = "", *queue = NULL;
  int config = getenv("POPRELAY_CONFIG") != NULL && getenv("POPRELAY_CONFIG")[0] != '\0';
  int cmd = 1;
  while (cmd < argc) {
    const char *w = argv[cmd];
    if (strcmp(w, "--") == 0) {
      cmd++;
      break;
    }
    if (w[0] != '-') break;
    if (strcmp(w, "--config") == 0 || strcmp(w, "--tag") == 0 || strcmp(w, "--queue") == 0) {
      if (cmd + 1 >= argc) {
        cmd = argc;
        break;
      }
      if (w[2] == 't') tag = argv[cmd + 1];
      else if (w[2] == 'q') queue = argv[cmd + 1];
      else config = 1;
      cmd++;
    }
    cmd++;
  }
  char **options = argv + 1, **command = argv + cmd;
  int count = cmd - 1;
  struct recorder r;

  if (cmd == argc) {
    /* No command: record by hand. */
    char *own[] = {NULL};
    if (read_recorder(&r) != 0) return 1;
    char **rargv = recorder_argv(&r, own, options, count);
    setenv("MALLOC_ARENA_MAX", "1", 1);
    execv(rargv[0], rargv);
    fprintf(stderr, "poprelay-login: cannot run %s: %s\n", rargv[0], strerror(errno));
    return 1;
  }

  /* A login the front can vouch for goes to the queue: $IP, $USER and the
   * tag made of the characters of an address, a plain user name and a word,
   * and a queue named on the executable line (or the default one, where no
   * other config is named: the recorder checks it against dbfile). */
  const char *ip = getenv("IP"), *user = getenv("USER");
  if (user == NULL) user = "";
  if (queue == NULL && !config) queue = DEFAULT_QUEUE;
  int qfd = -1;
  if (queue != NULL && ip != NULL && ip[0] != '\0' && only(ip, IP_CHARS, IP_MAX) && only(user, USER_CHARS, USER_MAX) &&
      only(tag, TAG_CHARS, TAG_MAX))
    qfd = open_queue(queue);
  if (qfd >= 0 && leave_login(qfd, ip, tag, user) != 0) {
    close(qfd);
    qfd = -1;
  }

  pid_t login = 0;
  if (qfd >= 0) {
    char fd_text[16], front[24];
    snprintf(fd_text, sizeof fd_text, "%d", LOCK_FD);
    snprintf(front, sizeof front, "%ld", (long)getpid());
    char *own[] = {"--dovecot-log", "--drain", (char *)queue, "--lock-fd", fd_text, "--front", front, NULL};
    char **rargv = NULL;
    struct timespec started = {0, 0};
    int failed = 0;
    for (int round = 0; round < MAX_ROUNDS; round++) {
      /* Busy: the holder looks at the queue after it lets go, and sees this login. */
      if (flock(qfd, LOCK_EX | LOCK_NB) != 0) break;
      if (!waiting(qfd, NULL)) {
        /* Another recorder took it meanwhile. Let go, then look again: a login left while this
         * front held the lock found it busy and counts on this look. */
        flock(qfd, LOCK_UN);
        if (waiting(qfd, NULL)) continue;
        break;
      }
      if (rargv == NULL) {
        if (read_recorder(&r) != 0) break;
        rargv = recorder_argv(&r, own, options, count);
      }
      if (login == 0) {
        login = continue_login(command);
        let_login_go_first(login, LOGIN_FIRST_MS);
      }
      /* The fine clock: a file stamped before it (finely or coarsely) was left before the recorder started. */
      clock_gettime(CLOCK_REALTIME, &started);
      int status = run_recorder(rargv, qfd);
      failed = status != 0;
      flock(qfd, LOCK_UN);
      /* A recorder that failed said why for each login it saw, and another would fail alike: look
       * only for logins left since it started. The next recorder or the sweep takes the others. */
      if (!waiting(qfd, failed ? &started : NULL)) break;
    }
    close(qfd);
    if (login == 0) become_login(command);
    return login_status(login);
  }

  /* Whatever the front cannot vouch for is recorded directly, by a recorder of its own. */
  login = continue_login(command);
  let_login_go_first(login, LOGIN_FIRST_MS);
  if (read_recorder(&r) == 0) {
    char *own[] = {"--dovecot-log", NULL};
    run_recorder(recorder_argv(&r, own, options, count), -1);
  }
  return login_status(login);
}
