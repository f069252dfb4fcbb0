// Lines the tests' poprelay.ini files share. No vitest here: the demo
// bundles test/support/dovecot.ts, which uses it.

/**
 * The line a test's config carries unless it is about live sessions: the
 * default (auto) asks the host's Dovecot when /run/dovecot/anvil exists, and
 * a test must not depend on whether Debian's Dovecot runs, or ran once, here.
 */
export const NOT_LIVE = 'live_sessions = no\n';

/** `extra` with NOT_LIVE, unless it sets live_sessions itself. */
export const unlessLive = (extra: string): string =>
  /^live_sessions\s*=/m.test(extra) ? extra : `${NOT_LIVE}${extra}`;
