// The addresses the shared-address guard stops, as the engine has them:
// every who key (relayset.ts) with more users than shared_address_users
// within the timeout, less those with a permanent entry. For poprelay list
// and stats with engine set.

import { addressOfKey } from '../address.js';
import type { Config } from '../config.js';
import type { EngineClient } from './client.js';
import { KEY_PREFIX, parseEngineWho, WHO_PREFIX } from './relayset.js';
import type { UserSeen } from '../who/journal.js';

export async function sharedInEngine(
  cfg: Config,
  client: Pick<EngineClient, 'scanIterator' | 'mGet'>,
  now: number,
): Promise<Map<string, UserSeen[]>> {
  const out = new Map<string, UserSeen[]>();
  const k = cfg.sharedAddressUsers;
  if (k === null) return out;
  for await (const keys of client.scanIterator({ MATCH: `${WHO_PREFIX}*`, COUNT: 1000 })) {
    if (keys.length === 0) continue;
    const values = await client.mGet(keys);
    const over: Array<[string, UserSeen[]]> = [];
    keys.forEach((key, i) => {
      const address = addressOfKey(key.slice(WHO_PREFIX.length))?.text;
      const users = parseEngineWho(values[i] ?? null, now - cfg.map.timeoutSeconds);
      if (address !== undefined && users.length > k)
        over.push([address, users.map((u) => ({ user: u.user, service: u.service, last: u.time, logins: 0 }))]);
    });
    if (over.length === 0) continue;
    // A permanent entry relays whatever the count.
    const relay = await client.mGet(over.map(([a]) => `${KEY_PREFIX}${a}`));
    over.forEach(([a, users], i) => {
      const v = relay[i];
      if (v === null || v === undefined || /^[0-9]+$/.test(v)) out.set(a, users);
    });
  }
  return out;
}
