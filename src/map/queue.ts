// The login queue beside the map, <dbfile>.queue/ (docs/design.md). A
// login is first made durable here, without waiting for anyone, and
// whichever writer holds the map's lock applies every queued login in its
// next copy of the map (group commit). A record is one empty file whose
// name carries all of it, "<unix time>_<address>_<pid>_<random>": creating
// it with O_EXCL is atomic, so a reader never sees half a record, and a
// writer killed at any point leaves either a whole record or none.
//
// The front (src/front/poprelay-login.c) cannot canonicalise an address, read
// the ignore list or fsync, so it leaves an *incoming* login instead:
// "f<pid>_<address as Dovecot gave it>_<tag>_<user>", its time the file's
// mtime. No writer applies one as it is: the recorder admits it first
// (hook/incoming.ts), turning it into a record or dropping it with a log line.

import {
  closeSync,
  fchmodSync,
  fstatSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmdirSync,
  unlinkSync,
} from 'node:fs';
import { parseClientAddress, type ClientAddress } from '../address.js';
import { errnoCode } from '../errors.js';
import { createExclusive, fdPath, openDirectory } from '../safefs.js';

export interface QueuedLogin {
  /** The file name, to remove once applied. */
  name: string;
  /** Unix seconds of the login. */
  time: number;
  address: ClientAddress;
}

const RECORD = /^([0-9]{1,10})_([0-9a-f:.]{2,45})_[0-9]{1,10}_[0-9a-f]{1,32}$/;

/**
 * The front's name for an incoming login; it writes only what this matches
 * (src/front/poprelay-login.c; test/front-protocol.test.ts holds the two to src/front/protocol.h). Every name the front's glob (f[0-9]*_*) finds
 * is incoming, the malformed ones too, and whatever it is (a directory, a
 * FIFO, a link, a name that is not UTF-8), which admitting drops or moves
 * out of the glob: a name left there would make the front start recorders
 * for ever, and one that could not be removed made every recorder and
 * every sweep fail.
 */
export const INCOMING_NAME = /^f[0-9]{1,10}_([0-9A-Fa-f:.]{1,45})_([A-Za-z0-9-]{0,32})_([A-Za-z0-9@._+-]{0,64})$/;

/** Whether a name's bytes match the front's glob, f[0-9]*_*. */
function frontStyle(raw: Buffer): boolean {
  return raw[0] === 0x66 && raw[1] !== undefined && raw[1] >= 0x30 && raw[1] <= 0x39 && raw.indexOf(0x5f, 2) >= 0;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** A name as text: itself when it is UTF-8; otherwise ASCII with every other byte as \xhh. */
function nameText(raw: Buffer): { text: string; utf8: boolean } {
  try {
    return { text: UTF8.decode(raw), utf8: true };
  } catch {
    const text = [...raw]
      .map((b) =>
        b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`,
      )
      .join('');
    return { text, utf8: false };
  }
}

/** What a directory entry is, when it is not a regular file. */
function kindOf(d: {
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
}): string {
  if (d.isDirectory()) return 'a directory';
  if (d.isSymbolicLink()) return 'a symbolic link';
  if (d.isFIFO()) return 'a FIFO';
  if (d.isSocket()) return 'a socket';
  return 'a device';
}

/** A login the front left for the recorder to admit. */
export interface IncomingLogin {
  /** The file name, as text (bytes that are not UTF-8 as \xhh). */
  name: string;
  /** The file name's bytes, to remove it by. */
  raw: Buffer;
  /** Unix seconds: the file's mtime, set when the front created it. */
  time: number;
  /** $IP as Dovecot gave it, not yet parsed; null when the name is not one the front writes. */
  ip: string | null;
  tag: string | undefined;
  user: string | undefined;
  /** When ip is null: what lies there ("a directory", "a name that is not UTF-8", ...), if not a file with a malformed name. */
  what?: string;
}

const QUEUE_SUFFIX = '.queue';

export function queueDir(mapPath: string): string {
  return `${mapPath}${QUEUE_SUFFIX}`;
}

/** The map whose queue `dir` is; null when it is no queue directory's name. */
export function mapOfQueue(dir: string): string | null {
  return dir.endsWith(QUEUE_SUFFIX) ? dir.slice(0, -QUEUE_SUFFIX.length) : null;
}

/** Opens the queue directory; null when there is none. */
function openQueue(mapPath: string): number | null {
  try {
    return openDirectory(queueDir(mapPath));
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return null;
    throw e;
  }
}

/** Creates the queue directory if there is none: the front leaves logins only where it exists. */
export function makeQueue(mapPath: string): void {
  closeSync(openOrMakeQueue(mapPath));
}

/**
 * Opens the queue directory, creating it when there is none. Mode 0700
 * (whatever Dovecot's umask): an account that could open it could hold its
 * flock, which the fronts take for a running recorder, and strand their
 * logins; an older installation's 0755 is narrowed here.
 */
function openOrMakeQueue(mapPath: string): number {
  const existing = openQueue(mapPath);
  if (existing !== null) {
    const st = fstatSync(existing);
    if ((st.mode & 0o077) !== 0 && st.uid === process.geteuid?.()) fchmodSync(existing, st.mode & 0o7700);
    return existing;
  }
  const dir = queueDir(mapPath);
  let made = true;
  try {
    mkdirSync(dir, 0o700);
  } catch (e) {
    if (errnoCode(e) !== 'EEXIST') throw e;
    made = false;
  }
  const fd = openDirectory(dir);
  if (made) fchmodSync(fd, 0o700);
  return fd;
}

/**
 * The name's pid already makes it unique; the random part covers a reused
 * pid and O_EXCL the rest, so Math.random does: node:crypto would cost the
 * hook several milliseconds of start-up.
 */
function recordName(address: ClientAddress, time: number): string {
  return `${time}_${address.text}_${process.pid}_${Math.floor(Math.random() * 2 ** 48)
    .toString(16)
    .padStart(12, '0')}`;
}

/** Queues a login durably: when this returns, a crash cannot lose it. */
export function enqueueLogin(mapPath: string, address: ClientAddress, time: number): void {
  enqueueLogins(mapPath, [{ address, time }]);
}

/** Queues logins durably, with one fsync for all of them. */
export function enqueueLogins(mapPath: string, logins: ReadonlyArray<{ address: ClientAddress; time: number }>): void {
  const dfd = openOrMakeQueue(mapPath);
  try {
    for (const { address, time } of logins) {
      for (let tries = 1; ; tries++) {
        try {
          closeSync(createExclusive(`${queueDir(mapPath)}/${recordName(address, time)}`, 0o644));
          break;
        } catch (e) {
          if (errnoCode(e) !== 'EEXIST' || tries === 3) throw e;
        }
      }
    }
    fsyncSync(dfd); // the name is the record: make the directory entry durable
  } finally {
    closeSync(dfd);
  }
}

export interface QueueContents {
  logins: QueuedLogin[];
  /** The front's incoming logins, by name: not applied until admitted. */
  incoming: string[];
  /** Names that are neither (left alone; doctor reports them). */
  strays: string[];
}

/** One name in the queue directory, and what it is (d_type: no stat of its own). */
interface Entry {
  raw: Buffer;
  text: string;
  utf8: boolean;
  /** null: a regular file; otherwise what it is. */
  kind: string | null;
}

/** The queue directory's names; null when there is no queue directory. */
function listQueue(mapPath: string): Entry[] | null {
  const dfd = openQueue(mapPath);
  if (dfd === null) return null;
  try {
    // As bytes: a name that is not UTF-8 must still be found, and removed, by its own name.
    return readdirSync(fdPath(dfd), { encoding: 'buffer', withFileTypes: true }).map((d) => ({
      raw: d.name,
      ...nameText(d.name),
      kind: d.isFile() ? null : kindOf(d),
    }));
  } finally {
    closeSync(dfd);
  }
}

/** Reads the queue without any lock; empty when there is no queue directory. */
export function readQueue(mapPath: string): QueueContents {
  const out: QueueContents = { logins: [], incoming: [], strays: [] };
  for (const { raw, text: name, kind } of listQueue(mapPath) ?? []) {
    if (frontStyle(raw)) {
      out.incoming.push(name);
      continue;
    }
    const m = kind === null ? RECORD.exec(name) : null;
    let address: ClientAddress | undefined;
    try {
      address = m === null ? undefined : parseClientAddress(m[2] ?? '');
    } catch {
      address = undefined;
    }
    // Only the canonical form this program writes, in a regular file, is a record.
    if (m === null || address === undefined || address.text !== m[2]) out.strays.push(name);
    else out.logins.push({ name, time: Number(m[1]), address });
  }
  return out;
}

/**
 * Names this process could neither remove nor move out of the front's
 * names: reported once, then passed over, so that a recorder's later
 * rounds neither report them again nor take them for new logins.
 */
const passedOver = new Set<string>();

/**
 * The front's incoming logins, each with its time, and whatever else lies
 * at a name of the front's form (ip null, `what` says what it is). One
 * removed meanwhile (admitted by another recorder) is left out.
 */
export function readIncoming(mapPath: string): IncomingLogin[] {
  const out: IncomingLogin[] = [];
  const dir = queueDir(mapPath);
  for (const { raw, text: name, utf8, kind } of listQueue(mapPath) ?? []) {
    if (!frontStyle(raw) || passedOver.has(raw.toString('hex'))) continue;
    const st = lstatSync(Buffer.concat([Buffer.from(`${dir}/`), raw]), { throwIfNoEntry: false });
    if (st === undefined) continue;
    const what = !utf8
      ? 'a name that is not UTF-8'
      : kind !== null || !st.isFile()
        ? (kind ?? 'not a file')
        : undefined;
    const m = what === undefined ? INCOMING_NAME.exec(name) : null;
    const [, ip = null, tag = '', user = ''] = m ?? [];
    out.push({
      name,
      raw,
      time: Math.floor(st.mtimeMs / 1000),
      ip,
      tag: tag || undefined,
      user: user || undefined,
      what,
    });
  }
  return out;
}

/** Removes applied records; one already gone was removed by another writer, and one that is now a directory (planted meanwhile) is left as a stray. */
export function removeQueued(mapPath: string, logins: ReadonlyArray<{ name: string }>): void {
  const dir = queueDir(mapPath);
  for (const q of logins) {
    try {
      unlinkSync(`${dir}/${q.name}`);
    } catch (e) {
      const code = errnoCode(e);
      if (code !== 'ENOENT' && code !== 'EISDIR') throw e;
    }
  }
}

/**
 * Clears admitted incoming names from the queue, whatever lies there: a
 * file, link, FIFO or socket is unlinked, by its own bytes; an empty
 * directory removed; any other directory renamed out of the front's names
 * (to stray.*, which doctor reports), so that no name makes a front start
 * recorders again and again. Returns, for each name not simply removed,
 * what became of it ("moved to NAME", or why it stays: then it is passed
 * over by this process from now on). Throws only for a login's own file
 * (a regular file) that cannot be removed, as a queue the map's owner
 * cannot write.
 */
export function clearIncoming(mapPath: string, logins: ReadonlyArray<IncomingLogin>): Map<IncomingLogin, string> {
  const dir = queueDir(mapPath);
  const notes = new Map<IncomingLogin, string>();
  for (const l of logins) {
    const path = Buffer.concat([Buffer.from(`${dir}/`), l.raw]);
    try {
      unlinkSync(path);
      continue;
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT') continue;
      if (code !== 'EISDIR') {
        // A file the front could have left: as before, the queue cannot be cleared, and that is an error.
        if (l.what === undefined) throw e;
        notes.set(l, leave(l, code));
        continue;
      }
    }
    try {
      rmdirSync(path);
      continue;
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOENT') continue;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') {
        notes.set(l, leave(l, code));
        continue;
      }
    }
    const stray = `stray.${Math.floor(Date.now() / 1000)}.${process.pid}.${Math.floor(Math.random() * 2 ** 32).toString(16)}`;
    try {
      renameSync(path, `${dir}/${stray}`);
      notes.set(l, `moved to ${stray} in the queue`);
    } catch (e) {
      notes.set(l, leave(l, errnoCode(e)));
    }
  }
  return notes;
}

/** A name that stays: passed over from now on. */
function leave(l: IncomingLogin, code: string | undefined): string {
  passedOver.add(l.raw.toString('hex'));
  return `left there: it cannot be removed (${code ?? 'error'})`;
}
