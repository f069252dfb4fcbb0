// npm run bench: login latency with a real Dovecot, record cost against map
// size, sweep cost against db5.3_dump, bursts of hook processes, and the
// hook's start-up budget, all measured side by side in one run. Writes
// docs/benchmarks.md.
// BENCH_LOGINS (default 200) sets the logins per variant and concurrency.

import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, watch, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { it } from 'vitest';

import { libdbVersion } from '../src/bdb.js';
import { parseClientAddress } from '../src/address.js';
import { recordLogin } from '../src/map.js';
import { lookupKeys } from '../src/mapfile.js';
import { appCopy } from '../test/support/app.js';
import { type Dovecot, type HookKind, PASSWORD, startDovecot } from '../test/support/dovecot.js';
import { pop3Login } from '../test/support/mailclient.js';
import { makemapSized } from '../test/support/maps.js';
import { BIN, ROOT } from '../test/support/paths.js';
import { mapop } from '../test/support/processes.js';
import { safeDir } from '../test/support/tmp.js';
import { burstSection } from './burst.js';
import { cpuSection } from './cpu.js';
import { header, ms, row, stats, type Verdict } from './report.js';

const LOGINS = Number(process.env.BENCH_LOGINS ?? 200);

/** Milliseconds of wall time for each of `runs` runs of a command. */
function timeRuns(runs: number, file: string, args: string[], env?: NodeJS.ProcessEnv): number[] {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = spawnSync(file, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    out.push(performance.now() - t0);
    if (r.status !== 0) throw new Error(`${file} ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  }
  return out;
}

/**
 * Notes when each address is first found in the instance's map: looked up
 * whenever the map's directory changes (a writer renames a new copy in), and
 * every 50 ms besides; gives up after 30 s. Woken by inotify rather than
 * polling often, so that the watcher takes no CPU from the recorders it
 * times.
 */
async function watchMap(dc: Dovecot, ips: readonly string[], seenAt: Map<string, number>): Promise<void> {
  const s = { path: dc.mapPath, type: 'hash' as const, lockTimeoutMs: 5000, mode: 0o644, timeoutSeconds: 900 };
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

it('benchmarks', async () => {
  const md: string[] = [];
  const now = Math.floor(Date.now() / 1000);
  const cpu = cpus()[0]?.model ?? 'unknown';
  const dovecotVersion = execFileSync('dovecot', ['--version'], { encoding: 'utf8' }).trim();
  md.push(
    '# poprelay benchmarks',
    '',
    'Written by `npm run bench` (bench/login.bench.ts); every number below comes from the same run.',
    'No thresholds are enforced anywhere: the targets are compared here, side by side.',
    '',
    `- date: ${new Date().toISOString()}`,
    `- machine: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}`,
    `- Node.js ${process.version}, Dovecot ${dovecotVersion}, ${libdbVersion}`,
    `- logins per variant and concurrency: ${LOGINS}`,
    '',
  );

  // 1. Login latency: one Dovecot per variant, logins interleaved across them.
  const variants: Array<{ label: string; kind: HookKind; ini?: string; map?: number }> = [
    { label: 'no post-login script', kind: 'none' },
    { label: '/bin/sh `exec "$@"`', kind: 'sh-exec' },
    { label: 'do-nothing Node script', kind: 'node-noop' },
    { label: 'Node continues the login, then records (before the sh front)', kind: 'node-continues' },
    { label: 'poprelay-login', kind: 'poprelay' },
    { label: 'poprelay-login, 100,000-entry map', kind: 'poprelay', map: 100_000 },
  ];
  const [SH, NODE_NOOP, BEFORE, POPRELAY, POPRELAY_100K] = [1, 2, 3, 4, 5];
  /** The variants whose window from +OK to "visible in the map" is measured. */
  const watched = new Set([BEFORE, POPRELAY]);
  const dcs: Dovecot[] = [];
  for (const v of variants) {
    const dc = await startDovecot({ hook: v.kind, users: 4, ini: 'ignore =\nlog_recorded = no\n' });
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
          return { i, ip: `127.${30 + vi}.${(i >> 8) & 255}.${(i & 255) || 1}` };
        });
        // When each +OK arrived, and when each address was first found in the map (polled every 2 ms).
        const okAt = new Map<string, number>();
        const seenAt = new Map<string, number>();
        const watching = watched.has(vi) ? watchMap(dc, from.map((f) => f.ip), seenAt) : Promise.resolve();
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
      }
    }
  }
  md.push(
    '## 1. Login latency with a real Dovecot',
    '',
    'POP3 `PASS` to `+OK Logged in.`, from distinct loopback addresses, each variant its own Dovecot 2.3 configured',
    'like `dovecot-conf/` (only the script differs); rounds rotate through the variants. Milliseconds.',
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
  const verdicts: string[] = [];
  const verdict: Verdict = (target, value, limit, why) => {
    verdicts.push(`- ${target}: ${value.toFixed(2)} (target ${limit}) ${value <= limit ? 'met.' : `**missed**. ${why}`}`);
  };
  md.push(
    '',
    'Added latency over "no post-login script" (medians); poprelay-login\'s as a ratio to the `/bin/sh exec "$@"` script\'s',
    '(target: at most 1.5). The login waits for the sh front only: Node starts after the login has gone on.',
    '',
  );
  md.push(...header(['concurrency', 'sh', 'Node no-op', 'Node continues (before)', 'poprelay-login', 'ratio to sh', 'poprelay-login, 100k map', 'ratio to sh'], 0));
  for (const conc of [1, 16]) {
    const base = med(0, conc);
    const add = (vi: number): number => med(vi, conc) - base;
    md.push(row([conc, ms(add(SH)), ms(add(NODE_NOOP)), ms(add(BEFORE)), ms(add(POPRELAY)), (add(POPRELAY) / add(SH)).toFixed(2), ms(add(POPRELAY_100K)), (add(POPRELAY_100K) / add(SH)).toFixed(2)]));
    const contention = 'On 2 cores the recorders of the previous logins compete with the next logins for the CPU.';
    verdict(`login latency added, concurrency ${conc}, against /bin/sh exec`, add(POPRELAY) / add(SH), 1.5, contention);
    verdict(`the same with a 100,000-entry map`, add(POPRELAY_100K) / add(SH), 1.5, `${contention} With a big map each recording also copies and fsyncs 5 MB.`);
  }
  md.push(
    '',
    'The window from `+OK` to the address being visible in the map (looked up on each change of its directory), and from `PASS` to visible, in',
    'milliseconds: the sh front against the hook as it was before it (Node started first, continued the login, then recorded).',
    '',
    ...header(['variant', 'concurrency', 'logins', '+OK to visible p50', 'p99', 'PASS to visible p50'], 1),
  );
  for (const conc of [1, 16]) {
    for (const vi of [BEFORE, POPRELAY]) {
      const w = stats(windows.get(`${vi}/${conc}`) ?? []);
      md.push(row([variants[vi]?.label ?? '', conc, w.n, ms(w.median), ms(w.p99), ms(med(vi, conc) + w.median)]));
    }
    const grew = stats(windows.get(`${POPRELAY}/${conc}`) ?? []).median - stats(windows.get(`${BEFORE}/${conc}`) ?? []).median;
    const saved = med(BEFORE, conc) - med(POPRELAY, conc);
    verdict(
      `window to visible, concurrency ${conc}: growth over the hook before the front, as a share of the start-up it saved the login`,
      saved > 0 ? grew / saved : Infinity,
      1,
      'the recording finishes later than the login gains.',
    );
  }
  const failedLogins = [...failures.values()].reduce((a, b) => a + b, 0);
  verdicts.push(`- failed logins: ${failedLogins} (target 0) ${failedLogins === 0 ? 'met.' : '**missed**.'}`);

  // Peak RSS of the hook process, through GNU time on the executable line.
  const rss: string[] = [];
  for (const kind of ['node-noop', 'poprelay'] as const) {
    const rssDir = safeDir();
    await execa('chown', ['poprelay:poprelay', rssDir]); // GNU time writes it as the hook's user
    const file = join(rssDir, 'rss.txt');
    const dc = await startDovecot({
      hook: kind,
      users: 1,
      ini: 'ignore =\nlog_recorded = no\n',
      editConf: (c) => c.replace(/executable = script-login /g, `executable = script-login /usr/bin/time -a -o ${file} -f %M `),
    });
    try {
      for (let i = 0; i < 20; i++) await pop3Login({ ...dc.pop3, localAddress: `127.40.0.${i + 1}` }, 'user0', PASSWORD).catch((e: Error) => { throw new Error(`${e.message}\n${dc.log()}`); });
      await new Promise((r) => setTimeout(r, 500));
      const kb = readFileSync(file, 'utf8').trim().split('\n').map(Number);
      rss.push(row([kind === 'poprelay' ? 'poprelay-login (front and recorder)' : 'do-nothing Node script', kb.length, (stats(kb).median / 1024).toFixed(1), (Math.max(...kb) / 1024).toFixed(1)]));
    } finally {
      await dc.stop();
    }
  }
  md.push('', 'Peak RSS of the post-login script process (GNU time `%M`, including the script-login it runs), MiB:', '', ...header(['script', 'logins', 'median', 'max']), ...rss);

  // 2. Record cost against map size.
  md.push('', '## 2. Record cost against map size', '');
  md.push(
    'In-process: one `recordLogin` (lock, copy, change, fsync, rename) on a map of that size, 30 times.',
    'End to end: the hook run by hand (`IP=... poprelay-login`), 30 times, which is what its process costs',
    '(the login itself does not wait for it: the front continues the login first; see section 1).',
    '',
    ...header(['entries', 'file', 'in-process median', 'p90', 'hook process median', 'p90'], 0),
  );
  const recordMed: Record<number, [number, number]> = {};
  for (const n of [10, 10_000, 100_000]) {
    const dir = safeDir();
    const map = join(dir, 'popip.db');
    await makemapSized(map, n, now);
    const s = { path: map, type: 'hash' as const, lockTimeoutMs: 5000, mode: 0o644, timeoutSeconds: 900 };
    const inproc: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      recordLogin(s, parseClientAddress(`172.20.0.${i + 1}`), now);
      inproc.push(performance.now() - t0);
    }
    const ini = join(dir, 'p.ini');
    writeFileSync(ini, `dbfile = ${map}\nignore =\nlog_recorded = no\n`);
    const hook = timeRuns(30, join(appCopy(), 'bin/poprelay-login'), ['--config', ini], { IP: '172.20.1.1' });
    const a = stats(inproc);
    const b = stats(hook);
    recordMed[n] = [a.median, b.median];
    md.push(row([n.toLocaleString('en'), `${(Number(execFileSync('stat', ['-c', '%s', map], { encoding: 'utf8' })) / 1024).toFixed(0)} KiB`, ms(a.median), ms(a.p90), ms(b.median), ms(b.p90)]));
  }
  const r10 = recordMed[10] ?? [1, 1];
  const r100k = recordMed[100_000] ?? [1, 1];
  md.push('', `100,000 entries against 10 (target: at most 1.1): in-process ${(r100k[0] / r10[0]).toFixed(2)}x, hook process ${(r100k[1] / r10[1]).toFixed(2)}x.`);
  const copyWhy =
    'By design: every write copies the map, changes the copy, fsyncs it and renames it into place (docs/design.md), so its cost grows with ' +
    'the file (section 2, in-process). In-place updates would be O(1) but a writer killed between page writes corrupts the map ' +
    '(shown with strace fault injection) and unlocked readers such as Exim could read half-written pages. The login does not pay this: ' +
    'the front hands the login on before the recording starts (section 1, 100,000-entry map row).';
  verdict('record, 100,000 entries against 10, hook process', r100k[1] / r10[1], 1.1, copyWhy);
  verdict('record, 100,000 entries against 10, in-process', r100k[0] / r10[0], 1.1, copyWhy);

  // 3. Sweep cost against db5.3_dump, and a login recording during the sweep.
  md.push(
    '',
    '## 3. Sweep cost',
    '',
    'Maps made by makemap, half the entries expired. `db5.3_dump` reads the same map as the C baseline. The',
    'sweep runs on a fresh copy each time (3 runs). "Record during sweep" is a separate process recording',
    'an address every 100 ms (10 logins a second) while the sweep runs: each record\'s time, lock wait included.',
    '',
    ...header(['entries', 'db5.3_dump median', 'poprelay-sweep median', 'ratio (target ≤ 3)', 'record idle, median', 'record during sweep, median', 'max'], 0),
  );
  for (const n of [100_000, 1_000_000]) {
    const dir = safeDir();
    const orig = join(dir, 'orig.db');
    await makemapSized(orig, n, now, 2);
    const map = join(dir, 'popip.db');
    const ini = join(dir, 'p.ini');
    writeFileSync(ini, `dbfile = ${map}\nignore =\n`);
    const dump = stats(timeRuns(3, 'db5.3_dump', [orig]).map((x) => x)).median;
    const sweeps: number[] = [];
    for (let i = 0; i < 3; i++) {
      copyFileSync(orig, map);
      sweeps.push(...timeRuns(1, process.execPath, [BIN.sweep, '--quiet', '--config', ini]));
    }
    copyFileSync(orig, map);
    const idle = await mapop(['record-loop', map, '1000']);
    copyFileSync(orig, map);
    const during = mapop(['record-loop', map, String(Math.max(2000, stats(sweeps).median))]);
    await new Promise((r) => setTimeout(r, 200));
    timeRuns(1, process.execPath, [BIN.sweep, '--quiet', '--config', ini]);
    const rec = (await during).ok as number[];
    const sw = stats(sweeps).median;
    md.push(row([n.toLocaleString('en'), ms(dump), ms(sw), (sw / dump).toFixed(2), ms(stats(idle.ok as number[]).median), ms(stats(rec).median), ms(Math.max(...rec))]));
    verdict(
      `sweep of ${n.toLocaleString('en')} entries against db5.3_dump`,
      sw / dump,
      3,
      `poprelay-sweep pays Node's start-up (section 5: about ${ms(stats(timeRuns(10, process.execPath, ['-e', ''])).median)} ms) that the C tool does not, and removes in locked batches of about 200 ms, each copying the map.`,
    );
  }

  // 4. Bursts.
  md.push('', ...(await burstSection(verdict)));

  // 5. CPU per recording.
  md.push('', ...cpuSection(verdict));

  md.push('', '## Targets', '', ...verdicts);
  for (const dc of dcs) await dc.stop();
  writeFileSync(join(ROOT, 'docs/benchmarks.md'), `${md.join('\n')}\n`);
  console.log(md.join('\n'));
});
