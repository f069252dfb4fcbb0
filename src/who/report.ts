// Who relied on POP-before-SMTP, per day: <dbfile>.report, a JSON summary
// the sweep folds the who journal's expired lines into (per day, per user:
// logins, the distinct addresses, the services), kept report_days days.
// poprelay report reads it with the journal's lines not yet folded, so that
// an administrator can move those users to SMTP AUTH and retire the
// feature, from what poprelay keeps itself rather than from a mail log.
// Written as a new file renamed into place: a reader sees one whole summary.

import { unlinkSync } from 'node:fs';
import { dirname } from 'node:path';

import { errnoCode } from '../errors.js';
import { readRegularText, replaceFile, syncDirectory } from '../safefs.js';
import type { WhoLine } from './journal.js';

/** One user's day. */
export interface DayUse {
  logins: number;
  /** Distinct addresses, at most MAX_ADDRESSES of them listed. */
  addresses: string[];
  services: string[];
}

/** Per day ("YYYY-MM-DD", UTC), per user. */
export type Report = Record<string, Record<string, DayUse>>;

/** A roaming user's addresses in one day are listed up to this many; the rest are not counted. */
const MAX_ADDRESSES = 256;
const MODE = 0o640;

export const reportFile = (dbfile: string): string => `${dbfile}.report`;

export const dayOf = (t: number): string => new Date(t * 1000).toISOString().slice(0, 10);

/** The summary; empty when there is none or it is not one (the directory is the hook user's). */
export function readReport(dbfile: string): Report {
  const text = readRegularText(reportFile(dbfile));
  if (text === null) return {};
  try {
    const o = JSON.parse(text) as { days?: unknown };
    return typeof o.days === 'object' && o.days !== null ? sane(o.days as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** Sets an own property, whatever the key: a user may call themselves "__proto__". */
export function setOwn<T>(o: Record<string, T>, key: string, value: T): T {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
  return value;
}

/** A day's key in the files beside the map: "YYYY-MM-DD", UTC. */
export const isDayKey = (day: string): boolean => /^\d{4}-\d{2}-\d{2}$/.test(day);

/** Drops, in place, the days of `days` older than the `keepDays` days up to `now`'s. */
export function dropOldDays(days: Record<string, unknown>, keepDays: number, now: number): void {
  const oldest = dayOf(now - (keepDays - 1) * 86_400);
  for (const day of Object.keys(days)) if (day < oldest) delete days[day];
}

/** Only what this file writes: days of users of numbers and lists of strings. */
function sane(days: Record<string, unknown>): Report {
  const out: Report = {};
  for (const [day, users] of Object.entries(days)) {
    if (!isDayKey(day) || typeof users !== 'object' || users === null) continue;
    const d: Record<string, DayUse> = {};
    for (const [user, u] of Object.entries(users as Record<string, unknown>)) {
      const v = u as Partial<DayUse> | null;
      if (v === null || typeof v.logins !== 'number') continue;
      const strings = (x: unknown): string[] => (Array.isArray(x) ? x.filter((s) => typeof s === 'string') : []);
      setOwn(d, user, { logins: v.logins, addresses: strings(v.addresses), services: strings(v.services) });
    }
    out[day] = d;
  }
  return out;
}

/** Adds logins to a summary (in place). */
export function fold(report: Report, lines: readonly WhoLine[]): Report {
  for (const l of lines) {
    const day = (report[dayOf(l.t)] ??= {});
    const u = Object.hasOwn(day, l.u) ? day[l.u] : undefined;
    const use = u ?? setOwn(day, l.u, { logins: 0, addresses: [], services: [] });
    use.logins++;
    if (!use.addresses.includes(l.a) && use.addresses.length < MAX_ADDRESSES) use.addresses.push(l.a);
    if (l.s !== '' && !use.services.includes(l.s)) use.services.push(l.s);
  }
  return report;
}

/** Folds the journal's expired lines into the summary and drops days older than `keepDays`; 0 keeps none. */
export function foldIntoReport(dbfile: string, lines: readonly WhoLine[], keepDays: number, now: number): void {
  const path = reportFile(dbfile);
  if (keepDays === 0) {
    try {
      unlinkSync(path);
      syncDirectory(dirname(path));
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
    return;
  }
  const report = fold(readReport(dbfile), lines);
  dropOldDays(report, keepDays, now);
  replaceFile(path, `${JSON.stringify({ days: report })}\n`, MODE);
}

/** One user's use over a span of days. */
export interface UserUse {
  user: string;
  logins: number;
  /** Days with at least one login. */
  days: number;
  /** Distinct addresses (up to the summary's limit per day). */
  addresses: number;
  services: string[];
  /** The last day with a login. */
  lastDay: string;
  /** Relay decisions poprelayd on this host made for the addresses this user logged in from (0 without it). */
  relayed: number;
}

/** Each user's use on the days from `sinceDay` on, most logins first; `relayed`: poprelayd's counts per day and user. */
export function usersSince(
  report: Report,
  sinceDay: string,
  relayed: Record<string, Record<string, number>> = {},
): UserUse[] {
  const by = new Map<string, { logins: number; days: Set<string>; addresses: Set<string>; services: Set<string> }>();
  for (const [day, users] of Object.entries(report)) {
    if (day < sinceDay) continue;
    for (const [user, u] of Object.entries(users)) {
      let acc = by.get(user);
      if (acc === undefined)
        by.set(user, (acc = { logins: 0, days: new Set(), addresses: new Set(), services: new Set() }));
      acc.logins += u.logins;
      acc.days.add(day);
      for (const a of u.addresses) acc.addresses.add(a);
      for (const s of u.services) acc.services.add(s);
    }
  }
  const relayedBy = new Map<string, number>();
  for (const [day, users] of Object.entries(relayed)) {
    if (day < sinceDay) continue;
    for (const [user, n] of Object.entries(users)) {
      relayedBy.set(user, (relayedBy.get(user) ?? 0) + n);
      if (!by.has(user)) by.set(user, { logins: 0, days: new Set(), addresses: new Set(), services: new Set() });
    }
  }
  return [...by]
    .map(([user, a]) => ({
      user,
      logins: a.logins,
      days: a.days.size,
      addresses: a.addresses.size,
      services: [...a.services].sort(),
      lastDay: [...a.days].sort().at(-1) ?? '',
      relayed: relayedBy.get(user) ?? 0,
    }))
    .sort((x, y) => y.logins - x.logins || (x.user < y.user ? -1 : 1));
}
