// Where poprelay's commands find the relay set: this host's map, or the
// shared engine when engine is set in poprelay.ini. One interface, so that
// list, check, add, del and flush say the same things about either.

import type { ClientAddress } from './address.js';
import type { Config, MapSettings } from './config.js';
import { putEntry, readEntries, readQueued, recordLogin, removeAddress, sweepMap, type RelayEntry } from './map.js';
import type { QueuedLogin } from './queue.js';

export interface RelayStore {
  /** What it is, for messages: the map's path, or the engine's URL. */
  readonly where: string;
  /** "the map", or "the shared set". */
  readonly noun: string;
  entries(): Promise<RelayEntry[]>;
  /** The entry of one address, with the keys found of it; null when it has none. */
  entry(addr: ClientAddress): Promise<RelayEntry | null>;
  /** Logins recorded but not yet in it (the map's queue; the engine has none). */
  queued(): Promise<QueuedLogin[]>;
  /** A login now; "permanent" when a permanent entry was left as it is. */
  record(addr: ClientAddress, now: number): Promise<'recorded' | 'permanent'>;
  putPermanent(addr: ClientAddress): Promise<void>;
  remove(addr: ClientAddress): Promise<boolean>;
  /** Removes every dated entry; counts what it removed and the permanent entries left. */
  flushDated(): Promise<{ removed: number; permanent: number }>;
  close(): Promise<void>;
}

export function mapStore(s: MapSettings): RelayStore {
  return {
    where: s.path,
    noun: 'the map',
    entries: async () => readEntries(s),
    // The whole map is read, as list reads it: that also refuses a map it must not use (NUL-keyed, corrupt).
    entry: async (addr) => readEntries(s).find((e) => e.address === addr.text) ?? null,
    queued: async () => readQueued(s),
    record: async (addr, now) => recordLogin(s, addr, now),
    putPermanent: async (addr) => putEntry(s, addr, 'OK'),
    remove: async (addr) => removeAddress(s, addr),
    flushDated: async () => {
      // Every dated entry is "older than the timeout" at the end of time.
      const report = sweepMap({ ...s, timeoutSeconds: 0 }, { now: Number.MAX_SAFE_INTEGER });
      return { removed: report.removed.length, permanent: report.permanent };
    },
    close: async () => undefined,
  };
}

/** The store the config names: the engine when set (loaded only then), else the map. */
export async function openStore(cfg: Config): Promise<RelayStore> {
  if (cfg.engine === null) return mapStore(cfg.map);
  return (await import('./engine-store.js')).engineStore(cfg, cfg.engine);
}
