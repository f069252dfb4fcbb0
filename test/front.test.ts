// The front's hand-off to the recorder (src/front/poprelay-login.c): a login
// it can vouch for is left in dbfile.queue and one recorder at a time, the
// holder of the queue's lock, admits every login left (src/hook/incoming.ts).
// Each front here runs with a Node wrapper that notes every recorder it
// starts, so that the tests see which path a login took and how many Node
// processes a crowd cost.

import { spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { loadConfig } from '../src/config.js';
import { readEntries } from '../src/map/relay-map.js';
import { queueDir, readQueue } from '../src/map/queue.js';
import { installHook } from './support/app.js';
import { type FrontSite, frontLogin } from './support/front-site.js';
import { holdLock, queueLocked } from './support/locks.js';
import { expectVerified, settings } from './support/maps.js';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

interface Site extends FrontSite {
  /** One line per recorder started: its arguments. */
  starts(): string[];
}

/**
 * A map with its queue (as `poprelay init` leaves it), and a front whose
 * recorder.conf names a wrapper that notes each start; `wrap` runs after the
 * recorder, before the wrapper exits. With `keepLock` the wrapper does not
 * hand the recorder the queue's lock (--lock-fd), so the lock stays held,
 * by the wrapper's fd 3, until the wrapper exits: a recorder past its last
 * look.
 */
async function site(ini = '', wrap = '', init = true, keepLock = false): Promise<Site> {
  const dir = tempDir();
  const map = join(dir, 'popip.db');
  const iniPath = join(dir, 'poprelay.ini');
  writeFileSync(iniPath, `dbfile = ${map}\n`);
  if (init) await execa(join(ROOT, 'bin/poprelay'), ['init', '--config', iniPath]);
  // Unless a test says otherwise, a recorder exits once nothing waits, so that its front's end can be awaited.
  const text = ini.replaceAll('MAP', map) || `dbfile = ${map}\nignore = 10.9.0.0/16\n`;
  writeFileSync(iniPath, text.includes('recorder_idle_seconds') ? text : `${text}recorder_idle_seconds = 0\n`);
  const log = join(dir, 'starts');
  const wrapper = join(dir, 'node');
  const dropLock = keepLock
    ? 'skip=\nfor a do shift; if [ -n "$skip" ]; then skip=; elif [ "$a" = --lock-fd ]; then skip=1; else set -- "$@" "$a"; fi; done\n'
    : '';
  writeFileSync(
    wrapper,
    `#!/bin/sh\necho "$*" >>${log}\n${dropLock}${process.execPath} "$@"\nrc=$?\n${wrap}\nexit $rc\n`,
  );
  chmodSync(wrapper, 0o755);
  const front = installHook(dir, wrapper, ROOT, process.execPath);
  const starts = (): string[] =>
    existsSync(log)
      ? readFileSync(log, 'utf8')
          .split('\n')
          .filter((l) => l !== '')
      : [];
  return { dir, ini: iniPath, map, queue: queueDir(map), front, starts };
}

/** One login as Dovecot runs the front: options, then the command that continues it. */
const login = (
  s: Site,
  ip: string,
  user = 'alice',
  more: string[] = [],
  env: Record<string, string> = {},
  command = ['/bin/true'],
) => frontLogin(s, ip, { user, more, env, command });

const addresses = (s: Site): string[] =>
  readEntries(settings(s.dir))
    .map((e) => e.address)
    .sort();
const drains = (s: Site): string[] => s.starts().filter((a) => a.includes('--drain'));

/** Whether a process holds the queue's flock, that is a recorder runs (read from /proc/locks: trying it would take it). */
function recorderRunning(s: Site): boolean {
  return queueLocked(s.queue);
}

describe('the front leaves the login in the queue for one recorder', () => {
  it('records the login with its user and tag, through --drain, and leaves nothing queued', async () => {
    const s = await site();
    const r = await login(s, '192.0.2.20');
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toMatch(/^\x01\x02\d+ poprelay: recorded 192\.0\.2\.20 \(user=alice, service=pop3\)$/);
    expect(drains(s)).toEqual([expect.stringContaining(`--drain ${queueDir(s.map)}`)]);
    expect(addresses(s)).toEqual(['192.0.2.20']);
    expect(readdirSync(queueDir(s.map))).toEqual([]);
    await expectVerified(s.map);
  });

  it('a crowd of 40 logins at once: every one recorded, by fewer recorders than logins', async () => {
    const s = await site();
    const ips = Array.from({ length: 40 }, (_, i) => `192.0.2.${100 + i}`);
    const results = await Promise.all(ips.map((ip, i) => login(s, ip, `user${i}`)));
    expect(results.map((r) => r.exitCode)).toEqual(ips.map(() => 0));
    expect(addresses(s)).toEqual([...ips].sort());
    const log = results.map((r) => r.stderr).join('');
    for (const [i, ip] of ips.entries()) expect(log).toContain(`recorded ${ip} (user=user${i}, service=pop3)`);
    // Every start is a recorder under flock; at most one runs at a time.
    expect(drains(s).length).toBeLessThan(ips.length);
    expect(readdirSync(queueDir(s.map))).toEqual([]);
    await expectVerified(s.map);
  });

  for (const [engineText, ini] of [
    ['', ''],
    [', with the engine refusing connections', 'dbfile = MAP\nignore =\nengine = redis://127.0.0.1:1\n'],
  ]) {
    it(`the front whose recorder ran looks again: a login left after its last look is recorded${engineText}`, async () => {
      // The wrapper keeps the queue's lock after the recorder is done, until told to go.
      const s0 = tempDir();
      const s = await site(ini, `touch ${s0}/done\nwhile [ ! -e ${s0}/go ]; do sleep 0.05; done`, true, true);
      const first = login(s, '192.0.2.30', 'first');
      await eventually(() => existsSync(join(s0, 'done')), 60_000, 'the first recorder done');
      expect(recorderRunning(s)).toBe(true);
      // This front finds the lock busy, leaves its login and exits at once, without a recorder of its own.
      const second = await login(s, '192.0.2.31', 'second');
      expect(second.exitCode).toBe(0);
      expect(second.stderr).toBe('');
      expect(s.starts()).toHaveLength(1);
      expect(readdirSync(s.queue)).toEqual([expect.stringMatching(/^f\d+_192\.0\.2\.31_pop3_second$/)]);
      writeFileSync(join(s0, 'go'), '');
      const r = await first;
      expect(r.stderr).toContain('recorded 192.0.2.31 (user=second, service=pop3)');
      if (engineText !== '') expect(r.stderr).toContain('not recorded 192.0.2.31 in the engine (user=second');
      expect(addresses(s)).toEqual(['192.0.2.30', '192.0.2.31']);
      expect(drains(s)).toHaveLength(2);
      expect(recorderRunning(s)).toBe(false);
    });
  }

  it('a recorder that cannot read poprelay.ini names each login left waiting, which stays queued', async () => {
    const s0 = tempDir();
    const s = await site('', `touch ${s0}/done\nwhile [ ! -e ${s0}/go ]; do sleep 0.05; done`, true, true);
    const first = login(s, '192.0.2.32', 'first');
    await eventually(() => existsSync(join(s0, 'done')), 60_000, 'the first recorder done');
    expect((await login(s, '192.0.2.33', 'second')).stderr).toBe('');
    writeFileSync(s.ini, `dbfile = ${s.map}\ntimeout_minutes = soon\n`);
    writeFileSync(join(s0, 'go'), '');
    const r = await first;
    expect(r.stderr).toMatch(/not recorded 192\.0\.2\.33 \(user=second, service=pop3\): config .*"timeout_minutes"/);
    expect(r.stderr).not.toContain('not recorded 192.0.2.32');
    expect(readQueue(s.map).incoming).toEqual([expect.stringMatching(/_192\.0\.2\.33_pop3_second$/)]);
  });

  it('after a recorder that failed, its front runs one more for the logins left meanwhile, and no more', async () => {
    const s0 = tempDir();
    const s = await site(
      'dbfile = MAP\ntimeout_minutes = soon\n',
      `touch ${s0}/done\nwhile [ ! -e ${s0}/go ]; do sleep 0.05; done`,
      true,
      true,
    );
    const first = login(s, '192.0.2.38', 'first');
    await eventually(() => existsSync(join(s0, 'done')), 60_000, 'the first recorder done');
    expect((await login(s, '192.0.2.39', 'second')).stderr).toBe('');
    writeFileSync(join(s0, 'go'), '');
    const r = await first;
    expect(r.stderr).toMatch(/not recorded 192\.0\.2\.39 \(user=second, service=pop3\): config .*"timeout_minutes"/);
    expect(drains(s)).toHaveLength(2);
    expect(readQueue(s.map).incoming).toHaveLength(2); // left for a recorder that can read its settings
  });

  it('nothing left beside the map or in the queue makes a front believe a recorder runs, or blocks it', async () => {
    const s = await site();
    // The old pid hint, a FIFO and a link beside the map, a FIFO and a directory at front-style names.
    writeFileSync(`${s.map}.recorder`, `${process.pid}\n`);
    await execa('mkfifo', [`${s.map}.fifo`, join(s.queue, 'f1_192.0.2.9_pop3_fifo')]);
    mkdirSync(join(s.queue, 'f2_192.0.2.9_pop3_dir'));
    for (const [i, ip] of ['192.0.2.35', '192.0.2.36'].entries()) {
      const r = await login(s, ip);
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toContain(`recorded ${ip}`);
      expect(drains(s)).toHaveLength(i + 1);
    }
    expect(addresses(s)).toEqual(['192.0.2.35', '192.0.2.36']);
  });

  it("another account can neither hold the queue's lock nor write in it: the queue is 0700, its owner's", async () => {
    const s = await site();
    expect(statSync(s.queue).mode & 0o777).toBe(0o700);
    const r = await execa(
      'setpriv',
      ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'flock', '-n', s.queue, 'true'],
      {
        reject: false,
      },
    );
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/Permission denied/);
    expect((await login(s, '192.0.2.38')).stderr).toContain('recorded 192.0.2.38');
  });

  it('a queue other accounts can open (an older 0755) is not trusted: the login is recorded directly, and the queue narrowed', async () => {
    const s = await site();
    chmodSync(s.queue, 0o755);
    const r = await login(s, '192.0.2.37');
    expect(r.stderr).toContain('can be opened by other accounts (mode 0755)');
    expect(r.stderr).toContain('recorded 192.0.2.37');
    expect(drains(s)).toEqual([]);
    expect(statSync(s.queue).mode & 0o777).toBe(0o700);
    expect((await login(s, '192.0.2.39')).stderr).toContain('recorded 192.0.2.39');
    expect(drains(s)).toHaveLength(1);
  });

  it('reads poprelay.ini again for each round: a change applies to the logins that arrive after it', async () => {
    const s = await site(`dbfile = MAP\nignore =\nlock_timeout_ms = 30000\n`);
    await login(s, '192.0.2.90'); // makes the map
    const release = await holdLock(s.map, '-x', 60);
    try {
      // This login's recorder admits it, then waits for the map.
      const first = login(s, '192.0.2.91');
      await eventually(() => readQueue(s.map).logins.length === 1, 60_000, 'the first login admitted');
      writeFileSync(s.ini, `dbfile = ${s.map}\nignore = 192.0.2.92\nlock_timeout_ms = 30000\n`);
      const second = await login(s, '192.0.2.92');
      expect(second.stderr).toBe('');
      release();
      const r = await first;
      expect(r.stderr).toContain('not recorded 192.0.2.92 (user=alice, service=pop3): in the ignore list');
      expect(addresses(s)).toEqual(['192.0.2.90', '192.0.2.91']);
    } finally {
      release();
    }
  });

  it('applies the ignore list, refresh_seconds and the address checks to what the front left', async () => {
    const s = await site(`dbfile = MAP\nignore = 10.9.0.0/16\nrefresh_seconds = 60\n`);
    expect((await login(s, '192.0.2.40')).stderr).toMatch(/recorded 192\.0\.2\.40 \(user=alice, service=pop3\)$/);
    expect((await login(s, '192.0.2.40')).stderr).toContain(
      'recorded 192.0.2.40 (user=alice, service=pop3): already in the map, younger than refresh_seconds; nothing written',
    );
    expect((await login(s, '10.9.1.1')).stderr).toContain(
      'not recorded 10.9.1.1 (user=alice, service=pop3): in the ignore list',
    );
    // Characters an address may hold, but no address: the recorder says why.
    const r = await login(s, '1.2.3');
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toMatch(
      /\x01\x03\d+ poprelay: rejected \(user=alice, service=pop3\): invalid client address "1\.2\.3"/,
    );
    expect(addresses(s)).toEqual(['192.0.2.40']);
    expect(drains(s)).toHaveLength(4);
    expect(readdirSync(queueDir(s.map))).toEqual([]);
  });

  it('drops names in the queue that it did not write, with a warning, and does not loop on them', async () => {
    const s = await site();
    for (const junk of ['f1_junk', 'f2_192.0.2.1_pop3_a_b_c\nx', 'f3_192.0.2.1__ev il'])
      writeFileSync(join(queueDir(s.map), junk), '');
    const r = await login(s, '192.0.2.50');
    expect(r.exitCode).toBe(0);
    expect(r.stderr.match(/not a login as the front leaves them; removed/g)).toHaveLength(3);
    expect(addresses(s)).toEqual(['192.0.2.50']);
    expect(readdirSync(queueDir(s.map))).toEqual([]);
    expect(drains(s)).toHaveLength(1);
  });

  it('a login left with no recorder to admit it (one killed, say) goes in with the next sweep', async () => {
    const s = await site();
    writeFileSync(join(queueDir(s.map), `f4242_2001:DB8::51_imap_bob`), '');
    const r = await execa(join(ROOT, 'bin/poprelay-sweep'), ['--config', s.ini]);
    expect(r.stdout).toContain('kept 1');
    expect(addresses(s)).toEqual(['2001:db8::51']);
    expect(readdirSync(queueDir(s.map))).toEqual([]);
  });
});

describe('a recorder waits recorder_idle_seconds for more logins', () => {
  it('a login meanwhile is left to it: its front becomes the login, starts nothing, and the login is recorded', async () => {
    const s = await site('dbfile = MAP\nignore =\nrecorder_idle_seconds = 30\n');
    const first = login(s, '192.0.2.120', 'first');
    await eventually(() => addresses(s).includes('192.0.2.120'), 60_000, 'the first login recorded');
    await eventually(() => recorderRunning(s), 60_000, 'the recorder waiting for more');
    const starts = s.starts().length;
    // The command notes its pid and exits 3: the front's own pid and status when it became the command.
    const note = join(s.dir, 'pid');
    const started = login(s, '192.0.2.121', 'second', [], {}, ['/bin/sh', '-c', `echo $$ >${note}; exit 3`]);
    const second = await started;
    expect(second.exitCode).toBe(3);
    expect(second.stderr).toBe('');
    expect(readFileSync(note, 'utf8').trim()).toBe(String(started.pid));
    expect(s.starts()).toHaveLength(starts);
    await eventually(() => addresses(s).includes('192.0.2.121'), 60_000, 'the second login recorded');
    // A crowd meanwhile: every front leaves its login to the same recorder.
    const ips = Array.from({ length: 20 }, (_, i) => `192.0.2.${130 + i}`);
    const crowd = await Promise.all(ips.map((ip, i) => login(s, ip, `user${i}`)));
    expect(crowd.map((r) => [r.exitCode, r.stderr])).toEqual(ips.map(() => [0, '']));
    await eventually(() => ips.every((ip) => addresses(s).includes(ip)), 60_000, 'the crowd recorded');
    expect(s.starts()).toHaveLength(starts);
    expect(drains(s)).toHaveLength(1);
    // Told to wait no more, it exits; its front has logged every login it took. (The count of recorders
    // was asserted above, before this ending.)
    writeFileSync(s.ini, `dbfile = ${s.map}\nignore =\nrecorder_idle_seconds = 0\n`);
    const last = await login(s, '192.0.2.122', 'last');
    const r = await first;
    expect(r.exitCode).toBe(0);
    for (const who of ['second', 'user0', 'user19']) expect(r.stderr).toContain(`(user=${who}, service=pop3)`);
    // The recorder may have read the new setting before the last login came, and gone: that login's front
    // then found the lock free and ran a recorder of its own.
    expect(`${r.stderr}${last.stderr}`).toContain('(user=last, service=pop3)');
    expect(addresses(s)).toHaveLength(23);
    expect(readdirSync(queueDir(s.map))).toEqual([]);
    expect(recorderRunning(s)).toBe(false);
    await expectVerified(s.map);
  });

  it('it stops waiting once its front is gone (Dovecot ends the post-login processes when it stops)', async () => {
    const s = await site('dbfile = MAP\nignore =\nrecorder_idle_seconds = 30\n');
    const first = login(s, '192.0.2.127', 'first');
    await eventually(() => recorderRunning(s) && addresses(s).includes('192.0.2.127'), 60_000, 'a recorder waiting');
    const gone = new Promise((r) => first.once('exit', r));
    first.kill('SIGTERM');
    await gone;
    // It looks for its front every second: well within the 30 s it would otherwise wait.
    await eventually(() => !recorderRunning(s), 20_000, 'the recorder gone');
    await first; // the recorder held the front's stderr
  });

  it('it exits once it has waited that long with nothing to do; the next login starts another', async () => {
    const s = await site('dbfile = MAP\nignore =\nrecorder_idle_seconds = 1\n');
    const first = await login(s, '192.0.2.125', 'first');
    expect(first.stderr).toContain('recorded 192.0.2.125 (user=first, service=pop3)');
    expect(recorderRunning(s)).toBe(false);
    const second = await login(s, '192.0.2.126', 'second');
    expect(second.stderr).toContain('recorded 192.0.2.126 (user=second, service=pop3)');
    expect(drains(s)).toHaveLength(2);
    expect(addresses(s)).toEqual(['192.0.2.125', '192.0.2.126']);
  });
});

describe('the front records directly, as before, whatever it cannot vouch for', () => {
  it('an unusual user name, a long tag, or no queue directory yet', async () => {
    const s = await site();
    let r = await login(s, '192.0.2.60', 'eve\nFAKE');
    expect(r.stderr).toMatch(/recorded 192\.0\.2\.60 \(user="eve\\nFAKE", service=pop3\)/);
    r = await login(s, '192.0.2.61', 'bob', ['--tag', 'x'.repeat(33)]);
    expect(r.exitCode).toBe(0);
    expect(s.starts().filter((a) => !a.includes('--drain'))).toHaveLength(2);
    const t = await site('', '', false);
    expect((await login(t, '192.0.2.62')).stderr).toContain('recorded 192.0.2.62');
    expect(drains(t)).toEqual([]);
    expect(addresses(s)).toEqual(['192.0.2.60', '192.0.2.61']);
  });

  it('a recorder told of another queue than its dbfile says so, records its own login directly, and fails', async () => {
    const s = await site();
    const r = await execa(
      process.execPath,
      [join(ROOT, 'dist/poprelay-login.cjs'), '--dovecot-log', '--drain', '/elsewhere.db.queue', '--config', s.ini],
      { env: { IP: '192.0.2.63', USER: 'carl' }, extendEnv: false, reject: false },
    );
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`the front queued this login in /elsewhere.db.queue, but dbfile is ${s.map}`);
    expect(addresses(s)).toEqual(['192.0.2.63']);
  });

  it("run as root while the map belongs to the hook's user: the recorder takes that user's rights, the front writes nothing", async () => {
    const s = await site();
    await execa('chown', ['-R', 'poprelay:poprelay', s.dir]);
    // Run as root, poprelay obeys only a config that root alone can change.
    const ini = join(tempDir(), 'poprelay.ini');
    writeFileSync(ini, `dbfile = ${s.map}\n`);
    const r = await login({ ...s, ini }, '192.0.2.64');
    expect(r.stderr).toMatch(/recorded 192\.0\.2\.64 \(user=alice, service=pop3\)$/);
    expect(drains(s)).toEqual([]);
    expect(readdirSync(queueDir(s.map))).toEqual([]);
    expect(addresses(s)).toEqual(['192.0.2.64']);
  });

  it('run as root beside a map directory another account can write: follows no planted link, blocks on no FIFO', async () => {
    const dir = tempDir();
    chmodSync(dir, 0o1777);
    const map = join(dir, 'popip.db');
    const victim = tempDir();
    const ini = join(tempDir(), 'poprelay.ini');
    writeFileSync(ini, `dbfile = ${map}\nrecorder_idle_seconds = 0\n`);
    for (const plant of ['link', 'fifo']) {
      rmSync(`${map}.queue`, { force: true });
      if (plant === 'link') symlinkSync(victim, `${map}.queue`);
      else await execa('mkfifo', [`${map}.queue`]);
      const r = await execa(
        join(ROOT, 'bin/poprelay-login'),
        ['--config', ini, '--queue', `${map}.queue`, '/bin/true'],
        {
          env: { IP: '192.0.2.65', USER: 'alice' },
          extendEnv: false,
          reject: false,
        },
      );
      expect(r.exitCode, plant).toBe(0);
      expect(readdirSync(victim), plant).toEqual([]);
    }
  });

  // The front reads no poprelay.ini: whatever the form of dbfile, the login goes to the queue that Dovecot's
  // executable line names, and the recorder checks that queue against what it reads as dbfile.
  const forms: Array<[string, string]> = [
    ['plain', 'dbfile = MAP\n'],
    ['no spaces, CRLF, comments, blank lines', '; dbfile = /elsewhere.db\r\n\r\n# dbfile\r\ndbfile=MAP\r\n'],
    ['indented, tabs', '  \tdbfile\t=\tMAP  \n'],
    ['quoted', 'dbfile = "MAP"\n'],
    ['in single quotes', "dbfile = 'MAP'\n"],
    ['inline comment', 'dbfile = MAP ; the map\n'],
    ['twice (the recorder refuses the file)', 'dbfile = MAP\ndbfile = MAP\n'],
    ['after a key that only starts with dbfile', 'dbfiles = 1\ndbfile = MAP\n'],
    [
      'last, after 4 KB of comments',
      `${'# a comment line of the sample, as long as many are\n'.repeat(80)}dbfile = MAP\n`,
    ],
  ];
  for (const [name, text] of forms) {
    it(`poprelay.ini's dbfile written ${name}: left in the queue, and recorded where the recorder reads that map`, async () => {
      const s = await site(text);
      // A config the recorder refuses: the login is logged as not recorded, and stays queued.
      const ok = (() => {
        try {
          return loadConfig(s.ini).map.path === s.map;
        } catch {
          return false;
        }
      })();
      const r = await login(s, '192.0.2.70');
      expect(r.exitCode).toBe(0);
      expect(r.stderr).not.toContain('the front queued this login in');
      expect(drains(s)).toHaveLength(1);
      if (ok) expect(addresses(s)).toEqual(['192.0.2.70']);
      else expect(r.stderr).toContain('not recorded 192.0.2.70');
    });
  }
});

it('a crowd of fronts runs one recorder at a time', async () => {
  const s = await site('', 'sleep 0.2');
  const children = Array.from({ length: 12 }, (_, i) =>
    spawn(s.front, ['--config', s.ini, '--queue', s.queue, '/bin/true'], {
      env: { IP: `192.0.2.${80 + i}`, USER: 'u' },
      stdio: 'ignore',
    }),
  );
  let most = 0;
  const closed = Promise.all(children.map((c) => new Promise((res) => c.on('close', res))));
  let done = false;
  void closed.then(() => (done = true));
  while (!done) {
    const ps = await execa('pgrep', ['-f', '-c', `^${process.execPath} .*--drain ${queueDir(s.map)}`], {
      reject: false,
    });
    most = Math.max(most, Number(ps.stdout.trim() || '0'));
    await new Promise((res) => setTimeout(res, 10));
  }
  expect(most).toBe(1);
  expect(addresses(s)).toHaveLength(12);
});
