// Typed face of the native addon (src/native/bdb.cc). Keys and values are
// bytes here; the map discipline (lowercase, no NUL, decimal time) lives in
// map/relay-map.ts.

import { createRequire } from 'node:module';
import { getSystemErrorName } from 'node:util';

export interface Database {
  /** The access method of the open file: hash, btree, or another libdb type. */
  readonly type: string;
  get(key: Buffer): Buffer | null;
  put(key: Buffer, value: Buffer): void;
  /** False when the key was not there. */
  del(key: Buffer): boolean;
  /** Up to `max` more records of a whole-database walk, packed; null at the end. `restart` begins a new walk. */
  scan(max: number, restart?: boolean): Buffer | null;
  /**
   * One walk of the whole database for the sweep, in C: every entry (a
   * key without ':', or an IPv6 address's keys) decided as map/relay-map.ts and
   * map/values.ts decide it (see SweepScan in native/bdb.cc); other keys with
   * ':' come back as records for the caller, and the keys in `skip` not at
   * all.
   */
  sweepScan(cutoff: number, now: number, skip: readonly Buffer[], list: boolean): SweepScan;
  /**
   * Removes, from `offset` in an entry pack, up to `max` entries whose keys
   * are all still expired at `cutoff` (see packEntry), writing each one's
   * fate at status[index + i] (EntryFate).
   */
  removeExpired(
    pack: Buffer,
    offset: number,
    max: number,
    cutoff: number,
    status: Buffer | null,
    index: number,
  ): RemovedSlice;
  /** Flushes and fsyncs; throws when the data may not have reached the file. */
  close(): void;
}

/** What Database.sweepScan() found. */
export interface SweepScan {
  /** Entry pack of the expired entries, each with its (newest) value. */
  expired: Buffer;
  expiredCount: number;
  /** Entries that stay: dated at or after the cutoff. */
  kept: number;
  permanent: number;
  /** Records (as scan() packs them) of the keys with ':' left to the caller. */
  colon: Buffer;
  /** Records of the kept keys dated after `now`; empty unless listed. */
  future: Buffer;
  futureCount: number;
  /** A key ends with NUL (a map made with makemap -N): the walk stopped there. */
  nulKey: boolean;
}

/** What one removeExpired() call did. */
export interface RemovedSlice {
  /** Where the next call goes on; the pack's length when it is done. */
  offset: number;
  entries: number;
  removed: number;
  /** Entries found no longer expired (a login since the pack was made). */
  kept: number;
}

/** An entry's fate in removeExpired()'s status bytes (0: not reached). */
export const EntryFate = { removed: 1, kept: 2, gone: 3 } as const;

interface Addon {
  Database: new (
    path: string,
    type: 'hash' | 'btree' | 'unknown',
    readonly: boolean,
    create: boolean,
    mode: number,
    cacheBytes: number,
  ) => Database;
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
const addon = require('../build/Release/poprelay_native.node') as Addon;

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
  type: 'hash' | 'btree' | 'unknown';
  readonly: boolean;
  create?: boolean;
  mode?: number;
  /** libdb's page cache for this handle; 0 or absent: libdb's default (256 KB). */
  cacheBytes?: number;
}

export function openDatabase(path: string, opts: OpenOptions): Database {
  try {
    return new addon.Database(
      path,
      opts.type,
      opts.readonly,
      opts.create ?? false,
      opts.mode ?? 0o644,
      opts.cacheBytes ?? 0,
    );
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

const u32 = (n: number): Buffer => {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(n);
  return b;
};

/**
 * One entry of a removeExpired() pack: [u32le keyCount][u32le valueLen]
 * [value], then each key as [u32le keyLen][key]. The value is carried for
 * the caller's listing; removal looks only at the keys.
 */
export function packEntry(keys: readonly Buffer[], value: Buffer): Buffer {
  return Buffer.concat([u32(keys.length), u32(value.length), value, ...keys.flatMap((k) => [u32(k.length), k])]);
}

/** Decodes an entry pack into [keys, value] pairs. */
export function* unpackEntries(pack: Buffer): Generator<[Buffer[], Buffer]> {
  let off = 0;
  while (off < pack.length) {
    const n = pack.readUInt32LE(off);
    const vlen = pack.readUInt32LE(off + 4);
    const value = pack.subarray(off + 8, off + 8 + vlen);
    off += 8 + vlen;
    const keys: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const klen = pack.readUInt32LE(off);
      keys.push(pack.subarray(off + 4, off + 4 + klen));
      off += 4 + klen;
    }
    yield [keys, value];
  }
}

/** The pack without the one-key entries whose key is in `keys`. */
export function withoutEntries(pack: Buffer, keys: ReadonlySet<string>): Buffer {
  const kept: Buffer[] = [];
  let off = 0;
  for (const [entryKeys, value] of unpackEntries(pack)) {
    const size = 8 + value.length + entryKeys.reduce((n, k) => n + 4 + k.length, 0);
    const [first] = entryKeys;
    if (!(entryKeys.length === 1 && first !== undefined && keys.has(first.toString('latin1'))))
      kept.push(pack.subarray(off, off + size));
    off += size;
  }
  return Buffer.concat(kept);
}
