// A world-readable copy of the built programs, for tests that run them as
// other users (nobody, poprelay) or under Dovecot: they must not depend on
// the permissions of wherever the checkout lives.

import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
    // Verbatim: bin/poprelay-login points into the copy's own build/Release/.
    cpSync(join(ROOT, p), join(app, p), { recursive: true, verbatimSymlinks: true });
  }
  writeRecorderConf(join(app, 'build/Release'), process.execPath, join(app, 'dist/poprelay-login.cjs'));
  copy = app;
  process.once('exit', () => rmSync(app, { recursive: true, force: true }));
  return app;
}

/**
 * An installed-style hook: the compiled front copied into `dir`, and the
 * recorder.conf beside it that says how it starts the recorder, as the
 * installer writes it. `node` and `app` as the hook will see them (a
 * chrooted Dovecot sees other paths than this process).
 */
export function installHook(dir: string, node = process.execPath, app = appCopy(), hostNode = node): string {
  const hook = join(dir, 'poprelay-login');
  copyFileSync(join(ROOT, 'build/Release/poprelay-login'), hook);
  chmodSync(hook, 0o755);
  writeRecorderConf(dir, node, `${app}/dist/poprelay-login.cjs`, hostNode);
  return hook;
}

/**
 * recorder.conf in `dir`, as scripts/install.sh writes it (Node 24 refuses
 * --no-expose-wasm). The flags are probed with `hostNode`: `node` may be a
 * path inside a chroot.
 */
export function writeRecorderConf(dir: string, node: string, script: string, hostNode = node): void {
  const flags =
    spawnSync(hostNode, ['--jitless', '--no-expose-wasm', '-e', '0']).status === 0
      ? '--jitless --no-expose-wasm'
      : '--jitless';
  writeFileSync(join(dir, 'recorder.conf'), `node=${node}\nscript=${script}\nflags=${flags}\n`);
}
