// Section 6 of npm run bench: several hosts, one relay set. The time from a
// login on host A (a real Dovecot whose hook writes the engine) to host B's
// poprelayd answering "may relay", at 100 logins a second, over TLS and
// through Sentinel too; what the engine (and TLS, and Sentinel) adds to the
// hook; an engine failing under load (bench/failover.ts); and how many
// answers poprelayd gives per second on one core.

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';

import { askDaemon, requestFor } from '../src/daemon/client.js';
import { PASSWORD, startDovecot } from '../test/support/dovecot.js';
import { freePort } from '../test/support/ports.js';
import { terminate } from '../test/support/terminate.js';
import { startEngine } from '../test/support/engine.js';
import { startSentinelSet } from '../test/support/sentinel.js';
import { makeTestCa } from '../test/support/tls.js';
import { pop3Login } from '../test/support/mailclient.js';
import { BIN } from '../test/support/paths.js';
import { startPoprelayd } from '../test/support/poprelayd.js';
import { safeDir } from '../test/support/tmp.js';
import { eventually } from '../test/support/wait.js';
import { appCopy } from '../test/support/app.js';
import { failoverTables } from './failover.js';
import { header, ms, row, stats, timeRuns, type Verdict } from './report.js';
import { tlsCostTable } from './tls-cost.js';

/** Logins a second: a sustainable rate for this machine, and the issue's. */
const RATES = [10, 100];
const SECONDS = 5;
const ANSWER_SECONDS = 5;

/** Asks poprelayd's policy listener about many addresses over one connection; resolves the yes answers' addresses. */
function policyAsker(port: number) {
  const socket = connect({ host: '127.0.0.1', port });
  const waiting: Array<(yes: boolean) => void> = [];
  let buf = '';
  socket.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
      const answer = buf.slice(0, end);
      buf = buf.slice(end + 2);
      waiting.shift()?.(answer === 'action=OK');
    }
  });
  return {
    ready: new Promise<void>((r) => socket.once('connect', () => r())),
    ask: (address: string): Promise<boolean> =>
      new Promise((resolve) => {
        waiting.push(resolve);
        socket.write(requestFor('policy', address));
      }),
    close: () => socket.destroy(),
  };
}

let serial = 0;

/** Logins on `a` at `rate` a second for SECONDS; each one's time from PASS to allowed on B. */
async function crowd(
  a: Awaited<ReturnType<typeof startDovecot>>,
  policy: { host: string; port: number; display: string },
  rate: number,
): Promise<{ lag: ReturnType<typeof stats>; missed: number }> {
  const lags: number[] = [];
  let missed = 0;
  const logins: Array<Promise<void>> = [];
  const started = performance.now();
  for (let i = 0; i < rate * SECONDS; i++) {
    const due = started + (i * 1000) / rate;
    while (performance.now() < due) await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
    const n = serial++;
    const ip = `127.50.${n >> 8}.${n & 255 || 1}`;
    logins.push(
      (async () => {
        const t0 = performance.now();
        const c = await pop3Login({ ...a.pop3, localAddress: ip }, `user${n % 4}`, PASSWORD).catch(() => null);
        if (c === null || !c.ok) {
          missed++;
          return;
        }
        const passAt = t0 + (c.at[1] ?? 0);
        const allowed = () => askDaemon('policy', policy, ip, 5000).catch(() => false);
        await eventually(allowed, 30_000, `${ip} allowed on B`, 10).then(
          () => lags.push(performance.now() - passAt),
          () => missed++,
        );
      })(),
    );
  }
  await Promise.all(logins);
  return { lag: stats(lags), missed };
}

export async function clusterSection(verdict: Verdict): Promise<string[]> {
  const md = ['## 6. Several hosts: one relay set in a shared engine', ''];
  const engine = await startEngine();
  const a = await startDovecot({ users: 4, ini: `ignore =\nlog_recorded = no\nengine = ${engine.url}\n` });
  const dir = safeDir();
  const port = await freePort();
  const ini = join(dir, 'b.ini');
  writeFileSync(
    ini,
    `dbfile = ${join(dir, 'popip.db')}\nengine = ${engine.url}\npolicy_listen = inet:127.0.0.1:${port}\n`,
  );
  const b = await startPoprelayd(ini, 1);
  try {
    // 1. A login on A to "may relay" on B, logins started at a steady rate; B asked
    // as Postfix's smtpd processes ask it, each on a connection of its own.
    const policy = { host: '127.0.0.1', port, display: `inet:127.0.0.1:${port}` };
    md.push(
      `Logins on host A (a real Dovecot 2.3, its hook writing the engine) at a steady rate for ${SECONDS} s, from`,
      "distinct addresses; host B's poprelayd asked (a new policy connection each time, every 10 ms) until it says OK.",
      'Milliseconds from the client\'s `PASS` to the first OK on B; "missed" logins were not allowed on B within 30 s.',
      '',
      ...header(['engine =', 'logins a second', 'logins', 'missed', 'median', 'p90', 'p99']),
    );
    for (const rate of RATES) {
      const { lag, missed } = await crowd(a, policy, rate);
      md.push(row(['`redis://`', rate, rate * SECONDS, missed, ms(lag.median), ms(lag.p90), ms(lag.p99)]));
      verdict(
        `login on A to allowed on B, p99 at ${rate} logins/s, in seconds (missed: ${missed})`,
        missed > 0 ? Infinity : lag.p99 / 1000,
        1,
        'the recorder serving the crowd was kept waiting past engine_timeout_ms (by the CPU, or by the engine); ' +
          'the logins it missed reach the engine with the next recorder or the next sweep.',
      );
    }
    // The same crowd with the engine over TLS, and through Sentinel: its own host A and B each.
    for (const variant of ['`rediss://`', '`redis+sentinel://`']) {
      const tls = variant.includes('rediss') ? makeTestCa(safeDir()) : undefined;
      const own = tls === undefined ? undefined : await startEngine([], undefined, { tls });
      const set = tls === undefined ? await startSentinelSet() : undefined;
      const url = own?.url ?? set?.url ?? '';
      const tlsLine = tls === undefined ? '' : `engine_ca_file = ${tls.ca}\n`;
      const a2 = await startDovecot({ users: 4, ini: `ignore =\nlog_recorded = no\nengine = ${url}\n${tlsLine}` });
      const p2 = await freePort();
      const ini2 = join(safeDir(), 'b.ini');
      writeFileSync(
        ini2,
        `dbfile = ${join(safeDir(), 'popip.db')}\nengine = ${url}\n${tlsLine}policy_listen = inet:127.0.0.1:${p2}\n`,
      );
      const b2 = await startPoprelayd(ini2, 1);
      try {
        const { lag, missed } = await crowd(a2, { host: '127.0.0.1', port: p2, display: '' }, 100);
        md.push(row([variant, 100, 100 * SECONDS, missed, ms(lag.median), ms(lag.p90), ms(lag.p99)]));
        verdict(
          `login on A to allowed on B, p99 at 100 logins/s with ${variant}, in seconds (missed: ${missed})`,
          missed > 0 ? Infinity : lag.p99 / 1000,
          1,
          'the recorder serving the crowd was kept waiting past engine_timeout_ms (by a TLS handshake, or the Sentinels asked).',
        );
      } finally {
        await b2.stop();
        await a2.stop();
        await own?.stop();
        await set?.stop();
      }
    }
    md.push('');

    // 2. What the engine adds to the hook: the hook run by hand, map only against map and engine.
    const hookDir = safeDir();
    const local = join(hookDir, 'local.ini');
    const shared = join(hookDir, 'shared.ini');
    writeFileSync(local, `dbfile = ${join(hookDir, 'l.db')}\nignore =\nlog_recorded = no\nrefresh_seconds = 0\n`);
    writeFileSync(
      shared,
      `dbfile = ${join(hookDir, 's.db')}\nignore =\nlog_recorded = no\nrefresh_seconds = 0\nengine = ${engine.url}\n`,
    );
    const hook = join(appCopy(), 'bin/poprelay-login');
    const runs: Record<string, number[]> = { local: [], shared: [] };
    for (let i = 0; i < 40; i++) {
      runs.local?.push(...timeRuns(1, hook, ['--config', local], { IP: '172.21.0.1' }));
      runs.shared?.push(...timeRuns(1, hook, ['--config', shared], { IP: '172.21.0.1' }));
    }
    const [l, s] = [stats(runs.local ?? []), stats(runs.shared ?? [])];
    md.push(
      'The recorder run by hand (`IP=... poprelay-login`, 40 runs each, interleaved; the login itself never waits for it):',
      'wall time with a local map only, and with the engine too. Milliseconds.',
      '',
      ...header(['hook', 'median', 'p90', 'ratio']),
      row(['local map', ms(l.median), ms(l.p90), '1.00']),
      row(['local map and engine', ms(s.median), ms(s.p90), (s.median / l.median).toFixed(2)]),
      '',
    );
    verdict(
      'hook with engine against a local map only',
      s.median / l.median,
      1.1,
      'the engine write costs one connection and one round trip.',
    );
    md.push(...(await tlsCostTable(verdict)));
    md.push(...(await failoverTables(verdict)));
  } finally {
    await b.stop();
    await a.stop();
  }

  // 3. poprelayd's answers per second on one core (taskset), 16 connections pipelining policy requests.
  const oneCore = join(safeDir(), 'one.ini');
  const p2 = await freePort();
  writeFileSync(
    oneCore,
    `dbfile = ${join(safeDir(), 'popip.db')}\nengine = ${engine.url}\npolicy_listen = inet:127.0.0.1:${p2}\n`,
  );
  const pinned = spawn('taskset', ['-c', '0', BIN.daemon, '--config', oneCore], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  pinned.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  try {
    await eventually(() => log.includes('answering policy'), 60_000, 'pinned poprelayd');
    const askers = Array.from({ length: 16 }, () => policyAsker(p2));
    await Promise.all(askers.map((x) => x.ready));
    let answered = 0;
    const until = performance.now() + ANSWER_SECONDS * 1000;
    await Promise.all(
      askers.map(async (x, k) => {
        for (let i = 0; performance.now() < until; i++) {
          // 8 in flight per connection.
          await Promise.all(Array.from({ length: 8 }, (_, j) => x.ask(`172.22.${k}.${((i * 8 + j) % 250) + 1}`)));
          answered += 8;
        }
      }),
    );
    for (const x of askers) x.close();
    md.push(
      `poprelayd pinned to one core (\`taskset -c 0\`), 16 policy connections with 8 requests in flight each, ${ANSWER_SECONDS} s:`,
      `**${Math.round(answered / ANSWER_SECONDS).toLocaleString('en')} answers a second** (each one a lookup in the engine).`,
    );
  } finally {
    await terminate(pinned);
    await engine.stop();
  }
  return md;
}
