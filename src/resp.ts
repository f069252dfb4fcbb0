// A few RESP2 commands over one short connection, for the short-lived hook:
// a client library costs the hook several Node start-ups (node-redis about
// six), and even node:net a tenth of one, so the exchange itself is the
// addon's (native/exchange.cc) and only the protocol is here. Everything,
// connecting included, within one deadline; the long-lived poprelayd uses
// node-redis.

import { socketExchange, type NativeError } from './bdb.js';
import { withoutSecrets, type EngineEndpoint } from './endpoints.js';
import { PoprelayError } from './errors.js';

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

/** The commands that log in and pick the database, before the caller's. */
function preamble(e: EngineEndpoint): string[][] {
  const out: string[][] = [];
  if (e.password !== undefined)
    out.push(e.username === undefined ? ['AUTH', e.password] : ['AUTH', e.username, e.password]);
  if (e.db !== 0) out.push(['SELECT', String(e.db)]);
  return out;
}

/**
 * Sends `commands` (and QUIT, so that the engine closes when it has
 * answered) in one write and returns their replies, in order; throws an
 * EngineError when the engine cannot be reached, refuses the login or the
 * database, or the whole exchange takes more than `timeoutMs`. Blocking:
 * for the short-lived hook, the sweep and doctor.
 */
export function respCall(e: EngineEndpoint, commands: readonly string[][], timeoutMs: number): RespValue[] {
  const pre = preamble(e);
  const all = [...pre, ...commands, ['QUIT']];
  let answer: Buffer;
  try {
    const [target, port] = 'path' in e ? [e.path, 0] : [e.host, e.port];
    answer = socketExchange(target, port, Buffer.concat(all.map(encodeCommand)), timeoutMs);
  } catch (err) {
    const { code, phase } = err as NativeError & { phase?: string };
    if (code === 'ETIMEDOUT') {
      const what = phase === 'connect' ? 'no connection' : 'no answer';
      throw new EngineError(
        `engine ${e.display}: ${what} within engine_timeout_ms = ${timeoutMs} ms`,
        phase === 'connect',
      );
    }
    throw new EngineError(`engine ${e.display}: ${withoutSecrets(e, code ?? (err as Error).message)}`, false);
  }
  const replies: RespValue[] = [];
  try {
    for (let r = parseReply(answer); r !== null; r = parseReply(answer, r.next)) replies.push(r.value);
  } catch (err) {
    // A malformed reply is quoted, and a server that echoes what it was sent would echo AUTH.
    throw new EngineError(`engine ${e.display}: ${withoutSecrets(e, (err as Error).message)}`, false);
  }
  const refused = replies.slice(0, pre.length).find((v): v is RespError => v instanceof RespError);
  if (refused !== undefined) {
    throw new EngineError(
      // A server that does not know AUTH quotes its arguments: the password.
      `engine ${e.display}: refused ${pre[replies.indexOf(refused)]?.[0] ?? 'login'}: ${withoutSecrets(e, refused.message)}`,
      false,
    );
  }
  if (replies.length < all.length) throw new EngineError(`engine ${e.display}: closed the connection`, false);
  return replies.slice(pre.length, pre.length + commands.length);
}
