// The house's rule (README, "Layout"): the programs at the top of src/ load
// the wings, each wing loads only the vocabulary and the wings below it, the
// vocabulary loads no wing, and no module loads itself back through others.
// Read from the import specifiers themselves, static and dynamic.

import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

import { ROOT } from './support/paths.js';

const SRC = join(ROOT, 'src');
const PROGRAMS = new Set(['poprelay', 'poprelayd', 'sweep', 'recorder']);
/** Each wing and the wings it may load. */
const WINGS: Record<string, readonly string[]> = {
  map: [],
  who: ['map'],
  engine: ['map', 'who'],
  hook: ['map', 'who', 'engine'],
  daemon: ['map', 'who', 'engine'],
  commands: ['map', 'who', 'engine', 'hook', 'daemon'],
};

function modules(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? modules(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** src/-relative module names without .ts, each with the modules it imports. */
const graph = new Map(
  modules(SRC).map((file) => {
    const text = readFileSync(file, 'utf8');
    const targets = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)\.js'/g)].map((m) =>
      relative(SRC, join(dirname(file), m[1] ?? '')),
    );
    return [relative(SRC, file).replace(/\.ts$/, ''), targets] as const;
  }),
);

/** 'program', 'vocabulary', or the wing's name. */
function placeOf(name: string): string {
  if (!name.includes('/')) return PROGRAMS.has(name) ? 'program' : 'vocabulary';
  return name.split('/')[0] ?? '';
}

describe("src/'s imports", () => {
  it('name only modules that exist', () => {
    const missing = [...graph].flatMap(([from, to]) => to.filter((t) => !graph.has(t)).map((t) => `${from} -> ${t}`));
    expect(missing).toEqual([]);
  });

  it('run down only: programs to wings to the vocabulary, each wing to the wings below it', () => {
    const up = [...graph].flatMap(([from, to]) =>
      to
        .filter((t) => {
          const a = placeOf(from);
          const b = placeOf(t);
          if (a === b || b === 'vocabulary' || a === 'program') return false;
          if (a === 'vocabulary') return true;
          return !(WINGS[a] ?? []).includes(b);
        })
        .map((t) => `${from} -> ${t}`),
    );
    expect(up).toEqual([]);
  });

  it('make no circle', () => {
    const circles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const path: string[] = [];
    const visit = (n: string): void => {
      state.set(n, 'open');
      path.push(n);
      for (const m of graph.get(n) ?? []) {
        if (state.get(m) === 'open') circles.push([...path.slice(path.indexOf(m)), m].join(' -> '));
        else if (!state.has(m)) visit(m);
      }
      path.pop();
      state.set(n, 'done');
    };
    for (const n of graph.keys()) if (!state.has(n)) visit(n);
    expect(circles).toEqual([]);
  });
});
