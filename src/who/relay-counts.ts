// How much each user relied on POP-before-SMTP, as poprelayd saw it: the
// relay decisions it made per day and per user behind the client's address,
// kept beside the map in <dbfile>.relayed (JSON: per UTC day, per user, a
// count) for poprelay report. Counted in memory and written once a minute
// and when poprelayd stops, merged into what the file holds, as a new file
// renamed into place; days older than report_days leave it. A file that
// cannot be written is one line; no answer ever waits for it.

import { dayOf, dropOldDays, isDayKey, setOwn } from './report.js';
import { readRegularText, replaceFile } from '../safefs.js';

/** Per day ("YYYY-MM-DD"), per user: relay decisions. */
export type RelayedDays = Record<string, Record<string, number>>;

export const relayedFile = (dbfile: string): string => `${dbfile}.relayed`;
export const FLUSH_MS = 60_000;

export function readRelayed(dbfile: string): RelayedDays {
  const text = readRegularText(relayedFile(dbfile));
  if (text === null) return {};
  const out: RelayedDays = {};
  try {
    const o = JSON.parse(text) as { days?: Record<string, Record<string, unknown>> };
    for (const [day, users] of Object.entries(o.days ?? {})) {
      if (!isDayKey(day) || typeof users !== 'object' || users === null) continue;
      const d: Record<string, number> = {};
      for (const [u, n] of Object.entries(users)) if (typeof n === 'number' && Number.isFinite(n)) setOwn(d, u, n);
      out[day] = d;
    }
  } catch {
    // not ours: started again
  }
  return out;
}

export class RelayCounts {
  /** day -> user -> decisions, since the last write (Maps: counted at every answer). */
  private pending = new Map<string, Map<string, number>>();
  /** The day being counted (days since the epoch, UTC) and its map in `pending`; null once written. */
  private dayNumber = -1;
  private day: Map<string, number> | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly dbfile: string,
    private readonly keepDays: number,
    private readonly problem: (text: string) => void,
  ) {
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** One relay decision for every named user behind the address. */
  add(users: readonly string[], nowSeconds: number): void {
    if (this.keepDays === 0) return;
    const dayNumber = Math.floor(nowSeconds / 86_400);
    // A date's text per answer costs more than the rest of the counting: the day's map is kept at hand.
    if (dayNumber !== this.dayNumber || this.day === null) {
      const key = dayOf(nowSeconds);
      let day = this.pending.get(key);
      if (day === undefined) this.pending.set(key, (day = new Map()));
      this.dayNumber = dayNumber;
      this.day = day;
    }
    const day = this.day;
    for (const u of users) if (u !== '') day.set(u, (day.get(u) ?? 0) + 1);
  }

  /** Merges what was counted into the file. */
  flush(nowSeconds = Math.floor(Date.now() / 1000)): void {
    if (this.pending.size === 0) return;
    const counted = this.pending;
    this.pending = new Map();
    this.day = null;
    const path = relayedFile(this.dbfile);
    try {
      const days = readRelayed(this.dbfile);
      for (const [day, users] of counted) {
        const d = (days[day] ??= {});
        for (const [u, n] of users) setOwn(d, u, (Object.hasOwn(d, u) ? (d[u] ?? 0) : 0) + n);
      }
      dropOldDays(days, this.keepDays, nowSeconds);
      replaceFile(path, `${JSON.stringify({ days })}\n`, 0o640);
    } catch (e) {
      this.problem(`the relay counts ${path} were not written: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
