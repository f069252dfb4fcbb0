// Security, round 3 (issue 22): the fault attacks run again on the current
// login path, the compiled front (src/front/poprelay-login.c) that leaves
// each login in <dbfile>.queue/ and one recorder at a time, the holder of
// the queue's flock, that records them (docs/design.md, "poprelay-login").
// Real peers throughout: the installed front as Dovecot runs it, the
// recorder it starts, poprelay-sweep, a private Dovecot, db5.3_verify.
// Outcomes only, never timing: every wait is for a state, with a generous
// bound that only matters when the state never comes.
//
// 1. recorders SIGKILLed at random points under a crowd of fronts, and a
//    front SIGKILLed while its recorder runs;
// 2. ENOSPC, EACCES and EROFS where the front leaves the login and the
//    recorder applies it;
// 3. a lock held for ever: the map's, and the queue's own;
// 4. Dovecot's process_limit on the post-login services under a storm.

import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readEntries } from '../src/map/relay-map.js';
import { queueDir, readQueue } from '../src/map/queue.js';
import { appCopy, installHook } from './support/app.js';
import { type Dovecot, dovecotVersions, PASSWORD, startDovecot } from './support/dovecot.js';
import { type FrontSite, frontLogin } from './support/front-site.js';
import { holdLock, queueLocked } from './support/locks.js';
import { imapLogin, imapSelect, pop3, pop3Login } from './support/mailclient.js';
import { expectVerified, makemapSized, settings } from './support/maps.js';
import { BIN } from './support/paths.js';
import { tempDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

/**
 * `poprelay init` of a map in `dir` (made here unless given), with `ini`
 * lines after dbfile; a front installed as the installer does, in a
 * directory any account may read (the EACCES test runs it as poprelay).
 */
async function site(ini = '', dir = tempDir(), seed = 0): Promise<FrontSite> {
  const map = join(dir, 'popip.db');
  const iniPath = join(dir, 'poprelay.ini');
  writeFileSync(iniPath, `dbfile = ${map}\nignore =\nlive_sessions = no\n${ini}`);
  if (seed > 0) await makemapSized(map, seed, Math.floor(Date.now() / 1000));
  await execa(BIN.admin, ['init', '--config', iniPath]);
  const hookDir = tempDir('poprelay-hook-');
  chmodSync(hookDir, 0o755);
  appCopy();
  return { dir, ini: iniPath, map, queue: queueDir(map), front: installHook(hookDir) };
}

/**
 * One login as Dovecot runs the front: options from the executable line,
 * then the command that continues the login; as `user` when given.
 */
const login = (s: FrontSite, ip: string, user = 'alice', command = ['/bin/true'], as?: string) =>
  frontLogin(s, ip, { user, command, as });

/** Resolves with `p`, or fails naming `what` if it has not settled within `ms` (a hung front). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, bound]);
  } finally {
    clearTimeout(timer);
  }
}

const addresses = (s: FrontSite): string[] =>
  readEntries(settings(s.dir))
    .map((e) => e.address)
    .filter((a) => !a.startsWith('10.'))
    .sort();

/** The recorders of this queue (`node ... --drain QUEUE`), by their command lines in /proc. */
function recorders(queue: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let args: string[];
    try {
      args = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone meanwhile
    }
    const i = args.indexOf('--drain');
    if (i > 0 && args[i + 1] === queue) pids.push(Number(name));
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The lines a front wrote, without Dovecot's log-pipe prefix ("\x01", the level, the pid). */
const lines = (stderr: string): string[] =>
  stderr
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.replace(/^\x01.\d+ /, ''));

const sorted = (a: string[]): string[] => [...a].sort();

describe('SIGKILL loops on the front and queue path', () => {
  const ROUNDS = 30;
  const CROWD = 8;
  it('a crowd of fronts while their recorders are SIGKILLed at random points: no front hangs, no login is lost, the map verifies, the lock is free', async () => {
    // A 5,000-entry map, so that a kill also lands in the copy of the map, not only in Node's start.
    const s = await site('recorder_idle_seconds = 0\nlock_timeout_ms = 5000\n', tempDir(), 5000);
    // Each recorder seen is killed at a point of its life picked at random: as soon as it is seen (Node
    // starting), once its round has made the logins records, once a copy of the map is under way, or 0 to 1 s
    // after it was seen; it lives if it ends first. Points by state, not by time: a loaded machine moves
    // every point later, not past the kills.
    const phases = ['start', 'records', 'copy', 'later'] as const;
    type Phase = (typeof phases)[number];
    const killed: Record<Phase, number> = { start: 0, records: 0, copy: 0, later: 0 };
    const reached: Record<Exclude<Phase, 'later'>, () => boolean> = {
      start: () => true,
      records: () => readQueue(s.map).logins.length > 0,
      copy: () => existsSync(`${s.map}.poprelay-tmp`),
    };
    let killing = true;
    const killer = (async () => {
      const fate = new Map<number, { phase: Phase; at: number }>();
      while (killing) {
        await new Promise((r) => setTimeout(r, 5));
        for (const pid of recorders(s.queue)) {
          let f = fate.get(pid);
          if (f === undefined) {
            f = {
              phase: phases[Math.floor(Math.random() * phases.length)] ?? 'later',
              at: Date.now() + Math.random() * 1000,
            };
            fate.set(pid, f);
          }
          if (f.phase === 'later' ? Date.now() < f.at : !reached[f.phase]()) continue;
          try {
            process.kill(pid, 'SIGKILL');
            killed[f.phase]++;
          } catch {
            // ended meanwhile
          }
        }
      }
    })();
    const all: string[] = [];
    let stderr = '';
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const ips = Array.from({ length: CROWD }, (_, i) => `198.18.${round}.${10 + i}`);
        all.push(...ips);
        const results = await within(
          Promise.all(ips.map((ip, i) => login(s, ip, `u${i}`, ['/bin/sh', '-c', 'echo "$IP continued"; exit 5']))),
          180_000,
          `round ${round}: every front exits`,
        );
        // Each front ended as its login did: the command's status and output, whatever became of its recorder.
        expect(results.map((r) => [r.exitCode, r.stdout])).toEqual(ips.map((ip) => [5, `${ip} continued`]));
        stderr += results.map((r) => r.stderr).join('\n');
      }
    } finally {
      killing = false;
      await killer;
    }
    // The kills happened, and the fronts saw them.
    const kills = Object.values(killed).reduce((a, b) => a + b, 0);
    expect(kills).toBeGreaterThan(0);
    expect(stderr).toMatch(/not recorded: the recorder \(.*\) ended with status 137, killed by signal 9/);
    // A recorder the killer missed may still be finishing: wait for it.
    await eventually(() => recorders(s.queue).length === 0 && !queueLocked(s.queue), 60_000, 'no recorder left');
    // One more login: its recorder applies whatever the killed ones left, queued or still incoming.
    const last = await login(s, '198.51.100.1', 'last');
    expect(last.exitCode).toBe(0);
    expect(addresses(s)).toEqual(sorted([...all, '198.51.100.1']));
    expect(readQueue(s.map)).toEqual({ logins: [], incoming: [], strays: [] });
    expect(readEntries(settings(s.dir)).length).toBe(5000 + all.length + 1);
    expect(existsSync(`${s.map}.poprelay-tmp`)).toBe(false);
    await expectVerified(s.map);
    expect(queueLocked(s.queue)).toBe(false);
    // And the sweep finds nothing left to apply.
    const sweep = await execa(BIN.sweep, ['--config', s.ini]);
    expect(sweep.stdout).toContain(`kept ${5000 + all.length + 1}`);
    console.log(`SIGKILL loop: ${all.length} logins, ${kills} recorders killed, by point: ${JSON.stringify(killed)}`);
  });

  it('recorders SIGKILLed inside each system call of a round (strace): every login goes in with the next, the map verifies, the lock is free', async () => {
    const s = await site('recorder_idle_seconds = 0\nlock_timeout_ms = 5000\n');
    const hookDir = dirname(s.front);
    const conf = readFileSync(join(hookDir, 'recorder.conf'), 'utf8');
    // Each a point of a round, in order: the queue's fsync once the logins are records, the unlink of the
    // front's files, the map's two locks, the copy's pages, libdb's flushes, the rename that publishes it,
    // the directory's fsync, the unlink of the applied records. Each happens in any round with one login.
    const points: Array<[string, number]> = [
      ['fsync', 1],
      ['unlink', 1],
      ['flock', 1],
      ['flock', 2],
      ['pwrite64', 1],
      ['pwrite64', 3],
      ['fdatasync', 1],
      ['fdatasync', 2],
      ['rename', 1],
      ['fsync', 2],
      ['unlink', 2],
    ];
    const all: string[] = [];
    for (const [n, [call, when]] of points.entries()) {
      const wrapper = join(hookDir, `node-${call}-${when}`);
      writeFileSync(
        wrapper,
        `#!/bin/sh\nexec strace -f -qq -o /dev/null -e inject=${call}:signal=KILL:when=${when} ${process.execPath} "$@"\n`,
      );
      chmodSync(wrapper, 0o755);
      writeFileSync(join(hookDir, 'recorder.conf'), conf.replace(/^node=.*$/m, `node=${wrapper}`));
      const ips = Array.from({ length: 3 }, (_, i) => `198.19.${n}.${i + 1}`);
      all.push(...ips);
      const results = await within(
        Promise.all(ips.map((ip) => login(s, ip, 'eve', ['/bin/sh', '-c', 'echo "$IP"; exit 7']))),
        120_000,
        `${call} ${when}: every front exits`,
      );
      expect(results.map((r) => [r.exitCode, r.stdout])).toEqual(ips.map((ip) => [7, ip]));
      const said = results.flatMap((r) => lines(r.stderr));
      expect(said, `${call} ${when}`).toContainEqual(
        expect.stringMatching(
          /^poprelay: not recorded: the recorder \(.*\) ended with status 137, killed by signal 9$/,
        ),
      );
      await eventually(() => !queueLocked(s.queue), 60_000, 'the queue free');
      // The next login, with a recorder left alone, applies whatever the killed one left.
      writeFileSync(join(hookDir, 'recorder.conf'), conf);
      const next = await login(s, `198.19.${n}.100`, 'next');
      all.push(`198.19.${n}.100`);
      expect(next.exitCode).toBe(0);
      expect(addresses(s), `${call} ${when}`).toEqual(sorted(all));
      expect(readQueue(s.map), `${call} ${when}`).toEqual({ logins: [], incoming: [], strays: [] });
      expect(existsSync(`${s.map}.poprelay-tmp`)).toBe(false);
      expect(queueLocked(s.queue)).toBe(false);
      await expectVerified(s.map);
    }
  });

  it('a front SIGKILLed while its recorder runs: the recorder finishes, takes the next login, and the lock is released after it', async () => {
    const s = await site('recorder_idle_seconds = 0\nlock_timeout_ms = 30000\n');
    expect((await login(s, '192.0.2.200', 'first')).exitCode).toBe(0);
    // The map's lock held, so that the recorder is mid-round when its front dies.
    const release = await holdLock(s.map, '-x', 300);
    try {
      const front = login(s, '192.0.2.201', 'killed');
      await eventually(() => readQueue(s.map).logins.length === 1, 60_000, 'the login admitted by the recorder');
      const [recorder] = recorders(s.queue);
      expect(recorder).toBeDefined();
      const gone = new Promise((r) => front.once('exit', r));
      front.kill('SIGKILL');
      await gone;
      // The orphaned recorder still holds the queue's lock: the next front finds it busy and becomes the login.
      expect(alive(recorder ?? 0)).toBe(true);
      expect(queueLocked(s.queue)).toBe(true);
      const next = await login(s, '192.0.2.202', 'next', ['/bin/sh', '-c', 'exit 4']);
      expect([next.exitCode, next.stderr]).toEqual([4, '']);
      release();
      // The recorder held the killed front's stderr: its lines arrive when it is done.
      const r = await within(front, 120_000, 'the orphaned recorder ends');
      expect(r.signal).toBe('SIGKILL');
      expect(lines(r.stderr)).toEqual([
        'poprelay: recorded 192.0.2.201 (user=killed, service=pop3)',
        'poprelay: recorded 192.0.2.202 (user=next, service=pop3)',
      ]);
      await eventually(() => !alive(recorder ?? 0), 60_000, 'the recorder gone');
      expect(queueLocked(s.queue)).toBe(false);
      expect(addresses(s)).toEqual(['192.0.2.200', '192.0.2.201', '192.0.2.202']);
      expect(readQueue(s.map)).toEqual({ logins: [], incoming: [], strays: [] });
      await expectVerified(s.map);
    } finally {
      release();
    }
  });
});

describe('ENOSPC, EACCES and EROFS on the front and queue path', () => {
  const mounts: string[] = [];
  afterAll(async () => {
    for (const m of mounts.reverse()) await execa('umount', [m], { reject: false });
  });

  /** A small tmpfs of its own, 0755, root's. */
  async function smallFs(size: string): Promise<string> {
    const mnt = join(tempDir(), 'fs');
    mkdirSync(mnt);
    await execa('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', mnt]);
    mounts.push(mnt);
    return mnt;
  }

  /** The login goes on (the command's output and status); the one error line names the map and the problem. */
  async function failsToRecord(s: FrontSite, ip: string, problem: RegExp, as?: string): Promise<void> {
    const before = readFileSync(s.map);
    const r = await within(
      login(s, ip, 'carol', ['/bin/sh', '-c', 'echo login continues; exit 6'], as),
      120_000,
      'the front exits',
    );
    expect([r.exitCode, r.stdout]).toEqual([6, 'login continues']);
    // One line for the login, logged by Dovecot as an error. (Other lines may say what else could not be kept.)
    const said = r.stderr.split('\n').filter((l) => l.includes(`not recorded ${ip} `));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(
      new RegExp(
        `^\\x01\\x04\\d+ poprelay: not recorded ${ip.replaceAll('.', '\\.')} \\(user=carol, service=pop3\\): `,
      ),
    );
    expect(said[0]).toContain(s.map);
    expect(said[0]).toMatch(problem);
    // The map as it was, byte for byte: nothing written, nothing wider relayed.
    expect(readFileSync(s.map).equals(before)).toBe(true);
    await expectVerified(s.map);
  }

  it('ENOSPC: the map on a full filesystem; the login goes on, stays queued, and goes in once there is room', async () => {
    const s = await site('recorder_idle_seconds = 0\n', await smallFs('512k'), 2000);
    expect((await login(s, '192.0.2.50')).exitCode).toBe(0);
    const before = addresses(s);
    expect(before).toEqual(['192.0.2.50']);
    // Fill what is left: the queue's empty files still fit (they take no block), a new copy of the map does not.
    const filler = join(s.dir, 'filler');
    await execa('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k'], { reject: false });
    await failsToRecord(s, '192.0.2.51', /ENOSPC|no space|unable to flush page/i);
    expect(addresses(s)).toEqual(before);
    expect(readQueue(s.map).logins.map((q) => q.address.text)).toEqual(['192.0.2.51']);
    expect(queueLocked(s.queue)).toBe(false);
    // Room again: the sweep applies the login that waited.
    await execa('rm', [filler]);
    await execa(BIN.sweep, ['--config', s.ini]);
    expect(addresses(s)).toEqual(['192.0.2.50', '192.0.2.51']);
    expect(readQueue(s.map).logins).toEqual([]);
    await expectVerified(s.map);
  });

  it('ENOSPC in the queue itself (no inode left): the login goes on, and the error names what could not be written', async () => {
    const mnt = join(tempDir(), 'fs');
    mkdirSync(mnt);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=4m,nr_inodes=64,mode=0755', 'tmpfs', mnt]);
    mounts.push(mnt);
    const s = await site('recorder_idle_seconds = 0\n', mnt);
    expect((await login(s, '192.0.2.55')).exitCode).toBe(0);
    // Every inode taken: the front cannot leave the login, nor its recorder queue it.
    for (let i = 0; ; i++) {
      try {
        writeFileSync(join(mnt, `inode-${i}`), '');
      } catch {
        break;
      }
    }
    await failsToRecord(s, '192.0.2.56', /ENOSPC|no space/i);
    expect(readdirSync(s.queue)).toEqual([]);
    expect(addresses(s)).toEqual(['192.0.2.55']);
  });

  it("EACCES: the map's directory, then the queue, unwritable by the hook's user: the login goes on; one the queue took goes in once the map can take it", async () => {
    // The hook's user owns the map's directory and its queue (as the package makes them), but the directory is 0555.
    const dir = tempDir();
    const s = await site('recorder_idle_seconds = 0\n', dir);
    await execa('chown', ['-R', 'poprelay:poprelay', dir]);
    chmodSync(dir, 0o755);
    chmodSync(s.ini, 0o644);
    // Root (the sweep) obeys only a config that root alone can change.
    const rootIni = join(tempDir(), 'poprelay.ini');
    writeFileSync(rootIni, readFileSync(s.ini));
    expect((await login(s, '192.0.2.60', 'alice', ['/bin/true'], 'poprelay')).exitCode).toBe(0);
    expect(addresses(s)).toEqual(['192.0.2.60']);
    chmodSync(dir, 0o555);
    try {
      const { stdout: uid } = await execa('id', ['-u', 'poprelay']);
      await failsToRecord(
        s,
        '192.0.2.61',
        new RegExp(`as user poprelay \\(uid ${uid}\\): permission denied\\. .*write access to its directory ${dir} `),
        'poprelay',
      );
      // The front left it in the queue (no recorder of its own, the old way): the recorder queued it.
      expect(readQueue(s.map).logins.map((q) => q.address.text)).toEqual(['192.0.2.61']);
    } finally {
      chmodSync(dir, 0o755);
    }
    // The queue the hook's user cannot write: the front cannot leave the login, nor its recorder queue it; lost,
    // with nowhere to keep it. (The line names the map, not the queue that refused: reported with issue 22.)
    chmodSync(s.queue, 0o500);
    try {
      await failsToRecord(s, '192.0.2.62', /permission denied/, 'poprelay');
    } finally {
      chmodSync(s.queue, 0o700);
    }
    // Writable again: the sweep, run as root, does the map's work as its owner and applies the login.
    await execa(BIN.sweep, ['--config', rootIni]);
    expect(addresses(s)).toEqual(['192.0.2.60', '192.0.2.61']);
    await expectVerified(s.map);
  });

  it('EROFS: the map on a read-only mount, the queue with it or writable on its own; the login goes on and nothing is lost', async () => {
    const mnt = await smallFs('4m');
    const s = await site('recorder_idle_seconds = 0\n', mnt);
    expect((await login(s, '192.0.2.70')).exitCode).toBe(0);
    // The whole file system read-only: the front cannot leave the login, its recorder cannot queue it.
    await execa('mount', ['-o', 'remount,ro', mnt]);
    try {
      await failsToRecord(s, '192.0.2.71', /EROFS|read-only/i);
    } finally {
      await execa('mount', ['-o', 'remount,rw', mnt]);
    }
    expect(readdirSync(s.queue)).toEqual([]);
    // The queue a writable mount of its own, the map's directory read-only: the login waits in the queue.
    await execa('mount', ['--bind', s.queue, s.queue]);
    mounts.push(s.queue);
    await execa('mount', ['-o', 'remount,bind,ro', mnt]);
    try {
      await failsToRecord(s, '192.0.2.72', /EROFS|read-only/i);
      expect(readQueue(s.map).logins.map((q) => q.address.text)).toEqual(['192.0.2.72']);
    } finally {
      await execa('mount', ['-o', 'remount,bind,rw', mnt]);
    }
    expect(addresses(s)).toEqual(['192.0.2.70']);
    await execa(BIN.sweep, ['--config', s.ini]);
    expect(addresses(s)).toEqual(['192.0.2.70', '192.0.2.72']);
    await expectVerified(s.map);
  });
});

describe('a lock held for ever', () => {
  it("the map's lock held by another process: every login goes on, is queued and logged with lock_timeout_ms, and goes in once it is released", async () => {
    const s = await site('recorder_idle_seconds = 0\nlock_timeout_ms = 1500\n');
    expect((await login(s, '192.0.2.80')).exitCode).toBe(0);
    const before = readFileSync(s.map);
    const release = await holdLock(s.map, '-x', 3600);
    const ips = Array.from({ length: 12 }, (_, i) => `192.0.2.${90 + i}`);
    try {
      // Some one at a time, then a crowd at once.
      const one = [];
      for (const ip of ips.slice(0, 3))
        one.push(await within(login(s, ip, 'bob', ['/bin/sh', '-c', 'echo "$IP on"; exit 2']), 120_000, ip));
      const crowd = await within(
        Promise.all(ips.slice(3).map((ip) => login(s, ip, 'bob', ['/bin/sh', '-c', 'echo "$IP on"; exit 2']))),
        120_000,
        'the crowd of fronts',
      );
      const results = [...one, ...crowd];
      expect(results.map((r) => [r.exitCode, r.stdout])).toEqual(ips.map((ip) => [2, `${ip} on`]));
      const said = results.flatMap((r) => lines(r.stderr));
      for (const ip of ips)
        expect(said).toContain(
          `poprelay: not recorded ${ip} (user=bob, service=pop3): map ${s.map} stayed locked by another process for more than lock_timeout_ms = 1500 ms; find the holder with "fuser -v ${s.map} ${s.map}.lock". The login is queued and goes in once the map can take it.`,
        );
      expect(sorted(readQueue(s.map).logins.map((q) => q.address.text))).toEqual(sorted(ips));
      expect(readQueue(s.map).incoming).toEqual([]);
      expect(readFileSync(s.map).equals(before)).toBe(true);
      expect(queueLocked(s.queue)).toBe(false);
    } finally {
      release();
    }
    // Released: the next login applies every login that waited.
    const next = await login(s, '192.0.2.81');
    expect(lines(next.stderr)).toEqual(['poprelay: recorded 192.0.2.81 (user=alice, service=pop3)']);
    expect(addresses(s)).toEqual(sorted(['192.0.2.80', '192.0.2.81', ...ips]));
    expect(readQueue(s.map).logins).toEqual([]);
    await expectVerified(s.map);
  });

  it("the queue's own lock held by a root process that is not a recorder: every front becomes the login; the sweep applies them", async () => {
    // Only root can do this: the queue is 0700 and its owner's (the hook's user), so no other account can open
    // it to take its flock (front.test.ts shows nobody refused). A front takes the holder for a running recorder.
    const s = await site('recorder_idle_seconds = 0\n');
    const release = await holdLock(s.queue, '-x', 3600);
    const ips = Array.from({ length: 10 }, (_, i) => `192.0.2.${110 + i}`);
    try {
      const fronts = ips.map((ip) => login(s, ip, 'dave', ['/bin/sh', '-c', 'echo "$$ $IP"; exit 3']));
      const results = await within(Promise.all(fronts), 120_000, 'every front exits');
      // Each front became the command (its pid is the front's), said nothing and started nothing.
      expect(results.map((r) => [r.exitCode, r.stdout, r.stderr])).toEqual(
        fronts.map((f, i) => [3, `${f.pid} ${ips[i]}`, '']),
      );
      expect(recorders(s.queue)).toEqual([]);
      expect(readQueue(s.map).incoming).toHaveLength(ips.length);
    } finally {
      release();
    }
    await eventually(() => !queueLocked(s.queue), 60_000, 'the holder gone');
    await execa(BIN.sweep, ['--config', s.ini]);
    expect(addresses(s)).toEqual(ips);
    expect(readQueue(s.map)).toEqual({ logins: [], incoming: [], strays: [] });
    await expectVerified(s.map);
  });
});

describe.each(dovecotVersions())("Dovecot %s: the post-login services' process_limit under a storm", (version) => {
  // The smallest limit that serves a storm: a waiting recorder's front may hold one slot (only one recorder
  // runs at a time), which leaves one for every other login of that service. (With process_limit = 1 the
  // logins queued behind a recorder waiting recorder_idle_seconds are dropped: Dovecot drops the connections
  // pending at the limit after 10 s. Reported with issue 22; not a case this test holds.)
  const LIMIT = 2;
  let dc: Dovecot;
  beforeAll(async () => {
    dc = await startDovecot({
      users: 3,
      version,
      ini: 'ignore =\nrecorder_idle_seconds = 0\n',
      // Both post-login services: at most LIMIT fronts (and so recorders' fronts) at once each.
      editConf: (conf) => conf.replace(/^(\s*user = poprelay\n)/gm, `$1  process_limit = ${LIMIT}\n`),
    });
  });
  afterAll(async () => dc?.stop());

  const entries = (): Set<string> => {
    try {
      return new Set(readEntries(settings(dc.mapDir)).map((e) => e.address));
    } catch {
      return new Set(); // no map yet
    }
  };

  /** 60 logins at once, POP3 and IMAP, from 60 addresses: each must succeed, none be refused or stuck. */
  async function storm(net: number): Promise<string[]> {
    const addrs = Array.from({ length: 60 }, (_, i) => `127.${net}.${i >> 4}.${(i & 15) + 1}`);
    const results = await Promise.allSettled(
      addrs.map((a, i) =>
        i % 2 === 0
          ? pop3Login({ ...dc.pop3, localAddress: a }, `user${i % 3}`, PASSWORD, [pop3.stat])
          : imapLogin({ ...dc.imap, localAddress: a }, `user${i % 3}`, PASSWORD, [imapSelect]),
      ),
    );
    // A conversation that stalls fails after 60 s (mailclient's bound): stuck logins are failures here too.
    expect(
      results.flatMap((r, i) =>
        r.status === 'rejected' ? [`${addrs[i]}: ${String(r.reason)}`] : r.value.ok ? [] : [`${addrs[i]}: refused`],
      ),
    ).toEqual([]);
    await eventually(() => addrs.every((a) => entries().has(a)), 120_000, 'every login of the storm in the map');
    await expectVerified(dc.mapPath);
    expect(dc.log()).not.toMatch(new RegExp(`poprelay: not recorded 127\\.${net}\\.`));
    return addrs;
  }

  it(`process_limit = ${LIMIT}: a storm of 60 POP3 and IMAP logins all succeed and are all recorded`, async () => {
    const conf = readFileSync(join(dc.dir, '95-poprelay.conf'), 'utf8');
    expect(conf.match(new RegExp(`process_limit = ${LIMIT}`, 'g'))).toHaveLength(2);
    await storm(10);
  });

  it('with recorder_idle_seconds as by default (a waiting recorder holds a slot): logins are not starved', async () => {
    await eventually(() => !queueLocked(`${dc.mapPath}.queue`), 60_000, 'no recorder left from before');
    writeFileSync(dc.iniPath, readFileSync(dc.iniPath, 'utf8').replace('recorder_idle_seconds = 0\n', ''));
    // One login starts a recorder that then waits, its front in one of the slots.
    expect((await pop3Login({ ...dc.pop3, localAddress: '127.11.0.1' }, 'user0', PASSWORD)).ok).toBe(true);
    await eventually(() => entries().has('127.11.0.1'), 60_000, 'the first login recorded');
    expect(queueLocked(`${dc.mapPath}.queue`)).toBe(true);
    await storm(12);
    await storm(13);
    // The storms did press on the limit: Dovecot held logins back for a slot, and none was dropped.
    expect(dc.log()).toMatch(new RegExp(`service\\(poprelay-pop3\\): process_limit \\(${LIMIT}\\) reached`));
  });
});
