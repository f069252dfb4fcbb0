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
