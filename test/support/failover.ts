// Logins on host A at a steady rate while host B's poprelayd is asked as
// Postfix asks it, through an engine failure: what test/failover.test.ts
// checks and what npm run bench reports. The failure itself is the
// caller's (`fail`), which returns when the engine is usable again (the
// promotion, the restart).

import { connect, type Socket } from 'node:net';

import { requestFor } from '../../src/daemon/client.js';
import type { Dovecot } from './dovecot.js';
import { PASSWORD } from './dovecot.js';
import { pop3Login } from './mailclient.js';

/** One policy connection of host B's, asked one request at a time (as one smtpd process asks). */
class PolicyClient {
  private socket: Socket;
  private buf = '';
  private waiting: ((answer: string) => void) | null = null;
  readonly ready: Promise<void>;

  constructor(port: number) {
    this.socket = connect({ host: '127.0.0.1', port });
    this.ready = new Promise((r) => this.socket.once('connect', () => r()));
    this.socket.on('error', () => undefined);
    this.socket.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      const end = this.buf.indexOf('\n\n');
      if (end < 0) return;
      const answer = this.buf.slice(0, end);
      this.buf = this.buf.slice(end + 2);
      const w = this.waiting;
      this.waiting = null;
      w?.(answer);
    });
  }

  /** The answer line (action=...) and how long it took; 'none' when there was none within 5 s. */
  ask(address: string): Promise<{ answer: string; ms: number }> {
    const t0 = performance.now();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        resolve({ answer: 'none', ms: performance.now() - t0 });
      }, 5000);
      this.waiting = (answer) => {
        clearTimeout(timer);
        resolve({ answer, ms: performance.now() - t0 });
      };
      this.socket.write(requestFor('policy', address));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

export type Phase = 'before' | 'during' | 'after';

export interface LoginRecord {
  ip: string;
  phase: Phase;
  ok: boolean;
  /** PASS to +OK, ms. */
  loginMs: number;
  /** When the client sent PASS and when B first allowed it (performance.now()); allowedAt null: not within the wait. */
  passAt: number;
  allowedAt: number | null;
}

export interface FailoverRun {
  logins: LoginRecord[];
  /** Every answer B gave, its time in ms. */
  queryMs: number[];
  /** Answers that were neither OK nor DUNNO (a deferral, or none at all). */
  notAnswered: string[];
  /** Addresses allowed before the failure that B answered no for at some point. */
  knownDenied: string[];
  failedAt: number;
  /** When `fail` returned: the engine usable again. */
  backAt: number;
  /** Logins whose hook said the engine missed them (Dovecot's log). */
  missed: string[];
}

/**
 * Runs logins on `a` at `rate` a second from fresh addresses (`net`.X.Y)
 * for `beforeMs`, then `fail()` while they go on, then `afterMs` more;
 * meanwhile B (policy port `policyPort`) is asked about `known` (allowed
 * before) every 10 ms, and about each login until it allows it (at most
 * `waitMs` after the last login).
 */
export async function loginsThroughFailure(o: {
  a: Dovecot;
  users: number;
  policyPort: number;
  known: string[];
  net: string;
  rate: number;
  beforeMs: number;
  afterMs: number;
  waitMs: number;
  fail: () => Promise<void>;
}): Promise<FailoverRun> {
  const queryMs: number[] = [];
  const notAnswered: string[] = [];
  const knownDenied = new Set<string>();
  const judge = (ip: string, r: { answer: string; ms: number }): boolean | null => {
    queryMs.push(r.ms);
    if (r.answer === 'action=OK') return true;
    if (r.answer === 'action=DUNNO') return false;
    notAnswered.push(`${ip}: ${r.answer}`);
    return null;
  };
  const prober = new PolicyClient(o.policyPort);
  const poller = new PolicyClient(o.policyPort);
  await Promise.all([prober.ready, poller.ready]);
  let running = true;
  const probing = (async () => {
    for (let i = 0; running; i++) {
      const ip = o.known[i % o.known.length] ?? '';
      if (judge(ip, await prober.ask(ip)) !== true) knownDenied.add(ip);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const pending = new Map<string, LoginRecord>();
  const polling = (async () => {
    while (running || pending.size > 0) {
      for (const [ip, rec] of pending) {
        if (judge(ip, await poller.ask(ip)) === true) {
          rec.allowedAt = performance.now();
          pending.delete(ip);
        }
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();

  const logins: LoginRecord[] = [];
  const inFlight: Array<Promise<void>> = [];
  let phase: Phase = 'before';
  let serial = 0;
  const loginLoop = async (untilDone: () => boolean): Promise<void> => {
    const start = performance.now();
    for (let i = 0; !untilDone(); i++) {
      const due = start + (i * 1000) / o.rate;
      while (performance.now() < due) await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
      const n = serial++;
      const ip = `${o.net}.${Math.floor(n / 250) + 1}.${(n % 250) + 1}`;
      const rec: LoginRecord = { ip, phase, ok: false, loginMs: NaN, passAt: NaN, allowedAt: null };
      logins.push(rec);
      inFlight.push(
        (async () => {
          const t0 = performance.now();
          const c = await pop3Login({ ...o.a.pop3, localAddress: ip }, `user${n % o.users}`, PASSWORD).catch(
            () => null,
          );
          rec.ok = c?.ok === true;
          if (c === null || !rec.ok) return;
          rec.passAt = t0 + (c.at[1] ?? 0);
          rec.loginMs = (c.at[2] ?? NaN) - (c.at[1] ?? NaN);
          pending.set(ip, rec);
        })(),
      );
    }
  };

  const beforeEnd = performance.now() + o.beforeMs;
  await loginLoop(() => performance.now() >= beforeEnd);
  phase = 'during';
  const failedAt = performance.now();
  let back = false;
  const failing = o.fail().then(() => (back = true));
  await loginLoop(() => back);
  await failing;
  const backAt = performance.now();
  phase = 'after';
  const afterEnd = performance.now() + o.afterMs;
  await loginLoop(() => performance.now() >= afterEnd);
  await Promise.all(inFlight);
  const waitEnd = performance.now() + o.waitMs;
  while (pending.size > 0 && performance.now() < waitEnd) await new Promise((r) => setTimeout(r, 100));
  running = false;
  pending.clear();
  await Promise.all([probing, polling]);
  prober.close();
  poller.close();
  const log = o.a.log();
  const missed = logins.filter((l) => log.includes(`not recorded ${l.ip} in the engine`)).map((l) => l.ip);
  return { logins, queryMs, notAnswered, knownDenied: [...knownDenied], failedAt, backAt, missed };
}

/** The value below which `share` of `values` lie (nearest rank). */
export function percentile(values: readonly number[], share: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(share * sorted.length) - 1))] ?? NaN;
}

/** Login on A to allowed on B, ms, for the logins of `phase` that were allowed. */
export const lags = (run: FailoverRun, phase: Phase): number[] =>
  run.logins.filter((l) => l.phase === phase && l.allowedAt !== null).map((l) => (l.allowedAt ?? 0) - l.passAt);
