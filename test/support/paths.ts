// Where things are in the checkout the tests (and the demo, bundled) run from.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The nearest directory above this module with a package.json: the checkout's root, with a trailing slash. */
function checkoutRoot(): string {
  for (let dir = dirname(new URL(import.meta.url).pathname); dir !== '/'; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return `${dir}/`;
  }
  throw new Error(`no package.json above ${import.meta.url}`);
}

export const ROOT = checkoutRoot();

export const BIN = {
  login: join(ROOT, 'bin/poprelay-login'),
  sweep: join(ROOT, 'bin/poprelay-sweep'),
  admin: join(ROOT, 'bin/poprelay'),
  daemon: join(ROOT, 'bin/poprelayd'),
};

/** package.json's "files": what an install ships (scripts/install.sh copies exactly these). */
export function shippedFiles(): string[] {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[] };
  return pkg.files.map((f) => f.replace(/\/$/, ''));
}

/** The node_modules/ folders poprelay needs at run time (scripts/runtime-modules.mjs, which the installer reads too). */
export function runtimeModules(): string[] {
  const r = spawnSync(process.execPath, [join(ROOT, 'scripts/runtime-modules.mjs'), ROOT], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`scripts/runtime-modules.mjs: ${r.stderr}`);
  return r.stdout.trim().split('\n');
}

/** test/fixtures/mapop.mjs: one library operation in its own process. */
export const MAPOP = join(ROOT, 'test/fixtures/mapop.mjs');
