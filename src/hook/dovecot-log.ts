// The recorder's log pipe: every line it writes goes through log(), on fd 2,
// which Dovecot puts in its log. This module imports nothing of ours that
// could fail to load (users.ts is a pattern), so the entry point
// (src/recorder.ts) can still say why when the recorder's other modules
// cannot load.

import { writeSync } from 'node:fs';

import { isPlainUser } from '../users.js';

export type Level = 'info' | 'warning' | 'error';

/**
 * Dovecot logs every plain stderr line of a service as an Error. Its log
 * pipe also takes "\x01", the log type + 1 as a byte, and "PID " before the
 * text (verified with Dovecot 2.3 and 2.4: "\x01\x02PID text" is logged as
 * Info), so a recorded login is not reported as an error. Dovecot shows
 * the service's name before the line whatever the PID (it looks a PID up
 * only for a prefix that process set itself). Run by hand, lines are plain.
 */
const DOVECOT_TYPE: Record<Level, string> = { info: '\x02', warning: '\x03', error: '\x04' };
let dovecotFormat = false;

/** Started by the front for a Dovecot login (--dovecot-log): lines from now on carry Dovecot's level prefix. */
export function useDovecotFormat(on: boolean): void {
  dovecotFormat = on;
}

/**
 * Control characters (newlines, \x01, terminal escapes) from $USER, $IP or
 * an error message never reach the log as such: they could forge lines.
 * Done here, for every line, so that no path (a module that failed to load
 * included) can forget it; and here rather than with errors.ts's twin, since
 * this must work when no other module of ours loads.
 */
function escapeControls(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function log(level: Level, line: string): void {
  const prefix = dovecotFormat ? `\x01${DOVECOT_TYPE[level]}${process.pid} ` : '';
  try {
    writeSync(2, `${prefix}poprelay: ${escapeControls(line)}\n`);
  } catch {
    // Dovecot's log pipe is gone; there is no one left to tell.
  }
}

/**
 * $IP as a failure line may show it before it is parsed: only when it holds
 * nothing but an address's characters (the line escapes the rest anyway).
 */
export function envAddressText(env: NodeJS.ProcessEnv): string | undefined {
  return env.IP !== undefined && /^[0-9A-Fa-f:.]{1,45}$/.test(env.IP) ? env.IP : undefined;
}

/** A login name shown in the log, quoted when it holds anything unusual. */
export function describeUser(user: string | undefined, tag: string | undefined, quote: (s: string) => string): string {
  const u = user === undefined ? '(none)' : isPlainUser(user) ? user : quote(user);
  return tag === undefined ? `user=${u}` : `user=${u}, service=${quote(tag).slice(1, -1)}`;
}

/**
 * The line of a login that was not recorded: `where` names what did not
 * take it ('in the engine '), `whose` the login. A paused engine is a
 * warning: it takes the login once it is back.
 */
export function logNotRecorded(e: unknown, ip: string | undefined, whose: string, where = ''): void {
  const paused = (e as { code?: unknown } | null)?.code === 'ERR_ENGINE_PAUSED';
  log(
    paused ? 'warning' : 'error',
    `not recorded ${ip === undefined ? '' : `${ip} `}${where}(${whose}): ${e instanceof Error ? e.message : String(e)}`,
  );
}
