// doctor's poprelayd checks: each listener this host configures answers as
// the MTAs ask it, so that they do not fall back to refusing every client.

import type { Config } from '../../config.js';
import { askDaemon } from '../../daemon/client.js';
import { listenersOf } from '../../daemon/protocols.js';
import { bad, ok, type Check } from './check.js';
import { TEST_ADDRESS } from './test-address.js';

export async function poprelaydChecks(cfg: Config): Promise<Check[]> {
  const checks: Check[] = [];
  for (const [protocol, at] of listenersOf(cfg)) {
    if (at === null) continue;
    try {
      await askDaemon(protocol, at, TEST_ADDRESS, 2000);
      checks.push(ok(`poprelayd ${protocol}`, `answers on ${at.display}`));
    } catch (e) {
      checks.push(
        bad(
          'FAIL',
          `poprelayd ${protocol}`,
          `no answer on ${at.display}: ${(e as Error).message}`,
          'start it: systemctl enable --now poprelayd (journalctl -u poprelayd says why it stopped)',
        ),
      );
    }
  }
  return checks;
}
