// What a map failure says to the administrator: each names the file, the
// cause and what to do. The file discipline (file.ts) throws these and
// nothing else; callers branch on the code, never on the text.

import { userInfo } from 'node:os';
import { dirname } from 'node:path';

import type { NativeError } from '../native.js';
import { errnoCode, PoprelayError } from '../errors.js';

/** What a failure with no errno of its own means: a damaged map when reading it, an I/O problem when writing a copy. */
export type OtherFailure = 'corrupt' | 'io';

function userDescription(): string {
  try {
    const u = userInfo();
    return `${u.username} (uid ${u.uid})`;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}`;
  }
}

export function mapMissingError(path: string): PoprelayError {
  return new PoprelayError(
    'ERR_MAP_MISSING',
    `map ${path} does not exist. It is created by the first recorded login or by "poprelay add"; ` +
      `check dbfile in poprelay.ini.`,
  );
}

export function lockTimeoutError(path: string, lockTimeoutMs: number): PoprelayError {
  return new PoprelayError(
    'ERR_MAP_LOCK_TIMEOUT',
    `map ${path} stayed locked by another process for more than lock_timeout_ms = ${lockTimeoutMs} ms; ` +
      `find the holder with "fuser -v ${path} ${path}.lock".`,
  );
}

export function nulKeysError(path: string): PoprelayError {
  return new PoprelayError(
    'ERR_MAP_NUL_KEYS',
    `map ${path} has keys ending in a NUL byte (made by makemap -N?). sendmail and Postfix stick to the first ` +
      `key form that matches, so poprelay will not mix its NUL-free keys into it; rebuild it without -N ` +
      `(db5.3_dump, strip the NULs, makemap hash). poprelay left it untouched.`,
  );
}

export function typeMismatchError(path: string, actual: string, configured: string): PoprelayError {
  return new PoprelayError(
    'ERR_MAP_TYPE',
    `map ${path} is a Berkeley DB ${actual} database, but poprelay is configured for dbtype = ${configured}. ` +
      `Set dbtype = ${actual} in poprelay.ini, or rebuild the map as ${configured}; poprelay left it untouched.`,
  );
}

/**
 * Translates an OS or libdb failure while doing `doing` to `path` ("read
 * map", "write a new copy of the map for", ...) into the error an
 * administrator can act on. A PoprelayError passes unchanged.
 */
export function mapError(e: unknown, path: string, doing: string, otherwise: OtherFailure = 'corrupt'): PoprelayError {
  if (e instanceof PoprelayError) return e;
  const code = errnoCode(e);
  const detail = ((e as NativeError).detail ?? (e instanceof Error ? e.message : String(e))).replace(
    /\/proc\/self\/fd\/\d+/g,
    path,
  );
  const dir = dirname(path);
  /** The file that failed, when not the map itself (its lock file, its queue, a copy). */
  const named = (e as NodeJS.ErrnoException).path;
  const offender = named === undefined || named.startsWith('/proc/') ? path : named;
  const io = (what: string): PoprelayError =>
    new PoprelayError('ERR_MAP_IO', `cannot ${doing} ${path}: ${what}. The map was left as it was.`, { cause: e });
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return new PoprelayError(
        'ERR_MAP_PERMISSION',
        `cannot ${doing} ${path} as user ${userDescription()}: permission denied` +
          `${offender.startsWith(`${path}.queue`) ? ` on its queue ${offender}` : ''}. ` +
          `Writers need read access to the map and write access to its directory ${dir} and its queue ` +
          `${path}.queue (poprelay renames a new copy into place); readers need read access to the map.`,
        { cause: e },
      );
    case 'ELOOP':
      return new PoprelayError(
        'ERR_MAP_UNSAFE',
        `cannot ${doing} ${path}: ${offender === path ? 'it' : offender} is a symbolic link, and poprelay follows no link in the map's directory` +
          (offender === path
            ? ` (it replaces the map by renaming a new copy over its name, which would replace the link). Set dbfile to the real file, or remove the link if you did not make it.`
            : `. Remove it if you did not make it; poprelay creates what it needs.`),
        { cause: e },
      );
    case 'ENOTREG':
      return new PoprelayError(
        'ERR_MAP_UNSAFE',
        `cannot ${doing} ${path}: ${offender === path ? 'it' : offender} is not a regular file (a FIFO, device or directory stands there). ` +
          `Remove it; poprelay creates what it needs.`,
        { cause: e },
      );
    case 'ENOPROC':
      return new PoprelayError('ERR_MAP_IO', `cannot ${doing} ${path}: ${detail}. Mount /proc.`, { cause: e });
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EROFS':
    case 'EIO':
    case 'EMFILE':
    case 'ENFILE':
      return io(`${detail} (${code})`);
    case 'ENOENT':
      return new PoprelayError('ERR_MAP_MISSING', `cannot ${doing} ${path}: it does not exist`, { cause: e });
    default:
      if (otherwise === 'io') return io(code === undefined ? detail : `${detail} (${code})`);
      return new PoprelayError(
        'ERR_MAP_CORRUPT',
        `cannot ${doing} ${path}: it is not a readable Berkeley DB file (libdb: ${detail}). ` +
          `poprelay left it untouched; check it with db5.3_verify ${path} and see "Recovering a damaged map" in docs/operating.md.`,
        { cause: e },
      );
  }
}

/** Runs `step`, translating whatever it throws with mapError. */
export function translated<T>(path: string, doing: string, step: () => T, otherwise: OtherFailure = 'corrupt'): T {
  try {
    return step();
  } catch (e) {
    throw mapError(e, path, doing, otherwise);
  }
}
