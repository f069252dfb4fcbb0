// npm run bench: every section measured side by side in one run, written to
// docs/benchmarks.md. No thresholds are enforced anywhere: each target is
// compared in the report, with the reason where it is missed.
// BENCH_ONLY=latency,accounting npm run bench: those sections alone (each
// one's variants still side by side), put in place of their old figures;
// the others stay as they were.

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

type Section = (verdict: Verdict, now: number) => Promise<string[]>;

/** The sections in the report's order, by the name BENCH_ONLY gives them. */
const SECTIONS: ReadonlyArray<[string, Section]> = [
  ['latency', latencySection],
  ['record', recordSection],
  ['sweep', sweepSection],
  ['burst', burstSection],
  ['cpu', cpuSection],
  ['cluster', clusterSection],
  ['accounting', accountingSection],
];

const ONLY = process.env.BENCH_ONLY?.split(',').map((name) => name.trim());
const REPORT = join(ROOT, 'docs/benchmarks.md');

function verdictInto(verdicts: string[]): Verdict {
  return (target, value, limit, why) => {
    verdicts.push(
      `- ${target}: ${value.toFixed(2)} (target ${limit}) ${value <= limit ? 'met.' : `**missed**. ${why}`}`,
    );
  };
}

it.runIf(ONLY !== undefined)('the sections BENCH_ONLY names, alone', async () => {
  const unknown = ONLY?.filter((name) => !SECTIONS.some(([known]) => known === name)) ?? [];
  if (unknown.length > 0)
    throw new Error(`BENCH_ONLY: no section ${unknown.join(', ')} (${SECTIONS.map(([n]) => n).join(', ')})`);
  const now = Math.floor(Date.now() / 1000);
  let doc = readFileSync(REPORT, 'utf8');
  for (const [name, section] of SECTIONS.filter(([n]) => ONLY?.includes(n))) {
    const verdicts: string[] = [];
    const lines = await section(verdictInto(verdicts), now);
    const dated = [
      ...lines,
      '',
      `Measured alone (BENCH_ONLY=${name}) on ${new Date().toISOString()}, load average ${loadavg()
        .map((x) => x.toFixed(2))
        .join(', ')} at the end.`,
    ];
    doc = spliceSection(doc, dated, verdicts);
    writeFileSync(REPORT, doc);
    console.log([...dated, '', ...verdicts].join('\n'));
  }
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
  for (const [i, [, section]] of SECTIONS.entries())
    md.push(...(i === 0 ? [] : ['']), ...(await section(verdict, now)));
  md.push('', '## Targets', '', ...verdicts);
  // What else the machine ran meanwhile: the figures are only as quiet as it was.
  const loadLine = md.indexOf('- load average (1, 5, 15 min): LOAD');
  md[loadLine] = `- load average (1, 5, 15 min): ${startLoad} at the start, ${load()} at the end`;
  writeFileSync(REPORT, `${md.join('\n')}\n`);
  console.log(md.join('\n'));
});
