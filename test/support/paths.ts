// Where things are in the checkout the tests run from.

import { join } from 'node:path';

/** The checkout's root, with a trailing slash. */
export const ROOT = new URL('../..', import.meta.url).pathname;

export const BIN = {
  login: join(ROOT, 'bin/poprelay-login'),
  sweep: join(ROOT, 'bin/poprelay-sweep'),
  admin: join(ROOT, 'bin/poprelay'),
};

/** test/fixtures/mapop.mjs: one library operation in its own process. */
export const MAPOP = join(ROOT, 'test/fixtures/mapop.mjs');
