// Running poprelay's programs and library operations in their own
// processes: with a fixed time zone, as another user, or as a crowd.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

import { appCopy } from './app.js';
import { MAPOP, ROOT } from './paths.js';
import { tempDir } from './tmp.js';

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

/** Runs a program as another user, from the world-readable copy of the app. */
export function asUser(user: string, program: string, args: string[]): [string, string[]] {
  const rel = program.startsWith(ROOT) ? program.slice(ROOT.length) : program;
  // A fixture module runs under node; the programs in bin/ run as they are (the hook is a sh script).
  const command = rel.endsWith('.mjs') ? ['node', join(appCopy(), rel)] : [join(appCopy(), rel)];
  return [
    'setpriv',
    [`--reuid=${user}`, `--regid=${user === 'nobody' ? 'nogroup' : user}`, '--clear-groups', ...command, ...args],
  ];
}

export interface OpResult {
  ok?: unknown;
  error?: string;
  code?: string;
}

/** Runs a library operation (test/fixtures/mapop.mjs) in a child process, optionally as another user. */
export async function mapop(args: string[], user?: string): Promise<OpResult> {
  const [file, argv] = user === undefined ? ['node', [MAPOP, ...args]] : asUser(user, MAPOP, args);
  const r = await execa(file, argv, { reject: false });
  return JSON.parse(r.stdout) as OpResult;
}

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
export async function runCrowd(
  program: string[],
  logins: CrowdLogin[],
  map?: string,
): Promise<{ results: CrowdResult[]; copies: number; peakProcesses: number }> {
  const plan = join(tempDir(), 'plan.json');
  writeFileSync(plan, JSON.stringify({ program, map, logins }));
  const r = await execa('node', [join(ROOT, 'test/fixtures/crowd.mjs'), plan]);
  return JSON.parse(r.stdout) as { results: CrowdResult[]; copies: number; peakProcesses: number };
}
