// doctor's shared-address check: with shared_address_users set, the
// addresses it stops now and who is behind them, so that an administrator
// can tell a gateway that needs a permanent entry (or the ignore list) from
// one that should stay stopped.

import type { Config } from '../../config.js';
import type { Check } from './check.js';
import { quoteUntrusted } from '../../errors.js';
import { describeUsers, sharedFromJournal } from '../../who/shared-address.js';
import { showUser } from '../../who/journal.js';

export function sharedCheck(cfg: Config, now: number): Check | null {
  const k = cfg.sharedAddressUsers;
  if (k === null) return null;
  const shared = [...sharedFromJournal(cfg, now)];
  if (shared.length === 0)
    return { status: 'OK', name: 'shared', detail: `no address has more than shared_address_users = ${k} users now` };
  const listed = shared
    .slice(0, 10)
    .map(([a, users]) => `${a}: ${describeUsers(users, (u) => showUser(u, quoteUntrusted), 5)}`)
    .join('; ');
  return {
    status: 'WARN',
    name: 'shared',
    detail:
      `${shared.length} address${shared.length === 1 ? '' : 'es'} with more than shared_address_users = ${k} users ` +
      `within timeout_minutes may not relay: ${listed}${shared.length > 10 ? '; ...' : ''}`,
    fix: 'nothing, if these are gateways (NAT, a hotspot, a proxy) whose users should use SMTP AUTH; for a gateway whose users may all relay, poprelay add ADDRESS --permanent, or add it to ignore',
  };
}
