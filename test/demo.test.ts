// The demos (scripts/demo.ts, scripts/demo-cluster.ts) run as esbuild
// bundles under build/demo/, so they may use the tests' support code but
// nothing that loads the addon by a path relative to its own module (src/native.ts):
// bundled, that path points nowhere. Running them takes root and the real
// peers: scripts/demo.sh does; here, what they bundle.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { expect, it } from 'vitest';

import { ROOT } from './support/paths.js';
import { tempDir } from './support/tmp.js';

it.each(['demo', 'demo-cluster'])('scripts/%s.ts bundles without the addon', async (name) => {
  const out = join(tempDir(), `${name}.mjs`);
  await execa(
    join(ROOT, 'node_modules/.bin/esbuild'),
    [
      `scripts/${name}.ts`,
      '--bundle',
      '--platform=node',
      '--format=esm',
      '--packages=external',
      `--outfile=${out}`,
      '--log-level=error',
    ],
    { cwd: ROOT },
  );
  expect(readFileSync(out, 'utf8')).not.toContain('poprelay_native.node');
});
