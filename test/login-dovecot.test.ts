// poprelay-login under a real Dovecot, 2.3 (Debian 12) and 2.4 (Debian 13,
// chrooted): logins over POP3 and IMAP from many source addresses,
// configured through the shipped dovecot-conf/ snippet (test/dovecot.ts).

import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readEntries, type RelayEntry } from '../src/map/relay-map.js';
import { type Dovecot, dovecotVersions, PASSWORD, startDovecot } from './support/dovecot.js';
import { makeIPv6Link } from './support/ipv6-link.js';
import { holdLock } from './support/locks.js';
import { imapLogin, imapSelect, pop3, pop3Login } from './support/mailclient.js';
import { expectVerified, settings } from './support/maps.js';
import { eventually } from './support/wait.js';

const now = (): number => Math.floor(Date.now() / 1000);

function entries(dc: Dovecot): RelayEntry[] {
  try {
    return readEntries(settings(dc.mapDir));
  } catch {
    return [];
  }
}

function entryOf(dc: Dovecot, address: string): RelayEntry | undefined {
  return entries(dc).find((e) => e.address === address);
}

/** The hook records after the login has gone on; wait for its log line. */
async function recorded(dc: Dovecot, address: string): Promise<RelayEntry> {
  await eventually(() => dc.log().includes(`poprelay: recorded ${address} `));
  // A login logged as queued goes in when the writer holding the lock publishes its copy.
  return eventually(() => entryOf(dc, address), 60_000, `${address}, logged as recorded, in the map`);
}

const VERSIONS = dovecotVersions();

describe.each(VERSIONS)('Dovecot %s, with a working map', (version) => {
  let dc: Dovecot;
  beforeAll(async () => {
    dc = await startDovecot({ users: 3, version });
  });
  afterAll(async () => dc?.stop());

  it('records POP3 and IMAP logins from several addresses with a fresh time, and logs each at Info', async () => {
    const t0 = now();
    const logins = [
      pop3Login({ ...dc.pop3, localAddress: '127.1.0.1' }, 'user0', PASSWORD),
      pop3Login({ ...dc.pop3, localAddress: '127.1.0.2' }, 'user1', PASSWORD),
      imapLogin({ ...dc.imap, localAddress: '127.1.1.1' }, 'user2', PASSWORD),
      imapLogin({ ...dc.imap, localAddress: '127.1.1.2' }, 'user0', PASSWORD),
    ];
    expect((await Promise.all(logins)).map((l) => l.ok)).toEqual([true, true, true, true]);
    for (const a of ['127.1.0.1', '127.1.0.2', '127.1.1.1', '127.1.1.2']) {
      const e = await recorded(dc, a);
      expect(e.time).toBeGreaterThanOrEqual(t0);
      expect(e.time).toBeLessThanOrEqual(now());
    }
    expect(dc.log()).toMatch(new RegExp(`master: Info: Dovecot v${version.replace('.', '\\.')}\\.\\d`));
    // Dovecot names the service of the recorder that wrote the line, which admits every service's logins.
    expect(dc.log()).toMatch(
      /poprelay-(pop3|imap): Info: poprelay: recorded 127\.1\.0\.1 \(user=user0, service=pop3\)/,
    );
    expect(dc.log()).toMatch(
      /poprelay-(pop3|imap): Info: poprelay: recorded 127\.1\.1\.1 \(user=user2, service=imap\)/,
    );
    await expectVerified(dc.mapPath);
  });

  it('writes nothing for a second login within refresh_seconds; with refresh_seconds = 0 it refreshes the time', async () => {
    expect((await pop3Login({ ...dc.pop3, localAddress: '127.1.2.1' }, 'user0', PASSWORD)).ok).toBe(true);
    const first = (await recorded(dc, '127.1.2.1')).time ?? 0;
    const published = statSync(dc.mapPath).ino;
    await eventually(() => now() > first, 3000);
    expect((await imapLogin({ ...dc.imap, localAddress: '127.1.2.1' }, 'user1', PASSWORD)).ok).toBe(true);
    await eventually(() =>
      dc
        .log()
        .includes(
          'poprelay: recorded 127.1.2.1 (user=user1, service=imap): already in the map, younger than refresh_seconds; nothing written',
        ),
    );
    expect(entryOf(dc, '127.1.2.1')?.time).toBe(first);
    expect(statSync(dc.mapPath).ino).toBe(published); // no copy was made
    const ini = readFileSync(dc.iniPath, 'utf8');
    writeFileSync(dc.iniPath, `${ini}refresh_seconds = 0\n`);
    try {
      expect((await imapLogin({ ...dc.imap, localAddress: '127.1.2.1' }, 'user1', PASSWORD)).ok).toBe(true);
      const second = await eventually(() => {
        const t = entryOf(dc, '127.1.2.1')?.time ?? 0;
        return t > first ? t : undefined;
      });
      expect(second).toBeGreaterThan(first);
    } finally {
      writeFileSync(dc.iniPath, ini);
    }
  });

  it('records nothing for a failed login', async () => {
    const bad = await pop3Login({ ...dc.pop3, localAddress: '127.1.3.1' }, 'user0', 'wrong-password');
    expect(bad.ok).toBe(false);
    const badImap = await imapLogin({ ...dc.imap, localAddress: '127.1.3.2' }, 'user1', 'wrong-password');
    expect(badImap.ok).toBe(false);
    // A later good login is recorded; by then the failed ones would have been too.
    expect((await pop3Login({ ...dc.pop3, localAddress: '127.1.3.3' }, 'user0', PASSWORD)).ok).toBe(true);
    await recorded(dc, '127.1.3.3');
    expect(entryOf(dc, '127.1.3.1')).toBeUndefined();
    expect(entryOf(dc, '127.1.3.2')).toBeUndefined();
    expect(dc.log()).not.toMatch(/poprelay: recorded 127\.1\.3\.[12] /);
  });

  it('leaves the session working, and nothing of poprelay reaches the client', async () => {
    const p = await pop3Login({ ...dc.pop3, localAddress: '127.1.4.1' }, 'user1', PASSWORD, [
      pop3.stat,
      pop3.list,
      pop3.retr(1),
    ]);
    expect(p.ok).toBe(true);
    expect(p.replies[3]).toMatch(/^\+OK 1 \d+\r\n$/);
    expect(p.replies[4]).toMatch(/^\+OK 1 messages:\r\n1 \d+\r\n\.\r\n$/);
    expect(p.replies[5]).toContain('Subject: hello user1\r\n\r\nbody of user1\r\n.\r\n');
    const i = await imapLogin({ ...dc.imap, localAddress: '127.1.4.2' }, 'user2', PASSWORD, [imapSelect]);
    expect(i.replies[2]).toMatch(/\* 1 EXISTS\r\n[\s\S]*b1 OK \[READ-WRITE\] Select completed/);
    for (const c of [p, i]) {
      expect(c.transcript).not.toMatch(/poprelay/i);
      expect(c.transcript).not.toMatch(/[\u0000-\u0009\u000b\u000c\u000e-\u001f]/);
    }
    await recorded(dc, '127.1.4.1');
    await recorded(dc, '127.1.4.2');
  });

  it('skips addresses on the ignore list (the default covers loopback)', async () => {
    const good = readFileSync(dc.iniPath, 'utf8');
    writeFileSync(dc.iniPath, good.replace('ignore =\n', ''));
    try {
      expect((await pop3Login({ ...dc.pop3, localAddress: '127.1.5.1' }, 'user0', PASSWORD)).ok).toBe(true);
      await eventually(() =>
        dc.log().includes('poprelay: not recorded 127.1.5.1 (user=user0, service=pop3): in the ignore list'),
      );
      expect(entryOf(dc, '127.1.5.1')).toBeUndefined();
    } finally {
      writeFileSync(dc.iniPath, good);
    }
  });

  it('records 100 concurrent logins from 100 addresses', async () => {
    const addrs = Array.from({ length: 100 }, (_, i) => `127.2.${i >> 4}.${(i & 15) + 1}`);
    const results = await Promise.all(
      addrs.map((a, i) =>
        i % 2 === 0
          ? pop3Login({ ...dc.pop3, localAddress: a }, `user${i % 3}`, PASSWORD, [pop3.stat])
          : imapLogin({ ...dc.imap, localAddress: a }, `user${i % 3}`, PASSWORD, [imapSelect]),
      ),
    );
    expect(results.filter((r) => !r.ok).length).toBe(0);
    // Each login is queued before its hook lets go, and applied by whichever
    // hook holds the lock: all of them, however busy the machine.
    await eventually(() => addrs.every((a) => entryOf(dc, a) !== undefined), 120_000, 'all 100 logins in the map');
    await expectVerified(dc.mapPath);
    expect(dc.log()).not.toMatch(/poprelay: not recorded 127\.2\./);
  });
});

describe.each(VERSIONS)('Dovecot %s: when recording fails, logins still succeed and the log says why', (version) => {
  let dc: Dovecot;
  beforeAll(async () => {
    dc = await startDovecot({ users: 1, ini: 'ignore =\nlock_timeout_ms = 3000\n', version });
    expect((await pop3Login({ ...dc.pop3, localAddress: '127.3.0.1' }, 'user0', PASSWORD)).ok).toBe(true);
    await recorded(dc, '127.3.0.1');
  });
  afterAll(async () => dc?.stop());

  async function loginAndExpectLogged(address: string, line: RegExp): Promise<void> {
    const p = await pop3Login({ ...dc.pop3, localAddress: address }, 'user0', PASSWORD, [pop3.stat]);
    expect(p.ok).toBe(true);
    expect(p.replies[3]).toMatch(/^\+OK 1 /);
    await eventually(() => line.test(dc.log()));
  }

  it('with the map directory unwritable by the hook user', async () => {
    chmodSync(dc.mapDir, 0o555);
    try {
      await loginAndExpectLogged(
        '127.3.1.1',
        /poprelay-pop3: Error: poprelay: not recorded 127\.3\.1\.1 \(user=user0, service=pop3\): cannot write a new copy of the map in .* as user poprelay \(uid \d+\): permission denied/,
      );
    } finally {
      chmodSync(dc.mapDir, 0o755);
    }
    expect(entryOf(dc, '127.3.1.1')).toBeUndefined();
  });

  it('with a broken config file', async () => {
    const good = readFileSync(dc.iniPath, 'utf8');
    writeFileSync(dc.iniPath, `${good}timeout_minutes = fifteen\n`);
    try {
      await loginAndExpectLogged(
        '127.3.2.1',
        /Error: poprelay: not recorded 127\.3\.2\.1 .*: config .*poprelay\.ini: key "timeout_minutes": value "fifteen" is not allowed/,
      );
    } finally {
      writeFileSync(dc.iniPath, good);
    }
  });

  it('with the map locked by another process for longer than lock_timeout_ms', async () => {
    const release = await holdLock(dc.mapPath);
    try {
      const p = await pop3Login({ ...dc.pop3, localAddress: '127.3.3.1' }, 'user0', PASSWORD, [pop3.stat]);
      expect(p.ok).toBe(true);
      // The session ended (QUIT answered, connection closed) while the hook
      // was still waiting for the lock: the login did not wait for it.
      expect(p.closedAt).toBeDefined();
      expect(dc.log()).not.toContain('poprelay: not recorded 127.3.3.1');
      expect(dc.log()).toContain('rip=127.3.3.1');
      await eventually(() =>
        /Error: poprelay: not recorded 127\.3\.3\.1 .*stayed locked by another process for more than lock_timeout_ms = 3000 ms/.test(
          dc.log(),
        ),
      );
    } finally {
      release();
    }
  });

  it('with a corrupt map, which is left as it was', async () => {
    const junk = Buffer.alloc(8192, 0x42);
    writeFileSync(dc.mapPath, junk);
    await loginAndExpectLogged(
      '127.3.4.1',
      /Error: poprelay: not recorded 127\.3\.4\.1 .*not a readable Berkeley DB file/,
    );
    expect(readFileSync(dc.mapPath).equals(junk)).toBe(true);
  });
});

describe.each(VERSIONS)('Dovecot %s, IPv6 clients', (version) => {
  const ns = `prt${version.replace('.', '')}${process.pid % 100000}`;
  // A subnet of each version's own, should their namespaces ever overlap.
  const net = `2001:db8:${version === '2.3' ? '7' : '8'}`;
  let link: { remove(): Promise<void> } | string = 'not set up';
  let dc: Dovecot | undefined;
  beforeAll(async () => {
    link = await makeIPv6Link(ns, [`${net}::10`, `${net}::11`], `${net}::2`);
    if (typeof link === 'string') {
      console.log(`IPv6 login test skipped: ${link}`);
      return;
    }
    dc = await startDovecot({ users: 1, netns: ns, listen: '::', host: `${net}::2`, version });
  });
  afterAll(async () => {
    await dc?.stop();
    if (typeof link !== 'string') await link.remove();
  });

  it('records both keys of an IPv6 login', async (ctx) => {
    if (dc === undefined) return ctx.skip();
    expect((await pop3Login({ ...dc.pop3, localAddress: `${net}::10` }, 'user0', PASSWORD)).ok).toBe(true);
    expect((await imapLogin({ ...dc.imap, localAddress: `${net}::11` }, 'user0', PASSWORD)).ok).toBe(true);
    const a = await recorded(dc, `${net}::10`);
    const b = await recorded(dc, `${net}::11`);
    expect(a.keys.sort()).toEqual([`${net}::10`, `ipv6:${net}:0:0:0:0:10`]);
    expect(b.keys.sort()).toEqual([`${net}::11`, `ipv6:${net}:0:0:0:0:11`]);
    expect(a.time).toBeGreaterThan(0);
    await expectVerified(dc.mapPath);
  });
});
