// poprelay-login's recorder: records the client address ($IP) in the relay map.
//
// Dovecot runs the POSIX sh front (bin/poprelay-login), which continues the
// login at once and then runs this, bundled into one file
// (dist/poprelay-login.cjs) so that Node loads as little as it can: the
// client waits for a shell's start-up, not Node's, and the hook's CPU stays
// near a bare Node start. By the time this runs, fds 0, 1 and 3 are
// /dev/null; diagnostics go to fd 2, which Dovecot puts in its log.

import { writeSync } from 'node:fs';

const USAGE = `Usage: poprelay-login [--config FILE] [--tag NAME] [--] [COMMAND [ARG...]]

Dovecot post-login script: continues the login by running COMMAND (Dovecot
passes /usr/lib/dovecot/script-login) with the client connection and
environment unchanged, then records the client address ($IP) in the relay
map, and exits with COMMAND's status.
Run by hand without COMMAND (IP=192.0.2.7 poprelay-login) it only records,
and exits 0 on success, 1 on failure, with the reason on stderr.

  --config FILE  settings file (default $POPRELAY_CONFIG or /etc/mail/poprelay.ini)
  --tag NAME     a word for the log line, such as pop3 or imap
  --help         this text

A recording failure never refuses or delays a login: it is logged on stderr
and the login goes on.
`;

export interface HookArgs {
  config?: string;
  tag?: string;
  help: boolean;
  /** Started by the front for a Dovecot login: log in Dovecot's format. */
  dovecotLog: boolean;
  /** Options that were not understood; logged, never fatal. */
  problems: string[];
}

/**
 * The front hands over only the options it was given (Dovecot puts words
 * from the executable line before "$@"), and --dovecot-log first.
 */
export function parseHookArgs(argv: readonly string[]): HookArgs {
  const out: HookArgs = { help: false, dovecotLog: false, problems: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') {
      for (const w of argv.slice(i + 1))
        out.problems.push(`argument ${JSON.stringify(w)} ignored: the front (bin/poprelay-login) runs the command`);
      break;
    }
    if (a === '--help' || a === '-h') out.help = true;
    else if (a === '--dovecot-log') out.dovecotLog = true;
    else if (a === '--config' || a === '--tag') {
      const v = argv[i + 1];
      if (v === undefined) out.problems.push(`${a} needs a value`);
      else if (a === '--config') out.config = v;
      else out.tag = v;
      i++;
    } else if (a.startsWith('-')) out.problems.push(`unknown option ${JSON.stringify(a)} ignored`);
    else out.problems.push(`argument ${JSON.stringify(a)} ignored: the front (bin/poprelay-login) runs the command`);
  }
  return out;
}

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

/** A login name shown in the log, quoted when it holds anything unusual. */
function describeUser(user: string | undefined, tag: string | undefined, quote: (s: string) => string): string {
  const u = user === undefined ? '(none)' : /^[A-Za-z0-9@._+-]{1,64}$/.test(user) ? user : quote(user);
  return tag === undefined ? `user=${u}` : `user=${u}, service=${quote(tag).slice(1, -1)}`;
}

/**
 * Records $IP. Never throws: every failure is one log line and `false`. The
 * modules load here rather than at the top (the bundle keeps that order), so
 * that one that cannot load, the libdb addon say, is such a line too.
 */
export async function recordFromEnv(args: HookArgs, env: NodeJS.ProcessEnv): Promise<boolean> {
  let who = `user=${env.USER ?? '(none)'}`;
  let dbfile: string | undefined;
  /** One failure: its log line, and one more for the count of unrecorded logins. */
  const failed = async (e: unknown, where = ''): Promise<false> => {
    const ip = env.IP !== undefined && /^[0-9A-Fa-f:.]{1,45}$/.test(env.IP) ? `${env.IP} ` : '';
    const paused = (e as { code?: unknown } | null)?.code === 'ERR_ENGINE_PAUSED';
    log(
      paused ? 'warning' : 'error',
      `not recorded ${ip}${where}(${who}): ${e instanceof Error ? e.message : String(e)}`,
    );
    if (dbfile !== undefined) (await import('./failures.js')).countFailure(dbfile);
    return false;
  };
  try {
    const [{ isIgnored, loadConfig }, { parseClientAddress }, { queueLogin }, { quoteUntrusted }, { actAsMapOwner }] =
      await Promise.all([
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
    dbfile = cfg.map.path;
    if (isIgnored(cfg, addr)) {
      if (cfg.logRecorded) log('info', `not recorded ${addr.text} (${who}): in the ignore list`);
      return true;
    }
    actAsMapOwner(cfg.map.path);
    const now = Math.floor(Date.now() / 1000);
    // The map and the engine each on their own: one failing does not keep the login from the other.
    let recorded = true;
    try {
      const outcome = queueLogin(cfg.map, addr, now, cfg.refreshSeconds);
      if (cfg.logRecorded) {
        log(
          'info',
          outcome === 'permanent'
            ? `${addr.text} has a permanent entry, left as it is (${who})`
            : `recorded ${addr.text} (${who})${OUTCOME_TEXT[outcome]}`,
        );
      }
    } catch (e) {
      recorded = await failed(e);
    }
    if (cfg.engine !== null) {
      try {
        const outcome = (await import('./engine-record.js')).recordInEngine(cfg, cfg.engine, addr, now);
        if (cfg.logRecorded) log('info', `recorded ${addr.text} in the engine (${who})${ENGINE_TEXT[outcome]}`);
      } catch (e) {
        recorded = await failed(e, 'in the engine ');
      }
    }
    return recorded;
  } catch (e) {
    return failed(e);
  }
}

/** What the engine's log line says after "recorded ADDRESS in the engine (user=...)". */
const ENGINE_TEXT: Record<'recorded' | 'fresh' | 'permanent', string> = {
  recorded: '',
  fresh: ': younger than refresh_seconds there; nothing written',
  permanent: ': a permanent entry there, left as it is',
};

/** What a login's log line says after "recorded ADDRESS (user=...)". */
const OUTCOME_TEXT: Record<'recorded' | 'queued' | 'fresh', string> = {
  recorded: '',
  queued: ': queued; the writer holding the lock applies it',
  fresh: ': already in the map, younger than refresh_seconds; nothing written',
};

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = parseHookArgs(argv);
  // Under Dovecot, fd 1 is no longer the client's, but help is for a person.
  if (args.help && !args.dovecotLog) {
    process.stdout.write(USAGE);
    return 0;
  }
  dovecotLog = args.dovecotLog;
  for (const p of args.problems) log('warning', p);
  return (await recordFromEnv(args, env)) ? 0 : 1;
}
