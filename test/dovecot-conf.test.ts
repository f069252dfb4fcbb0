// The shipped Dovecot snippets: accepted by the installed Dovecot, and the
// vsz_limit they set is really needed.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { eventually, PASSWORD, startDovecot } from './dovecot.js';
import { ROOT, tempDir } from './helpers.js';
import { pop3Login } from './mailclient.js';

describe('dovecot-conf/2.3/95-poprelay.conf', () => {
  it('passes doveconf -n on top of Debian\'s stock configuration', async () => {
    const dir = tempDir();
    const conf = join(dir, 'dovecot.conf');
    writeFileSync(conf, `!include /etc/dovecot/dovecot.conf\n!include ${join(ROOT, 'dovecot-conf/2.3/95-poprelay.conf')}\n`);
    const r = await execa('doveconf', ['-n', '-c', conf], { reject: false });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    for (const svc of ['pop3', 'imap']) {
      const block = new RegExp(
        // doveconf -n leaves out the unix_listener block: all its settings are defaults.
        `service poprelay-${svc} \\{\\n  executable = script-login /usr/local/sbin/poprelay-login --tag ${svc}\\n` +
          `  user = poprelay\\n  vsz_limit = 0\\n\\}`,
      );
      expect(r.stdout).toMatch(block);
      expect(r.stdout).toMatch(new RegExp(`service ${svc} \\{\\n  executable = ${svc} poprelay-${svc}\\n\\}`));
    }
  });

  it('needs its vsz_limit: under Dovecot\'s default limit Node cannot start and the login is refused', async () => {
    const dc = await startDovecot({ users: 1, editConf: (c) => c.replace(/^\s*vsz_limit = 0\n/gm, '') });
    try {
      const login = await pop3Login({ ...dc.pop3, localAddress: '127.4.0.1' }, 'user0', PASSWORD).catch((e: Error) => e);
      expect(login instanceof Error ? login.message : 'login succeeded').toMatch(/closed at step 2/);
      // Dovecot logs the refusal after it has closed the client's connection.
      await eventually(() => /Post-login script denied access to user user0/.test(dc.log()));
      expect(dc.log()).toContain('Failed to reserve virtual memory for CodeRange');
    } finally {
      await dc.stop();
    }
  });
});
