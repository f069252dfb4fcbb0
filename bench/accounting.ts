// What naming the users costs (issue 25): poprelayd's Postfix policy answers
// per second with accounting on (an audit line per decision naming the users
// behind the address, read from the who journal, and user_limit counting)
// against off (audit_log = no, no user_limit), in one run, side by side; and
// what keeping the user costs a login: the who journal's append (and the
// shared-address guard's read) against a whole recorded login.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, statSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';

import { parseClientAddress } from '../src/address.js';
import { loadConfig } from '../src/config.js';
import { connectOnce } from '../src/engine/client.js';
import { parseEngine } from '../src/endpoints.js';
import { whoKey } from '../src/engine/relayset.js';
import { keepWho } from '../src/who/shared-address.js';
import { freePort, terminate } from '../test/support/dovecot.js';
import { startEngine } from '../test/support/engine.js';
import { BIN } from '../test/support/paths.js';
import { run } from '../test/support/processes.js';
import { tempDir } from '../test/support/tmp.js';
import { eventually } from '../test/support/wait.js';
import type { Verdict } from './report.js';

const REQUESTS = 40_000;
const CONNECTIONS = 8;
const PIPELINE = 16;
const CLIENTS = 50;

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
  const off = await daemon(dir, 'off', base, 'audit_log = no\n');
  const rates: Record<'on' | 'off', number[]> = { on: [], off: [] };
  try {
    await answersPerSecond(on.port, clients); // warm both up
    await answersPerSecond(off.port, clients);
    // Interleaved rounds: whatever else the machine does falls on both alike.
    for (let round = 0; round < 3; round++) {
      rates.off.push(await answersPerSecond(off.port, clients));
      rates.on.push(await answersPerSecond(on.port, clients));
    }
  } finally {
    await terminate(on.proc);
    await terminate(off.proc);
    await engine.stop();
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const [rOn, rOff] = [median(rates.on), median(rates.off)];
  const ratio = rOn / rOff;
  verdict(
    'poprelayd answers per second, accounting off / on (target: on at least 0.8x off, so at most 1.25)',
    rOff / rOn,
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
  // The map alone (the engine is gone by now), as the login-path figures are taken.
  const loginIni = join(dir, 'login.ini');
  writeFileSync(loginIni, `dbfile = ${map}\nignore =\nlive_sessions = no\n`);
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
    '(a line per decision naming the users) and user_limit counting; "off": audit_log = no, no user_limit. Both',
    'poprelayd run at once against one engine, rounds interleaved; medians of 3 rounds.',
    '',
    '| accounting | answers per second |',
    '|---|---|',
    `| off | ${rOff.toFixed(0)} |`,
    `| on | ${rOn.toFixed(0)} |`,
    `| on / off | ${ratio.toFixed(2)} |`,
    '',
    "A login's cost with its user kept: the who journal's append (open, flock, one write, close) for a batch of",
    "one login, CPU per call, measured in one process; with shared_address_users set it also reads the address's",
    'lines back. Against it, the wall time of a whole login recorded directly (`IP=... poprelay-login`, a Node start),',
    'median of 20.',
    '',
    '| what | ms |',
    '|---|---|',
    `| keep the user (append) | ${keptMs.toFixed(3)} |`,
    `| keep the user and count the address's users (guard on, about 4,100 lines) | ${guardMs.toFixed(3)} |`,
    `| a whole login, recorded directly | ${loginMs.toFixed(1)} |`,
    '',
    `Storage: the who journal holds ${journalBytes.toFixed(0)} bytes per login (its lines within timeout_minutes;`,
    `older ones fold into the per-day report); an address's who key in the engine holds ${whoValue === null ? 'nothing (the hook does not write it yet)' : `${whoValue.length} bytes of JSON for two users`}.`,
  ];
}
