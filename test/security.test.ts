// The hook's user, poprelay, turned hostile (docs/security.md). It owns the
// map's directory and may plant anything there: root's commands must then
// do nothing poprelay could not do itself, and no planted file may hang a
// login or a command. Each case is tried as the attacker (setpriv as
// poprelay), races included.

import { spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { readEntries, recordLogin, updateMap } from '../src/map/relay-map.js';
import { appCopy, installHook } from './support/app.js';
import { expectVerified, settings } from './support/maps.js';
import { BIN } from './support/paths.js';
import { run } from './support/processes.js';
import { safeDir } from './support/tmp.js';

let uid = 0;
let gid = 0;
beforeAll(async () => {
  uid = Number((await execa('id', ['-u', 'poprelay'])).stdout);
  gid = Number((await execa('id', ['-g', 'poprelay'])).stdout);
});

const SECRET = 'root-only secret\n';

interface Site {
  /** Root-owned, 0755: the config and the attacker's targets. */
  root: string;
  /** The map's directory, writable by poprelay. */
  dir: string;
  map: string;
  ini: string;
  /** A root-only file that nothing may read, change, or give away. */
  secret: string;
}

/**
 * `owner`: the map directory belongs to poprelay (root's commands become
 * poprelay), or it is root's but group-writable by poprelay (root stays
 * root, and only the file discipline protects it).
 */
function site(owner: 'poprelay' | 'root-group-writable', extra = ''): Site {
  const root = safeDir();
  const dir = join(root, 'map');
  mkdirSync(dir);
  if (owner === 'poprelay') chownSync(dir, uid, gid);
  else {
    chownSync(dir, 0, gid);
    chmodSync(dir, 0o775);
  }
  const map = join(dir, 'popip.db');
  const ini = join(root, 'poprelay.ini');
  writeFileSync(ini, `dbfile = ${map}\nignore =\nlock_timeout_ms = 3000\n${extra}`);
  const secret = join(root, 'secret');
  writeFileSync(secret, SECRET, { mode: 0o600 });
  return { root, dir, map, ini, secret };
}

/** The secret is as root left it: owner, mode and content. */
function expectSecretIntact(s: Site): void {
  const st = lstatSync(s.secret);
  expect(st.isFile()).toBe(true);
  expect([st.uid, st.mode & 0o7777]).toEqual([0, 0o600]);
  expect(readFileSync(s.secret, 'utf8')).toBe(SECRET);
}

/** No file poprelay can read holds the secret. */
function expectNoLeak(s: Site): void {
  for (const name of readdirSync(s.dir)) {
    const p = join(s.dir, name);
    const st = lstatSync(p);
    if (!st.isFile()) continue;
    expect(readFileSync(p).includes(SECRET), `${p} holds the secret`).toBe(false);
  }
}

/** As poprelay. */
function asPoprelay(cmd: string, args: string[]) {
  return execa('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', cmd, ...args], { reject: false });
}

/** Runs the attacker (as poprelay) replacing `names` with links to `target` while `work` runs (test/fixtures/attacker.mjs). */
async function underAttack(
  s: Site,
  mode: 'loop' | 'inotify',
  names: string[],
  target: string,
  work: () => Promise<void>,
): Promise<number> {
  const stop = join(s.root, `stop-${Math.random().toString(36).slice(2)}`);
  const attacker = spawn(
    'setpriv',
    [
      `--reuid=${uid}`,
      `--regid=${gid}`,
      '--clear-groups',
      process.execPath,
      join(appCopy(), 'test/fixtures/attacker.mjs'),
      mode,
      s.dir,
      target,
      stop,
      ...names,
    ],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  attacker.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise((r) => setTimeout(r, 300)); // let it start watching (it only helps the attacker)
  try {
    await work();
  } finally {
    writeFileSync(stop, '');
    await new Promise((r) => attacker.on('close', r));
  }
  return Number(out.trim() || '0');
}

const ROOT_COMMANDS: Array<[string, string[]]> = [
  ['add', ['add', '192.0.2.1']],
  ['add --permanent', ['add', '192.0.2.2', '--permanent']],
  ['del', ['del', '192.0.2.1']],
  ['flush', ['flush', '--yes']],
];

describe.each(['poprelay', 'root-group-writable'] as const)('a map directory %s can write', (owner) => {
  it("V1: swapping root's private copy for a link while root writes gives nothing away", async () => {
    const s = site(owner);
    recordLogin(settings(s.dir), parseClientAddress('192.0.2.9'), Math.floor(Date.now() / 1000));
    if (owner === 'poprelay') chownSync(s.map, uid, gid);
    const swaps = await underAttack(s, 'loop', ['popip.db.poprelay-tmp'], s.secret, async () => {
      for (let i = 0; i < 15; i++)
        for (const [, args] of ROOT_COMMANDS) await run(BIN.admin, [...args, '--config', s.ini]);
    });
    expectSecretIntact(s);
    expectNoLeak(s);
    console.log(`V1 (${owner}): ${swaps} swaps tried`);
  }, 300_000);

  it('V3: swapping the copy a missing map is built in gives nothing away', async () => {
    const s = site(owner);
    const swaps = await underAttack(s, 'loop', ['popip.db.poprelay-tmp'], s.secret, async () => {
      for (let i = 0; i < 30; i++) {
        await asPoprelay('rm', ['-f', s.map]);
        await run(BIN.admin, ['init', '--config', s.ini]);
      }
    });
    expectSecretIntact(s);
    expectNoLeak(s);
    console.log(`V3 (${owner}): ${swaps} swaps tried`);
  }, 300_000);

  it('V4: swapping the live map for a link while root copies it copies nothing of the target', async () => {
    const s = site(owner);
    recordLogin(settings(s.dir), parseClientAddress('192.0.2.9'), Math.floor(Date.now() / 1000));
    const swaps = await underAttack(s, 'inotify', ['popip.db'], s.secret, async () => {
      for (let i = 0; i < 40; i++) await run(BIN.admin, ['add', `192.0.2.${(i % 200) + 10}`, '--config', s.ini]);
    });
    expectSecretIntact(s);
    expectNoLeak(s);
    console.log(`V4 (${owner}): ${swaps} swaps tried`);
  }, 300_000);
});

describe('root works on the map as its owner', () => {
  it("root's add, sweep and init leave every file in the directory poprelay's, as if poprelay had run them", async () => {
    const s = site('poprelay');
    for (const args of [['init'], ['add', '192.0.2.3'], ['add', '192.0.2.4', '--permanent']]) {
      const r = await run(BIN.admin, [...args, '--config', s.ini]);
      expect(r.code, r.stderr).toBe(0);
    }
    expect((await run(BIN.sweep, ['--config', s.ini])).code).toBe(0);
    for (const name of readdirSync(s.dir)) {
      expect([name, lstatSync(join(s.dir, name)).uid]).toEqual([name, uid]);
    }
    await expectVerified(s.map);
  });

  it('refuses, saying why, when the directory belongs to another user but to group root', async () => {
    const s = site('poprelay');
    chownSync(s.dir, uid, 0);
    const r = await run(BIN.admin, ['add', '192.0.2.5', '--config', s.ini]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/the map's directory .* belongs to uid \d+ but to group root: .* Fix: chgrp/);
    expect(existsSync(s.map)).toBe(false);
  });
});

describe('planted files never hang anything and are refused by name', () => {
  const programs: Array<[string, string, string[], Record<string, string>]> = [
    ['the hook', BIN.login, [], { IP: '192.0.2.20' }],
    ['poprelay add', BIN.admin, ['add', '192.0.2.21'], {}],
    ['poprelay list', BIN.admin, ['list'], {}],
    ['poprelay init', BIN.admin, ['init'], {}],
    ['poprelay-sweep', BIN.sweep, [], {}],
  ];

  it.each(programs)(
    'B2: a FIFO at popip.db or popip.db.lock: %s ends at once with a clear error',
    async (_, bin, args, env) => {
      for (const name of ['popip.db', 'popip.db.lock']) {
        const s = site('poprelay');
        if (name === 'popip.db.lock') {
          expect(
            (await asPoprelay(process.execPath, [join(appCopy(), 'bin/poprelay'), 'init', '--config', s.ini])).exitCode,
          ).toBe(0);
          await asPoprelay('rm', [`${s.map}.lock`]);
        }
        expect((await asPoprelay('mkfifo', [join(s.dir, name)])).exitCode).toBe(0);
        const r = await execa(bin, [...args, '--config', s.ini], { env, reject: false, timeout: 60_000 });
        expect(r.timedOut, `${name}: hung`).toBe(false);
        if (name === 'popip.db.lock' && (args[0] === 'list' || bin === BIN.sweep)) {
          expect(r.exitCode, r.stderr).toBe(0); // readers take no lock, nor does a sweep with nothing to do
          continue;
        }
        expect(r.exitCode, r.stderr).not.toBe(0);
        expect(r.stderr).toContain('is not a regular file (a FIFO, device or directory stands there)');
      }
    },
    300_000,
  );

  it('B1: popip.db a dangling link: every writer refuses at once, init creates nothing and says so, the link stays', async () => {
    const s = site('poprelay');
    const target = join(s.root, 'nologin');
    await asPoprelay('ln', ['-s', target, s.map]);
    for (const [bin, args, env] of [
      [BIN.admin, ['init'], {}],
      [BIN.admin, ['add', '192.0.2.22'], {}],
      [BIN.login, [], { IP: '192.0.2.23' }],
    ] as const) {
      const r = await execa(bin, [...args, '--config', s.ini], { env, reject: false, timeout: 60_000 });
      expect(r.timedOut).toBe(false);
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/is a symbolic link, and poprelay follows no link in the map's directory/);
      expect(r.stdout).not.toMatch(/created/);
    }
    expect(lstatSync(s.map).isSymbolicLink()).toBe(true);
    expect(existsSync(target)).toBe(false);
  });

  it('V2: a lock file that is a link makes root create nothing anywhere', async () => {
    const s = site('poprelay');
    const target = join(s.root, 'nologin');
    await asPoprelay('ln', ['-s', target, `${s.map}.lock`]);
    const r = await run(BIN.admin, ['add', '192.0.2.24', '--config', s.ini]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      `${s.map}.lock is a symbolic link, and poprelay follows no link in the map's directory. Remove it`,
    );
    expect(existsSync(target)).toBe(false);
  });

  it('B6: a dbfile that is a symbolic link is refused, naming the fix; the target is never replaced', async () => {
    const s = site('poprelay');
    const real = join(s.dir, 'real.db');
    recordLogin(settings(s.dir, 'real.db'), parseClientAddress('192.0.2.25'), Math.floor(Date.now() / 1000));
    chownSync(real, uid, gid);
    symlinkSync(real, s.map);
    const before = statSync(real).ino;
    const r = await run(BIN.admin, ['add', '192.0.2.26', '--config', s.ini]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/: it is a symbolic link, .* Set dbfile to the real file/);
    expect(statSync(real).ino).toBe(before);
    expect(lstatSync(s.map).isSymbolicLink()).toBe(true);
  });

  it('B8: a copy left by a writer killed while creating the map is removed by the next writer', async () => {
    const s = site('poprelay');
    await asPoprelay('touch', [`${s.map}.poprelay-tmp`]);
    expect((await run(BIN.admin, ['add', '192.0.2.27', '--config', s.ini])).code).toBe(0);
    expect(existsSync(`${s.map}.poprelay-tmp`)).toBe(false);
    await expectVerified(s.map);
  });
});

describe('output hygiene', () => {
  const hostileKey = '\x1b]0;pwned\x07\nFAKE LINE \x1b[2J';

  it('B4: list, stats and the sweep show keys with control characters escaped', async () => {
    const s = site('poprelay');
    const st = settings(s.dir);
    updateMap(st, (db) => (db.put(Buffer.from(hostileKey, 'latin1'), Buffer.from('1000')), true));
    chownSync(s.map, uid, gid);
    for (const args of [['list'], ['stats']]) {
      const r = await run(BIN.admin, [...args, '--config', s.ini]);
      expect(r.stdout).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
      expect(r.stdout).not.toContain('\nFAKE LINE');
    }
    const list = await run(BIN.admin, ['list', '--config', s.ini]);
    expect(list.stdout).toContain('\\x1b]0;pwned\\x07\\x0aFAKE LINE \\x1b[2J');
    for (const args of [['--dry-run'], ['--verbose']]) {
      const r = await run(BIN.sweep, [...args, '--config', s.ini]);
      expect(r.stdout).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f]/);
      expect(r.stdout).toContain('\\x1b]0;pwned');
    }
  });

  it('B3: with the modules failing to load, a hostile user name still makes one escaped log line', async () => {
    const dir = safeDir();
    const app = join(dir, 'app');
    await execa('cp', ['-R', appCopy(), app]);
    writeFileSync(join(app, 'build/Release/poprelay_native.node'), 'broken install\nsecond line\n');
    const hook = installHook(dir, process.execPath, app);
    const r = await execa(hook, ['/bin/true'], {
      env: { IP: '192.0.2.30', USER: 'eve\nFAKE\x01\x02 LINE' },
      extendEnv: false,
      reject: false,
    });
    expect(r.exitCode).toBe(0); // the login went on
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^\x01\x04\d+ poprelay: not recorded 192\.0\.2\.30 \(user=eve\\x0aFAKE\\x01\\x02 LINE\): .*poprelay_native\.node: [^\\]*$/,
    );
  });

  it('B5: a dated value past the year 2286 is invalid: listed as such, removed by flush and by the sweep', async () => {
    const s = site('poprelay');
    const st = settings(s.dir);
    updateMap(st, (db) => {
      db.put(Buffer.from('192.0.2.40'), Buffer.from('9999999999999999999'));
      db.put(Buffer.from('192.0.2.41'), Buffer.from('99999999999'));
      db.put(Buffer.from('192.0.2.42'), Buffer.from('OK'));
      return true;
    });
    chownSync(s.map, uid, gid);
    const list = await run(BIN.admin, ['list', '--config', s.ini]);
    expect(list.stdout).toMatch(/^192\.0\.2\.40 +- +- +invalid value: removed by the next sweep$/m);
    expect(list.stdout).not.toMatch(/NaN/);
    const stats = JSON.parse((await run(BIN.admin, ['stats', '--json', '--config', s.ini])).stdout) as {
      expired: number;
      oldest: unknown;
    };
    expect(stats.expired).toBe(2); // the invalid ones, due for the sweep
    expect(stats.oldest).toBeNull(); // no time to show
    const check = await run(BIN.admin, ['check', '192.0.2.40', '--config', s.ini]);
    expect(check.stdout).toMatch(/may relay until the next sweep: its value is no possible time \(invalid\)/);
    const sweep = await run(BIN.sweep, ['--config', s.ini]);
    expect(sweep.stdout).toMatch(/removed 2, permanent 1/);
    expect(readEntries(st).map((e) => e.address)).toEqual(['192.0.2.42']);
    updateMap(st, (db) => (db.put(Buffer.from('192.0.2.43'), Buffer.from('9999999999999999999')), true));
    const flush = await run(BIN.admin, ['flush', '--yes', '--config', s.ini]);
    expect(flush.stdout).toMatch(/removed 1, permanent 1/);
    expect(readEntries(st).map((e) => e.address)).toEqual(['192.0.2.42']);
  });
});

describe('the config root obeys', () => {
  it('B9: as root, a poprelay.ini the hook user can change is refused, saying how to fix it', async () => {
    const s = site('poprelay');
    chownSync(s.ini, uid, gid);
    const r = await run(BIN.admin, ['list', '--config', s.ini]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      `config ${s.ini}: it belongs to uid ${uid}, not root; run as root, poprelay obeys only a config that only root can change. Fix: chown root:poprelay ${s.ini} && chmod 0640 ${s.ini}`,
    );
    chownSync(s.ini, 0, 0);
    chmodSync(s.ini, 0o666);
    expect((await run(BIN.admin, ['list', '--config', s.ini])).stderr).toMatch(/it is writable by everyone/);
    chmodSync(s.ini, 0o644);
    expect((await run(BIN.admin, ['init', '--config', s.ini])).code).toBe(0);
    // The hook's user reads it as it is (it could write the map anyway).
    chownSync(s.ini, uid, gid);
    const hook = await asPoprelay(join(appCopy(), 'bin/poprelay-login'), ['--config', s.ini]);
    expect(hook.stderr).not.toMatch(/obeys only/);
  });

  it('B10: a key given twice, and __proto__ as a key or section, are errors', async () => {
    const s = site('poprelay');
    for (const [text, why] of [
      ['timeout_minutes = 15\ntimeout_minutes = 20\n', /key "timeout_minutes" is given twice; give it once/],
      ['__proto__ = 1\n', /unknown key "__proto__"/],
      ['[__proto__]\ndbfile = /x.db\n', /unknown section \[__proto__\]/],
    ] as const) {
      writeFileSync(s.ini, `dbfile = ${s.map}\n${text}`);
      const r = await run(BIN.admin, ['list', '--config', s.ini]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(why);
    }
  });
});
