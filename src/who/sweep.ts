// The sweep's part in who logged in where: the who journal loses its lines
// older than timeout_minutes (folded into the report, report.ts), and the
// addresses over shared_address_users among what remains are returned, for
// the sweep to keep out of the map (their live sessions included). A
// journal the sweep cannot compact is one line: the map's sweep goes on.

import type { Config } from '../config.js';
import { foldIntoReport } from './report.js';
import { stoppedShared } from './shared-address.js';
import { compactWho, readWho, type UserSeen, type WhoLine } from './journal.js';

export interface WhoSweep {
  /** Addresses over shared_address_users now, with their users (a permanent entry is none of them). */
  shared: Map<string, UserSeen[]>;
  /** Logins folded into the report. */
  folded: number;
  /** What went wrong with the journal or the report, if anything. */
  problem: string | null;
}

export function sweepWho(cfg: Config, now: number, dryRun: boolean): WhoSweep {
  const since = now - cfg.map.timeoutSeconds;
  let kept: WhoLine[] = [];
  let folded = 0;
  let problem: string | null = null;
  try {
    if (dryRun) kept = readWho(cfg.map.path).filter((l) => l.t >= since);
    else {
      const c = compactWho(cfg.map.path, since, cfg.map.lockTimeoutMs, (old) => {
        try {
          foldIntoReport(cfg.map.path, old, cfg.reportDays, now);
          folded = old.length;
        } catch (e) {
          problem = `the report ${cfg.map.path}.report did not take ${old.length} expired logins: ${(e as Error).message}`;
        }
      });
      kept = c.kept;
    }
  } catch (e) {
    problem = `the who journal ${cfg.map.path}.who: ${(e as Error).message}`;
  }
  return { shared: stoppedShared(cfg, kept, now), folded, problem };
}
