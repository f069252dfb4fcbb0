// flock(2), which Node core lacks: the map's, the queue's and the who
// journal's locks, with a deadline, waited for on a helper thread.

#include <napi.h>

#include <errno.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace {

// A waiter blocks in flock() on a helper thread, so the kernel wakes it when
// the lock is released; the calling thread waits for that with a deadline.
// Polling instead costs a wakeup per waiter per tick and loses races to
// writers that relock at once. The helper works on a dup of the fd: flock locks belong to the
// open file description, so a lock it takes is the caller's lock.
struct LockWait {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  bool abandoned = false;
  int err = 0;
};

void WaitInThread(std::shared_ptr<LockWait> w, int dupfd, int how) {
  int r;
  do {
    r = flock(dupfd, how);
  } while (r != 0 && errno == EINTR);
  int err = r == 0 ? 0 : errno;
  std::lock_guard<std::mutex> g(w->m);
  if (w->abandoned) {
    // The caller gave up and closed its fd; drop what we got.
    if (r == 0) flock(dupfd, LOCK_UN);
  } else {
    w->done = true;
    w->err = err;
    w->cv.notify_one();
  }
  close(dupfd);
}

Napi::Error FlockError(Napi::Env env, int err) {
  Napi::Error e = Napi::Error::New(env, std::string("flock: ") + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  return e;
}

}  // namespace

// flock(fd, 'sh'|'ex'|'un', timeoutMs) -> true when held (or released),
// false when another holder still had it at the deadline (0: do not wait).
Napi::Value Flock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  std::string op = info[1].As<Napi::String>().Utf8Value();
  double timeoutMs = info[2].As<Napi::Number>().DoubleValue();
  int how;
  if (op == "sh") how = LOCK_SH;
  else if (op == "ex") how = LOCK_EX;
  else if (op == "un") how = LOCK_UN;
  else throw Napi::TypeError::New(env, "flock operation must be sh, ex or un");

  int r;
  do {
    r = flock(fd, how | (how == LOCK_UN ? 0 : LOCK_NB));
  } while (r != 0 && errno == EINTR);
  if (r == 0) return Napi::Boolean::New(env, true);
  if (errno != EWOULDBLOCK) throw FlockError(env, errno);
  if (timeoutMs <= 0) return Napi::Boolean::New(env, false);

  int dupfd = dup(fd);
  if (dupfd < 0) throw FlockError(env, errno);
  auto w = std::make_shared<LockWait>();
  std::thread(WaitInThread, w, dupfd, how).detach();
  std::unique_lock<std::mutex> lk(w->m);
  if (!w->cv.wait_for(lk, std::chrono::duration<double, std::milli>(timeoutMs), [&] { return w->done; })) {
    w->abandoned = true;
    return Napi::Boolean::New(env, false);
  }
  if (w->err != 0) throw FlockError(env, w->err);
  return Napi::Boolean::New(env, true);
}

