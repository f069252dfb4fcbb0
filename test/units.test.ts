// The shipped systemd units as systemd itself rates and reads them, offline
// (systemd need not run): systemd-analyze security within the bounds set for
// them (poprelayd.service 2.0, poprelay-sweep.service 3.0), and
// systemd-analyze verify without a complaint. No score sees what the
// programs need, so that is checked too: the system calls Node, libdb and
// doveadm were seen to make pass each unit's filter, the sweep can still
// become the map's owner, Node keeps its JIT, and the lines that
// scripts/install.sh and the Debian package rewrite are still there.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';

import { ROOT } from './support/paths.js';

const UNITS = join(ROOT, 'etc/systemd');
const SERVICES = ['poprelayd.service', 'poprelay-sweep.service'] as const;
type Service = (typeof SERVICES)[number];

/** The bounds for systemd-analyze security's overall exposure: a service exposed to the network, and root's sweep. */
const MAX_EXPOSURE: Record<Service, number> = { 'poprelayd.service': 2.0, 'poprelay-sweep.service': 3.0 };

/**
 * The system calls each program made under the unit's sandbox (strace -f,
 * Node 20, 22 and 24): the sweep asking Dovecot 2.3 and 2.4 (doveadm who),
 * sweeping and writing metrics_file, and sending the engine its sessions
 * over TCP, a UNIX socket and a host name; poprelayd answering the policy,
 * socketmap and readsocket protocols and mirroring the engine into the map.
 */
const SEEN: Record<Service, string[]> = {
  'poprelay-sweep.service': (
    'access arch_prctl brk capget clone clone3 close connect dup2 epoll_create epoll_create1 epoll_ctl ' +
    'epoll_pwait epoll_wait eventfd2 execve exit exit_group fchmod fcntl fdatasync flock fstat fsync futex ' +
    'getcwd getdents64 getegid geteuid getgid getpeername getpid getrandom getsockname getsockopt gettid ' +
    'getuid io_uring_enter io_uring_setup ioctl lseek madvise mmap mprotect munmap newfstatat openat pipe2 ' +
    'pkey_alloc poll prctl pread64 prlimit64 pwrite64 read readlink recvfrom rename rseq rt_sigaction ' +
    'rt_sigprocmask rt_sigreturn sched_getaffinity sendto set_robust_list set_tid_address setgid setgroups ' +
    'setsockopt setuid shutdown socket socketpair statx sysinfo tgkill uname unlink wait4 write'
  ).split(' '),
  'poprelayd.service': (
    'accept4 access arch_prctl bind brk capget chmod clock_nanosleep clone clone3 close connect epoll_create1 ' +
    'epoll_ctl epoll_pwait eventfd2 execve exit exit_group fchmod fcntl fdatasync flock fstat fsync futex ' +
    'getcwd getdents64 getegid geteuid getgid getpid getrandom getsockopt gettid getuid io_uring_enter ' +
    'io_uring_setup ioctl listen lseek madvise mmap mprotect munmap newfstatat openat pipe2 pkey_alloc prctl ' +
    'pread64 prlimit64 pwrite64 read readlink rename rseq rt_sigaction rt_sigprocmask rt_sigreturn ' +
    'sched_getaffinity sched_getparam sched_getscheduler sched_yield set_robust_list set_tid_address ' +
    'setsockopt shutdown socket statx sysinfo uname unlink write writev'
  ).split(' '),
};

/** Parse warnings go to stderr, where the tests see them, not to a journal. */
const ENV = { SYSTEMD_LOG_TARGET: 'console', SYSTEMD_COLORS: '0', SYSTEMD_PAGER: '' };

/** Why systemd-analyze cannot judge the units here, or null. --offline came with systemd 250. */
function whyNoAnalyze(): string | null {
  const r = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined) return `systemd-analyze is not installed (${(r.error as NodeJS.ErrnoException).code})`;
  const version = Number(/^systemd (\d+)/.exec(r.stdout)?.[1]);
  if (!(version >= 250)) return `systemd-analyze ${r.stdout.split('\n')[0]} has no security --offline (systemd 250)`;
  return null;
}
const NO_ANALYZE = whyNoAnalyze();
if (NO_ANALYZE !== null) console.log(`units.test.ts: the systemd-analyze tests are skipped: ${NO_ANALYZE}`);
const needAnalyze = (ctx: TestContext): void => {
  if (NO_ANALYZE !== null) ctx.skip(NO_ANALYZE);
};

/** Every value each directive is given, in order ("Key=" lines; comments and sections left out). */
function directives(text: string): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m?.[1] === undefined || m[2] === undefined) continue;
    found.set(m[1], [...(found.get(m[1]) ?? []), m[2].trim()]);
  }
  return found;
}

const unitText = (name: string): string => readFileSync(join(UNITS, name), 'utf8');
const unit = (name: Service): Map<string, string[]> => directives(unitText(name));
const values = (u: Map<string, string[]>, key: string): string[] => u.get(key) ?? [];
/** The value systemd applies: the last one given. */
const last = (u: Map<string, string[]>, key: string): string | undefined => values(u, key).at(-1);

async function exposure(path: string): Promise<{ score: number; stderr: string }> {
  const r = await execa('systemd-analyze', ['security', '--offline=true', '--no-pager', path], {
    reject: false,
    env: ENV,
  });
  const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(r.stdout);
  if (m?.[1] === undefined) throw new Error(`no overall exposure in: ${r.stdout}\n${r.stderr}`);
  return { score: Number(m[1]), stderr: r.stderr };
}

/** systemd's syscall groups by name, as this systemd-analyze defines them. */
async function syscallGroups(): Promise<Map<string, string[]>> {
  const r = await execa('systemd-analyze', ['syscall-filter', '--no-pager'], { env: ENV });
  const groups = new Map<string, string[]>();
  let current: string[] | null = null;
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('@')) groups.set(/^@[\w-]+/.exec(line)?.[0] ?? line, (current = []));
    else if (line.trim() === '' || line.startsWith('#')) current = null;
    else if (current !== null && !line.trim().startsWith('#')) current.push(line.trim());
  }
  return groups;
}

/**
 * The calls a unit's SystemCallFilter= lines let through, as systemd reads
 * them: an allow list starts from @default, and each "~" line takes away.
 */
function allowedBy(filters: readonly string[], groups: Map<string, string[]>): Set<string> {
  const expand = (word: string, into: Set<string>): Set<string> => {
    if (!word.startsWith('@')) return into.add(word);
    const members = groups.get(word);
    if (members === undefined) throw new Error(`unknown syscall group ${word}`);
    for (const w of members) expand(w, into);
    return into;
  };
  if (filters.length === 0 || filters[0]?.startsWith('~')) throw new Error('expected an allow list first');
  const allowed = expand('@default', new Set());
  for (const line of filters) {
    const deny = line.startsWith('~');
    for (const word of (deny ? line.slice(1) : line).split(/\s+/).filter((w) => w !== '')) {
      for (const call of expand(word, new Set())) {
        if (deny) allowed.delete(call);
        else allowed.add(call);
      }
    }
  }
  return allowed;
}

describe('systemd-analyze', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'poprelay-units-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.for(SERVICES)('security rates %s within its bound, and reads every line', async (name, ctx) => {
    needAnalyze(ctx);
    const { score, stderr } = await exposure(join(UNITS, name));
    expect(stderr).toBe('');
    expect(score).toBeLessThanOrEqual(MAX_EXPOSURE[name]);
  });

  it('rates a unit without the sandbox above both bounds (so the bounds can fail)', async (ctx) => {
    needAnalyze(ctx);
    const bare = join(dir, 'bare.service');
    writeFileSync(bare, '[Service]\nType=oneshot\nExecStart=/bin/true\n');
    expect((await exposure(bare)).score).toBeGreaterThan(Math.max(...Object.values(MAX_EXPOSURE)));
  });

  /** Copies of the units in `dir`, each ExecStart run by /bin/true (verify wants the program to exist), edited by `edit`. */
  const copies = (edit: (text: string) => string = (t) => t): string[] =>
    [...SERVICES, 'poprelay-sweep.timer'].map((name) => {
      const path = join(dir, name);
      writeFileSync(path, edit(unitText(name).replace(/^ExecStart=\S+/m, 'ExecStart=/bin/true')));
      return path;
    });
  const verify = (paths: string[]) =>
    execa('systemd-analyze', ['verify', '--man=no', ...paths], { reject: false, env: ENV, cwd: dir });

  it('verify accepts the units, and the timer with its service, without a complaint', async (ctx) => {
    needAnalyze(ctx);
    const r = await verify(copies());
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
  });

  it('verify complains of a misspelt directive (so that check can fail)', async (ctx) => {
    needAnalyze(ctx);
    const r = await verify(copies((t) => t.replace(/^ProtectProc=/m, 'ProtectProcess=')));
    expect(r.stderr).toMatch(/Unknown key.*ProtectProcess/);
  });

  it.for(SERVICES)("%s's filter lets through every system call the programs were seen to make", async (name, ctx) => {
    needAnalyze(ctx);
    const allowed = allowedBy(values(unit(name), 'SystemCallFilter'), await syscallGroups());
    expect(SEEN[name].filter((call) => !allowed.has(call))).toEqual([]);
    // The same reading catches a filter that would starve them.
    const starved = allowedBy(['@system-service', '~@sync'], await syscallGroups());
    expect(SEEN[name].filter((call) => !starved.has(call))).toContain('fsync');
  });
});

describe('what the programs need, which no score sees', () => {
  it('the sweep runs as root and can become the map owner', () => {
    const u = unit('poprelay-sweep.service');
    expect(u.has('User')).toBe(false);
    // PrivateUsers= would leave the owner unmapped: setuid to it fails.
    expect(last(u, 'PrivateUsers') ?? 'no').toBe('no');
    expect(last(u, 'CapabilityBoundingSet')?.split(/\s+/).sort()).toEqual(['CAP_SETGID', 'CAP_SETUID']);
  });

  it('poprelayd runs as poprelay, without capabilities, and is restarted when it fails', () => {
    const u = unit('poprelayd.service');
    expect(last(u, 'User')).toBe('poprelay');
    expect(last(u, 'CapabilityBoundingSet')).toBe('');
    expect(last(u, 'Restart')).toBe('on-failure');
    expect(last(u, 'RuntimeDirectory')).toBe('poprelay');
  });

  it.for(SERVICES)("%s keeps Node's JIT, /proc/self/fd, and the sockets the engine and the MTAs use", (name) => {
    const u = unit(name);
    // V8 crashes under MemoryDenyWriteExecute=yes (nodejs#55509).
    expect(last(u, 'MemoryDenyWriteExecute') ?? 'no').toBe('no');
    expect(last(u, 'ProcSubset') ?? 'all').toMatch(/^(all|pid)$/);
    expect(last(u, 'RestrictAddressFamilies')?.split(/\s+/).sort()).toEqual(['AF_INET', 'AF_INET6', 'AF_UNIX']);
    expect(u.has('PrivateNetwork')).toBe(false);
    expect(u.has('IPAddressDeny')).toBe(false);
  });

  it("each may write where its work is: the map directory, and for the sweep node_exporter's", () => {
    expect(values(unit('poprelay-sweep.service'), 'ReadWritePaths')).toEqual([
      '/var/lib/poprelay',
      '-/var/lib/prometheus/node-exporter',
    ]);
    expect(values(unit('poprelayd.service'), 'ReadWritePaths')).toEqual(['/var/lib/poprelay']);
  });

  it('the lines scripts/install.sh and the package rewrite are there as they expect', () => {
    // install.sh and the package replace these paths with sed.
    expect(values(unit('poprelay-sweep.service'), 'ExecStart')).toEqual(['/usr/local/sbin/poprelay-sweep --quiet']);
    expect(values(unit('poprelayd.service'), 'ExecStart')).toEqual(['/usr/local/sbin/poprelayd']);
  });

  it.for([...SERVICES, 'poprelay-sweep.timer'])('the manual pages %s names exist', (name) => {
    const pages = [...unitText(name).matchAll(/man:([a-z.-]+)\((\d)\)/g)];
    for (const [, page, section] of pages)
      expect(existsSync(join(ROOT, `man/man${section}/${page}.${section}`))).toBe(true);
  });
});
