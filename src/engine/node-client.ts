// One engine node through node-redis, the library the long-lived clients
// (poprelayd, poprelay's commands) use, which reconnects and resubscribes by
// itself; and EngineClient, what they ask of the engine, whether of one node
// or, through Sentinel (sentinel-client.ts), of whichever is the primary.

import { readFileSync } from 'node:fs';

import { createClient } from '@redis/client';

import type { EngineEndpoint, EngineNode } from '../endpoints.js';

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
