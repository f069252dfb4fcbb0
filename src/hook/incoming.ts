// Admitting the front's incoming logins (map/queue.ts) into the login queue.
// Each is checked as a login recorded by hand is (a valid address, not on
// the ignore list, not already fresh in the map) and queued as a record,
// all in one batch; only then are the incoming names removed, so a crash in
// between queues a login twice, which applying makes harmless (an entry
// never moves back in time). Nothing the front wrote reaches the map
// without passing here. Each login's user and service go to the who
// journal here too, before anything is queued, so that the shared-address
// guard (who/shared-address.ts) keeps a gateway's logins out of the queue.

import { parseClientAddress, type ClientAddress } from '../address.js';
import { isIgnored, type Config } from '../config.js';
import { translated } from '../map/errors.js';
import { unchanged, valuesBeforeQueueing } from '../map/relay-map.js';
import { clearIncoming, enqueueLogins, readIncoming, type IncomingLogin } from '../map/queue.js';
import { keepWho } from '../who/shared-address.js';
import type { UserSeen } from '../who/journal.js';

export type Admission =
  | {
      login: IncomingLogin;
      addr: ClientAddress;
      outcome: 'queued' | 'fresh' | 'permanent' | 'ignored' | 'expired' | 'shared';
      /** 'shared': every user behind the address within the timeout, latest first. */
      users?: UserSeen[];
    }
  | { login: IncomingLogin; addr: null; outcome: 'invalid'; problem: string };

type Valid = Extract<Admission, { addr: ClientAddress }>;

/**
 * Admits every incoming login there is now; [] when there is none.
 * `whoProblem` hears why the who journal could not take them (they are
 * admitted all the same).
 */
export function admitIncoming(cfg: Config, now: number, whoProblem?: (e: Error) => void): Admission[] {
  const s = cfg.map;
  const incoming = translated(s.path, 'read the login queue of', () => readIncoming(s.path), 'io');
  if (incoming.length === 0) return [];
  const out = incoming.map((login): Admission => {
    if (login.ip === null)
      return {
        login,
        addr: null,
        outcome: 'invalid',
        problem: `${login.what === undefined ? '' : `${login.what}, `}not a login as the front leaves them; removed`,
      };
    let addr: ClientAddress;
    try {
      addr = parseClientAddress(login.ip);
    } catch (e) {
      return { login, addr: null, outcome: 'invalid', problem: (e as Error).message };
    }
    if (isIgnored(cfg, addr)) return { login, addr, outcome: 'ignored' };
    if (login.time < now - s.timeoutSeconds) return { login, addr, outcome: 'expired' };
    return { login, addr, outcome: 'queued' };
  });
  const candidates = out.filter((a): a is Valid => a.outcome === 'queued');
  const values = valuesBeforeQueueing(
    s,
    candidates.flatMap((a) => a.addr.keys),
  );
  if (values !== null) {
    let at = 0;
    for (const a of candidates) {
      const n = a.addr.keys.length;
      a.outcome = unchanged(values.slice(at, at + n), a.login.time, cfg.refreshSeconds) ?? 'queued';
      at += n;
    }
  }
  const kept = out.filter(
    (a): a is Valid => a.outcome === 'queued' || a.outcome === 'fresh' || a.outcome === 'permanent',
  );
  const guard = keepWho(
    cfg,
    kept.map((a) => ({
      addr: a.addr,
      time: a.login.time,
      service: a.login.tag,
      user: a.login.user,
      permanent: a.outcome === 'permanent',
    })),
    now,
  );
  if (guard.problem !== null) whoProblem?.(guard.problem);
  for (const a of kept) {
    const users = a.outcome === 'permanent' ? undefined : guard.shared.get(a.addr.text);
    if (users !== undefined) {
      a.outcome = 'shared';
      a.users = users;
    }
  }
  const queued = out.flatMap((a) => (a.outcome === 'queued' ? [{ address: a.addr, time: a.login.time }] : []));
  if (queued.length > 0) translated(s.path, 'queue a login for', () => enqueueLogins(s.path, queued), 'io');
  const notes = translated(
    s.path,
    'clear admitted logins from the queue of',
    () => clearIncoming(s.path, incoming),
    'io',
  );
  // What could not simply be removed says what became of it instead.
  for (const a of out) {
    const note = notes.get(a.login);
    if (note !== undefined && a.addr === null) a.problem = a.problem.replace(/removed$/, note);
  }
  return out;
}
