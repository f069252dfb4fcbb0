// doctor's config check: the file parses, is the one the hook reads, and
// keeps an engine password from other accounts.

import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';

import { DEFAULT_CONFIG_PATH, LEGACY_CONFIG_PATH, MOVE_LEGACY_CONFIG, type Config } from '../../config.js';
import { parseHookArgs } from '../../hook/arguments.js';
import { bad, ok, type Check } from './check.js';
import { SHIPPED } from './shipped.js';

/**
 * The file the hook reads: --config on its executable line (`hook`: the
 * front's path and its arguments, read as the recorder reads them), else the
 * default one that exists (null: none).
 */
export function hookConfigPath(hook: readonly string[]): string | null {
  const { config } = parseHookArgs(hook.slice(1));
  if (config !== undefined) return resolve(config);
  return [DEFAULT_CONFIG_PATH, LEGACY_CONFIG_PATH].find((p) => existsSync(p)) ?? null;
}

/**
 * The config check: it parses; it is the file the hook reads; it is where
 * root alone controls it; an engine password in it is not for every account.
 */
export function configCheck(cfg: Config, named: boolean, hookReads: string | null | undefined, user: string): Check {
  const source = cfg.source ?? 'no poprelay.ini (the defaults)';
  if (hookReads !== undefined && (cfg.source === null ? null : resolve(cfg.source)) !== hookReads) {
    return bad(
      'WARN',
      'config',
      `${source} parses, but the hook reads ${hookReads ?? 'no poprelay.ini (the defaults)'}: these checks are of another file than the one logins use`,
      hookReads === null
        ? `give --config ${source} on the executable lines of Dovecot's post-login services`
        : `run poprelay doctor --config ${hookReads}, or give the hook --config ${source}`,
    );
  }
  const mode = cfg.source === null ? 0 : statSync(cfg.source).mode & 0o777;
  if (cfg.engine?.password !== undefined && (mode & 0o004) !== 0) {
    return bad(
      'FAIL',
      'config',
      `${source} holds the engine's password, and every account on this host can read it (mode ${mode.toString(8)})`,
      `chown root:${user} ${source} && chmod 0640 ${source}`,
    );
  }
  if (cfg.source === LEGACY_CONFIG_PATH) {
    return bad(
      'WARN',
      'config',
      `${source} parses; it is where earlier versions kept it, in sendmail's directory (Debian's sendmailconfig resets its owner)`,
      MOVE_LEGACY_CONFIG,
    );
  }
  const whose = named || hookReads === undefined ? '' : ' (the file the hook reads)';
  return ok('config', cfg.source === null ? 'no poprelay.ini; the defaults apply' : `${source} parses${whose}`);
}

/** A config that does not load: nothing else can be checked against it. */
export function brokenConfigCheck(e: unknown): Check {
  return bad(
    'FAIL',
    'config',
    (e as Error).message,
    `correct the file (see poprelay.ini(5), or ${SHIPPED}poprelay.ini for every key)`,
  );
}
