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
  fstatSync,
  linkSync,
  lstatSync,
  readFileSync,
  readSync,
  renameSync,
  unlinkSync,
  writeSync,
  type BigIntStats,
  type Stats,
} from 'node:fs';
import { dirname } from 'node:path';

import { flock, openDatabase, unpackRecords, type Database } from '../native.js';
import type { MapSettings } from '../config.js';
import { errnoCode, isPoprelayError } from '../errors.js';
import { lockTimeoutError, mapError, mapMissingError, nulKeysError, translated, typeMismatchError } from './errors.js';
import { readQueue, removeQueued, type QueuedLogin } from './queue.js';
import { createExclusive, fdPath, openRegular, syncDirectory } from '../safefs.js';
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
function openDb(s: MapSettings, fd: number, readonly: boolean, cacheBytes = 0): Database {
  const db = openDatabase(fdPath(fd), { type: 'unknown', readonly, cacheBytes });
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
export function withPublished<T>(s: MapSettings, read: (db: Database) => T): T {
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
 * and wait again, behind a long sweep for the whole of it.
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
function applyQueued(db: Database, queued: readonly QueuedLogin[], s: MapSettings): boolean {
  const cutoff = Math.floor(Date.now() / 1000) - s.timeoutSeconds;
  let changed = false;
  for (const q of queued) {
    if (q.time >= cutoff) changed = applyLogin(db, q.address.keys, q.time) || changed;
  }
  return changed;
}

const readQueued = (s: MapSettings): QueuedLogin[] =>
  translated(s.path, 'read the login queue of', () => readQueue(s.path).logins);

/** A private copy of the live map, open for change, with the map locked and the queued logins applied. */
interface Copy {
  live: LiveMap;
  fd: number;
  db: Database;
  /** The queued logins applied to it, cleared from the queue once it is published. */
  queued: QueuedLogin[];
  changed: boolean;
}

/**
 * The page cache a long change gets for its copy: the whole file, so that
 * changes all over it (both keys of many IPv6 entries) are not written out
 * and read back again and again, up to a bound on the memory it takes.
 */
const wholeFileCache = (size: number): number => Math.min(256 * 2 ** 20, Math.ceil(size * 1.25) + 2 ** 20);

function openCopy(
  s: MapSettings,
  queued: QueuedLogin[],
  createIfMissing: boolean,
  deadline: number,
  bigCache = false,
): Copy {
  const live = lockLive(s, createIfMissing, deadline);
  try {
    const fd = translated(s.path, writingCopyOf(s.path), () => copyLive(s, live), 'io');
    try {
      const cache = bigCache ? wholeFileCache(live.st.size) : 0;
      const db = translated(s.path, 'open map', () => openDb(s, fd, false, cache));
      try {
        return { live, fd, db, queued, changed: applyQueued(db, queued, s) };
      } catch (e) {
        closeDb(db);
        throw mapError(e, s.path, writingCopyOf(s.path), 'io');
      }
    } catch (e) {
      closeSync(fd);
      unlinkQuietly(tmpPath(s.path));
      throw e;
    }
  } catch (e) {
    closeSync(live.fd);
    throw e;
  }
}

/** Gives up a copy whose change failed: the live map stays as it was. */
function abandonCopy(s: MapSettings, c: Copy): void {
  closeDb(c.db);
  closeSync(c.fd);
  unlinkQuietly(tmpPath(s.path));
  closeSync(c.live.fd);
}

/**
 * Closes the copy (libdb flushes and fsyncs it: one that did not reach the
 * disk is never published) and, if `changed`, renames it over the live
 * name; then lets go of the map and clears the applied logins from the
 * queue. Returns whether it published.
 */
function publishCopy(s: MapSettings, c: Copy, changed: boolean): boolean {
  const tmp = tmpPath(s.path);
  let published = false;
  try {
    try {
      translated(s.path, writingCopyOf(s.path), () => c.db.close(), 'io');
    } finally {
      closeSync(c.fd);
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
    closeSync(c.live.fd);
  }
  // Only now, with the logins in the published map (or older than what it holds).
  translated(s.path, 'clear applied logins from the queue of', () => removeQueued(s.path, c.queued));
  return published;
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
  const queued = readQueued(s);
  if (change === null && queued.length === 0) return 0;
  const c = openCopy(s, queued, createIfMissing, deadline);
  let changed = c.changed;
  try {
    if (change !== null) changed = change(c.db) || changed;
  } catch (e) {
    abandonCopy(s, c);
    throw mapError(e, s.path, writingCopyOf(s.path), 'io');
  }
  publishCopy(s, c, changed);
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

/** Work done on the map in short steps (updateMapInSteps). */
export interface SteppedWork {
  /** Called once, on the first copy, after the queued logins; returns whether it changed anything. */
  start?: (db: Database) => boolean;
  /** Does the next short piece of the work on the current copy. */
  step: (db: Database) => { done: boolean; changed: boolean };
  /** Publish after this many steps whether or not anyone waits (tests: many batches). */
  stepsPerBatch?: number;
}

/**
 * A change too big to make while others wait (the sweep of a big map),
 * made in one copy of the map when no one waits. `work.step` runs again
 * and again on a private copy; after each step, once the lock has been held
 * long enough that publishing would take it to HOLD_TARGET_MS, the work
 * done so far is published if another writer
 * waits (othersWait), the lock is let go, and the work goes on in a new
 * copy. So a writer waits for one batch at most, and the map is copied
 * once per batch, not once per fixed share of the work. The queued logins
 * go into every copy, those queued meanwhile too. Returns how many copies
 * it published.
 */
export function updateMapInSteps(s: MapSettings, work: SteppedWork): number {
  if (lstatSync(s.path, { throwIfNoEntry: false }) === undefined) throw mapMissingError(s.path);
  let copies = 0;
  let first = true;
  for (let done = false; !done;) {
    if (!first) letWaitersIn();
    const deadline = Date.now() + s.lockTimeoutMs;
    const lock = takeWriterLock(s, deadline);
    if (lock === null) throw lockTimeoutError(s.path, s.lockTimeoutMs);
    const heldSince = Date.now();
    try {
      const c = openCopy(s, readQueued(s), false, deadline, true);
      // Publishing the copy costs about what making it did: counted in, so that a batch holds HOLD_TARGET_MS in all.
      const publishing = Date.now() - heldSince;
      let changed = c.changed;
      try {
        if (first && work.start !== undefined) changed = work.start(c.db) || changed;
        first = false;
        for (let steps = 1; ; steps++) {
          const r = work.step(c.db);
          changed = r.changed || changed;
          if (r.done) {
            done = true;
            break;
          }
          if (
            work.stepsPerBatch !== undefined
              ? steps >= work.stepsPerBatch
              : Date.now() - heldSince + publishing >= HOLD_TARGET_MS && othersWait(s, lock, c.live)
          )
            break;
        }
        // Logins queued while the batch ran go in with it: their recorders found the lock taken and left them to us.
        const more = readQueued(s).filter((q) => !c.queued.some((a) => a.name === q.name));
        changed = applyQueued(c.db, more, s) || changed;
        c.queued.push(...more);
      } catch (e) {
        abandonCopy(s, c);
        throw mapError(e, s.path, writingCopyOf(s.path), 'io');
      }
      if (publishCopy(s, c, changed)) copies++;
      if (done) drainLocked(s, deadline);
    } finally {
      closeSync(lock);
    }
  }
  try {
    applyQueue(s); // logins queued while we held the lock
  } catch {
    // Our change is published; those logins stay queued for the next writer or the sweep.
  }
  return copies;
}

/**
 * Whether another writer waits for this lock holder: a login in the queue
 * (its recorder found the lock taken and left it to the holder), or a
 * process blocked in flock() on the writers' lock file or on the map (an
 * administrator's command, makemap, an MTA's shared lock for a lookup), as
 * the kernel lists them in /proc/locks. Where that cannot be read, someone
 * is taken to wait: the work then goes in batches of HOLD_TARGET_MS.
 */
function othersWait(s: MapSettings, lockFd: number, live: LiveMap): boolean {
  if (readQueued(s).length > 0) return true;
  let locks: string;
  try {
    locks = readFileSync('/proc/locks', 'latin1');
  } catch {
    return true;
  }
  const ours = new Set([fstatSync(lockFd, { bigint: true }), fstatSync(live.fd, { bigint: true })].map(lockId));
  // "1: -> FLOCK  ADVISORY  WRITE 4242 fe:00:5317839 0 EOF": a request blocked behind the lock above it.
  for (const m of locks.matchAll(/^\d+:\s+->\s+\S+\s+\S+\s+\S+\s+-?\d+\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/gm)) {
    if (ours.has(`${BigInt(`0x${m[1] ?? ''}`)}:${BigInt(`0x${m[2] ?? ''}`)}:${m[3] ?? ''}`)) return true;
  }
  return false;
}

/** A file as /proc/locks names it: the device's major and minor (as glibc splits st_dev) and the inode. */
function lockId(st: BigIntStats): string {
  const major = ((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn);
  const minor = (st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn);
  return `${major}:${minor}:${st.ino}`;
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
