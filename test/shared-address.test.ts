// shared_address_users on one host: an address with more distinct users
// than that within the timeout stops relaying (its logins not recorded, its
// dated entry out of the map) for real sendmail, Postfix and Exim, while the
// other addresses keep relaying and a permanent entry is never touched; the
// hook names the users in one line, the sweep applies the rule to what is
// left, and a real Dovecot's logins through the front are held to it too.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadConfig } from '../src/config.js';
import { sharedCheck } from '../src/commands/doctor/shared.js';
import { type Dovecot, PASSWORD, startDovecot } from './support/dovecot.js';
import { pop3Login } from './support/mailclient.js';
import { dumpMap, expectVerified } from './support/maps.js';
import { BIN } from './support/paths.js';
import {
  checkPeersInstalled,
  eximConfig,
  eximRelays,
  postfixConfig,
  postmapQuery,
  sendmailConfig,
  sendmailDecisions,
} from './support/peers.js';
import { run } from './support/processes.js';
import { safeDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

const login = (ini: string, ip: string, user: string) =>
  run(BIN.login, ['--config', ini, '--tag', 'pop3'], { env: { IP: ip, USER: user } });

/** [address as Postfix and Exim see it, as sendmail's ${client_addr}] */
const ADDRESSES: Record<string, [string, string]> = {
  shared: ['192.0.2.10', '192.0.2.10'],
  two: ['192.0.2.11', '192.0.2.11'],
  permanent: ['192.0.2.12', '192.0.2.12'],
  shared6: ['2001:db8::10', 'IPv6:2001:db8:0:0:0:0:0:10'],
  one: ['192.0.2.13', '192.0.2.13'],
};

/** What sendmail, Postfix and Exim each decide for every address above. */
async function decisions(dir: string, map: string): Promise<Record<string, [boolean, boolean, boolean]>> {
  const sm = await sendmailConfig(dir, map);
  const pf = postfixConfig(dir, map);
  const ex = eximConfig(dir, map);
  const names = Object.keys(ADDRESSES);
  const sendmail = await sendmailDecisions(
    sm,
    names.map((n) => ADDRESSES[n]![1]),
  );
  const out: Record<string, [boolean, boolean, boolean]> = {};
  for (const [i, n] of names.entries()) {
    const a = ADDRESSES[n]![0];
    out[n] = [sendmail[i]?.relay === true, (await postmapQuery(pf, map, a)) !== null, await eximRelays(ex, a)];
  }
  return out;
}

const YES: [boolean, boolean, boolean] = [true, true, true];
const NO: [boolean, boolean, boolean] = [false, false, false];

describe('shared_address_users on one host, as sendmail, Postfix and Exim read the map', () => {
  let dir: string;
  let map: string;
  let ini: string;

  beforeAll(() => {
    checkPeersInstalled();
    dir = safeDir();
    map = join(dir, 'popip.db');
    ini = join(dir, 'poprelay.ini');
    writeFileSync(ini, `dbfile = ${map}\nignore =\nlive_sessions = no\nshared_address_users = 2\n`);
  });

  it('the third user of an address stops its relaying, named in one line; the others keep theirs', async () => {
    for (const user of ['alice', 'bob']) {
      expect((await login(ini, '192.0.2.10', user)).code).toBe(0);
      expect((await login(ini, '192.0.2.11', user)).code).toBe(0);
      expect((await login(ini, '2001:db8::10', user)).code).toBe(0);
    }
    expect((await run(BIN.admin, ['add', '192.0.2.12', '--permanent', '--config', ini])).code).toBe(0);
    for (const user of ['alice', 'bob', 'carol']) expect((await login(ini, '192.0.2.12', user)).code).toBe(0);
    for (let i = 0; i < 3; i++) expect((await login(ini, '192.0.2.13', 'alice')).code).toBe(0);
    expect(await decisions(dir, map)).toEqual({ shared: YES, two: YES, permanent: YES, shared6: YES, one: YES });

    const third = await login(ini, '192.0.2.10', 'carol');
    expect(third.code).toBe(0);
    expect(third.stderr).toMatch(
      /^poprelay: not recorded 192\.0\.2\.10 \(user=carol, service=pop3\): a shared address: 3 users \(([a-z]+), ([a-z]+), ([a-z]+)\) logged in from it within timeout_minutes, more than shared_address_users = 2; its entry left the map\n$/,
    );
    expect(
      /\((.*)\)/
        .exec(third.stderr.split(': a shared address')[1] ?? '')?.[1]
        ?.split(', ')
        .sort(),
    ).toEqual(['alice', 'bob', 'carol']);
    const third6 = await login(ini, '2001:db8::10', 'carol');
    expect(third6.stderr).toMatch(
      /not recorded 2001:db8::10 .*: a shared address: 3 users .*; its entry left the map\n$/,
    );
    // A fourth: still not recorded, nothing left to remove.
    expect((await login(ini, '192.0.2.10', 'dave')).stderr).toMatch(
      /a shared address: 4 users \((?=[^)]*dave)(?=[^)]*carol)[a-z, ]+\) .*more than shared_address_users = 2\n$/,
    );
    expect(await decisions(dir, map)).toEqual({ shared: NO, two: YES, permanent: YES, shared6: NO, one: YES });
    expect((await dumpMap(map)).find(([k]) => k === '192.0.2.12')?.[1]).toBe('OK');
    await expectVerified(map);

    const who = JSON.parse((await run(BIN.admin, ['who', '192.0.2.10', '--json', '--config', ini])).stdout) as {
      users: Array<{ user: string }>;
      shared: boolean;
    };
    expect(who.shared).toBe(true);
    expect(who.users.map((u) => u.user).sort()).toEqual(['alice', 'bob', 'carol', 'dave']);
    // list, stats, doctor's check and the metrics show the addresses stopped.
    const list = await run(BIN.admin, ['list', '--config', ini]);
    expect(list.stdout).toMatch(
      /^192\.0\.2\.10 +- +- +shared: 4 users, may not relay \(poprelay who 192\.0\.2\.10\)$/m,
    );
    expect(list.stdout).toMatch(/^2001:db8::10 +- +- +shared: 3 users, may not relay/m);
    expect(list.stdout).not.toMatch(/^192\.0\.2\.1[123] .*shared/m);
    const stats = JSON.parse((await run(BIN.admin, ['stats', '--json', '--config', ini])).stdout) as {
      shared: number;
      sharedAddresses: string[];
    };
    expect([stats.shared, stats.sharedAddresses.sort()]).toEqual([2, ['192.0.2.10', '2001:db8::10']]);
    expect((await run(BIN.admin, ['stats', '--config', ini])).stdout).toMatch(
      /^shared: +2 addresses with more than shared_address_users = 2 users, not relaying: /m,
    );
    const check = sharedCheck(loadConfig(ini), Math.floor(Date.now() / 1000));
    expect(check?.status).toBe('WARN');
    expect(check?.detail).toMatch(
      /^2 addresses with more than shared_address_users = 2 users within timeout_minutes may not relay: /,
    );
    expect((await run(BIN.admin, ['who', '192.0.2.11', '--config', ini])).stdout).toMatch(
      /^192\.0\.2\.11: 2 users within the last 15 minutes \(shared_address_users = 2\)\n/,
    );
  });

  it('the sweep applies the rule to what is left (a lowered limit), never to a permanent entry', async () => {
    const metrics = join(dir, 'poprelay.prom');
    writeFileSync(
      ini,
      `dbfile = ${map}\nignore =\nlive_sessions = no\nshared_address_users = 1\nmetrics_file = ${metrics}\n`,
    );
    const r = await run(BIN.sweep, ['--config', ini]);
    expect(r.code).toBe(0);
    expect(readFileSync(metrics, 'utf8')).toMatch(/^poprelay_shared_addresses 3$/m);
    expect(r.stdout).toMatch(
      /^stopped shared address 192\.0\.2\.11: 2 users \((alice, bob|bob, alice)\) within timeout_minutes\n/,
    );
    expect(r.stdout).not.toMatch(/192\.0\.2\.12|192\.0\.2\.13/);
    expect(await decisions(dir, map)).toEqual({ shared: NO, two: NO, permanent: YES, shared6: NO, one: YES });
    await expectVerified(map);
    // Once its users are past the timeout, an address relays again at its next login.
    const later = Math.floor(Date.now() / 1000) + 3600;
    expect((await run(BIN.sweep, ['--config', ini, '--quiet', '--now', String(later)])).code).toBe(0);
    expect((await login(ini, '192.0.2.10', 'alice')).stderr).toMatch(/^poprelay: recorded 192\.0\.2\.10 \(user=alice/);
    expect((await decisions(dir, map)).shared).toEqual(YES);
    await expectVerified(map);
  });
});

describe('shared_address_users for logins through a real Dovecot (the front and its queue)', () => {
  let dovecot: Dovecot;
  beforeAll(async () => {
    dovecot = await startDovecot({ users: 3, ini: 'ignore =\nshared_address_users = 2\n' });
  });
  afterAll(async () => {
    await dovecot?.stop();
  });

  it("two users from an address relay; a third stops it, with one line in Dovecot's log; another address keeps relaying", async () => {
    const from = (ip: string, user: string) => pop3Login({ ...dovecot.pop3, localAddress: ip }, user, PASSWORD);
    // No map yet until the first login is applied.
    const keys = async (): Promise<string[]> => (await dumpMap(dovecot.mapPath).catch(() => [])).map(([k]) => k);
    expect((await from('127.0.0.81', 'user0')).ok).toBe(true);
    expect((await from('127.0.0.81', 'user1')).ok).toBe(true);
    expect((await from('127.0.0.82', 'user0')).ok).toBe(true);
    await eventually(async () => (await keys()).length === 2, 60_000, 'both addresses in the map');
    expect((await from('127.0.0.81', 'user2')).ok).toBe(true); // the login itself goes on
    await eventually(
      () => /a shared address: 3 users/.test(dovecot.log()),
      60_000,
      "the shared-address line in Dovecot's log",
    );
    expect(dovecot.log()).toMatch(
      /poprelay: not recorded 127\.0\.0\.81 \(user=user2, service=pop3\): a shared address: 3 users \((user\d, ){2}user\d\) logged in from it within timeout_minutes, more than shared_address_users = 2; its entry left the map/,
    );
    expect(await keys()).toEqual(['127.0.0.82']);
    await expectVerified(dovecot.mapPath);
  });
});
