// The recorder's side of the shared-address guard (who/shared-address.ts):
// a login's user goes to the who journal, and an address over
// shared_address_users leaves the map, with one line naming its users.

import type { Config } from '../config.js';
import { quoteUntrusted } from '../errors.js';
import { unchanged, valuesBeforeQueueing } from '../map/relay-map.js';
import { showUser, type UserSeen } from '../who/journal.js';
import { describeUsers, keepWho, removeShared } from '../who/shared-address.js';
import { log } from './dovecot-log.js';
import type { Recorded } from './recorded.js';

/** A login from an address over shared_address_users, with every user behind it. */
export interface SharedLogin extends Recorded {
  users: UserSeen[];
}

/** The who journal did not take a batch of logins: one line; they are recorded all the same. */
export function whoNotKept(cfg: Config, e: Error): void {
  log('warning', `who journal ${cfg.map.path}.who: ${e.message}; these logins are recorded without their users`);
}

/**
 * A login recorded directly: its user goes to the who journal, and the
 * shared-address guard decides; false when the address is over
 * shared_address_users (its entry then leaves the map, and one line says
 * who is behind it).
 */
export function keptWho(cfg: Config, l: Recorded, user: string | undefined, service: string | undefined): boolean {
  let permanent = false;
  if (cfg.sharedAddressUsers !== null) {
    const values = valuesBeforeQueueing(cfg.map, l.addr.keys);
    permanent = values !== null && unchanged(values, l.time, 0) === 'permanent';
  }
  const guard = keepWho(cfg, [{ addr: l.addr, time: l.time, service, user, permanent }], l.time);
  if (guard.problem !== null) whoNotKept(cfg, guard.problem);
  const users = guard.shared.get(l.addr.text);
  if (users === undefined) return true;
  stopShared(cfg, [{ ...l, users }]);
  return false;
}

/**
 * Stops addresses over shared_address_users: their dated entries leave the
 * map in one write, and each gets one line naming the users behind it;
 * `inEngine` when the engine found them shared (and removed them there).
 */
export function stopShared(cfg: Config, logins: readonly SharedLogin[], inEngine = false): void {
  let removed: Set<string> | null = null;
  let problem = '';
  try {
    removed = new Set(
      removeShared(
        cfg.map,
        logins.map((l) => l.addr),
      ).map((a) => a.text),
    );
  } catch (e) {
    problem = e instanceof Error ? e.message : String(e);
  }
  for (const l of logins) {
    const fate =
      removed === null
        ? `; its entry could not be removed from the map: ${problem}`
        : removed.has(l.addr.text)
          ? inEngine
            ? '; its entry left the engine and the map'
            : '; its entry left the map'
          : inEngine
            ? '; its entry left the engine'
            : '';
    log(
      'warning',
      `not recorded ${l.addr.text}${inEngine ? ' in the engine' : ''} (${l.who}): a shared address: ` +
        `${describeUsers(l.users, (u) => showUser(u, quoteUntrusted))} logged in from it ${inEngine ? 'on the POP/IMAP hosts ' : ''}` +
        `within timeout_minutes, more than shared_address_users = ${cfg.sharedAddressUsers ?? '?'}${fate}`,
    );
  }
}
