// The latency section's runner: rounds of concurrent POP3 logins through
// each variant's Dovecot, timed from PASS to +OK and, where the variant
// records, from +OK to the address visible in its map.

import { watch } from 'node:fs';

import { lookupKeys } from '../src/map/file.js';
import { type Dovecot, PASSWORD } from '../test/support/dovecot.js';
import { pop3Login } from '../test/support/mailclient.js';
import { settings } from '../test/support/maps.js';
import { type RunningProcess, runningProcesses } from './processes.js';

/**
 * Notes when each address is first found in the instance's map: looked up
 * whenever the map's directory changes (a writer renames a new copy in), and
 * every 50 ms besides; gives up after 30 s. Woken by inotify rather than
 * polling often, so that the watcher takes no CPU from the recorders it
 * times.
 */
async function watchMap(dc: Dovecot, ips: readonly string[], seenAt: Map<string, number>): Promise<void> {
  const s = settings(dc.mapDir, 'popip.db', { lockTimeoutMs: 5000 });
  const look = (): void => {
    const pending = ips.filter((ip) => !seenAt.has(ip));
    const values = lookupKeys(s, pending) ?? [];
    const t = performance.now();
    pending.forEach((ip, i) => {
      if (values[i] !== null && values[i] !== undefined) seenAt.set(ip, t);
    });
  };
  let wake: () => void = () => undefined;
  const watcher = watch(dc.mapDir, () => wake());
  try {
    const deadline = performance.now() + 30_000;
    look();
    while (seenAt.size < ips.length && performance.now() < deadline) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
      look();
    }
  } finally {
    watcher.close();
  }
}

/**
 * Waits until none of the instance's post-login processes is left (the
 * front, a recorder, a Node script still exiting after it recorded), so
 * that every round starts on a quiet machine whatever variant went before:
 * otherwise the variant after a Node-first one pays for its exits. A
 * recorder waiting for more logins (recorder_idle_seconds) and the front
 * and flock(1) above it stay, as on a server with a login every few
 * seconds; the round waited for its logins to be visible first.
 */
async function settle(dc: Dovecot, waitingRecorder: boolean): Promise<void> {
  const busy = (): boolean => {
    const ps = runningProcesses().filter(
      ({ argv }) => argv.some((a) => a.includes(`${dc.dir}/`)) && !argv.some((a) => a.includes('dovecot.conf')),
    );
    const recorder = new Set<string>();
    if (waitingRecorder) {
      for (const p of ps.filter(({ argv }) => argv.includes('--drain')))
        for (let q: RunningProcess | undefined = p; q !== undefined; q = ps.find((x) => x.pid === q?.ppid))
          recorder.add(q.pid);
    }
    return ps.some(({ pid }) => !recorder.has(pid));
  };
  const deadline = performance.now() + 10_000;
  while (busy() && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** One Dovecot the rounds log in to, and what they wait for after each round. */
export interface Instance {
  dc: Dovecot;
  /** Whether its addresses are watched for in its map (a variant that records them). */
  records: boolean;
  /** Whether a recorder stays waiting for more logins between rounds (see settle). */
  waitingRecorder: boolean;
}

/** What the rounds measured for one instance at one concurrency, in ms. */
export interface Measured {
  /** PASS to +OK, for each login that succeeded. */
  latencies: number[];
  /** +OK to visible in the map, for each address seen. */
  windows: number[];
  /** For each round of more than one login whose addresses were all seen: from its last +OK to its last address visible. */
  lastWindows: number[];
  failures: number;
  /** The wall time of its rounds, for the log: where the section's run time goes. */
  spentMs: number;
}

/**
 * Runs `logins` logins per instance at each concurrency, in rounds of that
 * many at once from distinct loopback addresses, rotating the instances'
 * order each round so that none always goes first; each round starts
 * once the previous one has settled. Returns what was measured, by
 * instance and concurrency.
 */
export async function runRounds(
  instances: readonly Instance[],
  concurrency: readonly number[],
  logins: number,
): Promise<(index: number, conc: number) => Measured> {
  const measured = new Map<string, Measured>();
  const at = (vi: number, conc: number): Measured => {
    const key = `${vi}/${conc}`;
    let m = measured.get(key);
    if (m === undefined) {
      m = { latencies: [], windows: [], lastWindows: [], failures: 0, spentMs: 0 };
      measured.set(key, m);
    }
    return m;
  };
  let serial = 0;
  for (const conc of concurrency) {
    for (let round = 0; round < logins / conc; round++) {
      for (let k = 0; k < instances.length; k++) {
        const vi = (k + round) % instances.length;
        const { dc, records, waitingRecorder } = instances[vi] as Instance;
        const from = Array.from({ length: conc }, () => {
          const i = serial++;
          return { i, ip: `127.${30 + vi}.${i >> 7}.${(i & 127) + 1}` };
        });
        const m = at(vi, conc);
        const roundStart = performance.now();
        await oneRound(dc, records, from, m);
        await settle(dc, waitingRecorder);
        m.spentMs += performance.now() - roundStart;
      }
    }
  }
  return at;
}

/** One round: every login of `from` at once, the map watched for their addresses where the instance records. */
async function oneRound(
  dc: Dovecot,
  records: boolean,
  from: ReadonlyArray<{ i: number; ip: string }>,
  m: Measured,
): Promise<void> {
  // When each +OK arrived, and when each address was first found in the map.
  const okAt = new Map<string, number>();
  const seenAt = new Map<string, number>();
  const watching = records
    ? watchMap(
        dc,
        from.map((f) => f.ip),
        seenAt,
      )
    : Promise.resolve();
  const logins = from.map(({ i, ip }) => {
    const start = performance.now();
    return pop3Login({ ...dc.pop3, localAddress: ip }, `user${i % 4}`, PASSWORD).then(
      (c) => {
        okAt.set(ip, start + (c.at[2] ?? NaN));
        return c.ok ? (c.at[2] ?? NaN) - (c.at[1] ?? NaN) : NaN;
      },
      () => NaN,
    );
  });
  for (const t of await Promise.all(logins)) {
    if (Number.isNaN(t)) m.failures++;
    else m.latencies.push(t);
  }
  await watching;
  for (const [ip, seen] of seenAt) m.windows.push(seen - (okAt.get(ip) ?? NaN));
  if (from.length > 1 && seenAt.size === from.length)
    m.lastWindows.push(Math.max(...seenAt.values()) - Math.max(...okAt.values()));
}
