// Who relays, across hosts: logins on two POP/IMAP hosts (real Dovecots,
// each with its own map) recorded with their users in one engine; on the
// MTA host, poprelayd's audit line names the user for a real Postfix
// smtpd's relayed recipient, and an address past shared_address_users,
// counted over both POP/IMAP hosts, stops relaying for sendmail (socket
// map), Postfix (policy, and postmap -q socketmap:), Exim (readsocket) and
// in the mirrored map, while another address keeps relaying.

import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { askDaemon } from '../src/daemon/client.js';
import { parseListen } from '../src/endpoints.js';
import { readEntries } from '../src/map/relay-map.js';
import { type Dovecot, HOOK_USER, PASSWORD, startDovecot } from './support/dovecot.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { pop3Login } from './support/mailclient.js';
import { expectVerified, settings } from './support/maps.js';
import {
  checkPeersInstalled,
  eximConfig,
  eximRelays,
  postfixConfig,
  postmapSocketmap,
  sendmailConfig,
  sendmailDecisions,
} from './support/peers.js';
import { startPoprelayd, type Daemon } from './support/poprelayd.js';
import { startPostfix, type Postfix } from './support/postfix.js';
import { safeDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

interface HostB {
  dir: string;
  mapDir: string;
  map: string;
  policy: string;
  socketmap: string;
  exim: string;
  daemon: Daemon;
}

async function startHostB(engineUrl: string): Promise<HostB> {
  const dir = safeDir();
  const mapDir = join(dir, 'map');
  mkdirSync(mapDir, { mode: 0o755 });
  const { stdout: uid } = await execa('id', ['-u', HOOK_USER]);
  const { stdout: gid } = await execa('id', ['-g', HOOK_USER]);
  chownSync(mapDir, Number(uid), Number(gid));
  const [p1, p2] = [await freePort(), await freePort()];
  const host = {
    dir,
    mapDir,
    map: join(mapDir, 'popip.db'),
    policy: `inet:127.0.0.1:${p1}`,
    socketmap: `inet:127.0.0.1:${p2}`,
    exim: join(mapDir, 'exim.sock'),
  };
  const ini = join(dir, 'poprelay.ini');
  writeFileSync(
    ini,
    [
      `dbfile = ${host.map}`,
      'ignore =',
      `engine = ${engineUrl}`,
      `policy_listen = ${host.policy}`,
      `socketmap_listen = ${host.socketmap}`,
      `readsocket_listen = unix:${host.exim}`,
      'mirror = yes',
      '',
    ].join('\n'),
  );
  return { ...host, daemon: await startPoprelayd(ini, 3, true) };
}

async function decisions(b: HostB, address: string) {
  const addr = parseClientAddress(address);
  const sm = await sendmailConfig(b.dir, b.map, `inet:${b.socketmap.split(':')[2]}@127.0.0.1`);
  const [sendmail] = await sendmailDecisions(sm, [address]);
  const policy = await askDaemon('policy', parseListen(b.policy)!, address, 5000);
  const postfix = await postmapSocketmap(postfixConfig(b.dir, b.map), b.socketmap, address);
  const exim = await eximRelays(eximConfig(b.dir, b.map, b.exim), address);
  const mirrored = readEntries(settings(b.mapDir)).some((e) => e.address === addr.text);
  return { sendmail: sendmail?.relay, policy, postfix: postfix !== null, exim, mirrored };
}

const ALL_YES = { sendmail: true, policy: true, postfix: true, exim: true, mirrored: true };
const ALL_NO = { sendmail: false, policy: false, postfix: false, exim: false, mirrored: false };

describe('who relays, across hosts sharing one engine', () => {
  let engine: Engine;
  let a: Dovecot;
  let c: Dovecot;
  let b: HostB;
  let smtpd: Postfix;

  beforeAll(async () => {
    checkPeersInstalled();
    engine = await startEngine();
    const ini = `ignore =\nengine = ${engine.url}\nshared_address_users = 2\n`;
    a = await startDovecot({ users: 3, ini });
    c = await startDovecot({ users: 3, ini });
    b = await startHostB(engine.url);
    smtpd = await startPostfix(b.dir, Number(b.policy.split(':')[2]));
  });
  afterAll(async () => {
    await smtpd?.stop();
    await b?.daemon.stop();
    await a?.stop();
    await c?.stop();
    await engine?.stop();
  });

  const login = async (host: Dovecot, ip: string, user: string, logged: RegExp): Promise<void> => {
    expect((await pop3Login({ ...host.pop3, localAddress: ip }, user, PASSWORD)).ok).toBe(true);
    await eventually(() => logged.test(host.log()), 60_000, `${logged.source} in Dovecot's log`);
  };

  it("the MTA host's audit line names the user who logged in on a POP/IMAP host", async () => {
    await login(a, '127.0.0.101', 'user0', /recorded 127\.0\.0\.101 in the engine \(user=user0/);
    await eventually(async () => (await decisions(b, '127.0.0.101')).mirrored, 60_000, 'the mirror to hold it');
    expect(await smtpd.rcpt('127.0.0.101', ['r@elsewhere.example'])).toEqual(['250']);
    const line =
      'poprelayd: audit: protocol=policy client=127.0.0.101 decision=relay user=user0 sender=sender@example.net recipient=r@elsewhere.example';
    await eventually(() => b.daemon.log().split('\n').includes(line), 60_000, 'the audit line naming user0');
  });

  it('an address with a third user over both POP/IMAP hosts stops relaying on every MTA; the others keep it', async () => {
    await login(a, '127.0.0.102', 'user0', /recorded 127\.0\.0\.102 in the engine \(user=user0/);
    await login(a, '127.0.0.102', 'user1', /127\.0\.0\.102 in the engine \(user=user1/);
    await eventually(async () => (await decisions(b, '127.0.0.102')).mirrored, 60_000, 'the mirror to hold it');
    expect(await decisions(b, '127.0.0.102')).toEqual(ALL_YES);
    // The third user logs in on the other POP/IMAP host, whose own journal has only this one.
    await login(c, '127.0.0.102', 'user2', /a shared address: 3 users/);
    expect(c.log()).toMatch(
      /poprelay: not recorded 127\.0\.0\.102 in the engine \(user=user2, service=pop3\): a shared address: 3 users \((user\d, ){2}user\d\) logged in from it on the POP\/IMAP hosts within timeout_minutes, more than shared_address_users = 2; its entry left the engine and the map/,
    );
    await eventually(async () => !(await decisions(b, '127.0.0.102')).mirrored, 60_000, 'the mirror to drop it');
    expect(await decisions(b, '127.0.0.102')).toEqual(ALL_NO);
    expect(await decisions(b, '127.0.0.101')).toEqual(ALL_YES);
    expect(await smtpd.rcpt('127.0.0.102', ['r@elsewhere.example'])).toEqual(['554']);
    // Written once the answer is: waited for.
    await eventually(
      () =>
        /^poprelayd: audit: protocol=policy client=127\.0\.0\.102 decision=no user=(user\d,){2}user\d /m.test(
          b.daemon.log(),
        ),
      60_000,
      'the audit line naming the three users',
    );
    // A fourth user on the first host: stopped there too, and the address stays out.
    await login(
      a,
      '127.0.0.102',
      'user2',
      /not recorded 127\.0\.0\.102 \(user=user2, service=pop3\): a shared address/,
    );
    expect(await decisions(b, '127.0.0.102')).toEqual(ALL_NO);
    await expectVerified(b.map);
    await expectVerified(a.mapPath);
  });
});
