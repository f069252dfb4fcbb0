// What the command-line programs share: option parsing (node:util
// parseArgs), "PROG: message" errors on stderr, data on stdout, exit codes.

import { parseArgs, type ParseArgsConfig } from 'node:util';

import { loadConfig, type Config } from './config.js';
import { escapeControls, PoprelayError } from './errors.js';
import { unixNow } from './timefmt.js';

/** Bad usage or bad input: the program says what and exits 2. */
export class UsageError extends Error {}

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;
export type OptionValues = Record<string, string | boolean | undefined>;

/** Options every program takes. */
export const COMMON_OPTIONS = {
  config: { type: 'string' },
  now: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} satisfies OptionSpec;

export function parseCommandLine(
  argv: readonly string[],
  options: OptionSpec,
  helpHint: string,
): { values: OptionValues; positionals: string[] } {
  try {
    const r = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
    return { values: r.values as OptionValues, positionals: r.positionals };
  } catch (e) {
    const msg = (e as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw new UsageError(`${msg.charAt(0).toLowerCase()}${msg.slice(1)}; see ${helpHint}`);
  }
}

/** --now SECONDS pretends it is that time (documented as for testing). */
export function nowFrom(values: OptionValues): number {
  const v = values.now;
  if (v === undefined) return unixNow();
  if (typeof v !== 'string' || !/^[0-9]{1,12}$/.test(v))
    throw new UsageError(`--now takes Unix seconds, not ${JSON.stringify(v)}`);
  return Number(v);
}

/** A string option's value; undefined when it was not given. */
export function stringOption(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function configFrom(values: OptionValues): Config {
  return loadConfig(stringOption(values.config));
}

/**
 * One line of data on stdout. Map keys are anyone's bytes: control
 * characters (terminal escapes, newlines) are shown escaped, never sent
 * to the administrator's terminal as such.
 */
export function out(line: string): void {
  process.stdout.write(`${escapeControls(line)}\n`);
}

/** Rows as columns two spaces apart; the last column is not padded. */
export function table(rows: string[][]): string[] {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  '));
}

/** A value as JSON on stdout; JSON.stringify escapes C0 controls, and C1 ones are escaped too. */
export function outJson(value: unknown): void {
  const text = JSON.stringify(value, null, 2).replace(/[\x7f-\x9f]/g, (c) => `\\u00${c.charCodeAt(0).toString(16)}`);
  process.stdout.write(`${text}\n`);
}

/**
 * Runs a program's main and exits: 0 or what main returns; 2 for usage
 * errors; `errorStatus` for operational errors (config, map), reported as
 * "PROG: message".
 */
export function runProgram(prog: string, main: () => number | Promise<number>, errorStatus: number): void {
  // A reader that stops early (poprelay list | head) is not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  // A program that failed is done: a handle left open (a connection still
  // being made) must not keep it running, least of all a daemon whose
  // supervisor restarts it only once it exits.
  const fail = (status: number, message: string): void => {
    process.stderr.write(`${prog}: ${message}\n`);
    process.exit(status);
  };
  Promise.resolve()
    .then(main)
    .then(
      (status) => {
        process.exitCode = status;
      },
      (e: unknown) => {
        if (e instanceof UsageError) fail(2, e.message);
        else if (e instanceof PoprelayError) fail(e.code === 'ERR_BAD_ADDRESS' ? 2 : errorStatus, e.message);
        else fail(errorStatus, `internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      },
    );
}
