// live_sessions: the sweep asks a real Dovecot (2.3, and 2.4 chrooted) which
// sessions are live, through doveadm who on its anvil socket, and keeps
// their addresses; a session's end, the ignore list and an unreachable
// Dovecot each behave as the manual says.

import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadConfig } from '../src/config.js';
import { liveCheck } from '../src/commands/doctor/live-sessions.js';
import { liveAddresses, parseWho } from '../src/hook/live.js';
import { readEntries } from '../src/map/relay-map.js';
import { type Dovecot, dovecotVersions, PASSWORD, startDovecot, treeOf, whoOf } from './support/dovecot.js';
import { holdSession, imapIdleSteps, pop3Login, pop3OpenSteps } from './support/mailclient.js';
import { settings } from './support/maps.js';
import { BIN } from './support/paths.js';
import { eventually } from './support/wait.js';

const MINUTE = 60;

describe('parseWho', () => {
  const row = (username: string, service: string, pid: string, ip: string) => ({ username, service, pid, ip });
  it('takes the POP3 and IMAP sessions, each address once, and skips the rest', () => {
    const text = JSON.stringify([
      row('alice', 'imap', '101', '192.0.2.1'),
      row('alice', 'imap', '102', '192.0.2.1'),
      row('bob', 'pop3', '103', '2001:db8::7'),
      row('carol', 'submission', '104', '192.0.2.3'),
      row('dave', 'imap', '105', ''),
      row('eve', 'lmtp', '106', '192.0.2.5'),
    ]);
    expect(parseWho(text)).toMatchObject({ unreadable: 0, firstProblem: '' });
    expect(parseWho(text).addresses.map((a) => a.text)).toEqual(['192.0.2.1', '2001:db8::7']);
  });
  it("reads 2.3's and 2.4's rows alike (2.4 adds dest_ip)", () => {
    // As doveadm -f json who -1 prints them: Debian 12's Dovecot 2.3, then Debian 13's 2.4.
    expect(
      parseWho('[{"username":"user0","service":"imap","pid":"4337","ip":"127.8.9.1"}]').addresses.map((a) => a.text),
    ).toEqual(['127.8.9.1']);
    expect(
      parseWho('[{"username":"user0","service":"pop3","pid":"313","ip":"127.8.9.2","dest_ip":""}]').addresses.map(
        (a) => a.text,
      ),
    ).toEqual(['127.8.9.2']);
    expect(parseWho('[]')).toEqual({ addresses: [], unreadable: 0, firstProblem: '' });
  });
  it('refuses output that is not a JSON array', () => {
    expect(() => parseWho('username\tservice\tpid\tip\n')).toThrow(/unexpected doveadm who output \(not JSON/);
    expect(() => parseWho('{"username":"a"}')).toThrow(/not a JSON array/);
  });
});

describe.each(dovecotVersions())('live sessions with Dovecot %s', (version) => {
  let dc: Dovecot;
  /** The anvil socket and the doveadm that asks it: 2.3's doveadm cannot ask 2.4's anvil, so 2.4's runs in its tree. */
  let anvil: string;
  let doveadm: string;
  let ini: string;
  const entryTime = (address: string): number | null | undefined =>
    existsSync(dc.mapPath) ? readEntries(settings(dc.mapDir)).find((e) => e.address === address)?.time : undefined;
  const sweep = (config: string, at: number) =>
    execa(BIN.sweep, ['--config', config, '--now', String(at)], { reject: false });
  const sweepConfig = (name: string, extra: string): string => {
    const f = join(dc.dir, name);
    // The sweep runs on this host: the map by its host path (a chrooted Dovecot sees another).
    writeFileSync(
      f,
      `dbfile = ${dc.mapPath}\nignore = 127.9.0.0/16\ndovecot_anvil = ${anvil}\ndoveadm = ${doveadm}\n${extra}`,
    );
    return f;
  };

  beforeAll(async () => {
    dc = await startDovecot({ users: 3, version });
    ({ anvil, doveadm } = whoOf(dc.dir, version));
    ini = sweepConfig('sweep.ini', 'live_sessions = yes\n');
  });
  afterAll(async () => dc?.stop());

  it('keeps an IMAP client in IDLE and an open POP3 session across a sweep 16 minutes on, and lets them go once they leave', async () => {
    const imap = await holdSession({ ...dc.imap, localAddress: '127.8.0.1' }, imapIdleSteps('user0', PASSWORD));
    const pop = await holdSession({ ...dc.pop3, localAddress: '127.8.0.2' }, pop3OpenSteps('user1', PASSWORD));
    expect((await pop3Login({ ...dc.pop3, localAddress: '127.8.0.3' }, 'user2', PASSWORD)).ok).toBe(true);
    for (const a of ['127.8.0.1', '127.8.0.2', '127.8.0.3'])
      await eventually(() => typeof entryTime(a) === 'number', 60_000, `${a} recorded`);
    await eventually(
      () => {
        const live = liveAddresses(anvil, doveadm);
        return 'addresses' in live && live.addresses.length >= 2;
      },
      60_000,
      'doveadm who lists both sessions',
    );

    const before = Math.floor(Date.now() / 1000);
    const later = before + 16 * MINUTE;
    const r = await sweep(ini, later);
    const after = Math.floor(Date.now() / 1000);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${dc.mapPath}: kept 2, removed 1, permanent 0, refreshed 2 live`);
    // Refreshed to the clock's time, never to the future --now: the entry must not outlive its session by that much.
    for (const a of ['127.8.0.1', '127.8.0.2']) {
      expect(entryTime(a)).toBeGreaterThanOrEqual(before);
      expect(entryTime(a)).toBeLessThanOrEqual(after);
    }
    expect(entryTime('127.8.0.3')).toBeUndefined();

    await imap.close();
    await pop.close();
    await eventually(
      () => {
        const live = liveAddresses(anvil, doveadm);
        return 'addresses' in live && !live.addresses.some((a) => a.text.startsWith('127.8.0.'));
      },
      60_000,
      'doveadm who no longer lists the sessions',
    );
    const r2 = await sweep(ini, later + 16 * MINUTE);
    expect(r2.stdout).toBe(`${dc.mapPath}: kept 0, removed 2, permanent 0`);
    expect(readEntries(settings(dc.mapDir))).toEqual([]); // the map exists: three logins went in
  });

  it('poprelay doctor asks the same way, and a doveadm of another version is no answer', async () => {
    if (treeOf(version) === '') {
      const cfg = loadConfig(ini);
      expect(liveCheck(cfg)).toMatchObject({
        status: 'OK',
        detail: expect.stringMatching(
          /^doveadm who answers on \S+: \d+ address\(es\) with a live POP3 or IMAP session$/,
        ),
      });
      expect(liveCheck({ ...cfg, dovecotAnvil: join(dc.dir, 'run/none') })).toMatchObject({
        status: 'WARN',
        detail: expect.stringMatching(/is Dovecot running\?/),
      });
      expect(liveCheck({ ...cfg, liveSessions: 'no' })).toMatchObject({
        status: 'OK',
        detail: expect.stringMatching(/^off \(live_sessions = no\)/),
      });
    } else {
      // Debian 12's doveadm (2.3) asking 2.4's anvil exits 0 with an empty list and a complaint on stderr.
      const answer = liveAddresses(join(dc.dir, 'run/anvil'), '/usr/bin/doveadm');
      expect(answer).toEqual({
        error: expect.stringMatching(/failed: Error: Invalid input: VERSION\tanvil-server\t2\t0$/),
      });
    }
  });

  it('never refreshes an address on the ignore list', async () => {
    const held = await holdSession({ ...dc.imap, localAddress: '127.9.0.1' }, imapIdleSteps('user0', PASSWORD));
    try {
      // The hook's own config ignores nothing, so the login is recorded; the sweep's ignores 127.9.0.0/16.
      await eventually(() => typeof entryTime('127.9.0.1') === 'number', 60_000, 'recorded');
      const r = await sweep(ini, Math.floor(Date.now() / 1000) + 16 * MINUTE);
      expect(r.stdout).toBe(`${dc.mapPath}: kept 0, removed 1, permanent 0`);
    } finally {
      await held.close();
    }
  });

  it('sweeps as before when Dovecot cannot be asked, and says why in one line', async () => {
    const held = await holdSession({ ...dc.imap, localAddress: '127.8.1.1' }, imapIdleSteps('user1', PASSWORD));
    try {
      await eventually(() => typeof entryTime('127.8.1.1') === 'number', 60_000, 'recorded');
      const unreachable = join(dc.dir, 'unreachable.ini');
      const noAnvil = join(dc.dir, 'run/no-anvil');
      writeFileSync(unreachable, `dbfile = ${dc.mapPath}\nlive_sessions = yes\ndovecot_anvil = ${noAnvil}\n`);
      const r = await sweep(unreachable, Math.floor(Date.now() / 1000) + 16 * MINUTE);
      expect(r.exitCode).toBe(0);
      expect(r.stderr).toMatch(
        /^poprelay-sweep: live sessions not checked \(\/usr\/bin\/doveadm who -a \S+ failed: .*\); sweeping as if none were live$/,
      );
      expect(r.stderr.split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(noAnvil);
      expect(r.stdout).toBe(`${dc.mapPath}: kept 0, removed 1, permanent 0`);
    } finally {
      await held.close();
    }
  });
});
