// What every section of the benchmark report shares: percentiles, markdown
// rows, verdicts against targets, and timed runs of a command.

import { spawnSync } from 'node:child_process';

export interface Stats {
  n: number;
  median: number;
  p90: number;
  p99: number;
}

export function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
  return { n: s.length, median: q(0.5), p90: q(0.9), p99: q(0.99) };
}

export const ms = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-');
export const row = (cells: Array<string | number>): string => `| ${cells.join(' | ')} |`;

/** A markdown table's head: the first `textColumns` columns left-aligned, numbers right-aligned. */
export function header(cols: string[], textColumns = 1): string[] {
  return [row(cols), row(cols.map((_, i) => (i < textColumns ? '---' : '---:')))];
}

/** Records a measured value against its target, with the reason when it is missed. */
export type Verdict = (target: string, value: number, limit: number, why: string) => void;

/** Milliseconds of wall time for each of `runs` runs of a command. */
export function timeRuns(runs: number, file: string, args: string[], env?: NodeJS.ProcessEnv): number[] {
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
 * `doc` (docs/benchmarks.md) with one section re-measured alone: its lines
 * from `section`'s heading to the next heading of its level are replaced (or
 * put before "## Targets" when absent), and so are the Targets lines that
 * start as `verdicts` do. Every other section keeps the figures of its run.
 */
export function spliceSection(doc: string, section: readonly string[], verdicts: readonly string[]): string {
  const lines = doc.replace(/\n$/, '').split('\n');
  const heading = section[0] ?? '';
  const targets = lines.indexOf('## Targets');
  const at = lines.indexOf(heading);
  const start = at >= 0 ? at : targets >= 0 ? targets : lines.length;
  const next = at >= 0 ? lines.findIndex((l, i) => i > at && /^## /.test(l)) : start;
  const end = next >= 0 ? next : lines.length;
  const out = [...lines.slice(0, start), ...section, '', ...lines.slice(end)];
  for (const v of verdicts) {
    const key = v.slice(0, v.indexOf(':') + 1);
    const at = out.findIndex((l) => key !== '' && l.startsWith(key));
    if (at >= 0) out[at] = v;
    else out.push(v);
  }
  return `${out.join('\n')}\n`;
}
