// The post-login scripts poprelay-login is measured against: what any
// post-login script costs (/bin/sh `exec "$@"`) and what starting Node
// costs (a Node script that only continues the login).

import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import type { OtherScript } from '../test/support/dovecot.js';

/** The cheapest script that continues the login: the floor poprelay-login's front is held to. */
export const SH_EXEC: OtherScript = {
  node: false,
  write: (dir) => {
    const f = join(dir, 'sh-exec');
    writeFileSync(f, '#!/bin/sh\nexec "$@"\n');
    chmodSync(f, 0o755);
    return f;
  },
};

/** A Node script that does nothing but continue the login, as Dovecot would run a hook written in Node. */
export const NODE_NOOP: OtherScript = {
  node: true,
  write: (dir, node) => {
    const f = join(dir, 'node-noop.mjs');
    writeFileSync(
      f,
      `#!${node}\nimport { spawn } from 'node:child_process';\n` +
        `const c = spawn(process.argv[2], process.argv.slice(3), { stdio: [0, 1, 2, 3] });\n` +
        `c.on('exit', (code) => process.exit(code ?? 1));\n`,
    );
    chmodSync(f, 0o755);
    return f;
  },
};
