import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';

import { parseConfig } from '../src/config.js';
import { ROOT } from './support/paths.js';

it('the shipped sample config parses and states the defaults', () => {
  const text = readFileSync(join(ROOT, 'etc/poprelay.ini'), 'utf8');
  const { source: _s, ...sample } = parseConfig(text, 'sample');
  const { source: _d, ...defaults } = parseConfig('', null);
  expect(sample).toEqual(defaults);
  // Every key is documented in the sample.
  for (const key of [
    'dbfile',
    'dbtype',
    'timeout_minutes',
    'lock_timeout_ms',
    'ignore',
    'map_mode',
    'log_recorded',
    'refresh_seconds',
    'live_sessions',
    'dovecot_anvil',
    'doveadm',
    'metrics_file',
  ]) {
    expect(text).toMatch(new RegExp(`^${key} = `, 'm'));
  }
});
