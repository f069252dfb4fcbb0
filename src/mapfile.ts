// The map as a file: how poprelay opens, checks, locks, copies and
// publishes it (README, "Design"). A published map file is never modified.
// A writer queues on a lock file beside the map, takes flock(LOCK_EX) on the
// live file (as makemap and postmap do), copies it, changes the copy, fsyncs
// it and renames it over the live name. A writer killed at any point leaves
// the old file intact, and a reader (sendmail, Postfix, Exim, which takes no
// lock at all) only ever opens a complete file; readers need no lock.

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

import { flock, openDatabase, unpackRecords, type Database, type DbType, type NativeError } from './bdb.js';
import { errnoCode, PoprelayError } from './errors.js';

export interface MapSettings {
  path: string;
  type: DbType;
  lockTimeoutMs: number;
  /** Mode of a map created by poprelay. */
  mode: number;
}

const SCAN_BATCH = 4096;

function currentUser(): string {
  try {
    const u = userInfo();
    return `${u.username} (uid ${u.uid})`;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}

/** What a writer was doing when it failed, for messages: "cannot <this> <map>: ...". */
function copying(s: MapSettings): string {
  return `write a new copy of the map in ${dirname(s.path)} for`;
}

function missing(s: MapSettings): PoprelayError {
  return new PoprelayError(
    'ERR_MAP_MISSING',
    `map ${s.path} does not exist. It is created by the first recorded login or by "poprelay add"; ` +
      `check dbfile in poprelay.ini.`,
  );
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

/** All records of the map as [key, value] text, in hash order. */
export function readRecords(s: MapSettings): Array<[string, string]> {
  let db: Database;
  try {
    db = openMapFile(s, s.path, true);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') throw missing(s);
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

function lockTimeout(s: MapSettings): PoprelayError {
  return new PoprelayError(
    'ERR_MAP_LOCK_TIMEOUT',
    `map ${s.path} stayed locked by another process for more than lock_timeout_ms = ${s.lockTimeoutMs} ms; ` +
      `find the holder with: fuser -v ${s.path} ${s.path}.lock`,
  );
}

/**
 * poprelay's writers queue on a lock file beside the map, which is never
 * replaced. A waiter on the map itself finds it renamed away after every
 * write and must reopen and race again (measured: a record waited 1.5 s
 * behind a sweep of a 1,000,000-entry map); on the lock file it simply
 * blocks until the kernel wakes it. Opened read-only, so that
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
    throw mapError(e, s.path, copying(s));
  }
  if (!flock(fd, 'ex', Math.max(0, deadline - Date.now()))) {
    closeSync(fd);
    throw lockTimeout(s);
  }
  return fd;
}

/**
 * Opens the live map for writing and takes flock(LOCK_EX) on it, the lock
 * makemap and postmap also take. Because writers replace the file, the lock
 * is only good if the path still names the locked file; otherwise retry.
 */
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
      if (errnoCode(e) === 'ENOENT') throw missing(s);
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

/** Only ENOENT: a path we may not look at is for the later open to report. */
function absent(path: string): boolean {
  try {
    statSync(path);
    return false;
  } catch (e) {
    return errnoCode(e) === 'ENOENT';
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
  // Checked before the lock file is made, so that a mistyped dbfile leaves
  // no stray file; lockLive checks again under the lock.
  if (!createIfMissing && absent(s.path)) throw missing(s);
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
      throw mapError(e, s.path, copying(s), 'io');
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
      throw mapError(e, s.path, copying(s), 'io');
    }
    try {
      db.close(); // flushes and fsyncs the copy; one that did not reach the disk is never published
    } catch (e) {
      throw mapError(e, s.path, copying(s), 'io');
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
