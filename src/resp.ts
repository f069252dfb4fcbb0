// A few RESP2 commands over one short connection, for the short-lived hook:
// a client library costs the hook several Node start-ups (field notes: a
// raw socket ~1.1x an empty start, node-redis ~6x). Everything, connecting
// included, within one deadline; the long-lived poprelayd uses node-redis.

import { connect, type Socket } from 'node:net';

import type { EngineEndpoint } from './endpoints.js';
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
 * Sends `commands` in one write and resolves with their replies, in order,
 * once all have arrived; rejects (ERR_ENGINE) when the engine cannot be
 * reached, refuses the login or the database, or the whole exchange takes
 * more than `timeoutMs`.
 */
export function respCall(e: EngineEndpoint, commands: readonly string[][], timeoutMs: number): Promise<RespValue[]> {
  const pre = preamble(e);
  const all = [...pre, ...commands];
  return new Promise((resolve, reject) => {
    const socket: Socket = 'path' in e ? connect({ path: e.path }) : connect({ host: e.host, port: e.port });
    let buf: Buffer = Buffer.alloc(0);
    const replies: RespValue[] = [];
    const fail = (why: string, unreachable = false): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new EngineError(`engine ${e.display}: ${why}`, unreachable));
    };
    // When the time is up, the I/O that came meanwhile is looked at first
    // (setImmediate runs after the poll phase): a process the CPU kept
    // waiting must not count its own wait against the engine.
    const timer = setTimeout(
      () =>
        setImmediate(() =>
          fail(
            socket.connecting
              ? `no connection within engine_timeout_ms = ${timeoutMs} ms`
              : `no answer within engine_timeout_ms = ${timeoutMs} ms`,
            socket.connecting,
          ),
        ),
      timeoutMs,
    );
    socket.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message));
    socket.on('close', () => fail('closed the connection'));
    socket.on('connect', () => socket.write(Buffer.concat(all.map(encodeCommand))));
    socket.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      try {
        for (let r = parseReply(buf); r !== null; r = parseReply(buf)) {
          replies.push(r.value);
          buf = buf.subarray(r.next);
        }
      } catch (err) {
        fail((err as Error).message);
        return;
      }
      if (replies.length < all.length) return;
      const refused = replies.slice(0, pre.length).find((v): v is RespError => v instanceof RespError);
      if (refused !== undefined) {
        fail(`refused ${pre[replies.indexOf(refused)]?.[0] ?? 'login'}: ${refused.message}`);
        return;
      }
      clearTimeout(timer);
      socket.removeAllListeners('close');
      socket.destroy();
      resolve(replies.slice(pre.length));
    });
  });
}
