// doctor's map checks: the map is a usable map of dbtype, the hook's user
// can replace it, the MTAs can read it, and sendmail would not refuse it
// for the directories above it.

import { lstatSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

import type { Config } from '../../config.js';
import { isPoprelayError } from '../../errors.js';
import { readRecords } from '../../map/relay-map.js';
import { asUser } from './as-user.js';
import { bad, ok, type Check } from './check.js';
import { queueCheck } from './map-queue.js';

export function mapChecks(cfg: Config, user: string): Check[] {
  const s = cfg.map;
  const checks: Check[] = [];
  try {
    const n = readRecords(s).length;
    checks.push(ok('map', `${s.path} is a ${s.type} map with ${n} keys`));
  } catch (e) {
    const fix = isPoprelayError(e, 'ERR_MAP_MISSING')
      ? `create it as ${user}: runuser -u ${user} -- poprelay init`
      : 'see "Recovering a damaged map" in docs/operating.md';
    return [bad('FAIL', 'map', (e as Error).message, fix)];
  }
  const dir = dirname(s.path);
  const canWrite = asUser(user, ['test', '-w', dir]);
  const canRead = asUser(user, ['test', '-r', s.path]);
  if (canWrite === null || canRead === null)
    checks.push(
      bad('WARN', 'map access', `cannot check access as ${user} without root`, 'run poprelay doctor as root'),
    );
  else if (canWrite.status !== 0 || canRead.status !== 0) {
    checks.push(
      bad(
        'FAIL',
        'map access',
        `${user} cannot ${canRead.status !== 0 ? `read ${s.path}` : `write the directory ${dir}`}`,
        `chown ${user} ${dir} && chmod 0755 ${dir}`,
      ),
    );
  } else checks.push(ok('map access', `${user} can read the map and replace it in ${dir}`));
  checks.push(queueCheck(s, user));
  const mode = lstatSync(s.path).mode & 0o777;
  if ((mode & 0o004) !== 0)
    checks.push(ok('map readers', `mode ${mode.toString(8)}: sendmail, Postfix and Exim can read it`));
  else if ((mode & 0o040) !== 0)
    checks.push(
      bad(
        'WARN',
        'map readers',
        `mode ${mode.toString(8)}: only the group can read it`,
        "make sure the MTA users (smmta, postfix, Debian-exim) are in the map's group",
      ),
    );
  else
    checks.push(
      bad('FAIL', 'map readers', `mode ${mode.toString(8)}: the MTAs cannot read it`, `chmod 0644 ${s.path}`),
    );
  return checks;
}

/** sendmail refuses maps under group- or world-writable directories ("unsafe map file"). */
export function dirPathCheck(mapPath: string): Check {
  for (let d = dirname(mapPath); ; d = dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o022) !== 0) {
      return bad(
        'FAIL',
        'map directory',
        `${d} is group- or world-writable: sendmail refuses the map as unsafe`,
        `chmod go-w ${d}, or move the map (dbfile) elsewhere`,
      );
    }
    if (d === '/') return ok('map directory', `no directory above ${mapPath} is group- or world-writable`);
  }
}
