import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';

import { CONFIG_KEYS, parseConfig } from '../src/config.js';
import { ROOT } from './support/paths.js';

it('the shipped sample config parses and states the defaults', () => {
  const text = readFileSync(join(ROOT, 'etc/poprelay.ini'), 'utf8');
  const { source: _s, ...sample } = parseConfig(text, 'sample');
  const { source: _d, ...defaults } = parseConfig('', null);
  expect(sample).toEqual(defaults);
  // The sample states every key the code knows, and no other; test/man.test.ts holds
  // poprelay.ini(5) to the same list.
  expect([...text.matchAll(/^([a-z_]+) = /gm)].map((m) => m[1]).sort()).toEqual([...CONFIG_KEYS].sort());
});
