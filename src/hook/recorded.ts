// A login on its way through the recorder, to the map and the engine, and
// the line that says what the map made of it.

import type { ClientAddress } from '../address.js';
import type { Config } from '../config.js';
import type { LoginOutcome } from '../map/relay-map.js';
import { log } from './dovecot-log.js';

/** A login being recorded: its address, its time, and who, as its log lines say it. */
export interface Recorded {
  addr: ClientAddress;
  time: number;
  who: string;
  /** Who logged in, and to what, for the engine's who key. */
  user?: string;
  service?: string;
  /** The shared-address guard stopped it here: the engine stops the address too. */
  shared?: boolean;
}

/**
 * A login that was not recorded: its line (with the address `ip`, the login
 * `whose`, and `where` it failed: '' for the map, 'in the engine '), and one
 * more in the count of unrecorded logins; always false.
 */
export type Failed = (e: unknown, ip?: string, whose?: string, where?: string) => false;

/** What a login's log line says after "recorded ADDRESS (user=...)". */
const OUTCOME_TEXT: Record<Exclude<LoginOutcome, 'permanent'>, string> = {
  recorded: '',
  queued: ': queued; the writer holding the lock applies it',
  fresh: ': already in the map, younger than refresh_seconds; nothing written',
};

export function logMapOutcome(cfg: Config, l: Recorded, outcome: LoginOutcome): void {
  if (!cfg.logRecorded) return;
  log(
    'info',
    outcome === 'permanent'
      ? `${l.addr.text} has a permanent entry, left as it is (${l.who})`
      : `recorded ${l.addr.text} (${l.who})${OUTCOME_TEXT[outcome]}`,
  );
}
