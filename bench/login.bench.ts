// npm run bench: login latency with a real Dovecot, record cost against map
// size, sweep cost against db5.3_dump, bursts of hook processes, and the
// hook's start-up budget, all measured side by side in one run. Writes
// docs/benchmarks.md.
// BENCH_LOGINS (default 200) sets the logins per variant and concurrency.

import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { it } from 'vitest';

import { libdbVersion } from '../src/bdb.js';
import { parseClientAddress } from '../src/address.js';
import { recordLogin } from '../src/map.js';
import { appCopy } from '../test/app.js';
import { PASSWORD, startDovecot, type Dovecot, type HookKind } from '../test/dovecot.js';
import { BIN, makemapSized, mapop, ROOT } from '../test/helpers.js';
import { pop3Login } from '../test/mailclient.js';
import { safeDir } from '../test/peers.js';
import { burstSection } from './burst.js';
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
    { label: 'poprelay-login', kind: 'poprelay' },
    { label: 'poprelay-login, 100,000-entry map', kind: 'poprelay', map: 100_000 },
  ];
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
  const failures = new Map<string, number>();
  let serial = 0;
  for (const conc of [1, 16]) {
    for (let round = 0; round < LOGINS / conc; round++) {
      // Rotate the order each round so no variant always goes first.
      for (let k = 0; k < variants.length; k++) {
        const vi = (k + round) % variants.length;
        const dc = dcs[vi] as Dovecot;
        const logins = Array.from({ length: conc }, () => {
          const i = serial++;
          const from = `127.${30 + vi}.${(i >> 8) & 255}.${(i & 255) || 1}`;
          return pop3Login({ ...dc.pop3, localAddress: from }, `user${i % 4}`, PASSWORD).then(
            (c) => (c.ok ? (c.at[2] ?? NaN) - (c.at[1] ?? NaN) : NaN),
            () => NaN,
          );
        });
        const key = `${vi}/${conc}`;
        for (const t of await Promise.all(logins)) {
          if (Number.isNaN(t)) failures.set(key, (failures.get(key) ?? 0) + 1);
          else latencies.set(key, [...(latencies.get(key) ?? []), t]);
        }
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
  md.push('', 'Added latency over "no post-login script" (medians), and poprelay-login\'s as a ratio to the do-nothing Node script\'s (target: at most 1.25):', '');
  md.push(...header(['concurrency', 'sh', 'Node no-op', 'poprelay-login', 'ratio', 'poprelay-login, 100k map', 'ratio'], 0));
  for (const conc of [1, 16]) {
    const base = med(0, conc);
    const add = (vi: number): number => med(vi, conc) - base;
    md.push(row([conc, ms(add(1)), ms(add(2)), ms(add(3)), (add(3) / add(2)).toFixed(2), ms(add(4)), (add(4) / add(2)).toFixed(2)]));
    const contention = 'On 2 cores the hooks of 16 simultaneous logins compete for CPU; the recording runs after the login is handed on, but still takes CPU and disk.';
    verdict(`login latency added, concurrency ${conc}, against the do-nothing Node script`, add(3) / add(2), 1.25, contention);
    verdict(`the same with a 100,000-entry map`, add(4) / add(2), 1.25, `${contention} With a big map each recording also copies and fsyncs 5 MB.`);
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
      rss.push(row([kind === 'poprelay' ? 'poprelay-login' : 'do-nothing Node script', kb.length, (stats(kb).median / 1024).toFixed(1), (Math.max(...kb) / 1024).toFixed(1)]));
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
    '(the login itself does not wait for it: the hook continues the login first; see section 1).',
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
    const hook = timeRuns(30, process.execPath, [join(appCopy(), 'bin/poprelay-login'), '--config', ini], { IP: '172.20.1.1' });
    const a = stats(inproc);
    const b = stats(hook);
    recordMed[n] = [a.median, b.median];
    md.push(row([n.toLocaleString('en'), `${(Number(execFileSync('stat', ['-c', '%s', map], { encoding: 'utf8' })) / 1024).toFixed(0)} KiB`, ms(a.median), ms(a.p90), ms(b.median), ms(b.p90)]));
  }
  const r10 = recordMed[10] ?? [1, 1];
  const r100k = recordMed[100_000] ?? [1, 1];
  md.push('', `100,000 entries against 10 (target: at most 1.1): in-process ${(r100k[0] / r10[0]).toFixed(2)}x, hook process ${(r100k[1] / r10[1]).toFixed(2)}x.`);
  const copyWhy =
    'By design: every write copies the map, changes the copy, fsyncs it and renames it into place (README, Design), so its cost grows with ' +
    'the file (section 2, in-process). In-place updates would be O(1) but a writer killed between page writes corrupts the map ' +
    '(shown with strace fault injection) and unlocked readers such as Exim could read half-written pages. The login does not pay this: ' +
    'the hook hands the login on before recording (section 1, 100,000-entry map row).';
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

  // 5. Start-up budget.
  md.push('', '## 5. Start-up budget of the hook', '');
  const firstLine = join(safeDir(), 'first-line.mjs');
  writeFileSync(firstLine, 'process.stdout.write(String(performance.now()));\n');
  const firsts = Array.from({ length: 30 }, () => Number(execFileSync(process.execPath, [firstLine], { encoding: 'utf8' })));
  const bare = stats(timeRuns(30, process.execPath, ['-e', ''])).median;
  md.push(
    `- A bare \`node -e ''\` process: ${ms(bare)} ms (median of 30).`,
    `- Process start to the first line of an ES module (\`performance.now()\` there): ${ms(stats(firsts).median)} ms.`,
    '',
    'What each import on the hook\'s path adds, loaded in this order in a fresh process (median of 30 runs, ms).',
    'Everything after `login.js` loads only after the login has been handed on to Dovecot.',
    '',
    ...header(['import', 'adds']),
  );
  const app = appCopy();
  const chain = ['dist/login.js', 'dist/errors.js', 'node_modules/ini/lib/ini.js', 'dist/address.js', 'dist/config.js', 'dist/bdb.js', 'dist/map.js'];
  const probe = join(safeDir(), 'imports.mjs');
  writeFileSync(
    probe,
    `const out = [];\nfor (const m of ${JSON.stringify(chain.map((c) => join(app, c)))}) { const t = performance.now(); await import(m); out.push(performance.now() - t); }\n` +
      `const t = performance.now(); await import(${JSON.stringify(join(ROOT, 'node_modules/execa/index.js'))}); out.push(performance.now() - t);\n` +
      'process.stdout.write(JSON.stringify(out));\n',
  );
  const runs = Array.from({ length: 30 }, () => JSON.parse(execFileSync(process.execPath, [probe], { encoding: 'utf8' })) as number[]);
  [...chain, 'execa (not used by the hook; for comparison)'].forEach((name, i) => {
    md.push(row([`\`${name.replace(/^dist\//, 'src/').replace(/\.js$/, '.ts').replace('src/../', '')}\``, ms(stats(runs.map((r) => r[i] ?? NaN)).median)]));
  });

  md.push('', '## Targets', '', ...verdicts);
  md.push(
    '',
    'Bundling the hook (one file instead of the imports above) was considered and not done: only `login.ts` loads before the',
    'login is handed on; a bundle would move the parsing of everything else before the handoff. execa is not used by',
    'the hook (its import alone costs more than all of the hook\'s modules together); it serves the tests.',
  );
  for (const dc of dcs) await dc.stop();
  writeFileSync(join(ROOT, 'docs/benchmarks.md'), `${md.join('\n')}\n`);
  console.log(md.join('\n'));
});
