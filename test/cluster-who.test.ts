// Who relays, across hosts: logins on two POP/IMAP hosts (real Dovecots,
// each with its own map) recorded with their users in one engine; on the
// MTA host, poprelayd's audit line names the user for a real Postfix
// smtpd's relayed recipient, and an address past shared_address_users,
// counted over both POP/IMAP hosts, stops relaying for sendmail (socket
// map), Postfix (policy, and postmap -q socketmap:), Exim (readsocket) and
// in the mirrored map, while another address keeps relaying.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { type Dovecot, PASSWORD, startDovecot } from './support/dovecot.js';
import { startEngine, type Engine } from './support/engine.js';
import { pop3Login } from './support/mailclient.js';
import { expectVerified } from './support/maps.js';
import { ALL_NO, ALL_YES, decisions } from './support/mta-decisions.js';
import { ALL_LISTENERS, type Listener, type MtaHost, portOf, startMtaHost } from './support/mta-host.js';
import { checkPeersInstalled } from './support/peers.js';
import { startPostfix, type Postfix } from './support/postfix.js';
import { safeDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

describe('who relays, across hosts sharing one engine', () => {
  let engine: Engine;
  let a: Dovecot;
  let c: Dovecot;
  let b: MtaHost<Listener>;
  let smtpd: Postfix;

  beforeAll(async () => {
    checkPeersInstalled();
    engine = await startEngine();
    const ini = `ignore =\nengine = ${engine.url}\nshared_address_users = 2\n`;
    a = await startDovecot({ users: 3, ini });
    c = await startDovecot({ users: 3, ini });
    b = await startMtaHost(safeDir(), engine.url, ALL_LISTENERS, true);
    smtpd = await startPostfix(b.dir, portOf(b.policy));
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
