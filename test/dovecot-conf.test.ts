// The shipped Dovecot snippets, for Debian 12's Dovecot 2.3 and Debian 13's
// 2.4 (chrooted): accepted on top of each one's stock configuration, and the
// vsz_limit they set is really needed.

import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { doveconf, dovecotVersions, PASSWORD, startDovecot, treeOf, type DovecotVersion } from './dovecot.js';
import { eventually, ROOT } from './helpers.js';
import { pop3Login } from './mailclient.js';

// Each version with the tree it runs in and how its snippet spells "no limit".
const VERSIONS = dovecotVersions().map((v): [DovecotVersion, string, string] => [v, treeOf(v), v === '2.3' ? '0' : 'unlimited']);

describe.each(VERSIONS)('dovecot-conf/%s/95-poprelay.conf', (version, root, unlimited) => {
  it('passes doveconf -n installed into a copy of the stock /etc/dovecot', async () => {
    // As the installer puts it: conf.d/95-poprelay.conf, which the stock
    // dovecot.conf includes.
    const copy = mkdtempSync(join(root, '/tmp/poprelay-etc-dovecot-'));
    try {
      cpSync(join(root, '/etc/dovecot'), copy, { recursive: true });
      cpSync(join(ROOT, `dovecot-conf/${version}/95-poprelay.conf`), join(copy, 'conf.d/95-poprelay.conf'));
      const conf = join(copy.slice(root.length), 'dovecot.conf');
      const r = await doveconf(version, ['-n', '-c', conf]);
      expect(r.stderr).toBe('');
      expect(r.exitCode).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^# ${version.replace('.', '\\.')}\\.\\d`));
      for (const svc of ['pop3', 'imap']) {
        const block = new RegExp(
          // 2.3's doveconf -n leaves out the unix_listener block (all its settings are defaults), 2.4's shows it empty.
          `service poprelay-${svc} \\{\\n  executable = script-login /usr/local/sbin/poprelay-login --tag ${svc}\\n` +
            `  user = poprelay\\n  vsz_limit = ${unlimited}\\n(  unix_listener poprelay-${svc} \\{\\n  \\}\\n)?\\}`,
        );
        expect(r.stdout).toMatch(block);
        expect(r.stdout).toMatch(new RegExp(`service ${svc} \\{\\n  executable = ${svc} poprelay-${svc}\\n\\}`));
      }
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  it('needs its vsz_limit: under Dovecot\'s default limit Node cannot start and the login is refused', async () => {
    const dc = await startDovecot({ users: 1, version, editConf: (c) => c.replace(new RegExp(`^\\s*vsz_limit = ${unlimited}\\n`, 'gm'), '') });
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
