// A few RESP2 commands over one short connection, for the short-lived hook:
// a client library costs the hook several Node start-ups (node-redis about
// six), and even node:net a tenth of one, so the exchange itself is the
// addon's (native/exchange.cc) and only the protocol is here. Everything,
// connecting included, within one deadline; the long-lived poprelayd uses
// node-redis. TLS (tls-exchange.ts) and Sentinel (sentinel.ts) keep the
// same one call.

import { socketExchange } from '../native.js';
import { viaSentinel, withoutSecrets, type EngineEndpoint, type EngineNode } from '../endpoints.js';
import { PoprelayError } from '../errors.js';
import { tlsExchange } from './tls-exchange.js';

export type RespValue = string | number | null | RespValue[] | RespError;

/**
 * The engine could not be asked. `unreachable`: no connection was made
 * within the time (a host that drops packets), the one case that costs a
 * caller its whole budget every time.
 */
export class EngineError extends PoprelayError {
  constructor(
    message: string,
    readonly unreachable: boolean,
  ) {
    super('ERR_ENGINE', message);
  }
}

/** An error reply (-ERR ...): a value, so that one failed command does not hide the others' replies. */
export class RespError {
  constructor(readonly message: string) {}
}

/** Encodes one command as a RESP array of bulk strings. */
export function encodeCommand(args: readonly string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) parts.push(`$${Buffer.byteLength(a)}\r\n${a}\r\n`);
  return Buffer.from(parts.join(''));
}

/**
 * Parses one reply at `at`; returns it with the offset after it, or null
 * when the buffer does not hold all of it yet. Throws on malformed input.
 */
export function parseReply(buf: Buffer, at = 0): { value: RespValue; next: number } | null {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return null;
  const line = buf.toString('latin1', at + 1, eol);
  const next = eol + 2;
  switch (String.fromCharCode(buf[at] ?? 0)) {
    case '+':
      return { value: line, next };
    case '-':
      return { value: new RespError(line), next };
    case ':':
      return { value: Number(line), next };
    case '$': {
      const n = Number(line);
      if (n === -1) return { value: null, next };
      if (!Number.isInteger(n) || n < 0) throw new Error(`malformed bulk length ${JSON.stringify(line)}`);
      if (buf.length < next + n + 2) return null;
      return { value: buf.toString('latin1', next, next + n), next: next + n + 2 };
    }
    case '*': {
      const n = Number(line);
      if (n === -1) return { value: null, next };
      if (!Number.isInteger(n) || n < 0) throw new Error(`malformed array length ${JSON.stringify(line)}`);
      const items: RespValue[] = [];
      let pos = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, pos);
        if (r === null) return null;
        items.push(r.value);
        pos = r.next;
      }
      return { value: items, next: pos };
    }
    default:
      throw new Error(
        `malformed reply starting ${JSON.stringify(buf.toString('latin1', at, Math.min(buf.length, at + 16)))}`,
      );
  }
}

/** The commands that log in and pick the database, before the caller's (a Sentinel has no database). */
function preamble(e: EngineEndpoint, sentinel: boolean): string[][] {
  const out: string[][] = [];
  if (e.password !== undefined)
    out.push(e.username === undefined ? ['AUTH', e.password] : ['AUTH', e.username, e.password]);
  if (e.db !== 0 && !sentinel) out.push(['SELECT', String(e.db)]);
  return out;
}

/** Where one exchange goes: an engine node or a Sentinel over TCP, or a UNIX socket. */
export type RespTarget = EngineNode | { path: string };

/** What a target is called in messages: the endpoint's own name, or the node a Sentinel named. */
const nameOf = (e: EngineEndpoint, at: RespTarget): string =>
  'path' in at || !viaSentinel(e) ? e.display : `${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}`;

/** One request and the whole answer (the request ends with QUIT), natively or, for TLS, in a worker. */
function exchange(e: EngineEndpoint, at: RespTarget, request: Buffer, timeoutMs: number): Buffer {
  const name = nameOf(e, at);
  try {
    if (e.tls !== undefined && !('path' in at)) return tlsExchange(at, e.tls, request, timeoutMs);
    const [target, port] = 'path' in at ? [at.path, 0] : [at.host, at.port];
    return socketExchange(target, port, request, timeoutMs);
  } catch (err) {
    const { code, phase, message } = err as { code?: string; phase?: string; message?: string };
    if (code === 'ETIMEDOUT') {
      const what = phase === 'connect' ? 'no connection' : phase === 'handshake' ? 'no TLS handshake' : 'no answer';
      const limit = viaSentinel(e) ? `${timeoutMs} ms` : `engine_timeout_ms = ${timeoutMs} ms`;
      throw new EngineError(`engine ${name}: ${what} within ${limit}`, phase === 'connect');
    }
    if (e.tls !== undefined && phase !== undefined && code !== 'ECONNREFUSED') {
      const ca = e.tls.caFile === undefined ? "the system's CAs" : `engine_ca_file = ${e.tls.caFile}`;
      throw new EngineError(
        `engine ${name}: TLS: ${withoutSecrets(e, message ?? code ?? 'failed')} (${code ?? ''}; checked against ${ca}, ` +
          'for the name or address in engine =)',
        false,
      );
    }
    throw new EngineError(`engine ${name}: ${withoutSecrets(e, code ?? message ?? 'failed')}`, false);
  }
}

/**
 * Redis 7.0's Sentinel does not know QUIT: after it, a line with an
 * unbalanced quote, a protocol error, makes any Sentinel close the
 * connection once it has answered (one that knows QUIT has closed it before).
 */
export const CLOSE_SENTINEL = Buffer.from('"\r\n');

/**
 * A Sentinel is sent the engine's user and password, and whether it took
 * them is judged by its answers to what follows: one that asks for none
 * refuses them (no password set, no such user) and answers anyway; one that
 * asks answers NOAUTH. The refusal that matters, or null.
 */
export function sentinelRefusal(auth: readonly RespValue[], replies: readonly RespValue[]): RespError | null {
  if (!replies.some((r) => r instanceof RespError && /^NOAUTH\b/.test(r.message))) return null;
  return auth.find((r): r is RespError => r instanceof RespError) ?? new RespError('NOAUTH Authentication required');
}

/**
 * Sends `commands` to `at` (and QUIT, so that the engine closes when it has
 * answered) in one write and returns their replies, in order; throws an
 * EngineError when it cannot be reached, refuses the login or the
 * database, or the whole exchange takes more than `timeoutMs`. A Sentinel
 * (`sentinel`) that asks for no password answers anyway (sentinelRefusal). Blocking:
 * for the short-lived hook, the sweep and doctor.
 */
export function respCallTo(
  e: EngineEndpoint,
  at: RespTarget,
  commands: readonly string[][],
  timeoutMs: number,
  sentinel = false,
): RespValue[] {
  const pre = preamble(e, sentinel);
  const all = [...pre, ...commands, ['QUIT']];
  const request = Buffer.concat([...all.map(encodeCommand), ...(sentinel ? [CLOSE_SENTINEL] : [])]);
  const answer = exchange(e, at, request, timeoutMs);
  const name = nameOf(e, at);
  const replies: RespValue[] = [];
  try {
    for (let r = parseReply(answer); r !== null; r = parseReply(answer, r.next)) replies.push(r.value);
  } catch (err) {
    // A malformed reply is quoted, and a server that echoes what it was sent would echo AUTH.
    throw new EngineError(`engine ${name}: ${withoutSecrets(e, (err as Error).message)}`, false);
  }
  const refused = sentinel
    ? sentinelRefusal(replies.slice(0, pre.length), replies.slice(pre.length, pre.length + commands.length))
    : replies.slice(0, pre.length).find((v): v is RespError => v instanceof RespError);
  if (refused !== undefined && refused !== null) {
    throw new EngineError(
      // A server that does not know AUTH quotes its arguments: the password.
      `engine ${name}: refused ${pre[replies.indexOf(refused)]?.[0] ?? 'AUTH'}: ${withoutSecrets(e, refused.message)}`,
      false,
    );
  }
  if (replies.length < all.length) throw new EngineError(`engine ${name}: closed the connection`, false);
  return replies.slice(pre.length, pre.length + commands.length);
}
