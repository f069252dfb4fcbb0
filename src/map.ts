// The relay map's meaning (docs/design.md): keys are lowercase without a
// trailing NUL (as `makemap hash` writes); values are as values.ts says. An
// IPv6 login writes two keys, one entry. How the file is locked, copied and
// published, and how logins are queued for it, is mapfile.ts's and
// queue.ts's job.

import { addressOfKey, type ClientAddress } from './address.js';
import type { MapSettings } from './config.js';
import { applyQueue, HOLD_TARGET_MS, letWaitersIn, lookupKeys, readRecords, updateMap } from './mapfile.js';
import { PoprelayError } from './errors.js';
import { mapError, translated } from './map-errors.js';
import { enqueueLogin, readQueue, type QueuedLogin } from './queue.js';
import { applyLogin, classifyValue, entryTime } from './values.js';
import { unpackRecords, type Database } from './bdb.js';
import { unixNow } from './timefmt.js';

export { ensureMap, readRecords, updateMap } from './mapfile.js';

/** One address (or other key) in the map; an IPv6 login's two keys form one entry. */
export interface RelayEntry {
  /** IPv4, compressed IPv6, or the raw key when it is not an address. */
  address: string;
  keys: string[];
  /** Last login as Unix seconds; null for a permanent entry; 0 for an invalid value (values.ts). */
  time: number | null;
  /** The value is all digits but no possible time: swept as expired. */
  invalid?: true;
}

/** How long one sweep batch should hold the lock. */
const BATCH_TARGET_MS = HOLD_TARGET_MS;
const FIRST_BATCH = 2000;

/** Groups records into entries: an IPv6 address's two keys become one entry. */
function groupEntries(records: Iterable<[string, string]>): RelayEntry[] {
  const byAddress = new Map<string, RelayEntry>();
  for (const [key, value] of records) {
    // An IPv4 key is its own display text; only IPv6 keys (with ':') pair up.
    const address = key.includes(':') ? (addressOfKey(key)?.text ?? key) : key;
    const v = classifyValue(value);
    const time = entryTime(value);
    const e = byAddress.get(address);
    if (e === undefined) {
      byAddress.set(
        address,
        v.kind === 'invalid' ? { address, keys: [key], time, invalid: true } : { address, keys: [key], time },
      );
    } else {
      e.keys.push(key);
      // Permanent wins; otherwise the newer time counts. Invalid only when every key is.
      e.time = e.time === null || time === null ? null : Math.max(e.time, time);
      if (v.kind !== 'invalid') delete e.invalid;
    }
  }
  return [...byAddress.values()];
}

export function readEntries(s: MapSettings): RelayEntry[] {
  return groupEntries(readRecords(s));
}

/** Logins queued beside the map and not yet applied to it. */
export function readQueued(s: MapSettings): QueuedLogin[] {
  return readQueue(s.path).logins;
}

const enc = (s: string): Buffer => Buffer.from(s, 'latin1');

export type RecordResult = 'recorded' | 'permanent';

/**
 * Upserts a login. Dated keys get the new time; a permanent entry is never
 * downgraded to an expiring one.
 */
export function recordLogin(s: MapSettings, addr: ClientAddress, now: number): RecordResult {
  let result: RecordResult = 'permanent';
  updateMap(s, (db) => {
    const value = enc(String(now));
    for (const key of addr.keys.map(enc)) {
      const old = db.get(key);
      if (old !== null && classifyValue(old.toString('latin1')).kind === 'permanent') continue;
      db.put(key, value);
      result = 'recorded';
    }
    return result === 'recorded';
  });
  return result;
}

/** What became of a login: see queueLogin. */
export type LoginOutcome =
  /** in the map, applied by this process */
  | 'recorded'
  /** queued; the writer holding the lock applies it */
  | 'queued'
  /** the map already had it within refresh_seconds: nothing written */
  | 'fresh'
  /** a permanent entry: nothing written */
  | 'permanent';

/**
 * Whether a login at `now` need write nothing, from the map's values for
 * its keys (null where absent): every key permanent, or younger than
 * `refreshSeconds` (a reconnect storm writes nothing).
 */
export function unchanged(
  values: ReadonlyArray<string | null>,
  now: number,
  refreshSeconds: number,
): 'permanent' | 'fresh' | null {
  if (!values.every((v) => v !== null)) return null;
  const kinds = values.map((v) => classifyValue(v ?? ''));
  if (kinds.every((k) => k.kind === 'permanent')) return 'permanent';
  if (kinds.every((k) => k.kind === 'permanent' || (k.kind === 'dated' && now - k.time < refreshSeconds)))
    return 'fresh';
  return null;
}

/**
 * The published map's values for `keys`, to tell whether logins need
 * writing; null when there is no map, or it cannot be read now: the logins
 * are queued anyway, and applying them reports why.
 */
export function valuesBeforeQueueing(s: MapSettings, keys: readonly string[]): Array<string | null> | null {
  try {
    return lookupKeys(s, keys);
  } catch {
    return null;
  }
}

/**
 * Applies the queue without waiting for the lock (mapfile.ts's applyQueue):
 * 'recorded' when this process applied it, 'queued' when the writer holding
 * the lock will. A failure (a corrupt map, say) throws, and the logins stay
 * queued until the map can take them.
 */
export function applyQueuedLogins(s: MapSettings): 'recorded' | 'queued' {
  try {
    return applyQueue(s) === 'applied' ? 'recorded' : 'queued';
  } catch (e) {
    const err = mapError(e, s.path, 'apply the login queue to');
    throw new PoprelayError(err.code, `${err.message} The login is queued and goes in once the map can take it.`, {
      cause: e,
    });
  }
}

/**
 * The recording of a login by hand: never waits for the lock. A login
 * whose entry is already permanent, or younger than `refreshSeconds`, costs
 * one read-only lookup. Otherwise the login is queued durably first, then
 * applied by whoever holds the lock (docs/design.md).
 */
export function queueLogin(s: MapSettings, addr: ClientAddress, now: number, refreshSeconds: number): LoginOutcome {
  const values = valuesBeforeQueueing(s, addr.keys);
  const same = values === null ? null : unchanged(values, now, refreshSeconds);
  if (same !== null) return same;
  translated(s.path, 'queue a login for', () => enqueueLogin(s.path, addr, now), 'io');
  return applyQueuedLogins(s);
}

/** Adds or replaces an entry with a fixed value (a time, or "OK" for permanent). */
export function putEntry(s: MapSettings, addr: ClientAddress, value: string): void {
  updateMap(s, (db) => {
    for (const key of addr.keys) db.put(enc(key), enc(value));
    return true;
  });
}

/** Removes every key of an address. False when none was there. */
export function removeAddress(s: MapSettings, addr: ClientAddress): boolean {
  let removed = false;
  updateMap(
    s,
    (db) => {
      for (const key of addr.keys) removed = db.del(enc(key)) || removed;
      return removed;
    },
    false,
  );
  return removed;
}

export interface SweepReport {
  /** Entries removed (or, in a dry run, that would be). */
  removed: RelayEntry[];
  kept: number;
  /** Dated entries kept because their address has a live session (each written the time of the sweep, at most the clock's). */
  refreshed: number;
  permanent: number;
  /** Dated entries whose time is ahead of now; kept as fresh. */
  future: RelayEntry[];
}

export interface SweepOptions {
  now: number;
  dryRun?: boolean;
  /** Addresses with a live POP3/IMAP session: each counts as a login now. */
  live?: readonly ClientAddress[];
  /**
   * Entries removed per locked update, fixed. By default the size adapts:
   * each batch is sized from the time the last one took, aiming at
   * BATCH_TARGET_MS under the lock. A fixed count either holds the lock too
   * long on a big map (measured: 100,000 removals per batch on a
   * 1,000,000-entry map made a concurrent record wait 2 s) or copies the
   * whole file too often (250 copies of 42 MB took 15 s).
   */
  batchSize?: number;
}

/**
 * The time a live session writes: `now`, but never later than the clock, so
 * that a sweep run with --now in the future (testing) writes no entry that
 * would outlive its session by that much.
 */
export const liveTime = (now: number): number => Math.min(now, unixNow());

/**
 * Removes dated entries older than the timeout. The scan reads the published
 * file without a lock; removals happen in batches, each under the lock and
 * each re-checking the entry, so a login recorded meanwhile is never lost and
 * a login never waits for more than one batch.
 */
export function sweepMap(s: MapSettings, o: SweepOptions): SweepReport {
  const cutoff = o.now - s.timeoutSeconds;
  const report: SweepReport = { removed: [], kept: 0, refreshed: 0, permanent: 0, future: [] };
  const live = o.live ?? [];
  // Logins left queued (a writer killed mid-way, a burst that outlasted
  // lock_timeout_ms) and live sessions go in first, in one write: nothing
  // stays queued past a sweep, and a live session's entry is fresh.
  if (!o.dryRun && (live.length > 0 || readQueued(s).length > 0)) {
    updateMap(
      s,
      (db) => {
        const at = liveTime(o.now);
        let changed = false;
        for (const a of live) changed = applyLogin(db, a.keys, at) || changed;
        return changed;
      },
      false,
    );
  }
  const liveNow = new Set(live.map((a) => a.text));
  const entries = readEntries(s);
  const expired: RelayEntry[] = [];
  for (const e of entries) {
    if (e.time === null) report.permanent++;
    else if (liveNow.has(e.address)) {
      // Kept whatever its time or --now says: its session is live.
      report.kept++;
      report.refreshed++;
    } else if (e.time < cutoff) expired.push(e);
    else {
      report.kept++;
      if (e.time > o.now) report.future.push(e);
    }
  }
  if (o.dryRun) {
    report.removed = expired;
    return report;
  }
  let size = o.batchSize ?? FIRST_BATCH;
  for (let i = 0; i < expired.length;) {
    if (i > 0) letWaitersIn();
    const batch = expired.slice(i, i + size);
    i += batch.length;
    const started = performance.now();
    updateMap(
      s,
      (db) => {
        let changed = false;
        for (const e of batch) {
          // Both keys of an IPv6 address, even if the scan saw only one; an
          // IPv4 address (no ':') has just its own.
          const keys = e.address.includes(':')
            ? [...new Set([...e.keys, ...(addressOfKey(e.address)?.keys ?? [])])]
            : e.keys;
          const encoded = keys.map(enc);
          const current = encoded.map((k) => db.get(k)?.toString('latin1'));
          if (current.every((v) => v === undefined)) continue; // removed meanwhile
          const stillExpired = current.every((v) => {
            const c = v === undefined ? undefined : classifyValue(v);
            return c === undefined || c.kind === 'invalid' || (c.kind === 'dated' && c.time < cutoff);
          });
          if (!stillExpired) {
            report.kept++;
            continue;
          }
          for (const k of encoded) db.del(k);
          report.removed.push(e);
          changed = true;
        }
        return changed;
      },
      false,
    );
    if (o.batchSize === undefined) {
      const took = Math.max(1, performance.now() - started);
      size = Math.min(200_000, Math.max(500, Math.round((size * BATCH_TARGET_MS) / took)));
    }
  }
  return report;
}

/** What the shared set says of an address: a login time, permanent (null), or gone (undefined). */
export interface MirroredEntry {
  addr: ClientAddress;
  time: number | null | undefined;
}

/**
 * Brings the map in line with the shared set (poprelayd's mirror), in one
 * write with whatever is queued. Each entry is set as the engine has it (a
 * dated entry never moves back in time) or removed when gone; `complete`
 * means `entries` is the whole set, so that every other address is removed
 * too. Returns how many addresses it changed.
 */
export function mirrorEntries(s: MapSettings, entries: readonly MirroredEntry[], complete: boolean): number {
  let changed = 0;
  updateMap(s, (db) => {
    const wanted = new Map(entries.map((e) => [e.addr.text, e]));
    const remove = (keys: readonly string[]): boolean => keys.map((k) => db.del(enc(k))).some((d) => d);
    if (complete) {
      // Collected first: libdb's scan must not see its file change under it.
      const stale = new Map<string, string[]>();
      // A new walk: opening the copy already looked at its first record.
      for (let batch = db.scan(4096, true); batch !== null; batch = db.scan(4096)) {
        for (const [k] of unpackRecords(batch)) {
          const key = k.toString('latin1');
          const text = addressOfKey(key)?.text;
          if (text !== undefined && !wanted.has(text)) stale.set(text, [...(stale.get(text) ?? []), key]);
        }
      }
      for (const keys of stale.values()) if (remove(keys)) changed++;
    }
    for (const e of entries) {
      const done =
        e.time === undefined
          ? remove(e.addr.keys)
          : e.time === null
            ? setPermanent(db, e.addr.keys)
            : applyLogin(db, e.addr.keys, e.time);
      if (done) changed++;
    }
    return changed > 0;
  });
  return changed;
}

/** Marks keys permanent ("OK") unless they already are. */
function setPermanent(db: Database, keys: readonly string[]): boolean {
  let changed = false;
  for (const key of keys) {
    const old = db.get(enc(key));
    if (old !== null && classifyValue(old.toString('latin1')).kind === 'permanent') continue;
    db.put(enc(key), enc('OK'));
    changed = true;
  }
  return changed;
}
