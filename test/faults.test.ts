// Faults: writers killed at random points and inside their system calls, a
// full filesystem, corrupt maps and missing permissions. The map must stay
// valid and complete, the next writer must not be blocked, every tool must
// say clearly what is wrong, and a login must still proceed.

import { spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readFileSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { openDatabase } from '../src/native.js';
import { isPoprelayError } from '../src/errors.js';
import type { MapSettings } from '../src/config.js';
import { readEntries, recordLogin, updateMap } from '../src/map/relay-map.js';
import { NOT_LIVE } from './support/ini.js';
import { configured, expectVerified, makemap, settings } from './support/maps.js';
import { BIN, MAPOP } from './support/paths.js';
import { asUser, run } from './support/processes.js';
import { tempDir } from './support/tmp.js';

const T = Math.floor(Date.now() / 1000);
const ip = parseClientAddress;

/** Adds many entries in one locked update. */
function seedMany(s: MapSettings, entries: Array<[string, string]>): void {
  updateMap(s, (db) => {
    for (const [k, v] of entries) db.put(Buffer.from(k), Buffer.from(v));
    return true;
  });
}

describe('writers killed with SIGKILL', () => {
  const dir = tempDir();
  const s = settings(dir, 'popip.db', { lockTimeoutMs: 2000 });
  const expected = new Set<string>(); // addresses that must be present (fresh and confirmed)
  let serial = 0;

  function replenishExpired(): void {
    const expired = readEntries(s).filter((e) => e.time !== null && e.time < T - 3600).length;
    if (expired > 50) return;
    seedMany(
      s,
      Array.from({ length: 200 }, (_, i) => [
        `10.250.${((serial + i) >> 8) & 255}.${(serial + i) & 255}`,
        String(T - 7200),
      ]),
    );
    serial += 200;
  }

  /** Starts a writer, kills it (after `delayMs`, or by strace at a system call), and returns what it confirmed. */
  async function killedWriter(
    args: string[],
    how: { delayMs: number } | { syscall: string; when: number },
  ): Promise<string[]> {
    const cmd =
      'delayMs' in how
        ? ['node', MAPOP, ...args]
        : [
            'strace',
            '-f',
            '-qq',
            '-o',
            '/dev/null',
            '-e',
            `inject=${how.syscall}:signal=KILL:when=${how.when}`,
            'node',
            MAPOP,
            ...args,
          ];
    const child = spawn(cmd[0] ?? 'node', cmd.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => child.on('close', r));
    if ('delayMs' in how) setTimeout(() => child.kill('SIGKILL'), how.delayMs);
    await exited;
    return [...out.matchAll(/^ok (\S+)$/gm)].map((m) => m[1] ?? '');
  }

  it('leaves a valid, complete map and an unblocked next writer, over 240 trials', async () => {
    seedMany(
      s,
      Array.from({ length: 100 }, (_, i) => [`192.0.2.${i + 1}`, String(T)]),
    );
    for (let i = 1; i <= 100; i++) expected.add(`192.0.2.${i}`);
    let rnd = 42;
    // The high bits of the generator: its low bits cycle with a short period.
    const random = (n: number): number => (
      (rnd = (rnd * 1103515245 + 12345) % 2 ** 31),
      Math.floor((rnd / 2 ** 31) * n)
    );
    const syscalls = ['pread64', 'pwrite64', 'fsync', 'rename'];
    const kinds: Record<string, number> = {};
    for (let trial = 0; trial < 240; trial++) {
      replenishExpired();
      const sweep = trial % 2 === 1;
      const targeted = trial % 4 >= 2;
      const how = targeted
        ? { syscall: syscalls[random(syscalls.length)] ?? 'fsync', when: 1 + random(3) }
        : { delayMs: 30 + random(90) };
      const addrs = Array.from({ length: 4 }, (_, i) =>
        `198.51.${trial}.${i + 1}`.replace(/^198\.51\.(\d+)\./, (_, t: string) => `198.51.${Number(t) % 256}.`),
      );
      const args = sweep ? ['sweep', s.path, String(T), '900', '20'] : ['record-stream', s.path, String(T), ...addrs];
      const confirmed = await killedWriter(args, how);
      const key = `${sweep ? 'sweep' : 'record'} ${'syscall' in how ? `at ${how.syscall}` : 'at a random time'}`;
      kinds[key] = (kinds[key] ?? 0) + 1;
      for (const a of confirmed) expected.add(a);

      await expectVerified(s.path);
      const present = new Set(readEntries(s).map((e) => e.address));
      const missing = [...expected].filter((a) => !present.has(a));
      expect(missing, `trial ${trial} (${key}): entries lost`).toEqual([]);
      // The next writer gets the lock at once (the kernel dropped the dead
      // writer's flock) and removes any copy it left behind.
      const next = `203.0.${(trial >> 8) & 255}.${trial & 255}`;
      recordLogin({ ...s, lockTimeoutMs: 2000 }, ip(next), T);
      expected.add(next);
      expect(existsSync(`${s.path}.poprelay-tmp`)).toBe(false);
    }
    console.log(`kill trials: ${JSON.stringify(kinds)}`);
    expect(Object.values(kinds).reduce((a, b) => a + b, 0)).toBe(240);
  }, 300_000);
});

describe('a full filesystem', () => {
  const mnt = join(tempDir(), 'small');
  let mounted = false;
  afterAll(async () => {
    if (mounted) await execa('umount', [mnt], { reject: false });
  });

  it('fails recording with a clear error, keeps the map valid and complete, and the login proceeds', async (ctx) => {
    mkdirSync(mnt);
    const m = await execa('mount', ['-t', 'tmpfs', '-o', 'size=192k,mode=0755', 'tmpfs', mnt], { reject: false });
    if (m.exitCode !== 0) {
      console.log(`full-filesystem test skipped: cannot mount a tmpfs here: ${m.stderr}`);
      return ctx.skip();
    }
    mounted = true;
    const s = settings(mnt);
    const ok: string[] = [];
    let failure: unknown;
    // Big updates first to fill the space fast, then single logins until
    // even one no longer fits (a write needs room for a whole new copy).
    for (const perUpdate of [40, 0]) {
      failure = undefined;
      for (let i = ok.length; i < 20000 && failure === undefined; i++) {
        const a = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
        try {
          if (perUpdate > 0) {
            updateMap(s, (db) => {
              for (let j = 0; j < perUpdate; j++) db.put(Buffer.from(`${a}-${j}`), Buffer.from(String(T)));
              return true;
            });
          }
          recordLogin(s, ip(a), T);
          ok.push(a);
        } catch (e) {
          failure = e;
        }
      }
    }
    expect(isPoprelayError(failure, 'ERR_MAP_IO'), String(failure)).toBe(true);
    // libdb reports the full disk at its final flush without an errno of ours.
    expect((failure as Error).message).toMatch(
      new RegExp(
        `^cannot write a new copy of the map in ${mnt} for ${s.path}: .*(ENOSPC|unable to flush page).*\\. The map was left as it was\\.$`,
      ),
    );
    await expectVerified(s.path);
    const present = new Set(readEntries(s).map((e) => e.address));
    expect(ok.filter((a) => !present.has(a))).toEqual([]);
    expect(existsSync(`${s.path}.poprelay-tmp`)).toBe(false);
    const before = readFileSync(s.path);

    // The hook: recording fails, the login (here /bin/echo) goes on.
    const ini = join(tempDir(), 'p.ini');
    writeFileSync(ini, `dbfile = ${s.path}\nignore =\n${NOT_LIVE}`);
    const hook = await run(BIN.login, ['--config', ini, '/bin/echo', 'login continues'], {
      env: { IP: '192.0.2.250' },
    });
    expect(hook.code).toBe(0);
    expect(hook.stdout).toBe('login continues\n');
    expect(hook.stderr).toMatch(
      /poprelay: not recorded 192\.0\.2\.250 .*cannot write a new copy of the map .*(ENOSPC|unable to flush page).*\. The map was left as it was\./,
    );
    const add = await run(BIN.admin, ['add', '192.0.2.251', '--config', ini]);
    expect(add.code).toBe(2);
    expect(add.stderr).toMatch(
      /^poprelay: cannot write a new copy .*(ENOSPC|unable to flush page).*The map was left as it was\./,
    );
    expect(readFileSync(s.path).equals(before)).toBe(true);
  });
});

describe('corrupt maps: every tool says so and none touches the file', () => {
  async function variant(name: string): Promise<{ map: string; ini: string }> {
    const c = configured();
    switch (name) {
      case 'truncated': {
        seedMany(
          c.s,
          Array.from({ length: 2000 }, (_, i) => [`10.1.${i >> 8}.${i & 255}`, String(T)]),
        );
        truncateSync(c.map, Math.floor(statSync(c.map).size / 2) + 100);
        break;
      }
      case 'random bytes':
        writeFileSync(c.map, Buffer.from(Array.from({ length: 20000 }, (_, i) => (i * 7919 + 13) % 256)));
        break;
      case 'wrong type': {
        const db = openDatabase(c.map, { type: 'btree', readonly: false, create: true });
        db.put(Buffer.from('192.0.2.1'), Buffer.from(String(T)));
        db.close();
        break;
      }
      case 'NUL-keyed':
        await makemap(c.dir, 'popip', [`192.0.2.1 ${T}`, '192.0.2.2 OK'], ['-N']);
        break;
      case 'empty':
        writeFileSync(c.map, '');
        break;
    }
    return c;
  }

  const tools: Array<[string, string, string[], number]> = [
    ['hook (by hand)', BIN.login, [], 1],
    ['hook (continuing a login)', BIN.login, ['/bin/true'], 0],
    ['poprelay-sweep', BIN.sweep, [], 1],
    ['poprelay-sweep --dry-run', BIN.sweep, ['--dry-run'], 1],
    ['poprelay list', BIN.admin, ['list'], 2],
    ['poprelay stats', BIN.admin, ['stats'], 2],
    ['poprelay check', BIN.admin, ['check', '192.0.2.1'], 2],
    ['poprelay add', BIN.admin, ['add', '192.0.2.9'], 2],
    ['poprelay del', BIN.admin, ['del', '192.0.2.1'], 2],
    ['poprelay flush', BIN.admin, ['flush', '--yes'], 2],
  ];
  const why: Record<string, RegExp> = {
    truncated: /not a readable Berkeley DB file \(libdb: .*\)/,
    'random bytes': /not a readable Berkeley DB file \(libdb: .*\)/,
    'wrong type': /is a Berkeley DB btree database, but poprelay is configured for dbtype = hash/,
    'NUL-keyed': /has keys ending in a NUL byte \(made by makemap -N\?\)/,
    empty: /not a readable Berkeley DB file \(libdb: .*unexpected file type or format\)/,
  };

  it.each(Object.keys(why).map((v) => [v]))('%s', async (name) => {
    const { map, ini } = await variant(name);
    const before = readFileSync(map);
    const ino = statSync(map).ino;
    for (const [label, bin, args, code] of tools) {
      const withConfig = bin === BIN.login ? ['--config', ini, ...args] : [...args, '--config', ini];
      const r = await run(bin, withConfig, { env: { IP: '192.0.2.77' } });
      expect(r.code, `${label}: ${r.stderr}`).toBe(code);
      expect(r.stderr, label).toMatch(why[name] ?? /./);
      expect(r.stderr, label).toContain(map);
    }
    expect(readFileSync(map).equals(before)).toBe(true);
    expect(statSync(map).ino).toBe(ino);
    expect(existsSync(`${map}.poprelay-tmp`)).toBe(false);
  });
});

describe('missing permissions', () => {
  it('names the user, the path and what is missing, and leaves the map as it was', async () => {
    const dir = tempDir();
    chmodSync(dir, 0o755);
    const map = join(dir, 'popip.db');
    const ini = join(dir, 'poprelay.ini');
    writeFileSync(ini, `dbfile = ${map}\nignore =\n${NOT_LIVE}`);
    recordLogin(settings(dir), ip('192.0.2.1'), T - 7200);
    const { stdout: uid } = await execa('id', ['-u', 'poprelay']);
    const as = (program: string, args: string[]) => {
      const [file, argv] = asUser('poprelay', program, args);
      return execa(file, argv, { reject: false, env: { IP: '192.0.2.5' } });
    };

    // A root-owned directory: poprelay may read the map but not replace it.
    let r = await as(BIN.admin, ['add', '192.0.2.2', '--config', ini]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe(
      `poprelay: cannot write a new copy of the map in ${dir} for ${map} as user poprelay (uid ${uid}): permission denied. ` +
        `Writers need read access to the map and write access to its directory ${dir} and its queue ${map}.queue (poprelay renames a new copy into place); readers need read access to the map.`,
    );
    r = await as(BIN.sweep, ['--config', ini]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`^poprelay-sweep: cannot write a new copy of the map in ${dir} for ${map} as user poprelay`),
    );
    expect((await as(BIN.admin, ['list', '--config', ini])).exitCode).toBe(0); // reading is allowed

    // An unreadable map, in a directory poprelay may write.
    const { stdout: gid } = await execa('id', ['-g', 'poprelay']);
    chownSync(dir, Number(uid), Number(gid));
    chmodSync(map, 0o600);
    r = await as(BIN.admin, ['list', '--config', ini]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(
      new RegExp(`^poprelay: cannot read map ${map} as user poprelay \\(uid ${uid}\\): permission denied`),
    );
    r = await as(BIN.login, ['--config', ini, '/bin/echo', 'still logged in']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('still logged in');
    expect(r.stderr).toMatch(
      new RegExp(
        `poprelay: not recorded 192\\.0\\.2\\.5 \\(user=\\(none\\)\\): cannot open map ${map} as user poprelay \\(uid ${uid}\\): permission denied`,
      ),
    );

    // Readable, in poprelay's directory: it works.
    chmodSync(map, 0o644);
    expect((await as(BIN.admin, ['add', '192.0.2.2', '--config', ini])).exitCode).toBe(0);
    await expectVerified(map);
  });
});
