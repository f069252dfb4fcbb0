// The engine users of docs/cluster.md, one per role: the ACL line each
// needs, for doctor's fix and the documentation's set-up.

import { COUNT_PATTERN, KEY_PATTERN, keyspaceChannel } from './relayset.js';

/**
 * Each role is allowed only what its programs send, on keys poprelay:*.
 * mta (poprelayd): GET and PEXPIRETIME for its answers, SCAN, MGET and
 * PSUBSCRIBE on the keyspace channel for the mirror, on keys it may only
 * read (%R~); and user_limit's counts, INCRBY and EXPIREAT, which write
 * only the count keys (~poprelay:count:*): the engine refuses them on an
 * address's key or a who key, so an MTA host's credential still cannot
 * grant relaying. pop (the hook and the sweep): EVAL of the record script,
 * whose GET and SET the engine checks against the same ACL, INFO (the
 * sweep's run_id) and DEL (doctor's hook check removes its test entry with
 * poprelay del). admin: poprelay's commands. Every role: PING and DBSIZE
 * (doctor), and SELECT when engine names a database other than 0.
 */
export type EngineRole = 'mta' | 'pop' | 'admin';

/** Each role's commands, in the order the ACL lines give them. */
const ROLE_COMMANDS: Record<EngineRole, readonly string[]> = {
  pop: ['eval', 'get', 'set', 'del', 'info'],
  admin: ['eval', 'get', 'set', 'del', 'mget', 'scan'],
  mta: ['get', 'pexpiretime', 'mget', 'scan', 'psubscribe', 'incrby', 'expireat'],
};
const COMMAND_ORDER = [
  'eval',
  'get',
  'set',
  'del',
  'info',
  'pexpiretime',
  'mget',
  'scan',
  'psubscribe',
  'incrby',
  'expireat',
];

/**
 * The ACL SETUSER line that makes `user` an engine user of `roles` (a host
 * that is both a POP/IMAP host and an MTA host: ['pop', 'mta']) for the
 * database `db`.
 */
export function engineRoleAcl(
  roles: EngineRole | readonly EngineRole[],
  db: number,
  user?: string,
  password = 'PASSWORD',
): string {
  const set = typeof roles === 'string' ? [roles] : [...roles];
  const commands = new Set(set.flatMap((r) => ROLE_COMMANDS[r]));
  const rules = [
    ...(commands.has('set') ? [`~${KEY_PATTERN}`] : [`%R~${KEY_PATTERN}`, `~${COUNT_PATTERN}`]),
    ...(commands.has('psubscribe') ? [`&${keyspaceChannel(db)}`] : []),
    ...COMMAND_ORDER.filter((c) => commands.has(c)).map((c) => `+${c}`),
    '+ping',
    '+dbsize',
    ...(db === 0 ? [] : ['+select']),
  ];
  return ['ACL', 'SETUSER', user ?? `poprelay-${set.join('-')}`, 'reset', 'on', `>${password}`, ...rules].join(' ');
}
