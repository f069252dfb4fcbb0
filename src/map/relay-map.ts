// The relay map's meaning (docs/design.md): keys are lowercase without a
// trailing NUL (as `makemap hash` writes); values are as values.ts says. An
// IPv6 login writes two keys, one entry. How the file is locked, copied and
// published, and how logins are queued for it, is file.ts's and
// queue.ts's job.

import { addressOfKey, type ClientAddress } from '../address.js';
import type { MapSettings } from '../config.js';
import { applyQueue, lookupKeys, readRecords, updateMap, updateMapInSteps, withPublished } from './file.js';
import { PoprelayError } from '../errors.js';
import { mapError, nulKeysError, translated } from './errors.js';
import { enqueueLogin, readQueue, type QueuedLogin } from './queue.js';
import { applyLogin, classifyValue, entryTime } from './values.js';
import {
  EntryFate,
  packEntry,
  unpackEntries,
  unpackRecords,
  withoutEntries,
  type Database,
  type SweepScan,
} from '../native.js';
import { unixNow } from '../timefmt.js';

export { ensureMap, readRecords, updateMap } from './file.js';

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
 * Applies the queue without waiting for the lock (file.ts's applyQueue):
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
  /** Entries removed (or, in a dry run, that would be); empty unless `list` (the default). */
  removed: RelayEntry[];
  /** How many entries were removed (or would be), listed or not. */
  removedCount: number;
  kept: number;
  /** Dated entries kept because their address has a live session (each written the time of the sweep, at most the clock's). */
  refreshed: number;
  permanent: number;
  /** Dated entries whose time is ahead of now; kept as fresh. Empty unless `list`. */
  future: RelayEntry[];
  /** Copies of the map published: one, more only when writers waited; none in a dry run or when nothing changed. */
  copies: number;
}

export interface SweepOptions {
  now: number;
  dryRun?: boolean;
  /** Addresses with a live POP3/IMAP session: each counts as a login now. */
  live?: readonly ClientAddress[];
  /** List the removed and future entries (default true); the counts are there either way. */
  list?: boolean;
  /**
   * Entries removed per batch, each batch one published copy, fixed (tests:
   * many batches to kill a sweep between). By default the whole sweep is
   * one batch, cut only when a writer waits (file.ts, updateMapInSteps).
   */
  batchSize?: number;
}

/**
 * The time a live session writes: `now`, but never later than the clock, so
 * that a sweep run with --now in the future (testing) writes no entry that
 * would outlive its session by that much.
 */
export const liveTime = (now: number): number => Math.min(now, unixNow());

/** Entries removed per call into the addon: short enough to look for waiters often. */
const SWEEP_STEP = 4096;

/**
 * Removes dated entries older than the timeout. One walk of the published
 * file, without a lock and in the addon, picks the expired entries (only
 * odd keys and the addresses this sweep writes itself are decided here);
 * the removals then happen in a private copy under the lock, each entry
 * re-checked there, so a login recorded meanwhile is never lost. The copy
 * is published once, or once per batch when writers wait, so a login never
 * waits for more than one batch.
 */
export function sweepMap(s: MapSettings, o: SweepOptions): SweepReport {
  const cutoff = o.now - s.timeoutSeconds;
  const list = o.list ?? true;
  const live = o.live ?? [];
  const liveNow = new Set(live.map((a) => a.text));
  const report: SweepReport = {
    removed: [],
    removedCount: 0,
    kept: 0,
    refreshed: 0,
    permanent: 0,
    future: [],
    copies: 0,
  };
  const expired: RelayEntry[] = [];
  const decide = (e: RelayEntry): void => {
    if (e.time === null) report.permanent++;
    else if (liveNow.has(e.address)) {
      // Kept whatever its time or --now says: its session is live.
      report.kept++;
      report.refreshed++;
    } else if (e.time < cutoff) expired.push(e);
    else {
      report.kept++;
      if (e.time > o.now && list) report.future.push(e);
    }
  };
  // Live sessions, and logins left queued (a writer killed mid-way, a burst
  // that outlasted lock_timeout_ms), go into the sweep's own copy first:
  // nothing stays queued past a sweep, and a live session's entry is fresh.
  // Their entries are decided from that copy, the others from the walk.
  const touched = new Map(live.map((a) => [a.text, a]));
  if (!o.dryRun) for (const q of readQueued(s)) touched.set(q.address.text, q.address);
  const decideTouched = (db: Database): void => {
    for (const a of touched.values()) {
      const records: Array<[string, string]> = [];
      for (const key of a.keys) {
        const v = db.get(enc(key));
        if (v !== null) records.push([key, v.toString('latin1')]);
      }
      groupEntries(records).forEach(decide);
    }
  };
  // IPv4 keys the walk decided that are decided here after all, with their v4-mapped twin.
  const takenBack = new Set<string>();
  const takeBack = (r: SweepScan, key: string, value: string): void => {
    takenBack.add(key);
    const c = classifyValue(value);
    if (c.kind === 'permanent') r.permanent--;
    else if (c.kind === 'invalid' || c.time < cutoff) r.expiredCount--;
    else r.kept--;
  };
  const walk = withPublished(s, (db) => {
    const r = db.sweepScan(
      cutoff,
      o.now,
      [...touched.values()].flatMap((a) => a.keys.map(enc)),
      list,
    );
    if (r.nulKey) throw nulKeysError(s.path);
    for (const e of groupEntries(asText(unpackRecords(r.colon)))) {
      if (touched.has(e.address)) continue;
      // A v4-mapped key (::ffff:a.b.c.d, made by hand) is one entry with its
      // IPv4 address's key, which the walk decided on its own: taken back.
      const v4 = e.address.includes(':') ? null : db.get(enc(e.address));
      if (v4 === null) {
        decide(e);
        continue;
      }
      takeBack(r, e.address, v4.toString('latin1'));
      const records = e.keys.map((k): [string, string] => [k, db.get(enc(k))?.toString('latin1') ?? '']);
      groupEntries([...records, [e.address, v4.toString('latin1')]]).forEach(decide);
    }
    if (o.dryRun) decideTouched(db);
    return r;
  });
  if (takenBack.size > 0) walk.expired = withoutEntries(walk.expired, takenBack);
  report.kept += walk.kept;
  report.permanent += walk.permanent;
  if (list) {
    for (const [k, v] of unpackRecords(walk.future))
      if (!takenBack.has(k.toString('latin1'))) report.future.push(entryOf(k, v));
  }
  const listRemoved = (pack: Buffer, status: Buffer | null): void => {
    let i = 0;
    for (const [[k], v] of unpackEntries(pack)) {
      if (k !== undefined && (status === null || status[i] === EntryFate.removed)) report.removed.push(entryOf(k, v));
      i++;
    }
  };
  if (o.dryRun) {
    report.removedCount = walk.expiredCount + expired.length;
    if (list) {
      listRemoved(walk.expired, null);
      report.removed.push(...expired);
    }
    return report;
  }
  if (walk.expiredCount === 0 && expired.length === 0 && touched.size === 0 && readQueued(s).length === 0)
    return report;

  // The removals: the walk's pack, then the entries decided in JS (both
  // keys of an IPv6 address, even if the walk saw only one).
  const packs: Buffer[] = [walk.expired];
  const status: Buffer[] = [Buffer.alloc(walk.expiredCount)];
  let jsEntries: RelayEntry[] = [];
  const packDecided = (): void => {
    jsEntries = [...expired];
    const keysOf = (e: RelayEntry): string[] =>
      e.address.includes(':') ? [...new Set([...e.keys, ...(addressOfKey(e.address)?.keys ?? [])])] : e.keys;
    packs.push(Buffer.concat(jsEntries.map((e) => packEntry(keysOf(e).map(enc), enc(String(e.time))))));
    status.push(Buffer.alloc(jsEntries.length));
  };
  let p = 0;
  let offset = 0;
  let index = 0;
  report.copies = updateMapInSteps(s, {
    start: (db) => {
      const at = liveTime(o.now);
      let changed = false;
      for (const a of live) changed = applyLogin(db, a.keys, at) || changed;
      decideTouched(db);
      packDecided();
      return changed;
    },
    step: (db) => {
      const pack = packs[p];
      if (pack === undefined) return { done: true, changed: false };
      const r = db.removeExpired(pack, offset, o.batchSize ?? SWEEP_STEP, cutoff, status[p] ?? null, index);
      report.removedCount += r.removed;
      report.kept += r.kept;
      offset = r.offset;
      index += r.entries;
      if (offset >= pack.length) {
        p++;
        offset = 0;
        index = 0;
      }
      return { done: p >= packs.length, changed: r.removed > 0 };
    },
    ...(o.batchSize === undefined ? {} : { stepsPerBatch: 1 }),
  });
  if (list) {
    listRemoved(walk.expired, status[0] ?? null);
    jsEntries.forEach((e, i) => {
      if (status[1]?.[i] === EntryFate.removed) report.removed.push(e);
    });
  }
  return report;
}

function* asText(records: Iterable<[Buffer, Buffer]>): Generator<[string, string]> {
  for (const [k, v] of records) yield [k.toString('latin1'), v.toString('latin1')];
}

/** One key's entry as groupEntries makes it, for a listing. */
function entryOf(key: Buffer, value: Buffer): RelayEntry {
  const [e] = groupEntries([[key.toString('latin1'), value.toString('latin1')]]);
  if (e === undefined) throw new Error('unreachable: one record makes one entry');
  return e;
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
