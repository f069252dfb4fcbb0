// The two hosts an engine failure is run through, the same for
// test/failover.test.ts and npm run bench (bench/failover.ts), so that the
// benchmark reports what the test asserts: host A a Dovecot whose hook
// records in the engine, host B a poprelayd asked as Postfix asks it, and
// the clients B allows before the failure.

import { askDaemon } from '../../src/daemon/client.js';
import { type Dovecot, PASSWORD, startDovecot } from './dovecot.js';
import { pop3Login } from './mailclient.js';
import { type MtaHost, portOf, startMtaHost } from './mta-host.js';
import type { SentinelSet } from './sentinel.js';
import { safeDir } from './tmp.js';
import { eventually } from './wait.js';

/** Logins a second on host A while the engine fails. */
export const RATE = 25;
/** Host A's users, logged in to in turn. */
export const USERS = 4;

/** Host A: a Dovecot whose hook records each login in the engine at `url`, logging only what it could not record. */
export const startHostA = (url: string): Promise<Dovecot> =>
  startDovecot({ users: USERS, ini: `ignore =\nlog_recorded = no\nlive_sessions = no\nengine = ${url}\n` });

/** Host B: poprelayd with a policy listener against the engine at `url`, and no mirror. */
export const startHostB = (url: string): Promise<MtaHost<'policy'>> => startMtaHost(safeDir(), url, ['policy'], false);

/** Whether B's poprelayd lets `ip` relay; no answer counts as no. */
export const allowedOn = (b: MtaHost<'policy'>, ip: string): Promise<boolean> =>
  askDaemon('policy', { host: '127.0.0.1', port: portOf(b.policy), display: '' }, ip, 5000).catch(() => false);

/** Logins from `ips` on A, each allowed on B before this returns; the addresses whose login A refused (not waited for). */
export async function knownClients(a: Dovecot, b: MtaHost<'policy'>, ips: readonly string[]): Promise<string[]> {
  const refused: string[] = [];
  for (const [i, ip] of ips.entries())
    if (!(await pop3Login({ ...a.pop3, localAddress: ip }, `user${i % USERS}`, PASSWORD)).ok) refused.push(ip);
  for (const ip of ips.filter((x) => !refused.includes(x)))
    await eventually(() => allowedOn(b, ip), 60_000, `${ip} allowed on B`);
  return refused;
}

/** The primary SIGKILLed; returns once the Sentinels have promoted the replica. */
export async function killPrimary(set: SentinelSet): Promise<void> {
  const old = await set.primary();
  await old.kill();
  await set.promotedFrom(old.port);
}
