// Where poprelay's own files are, for the fixes doctor names and the
// programs it runs: beside dist/, in a checkout and as installed, so each
// is found from this module (dist/commands/doctor/) three levels up.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The configuration poprelay ships (etc/ beside dist/), in the checkout or the installed copy. */
export const SHIPPED = fileURLToPath(new URL('../../../etc/', import.meta.url));

/** bin/poprelay beside dist/, in a checkout and as installed. */
export const ADMIN_PROGRAM = fileURLToPath(new URL('../../../bin/poprelay', import.meta.url));

/** Dovecot's snippets: beside dist/ (a checkout, install.sh), or where the Debian package puts them. */
export function snippetsDir(): string {
  const beside = fileURLToPath(new URL('../../../dovecot-conf/', import.meta.url));
  return existsSync(beside) ? beside : '/usr/share/poprelay/dovecot-conf/';
}
