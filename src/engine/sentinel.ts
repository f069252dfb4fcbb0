// The engine's primary through Sentinel (engine = redis+sentinel://), for
// the blocking callers (the hook, the sweep, doctor): the primary last
// found is asked first, with ROLE in the same write, so that a login costs
// no extra round trip; a replica's answer (ROLE, or -READONLY to a write),
// a refused or lost connection sends the question to the Sentinels, and
// the rest of the same deadline goes to the primary they name.

import { withoutSecrets, type EngineEndpoint, type EngineNode } from '../endpoints.js';
import { EngineError, RespError, respCallTo, type RespValue } from './resp.js';

type SentinelEndpoint = EngineEndpoint & { sentinels: EngineNode[]; service: string };

/** Where the primary last found is kept (a file beside the map, for the hook); reads never throw. */
export interface PrimaryMemory {
  recall(): EngineNode | null;
  keep(node: EngineNode): void;
}

export const showNode = (n: EngineNode): string => `${n.host.includes(':') ? `[${n.host}]` : n.host}:${n.port}`;

/** "host port", as the memory file holds it; null when it is not. */
export function parseNode(text: string): EngineNode | null {
  const m = /^(\S+) ([0-9]{1,5})\s*$/.exec(text);
  return m === null ? null : { host: m[1] ?? '', port: Number(m[2]) };
}

/** The answer to ROLE: the node's role, or null when the user may not ask (then -READONLY tells). */
function roleOf(reply: RespValue | undefined): string | null {
  if (reply instanceof RespError) return null;
  return Array.isArray(reply) && typeof reply[0] === 'string' ? reply[0] : 'unknown';
}

const readOnly = (replies: readonly RespValue[]): boolean =>
  replies.some((r) => r instanceof RespError && /^READONLY\b/.test(r.message));

/** Replies from `node` when it is the primary; null when it says it is not. Throws EngineError. */
function fromPrimary(
  e: SentinelEndpoint,
  node: EngineNode,
  commands: readonly string[][],
  timeoutMs: number,
): RespValue[] | null {
  const [role, ...replies] = respCallTo(e, node, [['ROLE'], ...commands], timeoutMs);
  const r = roleOf(role);
  if ((r !== null && r !== 'master') || readOnly(replies)) return null;
  return replies;
}

/**
 * The primary the first Sentinel that knows names (SENTINEL
 * get-master-addr-by-name), each asked in turn within what is left of
 * `deadline`. Throws EngineError naming each Sentinel's failure.
 */
export function askSentinels(e: SentinelEndpoint, deadline: number): EngineNode {
  const failures: string[] = [];
  let unreachable = true;
  for (const [i, sentinel] of e.sentinels.entries()) {
    // Each Sentinel left, and the primary after them, gets an equal share of what is left.
    const left = deadline - performance.now();
    if (left <= 0) break;
    const share = Math.max(Math.floor(left / (e.sentinels.length - i + 1)), Math.min(left, 20));
    try {
      const [answer] = respCallTo(
        e,
        sentinel,
        [['SENTINEL', 'get-master-addr-by-name', e.service]],
        Math.ceil(share),
        true,
      );
      unreachable = false;
      if (Array.isArray(answer) && typeof answer[0] === 'string' && typeof answer[1] === 'string')
        return { host: answer[0], port: Number(answer[1]) };
      failures.push(
        `${showNode(sentinel)}: ${answer instanceof RespError ? withoutSecrets(e, answer.message) : `does not monitor ${e.service}`}`,
      );
    } catch (err) {
      if (!(err instanceof EngineError)) throw err;
      unreachable &&= err.unreachable;
      failures.push(err.message.replace(/^engine /, ''));
    }
  }
  throw new EngineError(
    `engine ${e.display}: no Sentinel named the primary of ${e.service}: ${failures.join('; ') || 'no time left'}`,
    unreachable && failures.length > 0,
  );
}

/**
 * Runs `commands` on the primary, all within `timeoutMs`: the remembered
 * one if it still is the primary, else the one the Sentinels name now.
 */
export function primaryCall(
  e: SentinelEndpoint,
  commands: readonly string[][],
  timeoutMs: number,
  memory?: PrimaryMemory,
): RespValue[] {
  const deadline = performance.now() + timeoutMs;
  const left = (): number => Math.max(1, Math.ceil(deadline - performance.now()));
  const known = memory?.recall() ?? null;
  let firstFailure: EngineError | undefined;
  if (known !== null) {
    try {
      // Half the time at most: a remembered node that stopped answering (its host down) must leave
      // the Sentinels and the node they name now the other half.
      const replies = fromPrimary(e, known, commands, Math.max(1, Math.ceil(left() / 2)));
      if (replies !== null) return replies;
    } catch (err) {
      if (!(err instanceof EngineError)) throw err;
      firstFailure = err;
    }
  }
  let primary: EngineNode;
  try {
    primary = askSentinels(e, deadline);
  } catch (err) {
    if (err instanceof EngineError && firstFailure !== undefined)
      throw new EngineError(`${firstFailure.message}; ${err.message}`, firstFailure.unreachable && err.unreachable);
    throw err;
  }
  memory?.keep(primary);
  const replies = fromPrimary(e, primary, commands, left());
  if (replies === null) {
    throw new EngineError(
      `engine ${e.display}: the Sentinels name ${showNode(primary)} as the primary of ${e.service}, but it is a replica ` +
        '(a failover under way: the sweep sends what this missed)',
      false,
    );
  }
  return replies;
}
