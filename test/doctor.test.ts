// poprelay doctor's readers of Dovecot's configuration, on what doveconf -n
// of each Dovecot really prints. The doctor's checks of whole installs are
// in install.test.ts.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { parseDoveconfProtocols, parseDoveconfServices, vszBytes } from '../src/commands/doctor/doveconf.js';
import { configHead, doveconf, dovecotVersions, treeOf } from './support/dovecot.js';
import { tempDir } from './support/tmp.js';

it('parseDoveconfServices reads service blocks, ignoring nested ones', () => {
  const s = parseDoveconfServices(
    'service pop3 {\n  executable = pop3 pr\n}\nservice pr {\n  executable = script-login /x/poprelay-login\n  unix_listener pr {\n    user = nobody\n  }\n  user = poprelay\n  vsz_limit = 0\n}\n',
  );
  expect(s.get('pop3')).toEqual({ executable: 'pop3 pr' });
  expect(s.get('pr')).toEqual({ executable: 'script-login /x/poprelay-login', user: 'poprelay', vsz_limit: '0' });
});

it('vszBytes reads a vsz_limit as Dovecot applies it', () => {
  expect(vszBytes('256M')).toBe(256 * 2 ** 20);
  expect(vszBytes('96 M')).toBe(96 * 2 ** 20);
  expect(vszBytes('1G')).toBe(2 ** 30);
  expect(vszBytes('0')).toBeNull();
  expect(vszBytes('unlimited')).toBeNull();
});

// What doveconf -n of each Dovecot really prints for protocol settings.
describe.each(dovecotVersions())('parseDoveconfProtocols on the output of Dovecot %s', (version) => {
  const root = treeOf(version);
  const head = configHead(version)
    .map((l) => `${l}\n`)
    .join('');
  const installed = '!include_try /usr/share/dovecot/protocols.d/*.protocol\n';
  const cases: Array<[string, string, string[]]> = [
    ['a list', 'protocols = imap\n', ['imap']],
    ['the installed protocols', installed, ['imap', 'pop3']],
    [
      'the installed protocols but pop3',
      version === '2.4' ? `${installed}protocols {\n  pop3 = no\n}\n` : `${installed}protocols = imap\n`,
      ['imap'],
    ],
  ];
  it.each(cases)('%s', async (_, conf, expected) => {
    const dir = tempDir('poprelay-doveconf-', join(root, '/tmp'));
    writeFileSync(join(dir, 'dovecot.conf'), head + conf);
    const inside = join(dir.slice(root.length), 'dovecot.conf');
    const r = await doveconf(version, ['-n', '-c', inside]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(parseDoveconfProtocols(r.stdout).sort(), r.stdout).toEqual(expected);
  });
});
