// Who logged in from each address: the who journal beside the map
// (<dbfile>.who), written by the recorder for real Dovecot logins and for
// logins recorded by hand, read by `poprelay who`, expired by the sweep into
// the report (`poprelay report --since`); the map itself stays what the MTAs
// read, and a journal that cannot be written never costs a login.

import { lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalWho } from '../src/daemon/who-index.js';
import { type Dovecot, HOOK_USER, PASSWORD, startDovecot } from './support/dovecot.js';
import { imapLogin, pop3Login } from './support/mailclient.js';
import { dumpMap, expectVerified } from './support/maps.js';
import { BIN } from './support/paths.js';
import { run } from './support/processes.js';
import { tempDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

const T = Math.floor(Date.now() / 1000);

function setup(extra = ''): { dir: string; ini: string; map: string } {
  const dir = tempDir();
  const map = join(dir, 'popip.db');
  const ini = join(dir, 'poprelay.ini');
  writeFileSync(ini, `dbfile = ${map}\nignore =\nlive_sessions = no\n${extra}`);
  return { dir, ini, map };
}

/** Records a login by hand, as Dovecot's environment gives it. */
const login = (ini: string, ip: string, user: string, tag = 'pop3') =>
  run(BIN.login, ['--config', ini, '--tag', tag], { env: { IP: ip, USER: user } });

const journal = (map: string): Array<Record<string, unknown>> =>
  readFileSync(`${map}.who`, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

interface WhoJson {
  address: string;
  users: Array<{ user: string; service: string; lastLogin: number; logins: number }>;
  shared: boolean;
}

async function who(ini: string, addr: string, now?: number): Promise<{ code: number | undefined; json: WhoJson }> {
  const r = await run(BIN.admin, [
    'who',
    addr,
    '--json',
    '--config',
    ini,
    ...(now === undefined ? [] : ['--now', String(now)]),
  ]);
  return { code: r.code, json: JSON.parse(r.stdout) as WhoJson };
}

describe('the who journal, with a real Dovecot', () => {
  let dovecot: Dovecot;
  beforeAll(async () => {
    dovecot = await startDovecot({ users: 2, ini: 'ignore =\n' });
  });
  afterAll(async () => {
    await dovecot?.stop();
  });

  it("keeps each login's user and service beside the map, and `poprelay who` shows them; the map stays addresses and times", async () => {
    expect((await pop3Login({ ...dovecot.pop3, localAddress: '127.0.0.71' }, 'user0', PASSWORD)).ok).toBe(true);
    expect((await imapLogin({ ...dovecot.imap, localAddress: '127.0.0.71' }, 'user1', PASSWORD)).ok).toBe(true);
    expect((await pop3Login({ ...dovecot.pop3, localAddress: '127.0.0.72' }, 'user0', PASSWORD)).ok).toBe(true);
    const map = dovecot.mapPath;
    await eventually(
      () => lstatSync(`${map}.who`, { throwIfNoEntry: false }) !== undefined && journal(map).length === 3,
      60_000,
      'three lines in the who journal',
    );
    const lines = journal(map);
    expect(lines.map((l) => [l.a, l.s, l.u]).sort()).toEqual([
      ['127.0.0.71', 'imap', 'user1'],
      ['127.0.0.71', 'pop3', 'user0'],
      ['127.0.0.72', 'pop3', 'user0'],
    ]);
    // The hook's user's file, not world-readable: it names the users.
    const st = statSync(`${map}.who`);
    expect(st.mode & 0o777).toBe(0o640);
    const { stdout: uid } = await execa('id', ['-u', HOOK_USER]);
    expect(st.uid).toBe(Number(uid));
    const { code, json } = await who(dovecot.iniPath, '127.0.0.71');
    expect(code).toBe(0);
    expect(json.users.map((u) => [u.user, u.service, u.logins]).sort()).toEqual([
      ['user0', 'pop3', 1],
      ['user1', 'imap', 1],
    ]);
    const text = await run(BIN.admin, ['who', '127.0.0.71', '--config', dovecot.iniPath]);
    expect(text.stdout).toMatch(
      /^127\.0\.0\.71: 2 users within the last 15 minutes\nUSER +SERVICE +LAST LOGIN +LOGINS\n/,
    );
    // The map the MTAs read: the two addresses, each with a plain time.
    await eventually(async () => (await dumpMap(map)).length === 2, 60_000, 'both addresses in the map');
    for (const [k, v] of await dumpMap(map)) {
      expect(['127.0.0.71', '127.0.0.72']).toContain(k);
      expect(v).toMatch(/^[0-9]{10}$/);
    }
    await expectVerified(map);
  });
});

describe('the who journal, recorded by hand', () => {
  it('expires with the entries: the sweep folds older lines into the report, which `poprelay report --since` lists', async () => {
    const { ini, map } = setup();
    expect((await login(ini, '192.0.2.7', 'alice')).code).toBe(0);
    expect((await login(ini, '192.0.2.7', 'bob', 'imap')).code).toBe(0);
    expect((await login(ini, '192.0.2.8', 'alice')).code).toBe(0);
    expect((await login(ini, '2001:db8::7', 'alice')).code).toBe(0);
    expect(journal(map).map((l) => l.a)).toEqual(['192.0.2.7', '192.0.2.7', '192.0.2.8', '2001:db8::7']);
    expect((await who(ini, '2001:DB8:0::7')).json.users.map((u) => u.user)).toEqual(['alice']);
    // A sweep within the timeout keeps every line.
    expect((await run(BIN.sweep, ['--config', ini, '--quiet'])).code).toBe(0);
    expect(journal(map)).toHaveLength(4);
    // One an hour later: the entries go, and so do the lines, into the report.
    expect((await run(BIN.sweep, ['--config', ini, '--now', String(T + 3600)])).stdout).toMatch(/removed 3,/);
    expect(journal(map)).toEqual([]);
    expect((await who(ini, '192.0.2.7', T + 3600)).code).toBe(1);
    // Two days: an hour after T may be the next UTC day.
    const report = await run(BIN.admin, [
      'report',
      '--since',
      '2',
      '--json',
      '--config',
      ini,
      '--now',
      String(T + 3600),
    ]);
    expect(report.code).toBe(0);
    const users = JSON.parse(report.stdout) as Array<{
      user: string;
      logins: number;
      addresses: number;
      services: string[];
    }>;
    expect(users.map((u) => [u.user, u.logins, u.addresses, u.services])).toEqual([
      ['alice', 3, 3, ['pop3']],
      ['bob', 1, 1, ['imap']],
    ]);
    expect(statSync(`${map}.report`).mode & 0o777).toBe(0o640);
    // Lines not yet folded count too, and the table names them.
    expect((await login(ini, '192.0.2.9', 'carol')).code).toBe(0);
    const table = await run(BIN.admin, ['report', '--since', '30', '--config', ini]);
    expect(table.stdout).toMatch(
      /^3 users logged in from \d{4}-\d\d-\d\d to \d{4}-\d\d-\d\d\nUSER +LOGINS +DAYS +ADDRESSES +SERVICES +LAST DAY +RELAYED\nalice +3 +1 +3 +pop3 +\S+ +0\n/,
    );
    expect(table.stdout).toMatch(/^carol +1 +1 +1 +pop3 /m);
    // Days beyond report_days leave the report at the next fold.
    writeFileSync(ini, `dbfile = ${map}\nignore =\nlive_sessions = no\nreport_days = 1\n`);
    expect((await run(BIN.sweep, ['--config', ini, '--quiet', '--now', String(T + 3 * 86_400)])).code).toBe(0);
    const later = JSON.parse(
      (await run(BIN.admin, ['report', '--since', '30', '--json', '--config', ini, '--now', String(T + 3 * 86_400)]))
        .stdout,
    ) as unknown[];
    expect(later).toEqual([]);
    await expectVerified(map);
  });

  it('keeps a name that is not plain as JSON, and shows it escaped', async () => {
    const { ini, map } = setup();
    const evil = 'ev\x1b[31mil\nname"\\';
    expect((await login(ini, '192.0.2.20', evil)).code).toBe(0);
    expect(readFileSync(`${map}.who`, 'utf8').split('\n')).toHaveLength(2); // one line, and the end
    expect(journal(map)[0]?.u).toBe(evil);
    const text = await run(BIN.admin, ['who', '192.0.2.20', '--config', ini]);
    expect(text.stdout).not.toContain('\x1b');
    expect(text.stdout).toContain('"ev\\u001b[31mil\\nname\\"\\\\"');
    const report = await run(BIN.admin, ['report', '--since', '1', '--config', ini]);
    expect(report.stdout).not.toContain('\x1b');
  });

  it('loses no login while sweeps compact the journal under appending recorders', async () => {
    const { ini, map } = setup();
    const n = 40;
    const logins = Array.from({ length: n }, (_, i) => login(ini, `192.0.2.${100 + (i % 50)}`, `user${i}`));
    // Every line is older than the sweeps' --now: each compaction folds all it finds into the report.
    const sweeps = Array.from({ length: 10 }, () =>
      run(BIN.sweep, ['--config', ini, '--quiet', '--now', String(T + 3600)]),
    );
    const results = await Promise.all([...logins, ...sweeps]);
    for (const r of results) expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(
      (await run(BIN.admin, ['report', '--since', '2', '--json', '--config', ini, '--now', String(T + 3600)])).stdout,
    ) as Array<{ user: string; logins: number }>;
    // The report reads the journal's lines too: every login once, in one or the other.
    expect(report.map((u) => u.user).sort()).toEqual(Array.from({ length: n }, (_, i) => `user${i}`).sort());
    expect(report.every((u) => u.logins === 1)).toBe(true);
    await expectVerified(map);
  });

  it('a journal that cannot be written costs no login: recorded, with one line saying the user was not kept', async () => {
    const { ini, map, dir } = setup();
    symlinkSync(join(dir, 'elsewhere'), `${map}.who`);
    const r = await login(ini, '192.0.2.30', 'dave');
    expect(r.code).toBe(0);
    expect((await dumpMap(map)).map(([k]) => k)).toEqual(['192.0.2.30']);
    expect(r.stderr.match(/who journal/g)).toHaveLength(1);
    expect(r.stderr).toMatch(/who journal .*popip\.db\.who: .*; these logins are recorded without their users/);
    expect(lstatSync(join(dir, 'elsewhere'), { throwIfNoEntry: false })).toBeUndefined();
    // A directory in its place: the same.
    const other = setup();
    mkdirSync(`${other.map}.who`);
    expect((await login(other.ini, '192.0.2.31', 'erin')).code).toBe(0);
    expect((await dumpMap(other.map)).map(([k]) => k)).toEqual(['192.0.2.31']);
    await expectVerified(map);
    await expectVerified(other.map);
  });
});

describe("poprelayd's reading of the journal (LocalWho)", () => {
  it('reads only what was appended since, and starts again when the sweep replaced the file', async () => {
    const { ini, map } = setup();
    const who = new LocalWho(map, 900);
    expect(who.users('192.0.2.40', T)).toEqual([]); // no journal yet: nobody
    expect((await login(ini, '192.0.2.40', 'alice')).code).toBe(0);
    expect(who.users('192.0.2.40', T + 1)).toEqual(['alice']);
    expect((await login(ini, '192.0.2.40', 'bob')).code).toBe(0);
    expect(who.users('192.0.2.40', T + 1).sort()).toEqual(['alice', 'bob']);
    // A user past the timeout is not named.
    expect(who.users('192.0.2.40', T + 3600)).toEqual([]);
    // The sweep folds everything away (an hour ahead): a new file, and a login after it.
    expect((await run(BIN.sweep, ['--config', ini, '--quiet', '--now', String(T + 3600)])).code).toBe(0);
    expect((await login(ini, '192.0.2.41', 'carol')).code).toBe(0);
    expect(who.users('192.0.2.41', T + 1)).toEqual(['carol']);
    expect(who.users('192.0.2.40', T + 1)).toEqual([]);
  });
});
