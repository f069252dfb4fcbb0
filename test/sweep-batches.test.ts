// How a long change (the sweep) shares the map: one copy when no writer
// waits, a batch cut short when one does, and what a waiting writer or a
// queued login wrote is in the published map before the long change ends.

import { existsSync, readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import type { MapSettings } from '../src/config.js';
import { openDatabase, type Database } from '../src/native.js';
import { putEntry, readEntries, readQueued, sweepMap } from '../src/map/relay-map.js';
import { lookupKeys, updateMapInSteps } from '../src/map/file.js';
import { enqueueLogin } from '../src/map/queue.js';
import { dumpMap, expectVerified, settings } from './support/maps.js';
import { mapop } from './support/processes.js';
import { tempDir } from './support/tmp.js';

const ip = parseClientAddress;
const NOW = Math.floor(Date.now() / 1000);
const pause = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

/** A step that writes one key and holds on to the lock a little, for `steps` steps or until `stop` says so. */
function slowWork(steps: number, stop: () => boolean = () => false, onStep: (i: number) => void = () => {}) {
  let i = 0;
  return (db: Database): { done: boolean; changed: boolean } => {
    onStep(i);
    db.put(Buffer.from(`10.9.0.${i}`), Buffer.from(String(NOW)));
    pause(25);
    i++;
    return { done: i >= steps || stop(), changed: true };
  };
}

/**
 * A change of 400 slow steps on `s` during which something else writes the
 * map: `start` at step `at`, then after each later step whether `visible`
 * finds its write in the published map, the change stopping once it does.
 * Returns the copies published and whether it was seen before the change ended.
 */
function changeWhileWritten(
  s: MapSettings,
  at: number,
  start: () => void,
  visible: () => boolean,
): { copies: number; seenDuring: boolean } {
  let seenDuring = false;
  const copies = updateMapInSteps(s, {
    step: slowWork(
      400,
      () => seenDuring,
      (i) => {
        if (i === at) start();
        else if (i > at) seenDuring ||= visible();
      },
    ),
  });
  return { copies, seenDuring };
}

describe('a change made in steps', () => {
  const dir = tempDir();

  it('publishes one copy when no writer waits, however long it holds the lock', async () => {
    const s = settings(dir, 'alone.db');
    putEntry(s, ip('192.0.2.1'), String(NOW));
    // 40 steps of 25 ms: several times as long as a batch may last when someone waits.
    const copies = updateMapInSteps(s, { step: slowWork(40) });
    expect(copies).toBe(1);
    await expectVerified(s.path);
    expect((await dumpMap(s.path)).length).toBe(41);
    expect(existsSync(`${s.path}.poprelay-tmp`)).toBe(false);
  });

  it('cuts the batch for a login queued meanwhile: the login is in the published map before the change ends', async () => {
    const s = settings(dir, 'queued.db');
    putEntry(s, ip('192.0.2.1'), String(NOW));
    const login = ip('198.51.100.7');
    const { copies, seenDuring } = changeWhileWritten(
      s,
      1,
      // Queued as the hook queues it when it finds the lock taken: left to the holder.
      () => enqueueLogin(s.path, login, NOW),
      () => lookupKeys(s, login.keys)?.[0] === String(NOW),
    );
    expect(seenDuring).toBe(true);
    expect(copies).toBeGreaterThanOrEqual(2);
    expect(readQueued(s)).toEqual([]);
    await expectVerified(s.path);
    expect(readEntries(s).find((e) => e.address === '198.51.100.7')?.time).toBe(NOW);
  });

  it('cuts the batch for a process waiting for the lock: its write is published before the change ends, and kept', async () => {
    const s = settings(dir, 'waiter.db', { lockTimeoutMs: 60_000 });
    putEntry(s, ip('192.0.2.1'), String(NOW));
    let writer: ReturnType<typeof mapop> | undefined;
    const { copies, seenDuring } = changeWhileWritten(
      s,
      0,
      // Started once this process holds the lock, so that it has to wait for it.
      () => {
        writer = mapop(['record', s.path, String(NOW), '203.0.113.9']);
      },
      () => lookupKeys(s, ['203.0.113.9'])?.[0] === String(NOW),
    );
    expect(await writer).toEqual({ ok: 1 });
    expect(seenDuring).toBe(true);
    expect(copies).toBeGreaterThanOrEqual(2);
    await expectVerified(s.path);
    const keys = (await dumpMap(s.path)).map(([k]) => k);
    expect(keys).toContain('203.0.113.9');
    expect(keys).toContain('10.9.0.0'); // what the first batch did stays
  });
});

describe('the sweep', () => {
  const dir = tempDir();
  const T = NOW; // queued logins are applied against the real clock

  function seeded(name: string) {
    const s = settings(dir, name);
    putEntry(s, ip('192.0.2.1'), String(T - 5000)); // expired
    putEntry(s, ip('192.0.2.2'), String(T - 5000)); // expired, but live
    putEntry(s, ip('192.0.2.3'), String(T - 5000)); // expired, but logged in again (queued)
    putEntry(s, ip('2001:db8::1'), String(T - 5000)); // an expired IPv6 pair
    putEntry(s, ip('192.0.2.4'), String(T + 60)); // in the future
    putEntry(s, ip('192.0.2.5'), 'OK');
    return s;
  }

  it('writes live sessions and leftover logins in its one copy, and counts them as kept', async () => {
    const s = seeded('leftovers.db');
    enqueueLogin(s.path, ip('192.0.2.3'), T - 10);
    enqueueLogin(s.path, ip('192.0.2.6'), T - 10); // a new address
    const r = sweepMap(s, { now: T, live: [ip('192.0.2.2'), ip('192.0.2.7')] });
    expect(r.copies).toBe(1);
    expect(r.removed.map((e) => e.address).sort()).toEqual(['192.0.2.1', '2001:db8::1']);
    expect(r.removedCount).toBe(2);
    // 192.0.2.2 and .7 live (refreshed), .3 and .6 queued, .4 in the future.
    expect(r).toMatchObject({ kept: 5, refreshed: 2, permanent: 1 });
    expect(r.future.map((e) => e.address)).toEqual(['192.0.2.4']);
    expect(readQueued(s)).toEqual([]);
    await expectVerified(s.path);
    const byAddress = new Map(readEntries(s).map((e) => [e.address, e.time]));
    expect([...byAddress.keys()].sort()).toEqual([
      '192.0.2.2',
      '192.0.2.3',
      '192.0.2.4',
      '192.0.2.5',
      '192.0.2.6',
      '192.0.2.7',
    ]);
    expect(byAddress.get('192.0.2.3')).toBe(T - 10);
    expect(byAddress.get('192.0.2.2')).toBeLessThanOrEqual(T);
  });

  it('decides keys made by hand as one entry with their address: a v4-mapped key with its IPv4 key, IPv6 keys in any form', async () => {
    const s = settings(dir, 'by-hand.db');
    const db = openDatabase(s.path, { type: 'hash', readonly: false, create: true });
    const put = (k: string, v: string): void => db.put(Buffer.from(k), Buffer.from(v));
    put('192.0.2.30', String(T - 5000));
    put('::ffff:192.0.2.30', 'OK'); // permanent wins
    put('192.0.2.31', String(T - 10));
    put('::ffff:192.0.2.31', String(T - 5000)); // the newer time counts
    put('192.0.2.32', String(T - 5000));
    put('::ffff:192.0.2.32', String(T - 5000)); // both go, one entry
    put('ipv6:2001:0db8:0:0:0:0:0:9', String(T - 5000));
    put('2001:db8::9', String(T - 10)); // leading zeros: the same address
    put('ff02::1', String(T - 5000)); // no client address: its own entry
    db.close();
    const r = sweepMap(s, { now: T });
    expect(r.removed.map((e) => e.address).sort()).toEqual(['192.0.2.32', 'ff02::1']);
    expect(r).toMatchObject({ removedCount: 2, kept: 2, permanent: 1 });
    await expectVerified(s.path);
    expect((await dumpMap(s.path)).map(([k]) => k)).toEqual([
      '192.0.2.30',
      '192.0.2.31',
      '2001:db8::9',
      '::ffff:192.0.2.30',
      '::ffff:192.0.2.31',
      'ipv6:2001:0db8:0:0:0:0:0:9',
    ]);
  });

  it('counts the same without listing, and a dry run writes nothing', async () => {
    const listed = sweepMap(seeded('listed.db'), { now: T, dryRun: true });
    const s = seeded('counted.db');
    const before = await dumpMap(s.path);
    const counted = sweepMap(s, { now: T, dryRun: true, list: false });
    expect(await dumpMap(s.path)).toEqual(before);
    expect(counted).toEqual({ ...listed, removed: [], future: [] });
    expect(listed).toMatchObject({ removedCount: 4, kept: 1, permanent: 1, copies: 0 });
    expect(sweepMap(s, { now: T, list: false })).toMatchObject({ removed: [], removedCount: 4, copies: 1 });
    expect(readdirSync(dir).filter((f) => f.endsWith('.poprelay-tmp'))).toEqual([]);
  });
});
