// poprelay-login's front run by hand, as Dovecot runs it: the tests of the
// front and of its faults each install one beside a map of their own.

import { execa } from 'execa';

/** A map with its queue, as `poprelay init` leaves them, and an installed front. */
export interface FrontSite {
  dir: string;
  ini: string;
  map: string;
  queue: string;
  front: string;
}

export interface FrontLogin {
  user?: string;
  /** Options after the executable line's. */
  more?: string[];
  /** Environment beside IP, USER and PATH. */
  env?: Record<string, string>;
  /** What continues the login (default /bin/true). */
  command?: string[];
  /** The account it runs as (default this process's). */
  as?: string;
}

/**
 * One login as Dovecot runs the front: the options of the shipped
 * executable line, then the command that continues the login, with only
 * the environment Dovecot gives it.
 */
export function frontLogin(s: FrontSite, ip: string, o: FrontLogin = {}) {
  const argv = [
    '--config',
    s.ini,
    '--queue',
    s.queue,
    '--tag',
    'pop3',
    ...(o.more ?? []),
    ...(o.command ?? ['/bin/true']),
  ];
  const [file, args] =
    o.as === undefined
      ? [s.front, argv]
      : ['setpriv', [`--reuid=${o.as}`, `--regid=${o.as}`, '--clear-groups', s.front, ...argv]];
  return execa(file, args, {
    env: { IP: ip, USER: o.user ?? 'alice', PATH: '/usr/bin:/bin', ...o.env },
    extendEnv: false,
    reject: false,
  });
}
