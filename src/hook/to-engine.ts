// Sending a round's logins to the shared engine (docs/cluster.md), after the
// map, in one exchange, and the line for each.

import type { Config } from '../config.js';
import { recordInEngine } from '../engine/record.js';
import { sharedUsers } from '../engine/relayset.js';
import { log } from './dovecot-log.js';
import type { Failed, Recorded } from './recorded.js';
import { stopShared, type SharedLogin } from './shared-stop.js';

/** What the engine's log line says after "recorded ADDRESS in the engine (user=...)". */
const ENGINE_TEXT: Record<'recorded' | 'fresh' | 'permanent', string> = {
  recorded: '',
  fresh: ': younger than refresh_seconds there; nothing written',
  permanent: ': a permanent entry there, left as it is',
};

/** Sends logins to the engine, when there is one; false when that failed (logged for each). */
export function toEngine(cfg: Config, logins: readonly Recorded[], now: number, failed: Failed): boolean {
  if (cfg.engine === null || logins.length === 0) return true;
  try {
    const outcomes = recordInEngine(cfg, cfg.engine, logins, now);
    const stopped: SharedLogin[] = [];
    logins.forEach((l, i) => {
      const outcome = outcomes[i] ?? 'recorded';
      if (outcome.startsWith('shared ')) {
        // Stopped here already, and said so; otherwise the users of every POP/IMAP host made it shared.
        if (l.shared !== true)
          stopped.push({
            ...l,
            users: sharedUsers(outcome).map((u) => ({ user: u.user, service: u.service, last: u.time, logins: 1 })),
          });
      } else if (cfg.logRecorded)
        log(
          'info',
          `recorded ${l.addr.text} in the engine (${l.who})${ENGINE_TEXT[outcome as keyof typeof ENGINE_TEXT] ?? ''}`,
        );
    });
    if (stopped.length > 0) stopShared(cfg, stopped, true);
    return true;
  } catch (e) {
    for (const l of logins) failed(e, l.addr.text, l.who, 'in the engine ');
    return false;
  }
}
