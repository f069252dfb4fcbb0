// poprelay's commands against the shared engine (engine in poprelay.ini):
// the same questions as of the map (store.ts), asked with node-redis.

import type { ClientAddress } from '../address.js';
import type { Config } from '../config.js';
import { connectOnce, readSharedSet } from '../engine/client.js';
import { withoutSecrets, type EngineEndpoint } from '../endpoints.js';
import { isPoprelayError, PoprelayError } from '../errors.js';
import { removeAddress, type RelayEntry } from '../map/relay-map.js';
import { engineKey, RECORD_SCRIPT, whoKey } from '../engine/relayset.js';
import type { RelayStore } from './relay-store.js';
import { entryTime } from '../map/values.js';

const entryOf = (addr: ClientAddress, time: number | null): RelayEntry =>
  time === 0
    ? { address: addr.text, keys: [engineKey(addr)], time, invalid: true }
    : { address: addr.text, keys: [engineKey(addr)], time };

/** Removes `addr` from this host's map, where there is one (an MTA host without mirror has none). */
function removedFromMap(cfg: Config, addr: ClientAddress): boolean {
  try {
    return removeAddress(cfg.map, addr);
  } catch (e) {
    if (isPoprelayError(e, 'ERR_MAP_MISSING')) return false;
    throw e;
  }
}

/**
 * An engine's answer, with a refusal as poprelay's error: the usual cause is
 * a host's own engine user (an MTA host's reads only) where the
 * administrators' is needed.
 */
function asked<T>(engine: EngineEndpoint, answer: Promise<T>): Promise<T> {
  return answer.catch((e: unknown) => {
    const message = e instanceof Error ? e.message : String(e);
    if (!/^NOPERM\b/.test(message)) throw e;
    throw new PoprelayError(
      'ERR_ENGINE',
      `engine ${engine.display} refused: ${withoutSecrets(engine, message)}. This engine user may not do that ` +
        `(an MTA host's reads only); administrators use their own (--config FILE naming it; docs/cluster.md)`,
    );
  });
}

export async function engineStore(cfg: Config, engine: EngineEndpoint): Promise<RelayStore> {
  const client = await connectOnce(engine);
  const all = async (): Promise<RelayEntry[]> =>
    (await asked(engine, readSharedSet(client))).map((e) => entryOf(e.addr, e.time));
  return {
    where: engine.display,
    noun: 'the shared set',
    entries: all,
    entry: async (addr) => {
      const value = await asked(engine, client.get(engineKey(addr)));
      if (value === null) return null;
      return entryOf(addr, entryTime(value));
    },
    queued: async () => [],
    record: async (addr, now) => {
      const outcome = await asked(
        engine,
        client.eval(RECORD_SCRIPT, {
          keys: [engineKey(addr)],
          arguments: [String(now), String(now + cfg.map.timeoutSeconds), '0'],
        }),
      );
      return outcome === 'permanent' ? 'permanent' : 'recorded';
    },
    putPermanent: async (addr) => {
      await asked(engine, client.set(engineKey(addr), 'OK')); // SET without EX also clears any expiry
    },
    remove: async (addr) => {
      const shared = (await asked(engine, client.del(engineKey(addr)))) > 0;
      // Its users go with it: they would count towards shared_address_users at its next login.
      await asked(engine, client.del(whoKey(addr)));
      // The hook records each login in this host's map too: del ends the right here as well.
      return removedFromMap(cfg, addr) || shared;
    },
    flushDated: async () => {
      const entries = await all();
      const dated = entries.filter((e) => e.time !== null);
      for (let i = 0; i < dated.length; i += 1000)
        await asked(engine, client.del(dated.slice(i, i + 1000).flatMap((e) => e.keys)));
      return { removed: dated.length, permanent: entries.length - dated.length };
    },
    close: async () => {
      await client.close();
    },
  };
}
