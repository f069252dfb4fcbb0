// The relay map and its discipline (README, "Design"):
//
// - Keys are lowercase without a trailing NUL (as `makemap hash` writes);
//   a dated value is the decimal Unix time of the last login; any other value
//   (such as "OK" written by hand) marks a permanent entry.
// - A published map file is never modified. A writer queues on a lock file
//   beside the map, takes flock(LOCK_EX) on the live file (as makemap and
//   postmap do), copies it, changes the copy, fsyncs it and renames it over
//   the live name. A writer killed at any point leaves the old file intact,
//   and a reader (sendmail, Postfix, Exim, which takes no lock at all) only
//   ever opens a complete file.
// - Readers therefore need no lock.

import {
  closeSync,
  constants as fsConstants,
  copyFileSync,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  linkSync,
  openSync,
  renameSync,
  statSync,
  unlinkSync,
  type Stats,
} from 'node:fs';
import { userInfo } from 'node:os';
import { dirname } from 'node:path';

import { addressOfKey, type ClientAddress } from './address.js';
import { flock, openDatabase, unpackRecords, type Database, type DbType, type NativeError } from './bdb.js';
import type { Config } from './config.js';
import { errnoCode, PoprelayError } from './errors.js';

export interface MapSettings {
  path: string;
  type: DbType;
  lockTimeoutMs: number;
  /** Mode of a map created by poprelay. */
  mode: number;
}

export function mapSettings(cfg: Config): MapSettings {
  return { path: cfg.dbfile, type: cfg.dbtype, lockTimeoutMs: cfg.lockTimeoutMs, mode: cfg.mapMode };
}

/** One address (or other key) in the map; an IPv6 login's two keys form one entry. */
export interface RelayEntry {
  /** IPv4, compressed IPv6, or the raw key when it is not an address. */
  address: string;
  keys: string[];
  /** Last login as Unix seconds; null for a permanent entry. */
  time: number | null;
}

const DATED = /^[0-9]+$/;
const SCAN_BATCH = 4096;
/** A few of the waiters' 1 ms polls, and the reopen after a rename. */
const BATCH_PAUSE_MS = 3;
/** How long one sweep batch should hold the lock. */
const BATCH_TARGET_MS = 200;
const FIRST_BATCH = 2000;

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function currentUser(): string {
  try {
    const u = userInfo();
    return `${u.username} (uid ${u.uid})`;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}

function tmpPath(path: string): string {
  return `${path}.poprelay-tmp`;
}

/**
 * Translates an OS or libdb failure on `path` into the error an
 * administrator can act on. A failure libdb does not give an errno for
 * means a damaged map when reading one, and an I/O problem when writing the
 * copy (the live map is then untouched).
 */
function mapError(e: unknown, path: string, doing: string, unknown: 'corrupt' | 'io' = 'corrupt'): PoprelayError {
  if (e instanceof PoprelayError) return e;
  const code = errnoCode(e);
  const detail = (e as NativeError).detail ?? (e instanceof Error ? e.message : String(e));
  const dir = dirname(path);
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return new PoprelayError(
        'ERR_MAP_PERMISSION',
        `cannot ${doing} ${path} as user ${currentUser()}: permission denied. ` +
          `Writers need read access to the map and write access to its directory ${dir} ` +
          `(poprelay renames a new copy into place); readers need read access to the map.`,
        { cause: e },
      );
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EROFS':
    case 'EIO':
    case 'EMFILE':
    case 'ENFILE':
      return ioError(e, path, doing, `${detail} (${code})`);
    case 'ENOENT':
      return new PoprelayError('ERR_MAP_MISSING', `cannot ${doing} ${path}: it does not exist`, { cause: e });
    default:
      if (unknown === 'io') return ioError(e, path, doing, code === undefined ? detail : `${detail} (${code})`);
      return new PoprelayError(
        'ERR_MAP_CORRUPT',
        `cannot ${doing} ${path}: it is not a readable Berkeley DB file (libdb: ${detail}). ` +
          `poprelay left it untouched; check it with db5.3_verify ${path} and see "Recovering a damaged map" in the README.`,
        { cause: e },
      );
  }
}

function ioError(e: unknown, path: string, doing: string, what: string): PoprelayError {
  return new PoprelayError('ERR_MAP_IO', `cannot ${doing} ${path}: ${what}. The map was left as it was.`, { cause: e });
}

function checkType(db: Database, s: MapSettings): void {
  if (db.type !== s.type) {
    throw new PoprelayError(
      'ERR_MAP_TYPE',
      `map ${s.path} is a Berkeley DB ${db.type} database, but poprelay is configured for dbtype = ${s.type}. ` +
        `Set dbtype = ${db.type} in poprelay.ini, or rebuild the map as ${s.type}; poprelay left it untouched.`,
    );
  }
}

function nulKeysError(path: string): PoprelayError {
  return new PoprelayError(
    'ERR_MAP_NUL_KEYS',
    `map ${path} has keys ending in a NUL byte (made by makemap -N?). sendmail and Postfix stick to the first ` +
      `key form that matches, so poprelay will not mix its NUL-free keys into it; rebuild it without -N ` +
      `(db5.3_dump, strip the NULs, makemap hash). poprelay left it untouched.`,
  );
}

/**
 * Opens a map file and checks that it is one poprelay may use: the
 * configured type, and (for writers, cheaply) keys without a NUL.
 */
function openMapFile(s: MapSettings, file: string, readonly: boolean): Database {
  const db = openDatabase(file, { type: 'unknown', readonly });
  try {
    checkType(db, s);
    if (!readonly) {
      const first = db.scan(1);
      for (const [key] of first === null ? [] : unpackRecords(first)) {
        if (key[key.length - 1] === 0) throw nulKeysError(s.path);
      }
    }
    return db;
  } catch (e) {
    closeQuietly(db);
    throw e;
  }
}

/** For handles whose contents no longer matter (read-only, or a copy being discarded). */
function closeQuietly(db: Database): void {
  try {
    db.close();
  } catch {
    // nothing worth keeping depends on it
  }
}

export function isPermanentValue(value: string): boolean {
  return !DATED.test(value);
}

/** All records of the map as [key, value] text, in hash order. */
export function readRecords(s: MapSettings): Array<[string, string]> {
  let db: Database;
  try {
    db = openMapFile(s, s.path, true);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') {
      throw new PoprelayError(
        'ERR_MAP_MISSING',
        `map ${s.path} does not exist. It is created by the first recorded login or by "poprelay add"; ` +
          `check dbfile in poprelay.ini.`,
      );
    }
    throw mapError(e, s.path, 'read map');
  }
  const records: Array<[string, string]> = [];
  try {
    for (let batch = db.scan(SCAN_BATCH); batch !== null; batch = db.scan(SCAN_BATCH)) {
      for (const [k, v] of unpackRecords(batch)) {
        if (k[k.length - 1] === 0) throw nulKeysError(s.path);
        records.push([k.toString('latin1'), v.toString('latin1')]);
      }
    }
  } catch (e) {
    throw mapError(e, s.path, 'read map');
  } finally {
    closeQuietly(db);
  }
  return records;
}

/** Groups records into entries: an IPv6 address's two keys become one entry. */
export function groupEntries(records: Iterable<[string, string]>): RelayEntry[] {
  const byAddress = new Map<string, RelayEntry>();
  for (const [key, value] of records) {
    // An IPv4 key is its own display text; only IPv6 keys (with ':') pair up.
    const address = key.includes(':') ? (addressOfKey(key)?.text ?? key) : key;
    const time = isPermanentValue(value) ? null : Number(value);
    const e = byAddress.get(address);
    if (e === undefined) {
      byAddress.set(address, { address, keys: [key], time });
    } else {
      e.keys.push(key);
      // Permanent wins; otherwise the newer time counts.
      e.time = e.time === null || time === null ? null : Math.max(e.time, time);
    }
  }
  return [...byAddress.values()];
}

export function readEntries(s: MapSettings): RelayEntry[] {
  return groupEntries(readRecords(s));
}

/**
 * Creates an empty map without a moment where a partial file stands at the
 * live path: built under a private name, then hard-linked into place (link
 * fails if another process created the map first, and theirs is kept).
 */
function createMap(s: MapSettings): void {
  const tmp = `${s.path}.poprelay-new-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    const db = openDatabase(tmp, { type: s.type, readonly: false, create: true, mode: s.mode });
    db.close();
    const fd = openSync(tmp, 'r');
    try {
      fchmodSync(fd, s.mode); // Dovecot runs the hook with umask 0077
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(tmp, s.path);
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw e;
    }
  } catch (e) {
    throw mapError(e, s.path, 'create map');
  } finally {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
  }
}

/**
 * Creates the map if it does not exist; otherwise only checks that poprelay
 * can use it. Never changes an existing map. Returns whether it created one.
 */
export function ensureMap(s: MapSettings): boolean {
  try {
    readRecords(s);
    return false;
  } catch (e) {
    if (!(e instanceof PoprelayError) || e.code !== 'ERR_MAP_MISSING') throw e;
  }
  createMap(s);
  return true;
}

/**
 * Opens the live map for writing and takes flock(LOCK_EX) on it, the lock
 * makemap and postmap also take. Because writers replace the file, the lock
 * is only good if the path still names the locked file; otherwise retry.
 */
function lockTimeout(s: MapSettings): PoprelayError {
  return new PoprelayError(
    'ERR_MAP_LOCK_TIMEOUT',
    `map ${s.path} stayed locked by another process for more than lock_timeout_ms = ${s.lockTimeoutMs} ms; ` +
      `find the holder with: fuser -v ${s.path} ${s.path}.lock`,
  );
}

/**
 * poprelay's writers queue on a lock file beside the map, which is never
 * replaced. A waiter polling the map itself finds it renamed away after
 * every write and must reopen and race again (measured: a record waited
 * 1.5 s behind a sweep of a 1,000,000-entry map). Opened read-only, so that
 * root and the hook's user can share it whoever created it.
 */
function lockWriters(s: MapSettings, deadline: number): number {
  const path = `${s.path}.lock`;
  let fd: number;
  try {
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
      fd = openSync(path, 'a');
      fchmodSync(fd, 0o644); // not the hook's umask 0077: root's writers share it
    }
  } catch (e) {
    throw mapError(e, s.path, `write a new copy of the map in ${dirname(s.path)} for`);
  }
  if (!flock(fd, 'ex', Math.max(0, deadline - Date.now()))) {
    closeSync(fd);
    throw lockTimeout(s);
  }
  return fd;
}

function lockLive(s: MapSettings, createIfMissing: boolean, deadline: number): { fd: number; st: Stats } {
  for (;;) {
    let fd: number;
    try {
      fd = openSync(s.path, 'r');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT' && createIfMissing) {
        createMap(s);
        continue;
      }
      if (errnoCode(e) === 'ENOENT') {
        throw new PoprelayError('ERR_MAP_MISSING', `map ${s.path} does not exist; check dbfile in poprelay.ini.`);
      }
      throw mapError(e, s.path, 'open map');
    }
    try {
      if (!flock(fd, 'ex', Math.max(0, deadline - Date.now()))) throw lockTimeout(s);
      const st = fstatSync(fd);
      let live: Stats | undefined;
      try {
        live = statSync(s.path);
      } catch {
        live = undefined;
      }
      if (live !== undefined && live.ino === st.ino && live.dev === st.dev) return { fd, st };
    } catch (e) {
      closeSync(fd);
      throw mapError(e, s.path, 'lock map');
    }
    closeSync(fd); // replaced while we waited: lock the new file
  }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * The one way poprelay changes a map. `change` edits a private copy and
 * returns whether it changed anything; only then is the copy published.
 * All of it, waits included, within lock_timeout_ms.
 */
export function updateMap(s: MapSettings, change: (db: Database) => boolean, createIfMissing = true): void {
  const deadline = Date.now() + s.lockTimeoutMs;
  const queue = lockWriters(s, deadline);
  try {
    updateLocked(s, change, createIfMissing, deadline);
  } finally {
    closeSync(queue);
  }
}

function updateLocked(s: MapSettings, change: (db: Database) => boolean, createIfMissing: boolean, deadline: number): void {
  const { fd, st } = lockLive(s, createIfMissing, deadline);
  const tmp = tmpPath(s.path);
  let published = false;
  try {
    try {
      unlinkSync(tmp); // left by a writer that was killed; we hold the lock, so it is no one's
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw mapError(e, tmp, 'remove stale copy');
    }
    let db: Database;
    try {
      copyFileSync(s.path, tmp, fsConstants.COPYFILE_EXCL);
      const tfd = openSync(tmp, 'r');
      try {
        fchmodSync(tfd, st.mode & 0o7777);
        if (process.getuid?.() === 0) fchownSync(tfd, st.uid, st.gid);
      } finally {
        closeSync(tfd);
      }
    } catch (e) {
      throw mapError(e, s.path, `write a new copy of the map in ${dirname(s.path)} for`, 'io');
    }
    try {
      db = openMapFile(s, tmp, false);
    } catch (e) {
      throw mapError(e, s.path, 'open map');
    }
    let changed: boolean;
    try {
      changed = change(db);
    } catch (e) {
      closeQuietly(db);
      throw mapError(e, s.path, `write a new copy of the map in ${dirname(s.path)} for`, 'io');
    }
    try {
      db.close(); // flushes and fsyncs the copy; one that did not reach the disk is never published
    } catch (e) {
      throw mapError(e, s.path, `write a new copy of the map in ${dirname(s.path)} for`, 'io');
    }
    if (!changed) return;
    try {
      renameSync(tmp, s.path);
      published = true;
      fsyncDir(dirname(s.path));
    } catch (e) {
      if (!published) throw mapError(e, s.path, 'replace');
      // The rename happened; only its durability is in doubt, and the next write retries it.
    }
  } finally {
    if (!published) {
      try {
        unlinkSync(tmp);
      } catch {
        // never created
      }
    }
    closeSync(fd); // releases the lock
  }
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
    for (const key of addr.keys) {
      const old = db.get(enc(key));
      if (old !== null && isPermanentValue(old.toString('latin1'))) continue;
      db.put(enc(key), value);
      result = 'recorded';
    }
    return result === 'recorded';
  });
  return result;
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
  permanent: number;
  /** Dated entries whose time is ahead of now; kept as fresh. */
  future: RelayEntry[];
}

export interface SweepOptions {
  now: number;
  timeoutSeconds: number;
  dryRun?: boolean;
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
 * Removes dated entries older than the timeout. The scan reads the published
 * file without a lock; removals happen in batches, each under the lock and
 * each re-checking the entry, so a login recorded meanwhile is never lost and
 * a login never waits for more than one batch.
 */
export function sweepMap(s: MapSettings, o: SweepOptions): SweepReport {
  const cutoff = o.now - o.timeoutSeconds;
  const entries = readEntries(s);
  const report: SweepReport = { removed: [], kept: 0, permanent: 0, future: [] };
  const expired: RelayEntry[] = [];
  for (const e of entries) {
    if (e.time === null) report.permanent++;
    else if (e.time < cutoff) expired.push(e);
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
  for (let i = 0; i < expired.length; ) {
    // Let waiting writers in between batches. A waiter polls the file it
    // found; after each rename it must reopen the new one, so a sweep that
    // relocked at once would starve it (measured: a writer timed out).
    if (i > 0) sleepMs(BATCH_PAUSE_MS);
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
          const keys = e.address.includes(':') ? [...new Set([...e.keys, ...(addressOfKey(e.address)?.keys ?? [])])] : e.keys;
          const encoded = keys.map(enc);
          const current = encoded.map((k) => db.get(k)?.toString('latin1'));
          if (current.every((v) => v === undefined)) continue; // removed meanwhile
          const stillExpired = current.every((v) => v === undefined || (!isPermanentValue(v) && Number(v) < cutoff));
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
