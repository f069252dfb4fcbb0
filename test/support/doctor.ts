// Reading poprelay doctor's verdicts.

/** poprelay doctor's verdict per check, from its output: { config: 'OK', ... }. */
export function doctorStatuses(stdout: string): Record<string, string> {
  const lines = stdout.split('\n').filter((l) => /^(OK|WARN|FAIL)/.test(l));
  return Object.fromEntries(lines.map((l) => [l.slice(6, l.indexOf(':')), l.slice(0, 4).trim()]));
}

/** What poprelay doctor says of a correct installation. */
export const DOCTOR_ALL_OK: Record<string, string> = {
  config: 'OK',
  'dovecot pop3': 'OK',
  'dovecot imap': 'OK',
  map: 'OK',
  'map access': 'OK',
  'map queue': 'OK',
  'hook queue': 'OK',
  'map readers': 'OK',
  'map directory': 'OK',
  sweep: 'OK',
  'live sessions': 'OK',
  mta: 'OK',
  hook: 'OK',
};
