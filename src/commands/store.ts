// Where poprelay's commands find the relay set: this host's map, or the
// shared engine when engine is set in poprelay.ini (relay-store.ts).

import type { Config, MapSettings } from '../config.js';
import { putEntry, readEntries, readQueued, recordLogin, removeAddress, sweepMap } from '../map/relay-map.js';
import type { RelayStore } from './relay-store.js';

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
