// Writes recorder.conf beside the compiled front (build/Release/, where
// bin/poprelay-login points): how the front starts the recorder in this
// checkout. Installed copies get theirs from scripts/install.sh or the
// package's postinst. Usage: node scripts/recorder-conf.mjs [NODE]
import { spawnSync } from 'node:child_process';
import { renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const node = process.argv[2] ?? process.execPath;
// Node 24 refuses --no-expose-wasm; 20 and 22 warn on every start without it.
const flags =
  spawnSync(node, ['--jitless', '--no-expose-wasm', '-e', '0']).status === 0
    ? '--jitless --no-expose-wasm'
    : '--jitless';
const out = join(root, 'build/Release/recorder.conf');
writeFileSync(`${out}.new`, `node=${node}\nscript=${join(root, 'dist/poprelay-login.cjs')}\nflags=${flags}\n`);
renameSync(`${out}.new`, out);
