// The login queue beside the map, <dbfile>.queue/ (docs/design.md). A
// login is first made durable here, without waiting for anyone, and
// whichever writer holds the map's lock applies every queued login in its
// next copy of the map (group commit). A record is one empty file whose
// name carries all of it, "<unix time>_<address>_<pid>_<random>": creating
// it with O_EXCL is atomic, so a reader never sees half a record, and a
// writer killed at any point leaves either a whole record or none.
//
// The sh front (bin/poprelay-login) cannot canonicalise an address, read
// the ignore list or fsync, so it leaves an *incoming* login instead:
// "f<pid>_<address as Dovecot gave it>_<tag>_<user>", its time the file's
// mtime. No writer applies one as it is: the recorder admits it first
// (incoming.ts), turning it into a record or dropping it with a log line.

import { closeSync, fchmodSync, fsyncSync, lstatSync, mkdirSync, readdirSync, unlinkSync } from 'node:fs';
import { parseClientAddress, type ClientAddress } from './address.js';
import { errnoCode } from './errors.js';
import { createExclusive, fdPath, openDirectory } from './safefs.js';

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
 * (see bin/poprelay-login). Every name the front's glob (f[0-9]*_*) finds
 * is incoming, the malformed ones too, which admitting drops: a name left
 * there would make the front start recorders for ever.
 */
const INCOMING = /^f[0-9]{1,10}_([0-9A-Fa-f:.]{1,45})_([A-Za-z0-9-]{0,32})_([A-Za-z0-9@._+-]{0,64})$/;
const INCOMING_GLOB = /^f[0-9].*_/s;

/** A login the front left for the recorder to admit. */
export interface IncomingLogin {
  name: string;
  /** Unix seconds: the file's mtime, set when the front created it. */
  time: number;
  /** $IP as Dovecot gave it, not yet parsed; null when the name is not one the front writes. */
  ip: string | null;
  tag: string | undefined;
  user: string | undefined;
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

/** Opens the queue directory, creating it (mode 0755 despite Dovecot's umask 0077) when there is none. */
function openOrMakeQueue(mapPath: string): number {
  const existing = openQueue(mapPath);
  if (existing !== null) return existing;
  const dir = queueDir(mapPath);
  let made = true;
  try {
    mkdirSync(dir, 0o755);
  } catch (e) {
    if (errnoCode(e) !== 'EEXIST') throw e;
    made = false;
  }
  const fd = openDirectory(dir);
  if (made) fchmodSync(fd, 0o755);
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

/** Reads the queue without any lock; empty when there is no queue directory. */
export function readQueue(mapPath: string): QueueContents {
  const out: QueueContents = { logins: [], incoming: [], strays: [] };
  const dfd = openQueue(mapPath);
  if (dfd === null) return out;
  let names: string[];
  try {
    names = readdirSync(fdPath(dfd));
  } finally {
    closeSync(dfd);
  }
  for (const name of names) {
    if (INCOMING_GLOB.test(name)) {
      out.incoming.push(name);
      continue;
    }
    const m = RECORD.exec(name);
    let address: ClientAddress | undefined;
    try {
      address = m === null ? undefined : parseClientAddress(m[2] ?? '');
    } catch {
      address = undefined;
    }
    // Only the canonical form this program writes is a record.
    if (m === null || address === undefined || address.text !== m[2]) out.strays.push(name);
    else out.logins.push({ name, time: Number(m[1]), address });
  }
  return out;
}

/**
 * The front's incoming logins, each with its time. One removed meanwhile
 * (admitted by another recorder) is left out.
 */
export function readIncoming(mapPath: string): IncomingLogin[] {
  const out: IncomingLogin[] = [];
  for (const name of readQueue(mapPath).incoming) {
    const st = lstatSync(`${queueDir(mapPath)}/${name}`, { throwIfNoEntry: false });
    if (st === undefined) continue;
    const m = st.isFile() ? INCOMING.exec(name) : null;
    const [, ip = null, tag = '', user = ''] = m ?? [];
    out.push({ name, time: Math.floor(st.mtimeMs / 1000), ip, tag: tag || undefined, user: user || undefined });
  }
  return out;
}

/** Removes applied records (or admitted incoming logins); one already gone was removed by another writer. */
export function removeQueued(mapPath: string, logins: ReadonlyArray<{ name: string }>): void {
  const dir = queueDir(mapPath);
  for (const q of logins) {
    try {
      unlinkSync(`${dir}/${q.name}`);
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
}
