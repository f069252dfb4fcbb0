// Shared test tools: temporary map directories and the real Berkeley DB
// utilities that check every map a test writes.

import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, expect } from 'vitest';

import type { MapSettings } from '../src/config.js';
import { appCopy } from './app.js';

export const ROOT = new URL('..', import.meta.url).pathname;

const made: string[] = [];
afterAll(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A fresh directory, removed after the test file; mkdtemp makes it 0700. */
export function tempDir(prefix = 'poprelay-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export function settings(dir: string, name = 'popip.db', over: Partial<MapSettings> = {}): MapSettings {
  return { path: join(dir, name), type: 'hash', lockTimeoutMs: 1000, mode: 0o644, timeoutSeconds: 900, ...over };
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
  for (let i = 0; i < n; i++) lines.push(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255} ${expiredEvery > 0 && i % expiredEvery === 0 ? now - 7200 : now}`);
  await execa('makemap', ['hash', path.slice(0, -3)], { input: lines.join('\n') + '\n' });
  chmodSync(path, 0o644);
}

export const MAPOP = join(ROOT, 'test/fixtures/mapop.mjs');

export interface CrowdLogin {
  ip: string;
  /** SIGKILL once the login is queued, or this many ms after the start. */
  kill?: 'queued' | number;
}

export interface CrowdResult {
  ip: string;
  startMs: number;
  exitMs: number;
  /** When the address was first seen in the published map; null if never. */
  visibleMs: number | null;
  code: number | null;
  signal: string | null;
  killedAfterQueue: boolean;
  stderr: string;
}

/** Starts `program` once per login, all at once, from a small launcher (test/fixtures/crowd.mjs). */
export async function runCrowd(program: string[], logins: CrowdLogin[], map?: string): Promise<{ results: CrowdResult[]; copies: number; peakProcesses: number }> {
  const plan = join(tempDir(), 'plan.json');
  writeFileSync(plan, JSON.stringify({ program, map, logins }));
  const r = await execa('node', [join(ROOT, 'test/fixtures/crowd.mjs'), plan]);
  return JSON.parse(r.stdout) as { results: CrowdResult[]; copies: number; peakProcesses: number };
}

/** Runs a program as another user, from the world-readable copy of the app. */
export function asUser(user: string, program: string, args: string[]): [string, string[]] {
  const rel = program.startsWith(ROOT) ? program.slice(ROOT.length) : program;
  // A fixture module runs under node; the programs in bin/ run as they are (the hook is a sh script).
  const run = rel.endsWith('.mjs') ? ['node', join(appCopy(), rel)] : [join(appCopy(), rel)];
  return ['setpriv', [`--reuid=${user}`, `--regid=${user === 'nobody' ? 'nogroup' : user}`, '--clear-groups', ...run, ...args]];
}

export interface OpResult {
  ok?: unknown;
  error?: string;
  code?: string;
}

/** Runs a library operation in a child process, optionally as another user. */
export async function mapop(args: string[], user?: string): Promise<OpResult> {
  const [file, argv] = user === undefined ? ['node', [MAPOP, ...args]] : asUser(user, MAPOP, args);
  const r = await execa(file, argv, { reject: false });
  return JSON.parse(r.stdout) as OpResult;
}

export const BIN = {
  login: join(ROOT, 'bin/poprelay-login'),
  sweep: join(ROOT, 'bin/poprelay-sweep'),
  admin: join(ROOT, 'bin/poprelay'),
};

/** A config in a fresh directory: the map there, no ignore list, plus `extra` lines. */
export function configured(extra = ''): { dir: string; ini: string; map: string; s: MapSettings } {
  const dir = tempDir();
  const map = join(dir, 'popip.db');
  const ini = join(dir, 'poprelay.ini');
  writeFileSync(ini, `dbfile = ${map}\nignore =\n${extra}`);
  return { dir, ini, map, s: settings(dir) };
}

/** Runs one of the programs with a fixed time zone and no inherited config. */
export async function run(bin: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  return execa(bin, args, {
    reject: false,
    input: opts.input ?? '',
    env: { TZ: 'UTC', ...opts.env },
    extendEnv: true,
    stripFinalNewline: false,
  }).then((r) => ({ code: r.exitCode, stdout: r.stdout, stderr: r.stderr }));
}

/**
 * The flock(2) locks on `path` as /proc/locks shows them: the pid of each
 * holder, and of each process blocked waiting ("->" lines). Matching by
 * inode, so a file renamed over `path` since does not count.
 */
function flocksOn(path: string): { holders: number[]; waiters: number[] } {
  const ino = statSync(path).ino;
  const holders: number[] = [];
  const waiters: number[] = [];
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1234 fe:01:5678 0 EOF"; a waiter has "->" after "1:".
    const m = /^\d+: (-> )?FLOCK\s+\S+\s+\S+\s+(\d+) [0-9a-f]+:[0-9a-f]+:(\d+) /.exec(line);
    if (m === null || Number(m[3]) !== ino) continue;
    (m[1] === undefined ? holders : waiters).push(Number(m[2]));
  }
  return { holders, waiters };
}

/**
 * Polls `check` until it returns a value (not undefined or false), or fails
 * after `ms`, naming `what` was awaited. The default bound is generous on
 * purpose: a fresh 2-core machine with other load beside it is slow, and
 * the bound only matters when the state never comes.
 */
export async function eventually<T>(check: () => T | undefined | false, ms = 60_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Holds flock on `path` from another process (util-linux flock) for at
 * most `seconds`; resolves once the kernel shows the lock held, with a
 * function that releases it (by killing the holder).
 */
export async function holdLock(path: string, mode: '-x' | '-s' = '-x', seconds = 60): Promise<() => void> {
  const child = spawn('flock', ['-o', mode, path, 'sleep', String(seconds)], { stdio: 'ignore' });
  const pid = child.pid ?? -1;
  // A short-lived holder may be gone before a busy machine lets us look.
  await eventually(() => child.exitCode !== null || flocksOn(path).holders.includes(pid), 60_000, `flock ${mode} ${path}`);
  return () => child.kill('SIGKILL');
}

/** Resolves once some process is blocked waiting for a lock on the file now at `path`. */
export async function lockWaiter(path: string): Promise<void> {
  await eventually(() => flocksOn(path).waiters.length > 0, 60_000, `a process waiting for the lock on ${path}`);
}

/** poprelay doctor's verdict per check, from its output: { config: 'OK', ... }. */
export function doctorStatuses(stdout: string): Record<string, string> {
  const lines = stdout.split('\n').filter((l) => /^(OK|WARN|FAIL)/.test(l));
  return Object.fromEntries(lines.map((l) => [l.slice(6, l.indexOf(':')), l.slice(0, 4).trim()]));
}

/** What poprelay doctor says of a correct installation. */
export const DOCTOR_ALL_OK: Record<string, string> = {
  config: 'OK',
  'dovecot pop3': 'OK',
  'dovecot imap': 'OK',
  map: 'OK',
  'map access': 'OK',
  'map queue': 'OK',
  'map readers': 'OK',
  'map directory': 'OK',
  sweep: 'OK',
  'live sessions': 'OK',
  mta: 'OK',
  hook: 'OK',
};
