// The poprelay admin command: every subcommand, its output, its errors and
// exit codes. Times are UTC and fixed with --now.

import { readFileSync, statSync } from 'node:fs';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { hostileCases } from './support/hostile.js';
import { configured, dumpMap, expectVerified, makemap } from './support/maps.js';
import { BIN } from './support/paths.js';
import { run } from './support/processes.js';

const T = 1_800_000_000; // 2027-01-15 08:00:00 UTC
const now = ['--now', String(T)];

/** A map with one of each kind of entry. */
async function populated() {
  const c = configured();
  const add = async (args: string[], at: number) => {
    const r = await run(BIN.admin, ['add', ...args, '--config', c.ini, '--now', String(at)]);
    expect(r.code, r.stderr).toBe(0);
  };
  await add(['192.0.2.7'], T - 185);
  await add(['2001:db8::1'], T - 1000);
  await add(['192.0.2.100', '--permanent'], T);
  await add(['10.0.0.1'], T + 600);
  return c;
}

describe('poprelay list', () => {
  it('shows each address once, sorted, with last login, age and time left', async () => {
    const { ini } = await populated();
    const r = await run(BIN.admin, ['list', '--config', ini, ...now]);
    expect(r).toEqual({
      code: 0,
      stderr: '',
      stdout: [
        'ADDRESS      LAST LOGIN           AGE     LEFT',
        '10.0.0.1     2027-01-15 08:10:00  future  15m00s',
        '192.0.2.7    2027-01-15 07:56:55  3m05s   11m55s',
        '192.0.2.100  -                    -       permanent',
        '2001:db8::1  2027-01-15 07:43:20  16m40s  expired',
        '',
      ].join('\n'),
    });
  });

  it('--json gives the same as data', async () => {
    const { ini } = await populated();
    const r = await run(BIN.admin, ['list', '--json', '--config', ini, ...now]);
    expect(JSON.parse(r.stdout)).toEqual([
      {
        address: '10.0.0.1',
        keys: ['10.0.0.1'],
        permanent: false,
        lastLogin: T + 600,
        ageSeconds: -600,
        leftSeconds: 900,
        expired: false,
        invalid: false,
        queued: false,
      },
      {
        address: '192.0.2.7',
        keys: ['192.0.2.7'],
        permanent: false,
        lastLogin: T - 185,
        ageSeconds: 185,
        leftSeconds: 715,
        expired: false,
        invalid: false,
        queued: false,
      },
      {
        address: '192.0.2.100',
        keys: ['192.0.2.100'],
        permanent: true,
        lastLogin: null,
        ageSeconds: null,
        leftSeconds: null,
        expired: false,
        invalid: false,
        queued: false,
      },
      {
        address: '2001:db8::1',
        keys: ['2001:db8::1', 'ipv6:2001:db8:0:0:0:0:0:1'],
        permanent: false,
        lastLogin: T - 1000,
        ageSeconds: 1000,
        leftSeconds: 0,
        expired: true,
        invalid: false,
        queued: false,
      },
    ]);
  });

  it('lists entries of a map made by hand with makemap, and non-address keys as they are', async () => {
    const { ini, dir } = configured();
    await makemap(dir, 'popip', ['192.0.2.50 OK', 'example.org RELAY', `192.0.2.51 ${T - 60}`]);
    const r = await run(BIN.admin, ['list', '--config', ini, ...now]);
    expect(
      r.stdout
        .split('\n')
        .slice(1, -1)
        .map((l) => l.split(/ {2,}/)),
    ).toEqual([
      ['192.0.2.50', '-', '-', 'permanent'],
      ['192.0.2.51', '2027-01-15 07:59:00', '1m00s', '14m00s'],
      ['example.org', '-', '-', 'permanent'],
    ]);
  });
});

describe('poprelay add and del', () => {
  it('add records now (or --now), both IPv6 keys; --permanent writes OK', async () => {
    const { ini, map } = configured();
    expect(await run(BIN.admin, ['add', '2001:DB8::a', '--config', ini, ...now])).toEqual({
      code: 0,
      stdout: 'added 2001:db8::a (may relay for 15m00s)\n',
      stderr: '',
    });
    expect((await run(BIN.admin, ['add', '::ffff:192.0.2.9', '--permanent', '--config', ini])).stdout).toBe(
      'added 192.0.2.9 (permanent)\n',
    );
    expect(await dumpMap(map)).toEqual([
      ['192.0.2.9', 'OK'],
      ['2001:db8::a', String(T)],
      ['ipv6:2001:db8:0:0:0:0:0:a', String(T)],
    ]);
    await expectVerified(map);
    // A later login-style add does not downgrade the permanent entry.
    expect((await run(BIN.admin, ['add', '192.0.2.9', '--config', ini])).stdout).toMatch(
      /^192\.0\.2\.9 has a permanent entry, left as it is/,
    );
  });

  it('del removes both keys, and exits 1 for an address that is not there', async () => {
    const { ini, map } = await populated();
    expect(await run(BIN.admin, ['del', '2001:db8:0:0:0:0:0:1', '--config', ini])).toEqual({
      code: 0,
      stdout: 'removed 2001:db8::1\n',
      stderr: '',
    });
    expect((await dumpMap(map)).map(([k]) => k)).toEqual(['10.0.0.1', '192.0.2.100', '192.0.2.7']);
    expect(await run(BIN.admin, ['del', '2001:db8::1', '--config', ini])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'poprelay: 2001:db8::1 is not in the map\n',
    });
  });
});

describe('poprelay check', () => {
  it.each([
    ['192.0.2.7', 0, '192.0.2.7 may relay: last login 3m05s ago, 11m55s left'],
    ['10.0.0.1', 0, '10.0.0.1 may relay: last login 10m00s in the future, 15m00s left'],
    ['192.0.2.100', 0, '192.0.2.100 may relay: permanent entry'],
    ['2001:db8::1', 0, '2001:db8::1 may relay until the next sweep: last login 16m40s ago, expired'],
    ['192.0.2.8', 1, '192.0.2.8 may not relay: not in the map'],
  ])('%s: exit %i', async (addr, code, line) => {
    const { ini } = await populated();
    expect(await run(BIN.admin, ['check', addr, '--config', ini, ...now])).toEqual({
      code,
      stdout: `${line}\n`,
      stderr: '',
    });
  });

  it('answers as the MTA does after a sweep: not any more', async () => {
    const { ini } = await populated();
    expect((await run(BIN.sweep, ['--config', ini, ...now, '--quiet'])).code).toBe(0);
    expect((await run(BIN.admin, ['check', '2001:db8::1', '--config', ini, ...now])).code).toBe(1);
  });

  it('exits 2 on a missing map', async () => {
    const { ini, map } = configured();
    expect(await run(BIN.admin, ['check', '192.0.2.1', '--config', ini])).toEqual({
      code: 2,
      stdout: '',
      stderr: `poprelay: map ${map} does not exist. It is created by the first recorded login or by "poprelay add"; check dbfile in poprelay.ini.\n`,
    });
  });
});

describe('poprelay stats', () => {
  it('counts dated, permanent and expired entries, and shows size, oldest and newest', async () => {
    const { ini, map } = await populated();
    const size = statSync(map).size;
    expect((await run(BIN.admin, ['stats', '--config', ini, ...now])).stdout).toBe(
      [
        `map:        ${map} (hash, ${size} bytes)`,
        'entries:    4 (3 dated, 1 permanent; 5 keys)',
        'expired:    1 (older than 15 minutes, removed by the next sweep)',
        'oldest:     2001:db8::1, last login 2027-01-15 07:43:20 (16m40s ago)',
        'newest:     10.0.0.1, last login 2027-01-15 08:10:00 (10m00s in the future)',
        'queued:     0 logins not yet in the map',
        'failures:   0 logins the hook could not record (in all)',
        'last sweep: -',
        '',
      ].join('\n'),
    );
    expect(JSON.parse((await run(BIN.admin, ['stats', '--json', '--config', ini, ...now])).stdout)).toEqual({
      map,
      type: 'hash',
      bytes: size,
      entries: 4,
      keys: 5,
      dated: 3,
      permanent: 1,
      expired: 1,
      oldest: { address: '2001:db8::1', lastLogin: T - 1000 },
      newest: { address: '10.0.0.1', lastLogin: T + 600 },
      queued: 0,
      oldestQueued: null,
      recordingFailuresTotal: 0,
      lastSweep: null,
    });
    // After a sweep, its record: what it removed, how long it took.
    expect((await run(BIN.sweep, ['--config', ini, '--quiet', ...now])).code).toBe(0);
    const after = await run(BIN.admin, ['stats', '--config', ini, ...now]);
    expect(after.stdout).toMatch(
      /^last sweep: 2027-01-15 08:00:00 \(0s ago\): removed 1, refreshed 0 live, 0 recording failures since the one before, took \d+(\.\d+)? s$/m,
    );
  });
});

describe('poprelay flush', () => {
  it('with --yes removes every dated entry and keeps permanent ones', async () => {
    const { ini, map } = await populated();
    expect((await run(BIN.admin, ['flush', '--yes', '--config', ini])).stdout).toBe(`${map}: removed 3, permanent 1\n`);
    expect(await dumpMap(map)).toEqual([['192.0.2.100', 'OK']]);
    await expectVerified(map);
  });

  it('refuses without --yes when stdin is not a terminal, and changes nothing', async () => {
    const { ini, map } = await populated();
    const before = readFileSync(map);
    expect(await run(BIN.admin, ['flush', '--config', ini])).toEqual({
      code: 2,
      stdout: '',
      stderr: 'poprelay: flush needs confirmation: stdin is not a terminal, so give --yes\n',
    });
    expect(readFileSync(map).equals(before)).toBe(true);
  });

  it.each([
    ['n', 1, 4],
    ['y', 0, 1],
  ])('asks on a terminal; answering %s exits %i and leaves %i entries', async (answer, code, left) => {
    const { ini, map } = await populated();
    const r = await execa('script', ['-qec', `${BIN.admin} flush --config ${ini}`, '/dev/null'], {
      input: `${answer}\n`,
      reject: false,
    });
    expect(r.exitCode).toBe(code);
    expect(r.stdout).toContain('Remove all 3 dated entries from');
    const keys = (await dumpMap(map)).length;
    expect(keys).toBe(left === 4 ? 5 : 1);
  });
});

describe('bad input', () => {
  it.each([
    [
      ['bogus'],
      'poprelay: unknown command "bogus"; commands: init, list, add, del, check, stats, flush, doctor, who, report (see poprelay --help)\n',
    ],
    [['list', '--bogus'], "poprelay: unknown option '--bogus'; see poprelay list --help\n"],
    [['add'], 'poprelay: add takes ADDR; see poprelay add --help\n'],
    [['list', 'extra'], 'poprelay: list takes no arguments; see poprelay list --help\n'],
    [['add', '1.2.3.4', '--config'], "poprelay: option '--config <value>' argument missing; see poprelay add --help\n"],
  ])('%j: exit 2 with a specific message', async (args, stderr) => {
    expect(await run(BIN.admin, args)).toEqual({ code: 2, stdout: '', stderr });
  });

  it('bare "poprelay" prints usage on stderr and exits 2; --help on stdout, exit 0', async () => {
    const bare = await run(BIN.admin, []);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toMatch(/^Usage: poprelay COMMAND/);
    const help = await run(BIN.admin, ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: poprelay COMMAND[\s\S]*Exit status: 0 success; 1 a negative answer/);
    for (const cmd of ['list', 'add', 'del', 'check', 'stats', 'flush']) {
      const r = await run(BIN.admin, [cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: poprelay ${cmd}[\\s\\S]*Exit status`));
    }
  });

  it('a config error exits 2 naming the file', async () => {
    const { ini } = configured('dbtype = ndbm\n');
    const r = await run(BIN.admin, ['list', '--config', ini]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^poprelay: config .*poprelay\.ini: key "dbtype": value "ndbm" is not allowed; expected "hash" or "btree"\n$/,
    );
  });

  it.each(hostileCases((a) => !a.includes('\u0000')))(
    'the hostile address %s: add, del and check exit 2 and the map is untouched',
    async (_, addr) => {
      const { ini, map } = await populated();
      const before = readFileSync(map);
      for (const cmd of ['add', 'del', 'check']) {
        const r = await run(BIN.admin, [cmd, '--config', ini, '--', addr]);
        expect(r.code).toBe(2);
        expect(r.stdout).toBe('');
        expect(r.stderr).toMatch(/^poprelay: invalid client address .*\n$/);
        expect(r.stderr.length).toBeLessThan(300);
      }
      expect(readFileSync(map).equals(before)).toBe(true);
    },
  );
});
