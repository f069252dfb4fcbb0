// doctor's live check of the hook: one real login's record, made the way
// Dovecot makes it, and removed again.

import type { Config } from '../../config.js';
import { readEntries } from '../../map/relay-map.js';
import { asUser } from './as-user.js';
import { bad, ok, type Check } from './check.js';
import { vszBytes } from './doveconf.js';
import type { HookService } from './dovecot.js';
import { ADMIN_PROGRAM } from './shipped.js';
import { TEST_ADDRESS } from './test-address.js';

/**
 * Runs the hook exactly as Dovecot would (as its user, within its vsz_limit,
 * with the words of its executable line, no PATH, IP set) and looks for the
 * record in the map this doctor was told about: a hook reading another
 * config, or one that cannot start within the limit, shows up here.
 */
function liveHookCheck(cfg: Config, { hook, user, vsz }: HookService): Check {
  const s = cfg.map;
  const had = readEntries(s).some((e) => e.address === TEST_ADDRESS);
  const env = { IP: TEST_ADDRESS, USER: 'poprelay-doctor' };
  const r = asUser(user, hook, env, vszBytes(vsz));
  if (r === null)
    return bad('WARN', 'hook', `cannot run the hook as ${user} without root`, 'run poprelay doctor as root');
  const recorded = readEntries(s).some((e) => e.address === TEST_ADDRESS);
  // Removed as the hook's user too: root writes nothing in its directory.
  // With engine set, del removes it from the shared set and from this map.
  const removal =
    !had && recorded
      ? asUser(user, [
          process.execPath,
          ADMIN_PROGRAM,
          'del',
          TEST_ADDRESS,
          ...(cfg.source === null ? [] : ['--config', cfg.source]),
        ])
      : null;
  if (removal !== null && readEntries(s).some((e) => e.address === TEST_ADDRESS)) {
    return bad(
      'WARN',
      'hook',
      `the hook recorded ${TEST_ADDRESS} in ${s.path}, but it could not be removed again: ${removal.stderr.trim() || `exit ${removal.status}`}`,
      `remove it: poprelay del ${TEST_ADDRESS}${cfg.source === null ? '' : ` --config ${cfg.source}`}`,
    );
  }
  if (r.status !== 0 || !recorded) {
    const said = r.stderr.trim() || `exit ${r.status}`;
    return bad(
      'FAIL',
      'hook',
      `${hook.join(' ')} run as ${user} within vsz_limit = ${vsz} with IP=${TEST_ADDRESS} did not record it in ${s.path}: ${said}`,
      'fix what the message says (Dovecot logs the same line for every login); a hook that reads another config ' +
        'needs --config on its executable line; Node needs a vsz_limit of at least 256M',
    );
  }
  return ok(
    'hook',
    `${hook.join(' ')} run as ${user} within vsz_limit = ${vsz} recorded ${TEST_ADDRESS} in ${s.path} (removed again)`,
  );
}

/**
 * The hook check, run only where Dovecot runs the hook and the map is
 * usable: otherwise it could only fail for what those checks already say.
 */
export function hookCheck(cfg: Config, service: HookService | undefined, mapUsable: boolean): Check {
  if (service === undefined)
    return bad('FAIL', 'hook', 'no poprelay-login in the Dovecot configuration to run', 'see the dovecot checks above');
  if (!mapUsable) return bad('FAIL', 'hook', 'not run: the map is not usable', 'see the map check above');
  return liveHookCheck(cfg, service);
}
