// Section 1 of npm run bench: login latency with a real Dovecot, per
// post-login variant side by side, the window from +OK to "visible in the
// map", and the peak RSS of the hook process.
// BENCH_LOGINS (default 200) sets the logins per variant and concurrency.

import { copyFileSync, readFileSync, watch, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

import { lookupKeys } from '../src/mapfile.js';
import { type Dovecot, type HookKind, PASSWORD, startDovecot } from '../test/support/dovecot.js';
import { pop3Login } from '../test/support/mailclient.js';
import { makemapSized, settings } from '../test/support/maps.js';
import { ROOT } from '../test/support/paths.js';
import { safeDir } from '../test/support/tmp.js';
import { type RunningProcess, runningProcesses } from './processes.js';
import { header, ms, row, stats, type Verdict } from './report.js';

export const LOGINS = Number(process.env.BENCH_LOGINS ?? 200);

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

/** etc/poprelay.ini with these keys' values in place of the sample's. */
function sampleIni(values: Record<string, string>): string {
  let text = readFileSync(join(ROOT, 'etc/poprelay.ini'), 'utf8');
  for (const [key, value] of Object.entries(values)) {
    const line = new RegExp(`^${key} = .*$`, 'm');
    if (!line.test(text)) throw new Error(`etc/poprelay.ini has no ${key} line`);
    text = text.replace(line, `${key} = ${value}`);
  }
  return text;
}

export async function latencySection(verdict: Verdict, now: number): Promise<string[]> {
  const md: string[] = [];
  const variants: Array<{ label: string; kind: HookKind; ini?: Record<string, string>; map?: number }> = [
    { label: 'no post-login script', kind: 'none' },
    { label: '/bin/sh `exec "$@"`', kind: 'sh-exec' },
    { label: 'do-nothing Node script', kind: 'node-noop' },
    { label: 'Node continues the login, then records (before the sh front)', kind: 'node-continues' },
    { label: 'poprelay-login', kind: 'poprelay' },
    { label: 'poprelay-login, 100,000-entry map', kind: 'poprelay', map: 100_000 },
    { label: 'poprelay-login, `recorder_idle_seconds = 0`', kind: 'poprelay', ini: { recorder_idle_seconds: '0' } },
  ];
  const [SH, NODE_NOOP, BEFORE, POPRELAY, POPRELAY_100K, COLD] = [1, 2, 3, 4, 5, 6];
  /** The variants whose window from +OK to "visible in the map" is measured: every round of poprelay's waits for it. */
  const watched = new Set([BEFORE, POPRELAY, POPRELAY_100K, COLD]);
  /** The variants whose recorder waits for more logins (the default recorder_idle_seconds). */
  const waiting = new Set([POPRELAY, POPRELAY_100K]);
  const dcs: Dovecot[] = [];
  for (const v of variants) {
    const dc = await startDovecot({ hook: v.kind, users: 4 });
    // The shipped sample, as an administrator keeps it: the front reads it up to dbfile on every login.
    writeFileSync(dc.iniPath, sampleIni({ dbfile: dc.mapPath, ignore: '', log_recorded: 'no', ...v.ini }));
    if (v.map !== undefined) {
      // makemap (as smmta) cannot write the hook's directory: build, then copy in.
      const built = join(safeDir(), 'big.db');
      await makemapSized(built, v.map, now);
      copyFileSync(built, dc.mapPath);
      await execa('chown', ['poprelay:poprelay', dc.mapPath]);
    }
    dcs.push(dc);
  }
  const latencies = new Map<string, number[]>();
  const windows = new Map<string, number[]>();
  const failures = new Map<string, number>();
  let serial = 0;
  const push = (m: Map<string, number[]>, key: string, v: number): void => void m.set(key, [...(m.get(key) ?? []), v]);
  for (const conc of [1, 16]) {
    for (let round = 0; round < LOGINS / conc; round++) {
      // Rotate the order each round so no variant always goes first.
      for (let k = 0; k < variants.length; k++) {
        const vi = (k + round) % variants.length;
        const dc = dcs[vi] as Dovecot;
        const from = Array.from({ length: conc }, () => {
          const i = serial++;
          return { i, ip: `127.${30 + vi}.${(i >> 8) & 255}.${i & 255 || 1}` };
        });
        // When each +OK arrived, and when each address was first found in the map (polled every 2 ms).
        const okAt = new Map<string, number>();
        const seenAt = new Map<string, number>();
        const watching = watched.has(vi)
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
        const key = `${vi}/${conc}`;
        for (const t of await Promise.all(logins)) {
          if (Number.isNaN(t)) failures.set(key, (failures.get(key) ?? 0) + 1);
          else push(latencies, key, t);
        }
        await watching;
        for (const [ip, seen] of seenAt) push(windows, key, seen - (okAt.get(ip) ?? NaN));
        await settle(dc, waiting.has(vi));
      }
    }
  }
  md.push(
    '## 1. Login latency with a real Dovecot',
    '',
    'POP3 `PASS` to `+OK Logged in.`, from distinct loopback addresses, each variant its own Dovecot 2.3 configured',
    'like `dovecot-conf/` (only the script differs) and `poprelay.ini` the shipped sample (`ignore` empty,',
    "`log_recorded = no`); rounds rotate through the variants, and each starts once the previous round's",
    'post-login processes have all exited. Milliseconds.',
    '',
    ...header(['variant', 'concurrency', 'logins', 'failed', 'median', 'p90', 'p99']),
  );
  const med = (vi: number, conc: number): number => stats(latencies.get(`${vi}/${conc}`) ?? []).median;
  for (const conc of [1, 16]) {
    variants.forEach((v, vi) => {
      const s = stats(latencies.get(`${vi}/${conc}`) ?? []);
      md.push(row([v.label, conc, s.n, failures.get(`${vi}/${conc}`) ?? 0, ms(s.median), ms(s.p90), ms(s.p99)]));
    });
  }
  md.push(
    '',
    'Added latency over "no post-login script" (medians); poprelay-login\'s as a ratio to the `/bin/sh exec "$@"` script\'s',
    '(target: at most 1.5). The login waits for the sh front only: Node starts after the login has gone on. With the',
    'default `recorder_idle_seconds` (10) the recorder of a round waits for the next, as on a server with a login every',
    'few seconds, and the fronts leave their logins to it and become the login; with 0 every round starts a recorder',
    "(a server's first login after a quiet spell, and the crowd with it).",
    '',
  );
  md.push(
    ...header(
      [
        'concurrency',
        'sh',
        'Node no-op',
        'Node continues (before)',
        'poprelay-login',
        'ratio to sh',
        'poprelay-login, 100k map',
        'ratio to sh',
        'poprelay-login, idle 0',
        'ratio to sh',
      ],
      0,
    ),
  );
  for (const conc of [1, 16]) {
    const base = med(0, conc);
    const add = (vi: number): number => med(vi, conc) - base;
    md.push(
      row([
        conc,
        ms(add(SH)),
        ms(add(NODE_NOOP)),
        ms(add(BEFORE)),
        ms(add(POPRELAY)),
        (add(POPRELAY) / add(SH)).toFixed(2),
        ms(add(POPRELAY_100K)),
        (add(POPRELAY_100K) / add(SH)).toFixed(2),
        ms(add(COLD)),
        (add(COLD) / add(SH)).toFixed(2),
      ]),
    );
    const contention =
      'the sh script adds only 4 to 11 ms, and every process started beside the logins (a fork, flock(1), the recorder ' +
      'even at nice 10) takes from what 2 cores give them (docs/design.md).';
    verdict(`login latency added, concurrency ${conc}, against /bin/sh exec`, add(POPRELAY) / add(SH), 1.5, contention);
    verdict(
      `the same with a 100,000-entry map`,
      add(POPRELAY_100K) / add(SH),
      1.5,
      `${contention} With a big map each recording also copies and fsyncs 5 MB.`,
    );
  }
  md.push(
    '',
    'The window from `+OK` to the address being visible in the map (looked up on each change of its directory), and from `PASS` to visible, in',
    'milliseconds: the sh front against the hook as it was before it (Node started first, continued the login, then recorded).',
    'A waiting recorder lets a crowd pass (no new login for 25 ms, at most 250 ms) before it records it.',
    '',
    ...header(['variant', 'concurrency', 'logins', '+OK to visible p50', 'p99', 'PASS to visible p50'], 1),
  );
  for (const conc of [1, 16]) {
    for (const vi of [BEFORE, POPRELAY, COLD]) {
      const w = stats(windows.get(`${vi}/${conc}`) ?? []);
      md.push(row([variants[vi]?.label ?? '', conc, w.n, ms(w.median), ms(w.p99), ms(med(vi, conc) + w.median)]));
    }
    for (const vi of [POPRELAY, COLD]) {
      const grew =
        stats(windows.get(`${vi}/${conc}`) ?? []).median - stats(windows.get(`${BEFORE}/${conc}`) ?? []).median;
      const saved = med(BEFORE, conc) - med(vi, conc);
      verdict(
        `window to visible, concurrency ${conc}${vi === COLD ? ', recorder_idle_seconds = 0' : ''}: growth over the hook before the front, as a share of the start-up it saved the login`,
        saved > 0 ? Math.max(grew, 0) / saved : Infinity,
        1,
        vi === COLD
          ? "a recorder started for the login: Node's start-up now comes after +OK, where the hook before the front paid it before, so the window grows by about what the login saves."
          : 'the recording finishes later than the login gains.',
      );
    }
  }
  const failedLogins = [...failures.values()].reduce((a, b) => a + b, 0);
  verdict('failed logins', failedLogins, 0, 'see the failed column above.');

  // Peak RSS of the hook process, through GNU time on the executable line.
  const rss: string[] = [];
  for (const kind of ['node-noop', 'poprelay'] as const) {
    const rssDir = safeDir();
    await execa('chown', ['poprelay:poprelay', rssDir]); // GNU time writes it as the hook's user
    const file = join(rssDir, 'rss.txt');
    const dc = await startDovecot({
      hook: kind,
      users: 1,
      // Each login's own recorder, which exits before GNU time reports.
      ini: 'ignore =\nlog_recorded = no\nrecorder_idle_seconds = 0\n',
      editConf: (c) =>
        c.replace(/executable = script-login /g, `executable = script-login /usr/bin/time -a -o ${file} -f %M `),
    });
    try {
      for (let i = 0; i < 20; i++)
        await pop3Login({ ...dc.pop3, localAddress: `127.40.0.${i + 1}` }, 'user0', PASSWORD).catch((e: Error) => {
          throw new Error(`${e.message}\n${dc.log()}`);
        });
      await new Promise((r) => setTimeout(r, 500));
      const kb = readFileSync(file, 'utf8').trim().split('\n').map(Number);
      rss.push(
        row([
          kind === 'poprelay' ? 'poprelay-login (front and recorder)' : 'do-nothing Node script',
          kb.length,
          (stats(kb).median / 1024).toFixed(1),
          (Math.max(...kb) / 1024).toFixed(1),
        ]),
      );
    } finally {
      await dc.stop();
    }
  }
  md.push(
    '',
    'Peak RSS of the post-login script process (GNU time `%M`, including the script-login it runs), MiB:',
    '',
    ...header(['script', 'logins', 'median', 'max']),
    ...rss,
  );
  for (const dc of dcs) await dc.stop();
  return md;
}
