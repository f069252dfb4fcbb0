// doctor's check of the queue the hook's front is told to use, on Dovecot's
// executable line: a front that leaves logins elsewhere, or nowhere, starts
// Node for every login or records them where no writer looks.

import { lstatSync } from 'node:fs';

import { parseConfig, type Config } from '../../config.js';
import { queueDir } from '../../map/queue.js';
import { parseHookArgs } from '../../hook/arguments.js';
import { bad, ok, type Check } from './check.js';

/**
 * The queue the front leaves logins in: --queue on its executable line, else
 * the default map's where the line names no --config (the front reads no
 * poprelay.ini). It must be dbfile's, and only its owner may open it.
 */
export function queueLineCheck(cfg: Config, hook: readonly string[], user: string): Check {
  const line = parseHookArgs(hook.slice(1));
  const queue = line.queue ?? (line.config !== undefined ? null : queueDir(parseConfig('', null).map.path));
  const right = queueDir(cfg.map.path);
  const fix = `give --queue ${right} on the executable lines of Dovecot's post-login services`;
  if (queue === null)
    return bad(
      'WARN',
      'hook queue',
      'the hook is given --config but no --queue: every login starts Node of its own',
      fix,
    );
  if (queue !== right)
    return bad('FAIL', 'hook queue', `the hook leaves logins in ${queue}, but dbfile is ${cfg.map.path}`, fix);
  let mode: number;
  try {
    mode = lstatSync(queue).mode;
  } catch {
    return bad(
      'WARN',
      'hook queue',
      `no ${queue}: every login starts Node of its own`,
      `runuser -u ${user} -- poprelay init`,
    );
  }
  if ((mode & 0o077) !== 0)
    return bad(
      'WARN',
      'hook queue',
      `${queue} has mode ${(mode & 0o7777).toString(8)}: other accounts could hold its lock, so the hook records every login directly`,
      `chmod 0700 ${queue}`,
    );
  return ok('hook queue', `the hook leaves logins in ${queue}, beside dbfile`);
}
