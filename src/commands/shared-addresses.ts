// The addresses shared_address_users stops now, as list and stats show them.

import type { Config } from '../config.js';
import type { UserSeen } from '../who/journal.js';
import { sharedFromJournal } from '../who/shared-address.js';

/**
 * The addresses stopped as shared: from the engine's who keys with engine
 * set (its client loaded only then), else from the who journal.
 */
export async function sharedAddresses(cfg: Config, now: number): Promise<Map<string, UserSeen[]>> {
  if (cfg.engine === null) return sharedFromJournal(cfg, now);
  if (cfg.sharedAddressUsers === null) return new Map();
  const { connectOnce } = await import('../engine/client.js');
  const { sharedInEngine } = await import('../engine/shared.js');
  const client = await connectOnce(cfg.engine);
  try {
    return await sharedInEngine(cfg, client, now);
  } finally {
    await client.close();
  }
}
