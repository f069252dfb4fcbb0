// The docs promise Valkey as well as Redis: the engine tests (the hook, the
// sweep, poprelay's commands, poprelayd, Sentinel, TLS, the engine users'
// roles) run again with Debian 13's valkey-server and valkey-sentinel, from
// the tree scripts/install-deps.sh makes, as every test's engine
// (POPRELAY_TEST_ENGINE=valkey), in a vitest of their own.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { ask } from './support/sentinel.js';
import { TRIXIE } from './support/dovecot.js';
import { startEngine, valkeyPresent } from './support/engine.js';
import { ROOT } from './support/paths.js';

const FILES = [
  'test/engine.test.ts',
  'test/sentinel.test.ts',
  'test/engine-tls.test.ts',
  'test/security-engine-roles.test.ts',
];

// A machine that could not make the Debian 13 tree says why in TRIXIE.unavailable (install-deps): skipped then, saying so.
const unavailable = existsSync(`${TRIXIE}.unavailable`) ? readFileSync(`${TRIXIE}.unavailable`, 'utf8').trim() : null;
if (unavailable !== null) console.warn(`test/valkey.test.ts skipped: ${unavailable}`);

describe.runIf(unavailable === null)('Valkey (Debian 13)', () => {
  it('is what the tests start when POPRELAY_TEST_ENGINE=valkey', async () => {
    expect(
      valkeyPresent(),
      'run scripts/install-deps.sh --test as root: it adds valkey-server to the Debian 13 tree',
    ).toBe(true);
    const engine = await startEngine([], undefined, { kind: 'valkey' });
    try {
      const info = await ask(engine.port, ['INFO', 'server']);
      expect(info).toMatch(/server_name:valkey/);
      expect(info).toMatch(/valkey_version:\d+\./);
    } finally {
      await engine.stop();
    }
  });

  it(`passes the engine tests: ${FILES.join(', ')}`, async () => {
    const child = spawn(
      process.execPath,
      [join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run', '--maxWorkers=1', '--minWorkers=1', ...FILES],
      { cwd: ROOT, env: { ...process.env, POPRELAY_TEST_ENGINE: 'valkey' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    const plain = output.replace(/\x1b\[[0-9;]*m/g, '');
    expect(code, plain.slice(-6000)).toBe(0);
    expect(plain).toMatch(new RegExp(`Test Files +${FILES.length} passed`));
  });
});
