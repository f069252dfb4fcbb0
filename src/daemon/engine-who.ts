// poprelayd's view of who is behind an address from the engine (the who
// key the hooks of every POP/IMAP host write, engine/relayset.ts), joined with
// this host's own who journal (who-index.ts). An engine that cannot answer
// names nobody; it never changes a decision. Its answer for an address is
// used again for WHO_CACHE_MS, so that a message's recipients cost one GET,
// and the answers asked for while its GET is on the way wait for that one.

import type { EngineClient } from '../engine/client.js';
import { LOOKUP_TIMEOUT_MS, withTimeout } from './answers.js';
import { parseClientAddress } from '../address.js';
import type { WhoSource } from './decider.js';
import { parseEngineWho, whoKey } from '../engine/relayset.js';

/** How long the engine's answer for an address is used again: a message's recipients ask in a burst. */
export const WHO_CACHE_MS = 1000;
const WHO_CACHE_LIMIT = 10_000;

export class EngineWho implements WhoSource {
  /** Per address: when asked, the local journal's version then, and the users named. */
  private readonly cache = new Map<string, { at: number; version: number; users: string[] }>();
  /**
   * Per address, the question on its way: the answers asked for while it is
   * (a pipelined burst from one client) wait for it rather than each sending
   * a GET of its own.
   */
  private readonly asking = new Map<string, { version: number; users: Promise<string[]> }>();

  constructor(
    private readonly client: Pick<EngineClient, 'get' | 'isReady'>,
    private readonly timeoutSeconds: number,
    private readonly local: (WhoSource & { version(): number }) | null = null,
    private readonly now: () => number = Date.now,
  ) {}

  /** Synchronous when it has the answer already: no promise to wait for on the hot path. */
  users(address: string, nowSeconds: number): string[] | Promise<string[]> {
    const version = this.local?.version() ?? 0;
    const t = this.now();
    const cached = this.cache.get(address);
    // The same answer within WHO_CACHE_MS, unless this host's journal took a login meanwhile.
    if (cached !== undefined && t - cached.at < WHO_CACHE_MS && cached.version === version) return cached.users;
    const pending = this.asking.get(address);
    if (pending !== undefined && pending.version === version) return pending.users;
    const users = this.ask(address, nowSeconds, version, t).finally(() => {
      if (this.asking.get(address)?.users === users) this.asking.delete(address);
    });
    this.asking.set(address, { version, users });
    return users;
  }

  private async ask(address: string, nowSeconds: number, version: number, t: number): Promise<string[]> {
    const here = this.local === null ? [] : await this.local.users(address, nowSeconds);
    if (!this.client.isReady) return here;
    let shared: string[];
    try {
      const value = await withTimeout(this.client.get(whoKey(parseClientAddress(address))), LOOKUP_TIMEOUT_MS);
      shared = parseEngineWho(value, nowSeconds - this.timeoutSeconds).map((u) => u.user);
    } catch {
      return here; // a slow engine delays no answer past the relay lookup's own bound
    }
    const users = [...new Set([...shared, ...here])];
    this.cache.delete(address); // re-inserted last: the Map's order is the eviction order
    this.cache.set(address, { at: t, version, users });
    if (this.cache.size > WHO_CACHE_LIMIT) this.cache.delete(this.cache.keys().next().value ?? '');
    return users;
  }
}
