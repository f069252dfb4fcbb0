// The shared relay set's meaning in the engine (Valkey/Redis), the same as
// the map's (map/values.ts): one key per address, its value the last login in
// Unix seconds, or "OK" for a permanent entry; the engine's own expiry
// (EXAT login + timeout) removes a dated key, so no sweep is needed there.
// Every client (the hook over resp.ts, poprelay and poprelayd over
// node-redis) uses these names and this script.

import { addressOfKey, type ClientAddress } from '../address.js';

export const KEY_PREFIX = 'poprelay:';
export const KEY_PATTERN = `${KEY_PREFIX}*`;
/** The channel of the engine's keyspace notifications for poprelay's keys in database `db`. */
export const keyspaceChannel = (db: number): string => `__keyspace@${db}__:${KEY_PATTERN}`;

/** The engine's key for an address: its canonical text (IPv6 compressed, lowercase). */
export const engineKey = (addr: ClientAddress): string => `${KEY_PREFIX}${addr.text}`;

/**
 * The keys under the prefix that are no address: each address's who key
 * (below) and user_limit's count keys (daemon/engine-counter.ts). Said
 * here, so that every reader of the relay set skips them by name rather
 * than by their text failing to parse as an address.
 */
export const WHO_PREFIX = `${KEY_PREFIX}who:`;
export const COUNT_PREFIX = `${KEY_PREFIX}count:`;
export const COUNT_PATTERN = `${COUNT_PREFIX}*`;

/** The address a key names, or null for a key that is not one of ours. */
export function addressOfEngineKey(key: string): ClientAddress | null {
  if (!key.startsWith(KEY_PREFIX) || key.startsWith(WHO_PREFIX) || key.startsWith(COUNT_PREFIX)) return null;
  return addressOfKey(key.slice(KEY_PREFIX.length));
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

export type EngineOutcome = 'recorded' | 'fresh' | 'permanent' | `shared ${string}`;

/** The users a "shared {...}" outcome names, latest first; [] for any other outcome. */
export const sharedUsers = (outcome: string): Array<{ user: string; service: string; time: number }> =>
  outcome.startsWith('shared ') ? parseEngineWho(outcome.slice(7), 0) : [];

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

/**
 * Who logged in from an address, in the engine: a string key beside the
 * address's, "poprelay:who:<address>", holding JSON {"user": ["service",
 * time], ...} of the users within the timeout, expiring with the last of
 * them. A string rather than a hash, so that the hosts' engine users need
 * no command beyond those they have (the record script's GET and SET; an
 * MTA host's GET), and it is no address: readers of the relay set skip it.
 */
export const whoKey = (addr: ClientAddress): string => `${WHO_PREFIX}${addr.text}`;

/**
 * Records a login with its user: KEYS[1] the address's key, KEYS[2] its who
 * key; ARGV the login time, timeout_minutes in seconds, refresh_seconds, the
 * user, the service, and shared_address_users (0: off; -1: the recorder
 * found the address shared already). The who key keeps the users within the
 * timeout; when they are more than the limit, the address's dated entry is
 * removed and "shared " returned with the who key's JSON, for the line that
 * names them (a permanent entry stays: "permanent"); otherwise as
 * RECORD_SCRIPT.
 */
export const RECORD_WHO_SCRIPT = `
local t = tonumber(ARGV[1])
local timeout = tonumber(ARGV[2])
local who = {}
local w = redis.call('GET', KEYS[2])
if w then
  local ok, d = pcall(cjson.decode, w)
  if ok and type(d) == 'table' then who = d end
end
local kept, n, last = {}, 0, t
for u, v in pairs(who) do
  local vt = type(v) == 'table' and tonumber(v[2]) or nil
  if vt and vt > t - timeout then
    kept[u] = v
    n = n + 1
    if vt > last then last = vt end
  end
end
local prev = kept[ARGV[4]]
if prev == nil then n = n + 1 end
if prev == nil or tonumber(prev[2]) <= t then kept[ARGV[4]] = {ARGV[5], t} end
redis.call('SET', KEYS[2], cjson.encode(kept), 'EXAT', last + timeout)
local v = redis.call('GET', KEYS[1])
local permanent = v and not string.match(v, '^%d+$')
local k = tonumber(ARGV[6])
if k < 0 or (k > 0 and n > k) then
  if permanent then return 'permanent' end
  if v then redis.call('DEL', KEYS[1]) end
  return 'shared ' .. cjson.encode(kept)
end
if v then
  if permanent then return 'permanent' end
  if tonumber(v) + tonumber(ARGV[3]) > t then return 'fresh' end
end
redis.call('SET', KEYS[1], ARGV[1], 'EXAT', t + timeout)
return 'recorded'
`;

/** The EVAL command that records `addr` logging in at `time` as `user` of `service`. */
export function recordWhoCommand(
  addr: ClientAddress,
  time: number,
  timeoutSeconds: number,
  refreshSeconds: number,
  user: string,
  service: string,
  sharedAddressUsers: number,
): string[] {
  return [
    'EVAL',
    RECORD_WHO_SCRIPT,
    '2',
    engineKey(addr),
    whoKey(addr),
    String(time),
    String(timeoutSeconds),
    String(refreshSeconds),
    user,
    service,
    String(sharedAddressUsers),
  ];
}

/** The users in a who key's value within `since`, latest first, with service and time; [] for anything else. */
export function parseEngineWho(
  value: string | null,
  since: number,
): Array<{ user: string; service: string; time: number }> {
  if (value === null) return [];
  let o: unknown;
  try {
    o = JSON.parse(value);
  } catch {
    return [];
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return [];
  const out: Array<{ user: string; service: string; time: number }> = [];
  for (const [user, v] of Object.entries(o as Record<string, unknown>)) {
    if (!Array.isArray(v)) continue;
    const time = Number(v[1]);
    if (Number.isFinite(time) && time >= since) out.push({ user, service: String(v[0] ?? ''), time });
  }
  return out.sort((a, b) => b.time - a.time);
}
