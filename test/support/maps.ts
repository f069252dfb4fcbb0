// Maps for tests: settings and configs in fresh directories, maps made by
// sendmail's makemap, and the real Berkeley DB utilities that check every
// map a test writes.

import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { expect } from 'vitest';

import type { MapSettings } from '../../src/config.js';
import { unlessLive } from './ini.js';
import { tempDir } from './tmp.js';

export function settings(dir: string, name = 'popip.db', over: Partial<MapSettings> = {}): MapSettings {
  return { path: join(dir, name), type: 'hash', lockTimeoutMs: 1000, mode: 0o644, timeoutSeconds: 900, ...over };
}

/** A config in a fresh directory: the map there, no ignore list, no live sessions, plus `extra` lines. */
export function configured(extra = ''): { dir: string; ini: string; map: string; s: MapSettings } {
  const dir = tempDir();
  const map = join(dir, 'popip.db');
  const ini = join(dir, 'poprelay.ini');
  writeFileSync(ini, `dbfile = ${map}\nignore =\n${unlessLive(extra)}`);
  return { dir, ini, map, s: settings(dir) };
}

/** db5.3_verify must accept the file. */
export async function expectVerified(path: string): Promise<void> {
  const r = await execa('db5.3_verify', ['-q', path], { reject: false });
  expect(r.stderr, `db5.3_verify ${path}`).toBe('');
  expect(r.exitCode, `db5.3_verify ${path}`).toBe(0);
}

/** The records of a map as db5.3_dump sees them, sorted by key. */
export async function dumpMap(path: string): Promise<Array<[string, string]>> {
  const { stdout } = await execa('db5.3_dump', ['-p', path]);
  const lines = stdout.split('\n');
  const start = lines.indexOf('HEADER=END') + 1;
  const end = lines.indexOf('DATA=END');
  const body = lines.slice(start, end).map((l) => unescapeDump(l.slice(1)));
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < body.length; i += 2) pairs.push([body[i] ?? '', body[i + 1] ?? '']);
  return pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** db_dump -p escapes non-printing bytes as \hh and backslash as \\. */
function unescapeDump(s: string): string {
  return s.replace(/\\(\\|[0-9a-f]{2})/g, (_, x: string) => (x === '\\' ? '\\' : String.fromCharCode(parseInt(x, 16))));
}

/** The header fields of a map (type=hash, ...). */
export async function dumpHeader(path: string): Promise<Record<string, string>> {
  const { stdout } = await execa('db5.3_dump', ['-p', path]);
  const head = stdout.split('\n').slice(0, stdout.split('\n').indexOf('HEADER=END'));
  return Object.fromEntries(head.map((l) => l.split('=') as [string, string]));
}

/** Builds a map with sendmail's makemap from "key value" lines. */
export async function makemap(dir: string, name: string, lines: string[], flags: string[] = []): Promise<string> {
  await execa('makemap', [...flags, 'hash', join(dir, name)], { input: lines.join('\n') + '\n' });
  return join(dir, `${name}.db`);
}

/** A map of `n` addresses 10.x.y.z with the value `now`, every `expiredEvery`th two hours older; mode 0644. */
export async function makemapSized(path: string, n: number, now: number, expiredEvery = 0): Promise<void> {
  const lines: string[] = [];
  for (let i = 0; i < n; i++)
    lines.push(
      `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255} ${expiredEvery > 0 && i % expiredEvery === 0 ? now - 7200 : now}`,
    );
  await execa('makemap', ['hash', path.slice(0, -3)], { input: lines.join('\n') + '\n' });
  chmodSync(path, 0o644);
}
