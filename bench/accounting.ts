// What naming the users costs (issue 25): poprelayd's Postfix policy answers
// per second with accounting on (an audit line per decision naming the users
// behind the address, read from the who journal, and user_limit counting)
// against off (audit_log = no, no user_limit, no relay counts), in one run, side by side; and
// what keeping the user costs a login: a login recorded with the who
// journal's append against without, the append (and the shared-address
// guard's read) alone, and a whole recorded login.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';

import { parseClientAddress } from '../src/address.js';
import { loadConfig } from '../src/config.js';
import { connectOnce } from '../src/engine/client.js';
import { parseEngine } from '../src/endpoints.js';
import { whoKey } from '../src/engine/relayset.js';
import { queueLogin } from '../src/map/relay-map.js';
import { keepWho } from '../src/who/shared-address.js';
import { freePort } from '../test/support/ports.js';
import { terminate } from '../test/support/terminate.js';
import { startEngine } from '../test/support/engine.js';
import { BIN } from '../test/support/paths.js';
import { run } from '../test/support/processes.js';
import { tempDir } from '../test/support/tmp.js';
import { eventually } from '../test/support/wait.js';
import type { Verdict } from './report.js';

const REQUESTS = 40_000;
const CONNECTIONS = 8;
const LOGINS = 200;
const PIPELINE = 16;
const CLIENTS = 50;
const ROUNDS = 6;

/** One policy request, as Postfix sends it at RCPT TO. */
const request = (client: string, i: number): string =>
  `request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=${client}\nsender=s${i}@example.net\nrecipient=r${i}@example.com\n\n`;

/** Sends `n` requests over one connection, PIPELINE at a time; resolves when every answer is in. */
function drive(port: number, n: number, clients: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect({ port, host: '127.0.0.1' });
    let sent = 0;
    let answered = 0;
    let buf = '';
    const more = (): void => {
      let batch = '';
      while (sent < n && sent - answered < PIPELINE) {
        batch += request(clients[sent % clients.length] ?? '192.0.2.1', sent);
        sent++;
      }
      if (batch !== '') s.write(batch);
    };
    s.on('connect', more);
    s.on('error', reject);
    // A connection poprelayd closed early would otherwise leave the round waiting for ever.
    s.on('close', () => {
      if (answered < n) reject(new Error(`poprelayd closed the connection after ${answered} of ${n} answers`));
    });
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\n\n'); end >= 0; end = buf.indexOf('\n\n')) {
        buf = buf.slice(end + 2);
        answered++;
      }
      if (answered >= n) {
        s.end();
        resolve();
      } else more();
    });
  });
}

/** poprelayd with `extra` lines, its log to a file (as journald reads a stream, not the benchmark's memory). */
async function daemon(
  dir: string,
  name: string,
  base: string,
  extra: string,
): Promise<{ port: number; proc: ChildProcess; log: string }> {
  const port = await freePort();
  const ini = join(dir, `${name}.ini`);
  writeFileSync(ini, `${base}policy_listen = inet:127.0.0.1:${port}\n${extra}`);
  // Not beside the map: poprelayd watches that directory for the who journal.
  const log = join(tempDir(), `${name}.log`);
  const fd = openSync(log, 'w');
  const proc = spawn(BIN.daemon, ['--config', ini], { stdio: ['ignore', 'ignore', fd] });
  closeSync(fd);
  await eventually(
    () =>
      new Promise<boolean>((res) => {
        const c = connect({ port, host: '127.0.0.1' }, () => {
          c.destroy();
          res(true);
        });
        c.on('error', () => res(false));
      }),
    60_000,
    `poprelayd ${name} listening`,
  );
  return { port, proc, log };
}

/** The CPU time `proc` has used (user and system), in ms, from /proc (clock ticks of 10 ms). */
function cpuMs(proc: ChildProcess): number {
  const fields = readFileSync(`/proc/${proc.pid}/stat`, 'utf8')
    .replace(/^.*\) /s, '')
    .split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function answersPerSecond(port: number, clients: readonly string[]): Promise<number> {
  const per = REQUESTS / CONNECTIONS;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, () => drive(port, per, clients)));
  return (REQUESTS / (performance.now() - t0)) * 1000;
}

function fail(what: string): never {
  throw new Error(`not an engine URL: ${what}`);
}

export async function accountingSection(verdict: Verdict): Promise<string[]> {
  const engine = await startEngine();
  const dir = tempDir();
  const map = join(dir, 'popip.db');
  const base = `dbfile = ${map}\nignore =\nlive_sessions = no\nengine = ${engine.url}\n`;
  const hookIni = join(dir, 'hook.ini');
  writeFileSync(hookIni, base);
  // CLIENTS addresses that may relay, each with two users in the who journal.
  const clients = Array.from({ length: CLIENTS }, (_, i) => `198.51.100.${i + 1}`);
  for (const ip of clients)
    for (const user of ['alice', 'bob'])
      await run(BIN.login, ['--config', hookIni, '--tag', 'pop3'], { env: { IP: ip, USER: `${user}.${ip}` } });
  // Storage: the journal's bytes per login, and an address's who key in the engine (two users).
  const journalBytes = statSync(`${map}.who`).size / (CLIENTS * 2);
  const probe = await connectOnce(parseEngine(engine.url) ?? fail(engine.url));
  const whoValue = await probe.get(whoKey(parseClientAddress(clients[0] ?? '')));
  await probe.close();
  const on = await daemon(dir, 'on', base, 'audit_log = yes\nuser_limit = 9999999/1d\n');
  const off = await daemon(dir, 'off', base, 'audit_log = no\nreport_days = 0\n');
  const rates: Record<'on' | 'off', number[]> = { on: [], off: [] };
  const ratios: number[] = [];
  const cpuPerAnswer: Record<'on' | 'off', number[]> = { on: [], off: [] };
  try {
    await answersPerSecond(on.port, clients); // warm both up
    await answersPerSecond(off.port, clients);
    // Interleaved pairs, which goes first alternating: whatever else the machine does falls on both alike,
    // and each pair's ratio is taken from two rounds a second apart.
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const);
      for (const which of order) {
        const d = which === 'on' ? on : off;
        const cpu0 = cpuMs(d.proc);
        rates[which].push(await answersPerSecond(d.port, clients));
        cpuPerAnswer[which].push(((cpuMs(d.proc) - cpu0) / REQUESTS) * 1000);
      }
      ratios.push((rates.on.at(-1) ?? 0) / (rates.off.at(-1) ?? 1));
    }
  } finally {
    await terminate(on.proc);
    await terminate(off.proc);
    await engine.stop();
  }
  const auditLines = readFileSync(on.log, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('poprelayd: audit: ')).length;
  const asked = REQUESTS * (ROUNDS + 1);
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const [rOn, rOff] = [median(rates.on), median(rates.off)];
  const ratio = median(ratios);
  const [cpuOn, cpuOff] = [median(cpuPerAnswer.on), median(cpuPerAnswer.off)];
  verdict(
    'poprelayd answers per second, accounting off / on (target: on at least 0.8x off, so at most 1.25)',
    1 / ratio,
    1.25,
    'the audit line and the user lookup cost more than a fifth of an answer',
  );

  // What keeping the user costs a login: the journal's append per batch of one, and with the guard the read.
  const cfg = loadConfig(hookIni);
  const guarded = { ...cfg, sharedAddressUsers: 3 };
  const addrs = Array.from({ length: 200 }, (_, i) => parseClientAddress(`10.25.${i >> 8}.${i & 255}`));
  const now = Math.floor(Date.now() / 1000);
  const times = (n: number, f: (i: number) => void): number => {
    const t0 = process.cpuUsage();
    for (let i = 0; i < n; i++) f(i);
    const d = process.cpuUsage(t0);
    return (d.user + d.system) / n / 1000;
  };
  // Logins from 200 addresses in turn, as a busy server's are.
  const login = (c: typeof cfg) => (i: number) =>
    keepWho(c, [{ addr: addrs[i % addrs.length]!, time: now, service: 'pop3', user: `u${i}`, permanent: false }], now);
  const keptMs = times(2000, login(cfg));
  const guardMs = times(2000, login(guarded)); // the journal now holds about 4,100 lines
  // A login recorded in the map with its user kept against without, in one process, interleaved: the map alone
  // (the engine is gone by now), as the login-path figures are taken, every login a write (refresh 0).
  const loginIni = join(dir, 'login.ini');
  writeFileSync(loginIni, `dbfile = ${map}\nignore =\nlive_sessions = no\n`);
  const lcfg = loadConfig(loginIni);
  const recorded: Record<'with' | 'without', number[]> = { with: [], without: [] };
  for (let i = 0; i < 2 * LOGINS; i++) {
    const which = i % 2 === 0 ? 'without' : 'with';
    const addr = addrs[(i >> 1) % addrs.length]!;
    const t = now + i;
    const t0 = performance.now();
    if (which === 'with') keepWho(lcfg, [{ addr, time: t, service: 'pop3', user: `u${i}`, permanent: false }], t);
    queueLogin(lcfg.map, addr, t, 0);
    recorded[which].push(performance.now() - t0);
  }
  const [withMs, withoutMs] = [median(recorded.with), median(recorded.without)];
  const loginCpu: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = process.hrtime.bigint();
    const r = await run(BIN.login, ['--config', loginIni, '--tag', 'pop3'], {
      env: { IP: `203.0.113.${10 + i}`, USER: `dave${i}` },
    });
    if (r.code !== 0) throw new Error(`a login failed: ${r.stderr}`);
    loginCpu.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const loginMs = median(loginCpu);
  return [
    '## Accounting: the audit line, user_limit, and the who journal',
    '',
    'bench/accounting.ts. poprelayd answering Postfix policy requests (sender and recipient included) from',
    `${CONNECTIONS} connections, ${PIPELINE} requests in flight on each, ${REQUESTS} requests a round, for ${CLIENTS}`,
    'addresses that may relay, each with two users in the who journal; its log to a file. "on": audit_log = yes',
    '(a line per decision naming the users) and user_limit counting; "off": audit_log = no, no user_limit, no relay counts (report_days = 0). Both',
    `poprelayd run at once against one engine; ${ROUNDS} pairs of rounds, one after the other, which goes first`,
    'alternating; answers per second are the medians of each, "on / off" the median of the pairs\' own ratios.',
    `The "on" poprelayd logged ${auditLines} audit lines for the ${asked} requests it was asked${auditLines === asked ? ', none lost at its SIGTERM' : ''}.`,
    '',
    '| accounting | answers per second |',
    '|---|---|',
    `| off | ${rOff.toFixed(0)} |`,
    `| on | ${rOn.toFixed(0)} |`,
    `| on / off | ${ratio.toFixed(2)} (pairs: ${ratios.map((r) => r.toFixed(2)).join(', ')}) |`,
    '',
    "CPU time per answer, the daemon's own (user and system, from /proc, over each round; medians): the same cost",
    'seen without the waits for the CPU that the rates include:',
    '',
    '| accounting | µs of CPU per answer |',
    '|---|---|',
    `| off | ${cpuOff.toFixed(1)} |`,
    `| on | ${cpuOn.toFixed(1)} |`,
    `| off / on | ${(cpuOff / cpuOn).toFixed(2)} |`,
    '',
    "A login's cost with its user kept against without, in one process, interleaved: a login recorded in the map",
    `(\`queueLogin\`, refresh 0: every login a write, fsynced) after the who journal's append (\`keepWho\`) against`,
    `the same without it, ${LOGINS} logins each, medians; then the append alone, CPU per call (2,000 calls), and with`,
    "shared_address_users set, which also reads the address's lines back; against them, the wall time of a whole",
    'login recorded directly (`IP=... poprelay-login`, a Node start), median of 20.',
    '',
    '| what | ms |',
    '|---|---|',
    `| a login recorded in the map, user kept | ${withMs.toFixed(3)} |`,
    `| a login recorded in the map, without | ${withoutMs.toFixed(3)} |`,
    `| with / without | ${(withMs / withoutMs).toFixed(2)} |`,
    `| keep the user (append) | ${keptMs.toFixed(3)} |`,
    `| keep the user and count the address's users (guard on, about 4,100 lines) | ${guardMs.toFixed(3)} |`,
    `| a whole login, recorded directly | ${loginMs.toFixed(1)} |`,
    '',
    `Storage: the who journal holds ${journalBytes.toFixed(0)} bytes per login (its lines within timeout_minutes;`,
    `older ones fold into the per-day report); an address's who key in the engine holds ${whoValue === null ? 'nothing (the hook does not write it yet)' : `${whoValue.length} bytes of JSON for two users`}.`,
  ];
}
