// doctor's sweep check: something runs poprelay-sweep every minute, or no
// entry ever expires.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

import { processExists } from '../../processes.js';
import { bad, ok, type Check } from './check.js';
import type { DoctorPaths } from './paths.js';
import { SHIPPED } from './shipped.js';

/** Whether the process a pid file names runs; false without the file. */
function pidFileRuns(pidFile: string): boolean {
  let text: string;
  try {
    text = readFileSync(pidFile, 'utf8');
  } catch {
    return false;
  }
  return processExists(Number(text.trim()));
}

/**
 * Which schedule runs the sweep. Where systemd runs, the timer does (the
 * cron entry defers to it), so the timer must be active; elsewhere the cron
 * entry does, so a cron daemon must run: a file in /etc/cron.d alone sweeps
 * nothing.
 */
export function sweepCheck(paths: DoctorPaths, systemdRuns = existsSync('/run/systemd/system')): Check {
  if (systemdRuns) {
    const state = spawnSync('systemctl', ['is-active', 'poprelay-sweep.timer'], { encoding: 'utf8' });
    const active = (state.stdout ?? '').trim();
    if (active === 'active') return ok('sweep', 'systemd runs, and poprelay-sweep.timer is active');
    return bad(
      'FAIL',
      'sweep',
      `systemd runs, and poprelay-sweep.timer is ${active || 'unknown to it'} (the cron entry defers to systemd): nothing sweeps, entries never expire`,
      'systemctl enable --now poprelay-sweep.timer',
    );
  }
  // The cron.d line that runs the sweep: five time fields (or one @keyword), the user, the command.
  const cronLine = existsSync(paths.cronFile)
    ? /^[^#\n]*poprelay-sweep.*$/m.exec(readFileSync(paths.cronFile, 'utf8'))?.[0]
    : undefined;
  if (cronLine === undefined) {
    return bad(
      'FAIL',
      'sweep',
      `systemd does not run here, and ${paths.cronFile} does not schedule poprelay-sweep: entries never expire`,
      `install ${SHIPPED}cron.d/poprelay as ${paths.cronFile}, and run a cron daemon`,
    );
  }
  const fields = cronLine.trim().split(/\s+/);
  const user = fields[(fields[0] ?? '').startsWith('@') ? 1 : 5];
  if (!pidFileRuns(paths.cronPid)) {
    return bad(
      'FAIL',
      'sweep',
      `${paths.cronFile} schedules poprelay-sweep, but no cron daemon runs (none in ${paths.cronPid}), nor systemd: entries never expire`,
      'install and start cron (apt install cron), or run under systemd with poprelay-sweep.timer',
    );
  }
  if (user !== 'root') {
    return bad(
      'WARN',
      'sweep',
      `${paths.cronFile} runs poprelay-sweep as ${user ?? '?'}, which cannot ask Dovecot's anvil socket which sessions are live`,
      `run it as root, as ${SHIPPED}cron.d/poprelay does: it takes the map owner's rights for the map`,
    );
  }
  return ok('sweep', `${paths.cronFile} runs poprelay-sweep as root, and a cron daemon runs`);
}
