// The shared relay set's meaning in the engine (Valkey/Redis), the same as
// the map's (values.ts): one key per address, its value the last login in
// Unix seconds, or "OK" for a permanent entry; the engine's own expiry
// (EXAT login + timeout) removes a dated key, so no sweep is needed there.
// Every client (the hook over resp.ts, poprelay and poprelayd over
// node-redis) uses these names and this script.

import { addressOfKey, type ClientAddress } from './address.js';

export const KEY_PREFIX = 'poprelay:';
export const KEY_PATTERN = `${KEY_PREFIX}*`;

/** The engine's key for an address: its canonical text (IPv6 compressed, lowercase). */
export const engineKey = (addr: ClientAddress): string => `${KEY_PREFIX}${addr.text}`;

/** The address a key names, or null for a key that is not one of ours. */
export function addressOfEngineKey(key: string): ClientAddress | null {
  return key.startsWith(KEY_PREFIX) ? addressOfKey(key.slice(KEY_PREFIX.length)) : null;
}

/**
 * Records a login: KEYS[1] the address's key; ARGV the login time, its
 * expiry (EXAT) and refresh_seconds. A permanent entry is left as it is,
 * an entry never moves back in time, and one younger than refresh_seconds
 * is not written again. Returns "recorded", "fresh" or "permanent".
 */
export const RECORD_SCRIPT = `
local v = redis.call('GET', KEYS[1])
if v then
  if not string.match(v, '^%d+$') then return 'permanent' end
  if tonumber(v) + tonumber(ARGV[3]) > tonumber(ARGV[1]) then return 'fresh' end
end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
return 'recorded'
`;

export type EngineOutcome = 'recorded' | 'fresh' | 'permanent';

/** The EVAL command that records `addr` logging in at `now`. */
export function recordCommand(
  addr: ClientAddress,
  now: number,
  timeoutSeconds: number,
  refreshSeconds: number,
): string[] {
  return [
    'EVAL',
    RECORD_SCRIPT,
    '1',
    engineKey(addr),
    String(now),
    String(now + timeoutSeconds),
    String(refreshSeconds),
  ];
}
