#!/usr/bin/env node
// Prints the node_modules/ folders poprelay needs at run time, one per line:
// package.json's dependencies and theirs, less node-addon-api (the addon's
// C++ headers, needed only to build). scripts/install.sh copies these
// beside what package.json's "files" ships; the tests read the same list.
// Usage: node scripts/runtime-modules.mjs [CHECKOUT]
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = process.argv[2] ?? new URL('..', import.meta.url).pathname;
const BUILD_ONLY = new Set(['node-addon-api']);
const seen = new Set();
const dependencies = (dir) =>
  Object.keys(JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).dependencies ?? {});

function walk(name) {
  if (seen.has(name) || BUILD_ONLY.has(name)) return;
  const dir = join(root, 'node_modules', name);
  if (!existsSync(dir)) throw new Error(`${dir} is missing: run npm ci first`);
  seen.add(name);
  for (const d of dependencies(dir)) walk(d);
}

for (const d of dependencies(root)) walk(d);
for (const name of [...seen].sort()) console.log(`node_modules/${name}`);
