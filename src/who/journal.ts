// Who logged in from each address: the who journal beside the map,
// <dbfile>.who, one JSON line per login ({"t":unix,"a":"address","s":"service",
// "u":"user"}). The map's keys and values stay what sendmail, Postfix and
// Exim read; the names live here. The recorder appends each batch in one
// write under flock(LOCK_SH) on the journal's own descriptor; the sweep
// compacts it under LOCK_EX (the lines younger than timeout_minutes go into
// a new file renamed over the name, the older ones into the report,
// report.ts), so an appender that waited re-checks after its lock that its
// file is still the one the name holds, and reopens otherwise.

import {
  closeSync,
  constants as C,
  fchmodSync,
  fstatSync,
  fsyncSync,
  lstatSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname } from 'node:path';

import { flock } from '../native.js';
import { errnoCode } from '../errors.js';
import { createExclusive, openRegular, readRegularText, syncDirectory } from '../safefs.js';
import { isPlainUser } from '../users.js';

/** One login as the journal keeps it. */
export interface WhoLine {
  /** Unix seconds. */
  t: number;
  /** The client address, canonical (IPv6 compressed). */
  a: string;
  /** The service (pop3, imap: the hook's --tag), "" when unknown. */
  s: string;
  /** The login name, "" when unknown. */
  u: string;
}

/** The most of a user name or service the journal keeps: it is anyone's input. */
const MAX_USER = 256;
const MAX_SERVICE = 32;
/** How long an appender waits for the sweep's compaction, which holds the lock for one copy. */
const APPEND_WAIT_MS = 1000;
const MODE = 0o640;

export const whoFile = (dbfile: string): string => `${dbfile}.who`;

export function whoLine(t: number, a: string, s: string | undefined, u: string | undefined): WhoLine {
  return { t, a, s: (s ?? '').slice(0, MAX_SERVICE), u: (u ?? '').slice(0, MAX_USER) };
}

/** The JSON line of a login; JSON escapes control characters and lone surrogates, so a name cannot forge a line. */
const lineText = (l: WhoLine): string => `${JSON.stringify({ t: l.t, a: l.a, s: l.s, u: l.u })}\n`;

/**
 * Appends logins to the journal in one write. Throws when it cannot (the
 * caller logs it: the logins are recorded in the map whatever happens here).
 */
export function appendWho(dbfile: string, lines: readonly WhoLine[]): void {
  if (lines.length === 0) return;
  const path = whoFile(dbfile);
  const text = lines.map(lineText).join('');
  for (let tries = 1; ; tries++) {
    const { fd, st } = openRegular(path, C.O_WRONLY | C.O_APPEND | C.O_CREAT);
    try {
      // Made by this open (O_CREAT under Dovecot's umask 0077): the mode the sweep's copies have too.
      if (st.size === 0 && (st.mode & 0o777) !== MODE && st.uid === process.geteuid?.()) fchmodSync(fd, MODE);
      if (!flock(fd, 'sh', 0) && !flock(fd, 'sh', APPEND_WAIT_MS))
        throw Object.assign(new Error(`${path} stayed locked for ${APPEND_WAIT_MS} ms`), { code: 'ELOCKED' });
      // The sweep may have put a new file at the name while this one waited: append to that one.
      const now = lstatSync(path, { throwIfNoEntry: false });
      if (now === undefined || now.ino !== fstatSync(fd).ino) {
        if (tries < 3) continue;
        throw Object.assign(new Error(`${path} kept changing under this writer`), { code: 'ECHANGED' });
      }
      writeSync(fd, text);
      return;
    } finally {
      closeSync(fd);
    }
  }
}

/** One line of the journal; null when it is not one of ours. */
export function parseLine(text: string): WhoLine | null {
  try {
    const o = JSON.parse(text) as Record<string, unknown>;
    if (typeof o.t !== 'number' || !Number.isSafeInteger(o.t) || typeof o.a !== 'string') return null;
    return { t: o.t, a: o.a, s: typeof o.s === 'string' ? o.s : '', u: typeof o.u === 'string' ? o.u : '' };
  } catch {
    return null;
  }
}

function parseJournal(text: string): WhoLine[] {
  const out: WhoLine[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const l = parseLine(line);
    if (l !== null) out.push(l);
  }
  return out;
}

/** Every line of the journal; [] when there is none. `about`: only the lines of these addresses (read faster). */
export function readWho(dbfile: string, about?: ReadonlySet<string>): WhoLine[] {
  const text = readRegularText(whoFile(dbfile));
  if (text === null) return [];
  if (about === undefined) return parseJournal(text);
  // lineText writes the address second, as this exact text: found by a search rather than a parse of each line.
  const out: WhoLine[] = [];
  for (const a of about) {
    const needle = `,"a":${JSON.stringify(a)},`;
    for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + needle.length)) {
      const start = text.lastIndexOf('\n', at) + 1;
      const end = text.indexOf('\n', at);
      const l = parseLine(text.slice(start, end < 0 ? text.length : end));
      if (l !== null && l.a === a) out.push(l);
    }
  }
  return out;
}

/** One user behind an address: the service of their last login, its time, and how many logins. */
export interface UserSeen {
  user: string;
  service: string;
  last: number;
  logins: number;
}

/** The distinct users per address among `lines` at or after `since`, each address's users by last login. */
export function usersByAddress(lines: readonly WhoLine[], since: number): Map<string, UserSeen[]> {
  const by = new Map<string, Map<string, UserSeen>>();
  for (const l of lines) {
    if (l.t < since) continue;
    let users = by.get(l.a);
    if (users === undefined) by.set(l.a, (users = new Map()));
    const seen = users.get(l.u);
    if (seen === undefined) users.set(l.u, { user: l.u, service: l.s, last: l.t, logins: 1 });
    else {
      seen.logins++;
      if (l.t >= seen.last) {
        seen.last = l.t;
        seen.service = l.s;
      }
    }
  }
  return new Map([...by].map(([a, users]) => [a, [...users.values()].sort((x, y) => y.last - x.last)]));
}

/** A user name for a line of text: itself when plain, else quoted and escaped (it is anyone's input). */
export function showUser(user: string, quote: (s: string, max?: number) => string): string {
  if (user === '') return '(none)';
  return isPlainUser(user) ? user : quote(user, 64);
}

/**
 * The sweep's compaction: under LOCK_EX, the lines at or after `since` go
 * into a new journal renamed over the name, and `fold` gets the older ones
 * while both files are still locked, so that another sweep neither reads
 * them again (it re-checks, once locked, that its file is still the one the
 * name holds) nor folds beside this one. Nothing is rewritten when no line
 * is older and none is malformed.
 */
export function compactWho(
  dbfile: string,
  since: number,
  waitMs: number,
  fold: (old: WhoLine[]) => void,
): { kept: WhoLine[]; old: WhoLine[] } {
  const path = whoFile(dbfile);
  for (let tries = 1; ; tries++) {
    let fd: number;
    try {
      fd = openRegular(path, C.O_RDWR).fd;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return { kept: [], old: [] };
      throw e;
    }
    try {
      if (!flock(fd, 'ex', waitMs)) throw new Error(`${path} stayed locked for ${waitMs} ms`);
      if (lstatSync(path, { throwIfNoEntry: false })?.ino !== fstatSync(fd).ino) {
        if (tries < 3) continue; // another sweep replaced it while this one waited: the new one
        throw new Error(`${path} kept changing under this sweep`);
      }
      const text = readFileSync(fd, 'utf8');
      const lines = parseJournal(text);
      const kept = lines.filter((l) => l.t >= since);
      const old = lines.filter((l) => l.t < since);
      if (old.length === 0 && kept.length === text.split('\n').filter((l) => l !== '').length) return { kept, old };
      const tmp = `${path}.tmp-${process.pid}`;
      try {
        unlinkSync(tmp);
      } catch {
        // none left over
      }
      const out = createExclusive(tmp, MODE);
      try {
        flock(out, 'ex', 0); // nobody else has it yet: the appenders that find it at the name wait for the fold
        writeSync(out, kept.map(lineText).join(''));
        fsyncSync(out);
        renameSync(tmp, path);
        syncDirectory(dirname(path));
        fold(old);
      } catch (e) {
        try {
          unlinkSync(tmp);
        } catch {
          // renamed already, or gone
        }
        throw e;
      } finally {
        closeSync(out);
      }
      return { kept, old };
    } finally {
      closeSync(fd); // lets the appenders that waited go on, to the new file
    }
  }
}
