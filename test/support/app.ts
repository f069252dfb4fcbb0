// A world-readable copy of the built programs, for tests that run them as
// other users (nobody, poprelay) or under Dovecot: they must not depend on
// the permissions of wherever the checkout lives.

import { spawnSync } from 'node:child_process';
import { chmodSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ROOT, runtimeModules, shippedFiles } from './paths.js';

let copy: string | undefined;

/** The copy's root: what an install ships, as the installer copies it, and test/fixtures/. Made once per process. */
export function appCopy(): string {
  if (copy !== undefined) return copy;
  const app = mkdtempSync(join(tmpdir(), 'poprelay-app-'));
  chmodSync(app, 0o755);
  for (const p of [...shippedFiles(), ...runtimeModules(), 'package.json', 'test/fixtures']) {
    cpSync(join(ROOT, p), join(app, p), { recursive: true });
  }
  copy = app;
  process.once('exit', () => rmSync(app, { recursive: true, force: true }));
  return app;
}

/**
 * An installed-style hook: the front with absolute paths written in, as the
 * installer writes them, since Dovecot gives no PATH. `node` and `app` as
 * the hook will see them (a chrooted Dovecot sees other paths than this
 * process).
 */
export function installHook(dir: string, node = process.execPath, app = appCopy(), hostNode = node): string {
  const hook = join(dir, 'poprelay-login');
  writeFileSync(
    hook,
    frontWithPaths(
      readFileSync(join(ROOT, 'bin/poprelay-login'), 'utf8'),
      node,
      `${app}/dist/poprelay-login.cjs`,
      hostNode,
    ),
  );
  chmodSync(hook, 0o755);
  return hook;
}

/**
 * The front's text with its node=, recorder= and flags= lines set, as
 * scripts/install.sh sets them (Node 24 refuses --no-expose-wasm). The
 * flags are probed with `hostNode`: `node` may be a path inside a chroot.
 */
export function frontWithPaths(front: string, node: string, recorder: string, hostNode = node): string {
  const flags =
    spawnSync(hostNode, ['--jitless', '--no-expose-wasm', '-e', '0']).status === 0
      ? '--jitless --no-expose-wasm'
      : '--jitless';
  const lines = { node, recorder, flags };
  let out = front;
  for (const [name, value] of Object.entries(lines)) {
    const line = new RegExp(`^${name}=.*$`, 'm');
    if (!line.test(out)) throw new Error(`bin/poprelay-login has no ${name}= line`);
    out = out.replace(line, `${name}='${value}'`);
  }
  return out;
}
