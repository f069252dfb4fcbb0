// The poprelay.ini files the latency section runs poprelay-login with: the
// shipped sample, and a long one whose dbfile line comes last. A recorder
// of another version is measured with its own sample (BENCH_SAMPLE_INI).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { ROOT } from '../test/support/paths.js';

/** etc/poprelay.ini with these keys' values in place of the sample's. */
export function sampleIni(values: Record<string, string>): string {
  let text = readFileSync(process.env.BENCH_SAMPLE_INI ?? join(ROOT, 'etc/poprelay.ini'), 'utf8');
  for (const [key, value] of Object.entries(values)) {
    const line = new RegExp(`^${key} = .*$`, 'm');
    if (!line.test(text)) throw new Error(`etc/poprelay.ini has no ${key} line`);
    text = text.replace(line, `${key} = ${value}`);
  }
  return text;
}

/** The size of the long poprelay.ini, whose dbfile line is its last. */
export const LONG_INI = 4096;

/**
 * A poprelay.ini of exactly LONG_INI bytes with dbfile last: the sample's
 * settings (with `values`), after as many of its comment lines as fit and
 * a comment padding the rest, as an administrator's long, commented file
 * that appends dbfile would be.
 */
export function longIni(values: Record<string, string>): string {
  const lines = sampleIni(values).split('\n');
  const dbfile = lines.find((l) => l.startsWith('dbfile = ')) ?? '';
  const settingLines = lines.filter((l) => /^[a-z_]+ = /.test(l) && l !== dbfile);
  const tail = `${settingLines.join('\n')}\n${dbfile}\n`;
  let head = '';
  for (const l of lines.filter((x) => x.startsWith(';'))) {
    if (head.length + l.length + 1 + tail.length > LONG_INI - 3) break;
    head += `${l}\n`;
  }
  const pad = LONG_INI - head.length - tail.length;
  const text = `${head};${' '.repeat(pad - 2)}\n${tail}`;
  if (Buffer.byteLength(text) !== LONG_INI) throw new Error(`the long poprelay.ini is ${text.length} bytes`);
  return text;
}
