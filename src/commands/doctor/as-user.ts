// doctor runs as root, but the hook and the map are the hook's user's: what
// that user can do is found out by running it as that user.

import { spawnSync } from 'node:child_process';

/**
 * Runs a command as `user`, within an address-space limit if given (as
 * Dovecot's vsz_limit); null when this process may not switch users.
 * Bounded: a hook that hangs must not hang doctor.
 */
export function asUser(
  user: string,
  cmd: string[],
  env: NodeJS.ProcessEnv = {},
  vsz: number | null = null,
): { status: number | null; stderr: string } | null {
  if (process.getuid?.() !== 0) return null;
  const gid = spawnSync('id', ['-g', user], { encoding: 'utf8' }).stdout?.trim() ?? '';
  if (!/^\d+$/.test(gid)) return { status: 1, stderr: `no user ${user}` };
  const asThem = ['setpriv', `--reuid=${user}`, `--regid=${gid}`, '--init-groups', ...cmd];
  const [file = 'setpriv', ...args] =
    vsz === null ? asThem : ['prlimit', `--as=${vsz}`, `--data=${vsz}`, '--', ...asThem];
  const r = spawnSync(file, args, { env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stderr: r.stderr ?? '' };
}
