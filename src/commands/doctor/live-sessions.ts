// doctor's live-sessions check: whether the sweep can ask Dovecot which
// sessions are live, to keep their addresses past timeout_minutes.

import { existsSync } from 'node:fs';

import type { Config } from '../../config.js';
import { escapeControls } from '../../errors.js';
import { describeUnreadable, liveAddresses } from '../../hook/live.js';
import { bad, ok, type Check } from './check.js';

/** Whether the sweep can ask Dovecot which sessions are live (live_sessions). */
export function liveCheck(cfg: Config): Check {
  if (cfg.liveSessions === 'no')
    return ok(
      'live sessions',
      'off (live_sessions = no): a session that outlasts timeout_minutes loses the right to relay',
    );
  if (!existsSync(cfg.dovecotAnvil)) {
    return bad(
      'WARN',
      'live sessions',
      `no ${cfg.dovecotAnvil}: is Dovecot running? Until it is, the sweep keeps no address for a live session`,
      'start Dovecot, or set dovecot_anvil to its base_dir/anvil',
    );
  }
  const answer = liveAddresses(cfg.dovecotAnvil, cfg.doveadm);
  if ('addresses' in answer) {
    const found = `doveadm who answers on ${cfg.dovecotAnvil}: ${answer.addresses.length} address(es) with a live POP3 or IMAP session`;
    const unreadable = describeUnreadable(answer);
    return unreadable === ''
      ? ok('live sessions', found)
      : bad(
          'WARN',
          'live sessions',
          `${found}; ${escapeControls(unreadable)}`,
          'the sweep leaves such rows out; a user name with tabs or newlines is the usual cause',
        );
  }
  if (cfg.liveSessions === 'auto' && answer.error.endsWith(' not found')) {
    return bad(
      'WARN',
      'live sessions',
      'doveadm not found: the sweep does not ask Dovecot, and a session that outlasts timeout_minutes loses the right to relay',
      'install dovecot-core, or set live_sessions = no',
    );
  }
  return bad(
    'FAIL',
    'live sessions',
    answer.error,
    "run the sweep as root (the anvil socket is root's), and set dovecot_anvil to Dovecot's base_dir/anvil",
  );
}
