// The long-lived clients of the engine (poprelayd, and poprelay's commands
// when engine is set) use node-redis, which reconnects and resubscribes by
// itself; the hook uses resp.ts. What keys and values mean is relayset.ts's.

import { createClient } from '@redis/client';

import type { ClientAddress } from './address.js';
import { withoutSecrets, type EngineEndpoint } from './endpoints.js';
import { PoprelayError } from './errors.js';
import { addressOfEngineKey, engineKey, KEY_PATTERN } from './relayset.js';
import { entryTime } from './values.js';

/** An entry of the shared set: a login time, or permanent. */
export interface SharedEntry {
  addr: ClientAddress;
  time: number | null;
}

function clientOptions(e: EngineEndpoint, reconnect: boolean) {
  const socket =
    'path' in e ? { path: e.path, connectTimeout: 2000 } : { host: e.host, port: e.port, connectTimeout: 2000 };
  return {
    socket: {
      ...socket,
      // Up to 2 s between tries: a restarted engine is found again within that.
      reconnectStrategy: reconnect
        ? (tries: number) => Math.min(100 * 2 ** Math.min(tries, 5), 2000)
        : (false as const),
    },
    database: e.db,
    ...(e.username !== undefined ? { username: e.username } : {}),
    ...(e.password !== undefined ? { password: e.password } : {}),
    // A command while disconnected fails at once rather than waiting for the engine to come back.
    disableOfflineQueue: true,
    // No CLIENT SETINFO at each connection: the roles' ACLs (docs/cluster.md) do not allow it, and
    // Redis 7.2 and Valkey would log each refusal in ACL LOG (Redis 7.0 does not know it).
    disableClientInfo: true,
  };
}

const newClient = (e: EngineEndpoint, reconnect: boolean) => createClient(clientOptions(e, reconnect));

export type EngineClient = ReturnType<typeof newClient>;

/**
 * A client that connects in the background and keeps reconnecting; `said`
 * hears each change (ready, lost) and each error, once per kind in a row.
 */
export function keepConnected(e: EngineEndpoint, said: (line: string) => void): EngineClient {
  const client = newClient(e, true);
  let last = '';
  const say = (line: string): void => {
    if (line !== last) said(line);
    last = line;
  };
  client.on('ready', () => say(`engine ${e.display}: connected`));
  client.on('error', (err: Error) => say(`engine ${e.display}: ${withoutSecrets(e, err.message || err.name)}`));
  client.connect().catch(() => undefined); // errors arrive as 'error' events; it goes on trying
  return client;
}

/** A client for one command of poprelay's: connected now, or ERR_ENGINE. */
export async function connectOnce(e: EngineEndpoint): Promise<EngineClient> {
  const client = newClient(e, false);
  let failure: Error | undefined;
  client.on('error', (err: Error) => (failure = err));
  try {
    await client.connect();
  } catch (err) {
    const why = (failure ?? (err as Error)).message || (err as Error).name;
    throw new PoprelayError(
      'ERR_ENGINE',
      `engine ${e.display}: ${withoutSecrets(e, why)}. Check engine in poprelay.ini and that the engine runs.`,
    );
  }
  return client;
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
  for await (const keys of client.scanIterator({ MATCH: KEY_PATTERN, COUNT: 1000 })) {
    if (keys.length === 0) continue;
    const values = await client.mGet(keys);
    keys.forEach((key, i) => {
      const addr = addressOfEngineKey(key);
      const value = values[i];
      if (addr === null || value === null || value === undefined) return;
      out.push({ addr, time: entryTime(value) });
    });
  }
  return out;
}
