// The long-lived clients of the engine (poprelayd, and poprelay's commands
// when engine is set): connected to one node (node-client.ts) or through
// Sentinel (sentinel-client.ts); the hook uses call.ts. What keys and values
// mean is relayset.ts's.

import type { ClientAddress } from '../address.js';
import { viaSentinel, withoutSecrets, type EngineEndpoint } from '../endpoints.js';
import { PoprelayError } from '../errors.js';
import { addressOfEngineKey, engineKey, KEY_PATTERN } from './relayset.js';
import { asEngineClient, nodeClient, type EngineClient } from './node-client.js';
import { connectToPrimary, SentinelClient } from './sentinel-client.js';
import { entryTime } from '../map/values.js';

export type { EngineClient };

/** An entry of the shared set: a login time, or permanent. */
export interface SharedEntry {
  addr: ClientAddress;
  time: number | null;
}

/**
 * A client that connects in the background and keeps reconnecting; `said`
 * hears each change (ready, lost) and each error, once per kind in a row.
 */
export function keepConnected(e: EngineEndpoint, said: (line: string) => void): EngineClient {
  let last = '';
  const say = (line: string): void => {
    if (line !== last) said(line);
    last = line;
  };
  if (viaSentinel(e)) return new SentinelClient(e, say);
  const client = nodeClient(e, e, true);
  client.on('ready', () => say(`engine ${e.display}: connected`));
  client.on('error', (err: Error) => say(`engine ${e.display}: ${withoutSecrets(e, err.message || err.name)}`));
  client.connect().catch(() => undefined); // errors arrive as 'error' events; it goes on trying
  return asEngineClient(client);
}

/** A client for one command of poprelay's: connected now, or ERR_ENGINE. */
export async function connectOnce(e: EngineEndpoint): Promise<EngineClient> {
  let failure: Error | undefined;
  try {
    if (viaSentinel(e)) return asEngineClient(await connectToPrimary(e));
    const client = nodeClient(e, e, false);
    client.on('error', (err: Error) => (failure = err));
    await client.connect();
    return asEngineClient(client);
  } catch (err) {
    if (err instanceof PoprelayError) throw err;
    const why = (failure ?? (err as Error)).message || (err as Error).name;
    throw new PoprelayError(
      'ERR_ENGINE',
      `engine ${e.display}: ${withoutSecrets(e, why)}. Check engine in poprelay.ini and that the engine runs.`,
    );
  }
}

/** What the engine holds for an address, and until when (ms since the epoch; null: no expiry). */
export async function lookupShared(
  client: EngineClient,
  addr: ClientAddress,
): Promise<{ value: string; expiresAtMs: number | null } | null> {
  const key = engineKey(addr);
  const [value, expires] = await Promise.all([client.get(key), client.pExpireTime(key)]);
  if (value === null) return null;
  return { value, expiresAtMs: expires >= 0 ? expires : null };
}

/** Every entry of the shared set (SCAN, then MGET in batches). */
export async function readSharedSet(client: EngineClient): Promise<SharedEntry[]> {
  const out: SharedEntry[] = [];
  for await (const found of client.scanIterator({ MATCH: KEY_PATTERN, COUNT: 1000 })) {
    // The who keys and user_limit's count keys share the prefix: not read, they are no entries.
    const keys = found.flatMap((key) => {
      const addr = addressOfEngineKey(key);
      return addr === null ? [] : [{ key, addr }];
    });
    if (keys.length === 0) continue;
    const values = await client.mGet(keys.map((k) => k.key));
    keys.forEach(({ addr }, i) => {
      const value = values[i];
      if (value === null || value === undefined) return;
      out.push({ addr, time: entryTime(value) });
    });
  }
  return out;
}
