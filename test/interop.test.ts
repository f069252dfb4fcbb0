// sendmail, Postfix and Exim read what poprelay writes, and decide as they
// should: the interop half of the fault suite (see also load.test.ts and
// faults.test.ts).

import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

import { expectVerified, makemap } from './support/maps.js';
import { BIN } from './support/paths.js';
import {
  checkPeersInstalled,
  type Exim,
  eximConfig,
  eximLookup,
  eximRelays,
  postconf,
  postfixConfig,
  postmapQuery,
  type Sendmail,
  sendmailConfig,
  sendmailDecisions,
} from './support/peers.js';
import { run } from './support/processes.js';
import { safeDir } from './support/tmp.js';

const T = Math.floor(Date.now() / 1000);

describe('what the MTAs decide about addresses poprelay records, sweeps and deletes', () => {
  let dir: string;
  let map: string;
  let ini: string;
  let sm: Sendmail;
  let pf: string;
  let ex: Exim;

  beforeAll(async () => {
    checkPeersInstalled();
    dir = safeDir();
    map = join(dir, 'popip.db');
    ini = join(dir, 'poprelay.ini');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(ini, `dbfile = ${map}\nignore =\n`);
    // Recorded by the hook as Dovecot runs it (IP from the environment).
    for (const ip of ['192.0.2.7', '2001:db8::1', '2001:db8:0:1:1:1:1:1', '::ffff:198.51.100.7']) {
      expect((await run(BIN.login, ['--config', ini], { env: { IP: ip } })).code).toBe(0);
    }
    // Will expire and be swept; will be deleted.
    expect((await run(BIN.admin, ['add', '192.0.2.20', '--config', ini, '--now', String(T - 3600)])).code).toBe(0);
    expect((await run(BIN.admin, ['add', '2001:db8::20', '--config', ini, '--now', String(T - 3600)])).code).toBe(0);
    expect((await run(BIN.admin, ['add', '192.0.2.30', '--config', ini])).code).toBe(0);
    expect((await run(BIN.admin, ['add', '2001:db8::30', '--config', ini])).code).toBe(0);
    expect((await run(BIN.sweep, ['--config', ini, '--quiet'])).code).toBe(0);
    expect((await run(BIN.admin, ['del', '192.0.2.30', '--config', ini])).code).toBe(0);
    expect((await run(BIN.admin, ['del', '2001:db8::30', '--config', ini])).code).toBe(0);
    await expectVerified(map);
    sm = await sendmailConfig(dir, map);
    pf = postfixConfig(dir, map);
    ex = eximConfig(dir, map);
  });

  // [address as Postfix/Exim see it, as sendmail's ${client_addr}, may relay]
  const cases: Array<[string, string, boolean]> = [
    ['192.0.2.7', '192.0.2.7', true],
    ['2001:db8::1', 'IPv6:2001:db8:0:0:0:0:0:1', true],
    ['2001:db8:0:1:1:1:1:1', 'IPv6:2001:db8:0:1:1:1:1:1', true],
    ['198.51.100.7', '198.51.100.7', true], // recorded from ::ffff:198.51.100.7
    ['192.0.2.8', '192.0.2.8', false], // never recorded
    ['2001:db8::2', 'IPv6:2001:db8:0:0:0:0:0:2', false],
    ['192.0.2.20', '192.0.2.20', false], // expired and swept
    ['2001:db8::20', 'IPv6:2001:db8:0:0:0:0:0:20', false],
    ['192.0.2.30', '192.0.2.30', false], // deleted
    ['2001:db8::30', 'IPv6:2001:db8:0:0:0:0:0:30', false],
  ];

  it("sendmail: FEATURE(`drac') returns RELAY exactly for recorded addresses, and so does an exact popauth lookup", async () => {
    const got = await sendmailDecisions(
      sm,
      cases.map(([, s]) => s),
    );
    expect(got).toEqual(cases.map(([, , allowed]) => ({ relay: allowed, popauth: allowed })));
  });

  it('Postfix: postmap -q finds recorded addresses with an all-digits value (access(5): OK), and nothing else', async () => {
    for (const [addr, , allowed] of cases) {
      const v = await postmapQuery(pf, map, addr);
      if (allowed) expect(v, addr).toMatch(/^[0-9]{10}$/);
      else expect(v, addr).toBeNull();
    }
  });

  it('Postfix: the shipped main.cf lines parse and name the map', async () => {
    const r = await postconf(pf);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(
      `smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated check_client_access hash:${map.slice(0, -3)} reject_unauth_destination`,
    );
  });

  it('Exim: dbmnz lookups find recorded addresses, and the shipped ACL lets exactly those relay', async () => {
    for (const [addr, , allowed] of cases) {
      expect(await eximLookup(ex, map, addr), addr).toBe(allowed);
      expect(await eximRelays(ex, addr), addr).toBe(allowed);
    }
  });
});

describe('a map built by hand with makemap', () => {
  it('keeps working for every reader after poprelay writes and sweeps it, and its permanent entries survive', async () => {
    const dir = safeDir();
    const map = await makemap(dir, 'popip', [
      '192.0.2.100 OK',
      'ipv6:2001:db8:0:0:0:0:0:100 OK',
      '2001:db8::100 OK',
      `192.0.2.101 ${T - 7200}`,
    ]);
    const { chmodSync, statSync, writeFileSync } = await import('node:fs');
    // makemap as root makes the map smmta-owned and 0640, which Exim (as
    // Debian-exim) and Postfix's smtpd cannot read; docs/operating.md, "Migrating",
    // tells the administrator to chmod 0644 as done here. poprelay keeps
    // whatever owner and mode it finds.
    expect(statSync(map).mode & 0o777).toBe(0o640);
    chmodSync(map, 0o644);
    const ini = join(dir, 'poprelay.ini');
    writeFileSync(ini, `dbfile = ${map}\nignore =\n`);
    expect((await run(BIN.login, ['--config', ini], { env: { IP: '192.0.2.102' } })).code).toBe(0);
    expect((await run(BIN.sweep, ['--config', ini])).stdout).toBe(`${map}: kept 1, removed 1, permanent 2\n`);
    await expectVerified(map);
    expect(statSync(map).mode & 0o777).toBe(0o644);
    const sm = await sendmailConfig(dir, map);
    const pf = postfixConfig(dir, map);
    const ex = eximConfig(dir, map);
    expect(
      await sendmailDecisions(sm, ['192.0.2.100', 'IPv6:2001:db8:0:0:0:0:0:100', '192.0.2.101', '192.0.2.102']),
    ).toEqual([
      { relay: true, popauth: true },
      { relay: true, popauth: true },
      { relay: false, popauth: false },
      { relay: true, popauth: true },
    ]);
    expect(await postmapQuery(pf, map, '192.0.2.100')).toBe('OK');
    expect(await postmapQuery(pf, map, '2001:db8::100')).toBe('OK');
    expect(await postmapQuery(pf, map, '192.0.2.101')).toBeNull();
    expect(await eximRelays(ex, '2001:db8::100')).toBe(true);
    expect(await eximRelays(ex, '192.0.2.102')).toBe(true);
    expect(await eximRelays(ex, '192.0.2.101')).toBe(false);
  });
});
