// npm run bench: every section measured side by side in one run, written to
// docs/benchmarks.md. No thresholds are enforced anywhere: each target is
// compared in the report, with the reason where it is missed.
// BENCH_ONLY=accounting npm run bench: that section alone (its variants still
// side by side), put in place of its old figures; the others stay as they were.

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { it } from 'vitest';

import { libdbVersion } from '../src/native.js';
import { ROOT } from '../test/support/paths.js';
import { accountingSection } from './accounting.js';
import { burstSection } from './burst.js';
import { clusterSection } from './cluster.js';
import { cpuSection } from './cpu.js';
import { LOGINS, latencySection } from './latency.js';
import { recordSection } from './record.js';
import { spliceSection, type Verdict } from './report.js';
import { sweepSection } from './sweep.js';

const ONLY = process.env.BENCH_ONLY;
const REPORT = join(ROOT, 'docs/benchmarks.md');

function verdictInto(verdicts: string[]): Verdict {
  return (target, value, limit, why) => {
    verdicts.push(
      `- ${target}: ${value.toFixed(2)} (target ${limit}) ${value <= limit ? 'met.' : `**missed**. ${why}`}`,
    );
  };
}

it.runIf(ONLY === 'accounting')('accounting alone', async () => {
  const verdicts: string[] = [];
  const section = await accountingSection(verdictInto(verdicts));
  const dated = [
    ...section,
    '',
    `Measured alone (BENCH_ONLY=accounting) on ${new Date().toISOString()}, load average ${loadavg()
      .map((x) => x.toFixed(2))
      .join(', ')} at the end.`,
  ];
  writeFileSync(REPORT, spliceSection(readFileSync(REPORT, 'utf8'), dated, verdicts));
  console.log([...dated, '', ...verdicts].join('\n'));
});

it.skipIf(ONLY !== undefined)('benchmarks', async () => {
  const md: string[] = [];
  const load = (): string =>
    loadavg()
      .map((x) => x.toFixed(2))
      .join(', ');
  const startLoad = load();
  const now = Math.floor(Date.now() / 1000);
  const cpu = cpus()[0]?.model ?? 'unknown';
  const dovecotVersion = execFileSync('dovecot', ['--version'], { encoding: 'utf8' }).trim();
  md.push(
    '# poprelay benchmarks',
    '',
    'Written by `npm run bench` (bench/run.bench.ts, one file per section); every number below comes from the same run.',
    'No thresholds are enforced anywhere: the targets are compared here, side by side.',
    '',
    `- date: ${new Date().toISOString()}`,
    `- machine: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim()}`,
    `- Node.js ${process.version}, Dovecot ${dovecotVersion}, ${libdbVersion}`,
    `- logins per variant and concurrency: ${LOGINS}`,
    '- load average (1, 5, 15 min): LOAD',
    '',
  );
  const verdicts: string[] = [];
  const verdict = verdictInto(verdicts);
  md.push(...(await latencySection(verdict)));
  md.push('', ...(await recordSection(verdict, now)));
  md.push('', ...(await sweepSection(verdict, now)));
  md.push('', ...(await burstSection(verdict)));
  md.push('', ...(await cpuSection(verdict)));
  md.push('', ...(await clusterSection(verdict)));
  md.push('', ...(await accountingSection(verdict)));
  md.push('', '## Targets', '', ...verdicts);
  // What else the machine ran meanwhile: the figures are only as quiet as it was.
  const loadLine = md.indexOf('- load average (1, 5, 15 min): LOAD');
  md[loadLine] = `- load average (1, 5, 15 min): ${startLoad} at the start, ${load()} at the end`;
  writeFileSync(REPORT, `${md.join('\n')}\n`);
  console.log(md.join('\n'));
});
