// Who logged in from an address, in a real engine: the record script with
// users (src/engine/relayset.ts's RECORD_WHO_SCRIPT) keeps each address's users within
// the timeout in its who key, stops an address with more users than
// shared_address_users (its dated entry removed, a permanent one left), and
// every reader of the relay set (the commands, poprelayd, the mirror's
// resync) takes the who keys for no address.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { connectOnce, readSharedSet, type EngineClient } from '../src/engine/client.js';
import { parseEngine } from '../src/endpoints.js';
import { LOOKUP_TIMEOUT_MS } from '../src/daemon/answers.js';
import { EngineWho } from '../src/daemon/engine-who.js';
import { engineKey, parseEngineWho, RECORD_WHO_SCRIPT, sharedUsers, whoKey } from '../src/engine/relayset.js';
import { startEngine, type Engine } from './support/engine.js';
import { BIN } from './support/paths.js';
import { run } from './support/processes.js';
import { tempDir } from './support/tmp.js';

const T = Math.floor(Date.now() / 1000);
const TIMEOUT = 900;

describe('the who keys in a real engine', () => {
  let engine: Engine;
  let client: EngineClient;

  beforeAll(async () => {
    engine = await startEngine();
    const e = parseEngine(engine.url);
    if (e === undefined) throw new Error(`not an engine: ${engine.url}`);
    client = await connectOnce(e);
  });
  afterAll(async () => {
    await client?.close();
    await engine?.stop();
  });

  const record = (ip: string, user: string, t: number, limit: number, service = 'pop3'): Promise<unknown> => {
    const a = parseClientAddress(ip);
    return client.eval(RECORD_WHO_SCRIPT, {
      keys: [engineKey(a), whoKey(a)],
      arguments: [String(t), String(TIMEOUT), '60', user, service, String(limit)],
    });
  };
  const users = async (ip: string, now = T) =>
    parseEngineWho(await client.get(whoKey(parseClientAddress(ip))), now - TIMEOUT).map((u) => [u.user, u.service]);

  it('keeps the users within the timeout, and stops the address past shared_address_users', async () => {
    expect(await record('192.0.2.1', 'alice', T - 10, 2)).toBe('recorded');
    expect(await record('192.0.2.1', 'bob', T - 5, 2, 'imap')).toBe('fresh'); // the entry is younger than refresh
    expect(await users('192.0.2.1')).toEqual([
      ['bob', 'imap'],
      ['alice', 'pop3'],
    ]);
    expect(await client.get('poprelay:192.0.2.1')).toBe(String(T - 10));
    const shared = String(await record('192.0.2.1', 'carol', T, 2));
    expect(sharedUsers(shared).map((u) => u.user)).toEqual(['carol', 'bob', 'alice']);
    expect(await client.get('poprelay:192.0.2.1')).toBeNull();
    expect((await users('192.0.2.1')).map(([u]) => u)).toEqual(['carol', 'bob', 'alice']);
    // Its who key lasts as long as its last user's time does.
    const ttl = await client.pExpireTime(whoKey(parseClientAddress('192.0.2.1')));
    expect(Math.round(ttl / 1000)).toBe(T + TIMEOUT);
    // A user past the timeout no longer counts: a login an hour later relays again.
    expect(await record('192.0.2.1', 'alice', T + 3600, 2)).toBe('recorded');
    expect(await users('192.0.2.1', T + 3600)).toEqual([['alice', 'pop3']]);
  });

  it('never touches a permanent entry; -1 stops an address the recorder found shared; 0 is off', async () => {
    await client.set('poprelay:192.0.2.2', 'OK');
    for (const u of ['a', 'b', 'c']) expect(await record('192.0.2.2', u, T, 1)).toBe('permanent');
    expect(await client.get('poprelay:192.0.2.2')).toBe('OK');
    expect(await record('192.0.2.3', 'a', T, 0)).toBe('recorded');
    expect(await record('192.0.2.3', 'b', T - 100, -1)).toMatch(/^shared \{/);
    expect(await client.get('poprelay:192.0.2.3')).toBeNull();
    for (const u of ['a', 'b', 'c', 'd']) await record('192.0.2.4', u, T, 0);
    expect(await client.get('poprelay:192.0.2.4')).toBe(String(T));
    // A name that is anyone's text round-trips.
    expect(await record('2001:db8::4', 'ev"il\n\\x', T, 0)).toBe('recorded');
    expect(await users('2001:db8::4')).toEqual([['ev"il\n\\x', 'pop3']]);
  });

  it('the readers of the relay set see no address in a who key; poprelayd names the users from it', async () => {
    const set = (await readSharedSet(client)).map((e) => e.addr.text).sort();
    expect(set).toEqual(['192.0.2.1', '192.0.2.2', '192.0.2.4', '2001:db8::4']);
    const who = new EngineWho(client, TIMEOUT, { users: () => ['local-user'], version: () => 0 });
    expect(await who.users('192.0.2.1', T + 3600)).toEqual(['alice', 'local-user']);
    expect(await who.users('2001:DB8::4', T)).toEqual(['ev"il\n\\x', 'local-user']);
    // poprelay who asks the engine too.
    const dir = tempDir();
    const ini = join(dir, 'poprelay.ini');
    writeFileSync(ini, `dbfile = ${join(dir, 'popip.db')}\nignore =\nengine = ${engine.url}\n`);
    const r = await run(BIN.admin, ['who', '192.0.2.1', '--json', '--config', ini, '--now', String(T + 3600)]);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { users: Array<{ user: string; service: string }> }).users).toEqual([
      { user: 'alice', service: 'pop3', lastLogin: T + 3600, logins: 0 },
    ]);
    // list and stats name the addresses the engine stops as shared (a permanent entry is none of them).
    writeFileSync(
      ini,
      `dbfile = ${join(dir, 'popip.db')}\nignore =\nengine = ${engine.url}\nshared_address_users = 2\n`,
    );
    const stats = await run(BIN.admin, ['stats', '--json', '--config', ini, '--now', String(T)]);
    expect(stats.code, stats.stderr).toBe(0);
    // (192.0.2.1's login an hour later left only its own user in the key.)
    expect((JSON.parse(stats.stdout) as { sharedAddresses: string[] }).sharedAddresses).toEqual(['192.0.2.4']);
    const list = await run(BIN.admin, ['list', '--config', ini, '--now', String(T)]);
    expect(list.stdout).toMatch(/^192\.0\.2\.4 +- +- +shared: 4 users, may not relay/m);
    expect(list.stdout).not.toMatch(/^192\.0\.2\.2 .*shared/m);
  });
});

describe('EngineWho: one GET per address at a time, waited for no longer than the relay lookup', () => {
  const key = whoKey(parseClientAddress('192.0.2.9'));
  const value = JSON.stringify({ alice: ['pop3', T] });

  it('the answers asked for while a GET is on its way wait for it; the answer is then kept', async () => {
    let gets = 0;
    let answer: (v: string | null) => void = () => undefined;
    const slow = {
      isReady: true,
      get: (k: string) => {
        gets++;
        expect(k).toBe(key);
        return new Promise<string | null>((r) => (answer = r));
      },
    };
    const who = new EngineWho(slow, TIMEOUT);
    const asked = Array.from({ length: 10 }, () => who.users('192.0.2.9', T));
    expect(gets).toBe(1);
    answer(value);
    expect(await Promise.all(asked)).toEqual(Array(10).fill(['alice']));
    expect(who.users('192.0.2.9', T)).toEqual(['alice']); // kept: no promise, no GET
    expect(gets).toBe(1);
  });

  it('an engine that does not answer names the local users after LOOKUP_TIMEOUT_MS', async () => {
    const hung = { isReady: true, get: () => new Promise<string | null>(() => undefined) };
    const who = new EngineWho(hung, TIMEOUT, { users: () => ['here'], version: () => 0 });
    const t0 = performance.now();
    expect(await who.users('192.0.2.9', T)).toEqual(['here']);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(LOOKUP_TIMEOUT_MS - 50);
  });
});
