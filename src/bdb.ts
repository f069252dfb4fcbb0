// Typed face of the native addon (src/native/bdb.cc). Keys and values are
// bytes here; the map discipline (lowercase, no NUL, decimal time) lives in
// map.ts.

import { createRequire } from 'node:module';
import { getSystemErrorName } from 'node:util';

export type DbType = 'hash' | 'btree';

export interface Database {
  /** The access method of the open file: hash, btree, or another libdb type. */
  readonly type: string;
  get(key: Buffer): Buffer | null;
  put(key: Buffer, value: Buffer): void;
  /** False when the key was not there. */
  del(key: Buffer): boolean;
  /** Up to `max` more records of a whole-database walk, packed; null at the end. `restart` begins a new walk. */
  scan(max: number, restart?: boolean): Buffer | null;
  sync(): void;
  /** Flushes and fsyncs; throws when the data may not have reached the file. */
  close(): void;
}

interface Addon {
  Database: new (path: string, type: DbType | 'unknown', readonly: boolean, create: boolean, mode: number) => Database;
  flock(fd: number, op: 'sh' | 'ex' | 'un', timeoutMs: number): boolean;
  exchange(target: string, port: number, request: Buffer, timeoutMs: number): Buffer;
  dropPrivileges(uid: number, gid: number): void;
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
  libdbVersion: string;
}

/** An error thrown by libdb or the OS through the addon. */
export interface NativeError extends Error {
  errno: number;
  code?: string;
  op?: string;
  path?: string;
  detail?: string;
}

const require = createRequire(import.meta.url);
const addon = require('../build/Release/poprelay_bdb.node') as Addon;

export const libdbVersion = addon.libdbVersion;

/** Adds a Node-style `code` (ENOENT, EACCES, ...) to OS errors from the addon. */
function withCode(e: unknown): unknown {
  if (e instanceof Error && typeof (e as NativeError).errno === 'number') {
    const ne = e as NativeError;
    if (ne.errno > 0) ne.code = getSystemErrorName(-ne.errno);
  }
  return e;
}

export interface OpenOptions {
  type: DbType | 'unknown';
  readonly: boolean;
  create?: boolean;
  mode?: number;
}

export function openDatabase(path: string, opts: OpenOptions): Database {
  try {
    return new addon.Database(path, opts.type, opts.readonly, opts.create ?? false, opts.mode ?? 0o644);
  } catch (e) {
    throw withCode(e);
  }
}

/**
 * flock(2) on an open fd. Waits up to timeoutMs (0: do not wait) and returns
 * false if the lock is still held elsewhere by then. A wait runs in a
 * blocking flock() on a helper thread, which the kernel wakes on release.
 * After a wait that timed out, close the fd: the abandoned helper still
 * waits on that open file, and when it gets the lock it drops it again,
 * which would drop a later lock taken through the same fd.
 */
export function flock(fd: number, op: 'sh' | 'ex' | 'un', timeoutMs = 0): boolean {
  try {
    return addon.flock(fd, op, timeoutMs);
  } catch (e) {
    throw withCode(e);
  }
}

/**
 * Sends `request` to a stream socket (a UNIX socket path when `port` is 0)
 * and returns everything it answers until it closes, all within timeoutMs,
 * blocking (native/exchange.cc: the hook's engine exchange without loading
 * node:net). Errors carry `code` (ECONNREFUSED, ETIMEDOUT, ENOTFOUND, ...)
 * and `phase`: "connect" or "exchange".
 */
export function socketExchange(target: string, port: number, request: Buffer, timeoutMs: number): Buffer {
  try {
    return addon.exchange(target, port, request, timeoutMs);
  } catch (e) {
    throw withCode(e);
  }
}

/**
 * Becomes uid and gid for good (real, effective and saved; no supplementary
 * groups), in every thread. Errors carry `code` (EPERM, ...).
 */
export function dropPrivileges(uid: number, gid: number): void {
  try {
    addon.dropPrivileges(uid, gid);
  } catch (e) {
    throw withCode(e);
  }
}

/** The process at the other end of a connected UNIX socket (SO_PEERCRED). */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  try {
    return addon.peerCredentials(fd);
  } catch (e) {
    throw withCode(e);
  }
}

/** Decodes a packed batch from Database.scan() into [key, value] byte pairs. */
export function* unpackRecords(batch: Buffer): Generator<[Buffer, Buffer]> {
  let off = 0;
  while (off < batch.length) {
    const klen = batch.readUInt32LE(off);
    const vlen = batch.readUInt32LE(off + 4);
    off += 8;
    const key = batch.subarray(off, off + klen);
    off += klen;
    yield [key, batch.subarray(off, off + vlen)];
    off += vlen;
  }
}
