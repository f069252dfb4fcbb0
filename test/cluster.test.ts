// Several hosts, one relay set: a real Dovecot login on host A, recorded in
// a real engine (redis-server), lets the client relay on host B, whose
// poprelayd answers real sendmail (socket map), Postfix (a policy request
// on its socket, postmap -q socketmap:, and a private smtpd with the shipped
// policy line) and Exim (readsocket, in an SMTP session), and whose
// mirrored map holds it; IPv4 and IPv6 (host A's
// Dovecot in a network namespace of its own, reaching the engine over a
// veth pair). Then the failures: the engine killed, poprelayd killed, the
// engine restarted empty.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readEntries } from '../src/map/relay-map.js';
import { type Dovecot, PASSWORD, startDovecot } from './support/dovecot.js';
import { makeIPv6Link } from './support/ipv6-link.js';
import { startEngine, type Engine } from './support/engine.js';
import { pop3Login } from './support/mailclient.js';
import { expectVerified, settings } from './support/maps.js';
import { ALL_NO, ALL_YES, decisions } from './support/mta-decisions.js';
import { ALL_LISTENERS, hostSendmail, type Listener, type MtaHost, portOf, startMtaHost } from './support/mta-host.js';
import { checkPeersInstalled, eximConfig, eximRelays, sendmailCheckRcpt } from './support/peers.js';
import { startPoprelayd } from './support/poprelayd.js';
import { LOCAL_DOMAIN, startPostfix, type Postfix } from './support/postfix.js';
import { safeDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

const NET = '2001:db8:9';
const NS = `prcl${process.pid % 100000}`;

type HostB = MtaHost<Listener>;

/** Host B: a map directory of the hook user's, poprelayd with all three listeners and the mirror. */
const startHostB = (engineUrl: string): Promise<HostB> => startMtaHost(safeDir(), engineUrl, ALL_LISTENERS, true);

const RELAYED = 'x@elsewhere.example';
const INBOUND = `postmaster@${LOCAL_DOMAIN}`;

describe('one relay set for several hosts', () => {
  let engine: Engine;
  let a: Dovecot;
  let b: HostB;
  /** Host B's Postfix smtpd, with the shipped check_policy_service line asking B's poprelayd. */
  let smtpd: Postfix;

  beforeAll(async () => {
    checkPeersInstalled();
    engine = await startEngine();
    a = await startDovecot({ users: 1, ini: `ignore =\nengine = ${engine.url}\n` });
    b = await startHostB(engine.url);
    smtpd = await startPostfix(b.dir, portOf(b.policy));
  });
  afterAll(async () => {
    await smtpd?.stop();
    await b?.daemon.stop();
    await a?.stop();
    await engine?.stop();
  });

  it('a login on host A lets the client relay on host B, through every MTA and in the mirrored map', async () => {
    expect(await decisions(b, '127.0.0.61')).toEqual(ALL_NO);
    expect((await pop3Login({ ...a.pop3, localAddress: '127.0.0.61' }, 'user0', PASSWORD)).ok).toBe(true);
    await eventually(async () => (await decisions(b, '127.0.0.61')).mirrored, 60_000, 'the mirror to hold 127.0.0.61');
    expect(await decisions(b, '127.0.0.61')).toEqual(ALL_YES);
    expect(await decisions(b, '127.0.0.62')).toEqual(ALL_NO);
    // A real Postfix smtpd asks poprelayd through the shipped policy line.
    expect(await smtpd.rcpt('127.0.0.61', [RELAYED, INBOUND])).toEqual(['250', '250']);
    expect(await smtpd.rcpt('127.0.0.62', [RELAYED, INBOUND])).toEqual(['554', '250']);
    await expectVerified(b.map);
    expect(a.log()).toMatch(/poprelay: recorded 127\.0\.0\.61 in the engine \(user=user0, service=pop3\)/);
  });

  it('with the engine dead: every login still succeeds, known clients still relay, unknown ones are refused and nothing is deferred', async () => {
    expect((await pop3Login({ ...a.pop3, localAddress: '127.0.0.63' }, 'user0', PASSWORD)).ok).toBe(true);
    await eventually(async () => (await decisions(b, '127.0.0.63')).mirrored, 60_000, 'the mirror to hold 127.0.0.63');
    expect((await decisions(b, '127.0.0.63')).policy).toBe(true); // asked once with the engine up: now cached
    await engine.kill();
    for (const ip of ['127.0.0.64', '127.0.0.65', '127.0.0.66']) {
      expect((await pop3Login({ ...a.pop3, localAddress: ip }, 'user0', PASSWORD)).ok).toBe(true);
    }
    // The hook says why (a refused connection costs it nothing, so each one tries).
    await eventually(
      () => (a.log().match(/not recorded 127\.0\.0\.6[4-6] in the engine/g) ?? []).length === 3,
      60_000,
      'three hook lines',
    );
    expect(a.log()).toMatch(
      /not recorded 127\.0\.0\.66 in the engine \(user=user0, service=pop3\): engine redis:\/\/127\.0\.0\.1:\d+\/0: ECONNREFUSED/,
    );
    expect(await decisions(b, '127.0.0.63')).toEqual(ALL_YES); // known: the cache and the mirror
    expect(await decisions(b, '127.0.0.64')).toEqual(ALL_NO); // unknown: refused
    // ... and refused, not deferred: inbound mail is still accepted.
    const sm = await hostSendmail(b);
    expect(await sendmailCheckRcpt(sm, '127.0.0.64', 'root@test.example.org')).not.toMatch(/4\.\d\.\d/);
    expect(await sendmailCheckRcpt(sm, '127.0.0.64', 'x@elsewhere.example')).toMatch(/5\.7\.1/);
    expect(await smtpd.rcpt('127.0.0.63', [RELAYED, INBOUND])).toEqual(['250', '250']);
    expect(await smtpd.rcpt('127.0.0.64', [RELAYED, INBOUND])).toEqual(['554', '250']);
    // The mirror changed nothing while the engine was gone.
    expect(readEntries(settings(b.mapDir)).map((e) => e.address)).toContain('127.0.0.61');
  });

  it('restarted empty, the engine is resynced into the mirror only once it is back', async () => {
    const resyncs = (): number => (b.daemon.log().match(/mirror: resynced /g) ?? []).length;
    const before = resyncs();
    await engine.start();
    await eventually(() => resyncs() > before, 60_000, 'a resync with the engine back');
    expect(b.daemon.log()).toMatch(/mirror: resynced .* 0 entries/);
    expect(readEntries(settings(b.mapDir))).toEqual([]);
    expect((await pop3Login({ ...a.pop3, localAddress: '127.0.0.67' }, 'user0', PASSWORD)).ok).toBe(true);
    await eventually(async () => (await decisions(b, '127.0.0.67')).mirrored, 60_000, 'the mirror to hold 127.0.0.67');
    expect(await decisions(b, '127.0.0.67')).toEqual(ALL_YES);
  });

  it('with poprelayd dead, the shipped MTA lines still accept inbound mail: no relaying, no deferral', async () => {
    await b.daemon.kill();
    const sm = await hostSendmail(b);
    expect(await sendmailCheckRcpt(sm, '127.0.0.67', 'root@test.example.org')).not.toMatch(/4\.\d\.\d/);
    expect(await sendmailCheckRcpt(sm, '127.0.0.67', 'x@elsewhere.example')).toMatch(/5\.7\.1/);
    // Exim: the readsocket's fifth argument; an SMTP session accepts local mail and refuses relaying.
    const ex = eximConfig(b.dir, b.map, b.readsocket);
    expect(await eximRelays(ex, '127.0.0.67')).toBe(false);
    expect(await eximRelays(ex, '127.0.0.67', 'postmaster@test.example.org')).toBe(true);
    // Postfix: default_action=DUNNO, so reject_unauth_destination decides; never a 451.
    expect(await smtpd.rcpt('127.0.0.67', [RELAYED, INBOUND])).toEqual(['554', '250']);
    // Restarted, it answers again (and resyncs the mirror).
    b.daemon = await startPoprelayd(b.ini, 3, true);
    expect((await decisions(b, '127.0.0.67')).policy).toBe(true);
  });
});

describe('one relay set for several hosts, IPv6 clients', () => {
  let link: { remove(): Promise<void> } | string = 'not set up';
  let engine: Engine | undefined;
  let a: Dovecot | undefined;
  let b: HostB | undefined;

  beforeAll(async () => {
    checkPeersInstalled();
    link = await makeIPv6Link(NS, [`${NET}::1`, `${NET}::10`], `${NET}::2`);
    if (typeof link === 'string') {
      console.log(`IPv6 cluster test skipped: ${link}`);
      return;
    }
    engine = await startEngine([`${NET}::1`], 'cluster-secret');
    // Host A's Dovecot (and hook) in the namespace reach the engine on the veth pair.
    const inNamespace = engine.url.replace('127.0.0.1', `[${NET}::1]`);
    a = await startDovecot({
      users: 1,
      netns: NS,
      listen: '::',
      host: `${NET}::2`,
      ini: `ignore =\nengine = ${inNamespace}\n`,
    });
    b = await startHostB(engine.url);
  });
  afterAll(async () => {
    await b?.daemon.stop();
    await a?.stop();
    await engine?.stop();
    if (typeof link !== 'string') await link.remove();
  });

  it('a login from an IPv6 address on host A lets it relay on host B, and the mirror holds both keys', async (ctx) => {
    if (a === undefined || b === undefined) return ctx.skip();
    const client = `${NET}::10`;
    expect(await decisions(b, client)).toEqual(ALL_NO);
    expect((await pop3Login({ ...a.pop3, localAddress: client }, 'user0', PASSWORD)).ok).toBe(true);
    const [hostA, hostB] = [a, b];
    await eventually(
      async () => (await decisions(hostB, client)).mirrored,
      60_000,
      `the mirror to hold ${client}`,
    ).catch((e: Error) => {
      throw new Error(`${e.message}; host A's log:\n${hostA.log()}\nhost B's:\n${hostB.daemon.log()}`);
    });
    expect(await decisions(b, client)).toEqual(ALL_YES);
    expect(
      readEntries(settings(b.mapDir))
        .find((e) => e.address === client)
        ?.keys.sort(),
    ).toEqual([client, `ipv6:${NET}:0:0:0:0:10`]);
    expect(await decisions(b, `${NET}::11`)).toEqual(ALL_NO);
  });
});
