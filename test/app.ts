// A world-readable copy of the built programs, for tests that run them as
// other users (nobody, poprelay) or under Dovecot: they must not depend on
// the permissions of wherever the checkout lives.

import { chmodSync, cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('..', import.meta.url).pathname;

let copy: string | undefined;

/** The copy's root: dist/, build/Release/, node_modules/ini, bin/, test/fixtures/. Made once per process. */
export function appCopy(): string {
  if (copy !== undefined) return copy;
  const app = mkdtempSync(join(tmpdir(), 'poprelay-app-'));
  chmodSync(app, 0o755);
  for (const p of ['dist', 'build/Release/poprelay_bdb.node', 'node_modules/ini', 'package.json', 'bin', 'test/fixtures']) {
    cpSync(join(ROOT, p), join(app, p), { recursive: true });
  }
  copy = app;
  process.once('exit', () => rmSync(app, { recursive: true, force: true }));
  return app;
}

/**
 * An installed-style hook: an absolute interpreter path, since Dovecot
 * gives no PATH. `node` and `app` as the hook will see them (a chrooted
 * Dovecot sees other paths than this process).
 */
export function installHook(dir: string, node = process.execPath, app = appCopy()): string {
  const hook = join(dir, 'poprelay-login');
  writeFileSync(hook, `#!${node}\nimport('${app}/dist/login.js').then(async (m) => process.exit(await m.main(process.argv.slice(2), process.env)));\n`);
  chmodSync(hook, 0o755);
  return hook;
}
