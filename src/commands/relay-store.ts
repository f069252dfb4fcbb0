// The relay set as poprelay's commands see it, this host's map or the shared
// engine: one interface, so that list, check, add, del and flush say the same
// things about either (store.ts picks one).

import type { ClientAddress } from '../address.js';
import type { RelayEntry } from '../map/relay-map.js';
import type { QueuedLogin } from '../map/queue.js';

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
