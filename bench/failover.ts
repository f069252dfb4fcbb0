// An engine failing under load (part of section 6): logins on host A at a
// steady rate while host B's poprelayd is asked as Postfix asks it, first
// through a SIGKILLed Sentinel primary, then through an engine without
// persistence restarting empty (each POP host's sweep run once, as its
// timer does within the minute). test/failover.test.ts asserts the same.

import type { Dovecot } from '../test/support/dovecot.js';
import { startEngine } from '../test/support/engine.js';
import { lags, loginsThroughFailure, percentile, type FailoverRun } from '../test/support/failover.js';
import { killPrimary, knownClients, RATE, startHostA, startHostB, USERS } from '../test/support/failover-hosts.js';
import { type MtaHost, portOf } from '../test/support/mta-host.js';
import { BIN } from '../test/support/paths.js';
import { run } from '../test/support/processes.js';
import { startSentinelSet } from '../test/support/sentinel.js';
import { header, ms, row, type Verdict } from './report.js';

/** Host A and B for one failure, and how to stop both. */
async function hosts(url: string): Promise<{ a: Dovecot; b: MtaHost<'policy'>; stop: () => Promise<void> }> {
  const a = await startHostA(url);
  const b = await startHostB(url);
  return {
    a,
    b,
    stop: async () => {
      await b.daemon.stop();
      await a.stop();
    },
  };
}

/** Logins from `ips` on A, each allowed on B before this returns. */
async function known(a: Dovecot, b: MtaHost<'policy'>, ips: string[]): Promise<void> {
  const refused = await knownClients(a, b, ips);
  if (refused.length > 0) throw new Error(`host A refused the known clients' logins: ${refused.join(', ')}`);
}

function tableRow(name: string, r: FailoverRun, backName: string): string {
  const count = (phase: string) => r.logins.filter((l) => l.phase === phase).length;
  const p99 = (phase: 'before' | 'during' | 'after') => ms(percentile(lags(r, phase), 0.99));
  return row([
    name,
    `${count('before')} / ${count('during')} / ${count('after')}`,
    `${ms(r.backAt - r.failedAt)} (${backName})`,
    r.missed.length,
    p99('before'),
    p99('during'),
    p99('after'),
    r.logins.filter((l) => !l.ok).length,
    r.queryMs.length,
    ms(percentile(r.queryMs, 0.99)),
    ms(Math.max(...r.queryMs)),
    r.queryMs.filter((m) => m > 100).length + r.notAnswered.length,
    r.knownDenied.length,
  ]);
}

export async function failoverTables(verdict: Verdict): Promise<string[]> {
  const md = [
    `An engine failing under load: logins on host A (a real Dovecot) at ${RATE} a second from fresh addresses for 5 s, the`,
    "failure, 5 s more after the engine is back; host B's poprelayd asked about four clients allowed before (one policy",
    'connection, every 10 ms) and about each login until it allows it (another connection). Milliseconds. Logins: before /',
    'during / after the failure; "catch-up": logins whose hook missed the engine (sent by the next recorder that reached it);',
    '"late or deferred": MTA questions answered after 100 ms, or with anything but OK or DUNNO; "known refused": clients',
    'allowed before that were answered no at some point.',
    '',
    ...header(
      [
        'failure',
        'logins',
        'engine back after',
        'catch-up',
        'p99 A→B before',
        'p99 during',
        'p99 after',
        'logins refused',
        'MTA questions',
        'p99 answer',
        'max answer',
        'late or deferred',
        'known refused',
      ],
      2,
    ),
  ];
  // A Sentinel primary SIGKILLed (down-after-milliseconds 1000).
  const set = await startSentinelSet();
  const h1 = await hosts(set.url);
  try {
    const ips = ['127.76.0.1', '127.76.0.2', '127.76.0.3', '127.76.0.4'];
    await known(h1.a, h1.b, ips);
    const r = await loginsThroughFailure({
      a: h1.a,
      users: USERS,
      policyPort: portOf(h1.b.policy),
      known: ips,
      net: '127.77',
      rate: RATE,
      beforeMs: 5000,
      afterMs: 5000,
      waitMs: 70_000,
      fail: () => killPrimary(set),
    });
    md.push(tableRow('primary SIGKILLed (Sentinel)', r, 'promotion'));
    const duringLate = r.logins.filter((l) => l.allowedAt === null || l.allowedAt - r.backAt > 60_000).length;
    verdict('failover: logins not allowed on B within 60 s of the promotion', duringLate, 0, 'see the table.');
    verdict(
      'failover: MTA questions answered after 100 ms or deferred',
      r.queryMs.filter((m) => m > 100).length + r.notAnswered.length,
      0,
      'poprelayd was kept from the CPU.',
    );
  } finally {
    await h1.stop();
    await set.stop();
  }
  // An engine without persistence restarting empty; each POP host's sweep runs once after it.
  const engine = await startEngine();
  const h2 = await hosts(engine.url);
  try {
    const ips = ['127.78.0.1', '127.78.0.2'];
    await known(h2.a, h2.b, ips);
    await run(BIN.sweep, ['--config', h2.a.iniPath]);
    const r = await loginsThroughFailure({
      a: h2.a,
      users: USERS,
      policyPort: portOf(h2.b.policy),
      known: ips,
      net: '127.79',
      rate: RATE,
      beforeMs: 5000,
      afterMs: 5000,
      waitMs: 70_000,
      fail: async () => {
        await engine.kill();
        await engine.start();
        await run(BIN.sweep, ['--config', h2.a.iniPath]);
      },
    });
    md.push(tableRow('restarted empty', r, 'restart and re-seed'));
  } finally {
    await h2.stop();
    await engine.stop();
  }
  md.push('');
  return md;
}
