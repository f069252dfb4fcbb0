// The who journal kept at each login, and the shared-address guard
// (shared_address_users): once more distinct users than that logged in
// from one address within timeout_minutes, the address is a gateway
// (carrier-grade NAT, a hotspot, an office, a proxy) and relaying from it
// would hand the right to everyone behind it, so it stops: its logins are
// not recorded and its dated entry leaves the map. A permanent entry is
// the administrator's and is never touched. Keeping the names must never
// refuse or delay a login: a journal that cannot be written is one line,
// and the guard then counts what it can see.

import { addressOfKey, type ClientAddress } from '../address.js';
import type { Config, MapSettings } from '../config.js';
import { isPoprelayError } from '../errors.js';
import { unchanged, updateMap, valuesBeforeQueueing } from '../map/relay-map.js';
import { classifyValue } from '../map/values.js';
import { appendWho, readWho, usersByAddress, whoLine, type UserSeen, type WhoLine } from './journal.js';

/** A login about to be recorded, as the guard needs it. */
export interface GuardedLogin {
  addr: ClientAddress;
  time: number;
  service: string | undefined;
  user: string | undefined;
  /** Its map entry is permanent: never stopped. */
  permanent: boolean;
}

export interface GuardResult {
  /** The addresses over shared_address_users, with their users (latest first). */
  shared: Map<string, UserSeen[]>;
  /** Why the journal could not be appended to; the logins go on either way. */
  problem: Error | null;
}

/**
 * Appends the logins to the who journal and, with shared_address_users,
 * says which of their addresses now have more users than that within the
 * timeout (the journal and these logins together).
 */
export function keepWho(cfg: Config, logins: readonly GuardedLogin[], now: number): GuardResult {
  const lines = logins.map((l) => whoLine(l.time, l.addr.text, l.service, l.user));
  let problem: Error | null = null;
  try {
    appendWho(cfg.map.path, lines);
  } catch (e) {
    problem = e instanceof Error ? e : new Error(String(e));
  }
  const shared = new Map<string, UserSeen[]>();
  const k = cfg.sharedAddressUsers;
  const asked = new Set(logins.filter((l) => !l.permanent).map((l) => l.addr.text));
  if (k === null || asked.size === 0) return { shared, problem };
  let seen: WhoLine[];
  try {
    seen = readWho(cfg.map.path, asked);
    if (problem !== null) seen.push(...lines);
  } catch {
    seen = lines; // the journal unreadable: this batch alone is what can be counted
  }
  for (const [a, users] of usersByAddress(seen, now - cfg.map.timeoutSeconds))
    if (asked.has(a) && users.length > k) shared.set(a, users);
  return { shared, problem };
}

/** The addresses among the journal's that are over shared_address_users now; empty when it is off. */
export function sharedNow(cfg: Config, lines: readonly WhoLine[], now: number): Map<string, UserSeen[]> {
  const out = new Map<string, UserSeen[]>();
  const k = cfg.sharedAddressUsers;
  if (k === null) return out;
  for (const [a, users] of usersByAddress(lines, now - cfg.map.timeoutSeconds)) if (users.length > k) out.set(a, users);
  return out;
}

/**
 * Removes the dated entries of `addrs` from the map in one write (a
 * permanent key stays); the addresses whose entry it removed. A map that
 * is not there has nothing to remove.
 */
export function removeShared(s: MapSettings, addrs: readonly ClientAddress[]): ClientAddress[] {
  const removed: ClientAddress[] = [];
  if (addrs.length === 0) return removed;
  try {
    updateMap(
      s,
      (db) => {
        for (const a of addrs) {
          let any = false;
          for (const key of a.keys) {
            const k = Buffer.from(key, 'latin1');
            const v = db.get(k);
            if (v === null || classifyValue(v.toString('latin1')).kind === 'permanent') continue;
            any = db.del(k) || any;
          }
          if (any) removed.push(a);
        }
        return removed.length > 0;
      },
      false,
    );
  } catch (e) {
    if (isPoprelayError(e, 'ERR_MAP_MISSING')) return removed;
    throw e;
  }
  return removed;
}

/** "3 users (alice, bob, carol)": who is behind a shared address, for a log line. */
export function describeUsers(users: readonly UserSeen[], show: (u: string) => string, max = 20): string {
  const names = users.slice(0, max).map((u) => show(u.user));
  const more = users.length > max ? `, and ${users.length - max} more` : '';
  return `${users.length} users (${names.join(', ')}${more})`;
}

/**
 * The addresses that relay no more for being shared: over
 * shared_address_users now (the who journal's lines), less those with a
 * permanent entry in the map, which relay whatever the count.
 */
export function stoppedShared(cfg: Config, lines: readonly WhoLine[], now: number): Map<string, UserSeen[]> {
  const shared = sharedNow(cfg, lines, now);
  for (const a of [...shared.keys()]) {
    const addr = addressOfKey(a);
    const values = addr === null ? null : valuesBeforeQueueing(cfg.map, addr.keys);
    if (values !== null && unchanged(values, now, 0) === 'permanent') shared.delete(a);
  }
  return shared;
}

/** stoppedShared from the journal as it is; empty when shared_address_users is off or the journal unreadable. */
export function sharedFromJournal(cfg: Config, now: number): Map<string, UserSeen[]> {
  if (cfg.sharedAddressUsers === null) return new Map();
  try {
    return stoppedShared(cfg, readWho(cfg.map.path), now);
  } catch {
    return new Map();
  }
}
