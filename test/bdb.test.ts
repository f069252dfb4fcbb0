// The native binding against real files, checked with the db5.3 utilities.

import { statSync, writeFileSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import {
  EntryFate,
  flock,
  libdbVersion,
  openDatabase,
  packEntry,
  unpackEntries,
  unpackRecords,
  type NativeError,
} from '../src/native.js';
import { classifyValue } from '../src/map/values.js';
import { thrown } from './support/errors.js';
import { holdLock } from './support/locks.js';
import { dumpHeader, dumpMap, expectVerified } from './support/maps.js';
import { tempDir } from './support/tmp.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');

const nativeError = (f: () => unknown): NativeError => thrown(f) as NativeError;

describe('Database', () => {
  const dir = tempDir();

  it('links the system libdb 5.3', () => {
    expect(libdbVersion).toMatch(/Berkeley DB 5\.3\./);
  });

  it.each(['hash', 'btree'] as const)(
    'creates a %s file that db5.3_verify accepts and db5.3_dump reads',
    async (type) => {
      const path = join(dir, `create-${type}.db`);
      const db = openDatabase(path, { type, readonly: false, create: true, mode: 0o640 });
      expect(db.type).toBe(type);
      db.put(b('192.0.2.7'), b('1700000000'));
      db.put(b('ipv6:2001:db8:0:0:0:0:0:1'), b('OK'));
      db.put(b('192.0.2.7'), b('1700000001')); // replaces
      expect(db.get(b('192.0.2.7'))?.toString()).toBe('1700000001');
      expect(db.get(b('192.0.2.8'))).toBeNull();
      expect(db.del(b('192.0.2.8'))).toBe(false);
      db.close();
      await expectVerified(path);
      expect((await dumpHeader(path)).type).toBe(type);
      expect(await dumpMap(path)).toEqual([
        ['192.0.2.7', '1700000001'],
        ['ipv6:2001:db8:0:0:0:0:0:1', 'OK'],
      ]);
    },
  );

  it('scans every record in batches, bytes intact', async () => {
    const path = join(dir, 'scan.db');
    const db = openDatabase(path, { type: 'hash', readonly: false, create: true });
    const want = new Map<string, string>();
    for (let i = 0; i < 5000; i++) {
      const k = `10.${i >> 8}.${i & 255}.1`;
      want.set(k, String(1_700_000_000 + i));
      db.put(b(k), b(String(1_700_000_000 + i)));
    }
    db.put(Buffer.from([0, 1, 255]), Buffer.alloc(0));
    db.close();
    await expectVerified(path);
    const ro = openDatabase(path, { type: 'unknown', readonly: true });
    expect(ro.type).toBe('hash');
    const seen = new Map<string, string>();
    let batches = 0;
    for (let batch = ro.scan(1000); batch !== null; batch = ro.scan(1000)) {
      batches++;
      for (const [k, v] of unpackRecords(batch)) seen.set(k.toString('latin1'), v.toString('latin1'));
    }
    expect(ro.scan(1000)).toBeNull();
    ro.close();
    expect(batches).toBe(6);
    expect(seen.get('\u0000\u0001\u00ff')).toBe('');
    seen.delete('\u0000\u0001\u00ff');
    expect(seen).toEqual(want);
  });

  it("refuses writes on a read-only handle with libdb's reason", async () => {
    const path = join(dir, 'ro.db');
    openDatabase(path, { type: 'hash', readonly: false, create: true }).close();
    const db = openDatabase(path, { type: 'hash', readonly: true });
    const e = nativeError(() => db.put(b('k'), b('v')));
    expect(e.message).toContain(path);
    expect(e.op).toBe('put');
    expect(e.errno).not.toBe(0);
    db.close();
  });

  it('reports a missing file with ENOENT and the path', () => {
    const path = join(dir, 'missing.db');
    const e = nativeError(() => openDatabase(path, { type: 'hash', readonly: true }));
    expect(e.code).toBe('ENOENT');
    expect(e.path).toBe(path);
    expect(e.message).toContain(path);
  });

  it("reports a file that is not a database with libdb's message", () => {
    const path = join(dir, 'junk.db');
    writeFileSync(path, Buffer.alloc(8192, 0x5a));
    const e = nativeError(() => openDatabase(path, { type: 'unknown', readonly: true }));
    expect(e.code).toBe('EINVAL');
    expect(e.detail).toMatch(/checksum error|unexpected file type or format/);
  });

  it('reports a type mismatch when opened as the other type', () => {
    const path = join(dir, 'typed.db');
    openDatabase(path, { type: 'btree', readonly: false, create: true }).close();
    const e = nativeError(() => openDatabase(path, { type: 'hash', readonly: true }));
    expect(e.errno).toBeGreaterThan(0);
    expect(e.message).toContain(path);
  });

  it('throws on use after close', () => {
    const path = join(dir, 'closed.db');
    const db = openDatabase(path, { type: 'hash', readonly: false, create: true });
    db.close();
    expect(() => db.get(b('x'))).toThrow(/is closed/);
  });

  it('applies the mode given (under the process umask)', () => {
    const path = join(dir, 'mode.db');
    const old = process.umask(0o022);
    try {
      openDatabase(path, { type: 'hash', readonly: false, create: true, mode: 0o640 }).close();
    } finally {
      process.umask(old);
    }
    expect(statSync(path).mode & 0o777).toBe(0o640);
  });
});

describe('the sweep in the addon', () => {
  const dir = tempDir();
  const T = 1_800_000_000;
  const CUTOFF = T - 900;

  /** Every value form src/map/values.ts knows, on keys without ':', and two IPv6 keys. */
  const values: Record<string, string> = {
    '192.0.2.1': String(CUTOFF - 1), // expired
    '192.0.2.2': String(CUTOFF), // at the cutoff: kept
    '192.0.2.3': String(T + 60), // in the future: kept, listed
    '192.0.2.4': 'OK', // permanent
    '192.0.2.5': '', // empty: permanent, as classifyValue says
    '192.0.2.6': '0', // the epoch: expired
    '192.0.2.7': '0000000001', // ten digits: a time
    '192.0.2.8': '99999999999', // eleven digits: invalid, expired
    '192.0.2.9': ' 1', // not all digits: permanent
    '192.0.2.10': String(CUTOFF - 1), // expired, but skipped
    'not-an-address': '12', // any key without ':' is its own entry
    '2001:db8::1': String(CUTOFF - 1), // an IPv6 pair with one permanent key: permanent
    'ipv6:2001:db8:0:0:0:0:0:1': 'OK',
    'ipv6:2001:db8:0:0:0:0:0:2': String(CUTOFF - 1), // a pair, both expired: one entry
    '2001:db8::2': '99999999999',
    'ipv6:2001:0db8:0:0:0:0:0:3': String(CUTOFF - 1), // leading zeros: still 2001:db8::3
    '2001:db8::3': String(T), // the newer time counts
    '2001:db8::4': String(CUTOFF - 1), // alone: goes with its other key too
    '::ffff:192.0.2.20': String(CUTOFF - 1), // v4-mapped: an IPv4 address, left to the caller
    'ff02::1': String(CUTOFF - 1), // multicast: no client address, left to the caller
    'host:x': '12', // no address at all, left to the caller
  };

  function filled(name: string): string {
    const path = join(dir, name);
    const db = openDatabase(path, { type: 'hash', readonly: false, create: true });
    for (const [k, v] of Object.entries(values)) db.put(b(k), b(v));
    db.close();
    return path;
  }

  it('sweepScan decides each key as src/map/values.ts does and pairs IPv6 keys as address.ts does; the rest it hands back', () => {
    const db = openDatabase(filled('scan.db'), { type: 'hash', readonly: true });
    const r = db.sweepScan(CUTOFF, T, [b('192.0.2.10')], true);
    db.close();
    const expired = [...unpackEntries(r.expired)].map(([keys, v]) => [keys.map((k) => k.toString()), v.toString()]);
    expect(expired.sort()).toEqual(
      [
        [['192.0.2.1'], String(CUTOFF - 1)],
        [['192.0.2.6'], '0'],
        [['192.0.2.7'], '0000000001'],
        [['192.0.2.8'], '99999999999'],
        [['not-an-address'], '12'],
        [['ipv6:2001:db8:0:0:0:0:0:2', '2001:db8::2'], String(CUTOFF - 1)],
        [['2001:db8::4', 'ipv6:2001:db8:0:0:0:0:0:4'], String(CUTOFF - 1)],
      ].sort(),
    );
    expect(r.expiredCount).toBe(7);
    expect(r.kept).toBe(3);
    expect(r.permanent).toBe(4);
    expect([...unpackRecords(r.future)].map(([k]) => k.toString())).toEqual(['192.0.2.3']);
    expect(r.futureCount).toBe(1);
    expect([...unpackRecords(r.colon)].map(([k, v]): [string, string] => [k.toString(), v.toString()]).sort()).toEqual([
      ['::ffff:192.0.2.20', String(CUTOFF - 1)],
      ['ff02::1', String(CUTOFF - 1)],
      ['host:x', '12'],
    ]);
    expect(r.nulKey).toBe(false);
    // Each decision is classifyValue's.
    for (const [k, v] of Object.entries(values)) {
      if (k.includes(':') || k === '192.0.2.10') continue;
      const c = classifyValue(v);
      const isExpired = c.kind === 'invalid' || (c.kind === 'dated' && c.time < CUTOFF);
      expect(
        expired.some(([keys]) => keys?.[0] === k),
        `${k} = ${JSON.stringify(v)}`,
      ).toBe(isExpired);
    }
  });

  it('sweepScan lists no future entries unless asked, and stops at a NUL-terminated key', () => {
    const path = filled('nul.db');
    let db = openDatabase(path, { type: 'hash', readonly: true });
    const quiet = db.sweepScan(CUTOFF, T, [], false);
    db.close();
    expect(quiet.future.length).toBe(0);
    expect(quiet.futureCount).toBe(1);
    db = openDatabase(path, { type: 'hash', readonly: false });
    db.put(Buffer.from('192.0.2.99\0'), b('1'));
    db.close();
    db = openDatabase(path, { type: 'hash', readonly: true });
    expect(db.sweepScan(CUTOFF, T, [], false).nulKey).toBe(true);
    db.close();
  });

  it('removeExpired re-checks each entry: refreshed ones stay, gone ones are passed over, an IPv6 pair goes together', async () => {
    const path = join(dir, 'remove.db');
    const db = openDatabase(path, { type: 'hash', readonly: false, create: true });
    const old = b(String(CUTOFF - 1));
    db.put(b('192.0.2.1'), old);
    db.put(b('192.0.2.2'), b(String(T))); // refreshed since the pack was made
    db.put(b('2001:db8::1'), old);
    db.put(b('ipv6:2001:db8:0:0:0:0:0:1'), b('99999999999'));
    db.put(b('2001:db8::2'), old);
    db.put(b('ipv6:2001:db8:0:0:0:0:0:2'), b('OK')); // a permanent key keeps the pair
    db.put(b('192.0.2.9'), b(String(T)));
    const pack = Buffer.concat([
      packEntry([b('192.0.2.1')], old),
      packEntry([b('192.0.2.2')], old),
      packEntry([b('192.0.2.3')], old), // gone
      packEntry([b('2001:db8::1'), b('ipv6:2001:db8:0:0:0:0:0:1')], old),
      packEntry([b('2001:db8::2'), b('ipv6:2001:db8:0:0:0:0:0:2')], old),
    ]);
    const status = Buffer.alloc(5);
    const first = db.removeExpired(pack, 0, 2, CUTOFF, status, 0);
    expect(first).toMatchObject({ entries: 2, removed: 1, kept: 1 });
    const rest = db.removeExpired(pack, first.offset, 100, CUTOFF, status, first.entries);
    expect(rest).toEqual({ offset: pack.length, entries: 3, removed: 1, kept: 1 });
    expect([...status]).toEqual([EntryFate.removed, EntryFate.kept, EntryFate.gone, EntryFate.removed, EntryFate.kept]);
    expect(() => db.removeExpired(pack.subarray(0, 10), 0, 10, CUTOFF, null, 0)).toThrow(/malformed pack/);
    db.close();
    await expectVerified(path);
    expect((await dumpMap(path)).map(([k]) => k)).toEqual([
      '192.0.2.2',
      '192.0.2.9',
      '2001:db8::2',
      'ipv6:2001:db8:0:0:0:0:0:2',
    ]);
  });
});

describe('flock', () => {
  const dir = tempDir();
  const file = join(dir, 'lockme');
  writeFileSync(file, '');

  it('takes and releases shared and exclusive locks', () => {
    const fd = openSync(file, 'r');
    expect(flock(fd, 'sh')).toBe(true);
    expect(flock(fd, 'ex')).toBe(true);
    expect(flock(fd, 'un')).toBe(true);
    closeSync(fd);
  });

  it('shares with shared holders and waits out exclusive ones', async () => {
    const release = await holdLock(file, '-s');
    const fd = openSync(file, 'r');
    try {
      expect(flock(fd, 'sh', 0)).toBe(true);
      flock(fd, 'un');
      expect(flock(fd, 'ex', 0)).toBe(false);
      const t0 = Date.now();
      expect(flock(fd, 'ex', 150)).toBe(false);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(140); // waited for its bound, no less
    } finally {
      closeSync(fd); // after a timed-out wait, as the contract says
    }
    release();
    // A waiter is woken when the holder goes (here by itself after 1 s),
    // long before its bound; the wait blocks this thread, as it does in use.
    const brief = await holdLock(file, '-s', 1);
    const fd2 = openSync(file, 'r');
    try {
      const t0 = Date.now();
      expect(flock(fd2, 'ex', 20_000)).toBe(true);
      expect(Date.now() - t0).toBeLessThan(10_000);
    } finally {
      closeSync(fd2);
      brief();
    }
  });

  it('leaves no lock behind after a wait that timed out', async () => {
    const release = await holdLock(file, '-x');
    const fd = openSync(file, 'r');
    expect(flock(fd, 'ex', 50)).toBe(false);
    closeSync(fd);
    release();
    // The abandoned helper may take the lock for a moment; it must let go.
    let free = false;
    for (let i = 0; i < 200 && !free; i++) {
      free = (await execa('flock', ['-n', '-x', file, 'true'], { reject: false })).exitCode === 0;
      if (!free) await new Promise((r) => setTimeout(r, 10));
    }
    expect(free).toBe(true);
  });

  it('is released by the kernel when the holder is killed', async () => {
    const release = await holdLock(file, '-x');
    const fd = openSync(file, 'r');
    expect(flock(fd, 'sh', 0)).toBe(false);
    release();
    expect(flock(fd, 'sh', 5000)).toBe(true);
    closeSync(fd);
  });

  it('throws on a bad fd with EBADF', () => {
    const e = nativeError(() => flock(9999, 'ex'));
    expect(e.code).toBe('EBADF');
  });
});
