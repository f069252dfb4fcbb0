// poprelayd's log: one line per event on stderr, which systemd puts in the
// journal (with the "<N>" level prefix journald reads when stderr is its
// stream), and lines about hostile or broken clients at most once per
// LOG_EVERY_MS per kind, so that a flood cannot flood the log too.

import { escapeControls } from '../errors.js';

export type Level = 'error' | 'warning' | 'info';

const PRIORITY: Record<Level, number> = { error: 3, warning: 4, info: 6 };
export const LOG_EVERY_MS = 10_000;
/** The longest a line said with soon() waits to be written. */
export const SOON_MS = 100;
/** Lines said with soon() are written at once when this many characters wait. */
export const SOON_CHARS = 64 * 1024;

export class DaemonLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly write: (line: string) => void = (line) => process.stderr.write(line),
    private readonly journal = process.env.JOURNAL_STREAM !== undefined,
    private readonly now: () => number = Date.now,
  ) {}

  /** Lines said with soon(), not yet written. */
  private pending = '';
  private timer: NodeJS.Timeout | undefined;
  /** Writes what is pending when the process exits however it does (process.exit, an uncaught error). */
  private readonly atExit = (): void => this.flush();

  say(level: Level, text: string): void {
    this.flush(); // in the order said
    this.write(this.line(level, escapeControls(text)));
  }

  /**
   * Says `text` with the other lines said soon after it, in one write: within
   * SOON_MS, or once SOON_CHARS characters wait. An audit line per answer would
   * otherwise cost a write (and journald a wakeup) per answer. A process
   * killed outright (SIGKILL, OOM) loses what waits: at most SOON_MS of
   * lines; any exit Node sees writes them first.
   */
  soon(level: Level, text: string): void {
    this.queue(this.line(level, escapeControls(text)));
  }

  /** As soon(), for text that holds no control character already (an audit line): not looked through again. */
  soonEscaped(level: Level, text: string): void {
    this.queue(this.line(level, text));
  }

  private queue(line: string): void {
    if (this.pending === '') {
      // Unreferenced: it never keeps a process alive, the exit writes what waits.
      this.timer = setTimeout(() => this.flush(), SOON_MS).unref();
      process.once('exit', this.atExit);
    }
    this.pending += line;
    if (this.pending.length >= SOON_CHARS) this.flush();
  }

  flush(): void {
    if (this.pending === '') return;
    clearTimeout(this.timer);
    this.timer = undefined;
    process.removeListener('exit', this.atExit);
    const lines = this.pending;
    this.pending = '';
    this.write(lines);
  }

  /** `escaped`, which holds no control character, as a line of the log. */
  private line(level: Level, escaped: string): string {
    return `${this.journal ? `<${PRIORITY[level]}>` : ''}poprelayd: ${escaped}\n`;
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
