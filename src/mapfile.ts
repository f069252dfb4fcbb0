// The map as a file: how poprelay opens, checks, locks, copies and
// publishes it (docs/design.md). A published map file is never modified.
// A writer queues on a lock file beside the map, takes flock(LOCK_EX) on the
// live file (as makemap and postmap do), copies it, applies every queued
// login and its own change to the copy, fsyncs it and renames it over the
// live name. A writer killed at any point leaves the old file intact and
// the queue as it was; a reader (sendmail, Postfix, Exim, which takes no
// lock at all) only ever opens a complete file, and needs no lock.
//
// The map's directory belongs to the hook's user, so every open here goes
// through safefs.ts: no links followed, no FIFO waited on, libdb pointed at
// the descriptor and not at the name (docs/security.md).

import {
  closeSync,
  fchownSync,
  linkSync,
  lstatSync,
  readSync,
  renameSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { dirname } from 'node:path';

import { flock, openDatabase, unpackRecords, type Database } from './bdb.js';
import type { MapSettings } from './config.js';
import { errnoCode, isPoprelayError } from './errors.js';
import {
  lockTimeoutError,
  mapError,
  mapMissingError,
  nulKeysError,
  translated,
  typeMismatchError,
} from './map-errors.js';
import { readQueue, removeQueued, type QueuedLogin } from './queue.js';
import { createExclusive, fdPath, openRegular, syncDirectory } from './safefs.js';
import { applyLogin } from './values.js';

const SCAN_BATCH = 4096;
const COPY_CHUNK = 1 << 20;
/** What a writer was doing when building its copy failed: "cannot <this> <map>: ...". */
const writingCopyOf = (path: string): string => `write a new copy of the map in ${dirname(path)} for`;

const tmpPath = (path: string): string => `${path}.poprelay-tmp`;
const lockPath = (path: string): string => `${path}.lock`;

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // never created, or already gone
  }
}

/**
 * libdb on an open descriptor: the configured type and, for writers,
 * NUL-free keys. Writers look at the first record only (a map made with
 * `makemap -N` has a NUL on every key); readers check every key as they go.
 */
function openDb(s: MapSettings, fd: number, readonly: boolean): Database {
  const db = openDatabase(fdPath(fd), { type: 'unknown', readonly });
  try {
    if (db.type !== s.type) throw typeMismatchError(s.path, db.type, s.type);
    if (!readonly) {
      const first = db.scan(1);
      for (const [key] of first === null ? [] : unpackRecords(first)) {
        if (key[key.length - 1] === 0) throw nulKeysError(s.path);
      }
    }
    return db;
  } catch (e) {
    closeDb(db);
    throw e;
  }
}

/** For handles whose contents no longer matter (read-only, or a copy being discarded). */
function closeDb(db: Database): void {
  try {
    db.close();
  } catch {
    // nothing worth keeping depends on it
  }
}

/** Opens the published map read-only and runs `read` on it. */
function withPublished<T>(s: MapSettings, read: (db: Database) => T): T {
  let fd: number;
  try {
    fd = openRegular(s.path).fd;
  } catch (e) {
    throw errnoCode(e) === 'ENOENT' ? mapMissingError(s.path) : mapError(e, s.path, 'read map');
  }
  try {
    const db = translated(s.path, 'read map', () => openDb(s, fd, true));
    try {
      return translated(s.path, 'read map', () => read(db));
    } finally {
      closeDb(db);
    }
  } finally {
    closeSync(fd);
  }
}

/** All records of the map as [key, value] text, in hash order. */
export function readRecords(s: MapSettings): Array<[string, string]> {
  return withPublished(s, (db) => {
    const records: Array<[string, string]> = [];
    for (let batch = db.scan(SCAN_BATCH); batch !== null; batch = db.scan(SCAN_BATCH)) {
      for (const [k, v] of unpackRecords(batch)) {
        if (k[k.length - 1] === 0) throw nulKeysError(s.path);
        records.push([k.toString('latin1'), v.toString('latin1')]);
      }
    }
    return records;
  });
}

/** The values of `keys` in the published map (null where absent); null when there is no map. */
export function lookupKeys(s: MapSettings, keys: readonly string[]): Array<string | null> | null {
  try {
    return withPublished(s, (db) => keys.map((k) => db.get(Buffer.from(k, 'latin1'))?.toString('latin1') ?? null));
  } catch (e) {
    if (isPoprelayError(e, 'ERR_MAP_MISSING')) return null;
    throw e;
  }
}

/**
 * Opens the writers' lock file beside the map, creating it if needed. It is
 * never replaced, so a waiter blocks in flock() until the kernel wakes it;
 * a waiter on the map itself would find it renamed away after every write
 * (measured: a record waited 1.5 s behind a sweep of a 1,000,000-entry map).
 * Read-only, so that root and the hook's user can share it whoever made it.
 */
function openLockFile(s: MapSettings): number {
  const path = lockPath(s.path);
  return translated(s.path, `lock (${path})`, () => {
    try {
      return openRegular(path).fd;
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
    try {
      return createExclusive(path, 0o644); // not the hook's umask 0077: root's writers share it
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw e;
      return openRegular(path).fd; // another writer made it first
    }
  });
}

/** Takes the writers' lock, waiting until `deadline` (no wait when it has passed); null when still held elsewhere. */
function takeWriterLock(s: MapSettings, deadline: number): number | null {
  const fd = openLockFile(s);
  let held: boolean;
  try {
    held = flock(fd, 'ex', Math.max(0, deadline - Date.now()));
  } catch (e) {
    closeSync(fd);
    throw mapError(e, s.path, 'lock');
  }
  if (held) return fd;
  closeSync(fd); // see flock(): an abandoned wait must not share this fd
  return null;
}

/**
 * Creates an empty map while holding the writers' lock: under the private
 * name first, made with O_EXCL and filled by libdb through its descriptor,
 * then hard-linked into place, so that the live path never holds a partial
 * file (link fails if makemap created the map meanwhile; theirs is kept).
 */
function createMap(s: MapSettings): void {
  const tmp = tmpPath(s.path);
  translated(
    s.path,
    'create map',
    () => {
      unlinkQuietly(tmp); // left by a killed writer; only a lock holder uses this name
      const fd = createExclusive(tmp, s.mode);
      try {
        openDatabase(fdPath(fd), { type: s.type, readonly: false, create: true, mode: s.mode }).close(); // close fsyncs
        try {
          linkSync(tmp, s.path);
          syncDirectory(dirname(s.path));
        } catch (e) {
          if (errnoCode(e) !== 'EEXIST') throw e;
        }
      } finally {
        closeSync(fd);
        unlinkQuietly(tmp);
      }
    },
    'io',
  );
}

interface LiveMap {
  fd: number;
  st: Stats;
}

/**
 * Opens the live map and takes flock(LOCK_EX) on it, the lock makemap and
 * postmap also take. The lock is only good if the path still names the
 * locked file (another program may have replaced it): otherwise retry,
 * until `deadline`.
 */
function lockLive(s: MapSettings, createIfMissing: boolean, deadline: number): LiveMap {
  for (;;) {
    let live: LiveMap;
    try {
      live = openRegular(s.path);
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw mapError(e, s.path, 'open map');
      if (!createIfMissing) throw mapMissingError(s.path);
      if (Date.now() > deadline) throw lockTimeoutError(s.path, s.lockTimeoutMs);
      createMap(s);
      continue;
    }
    try {
      if (!flock(live.fd, 'ex', Math.max(0, deadline - Date.now()))) throw lockTimeoutError(s.path, s.lockTimeoutMs);
      const now = lstatSync(s.path, { throwIfNoEntry: false });
      if (now !== undefined && now.ino === live.st.ino && now.dev === live.st.dev) return live;
    } catch (e) {
      closeSync(live.fd);
      throw mapError(e, s.path, 'lock map');
    }
    closeSync(live.fd);
    if (Date.now() > deadline) throw lockTimeoutError(s.path, s.lockTimeoutMs);
  }
}

/** Copies the locked live file, by descriptor, into a new private file with its mode (and, for root, owner). */
function copyLive(s: MapSettings, live: LiveMap): number {
  const tmp = tmpPath(s.path);
  unlinkQuietly(tmp); // left by a killed writer; we hold the lock, so it is no one's
  const fd = createExclusive(tmp, live.st.mode & 0o7777);
  try {
    if (process.geteuid?.() === 0) fchownSync(fd, live.st.uid, live.st.gid);
    const buf = Buffer.allocUnsafe(COPY_CHUNK);
    for (let pos = 0; ;) {
      const n = readSync(live.fd, buf, 0, COPY_CHUNK, pos);
      if (n === 0) break;
      for (let w = 0; w < n;) w += writeSync(fd, buf, w, n - w, pos + w);
      pos += n;
    }
    return fd;
  } catch (e) {
    closeSync(fd);
    unlinkQuietly(tmp);
    throw e;
  }
}

/** Applies queued logins to the copy; those older than the timeout are dropped. */
function applyQueued(db: Database, queued: readonly QueuedLogin[], cutoff: number): boolean {
  let changed = false;
  for (const q of queued) {
    if (q.time >= cutoff) changed = applyLogin(db, q.address.keys, q.time) || changed;
  }
  return changed;
}

/**
 * One copy-change-fsync-rename, with the writers' lock held: every queued
 * login plus `change` (which edits the copy and says whether it changed
 * anything). Returns how many queued logins it took off the queue; with no
 * change and an empty queue it does nothing at all.
 */
function commit(
  s: MapSettings,
  change: ((db: Database) => boolean) | null,
  createIfMissing: boolean,
  deadline: number,
): number {
  const queued = translated(s.path, 'read the login queue of', () => readQueue(s.path).logins);
  if (change === null && queued.length === 0) return 0;
  const live = lockLive(s, createIfMissing, deadline);
  const tmp = tmpPath(s.path);
  let published = false;
  try {
    const fd = translated(s.path, writingCopyOf(s.path), () => copyLive(s, live), 'io');
    let changed: boolean;
    try {
      const db = translated(s.path, 'open map', () => openDb(s, fd, false));
      try {
        const cutoff = Math.floor(Date.now() / 1000) - s.timeoutSeconds;
        changed = applyQueued(db, queued, cutoff);
        if (change !== null) changed = change(db) || changed;
      } catch (e) {
        closeDb(db);
        throw mapError(e, s.path, writingCopyOf(s.path), 'io');
      }
      // close() flushes and fsyncs the copy; one that did not reach the disk is never published.
      translated(s.path, writingCopyOf(s.path), () => db.close(), 'io');
    } finally {
      closeSync(fd);
    }
    if (changed) {
      translated(s.path, 'replace', () => renameSync(tmp, s.path));
      published = true;
      try {
        syncDirectory(dirname(s.path));
      } catch {
        // The rename happened; only its durability is in doubt, and the next write retries it.
      }
    }
  } finally {
    if (!published) unlinkQuietly(tmp);
    closeSync(live.fd);
  }
  // Only now, with the logins in the published map (or older than what it holds).
  translated(s.path, 'clear applied logins from the queue of', () => removeQueued(s.path, queued));
  return queued.length;
}

/** How long a writer holds the lock for others' work (queued logins, a sweep batch) before it lets waiters in. */
export const HOLD_TARGET_MS = 200;

/**
 * Time for a writer the kernel woke when the lock was let go to take it: a
 * writer that relocked at once could win every race, and an administrator's
 * command waiting behind a storm of logins would time out.
 */
export function letWaitersIn(): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3);
}

/**
 * Applies the queue, round after round, while logins keep arriving, for at
 * most HOLD_TARGET_MS; `deadline` bounds the waits for the map's own lock.
 */
function drainLocked(s: MapSettings, deadline: number): void {
  const holdUntil = Math.min(deadline, Date.now() + HOLD_TARGET_MS);
  while (commit(s, null, true, deadline) > 0 && Date.now() < holdUntil);
}

/** What became of the queue: applied by this process, or left to the writer that holds the lock. */
export type QueueOutcome = 'applied' | 'busy';

/**
 * Applies every queued login without waiting for the lock: a writer that
 * holds it applies them, since every writer looks at the queue again after
 * it lets go (here, at the top of the loop). That closes the race: a login
 * queued before this process's try is seen by whoever held the lock then.
 * It holds the lock in turns of HOLD_TARGET_MS and goes on for at most
 * lock_timeout_ms; what is still queued then goes in with the next writer
 * or the sweep.
 */
export function applyQueue(s: MapSettings): QueueOutcome {
  const deadline = Date.now() + s.lockTimeoutMs;
  for (let first = true; ; first = false) {
    if (translated(s.path, 'read the login queue of', () => readQueue(s.path).logins.length) === 0) return 'applied';
    if (!first) letWaitersIn();
    const lock = takeWriterLock(s, 0);
    if (lock === null) return 'busy';
    try {
      drainLocked(s, deadline);
    } finally {
      closeSync(lock);
    }
    if (Date.now() >= deadline) return 'busy';
  }
}

/**
 * The one way poprelay changes a map. `change` edits a private copy and
 * returns whether it changed anything; only then is the copy published.
 * Queued logins are applied in the same copy. All of it, waits included,
 * within lock_timeout_ms.
 */
export function updateMap(s: MapSettings, change: (db: Database) => boolean, createIfMissing = true): void {
  // Checked before the lock file is made, so that a mistyped dbfile leaves
  // no stray file; lockLive checks again under the lock.
  if (!createIfMissing && lstatSync(s.path, { throwIfNoEntry: false }) === undefined) throw mapMissingError(s.path);
  const deadline = Date.now() + s.lockTimeoutMs;
  const lock = takeWriterLock(s, deadline);
  if (lock === null) throw lockTimeoutError(s.path, s.lockTimeoutMs);
  try {
    commit(s, change, createIfMissing, deadline);
    drainLocked(s, deadline);
  } finally {
    closeSync(lock);
  }
  try {
    applyQueue(s); // logins queued while we held the lock
  } catch {
    // Our change is published; those logins stay queued for the next writer or the sweep.
  }
}

/**
 * Creates the map if it does not exist; otherwise only checks that poprelay
 * can use it. Never changes an existing map. Returns whether it created one.
 */
export function ensureMap(s: MapSettings): boolean {
  const lock = takeWriterLock(s, Date.now() + s.lockTimeoutMs);
  if (lock === null) throw lockTimeoutError(s.path, s.lockTimeoutMs);
  try {
    if (lstatSync(s.path, { throwIfNoEntry: false }) !== undefined) {
      readRecords(s);
      return false;
    }
    createMap(s);
    readRecords(s); // what is there now is usable (or says why not)
    return true;
  } finally {
    closeSync(lock);
  }
}
