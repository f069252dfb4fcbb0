// poprelayd's log: one line per event on stderr, which systemd puts in the
// journal (with the "<N>" level prefix journald reads when stderr is its
// stream), and lines about hostile or broken clients at most once per
// LOG_EVERY_MS per kind, so that a flood cannot flood the log too.

import { escapeControls } from '../errors.js';

export type Level = 'error' | 'warning' | 'info';

const PRIORITY: Record<Level, number> = { error: 3, warning: 4, info: 6 };
export const LOG_EVERY_MS = 10_000;

export class DaemonLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly write: (line: string) => void = (line) => process.stderr.write(line),
    private readonly journal = process.env.JOURNAL_STREAM !== undefined,
    private readonly now: () => number = Date.now,
  ) {}

  /** Lines said with soon(), written together at the end of this turn of the event loop. */
  private pending: string[] = [];

  say(level: Level, text: string): void {
    this.flush(); // in the order said
    this.write(this.line(level, text));
  }

  /**
   * Says `text` with the other lines of this turn of the event loop, in one
   * write: an audit line per answer would otherwise cost a write per answer.
   */
  soon(level: Level, text: string): void {
    if (this.pending.length === 0) setImmediate(() => this.flush());
    this.pending.push(this.line(level, text));
  }

  flush(): void {
    if (this.pending.length === 0) return;
    const lines = this.pending.join('');
    this.pending = [];
    this.write(lines);
  }

  private line(level: Level, text: string): string {
    return `${this.journal ? `<${PRIORITY[level]}>` : ''}poprelayd: ${escapeControls(text)}\n`;
  }

  /** Says `text` unless a line of the same `kind` was said within LOG_EVERY_MS; then counts it. */
  limited(level: Level, kind: string, text: string): void {
    const seen = this.last.get(kind);
    const t = this.now();
    if (seen !== undefined && t - seen.at < LOG_EVERY_MS) {
      seen.suppressed++;
      return;
    }
    const more = seen !== undefined && seen.suppressed > 0 ? ` (${seen.suppressed} more like it since the last)` : '';
    this.last.set(kind, { at: t, suppressed: 0 });
    this.say(level, `${text}${more}`);
  }
}
