// The long-lived clients of the engine (poprelayd, and poprelay's commands
// when engine is set) use node-redis, which reconnects and resubscribes by
// itself; the hook uses resp.ts. What keys and values mean is relayset.ts's.

import { readFileSync } from 'node:fs';

import { createClient } from '@redis/client';

import type { ClientAddress } from '../address.js';
import { viaSentinel, withoutSecrets, type EngineEndpoint, type EngineNode } from '../endpoints.js';
import { PoprelayError } from '../errors.js';
import { addressOfEngineKey, engineKey, KEY_PATTERN } from './relayset.js';
import { connectToPrimary, SentinelClient } from './sentinel-client.js';
import { entryTime } from '../map/values.js';

/**
 * What poprelayd and poprelay's commands ask of the engine: a node-redis
 * client, or through Sentinel one that follows the primary.
 */
export interface EngineClient {
  readonly isReady: boolean;
  get(key: string): Promise<string | null>;
  pExpireTime(key: string): Promise<number>;
  mGet(keys: string[]): Promise<Array<string | null>>;
  set(key: string, value: string): Promise<unknown>;
  del(keys: string | string[]): Promise<number>;
  incrBy(key: string, increment: number): Promise<number>;
  /** EXPIREAT key seconds NX: sets an expiry only where the key has none. */
  expireAtNx(key: string, unixSeconds: number): Promise<number>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  configGet(name: string): Promise<Record<string, string>>;
  configSet(name: string, value: string): Promise<unknown>;
  scanIterator(options: { MATCH: string; COUNT: number }): AsyncIterable<string[]>;
  pSubscribe(pattern: string, listener: (message: string, channel: string) => void): Promise<unknown>;
  on(event: 'ready', listener: () => void): unknown;
  close(): Promise<unknown>;
  destroy(): void;
}

/** node:tls options for rediss://: the administrator's CA, client certificate and key; host names checked. */
export function tlsOptions(e: EngineEndpoint, host: string) {
  const t = e.tls ?? {};
  const read = (f: string | undefined) => (f === undefined ? undefined : readFileSync(f));
  return {
    tls: true as const,
    ...(/^[0-9.]+$/.test(host) || host.includes(':') ? {} : { servername: host }),
    ...(t.caFile !== undefined ? { ca: read(t.caFile) } : {}),
    ...(t.certFile !== undefined ? { cert: read(t.certFile), key: read(t.keyFile) } : {}),
    rejectUnauthorized: true,
  };
}

/** An entry of the shared set: a login time, or permanent. */
export interface SharedEntry {
  addr: ClientAddress;
  time: number | null;
}

function clientOptions(e: EngineEndpoint, at: EngineNode | { path: string }, reconnect: boolean) {
  const socket =
    'path' in at
      ? { path: at.path, connectTimeout: 2000 }
      : {
          host: at.host,
          port: at.port,
          connectTimeout: 2000,
          ...(e.tls !== undefined ? tlsOptions(e, at.host) : {}),
        };
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

/** A node-redis client of one node (or socket); it reconnects to that one alone. */
export const nodeClient = (e: EngineEndpoint, at: EngineNode | { path: string }, reconnect: boolean) =>
  createClient(clientOptions(e, at, reconnect));

export type NodeClient = ReturnType<typeof nodeClient>;

/** The node-redis client as an EngineClient: the same calls, answers as poprelay reads them. */
export function asEngineClient(c: NodeClient): EngineClient {
  return {
    get isReady() {
      return c.isReady;
    },
    get: (key) => c.get(key),
    pExpireTime: (key) => c.pExpireTime(key),
    mGet: (keys) => c.mGet(keys),
    set: (key, value) => c.set(key, value),
    del: (keys) => c.del(keys),
    incrBy: (key, increment) => c.incrBy(key, increment),
    expireAtNx: (key, unixSeconds) => c.expireAt(key, unixSeconds, 'NX'),
    eval: (script, options) => c.eval(script, options),
    configGet: (name) => c.configGet(name),
    configSet: (name, value) => c.configSet(name, value),
    scanIterator: (options) => c.scanIterator(options),
    pSubscribe: (pattern, listener) => c.pSubscribe(pattern, listener),
    on: (event, listener) => c.on(event, listener),
    close: () => c.close(),
    destroy: () => c.destroy(),
  };
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
