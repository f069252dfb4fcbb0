// user_limit counted in the engine, across MTA hosts: two poprelayd, each
// asked by a real Postfix smtpd through the shipped policy line and each
// with exactly the mta role's ACL line (docs/cluster.md), share one real
// engine; a POP/IMAP host's hook (as the pop role) records who logged in.
// The limited user's recipient past the limit is deferred on the host that
// did not count the others; another user is not; the count keys are no
// entries for poprelay list nor for the mirror. An engine user that may not
// count defers nobody and says why, once rather than per recipient. Then
// the counter's parts on their own: its keys, its bound on the wait.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { parseUserLimit } from '../src/config.js';
import { Decider } from '../src/daemon/decider.js';
import { COUNT_MARGIN_SECONDS, countKey, EngineCounter, userLimitCounter } from '../src/daemon/engine-counter.js';
import { DaemonLog } from '../src/daemon/log.js';
import { LocalCounter } from '../src/daemon/user-limit.js';
import { readSharedSet, type EngineClient } from '../src/engine/client.js';
import { addressOfEngineKey } from '../src/engine/relayset.js';
import { engineRoleAcl } from '../src/engine/roles.js';
import { respCall } from '../src/engine/call.js';
import type { RespValue } from '../src/engine/resp.js';
import { readEntries } from '../src/map/relay-map.js';
import type { MapSettings } from '../src/config.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { configured } from './support/maps.js';
import { BIN } from './support/paths.js';
import { checkPeersInstalled } from './support/peers.js';
import { startPoprelayd, type Daemon } from './support/poprelayd.js';
import { LOCAL_DOMAIN, startPostfix, type Postfix } from './support/postfix.js';
import { run } from './support/processes.js';
import { safeDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

const ROOT_SECRET = 'engine-admin-secret';
const PERIOD = 3600;
const INBOUND = `postmaster@${LOCAL_DOMAIN}`;
const relayed = (from: number, n: number): string[] =>
  Array.from({ length: n }, (_, i) => `r${from + i}@elsewhere.example`);

interface MtaHost {
  daemon: Daemon;
  smtpd: Postfix;
  map: MapSettings;
}

describe('user_limit = 3/1h counted in one engine by two MTA hosts, as real Postfix smtpds ask', () => {
  let engine: Engine;
  const hosts: MtaHost[] = [];
  const asRoot = (commands: string[][]): RespValue[] =>
    respCall({ host: '127.0.0.1', port: engine.port, db: 0, password: ROOT_SECRET, display: 'test' }, commands, 10_000);
  const url = (user: string, secret: string): string => `redis://${user}:${secret}@127.0.0.1:${engine.port}/0`;

  async function mtaHost(user: string, secret: string, mirror: boolean): Promise<MtaHost> {
    const port = await freePort();
    const { ini, s } = configured(
      `engine = ${url(user, secret)}\npolicy_listen = inet:127.0.0.1:${port}\nuser_limit = 3/1h\n` +
        (mirror ? 'mirror = yes\n' : ''),
    );
    const daemon = await startPoprelayd(ini, 1, mirror);
    const host: MtaHost = { daemon, smtpd: await startPostfix(safeDir(), port), map: s };
    hosts.push(host);
    return host;
  }

  /** A login on a POP/IMAP host: its hook, as the pop role, records the address and its user in the engine. */
  async function login(ip: string, user: string): Promise<void> {
    const pop = configured(`engine = ${url('poprelay-pop', 'pop-secret')}\n`);
    const r = await run(BIN.login, ['--config', pop.ini, '--tag', 'pop3'], { env: { IP: ip, USER: user } });
    expect(r.stderr).toContain(`recorded ${ip} in the engine`);
  }

  beforeAll(async () => {
    checkPeersInstalled();
    engine = await startEngine([], ROOT_SECRET);
    await engine.acl([
      engineRoleAcl('mta', 0, undefined, 'mta-secret'),
      engineRoleAcl('pop', 0, undefined, 'pop-secret'),
      engineRoleAcl('admin', 0, undefined, 'admin-secret'),
      // An MTA host's user as the role was before user_limit counted in the engine: reads only.
      engineRoleAcl('mta', 0, 'poprelay-mta-reads', 'reads-secret')
        .replace(' ~poprelay:count:*', '')
        .replace(' +incrby +expireat', ''),
    ]);
    // The engine's administrator sets what the mirror needs: the mta role may not run CONFIG.
    asRoot([['CONFIG', 'SET', 'notify-keyspace-events', 'Kg$x']]);
  });
  afterAll(async () => {
    for (const h of hosts) {
      await h.smtpd.stop();
      await h.daemon.stop();
    }
    await engine?.stop();
  });

  it("the 4th recipient, through the other host, gets the deferral naming the limit; another user's do not", async () => {
    const a = await mtaHost('poprelay-mta', 'mta-secret', false);
    const b = await mtaHost('poprelay-mta', 'mta-secret', true);
    await login('127.0.0.61', 'alice');
    await login('127.0.0.62', 'bob');
    // The recipients must fall in one window of the hour: not begun in its last minute.
    await eventually(() => Math.floor(Date.now() / 1000) % PERIOD < PERIOD - 60, 120_000, 'a window with time left');
    const window = Math.floor(Date.now() / 1000 / PERIOD);

    expect(await a.smtpd.rcpt('127.0.0.61', relayed(0, 3))).toEqual(['250', '250', '250']);
    // Host B has counted none of them: the engine has, for both. The local recipient counts too (the
    // policy line comes before permit_auth_destination), and Postfix accepts it all the same.
    expect(await b.smtpd.rcpt('127.0.0.61', [...relayed(3, 1), INBOUND])).toEqual(['450', '250']);
    expect(await b.smtpd.rcpt('127.0.0.62', relayed(0, 3))).toEqual(['250', '250', '250']);
    // Still over within the period, on either host.
    expect(await a.smtpd.rcpt('127.0.0.61', relayed(4, 1))).toEqual(['450']);

    await eventually(() => /decision=defer/.test(b.daemon.log()), 60_000, "host B's defer line");
    // The first recipient of its session: Postfix has no queue id for the message yet.
    expect(b.daemon.log()).toMatch(
      /^poprelayd: audit: protocol=policy client=127\.0\.0\.61 decision=defer user=alice sender=sender@example\.net recipient=r3@elsewhere\.example limit=3\/1h over=alice$/m,
    );
    expect(b.daemon.log()).not.toMatch(/decision=defer user=bob|user_limit not applied/);
    expect(a.daemon.log()).not.toMatch(/user_limit not applied/);

    // One key per user and window, expiring past the window's end; the who keys and entries untouched.
    const end = (window + 1) * PERIOD + COUNT_MARGIN_SECONDS;
    expect(
      asRoot([
        ['GET', countKey(PERIOD, window, 'alice')],
        ['EXPIRETIME', countKey(PERIOD, window, 'alice')],
        ['GET', countKey(PERIOD, window, 'bob')],
        ['EXPIRETIME', countKey(PERIOD, window, 'bob')],
      ]),
    ).toEqual(['6', end, '3', end]);
    const [keys] = asRoot([['KEYS', 'poprelay:*']]);
    expect((keys as string[]).sort()).toEqual(
      [
        'poprelay:127.0.0.61',
        'poprelay:127.0.0.62',
        'poprelay:who:127.0.0.61',
        'poprelay:who:127.0.0.62',
        `poprelay:count:3600:${window}:alice`,
        `poprelay:count:3600:${window}:bob`,
      ].sort(),
    );

    // The count keys are no entries: not in poprelay list, not in host B's mirrored map.
    const admin = configured(`engine = ${url('poprelay-admin', 'admin-secret')}\n`);
    const list = await run(BIN.admin, ['list', '--json', '--config', admin.ini]);
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ address: string }>).map((e) => e.address).sort()).toEqual([
      '127.0.0.61',
      '127.0.0.62',
    ]);
    const mirrored = (): string[] =>
      readEntries(b.map)
        .map((e) => e.address)
        .sort();
    await eventually(() => mirrored().length === 2, 60_000, "host B's mirror to hold both addresses");
    expect(mirrored()).toEqual(['127.0.0.61', '127.0.0.62']);
    // The mta role allowed every count: the engine refused its user nothing but the mirror's CONFIG GET.
    const [log] = asRoot([['ACL', 'LOG', '128']]);
    const refused = (log as RespValue[][]).map(
      (e) => `${String(e[e.indexOf('username') + 1])} ${String(e[e.indexOf('object') + 1])}`,
    );
    expect([...new Set(refused)]).toEqual(['poprelay-mta config|get']);
  });

  it('an engine user that may not count (no +incrby) defers nobody, and says why in one line, not one per recipient', async () => {
    const c = await mtaHost('poprelay-mta-reads', 'reads-secret', false);
    await login('127.0.0.63', 'carol');
    const recipients = relayed(0, 8);
    expect(await c.smtpd.rcpt('127.0.0.63', recipients)).toEqual(recipients.map(() => '250'));
    await eventually(
      () => (c.daemon.log().match(/decision=relay user=carol/g) ?? []).length === recipients.length,
      60_000,
      'an audit line per recipient',
    );
    const said = c.daemon
      .log()
      .split('\n')
      .filter((l) => l.includes('user_limit not applied'));
    expect(said[0]).toMatch(
      /^poprelayd: user_limit not applied: the counter failed \(the engine refused to count: NOPERM .*'incrby'.*; this host's engine user needs \+incrby \+expireat on ~poprelay:count:\* \(the mta role, docs\/cluster\.md\)\); relaying as if no limit were set/,
    );
    // At most one a LOG_EVERY_MS: fewer lines than the recipients that failed to count.
    expect(said.length).toBeLessThan(recipients.length);
    expect(c.daemon.log()).not.toMatch(/decision=defer/);
    expect(asRoot([['KEYS', 'poprelay:count:*:carol']])).toEqual([[]]);
  });
});

describe("the counter's keys: no user text escapes them, and no reader of the relay set takes them for entries", () => {
  it('a plain name is itself; any other a digest of fixed length, never a plain name', () => {
    expect(countKey(3600, 478_000, 'alice@example.org')).toBe('poprelay:count:3600:478000:alice@example.org');
    const odd = ['a b', 'x:1.2.3.4', 'crlf\r\nSET poprelay:1.2.3.4 OK', '*', 'ü', 'a'.repeat(65), 'b'.repeat(5000)];
    const keys = odd.map((u) => countKey(3600, 1, u));
    for (const k of keys) expect(k).toMatch(/^poprelay:count:3600:1:~[0-9a-f]{32}$/);
    expect(new Set(keys).size).toBe(odd.length);
    expect(countKey(60, 1, 'alice')).not.toBe(countKey(3600, 1, 'alice'));
  });

  it('addressOfEngineKey names addresses only: never a count key or a who key, whatever the user', () => {
    expect(addressOfEngineKey('poprelay:192.0.2.7')?.text).toBe('192.0.2.7');
    expect(addressOfEngineKey('poprelay:2001:db8::1')?.text).toBe('2001:db8::1');
    for (const key of [
      countKey(3600, 1, 'alice'),
      'poprelay:count:192.0.2.7',
      'poprelay:count:3600:1:192.0.2.7',
      'poprelay:who:192.0.2.7',
      'other:192.0.2.7',
    ])
      expect(addressOfEngineKey(key), key).toBeNull();
  });

  it('readSharedSet reads the entries alone: count and who keys are neither read nor returned', async () => {
    const asked: string[][] = [];
    const values: Record<string, string> = {
      'poprelay:192.0.2.7': '1700000000',
      'poprelay:count:3600:1:alice': '4',
      'poprelay:who:192.0.2.7': '{}',
    };
    const client = {
      async *scanIterator() {
        yield Object.keys(values);
      },
      mGet: (keys: string[]) => {
        asked.push(keys);
        return Promise.resolve(keys.map((k) => values[k] ?? null));
      },
    } as unknown as EngineClient;
    const read = await readSharedSet(client);
    expect(read.map((e) => [e.addr.text, e.time])).toEqual([['192.0.2.7', 1700000000]]);
    expect(asked).toEqual([['poprelay:192.0.2.7']]);
  });
});

describe('EngineCounter: a count that does not come defers nobody', () => {
  const limit = parseUserLimit('1/1m') ?? null;
  const cfg = { auditLog: false, userLimit: limit, userLimitAction: 'defer' as const };
  const yes = { ask: () => Promise.resolve({ relay: true, cached: false }) };
  const req = { addr: parseClientAddress('192.0.2.1'), fields: { recipient: 'x@y.example' } };

  it('an engine that never answers: the answer waits no longer than the bound, and relays', async () => {
    const silent = {
      isReady: true,
      incrBy: () => new Promise<number>(() => undefined),
      expireAtNx: () => new Promise<number>(() => undefined),
    };
    await expect(new EngineCounter(silent, 20).add('alice', 1, 60)).rejects.toThrow(
      /^the engine did not count: no answer within 20 ms$/,
    );
    const written: string[] = [];
    const log = new DaemonLog((l) => written.push(l), false);
    const d = new Decider(cfg, yes, { users: () => ['alice'] }, new EngineCounter(silent, 20), log);
    for (let i = 0; i < 3; i++) expect(await d.decide('policy', req)).toEqual({ relay: true });
    expect(written.filter((l) => l.includes('user_limit not applied'))).toHaveLength(1);
  });

  it('no connection: it fails at once, saying so', async () => {
    const offline = { isReady: false, incrBy: () => Promise.resolve(1), expireAtNx: () => Promise.resolve(1) };
    await expect(new EngineCounter(offline).add('alice', 1, 60)).rejects.toThrow(
      /^the engine did not count: not connected$/,
    );
  });

  it('counts with INCRBY and an expiry at the window end (NX) together, and without an engine locally', async () => {
    const sent: string[] = [];
    const counts = new Map<string, number>();
    const client = {
      isReady: true,
      incrBy: (key: string, by: number) => {
        sent.push(`INCRBY ${key} ${by}`);
        counts.set(key, (counts.get(key) ?? 0) + by);
        return Promise.resolve(counts.get(key) ?? 0);
      },
      expireAtNx: (key: string, at: number) => {
        sent.push(`EXPIREAT ${key} ${at} NX`);
        return Promise.resolve(1);
      },
    };
    const counter = new EngineCounter(client);
    expect(await counter.add('alice', 7, 60)).toBe(1);
    expect(await counter.add('alice', 7, 60)).toBe(2);
    expect(sent.slice(0, 2)).toEqual([
      'INCRBY poprelay:count:60:7:alice 1',
      `EXPIREAT poprelay:count:60:7:alice ${8 * 60 + COUNT_MARGIN_SECONDS} NX`,
    ]);
    expect(userLimitCounter(null)).toBeInstanceOf(LocalCounter);
  });
});
