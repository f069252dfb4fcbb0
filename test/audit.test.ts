// poprelayd's audit line and user_limit, with a real Postfix smtpd asking
// it through the shipped policy line: a relayed recipient's line names the
// user who logged in (through a real Dovecot) from the client's address,
// with the sender and recipient Postfix gave; the recipient past a limited
// user's limit gets the configured action, while local mail and other users
// are unaffected.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { Decider } from '../src/daemon/decider.js';
import { DaemonLog } from '../src/daemon/log.js';
import { parseClientAddress } from '../src/address.js';
import { parseUserLimit } from '../src/config.js';
import { LocalCounter, type Counter } from '../src/daemon/user-limit.js';
import { type Dovecot, PASSWORD, startDovecot } from './support/dovecot.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { pop3Login } from './support/mailclient.js';
import { BIN } from './support/paths.js';
import { checkPeersInstalled } from './support/peers.js';
import { run } from './support/processes.js';
import { startPoprelayd, type Daemon } from './support/poprelayd.js';
import { LOCAL_DOMAIN, startPostfix, type Postfix } from './support/postfix.js';
import { safeDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

const INBOUND = `postmaster@${LOCAL_DOMAIN}`;
const relayed = (n: number): string[] => Array.from({ length: n }, (_, i) => `r${i}@elsewhere.example`);

describe('the audit line and user_limit, as a real Postfix smtpd asks poprelayd', () => {
  let engine: Engine;
  let dovecot: Dovecot;
  let daemon: Daemon;
  let smtpd: Postfix;

  beforeAll(async () => {
    checkPeersInstalled();
    engine = await startEngine();
    const port = await freePort();
    // One host: Dovecot's hook and poprelayd share the map, and so the who journal beside it.
    dovecot = await startDovecot({
      users: 3,
      ini: `ignore =\nengine = ${engine.url}\npolicy_listen = inet:127.0.0.1:${port}\nuser_limit = 3/1h\n`,
    });
    daemon = await startPoprelayd(dovecot.iniPath, 1);
    smtpd = await startPostfix(safeDir(), port);
  });
  afterAll(async () => {
    await smtpd?.stop();
    await daemon?.stop();
    await dovecot?.stop();
    await engine?.stop();
  });

  const login = async (ip: string, user: string): Promise<void> => {
    expect((await pop3Login({ ...dovecot.pop3, localAddress: ip }, user, PASSWORD)).ok).toBe(true);
    await eventually(
      () => new RegExp(`recorded ${ip.replaceAll('.', '\\.')} in the engine \\(user=${user}`).test(dovecot.log()),
      60_000,
      `${ip} in the engine`,
    );
  };

  it('a relayed recipient gives one line naming the user behind the client, the sender and the recipient', async () => {
    await login('127.0.0.91', 'user0');
    expect(await smtpd.rcpt('127.0.0.91', ['r@elsewhere.example'])).toEqual(['250']);
    expect(await smtpd.rcpt('127.0.0.92', ['r@elsewhere.example'])).toEqual(['554']);
    // Written once the answer is: waited for.
    const said = (line: string) =>
      eventually(() => daemon.log().split('\n').includes(line), 60_000, `poprelayd to log: ${line}`);
    await said(
      'poprelayd: audit: protocol=policy client=127.0.0.91 decision=relay user=user0 sender=sender@example.net recipient=r@elsewhere.example',
    );
    await said(
      'poprelayd: audit: protocol=policy client=127.0.0.92 decision=no user=- sender=sender@example.net recipient=r@elsewhere.example',
    );
  });

  it("the recipient past a limited user's limit gets a 4xx naming the limit; local mail and other users are unaffected", async () => {
    await login('127.0.0.93', 'user1');
    await login('127.0.0.94', 'user2');
    expect(await smtpd.rcpt('127.0.0.93', [...relayed(4), INBOUND])).toEqual(['250', '250', '250', '450', '250']);
    expect(await smtpd.rcpt('127.0.0.94', relayed(3))).toEqual(['250', '250', '250']);
    await eventually(() => /decision=defer/.test(daemon.log()), 60_000, 'the defer line');
    expect(daemon.log()).toMatch(
      /^poprelayd: audit: protocol=policy client=127\.0\.0\.93 decision=defer user=user1 sender=sender@example\.net recipient=r3@elsewhere\.example queue_id=[0-9A-F]+ limit=3\/1h over=user1$/m,
    );
    // Still over within the period: every further relayed recipient is deferred, with the limit named.
    expect(await smtpd.rcpt('127.0.0.93', ['r9@elsewhere.example'])).toEqual(['450']);
  });

  it('poprelay report counts the relay decisions poprelayd made for each user (written when it stops)', async () => {
    await daemon.stop();
    const r = await run(BIN.admin, ['report', '--since', '1', '--json', '--config', dovecot.iniPath]);
    expect(r.code, r.stderr).toBe(0);
    const users = JSON.parse(r.stdout) as Array<{ user: string; logins: number; relayed: number }>;
    // user1: the three recipients within the limit; past it, poprelayd deferred (Postfix took the local one all the same).
    expect(users.map((u) => [u.user, u.logins, u.relayed]).sort()).toEqual([
      ['user0', 1, 1],
      ['user1', 1, 3],
      ['user2', 1, 3],
    ]);
  });
});

describe('Decider: the relay counts', () => {
  it('count the users behind the address with audit_log = no and no user_limit, and none of a no', async () => {
    const log = new DaemonLog(() => undefined, false);
    const cfg = { auditLog: false, userLimit: null, userLimitAction: 'defer' as const };
    const added: string[][] = [];
    const counts = { add: (users: readonly string[]) => void added.push([...users]) };
    const req = { addr: parseClientAddress('192.0.2.3'), fields: {} };
    const answer = (relay: boolean) => ({ ask: () => Promise.resolve({ relay, cached: false }) });
    const who = { users: () => ['alice', 'bob'] };
    await new Decider(cfg, answer(true), who, new LocalCounter(), log, counts).decide('socketmap', req);
    await new Decider(cfg, answer(false), who, new LocalCounter(), log, counts).decide('socketmap', req);
    expect(added).toEqual([['alice', 'bob']]);
  });
});

describe('Decider: a counter that fails never defers anyone', () => {
  it('relays as if no limit were set, and says so once', async () => {
    const written: string[] = [];
    const log = new DaemonLog((l) => written.push(l), false);
    const lines = (): string[] => written.join('').split('\n');
    const broken: Counter = { add: () => Promise.reject(new Error('engine gone')) };
    const cfg = { auditLog: true, userLimit: parseUserLimit('1/1m') ?? null, userLimitAction: 'defer' as const };
    const yes = { ask: () => Promise.resolve({ relay: true, cached: false }) };
    const d = new Decider(cfg, yes, { users: () => ['alice'] }, broken, log);
    const req = { addr: parseClientAddress('192.0.2.1'), fields: { recipient: 'x@y.example' } };
    for (let i = 0; i < 3; i++) expect(await d.decide('policy', req)).toEqual({ relay: true });
    log.flush(); // audit lines wait a moment (SOON_MS) to be written together
    expect(lines().filter((l) => l.includes('user_limit not applied'))).toHaveLength(1);
    expect(lines().filter((l) => l.includes('decision=relay user=alice'))).toHaveLength(3);
    // A working counter defers the second recipient; a no is never counted nor turned into a yes.
    const counted = new Decider(cfg, yes, { users: () => ['alice'] }, new LocalCounter(), log);
    expect(await counted.decide('policy', req)).toEqual({ relay: true });
    expect((await counted.decide('policy', req)).action).toMatch(
      /^DEFER_IF_REJECT 4\.7\.1 alice sent more than 1 recipients/,
    );
    const no = new Decider(
      cfg,
      { ask: () => Promise.resolve({ relay: false, cached: false }) },
      { users: () => ['alice'] },
      broken,
      log,
    );
    expect(await no.decide('policy', req)).toEqual({ relay: false });
    // Names that are not plain are quoted in the line.
    const odd = new Decider(cfg, yes, { users: () => ['a b', 'c"d'] }, new LocalCounter(), log);
    await odd.decide('socketmap', { addr: parseClientAddress('192.0.2.2'), fields: {} });
    log.flush(); // audit lines wait a moment (SOON_MS) to be written together
    expect(lines().at(-2)).toBe(
      'poprelayd: audit: protocol=socketmap client=192.0.2.2 decision=relay user="a b","c\\"d"',
    );
  });
});
