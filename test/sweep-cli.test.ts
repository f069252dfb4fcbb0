// poprelay-sweep as cron runs it, with the clock set by --now.

import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { openDatabase } from '../src/native.js';
import { putEntry, readEntries } from '../src/map/relay-map.js';
import { configured, dumpMap, expectVerified } from './support/maps.js';
import { BIN, ROOT } from './support/paths.js';
import { run } from './support/processes.js';

const T = 1_800_000_000;
const ip = parseClientAddress;

function seed(s: Parameters<typeof putEntry>[0]): void {
  putEntry(s, ip('192.0.2.1'), String(T - 901)); // 1 s past the 15 minutes
  putEntry(s, ip('192.0.2.2'), String(T - 900)); // exactly 15 minutes: kept
  putEntry(s, ip('2001:db8::1'), String(T - 3600));
  putEntry(s, ip('2001:db8::2'), String(T - 60));
  putEntry(s, ip('192.0.2.3'), 'OK');
  putEntry(s, ip('192.0.2.4'), String(T + 600));
}

describe('poprelay-sweep', () => {
  it('removes what is older than timeout_minutes, IPv6 pairs together, and prints a summary', async () => {
    const { ini, map, s } = configured();
    seed(s);
    const r = await run(BIN.sweep, ['--config', ini, '--now', String(T)]);
    expect(r).toEqual({ code: 0, stdout: `${map}: kept 3, removed 2, permanent 1\n`, stderr: '' });
    expect((await dumpMap(map)).map(([k]) => k)).toEqual([
      '192.0.2.2',
      '192.0.2.3',
      '192.0.2.4',
      '2001:db8::2',
      'ipv6:2001:db8:0:0:0:0:0:2',
    ]);
    await expectVerified(map);
  });

  it('--verbose lists removed entries and entries dated in the future', async () => {
    const { ini, map, s } = configured();
    seed(s);
    const r = await run(BIN.sweep, ['--config', ini, '--now', String(T), '--verbose']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      [
        'removed 192.0.2.1 (last login 15m01s ago)',
        'removed 2001:db8::1 (last login 1h00m ago)',
        'kept 192.0.2.4: last login 10m00s in the future (clock skew?); counted as fresh',
        `${map}: kept 3, removed 2, permanent 1`,
        '',
      ].join('\n'),
    );
  });

  it('--dry-run lists what it would remove and leaves the file byte-identical', async () => {
    const { ini, map, s } = configured();
    seed(s);
    const before = readFileSync(map);
    const ino = statSync(map).ino;
    const r = await run(BIN.sweep, ['--config', ini, '--now', String(T), '--dry-run']);
    expect(r.stdout).toBe(
      [
        'would remove 192.0.2.1 (last login 15m01s ago)',
        'would remove 2001:db8::1 (last login 1h00m ago)',
        `dry run, ${map}: kept 3, would remove 2, permanent 1`,
        '',
      ].join('\n'),
    );
    expect(readFileSync(map).equals(before)).toBe(true);
    expect(statSync(map).ino).toBe(ino);
  });

  it('--quiet prints nothing on success', async () => {
    const { ini, s } = configured();
    seed(s);
    expect(await run(BIN.sweep, ['--config', ini, '--now', String(T), '--quiet'])).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
  });

  it('honours timeout_minutes from the config', async () => {
    const { ini, map, s } = configured('timeout_minutes = 60\n');
    seed(s);
    const r = await run(BIN.sweep, ['--config', ini, '--now', String(T)]);
    // With 60 minutes, the oldest dated entry (exactly 1 h) is not yet older than the timeout.
    expect(r.stdout).toBe(`${map}: kept 5, removed 0, permanent 1\n`);
  });

  it('sweeps an empty map to nothing', async () => {
    const { ini, map } = configured();
    openDatabase(map, { type: 'hash', readonly: false, create: true }).close();
    expect((await run(BIN.sweep, ['--config', ini, '--now', String(T)])).stdout).toBe(
      `${map}: kept 0, removed 0, permanent 0\n`,
    );
  });

  it('sweeps a map of 100,000 entries', async () => {
    const { ini, map } = configured();
    const lines = Array.from(
      { length: 100_000 },
      (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255} ${i % 4 === 0 ? T - 5000 : T - 10}`,
    );
    await execa('makemap', ['hash', map.slice(0, -3)], { input: lines.join('\n') + '\n' });
    const r = await run(BIN.sweep, ['--config', ini, '--now', String(T)]);
    expect(r).toEqual({ code: 0, stdout: `${map}: kept 75000, removed 25000, permanent 0\n`, stderr: '' });
    await expectVerified(map);
    expect((await dumpMap(map)).length).toBe(75_000);
  });

  it('exits 1 on a missing map, saying so on stderr', async () => {
    const { ini, map } = configured();
    const r = await run(BIN.sweep, ['--config', ini, '--now', String(T)]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      new RegExp(`^poprelay-sweep: map ${map} does not exist\\. It is created by the first recorded login`),
    );
  });

  it('exits 1 on a corrupt map, and leaves it as it is', async () => {
    const { ini, map } = configured();
    writeFileSync(map, Buffer.alloc(4096, 7));
    const r = await run(BIN.sweep, ['--config', ini, '--now', String(T)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`^poprelay-sweep: cannot read map ${map}: it is not a readable Berkeley DB file`),
    );
    expect(readFileSync(map).equals(Buffer.alloc(4096, 7))).toBe(true);
  });

  it('exits 1 on a bad config and 2 on bad usage', async () => {
    const { ini } = configured('timeout_minutes = -1\n');
    const bad = await run(BIN.sweep, ['--config', ini]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^poprelay-sweep: config .*: key "timeout_minutes": value "-1" is not allowed/);
    expect(await run(BIN.sweep, ['--frobnicate'])).toEqual({
      code: 2,
      stdout: '',
      stderr: "poprelay-sweep: unknown option '--frobnicate'; see poprelay-sweep --help\n",
    });
    expect((await run(BIN.sweep, ['--verbose', '--quiet'])).stderr).toBe(
      'poprelay-sweep: --verbose and --quiet exclude each other\n',
    );
    expect((await run(BIN.sweep, ['extra'])).code).toBe(2);
    expect((await run(BIN.sweep, ['--now', 'yesterday'])).stderr).toBe(
      'poprelay-sweep: --now takes Unix seconds, not "yesterday"\n',
    );
    const help = await run(BIN.sweep, ['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: poprelay-sweep/);
    expect(help.stdout).toMatch(/Exit status: 0 success; 1 error/);
  });

  it('races logins without losing one: each login made while it runs is in the map after, which verifies', async () => {
    const { ini, map } = configured();
    // A million entries, half expired: a sweep long enough (seconds) that
    // many logins fall inside it. The real clock: every seeded time is far
    // in the past or the future.
    const now = Math.floor(Date.now() / 1000);
    const lines = Array.from(
      { length: 1_000_000 },
      (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255} ${i % 2 === 0 ? now - 5000 : now + 86_400}`,
    );
    await execa('makemap', ['hash', map.slice(0, -3)], { input: lines.join('\n') + '\n' });
    let sweeping = true;
    const sweeper = run(BIN.sweep, ['--config', ini]).then((r) => {
      sweeping = false;
      return r;
    });
    // Logins of addresses the sweep is removing, three at a time, from the
    // sweep's start until it ends: some meet its unlocked walk, some its
    // locked batches (the hook then leaves the login to the sweep).
    const logins: Array<{ ip: string; code: number | undefined; during: boolean }> = [];
    let next = 0;
    const loop = async (): Promise<void> => {
      while (sweeping) {
        const i = 2 * next++;
        const addr = `10.0.${i >> 8}.${i & 255}`; // even: seeded as expired
        const during = sweeping;
        const r = await run(BIN.login, ['--config', ini], { env: { IP: addr } });
        logins.push({ ip: addr, code: r.code, during });
      }
    };
    await Promise.all([loop(), loop(), loop()]);
    const swept = await sweeper;
    expect(swept.code).toBe(0);
    expect(swept.stderr).toBe('');
    expect(swept.stdout).toMatch(new RegExp(`^${map}: kept \\d+, removed \\d+, permanent 0\n$`));
    expect(logins.filter((l) => l.during).length).toBeGreaterThanOrEqual(3);
    expect(logins.every((l) => l.code === 0)).toBe(true);
    const entries = readEntries({ path: map, type: 'hash', lockTimeoutMs: 1000, mode: 0o644, timeoutSeconds: 900 });
    for (const l of logins) expect(entries.find((e) => e.address === l.ip)?.time).toBeGreaterThanOrEqual(now);
    expect(entries.length).toBe(500_000 + logins.length);
    await expectVerified(map);
    // How long a login waits behind the sweep is measured by the benchmark
    // (docs/benchmarks.md, section 3); that a waiting writer cuts the
    // sweep's batch, by test/sweep-batches.test.ts.
  }, 60_000);
});

describe('scheduling files', () => {
  it('the cron.d line runs poprelay-sweep --quiet every minute as root, unless systemd runs', () => {
    const lines = readFileSync(`${ROOT}/etc/cron.d/poprelay`, 'utf8')
      .split('\n')
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(lines).toEqual([
      'SHELL=/bin/sh',
      '* * * * *\troot\t[ -d /run/systemd/system ] || [ ! -x /usr/local/sbin/poprelay-sweep ] || /usr/local/sbin/poprelay-sweep --quiet',
    ]);
  });

  it('the systemd units (the sweep and its timer, poprelayd) pass systemd-analyze verify', async () => {
    // MANPATH: verify also looks up the Documentation= pages, which the installer installs.
    const r = await execa(
      'systemd-analyze',
      [
        'verify',
        `${ROOT}/etc/systemd/poprelay-sweep.service`,
        `${ROOT}/etc/systemd/poprelay-sweep.timer`,
        `${ROOT}/etc/systemd/poprelayd.service`,
      ],
      {
        reject: false,
        env: { MANPATH: join(ROOT, 'man') },
      },
    );
    // verify checks that ExecStart exists; the binary is installed by the installer, not here.
    const notInstalled = (p: string): string =>
      `${p}.service: Command /usr/local/sbin/${p} is not executable: No such file or directory`;
    expect(
      r.stderr
        .split('\n')
        .filter((l) => l !== '' && l !== notInstalled('poprelay-sweep') && l !== notInstalled('poprelayd')),
    ).toEqual([]);
  });
});
