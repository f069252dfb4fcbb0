// The engine's primary through Sentinel for the long-lived clients
// (poprelayd, its mirror, poprelay's commands): one node-redis client of
// the primary at a time, confirmed with ROLE. A lost connection, a
// -READONLY answer, a failover notice (sentinel-notices.ts) or the
// Sentinels naming another node (asked every second: a notice can be
// missed while disconnected; the question cannot) end it and the
// Sentinels are asked again; their list
// is refreshed from the Sentinels themselves (SENTINEL sentinels), so that
// Sentinels added later are found and removed ones are not waited for.

import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

import { asEngineClient, nodeClient, tlsOptions, type EngineClient, type NodeClient } from './node-client.js';
import { withoutSecrets, type EngineEndpoint, type EngineNode } from '../endpoints.js';
import { PoprelayError } from '../errors.js';
import { CLOSE_SENTINEL, encodeCommand, parseReply, sentinelRefusal, type RespValue } from './resp.js';
import { watchFailovers } from './sentinel-notices.js';
import { showNode } from './sentinel.js';

type SentinelEndpoint = EngineEndpoint & { sentinels: EngineNode[]; service: string };

/** How often the Sentinels are asked which node is the primary. */
const CHECK_MS = 1000;
/** How long one question to one Sentinel may take. */
const ASK_MS = 1000;
/** How long the primary may take to answer PING or ROLE before it counts as gone. */
const ANSWER_MS = 500;
/** How long connecting to a node may take (node-redis's own bound on the TCP connection is 2 s). */
const CONNECT_MS = 2500;

const TIMED_OUT = Symbol('timed out');

/** `p`'s value, or TIMED_OUT after `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<typeof TIMED_OUT>((r) => (timer = setTimeout(() => r(TIMED_OUT), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Replies to `commands` from a Sentinel, after AUTH where it asks for one. */
function askSentinel(e: SentinelEndpoint, at: EngineNode, commands: string[][]): Promise<RespValue[]> {
  const pre =
    e.password === undefined
      ? []
      : [e.username === undefined ? ['AUTH', e.password] : ['AUTH', e.username, e.password]];
  const all = [...pre, ...commands, ['QUIT']];
  return new Promise((resolve, reject) => {
    const s: Socket =
      e.tls === undefined
        ? netConnect({ host: at.host, port: at.port })
        : tlsConnect({ host: at.host, port: at.port, ...tlsOptions(e, at.host) });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => s.destroy(new Error(`no answer within ${ASK_MS} ms`)), ASK_MS);
    s.once(e.tls === undefined ? 'connect' : 'secureConnect', () =>
      s.write(Buffer.concat([...all.map(encodeCommand), CLOSE_SENTINEL])),
    );
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`Sentinel ${showNode(at)}: ${withoutSecrets(e, err.message)}`));
    });
    s.on('close', () => {
      clearTimeout(timer);
      const answer = Buffer.concat(chunks);
      const replies: RespValue[] = [];
      try {
        for (let r = parseReply(answer); r !== null; r = parseReply(answer, r.next)) replies.push(r.value);
      } catch (err) {
        reject(new Error(`Sentinel ${showNode(at)}: ${withoutSecrets(e, (err as Error).message)}`));
        return;
      }
      const refused = sentinelRefusal(
        replies.slice(0, pre.length),
        replies.slice(pre.length, pre.length + commands.length),
      );
      if (refused !== null)
        reject(new Error(`Sentinel ${showNode(at)}: refused AUTH: ${withoutSecrets(e, refused.message)}`));
      else if (replies.length < all.length) reject(new Error(`Sentinel ${showNode(at)}: closed the connection`));
      else resolve(replies.slice(pre.length, pre.length + commands.length));
    });
  });
}

/** The primary the first Sentinel that knows names, and the Sentinels it knows of besides itself. */
async function findPrimary(
  e: SentinelEndpoint,
  sentinels: readonly EngineNode[],
): Promise<{ primary: EngineNode; others: EngineNode[] }> {
  const failures: string[] = [];
  for (const at of sentinels) {
    try {
      const [primary, others] = await askSentinel(e, at, [
        ['SENTINEL', 'get-master-addr-by-name', e.service],
        ['SENTINEL', 'sentinels', e.service],
      ]);
      if (!Array.isArray(primary) || typeof primary[0] !== 'string' || typeof primary[1] !== 'string') {
        failures.push(`Sentinel ${showNode(at)}: does not monitor ${e.service}`);
        continue;
      }
      return { primary: { host: primary[0], port: Number(primary[1]) }, others: sentinelsIn(others) };
    } catch (err) {
      failures.push((err as Error).message);
    }
  }
  throw new Error(`no Sentinel named the primary of ${e.service}: ${failures.join('; ')}`);
}

/** The Sentinels in SENTINEL sentinels' answer (a list of field-value lists). */
function sentinelsIn(answer: RespValue | undefined): EngineNode[] {
  if (!Array.isArray(answer)) return [];
  return answer.flatMap((fields) => {
    if (!Array.isArray(fields)) return [];
    const field = (name: string): RespValue | undefined => fields[fields.indexOf(name) + 1];
    const ip = field('ip');
    const port = field('port');
    return typeof ip === 'string' && typeof port === 'string' ? [{ host: ip, port: Number(port) }] : [];
  });
}

const sameNode = (a: EngineNode, b: EngineNode): boolean => a.host === b.host && a.port === b.port;

/** The node's role; null when the engine user may not ask (then -READONLY tells). */
async function roleOf(c: NodeClient): Promise<string | null> {
  try {
    const reply = await c.sendCommand(['ROLE']);
    return Array.isArray(reply) && typeof reply[0] === 'string' ? reply[0] : 'unknown';
  } catch (err) {
    if (/^NOPERM\b/.test((err as Error).message)) return null;
    throw err;
  }
}

/** A client of the primary the Sentinels name, confirmed; throws ERR_ENGINE. */
export async function connectToPrimary(e: SentinelEndpoint, reconnect = false): Promise<NodeClient> {
  let primary: EngineNode;
  try {
    ({ primary } = await findPrimary(e, e.sentinels));
  } catch (err) {
    throw new PoprelayError('ERR_ENGINE', `engine ${e.display}: ${(err as Error).message}`);
  }
  const client = nodeClient(e, primary, reconnect);
  let failure: Error | undefined;
  client.on('error', (err: Error) => (failure = err));
  try {
    if ((await within(client.connect(), CONNECT_MS)) === TIMED_OUT)
      throw new Error(`no connection within ${CONNECT_MS} ms`);
    const role = await within(roleOf(client), ANSWER_MS);
    if (role === TIMED_OUT) throw new Error(`no answer to ROLE within ${ANSWER_MS} ms`);
    if (role !== null && role !== 'master') throw new Error(`it is a ${role}, not the primary (a failover under way)`);
  } catch (err) {
    client.destroy();
    const why = (failure ?? (err as Error)).message || (err as Error).name;
    throw new PoprelayError(
      'ERR_ENGINE',
      `engine ${e.display}: primary ${showNode(primary)}: ${withoutSecrets(e, why)}. ` +
        'Check engine in poprelay.ini and that the engine runs.',
    );
  }
  return client;
}

/** Keeps a client of whichever node is the primary; isReady only while one is confirmed. */
export class SentinelClient implements EngineClient {
  private current: { node: EngineNode; client: NodeClient; api: EngineClient } | null = null;
  private sentinels: EngineNode[];
  private readonly patterns: Array<[string, (message: string, channel: string) => void]> = [];
  private readonly readyListeners: Array<() => void> = [];
  private closed = false;
  private finding = false;
  private readonly timer: NodeJS.Timeout;
  private readonly notices: { stop(): void };

  constructor(
    private readonly e: SentinelEndpoint,
    private readonly say: (line: string) => void,
  ) {
    this.sentinels = [...e.sentinels];
    void this.find();
    this.timer = setInterval(() => void this.check(), CHECK_MS);
    this.notices = watchFailovers(
      e,
      () => this.sentinels,
      (to) => {
        const now = this.current;
        if (now !== null && !sameNode(now.node, to))
          this.lost(now.client, `failover notice: the Sentinels promoted ${showNode(to)}`);
      },
    );
  }

  get isReady(): boolean {
    return this.current?.client.isReady ?? false;
  }

  /** Finds the primary and connects to it, trying again until it can or the client is closed. */
  private async find(): Promise<void> {
    if (this.finding || this.closed) return;
    this.finding = true;
    try {
      while (!this.closed && this.current === null) {
        try {
          await this.connectTo((await this.learn()).primary);
        } catch (err) {
          this.say(`engine ${this.e.display}: ${withoutSecrets(this.e, (err as Error).message)}`);
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    } finally {
      this.finding = false;
    }
  }

  /** The Sentinels' primary; their list grows by the Sentinels they know (the configured ones stay in it). */
  private async learn(): Promise<{ primary: EngineNode }> {
    const found = await findPrimary(this.e, this.sentinels);
    const known = [...this.e.sentinels];
    for (const s of found.others) if (!known.some((k) => sameNode(k, s))) known.push(s);
    this.sentinels = known;
    return found;
  }

  private async connectTo(node: EngineNode): Promise<void> {
    const client = nodeClient(this.e, node, false);
    client.on('error', () => this.lost(client, 'connection lost'));
    client.on('end', () => this.lost(client, 'connection closed'));
    // A node whose host hung accepts connections (the kernel does) and never answers what a client
    // sends on connecting, nor ROLE: both bounded.
    const connected = await within(client.connect(), CONNECT_MS).catch((err: Error) => {
      client.destroy();
      throw err;
    });
    if (connected === TIMED_OUT) {
      client.destroy();
      throw new Error(`${showNode(node)}: no connection within ${CONNECT_MS} ms`);
    }
    const role = await within(roleOf(client), ANSWER_MS).catch((err: Error) => {
      client.destroy();
      throw err;
    });
    if (role === TIMED_OUT) {
      client.destroy();
      throw new Error(`${showNode(node)} does not answer ROLE within ${ANSWER_MS} ms`);
    }
    if (role !== null && role !== 'master') {
      client.destroy();
      throw new Error(`${showNode(node)} is a ${role}, not the primary (a failover under way)`);
    }
    for (const [pattern, listener] of this.patterns) await client.pSubscribe(pattern, listener);
    if (this.closed) {
      client.destroy();
      return;
    }
    this.current = { node, client, api: asEngineClient(client) };
    this.say(`engine ${this.e.display}: connected to the primary ${showNode(node)}`);
    for (const listener of this.readyListeners) listener();
  }

  private lost(client: NodeClient, why: string): void {
    if (this.current?.client !== client) return;
    this.current = null;
    this.say(`engine ${this.e.display}: primary: ${why}; asking the Sentinels`);
    if (client.isOpen) client.destroy();
    void this.find();
  }

  /** Whether the Sentinels still name the node in use (a failover notice, asked for). */
  private async check(): Promise<void> {
    const now = this.current;
    if (now === null || this.finding) return;
    // A primary that stopped answering (its host hung) is left at once, so that poprelayd's
    // answers come from its cache rather than after each lookup's wait.
    // (Not a subscriber's connection: it answers no PING as a command; the failover notice moves it.)
    const pong =
      this.patterns.length > 0 ? 'subscribed' : await within(now.client.ping(), ANSWER_MS).catch(() => 'refused');
    if (pong === TIMED_OUT && this.current === now) {
      this.lost(now.client, `no answer to PING within ${ANSWER_MS} ms`);
      return;
    }
    try {
      const { primary } = await this.learn();
      if (!sameNode(primary, now.node)) this.lost(now.client, `the Sentinels now name ${showNode(primary)}`);
    } catch {
      // Sentinels out of reach change nothing: the primary in use goes on answering.
    }
  }

  /** The client of the primary, or an error saying there is none now. */
  private api(): EngineClient {
    if (this.current === null) throw new Error(`engine ${this.e.display}: no primary now (a failover under way)`);
    return this.current.api;
  }

  /** A command's answer; -READONLY (a primary demoted under it) ends the client in use. */
  private async ask<T>(run: (c: EngineClient) => Promise<T>): Promise<T> {
    const now = this.current;
    try {
      return await run(this.api());
    } catch (err) {
      if (now !== null && /^READONLY\b/.test((err as Error).message)) this.lost(now.client, 'it is a replica now');
      throw err;
    }
  }

  get = (key: string) => this.ask((c) => c.get(key));
  pExpireTime = (key: string) => this.ask((c) => c.pExpireTime(key));
  mGet = (keys: string[]) => this.ask((c) => c.mGet(keys));
  set = (key: string, value: string) => this.ask((c) => c.set(key, value));
  del = (keys: string | string[]) => this.ask((c) => c.del(keys));
  incrBy = (key: string, increment: number) => this.ask((c) => c.incrBy(key, increment));
  expireAtNx = (key: string, unixSeconds: number) => this.ask((c) => c.expireAtNx(key, unixSeconds));
  eval = (script: string, options: { keys: string[]; arguments: string[] }) => this.ask((c) => c.eval(script, options));
  configGet = (name: string) => this.ask((c) => c.configGet(name));
  configSet = (name: string, value: string) => this.ask((c) => c.configSet(name, value));
  scanIterator = (options: { MATCH: string; COUNT: number }) => this.api().scanIterator(options);

  /** Subscribed on the primary in use and on every one after it. */
  async pSubscribe(pattern: string, listener: (message: string, channel: string) => void): Promise<unknown> {
    this.patterns.push([pattern, listener]);
    return this.current?.client.pSubscribe(pattern, listener);
  }

  on(_event: 'ready', listener: () => void): this {
    this.readyListeners.push(listener);
    return this;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.notices.stop();
    const c = this.current;
    this.current = null;
    await c?.client.close().catch(() => undefined);
  }

  destroy(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.notices.stop();
    this.current?.client.destroy();
    this.current = null;
  }
}
