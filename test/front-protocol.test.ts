// The front (C) and the recorder (TypeScript) must agree on the queue's
// names and the default queue: src/front/protocol.h says them for the
// front; this fails when src/map/queue.ts or the config's default disagree.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { parseConfig } from '../src/config.js';
import { INCOMING_NAME, queueDir } from '../src/map/queue.js';
import { ROOT } from './support/paths.js';

const header = readFileSync(join(ROOT, 'src/front/protocol.h'), 'utf8');

function define(name: string): string {
  const m = new RegExp(`^#define ${name} (.*)$`, 'm').exec(header);
  if (m === null) throw new Error(`src/front/protocol.h defines no ${name}`);
  const v = (m[1] ?? '').trim();
  return v.startsWith('"') ? (JSON.parse(v) as string) : v;
}

/** A front-style name with `value` in one of its three fields, the others valid. */
function nameWith(field: 'IP' | 'TAG' | 'USER', value: string): string {
  const f = { IP: '192.0.2.1', TAG: 'pop3', USER: 'alice', [field]: value };
  return `f123_${f.IP}_${f.TAG}_${f.USER}`;
}

describe('src/front/protocol.h and the recorder agree', () => {
  for (const field of ['IP', 'TAG', 'USER'] as const) {
    it(`on the characters of ${field} in a queued login's name`, () => {
      const allowed = define(`${field}_CHARS`);
      for (let c = 0x21; c < 0x7f; c++) {
        const ch = String.fromCharCode(c);
        // "_" separates the fields: only the last, USER, may hold one.
        if (ch === '_' && field !== 'USER') continue;
        expect(INCOMING_NAME.test(nameWith(field, `1${ch}`)), `${field} with ${JSON.stringify(ch)}`).toBe(
          allowed.includes(ch) && (field !== 'IP' || allowed.includes('1')),
        );
      }
      if (field !== 'USER') expect(allowed).not.toContain('_');
    });

    it(`on the longest ${field}`, () => {
      const max = Number(define(`${field}_MAX`));
      const ch = field === 'IP' ? '1' : 'a';
      expect(INCOMING_NAME.test(nameWith(field, ch.repeat(max)))).toBe(true);
      expect(INCOMING_NAME.test(nameWith(field, ch.repeat(max + 1)))).toBe(false);
    });
  }

  it("on the default queue: the default dbfile's", () => {
    expect(define('DEFAULT_QUEUE')).toBe(queueDir(parseConfig('', null).map.path));
  });
});
