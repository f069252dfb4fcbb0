// doctor's engine role check: the engine user of this host has the role
// the host needs, and no more where more would let a reader of its
// poprelay.ini grant relaying everywhere (engine/roles.ts has the roles).

import type { Config } from '../../config.js';
import type { EngineEndpoint } from '../../endpoints.js';
import { listenersOf } from '../../daemon/protocols.js';
import { COUNT_PREFIX, KEY_PREFIX, keyspaceChannel } from '../../engine/relayset.js';
import { respCall } from '../../engine/call.js';
import { RespError, type RespValue } from '../../engine/resp.js';
import { engineRoleAcl, type EngineRole } from '../../engine/roles.js';
import { bad, ok, type Check } from './check.js';
import { engineWaitMs } from './engine.js';

/** A key under poprelay's prefix that is no address: no host takes it for an entry. */
const PROBE_KEY = `${KEY_PREFIX}doctor-probe`;
/** A count key (user_limit's) that no user's window can have. */
const COUNT_PROBE_KEY = `${COUNT_PREFIX}doctor-probe`;

/**
 * What doctor sends to learn what the engine user may run. None of it
 * writes, whatever the user may: reads of a key no host uses, a script
 * that does nothing, and a SET the engine refuses as a syntax error (NX
 * with XX), which it does only after checking the ACL: NOPERM means the
 * user may not SET there, a syntax error that it may. user_limit's INCRBY
 * and EXPIREAT on a count key are asked the same way, with a number that
 * is none. PSUBSCRIBE (the
 * mirror's) goes last: it puts the connection in subscriber mode, where
 * QUIT still ends it.
 */
function roleProbes(db: number, mirror: boolean): Array<[string, string[]]> {
  return [
    ['GET', ['GET', PROBE_KEY]],
    ['PEXPIRETIME', ['PEXPIRETIME', PROBE_KEY]],
    ['MGET', ['MGET', PROBE_KEY]],
    ['SCAN', ['SCAN', '0', 'MATCH', PROBE_KEY, 'COUNT', '1']],
    ['INFO', ['INFO', 'server']],
    ['EVAL', ['EVAL', 'return 0', '0']],
    ['SET', ['SET', PROBE_KEY, '0', 'NX', 'XX']],
    ['INCRBY', ['INCRBY', COUNT_PROBE_KEY, 'x']],
    ['EXPIREAT', ['EXPIREAT', COUNT_PROBE_KEY, 'x', 'NX']],
    ...(mirror ? [['PSUBSCRIBE', ['PSUBSCRIBE', keyspaceChannel(db)]] as [string, string[]]] : []),
  ];
}

/** The probes whose answer, where the user may run them, is an error of their arguments. */
const ANSWER_IS_ERROR = new Set(['SET', 'INCRBY', 'EXPIREAT']);

const refusal = (v: RespValue | undefined): string | null =>
  v instanceof RespError && /^NOPERM\b/.test(v.message) ? v.message : null;

/**
 * Which role the engine user of this host's engine = has, found out by
 * trying (roleProbes), against what this host needs: a host where Dovecot
 * runs the hook records logins; one with a poprelayd listener or mirror =
 * yes reads. An MTA host alone must not be able to write the relay set:
 * with that credential, whoever reads its poprelay.ini could grant relaying
 * on every host. A POP/IMAP host's credential always can: recording a login
 * is granting relaying. It tries SET and EVAL, the ways poprelay writes,
 * not every write command there is: the read role's line refuses them all
 * (test/security-engine-roles.test.ts tries each).
 */
export function engineRoleCheck(cfg: Config, engine: EngineEndpoint, hook: boolean): Check {
  const name = 'engine role';
  const answers = listenersOf(cfg).some(([, at]) => at !== null);
  const reads = answers || cfg.mirror;
  const probes = roleProbes(engine.db, cfg.mirror);
  let replies: RespValue[];
  try {
    replies = respCall(
      engine,
      probes.map(([, command]) => command),
      engineWaitMs(cfg),
    );
  } catch (e) {
    return bad('WARN', name, `could not find out: ${(e as Error).message}`, 'run poprelay doctor again');
  }
  const why = new Map<string, string>();
  probes.forEach(([command], i) => {
    const reply = replies[i];
    const no = ANSWER_IS_ERROR.has(command) ? refusal(reply) : reply instanceof RespError ? reply.message : null;
    if (no !== null) why.set(command, no);
  });
  const may = (command: string): boolean => !why.has(command);
  const roles: EngineRole[] = [...(hook ? (['pop'] as const) : []), ...(reads ? (['mta'] as const) : [])];
  const source = cfg.source ?? 'poprelay.ini';
  const fix = (wanted: readonly EngineRole[]): string =>
    `give this host an engine user of its own role in engine = (docs/cluster.md): ${engineRoleAcl(wanted, engine.db)}`;
  const needs = [
    ...(hook ? ['EVAL', 'SET', 'GET'] : []),
    ...(answers ? ['GET', 'PEXPIRETIME'] : []),
    ...(cfg.mirror ? ['SCAN', 'MGET', 'PSUBSCRIBE'] : []),
  ].filter((c, i, all) => all.indexOf(c) === i);
  const missing = needs.filter((c) => !may(c));
  if (missing.length > 0) {
    const who =
      hook && reads
        ? 'the hook, the sweep and poprelayd need'
        : hook
          ? 'the hook and the sweep need'
          : 'poprelayd needs';
    return bad(
      'FAIL',
      name,
      `the engine user may not run ${missing.join(', ')}, which ${who} here (${why.get(missing[0] ?? '') ?? ''})`,
      fix(roles.length > 0 ? roles : ['mta']),
    );
  }
  // user_limit, counted in Postfix policy answers only, without its counter is no limit (poprelayd says so
  // and relays): a warning, not a failure.
  const counts = cfg.policyListen !== null && cfg.userLimit !== null;
  const noCount = counts ? ['INCRBY', 'EXPIREAT'].filter((c) => !may(c)) : [];
  if (noCount.length > 0)
    return bad(
      'WARN',
      name,
      `the engine user may not run ${noCount.join(', ')} on ${COUNT_PREFIX}* keys: user_limit = ${cfg.userLimit?.text ?? ''} is not applied on this host (${why.get(noCount[0] ?? '') ?? ''})`,
      fix(roles.length > 0 ? roles : ['mta']),
    );
  const writes = ['SET', 'EVAL'].filter(may);
  const readList = needs.filter((c) => !['EVAL', 'SET'].includes(c)).join(', ');
  if (hook) {
    if (!may('INFO'))
      return bad(
        'WARN',
        name,
        'records logins, but may not run INFO: the sweep cannot tell a restarted engine from the one it seeded, so it sends every entry of the map every minute',
        fix(roles),
      );
    return ok(
      name,
      reads
        ? `records logins and reads (a POP/IMAP host that is an MTA host too): EVAL, SET, INFO, ${readList} allowed`
        : 'records logins (POP/IMAP host): EVAL, SET and INFO allowed; like every POP/IMAP host it can grant relaying, which recording a login is',
    );
  }
  if (reads) {
    if (writes.length > 0)
      return bad(
        'WARN',
        name,
        `can write the relay set (${writes.join(' and ')} allowed): whoever can read ${source} can grant relaying on every host; an MTA host needs only the read role`,
        fix(roles),
      );
    return ok(
      name,
      `reads only (MTA host): SET and EVAL refused; ${readList} allowed${counts ? `; counts user_limit's recipients (INCRBY, EXPIREAT on ${COUNT_PREFIX}* keys)` : ''}`,
    );
  }
  return ok(
    name,
    may('SET')
      ? `can write the relay set (SET allowed${may('SCAN') ? ', and SCAN: the admin role' : ''}): a POP/IMAP host's or an administrator's credential`
      : 'reads only: SET and EVAL refused',
  );
}
