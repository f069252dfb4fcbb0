// The addon is built once, by npm ci, for the Node.js that ran it; Node-API
// promises that the same binary loads in later Node.js majors. Here that
// one build does the hook's, the admin's and the sweep's work under Node.js
// 22 and 24 (unpacked by scripts/install-deps.sh --test), starting from a
// real Dovecot login.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { PASSWORD, startDovecot, withVszLimit } from './support/dovecot.js';
import { pop3Login } from './support/mailclient.js';
import { dumpMap, expectVerified } from './support/maps.js';
import { BIN } from './support/paths.js';
import { eventually } from './support/wait.js';

const NODES = '/var/cache/poprelay-test-peers/node';

describe.each(['22', '24'])('the addon built for this Node.js, under Node.js %s', (major) => {
  const node = join(NODES, major, 'bin/node');

  it('records a Dovecot login, adds, lists, checks and sweeps', async () => {
    if (!existsSync(node)) throw new Error(`${node} is missing: run scripts/install-deps.sh --test as root`);
    expect((await execa(node, ['--version'])).stdout).toMatch(new RegExp(`^v${major}\\.`));
    // Node 24 does not start within Dovecot's default vsz_limit; the installer then sets one (test/install.test.ts).
    const dc = await startDovecot({
      users: 1,
      node,
      editConf: major === '24' ? (c) => withVszLimit(c, '0') : undefined,
    });
    try {
      const login = await pop3Login({ ...dc.pop3, localAddress: '127.6.0.1' }, 'user0', PASSWORD);
      expect(login.ok).toBe(true);
      await eventually(() =>
        dc.log().includes('poprelay-pop3: Info: poprelay: recorded 127.6.0.1 (user=user0, service=pop3)'),
      );
      await expectVerified(dc.mapPath);

      const admin = (args: string[]) => execa(node, [BIN.admin, ...args, '--config', dc.iniPath], { reject: false });
      expect((await admin(['add', '2001:db8::6'])).exitCode).toBe(0);
      const listed = JSON.parse((await admin(['list', '--json'])).stdout) as Array<{ address: string }>;
      expect(listed.map((e) => e.address)).toEqual(['127.6.0.1', '2001:db8::6']);
      expect((await admin(['check', '127.6.0.1'])).exitCode).toBe(0);

      // An hour on, both entries are older than the 15 minutes.
      const later = String(Math.floor(Date.now() / 1000) + 3600);
      const swept = await execa(node, [BIN.sweep, '--config', dc.iniPath, '--now', later], { reject: false });
      expect(swept.stderr).toBe('');
      expect(swept.stdout).toBe(`${dc.mapPath}: kept 0, removed 2, permanent 0`);
      expect(await dumpMap(dc.mapPath)).toEqual([]);
      await expectVerified(dc.mapPath);
    } finally {
      await dc.stop();
    }
  });
});
