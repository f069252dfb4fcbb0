// The shipped Dovecot snippets, for Debian 12's Dovecot 2.3 and Debian 13's
// 2.4 (chrooted): accepted on top of each one's stock configuration, and the
// hook works within Dovecot's default vsz_limit, so they set none.

import { cpSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { readEntries } from '../src/map/relay-map.js';
import {
  doveconf,
  type DovecotVersion,
  dovecotVersions,
  PASSWORD,
  startDovecot,
  treeOf,
  withVszLimit,
} from './support/dovecot.js';
import { pop3Login } from './support/mailclient.js';
import { settings } from './support/maps.js';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

// Each version with the tree it runs in.
const VERSIONS = dovecotVersions().map((v): [DovecotVersion, string] => [v, treeOf(v)]);

describe.each(VERSIONS)('dovecot-conf/%s/95-poprelay.conf', (version, root) => {
  it('passes doveconf -n installed into a copy of the stock /etc/dovecot', async () => {
    // As the installer puts it: conf.d/95-poprelay.conf, which the stock
    // dovecot.conf includes.
    const copy = tempDir('poprelay-etc-dovecot-', join(root, '/tmp'));
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
          `  user = poprelay\\n(  unix_listener poprelay-${svc} \\{\\n  \\}\\n)?\\}`,
      );
      expect(r.stdout).toMatch(block);
      expect(r.stdout).toMatch(new RegExp(`service ${svc} \\{\\n  executable = ${svc} poprelay-${svc}\\n\\}`));
    }
  });

  it("runs the hook within Dovecot's default vsz_limit (256M): the login goes on and is recorded", async () => {
    const dc = await startDovecot({ users: 1, version });
    try {
      expect((await pop3Login({ ...dc.pop3, localAddress: '127.4.0.1' }, 'user0', PASSWORD)).ok).toBe(true);
      await eventually(() => dc.log().includes('poprelay: recorded 127.4.0.1 '));
      await eventually(() => readEntries(settings(dc.mapDir)).some((e) => e.address === '127.4.0.1'));
      expect(dc.log()).not.toMatch(/Error/);
    } finally {
      await dc.stop();
    }
  });

  it('with a vsz_limit too small for Node, the login still goes on and the log says why nothing was recorded', async () => {
    const dc = await startDovecot({ users: 1, version, editConf: (c) => withVszLimit(c, '96M') });
    try {
      expect((await pop3Login({ ...dc.pop3, localAddress: '127.4.0.2' }, 'user0', PASSWORD)).ok).toBe(true);
      await eventually(() =>
        /poprelay-pop3: Error: poprelay: not recorded: the recorder \(.*\) ended with status \d+/.test(dc.log()),
      );
      expect(existsSync(dc.mapPath) && readEntries(settings(dc.mapDir)).some((e) => e.address === '127.4.0.2')).toBe(
        false,
      );
    } finally {
      await dc.stop();
    }
  });
});
