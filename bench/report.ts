// What every section of the benchmark report shares: percentiles and
// markdown rows.

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
