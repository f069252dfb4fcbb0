// Waiting for a state, never for a time: each wait polls for the outcome
// and has a generous bound, which only matters when the state never comes
// (a fresh 2-core machine with other load beside it is slow).

import type { ChildProcess } from 'node:child_process';

/**
 * Polls `check` until it returns a value (not undefined or false), or fails
 * after `ms`, naming `what` was awaited. `check` may be async, and may throw
 * to give up at once.
 */
export async function eventually<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 60_000,
  what = 'condition',
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Polls `serving` until it succeeds. Fails at once when `proc` (what starts
 * the server) has ended, or after `ms`, with `output()` and the last error.
 */
export async function untilServing(
  name: string,
  proc: ChildProcess,
  serving: () => Promise<unknown>,
  ms: number,
  output: () => string,
): Promise<void> {
  let last: unknown;
  const ended = (): number | string | null => proc.exitCode ?? proc.signalCode;
  const outcome = await eventually(
    async () => {
      try {
        await serving();
        return 'serving';
      } catch (e) {
        last = e;
      }
      return ended() !== null && 'ended';
    },
    ms,
    name,
    100,
  ).catch(() => 'timed out');
  if (outcome !== 'serving')
    throw new Error(
      `${name} did not start${outcome === 'ended' ? ` (it ended: ${ended()})` : ''}: ${output()}\n${String(last)}`,
    );
}
