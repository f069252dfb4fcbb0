// The login queue beside the map (src/map/queue.ts, src/map/file.ts): what the
// hook does when the map is busy, what refresh_seconds saves, and how the
// queue is applied, shown, and never lost.

import { mkdirSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { loadConfig } from '../src/config.js';
import { admitIncoming } from '../src/hook/incoming.js';
import { queueLogin, readEntries, readQueued, recordLogin, updateMap } from '../src/map/relay-map.js';
import { enqueueLogin, queueDir, readQueue } from '../src/map/queue.js';
import { holdLock } from './support/locks.js';
import { configured, dumpMap, expectVerified } from './support/maps.js';
import { BIN } from './support/paths.js';
import { run } from './support/processes.js';

const T = Math.floor(Date.now() / 1000);
const addr = parseClientAddress;

describe('refresh_seconds', () => {
  it('a login whose entry is younger writes nothing: no copy, no queue file', async () => {
    const { s, map } = configured();
    expect(queueLogin(s, addr('192.0.2.1'), T, 60)).toBe('recorded');
    const ino = statSync(map).ino;
    expect(queueLogin(s, addr('192.0.2.1'), T + 59, 60)).toBe('fresh');
    expect(statSync(map).ino).toBe(ino);
    expect(readdirSync(queueDir(map))).toEqual([]);
    expect(readEntries(s)[0]?.time).toBe(T);
    // Older than refresh_seconds: written; 0: always written.
    expect(queueLogin(s, addr('192.0.2.1'), T + 60, 60)).toBe('recorded');
    expect(readEntries(s)[0]?.time).toBe(T + 60);
    expect(queueLogin(s, addr('192.0.2.1'), T + 61, 0)).toBe('recorded');
    expect(readEntries(s)[0]?.time).toBe(T + 61);
    await expectVerified(map);
  });

  it('an IPv6 login is fresh only when both its keys are', async () => {
    const { s, map } = configured();
    expect(queueLogin(s, addr('2001:db8::9'), T, 60)).toBe('recorded');
    updateMap(s, (db) => db.del(Buffer.from('ipv6:2001:db8:0:0:0:0:0:9')));
    expect(queueLogin(s, addr('2001:db8::9'), T + 1, 60)).toBe('recorded');
    expect((await dumpMap(map)).map(([k]) => k)).toEqual(['2001:db8::9', 'ipv6:2001:db8:0:0:0:0:0:9']);
  });

  it('a permanent entry stays permanent and is not queued', () => {
    const { s, map } = configured();
    updateMap(s, (db) => (db.put(Buffer.from('192.0.2.2'), Buffer.from('OK')), true));
    expect(queueLogin(s, addr('192.0.2.2'), T, 60)).toBe('permanent');
    expect(queueLogin(s, addr('192.0.2.2'), T, 0)).toBe('permanent');
    expect(readEntries(s)[0]?.time).toBeNull();
    expect(readQueue(map).logins).toEqual([]);
  });

  it('is refused in poprelay.ini when more than half of timeout_minutes', async () => {
    const { ini } = configured('timeout_minutes = 1\nrefresh_seconds = 31\n');
    const r = await run(BIN.admin, ['list', '--config', ini]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/key "refresh_seconds": 31 is more than half of timeout_minutes = 1 \(60 s\)/);
  });
});

describe('while another writer holds the lock', () => {
  it('the hook queues the login and leaves at once; list, check and stats show it queued; the next writer applies it', async () => {
    const { s, map, ini } = configured();
    recordLogin(s, addr('192.0.2.50'), T);
    const release = await holdLock(`${map}.lock`);
    let hook;
    try {
      hook = await run(BIN.login, ['--config', ini], { env: { IP: '192.0.2.51' } });
    } finally {
      release();
    }
    expect(hook.code).toBe(0);
    expect(hook.stderr).toBe(
      'poprelay: recorded 192.0.2.51 (user=(none)): queued; the writer holding the lock applies it\n',
    );
    expect(readQueued(s).map((q) => q.address.text)).toEqual(['192.0.2.51']);
    expect(readEntries(s).map((e) => e.address)).toEqual(['192.0.2.50']);

    const list = await run(BIN.admin, ['list', '--config', ini]);
    expect(list.stdout).toMatch(/^192\.0\.2\.51 +\d{4}-\d\d-\d\d [\d:]+ +\d+s +queued: not yet in the map$/m);
    const listed = JSON.parse((await run(BIN.admin, ['list', '--json', '--config', ini])).stdout) as Array<{
      address: string;
      queued: boolean;
    }>;
    expect(listed.map((e) => [e.address, e.queued])).toEqual([
      ['192.0.2.50', false],
      ['192.0.2.51', true],
    ]);
    const check = await run(BIN.admin, ['check', '192.0.2.51', '--config', ini]);
    expect(check.code).toBe(1);
    expect(check.stdout).toMatch(/^192\.0\.2\.51 may not relay yet: its login \d+s ago is queued, not yet in the map/);
    const stats = JSON.parse((await run(BIN.admin, ['stats', '--json', '--config', ini])).stdout) as {
      queued: number;
      oldestQueued: { address: string };
    };
    expect(stats.queued).toBe(1);
    expect(stats.oldestQueued.address).toBe('192.0.2.51');

    // Any writer applies it in the same copy as its own change.
    const add = await run(BIN.admin, ['add', '192.0.2.52', '--config', ini]);
    expect(add.code).toBe(0);
    expect(
      readEntries(s)
        .map((e) => e.address)
        .sort(),
    ).toEqual(['192.0.2.50', '192.0.2.51', '192.0.2.52']);
    expect(readQueued(s)).toEqual([]);
    await expectVerified(map);
  });

  it('poprelay-sweep applies what is left queued, and the hook lingers no longer than lock_timeout_ms on a locked map', async () => {
    const { s, map, ini } = configured('lock_timeout_ms = 300\n');
    recordLogin(s, addr('192.0.2.60'), T);
    const release = await holdLock(map); // the map itself, as makemap would hold it
    let hook;
    try {
      hook = await run(BIN.login, ['--config', ini], { env: { IP: '192.0.2.61' } });
    } finally {
      release();
    }
    expect(hook.code).toBe(1);
    expect(hook.stderr).toMatch(
      /^poprelay: not recorded 192\.0\.2\.61 \(user=\(none\)\): map .* stayed locked by another process for more than lock_timeout_ms = 300 ms; .* The login is queued and goes in once the map can take it\.\n$/,
    );
    expect(readQueued(s).map((q) => q.address.text)).toEqual(['192.0.2.61']);
    const sweep = await run(BIN.sweep, ['--config', ini]);
    expect(sweep.code, sweep.stderr).toBe(0);
    expect(
      readEntries(s)
        .map((e) => e.address)
        .sort(),
    ).toEqual(['192.0.2.60', '192.0.2.61']);
    expect(readQueued(s)).toEqual([]);
  });
});

describe('applying the queue', () => {
  it('never moves an entry back in time, drops logins older than the timeout, and keeps permanent entries', async () => {
    const { s, map } = configured();
    recordLogin(s, addr('192.0.2.70'), T);
    updateMap(s, (db) => (db.put(Buffer.from('192.0.2.71'), Buffer.from('OK')), true));
    enqueueLogin(map, addr('192.0.2.70'), T - 100); // late, out of order
    enqueueLogin(map, addr('192.0.2.71'), T); // permanent
    enqueueLogin(map, addr('192.0.2.72'), T - 901); // older than timeout_minutes
    enqueueLogin(map, addr('192.0.2.73'), T - 5);
    enqueueLogin(map, addr('192.0.2.73'), T - 10); // twice
    updateMap(s, () => false);
    const got = Object.fromEntries(readEntries(s).map((e) => [e.address, e.time]));
    expect(got).toEqual({ '192.0.2.70': T, '192.0.2.71': null, '192.0.2.73': T - 5 });
    expect(readQueued(s)).toEqual([]);
    await expectVerified(map);
  });

  it('ignores names that are not records, and leaves them for doctor to report', () => {
    const { s, map } = configured();
    enqueueLogin(map, addr('192.0.2.80'), T);
    for (const junk of ['junk', `${T}_192.0.2.081_1_ab`, `${T}_2001:DB8::1_1_ab`, `${T}_192.0.2.82_1_ab.tmp`])
      writeFileSync(join(queueDir(map), junk), '');
    expect(readQueue(map).strays.sort()).toEqual(
      ['junk', `${T}_192.0.2.081_1_ab`, `${T}_192.0.2.82_1_ab.tmp`, `${T}_2001:DB8::1_1_ab`].sort(),
    );
    updateMap(s, () => false);
    expect(readEntries(s).map((e) => e.address)).toEqual(['192.0.2.80']);
    expect(readdirSync(queueDir(map)).sort()).toHaveLength(4);
  });
});

describe("admitting the front's incoming logins (src/hook/incoming.ts)", () => {
  /** An incoming login as the front leaves it, its mtime the login's time. */
  const leave = (map: string, name: string, time = T): void => {
    mkdirSync(queueDir(map), { recursive: true });
    writeFileSync(join(queueDir(map), name), '');
    utimesSync(join(queueDir(map), name), time, time);
  };

  it('queues each good login with its file time, canonical address, and removes what it read', () => {
    const { ini, map } = configured();
    writeFileSync(ini, `dbfile = ${map}\nignore = 10.9.0.0/16\nrefresh_seconds = 60\n`);
    const cfg = loadConfig(ini);
    recordLogin(cfg.map, addr('192.0.2.91'), T - 10);
    leave(map, 'f10_2001:DB8::90_imap_alice', T - 5);
    leave(map, 'f11_192.0.2.91_pop3_bob'); // fresh: 10 s old, refresh 60
    leave(map, 'f12_10.9.1.1__'); // ignored
    leave(map, 'f13_192.0.2.92__', T - 16 * 60); // older than the timeout
    leave(map, 'f14_1.2.3__'); // no address
    leave(map, 'f15_junk'); // not the front's form
    const got = admitIncoming(cfg, T).map((a) => [a.login.name, a.outcome, a.addr?.text ?? null]);
    expect(got.sort()).toEqual(
      [
        ['f10_2001:DB8::90_imap_alice', 'queued', '2001:db8::90'],
        ['f11_192.0.2.91_pop3_bob', 'fresh', '192.0.2.91'],
        ['f12_10.9.1.1__', 'ignored', '10.9.1.1'],
        ['f13_192.0.2.92__', 'expired', '192.0.2.92'],
        ['f14_1.2.3__', 'invalid', null],
        ['f15_junk', 'invalid', null],
      ].sort(),
    );
    const q = readQueue(map);
    expect(q.incoming).toEqual([]);
    expect(q.logins.map((l) => [l.address.text, l.time])).toEqual([['2001:db8::90', T - 5]]);
    expect(admitIncoming(cfg, T)).toEqual([]);
  });

  it('is what every writer must pass: a writer applies records, never what the front left', () => {
    const { s, map } = configured();
    leave(map, 'f20_192.0.2.93__');
    updateMap(s, () => false);
    expect(readEntries(s)).toEqual([]);
    expect(readQueue(map).incoming).toEqual(['f20_192.0.2.93__']);
  });
});
