// The map module against real files: every map a test writes is checked
// with db5.3_verify and read back with db5.3_dump or sendmail's makemap.

import {
  chmodSync,
  copyFileSync,
  existsSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { openDatabase } from '../src/native.js';
import type { MapSettings } from '../src/config.js';
import { PoprelayError } from '../src/errors.js';
import { putEntry, readEntries, recordLogin, removeAddress, sweepMap } from '../src/map/relay-map.js';
import { thrown } from './support/errors.js';
import { holdLock, lockWaiter } from './support/locks.js';
import { dumpMap, expectVerified, makemap, settings } from './support/maps.js';
import { mapop } from './support/processes.js';
import { tempDir } from './support/tmp.js';

const ip = parseClientAddress;
const T = 1_800_000_000;

function failure(f: () => unknown): PoprelayError {
  const e = thrown(f);
  expect(e).toBeInstanceOf(PoprelayError);
  return e as PoprelayError;
}

describe('recording', () => {
  const dir = tempDir();

  it("creates a missing map with map_mode even under Dovecot's umask 0077", async () => {
    const s = settings(dir, 'new.db');
    const old = process.umask(0o077);
    try {
      expect(recordLogin(s, ip('192.0.2.7'), T)).toBe('recorded');
    } finally {
      process.umask(old);
    }
    expect(statSync(s.path).mode & 0o777).toBe(0o644);
    await expectVerified(s.path);
    expect(await dumpMap(s.path)).toEqual([['192.0.2.7', String(T)]]);
  });

  it('writes lowercase NUL-free keys, two per IPv6 login, and a decimal time', async () => {
    const s = settings(dir, 'keys.db');
    recordLogin(s, ip('::ffff:198.51.100.9'), T);
    recordLogin(s, ip('2001:DB8::A'), T + 1);
    await expectVerified(s.path);
    expect(await dumpMap(s.path)).toEqual([
      ['198.51.100.9', String(T)],
      ['2001:db8::a', String(T + 1)],
      ['ipv6:2001:db8:0:0:0:0:0:a', String(T + 1)],
    ]);
    // sendmail's own tool reads back exactly what we wrote.
    const { stdout } = await execa('makemap', ['-u', 'hash', s.path.slice(0, -3)]);
    expect(stdout.split('\n').sort()).toEqual(
      [`198.51.100.9\t${T}`, `2001:db8::a\t${T + 1}`, `ipv6:2001:db8:0:0:0:0:0:a\t${T + 1}`].sort(),
    );
  });

  it('refreshes the time of a second login', async () => {
    const s = settings(dir, 'refresh.db');
    recordLogin(s, ip('2001:db8::1'), T);
    recordLogin(s, ip('2001:db8::1'), T + 60);
    expect(readEntries(s)).toEqual([
      {
        address: '2001:db8::1',
        keys: expect.arrayContaining(['2001:db8::1', 'ipv6:2001:db8:0:0:0:0:0:1']),
        time: T + 60,
      },
    ]);
    await expectVerified(s.path);
  });

  it('never turns a permanent entry into an expiring one', async () => {
    const s = settings(dir, 'perm.db');
    putEntry(s, ip('192.0.2.50'), 'OK');
    expect(recordLogin(s, ip('192.0.2.50'), T)).toBe('permanent');
    expect(await dumpMap(s.path)).toEqual([['192.0.2.50', 'OK']]);
  });

  it('keeps the mode of an existing map and leaves no temporary file', async () => {
    const s = settings(dir, 'mode.db');
    recordLogin(s, ip('192.0.2.1'), T);
    chmodSync(s.path, 0o640);
    recordLogin(s, ip('192.0.2.2'), T);
    expect(statSync(s.path).mode & 0o777).toBe(0o640);
    expect(existsSync(`${s.path}.poprelay-tmp`)).toBe(false);
  });

  it('replaces the file rather than writing into it, so open readers keep a complete file', async () => {
    const s = settings(dir, 'rename.db');
    recordLogin(s, ip('192.0.2.1'), T);
    const reader = openDatabase(s.path, { type: 'hash', readonly: true });
    const before = statSync(s.path).ino;
    recordLogin(s, ip('192.0.2.2'), T);
    expect(statSync(s.path).ino).not.toBe(before);
    expect(reader.get(Buffer.from('192.0.2.1'))?.toString()).toBe(String(T));
    reader.close();
  });

  it('removes a stale copy left by a killed writer', async () => {
    const s = settings(dir, 'stale.db');
    recordLogin(s, ip('192.0.2.1'), T);
    writeFileSync(`${s.path}.poprelay-tmp`, 'half-written junk');
    recordLogin(s, ip('192.0.2.2'), T);
    expect(existsSync(`${s.path}.poprelay-tmp`)).toBe(false);
    expect((await dumpMap(s.path)).length).toBe(2);
    await expectVerified(s.path);
  });

  it('reads a map built by makemap, with permanent entries, and adds to it', async () => {
    const path = await makemap(dir, 'handmade', ['192.0.2.100 OK', '198.51.100.0 RELAY', `192.0.2.101 ${T - 10}`]);
    const s = settings(dir, 'handmade.db');
    expect(readEntries(s).sort((a, b) => a.address.localeCompare(b.address))).toEqual([
      { address: '192.0.2.100', keys: ['192.0.2.100'], time: null },
      { address: '192.0.2.101', keys: ['192.0.2.101'], time: T - 10 },
      { address: '198.51.100.0', keys: ['198.51.100.0'], time: null },
    ]);
    recordLogin(s, ip('192.0.2.102'), T);
    await expectVerified(path);
    expect(await dumpMap(path)).toEqual([
      ['192.0.2.100', 'OK'],
      ['192.0.2.101', String(T - 10)],
      ['192.0.2.102', String(T)],
      ['198.51.100.0', 'RELAY'],
    ]);
  });

  it('removes both keys of an IPv6 address, and reports an absent one', async () => {
    const s = settings(dir, 'remove.db');
    recordLogin(s, ip('2001:db8::5'), T);
    recordLogin(s, ip('192.0.2.5'), T);
    expect(removeAddress(s, ip('2001:db8:0:0:0:0:0:5'))).toBe(true);
    expect(removeAddress(s, ip('2001:db8::5'))).toBe(false);
    expect(await dumpMap(s.path)).toEqual([['192.0.2.5', String(T)]]);
    await expectVerified(s.path);
  });

  it('supports btree maps when configured', async () => {
    const s = settings(dir, 'btree.db', { type: 'btree' });
    recordLogin(s, ip('192.0.2.9'), T);
    await expectVerified(s.path);
    expect(await dumpMap(s.path)).toEqual([['192.0.2.9', String(T)]]);
  });
});

describe('refusing maps it must not touch', () => {
  const dir = tempDir();

  /** Every operation fails with `code` and the file's bytes stay identical. */
  function expectRefusedUntouched(s: MapSettings, code: string, message: RegExp): void {
    const before = readFileSync(s.path);
    const ops: Array<() => unknown> = [
      () => recordLogin(s, ip('192.0.2.77'), T),
      () => readEntries(s),
      () => removeAddress(s, ip('192.0.2.77')),
      () => sweepMap(s, { now: T }),
    ];
    for (const op of ops) {
      const e = failure(op);
      expect(e.code).toBe(code);
      expect(e.message).toMatch(message);
      expect(e.message).toContain(s.path);
    }
    expect(readFileSync(s.path).equals(before)).toBe(true);
    expect(existsSync(`${s.path}.poprelay-tmp`)).toBe(false);
  }

  it('a map of the other type', async () => {
    const s = settings(dir, 'btree-as-hash.db');
    const b = openDatabase(s.path + '.b', { type: 'btree', readonly: false, create: true });
    b.put(Buffer.from('192.0.2.1'), Buffer.from('OK'));
    b.close();
    renameSync(s.path + '.b', s.path);
    expectRefusedUntouched(
      s,
      'ERR_MAP_TYPE',
      /is a Berkeley DB btree database, but poprelay is configured for dbtype = hash/,
    );
  });

  it('a NUL-keyed map made by makemap -N', async () => {
    await makemap(dir, 'nul', ['192.0.2.1 OK', '192.0.2.2 OK'], ['-N']);
    const s = settings(dir, 'nul.db');
    expect((await dumpMap(s.path))[0]?.[0]).toBe('192.0.2.1\u0000');
    expectRefusedUntouched(s, 'ERR_MAP_NUL_KEYS', /keys ending in a NUL byte \(made by makemap -N\?\)/);
  });

  it('random bytes', () => {
    const s = settings(dir, 'random.db');
    writeFileSync(s.path, Buffer.from(Array.from({ length: 16384 }, (_, i) => (i * 7919) % 251)));
    expectRefusedUntouched(
      s,
      'ERR_MAP_CORRUPT',
      /not a readable Berkeley DB file \(libdb: .+\)\. poprelay left it untouched; check it with db5\.3_verify/,
    );
  });

  it('an empty file', () => {
    const s = settings(dir, 'empty.db');
    writeFileSync(s.path, '');
    expectRefusedUntouched(s, 'ERR_MAP_CORRUPT', /unexpected file type or format/);
  });

  it('a truncated map', async () => {
    const s = settings(dir, 'truncated.db');
    for (let i = 0; i < 400; i++) putEntry(s, ip(`10.0.${i >> 8}.${i & 255}`), String(T));
    truncateSync(s.path, statSync(s.path).size - 1000);
    expectRefusedUntouched(s, 'ERR_MAP_CORRUPT', /not a multiple of the pagesize/);
  });
});

describe('locking and concurrency', () => {
  const dir = tempDir();

  it('gives up after lock_timeout_ms with a clear error, and writes nothing', async () => {
    const s = settings(dir, 'locked.db', { lockTimeoutMs: 300 });
    recordLogin(s, ip('192.0.2.1'), T);
    const before = readFileSync(s.path);
    const release = await holdLock(s.path);
    try {
      const t0 = Date.now();
      const e = failure(() => recordLogin(s, ip('192.0.2.2'), T));
      const waited = Date.now() - t0;
      expect(e.code).toBe('ERR_MAP_LOCK_TIMEOUT');
      expect(e.message).toContain(
        `map ${s.path} stayed locked by another process for more than lock_timeout_ms = 300 ms`,
      );
      expect(waited).toBeGreaterThanOrEqual(290);
    } finally {
      release();
    }
    expect(readFileSync(s.path).equals(before)).toBe(true);
    recordLogin(s, ip('192.0.2.2'), T); // the kernel released the dead holder's lock
    expect((await dumpMap(s.path)).length).toBe(2);
  });

  it('waits for a lock holder and then writes into the file that replaced the one it waited on', async () => {
    const s = settings(dir, 'follow.db');
    recordLogin(s, ip('192.0.2.1'), T);
    const release = await holdLock(s.path);
    const writer = mapop(['record', s.path, String(T), '192.0.2.3']);
    await lockWaiter(s.path);
    // Another writer's result takes the live name while ours waits on the old file.
    const other = settings(dir, 'other.db');
    recordLogin(other, ip('198.51.100.1'), T);
    copyFileSync(other.path, `${s.path}.new`);
    renameSync(`${s.path}.new`, s.path);
    release();
    expect(await writer).toEqual({ ok: 1 });
    expect(await dumpMap(s.path)).toEqual([
      ['192.0.2.3', String(T)],
      ['198.51.100.1', String(T)],
    ]);
  });

  it('loses no entry when many processes record at once', async () => {
    const s = settings(dir, 'concurrent.db');
    const procs = 8;
    const each = 40;
    const runs = Array.from({ length: procs }, (_, p) =>
      mapop(['record', s.path, String(T + p), ...Array.from({ length: each }, (_, i) => `10.${p}.${i}.1`)]),
    );
    const results = await Promise.all(runs);
    expect(results).toEqual(Array.from({ length: procs }, () => ({ ok: each })));
    await expectVerified(s.path);
    const dumped = await dumpMap(s.path);
    expect(dumped.length).toBe(procs * each);
    for (let p = 0; p < procs; p++) {
      for (let i = 0; i < each; i++) expect(dumped).toContainEqual([`10.${p}.${i}.1`, String(T + p)]);
    }
  });

  it('names the user, the path and the missing permission', async () => {
    const open = tempDir('poprelay-perm-');
    chmodSync(open, 0o755); // nobody may read but not create files here
    const s = settings(open, 'popip.db');
    recordLogin(s, ip('192.0.2.1'), T);
    const r = await mapop(['record', s.path, String(T), '192.0.2.2'], 'nobody');
    expect(r.code).toBe('ERR_MAP_PERMISSION');
    expect(r.error).toContain(`as user nobody (uid `);
    expect(r.error).toContain(s.path);
    expect(r.error).toMatch(
      new RegExp(`permission denied\\. Writers need read access to the map and write access to its directory ${open}`),
    );
    expect(await dumpMap(s.path)).toEqual([['192.0.2.1', String(T)]]);
    // Reading needs only read access.
    expect(await mapop(['list', s.path], 'nobody')).toEqual({
      ok: [{ address: '192.0.2.1', keys: ['192.0.2.1'], time: T }],
    });
  });
});

describe('sweeping', () => {
  const dir = tempDir();
  const TIMEOUT = 900;

  function seeded(name: string): MapSettings {
    const s = settings(dir, name);
    putEntry(s, ip('192.0.2.1'), String(T - TIMEOUT - 1)); // just outside
    putEntry(s, ip('192.0.2.2'), String(T - TIMEOUT)); // exactly at the timeout: kept
    putEntry(s, ip('192.0.2.3'), String(T - 10));
    putEntry(s, ip('2001:db8::1'), String(T - 5000)); // an IPv6 pair, expired
    putEntry(s, ip('2001:db8::2'), String(T - 5)); // an IPv6 pair, fresh
    putEntry(s, ip('192.0.2.4'), 'OK'); // permanent
    putEntry(s, ip('192.0.2.5'), String(T + 3600)); // in the future
    putEntry(s, ip('192.0.2.6'), '0');
    return s;
  }

  it('removes entries older than the timeout, IPv6 keys together, and keeps the rest', async () => {
    const s = seeded('sweep.db');
    const r = sweepMap(s, { now: T });
    expect(r.removed.map((e) => e.address).sort()).toEqual(['192.0.2.1', '192.0.2.6', '2001:db8::1']);
    expect(r.kept).toBe(4);
    expect(r.permanent).toBe(1);
    expect(r.future.map((e) => e.address)).toEqual(['192.0.2.5']);
    await expectVerified(s.path);
    expect((await dumpMap(s.path)).map(([k]) => k)).toEqual([
      '192.0.2.2',
      '192.0.2.3',
      '192.0.2.4',
      '192.0.2.5',
      '2001:db8::2',
      'ipv6:2001:db8:0:0:0:0:0:2',
    ]);
  });

  it('changes nothing in a dry run, to the byte', () => {
    const s = seeded('dry.db');
    const before = readFileSync(s.path);
    const ino = statSync(s.path).ino;
    const r = sweepMap(s, { now: T, dryRun: true });
    expect(r.removed.map((e) => e.address).sort()).toEqual(['192.0.2.1', '192.0.2.6', '2001:db8::1']);
    expect(readFileSync(s.path).equals(before)).toBe(true);
    expect(statSync(s.path).ino).toBe(ino);
  });

  it('removes an IPv6 address whose second key is missing, and keeps a pair with one permanent key', async () => {
    const s = settings(dir, 'pairs.db');
    const db = openDatabase(s.path, { type: 'hash', readonly: false, create: true });
    db.put(Buffer.from('ipv6:2001:db8:0:0:0:0:0:7'), Buffer.from(String(T - 5000)));
    db.put(Buffer.from('ipv6:2001:db8:0:0:0:0:0:8'), Buffer.from(String(T - 5000)));
    db.put(Buffer.from('2001:db8::8'), Buffer.from('OK'));
    db.close();
    const r = sweepMap(s, { now: T });
    expect(r.removed.map((e) => e.address)).toEqual(['2001:db8::7']);
    expect(r.permanent).toBe(1);
    expect((await dumpMap(s.path)).map(([k]) => k)).toEqual(['2001:db8::8', 'ipv6:2001:db8:0:0:0:0:0:8']);
  });

  it('keeps an entry refreshed between its scan and its removal (re-checked under the lock)', async () => {
    const s = settings(dir, 'race.db');
    putEntry(s, ip('192.0.2.1'), String(T - 5000));
    putEntry(s, ip('192.0.2.2'), String(T - 5000));
    const release = await holdLock(s.path);
    // The sweeper scans the old file (no lock needed), then waits for the lock.
    const sweeper = mapop(['sweep', s.path, String(T), String(TIMEOUT)]);
    await lockWaiter(s.path);
    // Meanwhile a login refreshes 192.0.2.2 in the file that becomes live.
    const next = settings(dir, 'race-next.db');
    putEntry(next, ip('192.0.2.1'), String(T - 5000));
    putEntry(next, ip('192.0.2.2'), String(T));
    renameSync(next.path, s.path);
    release();
    const r = await sweeper;
    expect((r.ok as { removed: Array<{ address: string }> }).removed.map((e) => e.address)).toEqual(['192.0.2.1']);
    expect(await dumpMap(s.path)).toEqual([['192.0.2.2', String(T)]]);
  });

  it('an empty map sweeps to nothing', async () => {
    const s = settings(dir, 'empty.db');
    openDatabase(s.path, { type: 'hash', readonly: false, create: true }).close();
    expect(sweepMap(s, { now: T })).toEqual({
      removed: [],
      removedCount: 0,
      kept: 0,
      refreshed: 0,
      permanent: 0,
      future: [],
      copies: 0,
    });
    await expectVerified(s.path);
  });

  it('a missing map is an error for the sweeper and for removal, which leave no file behind', () => {
    const d = tempDir();
    const s = settings(d, 'nothere.db');
    for (const op of [() => sweepMap(s, { now: T }), () => removeAddress(s, ip('192.0.2.1'))]) {
      const e = failure(op);
      expect(e.code).toBe('ERR_MAP_MISSING');
      expect(e.message).toMatch(/does not exist/);
    }
    expect(readdirSync(d)).toEqual([]);
  });

  it('sweeps 100,000 entries in batches, losing no fresh entry recorded meanwhile', async () => {
    const s = settings(dir, 'big.db');
    const lines: string[] = [];
    for (let i = 0; i < 100_000; i++) {
      lines.push(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255} ${i % 2 === 0 ? T - 5000 : T - 10}`);
    }
    await execa('makemap', ['hash', s.path.slice(0, -3)], { input: lines.join('\n') + '\n' });
    const sweeper = mapop(['sweep', s.path, String(T), String(TIMEOUT), '5000']);
    const writers = await Promise.all(
      Array.from({ length: 4 }, (_, p) =>
        mapop(['record', s.path, String(T), ...Array.from({ length: 10 }, (_, i) => `10.0.${p * 2}.${i * 2}`)]),
      ),
    );
    expect(writers).toEqual(Array.from({ length: 4 }, () => ({ ok: 10 })));
    const swept = await sweeper;
    expect(swept.error).toBeUndefined();
    await expectVerified(s.path);
    const entries = readEntries(s);
    expect(entries.length).toBe(50_000 + 40);
    expect(entries.every((e) => e.time === T - 10 || e.time === T)).toBe(true);
    for (let p = 0; p < 4; p++) {
      for (let i = 0; i < 10; i++)
        expect(entries).toContainEqual({
          address: `10.0.${p * 2}.${i * 2}`,
          keys: [`10.0.${p * 2}.${i * 2}`],
          time: T,
        });
    }
  });
});
