// Temporary directories, each removed after the test file that made it.

import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const made: string[] = [];
afterAll(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory under `base` (default the system's tmpdir); mkdtemp makes it 0700. */
export function tempDir(prefix = 'poprelay-test-', base = tmpdir()): string {
  const dir = mkdtempSync(join(base, prefix));
  made.push(dir);
  return dir;
}

const SAFE_BASE = '/var/lib/poprelay-tests';

/**
 * A directory sendmail accepts for maps: root-owned 0755 with no group- or
 * world-writable parent (/tmp would be refused as "unsafe").
 */
export function safeDir(): string {
  mkdirSync(SAFE_BASE, { recursive: true, mode: 0o755 });
  chmodSync(SAFE_BASE, 0o755);
  const dir = tempDir('run-', SAFE_BASE);
  chmodSync(dir, 0o755);
  return dir;
}
