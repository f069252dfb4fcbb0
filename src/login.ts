// poprelay-login: the Dovecot post-login hook (README, "poprelay-login").
//
// It continues the login first and records second. Only node:child_process
// and node:fs are loaded before the login is handed on; config, libdb and
// the map code load afterwards, so neither their start-up cost nor any
// failure of theirs can delay or refuse a login. Nothing is ever written to
// fds 0 and 1 (the mail client's connection); diagnostics go to fd 2,
// which Dovecot puts in its log.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs';

const USAGE = `Usage: poprelay-login [--config FILE] [--tag NAME] [--] [COMMAND [ARG...]]

Dovecot post-login script: records the client address ($IP) in the relay map,
then runs COMMAND (Dovecot passes /usr/lib/dovecot/script-login) with the
client connection and environment unchanged, and exits with its status.
Run by hand without COMMAND (IP=192.0.2.7 poprelay-login) it only records,
and exits 0 on success, 1 on failure, with the reason on stderr.

  --config FILE  settings file (default $POPRELAY_CONFIG or /etc/mail/poprelay.ini)
  --tag NAME     a word for the log line, such as pop3 or imap
  --help         this text

A recording failure never refuses a login: it is logged on stderr and the
login continues.
`;

export interface HookArgs {
  config?: string;
  tag?: string;
  help: boolean;
  command: string[];
  /** Options that were not understood; logged, never fatal. */
  problems: string[];
}

/**
 * Options come first (Dovecot puts words from the executable line before
 * "$@"); the first word that is not an option starts the command.
 */
export function parseHookArgs(argv: readonly string[]): HookArgs {
  const out: HookArgs = { help: false, command: [], problems: [] };
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-')) break;
    if (a === '--help' || a === '-h') out.help = true;
    else if (a === '--config' || a === '--tag') {
      const v = argv[i + 1];
      if (v === undefined) out.problems.push(`${a} needs a value`);
      else if (a === '--config') out.config = v;
      else out.tag = v;
      i++;
    } else out.problems.push(`unknown option ${JSON.stringify(a)} ignored`);
  }
  out.command = argv.slice(i);
  return out;
}

export type Level = 'info' | 'warning' | 'error';

/**
 * Dovecot logs every plain stderr line of a service as an Error. Its log
 * pipe also takes "\x01", the log type + 1 as a byte, and "PID " before the
 * text (verified with Dovecot 2.3 and 2.4: "\x01\x02PID text" is logged as Info), so
 * a recorded login is not reported as an error. Used only when continuing a
 * login, which is when Dovecot reads fd 2; run by hand, lines are plain.
 */
const DOVECOT_TYPE: Record<Level, string> = { info: '\x02', warning: '\x03', error: '\x04' };
let dovecotLog = false;

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

function log(level: Level, line: string): void {
  const prefix = dovecotLog ? `\x01${DOVECOT_TYPE[level]}${process.pid} ` : '';
  try {
    writeSync(2, `${prefix}poprelay: ${escapeControls(line)}\n`);
  } catch {
    // Dovecot's log pipe is gone; there is no one left to tell.
  }
}

/**
 * Dovecot's fd 3 is a socket to the mail process. Without one, Node's own
 * start-up takes fd 3 for libuv (its epoll instance), which must be neither
 * handed on nor closed; Node opens no sockets at start-up, so a socket at 3
 * is always inherited.
 */
function inheritedSocket3(): boolean {
  try {
    return fstatSync(3).isSocket();
  } catch {
    return false;
  }
}

/**
 * Once the continued login owns the client connection (fds 0 and 1) and
 * the socket back to the mail process (fd 3), this process must not keep
 * them open: the client's disconnect would wait for us. They are pointed at
 * /dev/null rather than left closed, so no file opened later can take their
 * numbers.
 */
function releaseClientFds(fds: readonly number[]): void {
  // Closing all first and then opening takes the same numbers back, lowest first.
  for (const fd of fds) closeSync(fd);
  for (const fd of fds) openSync('/dev/null', fd === 1 ? 'w' : 'r');
}

function continueLogin(command: readonly string[]): ChildProcess {
  const [file = '', ...args] = command;
  const with3 = inheritedSocket3();
  const child = spawn(file, args, { stdio: [0, 1, 2, with3 ? 3 : 'ignore'], env: process.env });
  if (child.pid !== undefined) releaseClientFds(with3 ? [0, 1, 3] : [0, 1]);
  return child;
}

function waitFor(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once('error', (e) => {
      log('error', `cannot continue the login: cannot run ${JSON.stringify(child.spawnfile)}: ${e.message}`);
      resolve(1);
    });
    child.once('exit', (code, signal) => {
      if (signal === null) resolve(code ?? 1);
      // The shell's convention, 128 + the signal's number; node:os only loads if it comes to that.
      else void import('node:os').then((os) => resolve(128 + (os.constants.signals[signal] ?? 0)));
    });
  });
}

/** A login name shown in the log, quoted when it holds anything unusual. */
function describeUser(user: string | undefined, tag: string | undefined, quote: (s: string) => string): string {
  const u = user === undefined ? '(none)' : /^[A-Za-z0-9@._+-]{1,64}$/.test(user) ? user : quote(user);
  return tag === undefined ? `user=${u}` : `user=${u}, service=${quote(tag).slice(1, -1)}`;
}

/** Records $IP. Never throws: every failure is one log line and `false`. */
export async function recordFromEnv(args: HookArgs, env: NodeJS.ProcessEnv): Promise<boolean> {
  let who = `user=${env.USER ?? '(none)'}`;
  try {
    const [{ loadConfig }, { parseClientAddress }, { mapSettings, queueLogin }, { quoteUntrusted }, { actAsMapOwner }] = await Promise.all([
      import('./config.js'),
      import('./address.js'),
      import('./map.js'),
      import('./errors.js'),
      import('./privilege.js'),
    ]);
    who = describeUser(env.USER, args.tag, quoteUntrusted);
    const ipText = env.IP;
    if (ipText === undefined || ipText === '') {
      log('warning', `not recorded (${who}): no client address in $IP (a UNIX-socket client, or not run by Dovecot)`);
      return false;
    }
    let addr;
    try {
      addr = parseClientAddress(ipText);
    } catch (e) {
      log('warning', `rejected (${who}): ${(e as Error).message}`);
      return false;
    }
    const cfg = loadConfig(args.config, env);
    if (cfg.ignoreList.check(addr.text, addr.family === 4 ? 'ipv4' : 'ipv6')) {
      if (cfg.logRecorded) log('info', `not recorded ${addr.text} (${who}): in the ignore list`);
      return true;
    }
    actAsMapOwner(cfg.dbfile);
    const outcome = queueLogin(mapSettings(cfg), addr, Math.floor(Date.now() / 1000), cfg.refreshSeconds);
    if (cfg.logRecorded) {
      log('info', outcome === 'permanent' ? `${addr.text} has a permanent entry, left as it is (${who})` : `recorded ${addr.text} (${who})${OUTCOME_TEXT[outcome]}`);
    }
    return true;
  } catch (e) {
    const ip = env.IP !== undefined && /^[0-9A-Fa-f:.]{1,45}$/.test(env.IP) ? `${env.IP} ` : '';
    log('error', `not recorded ${ip}(${who}): ${e instanceof Error ? e.message : String(e)}`);
    return false;
  }
}

/** What a login's log line says after "recorded ADDRESS (user=...)". */
const OUTCOME_TEXT: Record<'recorded' | 'queued' | 'fresh', string> = {
  recorded: '',
  queued: ': queued; the writer holding the lock applies it',
  fresh: ': already in the map, younger than refresh_seconds; nothing written',
};

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = parseHookArgs(argv);
  if (args.help && args.command.length === 0) {
    process.stdout.write(USAGE);
    return 0;
  }
  let exited: Promise<number> | undefined;
  if (args.command.length > 0) {
    dovecotLog = true;
    // Listen before anything can yield: a failed spawn is reported on the next tick.
    exited = waitFor(continueLogin(args.command));
  }
  for (const p of args.problems) log('warning', p);
  const recorded = await recordFromEnv(args, env);
  return exited === undefined ? (recorded ? 0 : 1) : exited;
}
