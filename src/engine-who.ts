// poprelayd's view of who is behind an address from the engine (the who
// key the hooks of every POP/IMAP host write, relayset.ts), joined with
// this host's own who journal (who-index.ts). An engine that cannot answer
// names nobody; it never changes a decision.

import type { EngineClient } from './engine-client.js';
import { parseClientAddress } from './address.js';
import type { WhoSource } from './decider.js';
import { parseEngineWho, whoKey } from './relayset.js';

export class EngineWho implements WhoSource {
  constructor(
    private readonly client: Pick<EngineClient, 'get' | 'isReady'>,
    private readonly timeoutSeconds: number,
    private readonly local: WhoSource | null = null,
  ) {}

  async users(address: string, nowSeconds: number): Promise<string[]> {
    const here = this.local === null ? [] : await this.local.users(address, nowSeconds);
    if (!this.client.isReady) return here;
    let shared: string[];
    try {
      const value = await this.client.get(whoKey(parseClientAddress(address)));
      shared = parseEngineWho(value, nowSeconds - this.timeoutSeconds).map((u) => u.user);
    } catch {
      return here;
    }
    return [...new Set([...shared, ...here])];
  }
}
