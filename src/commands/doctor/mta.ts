// doctor's MTA check: sendmail.cf or Postfix's main.cf asks the map, or
// poprelayd where it answers them; otherwise logins grant nothing.

import { existsSync, readFileSync } from 'node:fs';

import type { Config } from '../../config.js';
import { sendmailSocketSpec } from '../../daemon/client.js';
import { bad, ok, type Check } from './check.js';
import type { DoctorPaths } from './paths.js';
import { SHIPPED } from './shipped.js';

/** Whether sendmail.cf and Postfix's main.cf ask the map, or poprelayd where it answers them. */
export function mtaCheck(paths: DoctorPaths, cfg: Config): Check {
  const base = cfg.map.path.replace(/\.db$/, '');
  const found: string[] = [];
  const missing: string[] = [];
  if (existsSync(paths.sendmailCf)) {
    const text = readFileSync(paths.sendmailCf, 'utf8');
    const socket = cfg.socketmapListen === null ? null : sendmailSocketSpec(cfg.socketmapListen);
    (text.includes(base) || (socket !== null && text.includes(socket)) ? found : missing).push(paths.sendmailCf);
  }
  if (existsSync(paths.postfixMainCf)) {
    const text = readFileSync(paths.postfixMainCf, 'utf8');
    const quoted = base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const policy = cfg.policyListen?.display;
    (new RegExp(`check_client_access\\s+hash:${quoted}(\\s|$)`, 'm').test(text) ||
    (policy !== undefined && new RegExp(`check_policy_service\\s+(\\{\\s*)?${policy}[\\s,}]`).test(`${text} `))
      ? found
      : missing
    ).push(paths.postfixMainCf);
  }
  if (missing.length > 0) {
    return bad(
      'FAIL',
      'mta',
      `${missing.join(' and ')} does not use the map ${base}${cfg.engine === null ? '' : ' or poprelayd'}`,
      `add the lines from ${SHIPPED}mta/ (each file says where) and reload the MTA`,
    );
  }
  if (found.length > 0) return ok('mta', `${found.join(' and ')} ${found.length > 1 ? 'use' : 'uses'} the map`);
  return bad(
    'WARN',
    'mta',
    `no ${paths.sendmailCf} or ${paths.postfixMainCf} found`,
    `for Exim, check that acl_check_rcpt has the statement from ${SHIPPED}mta/exim4-acl.conf`,
  );
}
