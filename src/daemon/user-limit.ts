// user_limit = N/PERIOD: recipients per user per period in poprelayd's
// Postfix policy answers. Each recipient poprelayd would let relay counts
// once against every user behind the client's address (poprelay cannot tell
// which of them sends, so none of them may go past the limit through it);
// over the limit the recipient gets user_limit_action. Counted in fixed
// windows of PERIOD: in the engine, across every MTA host
// (engine-counter.ts), or without one here (LocalCounter). A counter that
// fails counts as no limit: mail from users nobody limited is never
// deferred for it.

import type { UserLimit } from '../config.js';

/** Counts one more recipient of `user` in window `window`, and returns the count in it. */
export interface Counter {
  add(user: string, window: number, periodSeconds: number): number | Promise<number>;
}

/** Counts in this process: one MTA host's recipients. */
export class LocalCounter implements Counter {
  private readonly counts = new Map<string, { window: number; n: number }>();

  add(user: string, window: number): number {
    const c = this.counts.get(user);
    if (c === undefined || c.window !== window) {
      if (c === undefined && this.counts.size > 100_000) this.forgetOld(window);
      this.counts.set(user, { window, n: 1 });
      return 1;
    }
    return ++c.n;
  }

  private forgetOld(window: number): void {
    for (const [u, c] of this.counts) if (c.window !== window) this.counts.delete(u);
  }
}

/** The first of `users` whose count, with this recipient, goes past the limit; null when none does. */
export async function overLimit(
  limit: UserLimit,
  counter: Counter,
  users: readonly string[],
  nowSeconds: number,
): Promise<string | null> {
  const window = Math.floor(nowSeconds / limit.periodSeconds);
  const added = users.map((u) => counter.add(u, window, limit.periodSeconds));
  const counts = added.every((n): n is number => typeof n === 'number') ? added : await Promise.all(added);
  const i = counts.findIndex((n) => n > limit.max);
  return i < 0 ? null : (users[i] ?? null);
}
