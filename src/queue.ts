// The login queue beside the map, <dbfile>.queue/ (docs/design.md). A
// login is first made durable here, without waiting for anyone, and
// whichever writer holds the map's lock applies every queued login in its
// next copy of the map (group commit). A record is one empty file whose
// name carries all of it, "<unix time>_<address>_<pid>_<random>": creating
// it with O_EXCL is atomic, so a reader never sees half a record, and a
// writer killed at any point leaves either a whole record or none.

import { closeSync, fchmodSync, fsyncSync, mkdirSync, readdirSync, unlinkSync } from 'node:fs';
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

export function queueDir(mapPath: string): string {
  return `${mapPath}.queue`;
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
  const dfd = openOrMakeQueue(mapPath);
  try {
    for (let tries = 1; ; tries++) {
      try {
        closeSync(createExclusive(`${queueDir(mapPath)}/${recordName(address, time)}`, 0o644));
        break;
      } catch (e) {
        if (errnoCode(e) !== 'EEXIST' || tries === 3) throw e;
      }
    }
    fsyncSync(dfd); // the name is the record: make the directory entry durable
  } finally {
    closeSync(dfd);
  }
}

export interface QueueContents {
  logins: QueuedLogin[];
  /** Names that are not records (left alone; doctor reports them). */
  strays: string[];
}

/** Reads the queue without any lock; empty when there is no queue directory. */
export function readQueue(mapPath: string): QueueContents {
  const out: QueueContents = { logins: [], strays: [] };
  const dfd = openQueue(mapPath);
  if (dfd === null) return out;
  let names: string[];
  try {
    names = readdirSync(fdPath(dfd));
  } finally {
    closeSync(dfd);
  }
  for (const name of names) {
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

/** Removes applied records; one already gone was removed by another writer. */
export function removeQueued(mapPath: string, logins: readonly QueuedLogin[]): void {
  const dir = queueDir(mapPath);
  for (const q of logins) {
    try {
      unlinkSync(`${dir}/${q.name}`);
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
}
