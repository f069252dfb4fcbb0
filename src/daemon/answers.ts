// poprelayd's one question, "may this client relay?", answered from the
// engine, with a cache of the yes answers. A cached yes lasts no longer than
// the entry it came from (its expiry in the engine), so a short engine
// outage keeps known clients relaying and never extends anyone's right.
// Unknown clients get no, never "try later": a deferral would hit inbound
// mail too. No answers are never cached: a login must count at once.

import type { ClientAddress } from '../address.js';
import { lookupShared, type EngineClient } from '../engine/client.js';

/** How long a yes for a permanent entry (no expiry of its own) is kept. */
export const PERMANENT_CACHE_MS = 60_000;
/** How many yes answers are kept at most (the oldest go first). */
export const CACHE_LIMIT = 100_000;
/** The most a lookup waits for the engine before answering from the cache. */
export const LOOKUP_TIMEOUT_MS = 1000;

export class Answers {
  private readonly yes = new Map<string, number>();

  constructor(
    private readonly client: EngineClient,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Whether `addr` may relay now: the engine's answer, or when it cannot
   * answer in time, the cache's (`cached`).
   */
  async ask(addr: ClientAddress): Promise<{ relay: boolean; cached: boolean }> {
    if (this.client.isReady) {
      try {
        const found = await withTimeout(lookupShared(this.client, addr), LOOKUP_TIMEOUT_MS);
        if (found === null) {
          this.yes.delete(addr.text);
          return { relay: false, cached: false };
        }
        this.remember(addr.text, found.expiresAtMs ?? this.now() + PERMANENT_CACHE_MS);
        return { relay: true, cached: false };
      } catch {
        // The engine is slow or just went away: the cache answers.
      }
    }
    const until = this.yes.get(addr.text);
    if (until !== undefined && until > this.now()) return { relay: true, cached: true };
    this.yes.delete(addr.text);
    return { relay: false, cached: true };
  }

  /** Forgets an address (the engine said it was deleted or expired). */
  forget(text: string): void {
    this.yes.delete(text);
  }

  private remember(text: string, until: number): void {
    this.yes.delete(text); // re-inserted last: the Map's order is the eviction order
    this.yes.set(text, until);
    if (this.yes.size > CACHE_LIMIT) {
      const oldest = this.yes.keys().next().value;
      if (oldest !== undefined) this.yes.delete(oldest);
    }
  }
}

/** `p`, or an error once `ms` have passed without it. */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
