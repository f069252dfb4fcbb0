// poprelay-login's recorder: records the client address ($IP) in the relay map.
//
// Dovecot runs the compiled front (src/front/poprelay-login.c), which
// continues the login at once and then runs this, bundled into one file
// (dist/poprelay-login.cjs) so that Node loads as little as it can: the
// client waits for the front's start-up, not Node's, and the hook's CPU stays
// near a bare Node start. By the time this runs, fds 0, 1 and 3 are
// /dev/null; diagnostics go to fd 2, which Dovecot puts in its log.

import { writeSync } from 'node:fs';

import type { ClientAddress } from '../address.js';
import type { Arrivals } from './arrivals.js';
import type { Config } from '../config.js';
import type { LoginOutcome } from '../map/relay-map.js';
import type { UserSeen } from '../who/journal.js';

const USAGE = `Usage: poprelay-login [--config FILE] [--queue DIR] [--tag NAME] [--] [COMMAND [ARG...]]

Dovecot post-login script: continues the login by running COMMAND (Dovecot
passes /usr/lib/dovecot/script-login) with the client connection and
environment unchanged, then records the client address ($IP) in the relay
map, and exits with COMMAND's status.
Run by hand without COMMAND (IP=192.0.2.7 poprelay-login) it only records,
and exits 0 on success, 1 on failure, with the reason on stderr.

  --config FILE  settings file (default: $POPRELAY_CONFIG, else /etc/poprelay/poprelay.ini,
                 else the older /etc/mail/poprelay.ini)
  --queue DIR    the login queue beside the map, dbfile.queue (default:
                 /var/lib/poprelay/popip.db.queue where no --config is given)
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
  /** The queue directory where the front left this login: admit and apply what is there. */
  drain?: string;
  /** The front's pid: a recorder waiting for more logins stops once it is gone (Dovecot ended it). */
  front?: number;
  /** The fd on which the front handed over the queue's lock, held. */
  lockFd?: number;
  /** The queue Dovecot's executable line names (checked against dbfile). */
  queue?: string;
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
    else if (['--config', '--tag', '--queue', '--drain', '--front', '--lock-fd'].includes(a)) {
      const v = argv[i + 1];
      if (v === undefined) out.problems.push(`${a} needs a value`);
      else if (a === '--config') out.config = v;
      else if (a === '--drain') out.drain = v;
      else if (a === '--queue') out.queue = v;
      else if (a === '--front') out.front = /^[1-9][0-9]{0,9}$/.test(v) ? Number(v) : undefined;
      else if (a === '--lock-fd') out.lockFd = /^[0-9]{1,4}$/.test(v) ? Number(v) : undefined;
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

/** A login being recorded: its address, its time, and who, as its log lines say it. */
interface Recorded {
  addr: ClientAddress;
  time: number;
  who: string;
  /** Who logged in, and to what, for the engine's who key. */
  user?: string;
  service?: string;
  /** The shared-address guard stopped it here: the engine stops the address too. */
  shared?: boolean;
}

type Modules = [
  typeof import('../config.js'),
  typeof import('../address.js'),
  typeof import('../map/relay-map.js'),
  typeof import('../errors.js'),
  typeof import('../privilege.js'),
];

/**
 * Records $IP, or with --drain the logins the front left (incoming.ts).
 * Never throws: every failure is one log line and `false`. The modules
 * load here rather than at the top (the bundle keeps that order), so that
 * one that cannot load, the libdb addon say, is such a line too.
 */
export async function recordFromEnv(args: HookArgs, env: NodeJS.ProcessEnv): Promise<boolean> {
  let who = `user=${env.USER ?? '(none)'}`;
  let dbfile: string | undefined;
  let disagree = false;
  const envIp = env.IP !== undefined && /^[0-9A-Fa-f:.]{1,45}$/.test(env.IP) ? env.IP : undefined;
  /** One failure: its log line, and one more for the count of unrecorded logins. */
  const failed = async (e: unknown, ip = envIp, whose = who, where = ''): Promise<false> => {
    const paused = (e as { code?: unknown } | null)?.code === 'ERR_ENGINE_PAUSED';
    log(
      paused ? 'warning' : 'error',
      `not recorded ${ip === undefined ? '' : `${ip} `}${where}(${whose}): ${e instanceof Error ? e.message : String(e)}`,
    );
    if (dbfile !== undefined) (await import('../map/failures.js')).countFailure(dbfile);
    return false;
  };
  try {
    const modules: Modules = await Promise.all([
      import('../config.js'),
      import('../address.js'),
      import('../map/relay-map.js'),
      import('../errors.js'),
      import('../privilege.js'),
    ]);
    const [{ isIgnored, loadConfig }, { parseClientAddress }, { queueLogin }, { quoteUntrusted }, { actAsMapOwner }] =
      modules;
    who = describeUser(env.USER, args.tag, quoteUntrusted);
    if (args.drain !== undefined) {
      const queue = args.drain;
      const { queueDir } = await import('../map/queue.js');
      let cfg: Config;
      try {
        cfg = loadConfig(args.config, env);
      } catch (e) {
        return await failWaiting(e, queue, failed, quoteUntrusted);
      }
      dbfile = cfg.map.path;
      actAsMapOwner(cfg.map.path);
      if (queue === queueDir(cfg.map.path)) {
        // Read again for every round: an administrator's change applies to the logins that arrive after it.
        const again = (): Config | null => {
          const next = loadConfig(args.config, env);
          return queueDir(next.map.path) === queue ? next : null;
        };
        return await drain(cfg, again, queue, args, modules, failed);
      }
      // Dovecot's executable line names another queue than poprelay.ini's dbfile: record this login the old
      // way, and fail, so that the front does not start recorders for what it left there.
      disagree = true;
      log(
        'error',
        `the front queued this login in ${args.drain}, but dbfile is ${cfg.map.path}: recording it directly; ` +
          `give Dovecot's executable line --queue ${queueDir(cfg.map.path)}`,
      );
    }
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
    const ownQueue = (await import('../map/queue.js')).queueDir(cfg.map.path);
    if (args.queue !== undefined && args.queue !== ownQueue)
      log(
        'warning',
        `Dovecot's executable line names --queue ${args.queue}, but dbfile is ${cfg.map.path}: every login starts ` +
          `a recorder of its own; give --queue ${ownQueue}`,
      );
    if (isIgnored(cfg, addr)) {
      if (cfg.logRecorded) log('info', `not recorded ${addr.text} (${who}): in the ignore list`);
      return !disagree;
    }
    actAsMapOwner(cfg.map.path);
    const now = Math.floor(Date.now() / 1000);
    const login: Recorded = { addr, time: now, who, user: env.USER ?? '', service: args.tag ?? '' };
    if (!(await keptWho(cfg, login, env.USER, args.tag, quoteUntrusted))) {
      // The engine stops it too (its other POP/IMAP hosts' logins may have made it relay there).
      await toEngine(cfg, [{ ...login, shared: true }], now, failed);
      return !disagree;
    }
    // The map and the engine each on their own: one failing does not keep the login from the other.
    let recorded = true;
    try {
      logMapOutcome(cfg, login, queueLogin(cfg.map, addr, now, cfg.refreshSeconds));
    } catch (e) {
      recorded = await failed(e);
    }
    return (await toEngine(cfg, [login], now, failed)) && recorded && !disagree;
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
const OUTCOME_TEXT: Record<Exclude<LoginOutcome, 'permanent'>, string> = {
  recorded: '',
  queued: ': queued; the writer holding the lock applies it',
  fresh: ': already in the map, younger than refresh_seconds; nothing written',
};

type Failed = (e: unknown, ip?: string, whose?: string, where?: string) => Promise<false>;

function logMapOutcome(cfg: Config, l: Recorded, outcome: LoginOutcome): void {
  if (!cfg.logRecorded) return;
  log(
    'info',
    outcome === 'permanent'
      ? `${l.addr.text} has a permanent entry, left as it is (${l.who})`
      : `recorded ${l.addr.text} (${l.who})${OUTCOME_TEXT[outcome]}`,
  );
}

/** A login from an address over shared_address_users, with every user behind it. */
interface SharedLogin extends Recorded {
  users: UserSeen[];
}

/** The who journal did not take a batch of logins: one line; they are recorded all the same. */
function whoNotKept(cfg: Config, e: Error): void {
  log('warning', `who journal ${cfg.map.path}.who: ${e.message}; these logins are recorded without their users`);
}

/**
 * A login recorded directly: its user goes to the who journal, and the
 * shared-address guard decides; false when the address is over
 * shared_address_users (its entry then leaves the map, and one line says
 * who is behind it).
 */
async function keptWho(
  cfg: Config,
  l: Recorded,
  user: string | undefined,
  service: string | undefined,
  quote: (s: string, max?: number) => string,
): Promise<boolean> {
  const { keepWho } = await import('../who/shared-address.js');
  let permanent = false;
  if (cfg.sharedAddressUsers !== null) {
    const { unchanged, valuesBeforeQueueing } = await import('../map/relay-map.js');
    const values = valuesBeforeQueueing(cfg.map, l.addr.keys);
    permanent = values !== null && unchanged(values, l.time, 0) === 'permanent';
  }
  const guard = keepWho(cfg, [{ addr: l.addr, time: l.time, service, user, permanent }], l.time);
  if (guard.problem !== null) whoNotKept(cfg, guard.problem);
  const users = guard.shared.get(l.addr.text);
  if (users === undefined) return true;
  await stopShared(cfg, [{ ...l, users }], quote);
  return false;
}

/**
 * Stops addresses over shared_address_users: their dated entries leave the
 * map in one write, and each gets one line naming the users behind it.
 */
async function stopShared(
  cfg: Config,
  logins: readonly SharedLogin[],
  quote: (s: string, max?: number) => string,
  inEngine = false,
): Promise<void> {
  const { describeUsers, removeShared } = await import('../who/shared-address.js');
  const { showUser } = await import('../who/journal.js');
  let removed: Set<string> | null = null;
  let problem = '';
  try {
    removed = new Set(
      removeShared(
        cfg.map,
        logins.map((l) => l.addr),
      ).map((a) => a.text),
    );
  } catch (e) {
    problem = e instanceof Error ? e.message : String(e);
  }
  for (const l of logins) {
    const fate =
      removed === null
        ? `; its entry could not be removed from the map: ${problem}`
        : removed.has(l.addr.text)
          ? inEngine
            ? '; its entry left the engine and the map'
            : '; its entry left the map'
          : inEngine
            ? '; its entry left the engine'
            : '';
    log(
      'warning',
      `not recorded ${l.addr.text}${inEngine ? ' in the engine' : ''} (${l.who}): a shared address: ` +
        `${describeUsers(l.users, (u) => showUser(u, quote))} logged in from it ${inEngine ? 'on the POP/IMAP hosts ' : ''}` +
        `within timeout_minutes, more than shared_address_users = ${cfg.sharedAddressUsers ?? '?'}${fate}`,
    );
  }
}

/** Sends logins to the engine, when there is one; false when that failed (logged for each). */
async function toEngine(cfg: Config, logins: readonly Recorded[], now: number, failed: Failed): Promise<boolean> {
  if (cfg.engine === null || logins.length === 0) return true;
  try {
    const outcomes = (await import('../engine/record.js')).recordInEngine(cfg, cfg.engine, logins, now);
    const stopped: SharedLogin[] = [];
    const { sharedUsers } = await import('../engine/relayset.js');
    logins.forEach((l, i) => {
      const outcome = outcomes[i] ?? 'recorded';
      if (outcome.startsWith('shared ')) {
        // Stopped here already, and said so; otherwise the users of every POP/IMAP host made it shared.
        if (l.shared !== true)
          stopped.push({
            ...l,
            users: sharedUsers(outcome).map((u) => ({ user: u.user, service: u.service, last: u.time, logins: 1 })),
          });
      } else if (cfg.logRecorded)
        log(
          'info',
          `recorded ${l.addr.text} in the engine (${l.who})${ENGINE_TEXT[outcome as keyof typeof ENGINE_TEXT] ?? ''}`,
        );
    });
    if (stopped.length > 0) await stopShared(cfg, stopped, (await import('../errors.js')).quoteUntrusted, true);
    return true;
  } catch (e) {
    for (const l of logins) await failed(e, l.addr.text, l.who, 'in the engine ');
    return false;
  }
}

/**
 * The recorder cannot read its settings: each login waiting in the queue
 * gets the line (they stay there for the next recorder or the sweep), as
 * the recorder started for them; false.
 */
async function failWaiting(e: unknown, queue: string, failed: Failed, quote: (s: string) => string): Promise<false> {
  const { mapOfQueue, readIncoming } = await import('../map/queue.js');
  const map = mapOfQueue(queue);
  const waiting = map === null ? [] : readIncoming(map);
  for (const l of waiting) await failed(e, l.ip ?? undefined, describeUser(l.user, l.tag, quote));
  if (waiting.length === 0) await failed(e, undefined, `queue ${quote(queue)}`);
  return false;
}

/**
 * The longest one recorder goes on taking rounds: one more that waits lock_timeout_ms (at most 30 s) still ends
 * before its front stops it (RUN_SECONDS in src/front/protocol.h). Its front starts another for what is left.
 */
const RUN_MS = 25_000;
/** A crowd: a waiting recorder lets it pass (no login for QUIET_MS, at most CROWD_MS) before it takes the CPU. */
const QUIET_MS = 5;
const CROWD_MS = 250;

/**
 * Admits the logins the fronts left and applies them, round after round
 * while more arrive, then sends them to the engine: one Node start for a
 * crowd of logins. With nothing left it waits recorder_idle_seconds for
 * more (the fronts see it running and leave their logins to it), so a
 * login within that time costs no Node start. Each login's problems are
 * logged as they happen; false only when the map cannot take logins now,
 * which tells the front to stop starting recorders (the queue keeps them
 * for the next writer or the sweep). An engine failure does not: the
 * sweep catches the engine up.
 */
async function drain(
  first: Config,
  again: () => Config | null,
  queue: string,
  { front, lockFd }: HookArgs,
  modules: Modules,
  failed: Failed,
): Promise<boolean> {
  const [, , { applyQueuedLogins }, { quoteUntrusted, errnoCode }] = modules;
  const { admitIncoming } = await import('./incoming.js');
  const { flock } = await import('../native.js');
  const { readIncoming } = await import('../map/queue.js');
  /**
   * Lets go of the queue's lock, then looks again: a front that left a login while this recorder held the
   * lock found it busy and counts on that look. True when a login waits and this recorder took the lock
   * back to record it; when another took it first, that one sees the login.
   */
  const tookBack = (): boolean => {
    if (lockFd === undefined) return false;
    flock(lockFd, 'un', 0);
    return readIncoming(first.map.path).length > 0 && flock(lockFd, 'ex', 0);
  };
  /** The front that started this recorder is gone: Dovecot ended it. */
  const frontGone = (): boolean => {
    if (front === undefined) return false;
    try {
      process.kill(front, 0);
      return false;
    } catch (e) {
      return errnoCode(e) === 'ESRCH';
    }
  };
  const until = Date.now() + RUN_MS;
  // Watched from before the first look, so that no login left after a look goes unnoticed.
  const arrivals = first.recorderIdleSeconds > 0 ? await watchQueue(queue) : null;
  let mapOk = true;
  try {
    for (let round = 0; mapOk && Date.now() < until; round++) {
      // A config that breaks or names another map meanwhile ends the run (the front then stops too); the
      // logins waiting stay queued for the next recorder or the sweep, and each says why it waits.
      let cfg: Config | null;
      try {
        cfg = round === 0 ? first : again();
        if (cfg === null) throw new Error(`poprelay.ini names another dbfile than ${first.map.path} now`);
      } catch (e) {
        return await failWaiting(e, queue, failed, quoteUntrusted);
      }
      arrivals?.mark();
      const now = Math.floor(Date.now() / 1000);
      const admitted = admitIncoming(cfg, now, (e) => whoNotKept(cfg, e));
      if (admitted.length === 0) {
        const idle = Math.min(cfg.recorderIdleSeconds * 1000, until - Date.now());
        if (arrivals !== null && idle > 0 && (await loginWithin(arrivals, idle, frontGone)))
          await crowdPassed(arrivals);
        else if (!tookBack()) break;
        continue;
      }
      const toMap: Recorded[] = [];
      const toShare: Recorded[] = [];
      const shared = new Map<string, SharedLogin>();
      for (const a of admitted) {
        const whose = describeUser(a.login.user, a.login.tag, quoteUntrusted);
        if (a.addr === null) {
          log('warning', `rejected (${whose}): ${a.problem}`);
          continue;
        }
        const l: Recorded = {
          addr: a.addr,
          time: a.login.time,
          who: whose,
          user: a.login.user ?? '',
          service: a.login.tag ?? '',
        };
        if (a.outcome === 'ignored') {
          if (cfg.logRecorded) log('info', `not recorded ${l.addr.text} (${whose}): in the ignore list`);
        } else if (a.outcome === 'shared') {
          if (!shared.has(l.addr.text)) shared.set(l.addr.text, { ...l, users: a.users ?? [] });
          toShare.push({ ...l, shared: true });
        } else if (a.outcome === 'expired') {
          await failed(new Error('it waited in the queue longer than timeout_minutes'), l.addr.text, whose);
        } else {
          if (a.outcome === 'queued') toMap.push(l);
          else logMapOutcome(cfg, l, a.outcome);
          toShare.push(l);
        }
      }
      if (toMap.length > 0) {
        try {
          const outcome = applyQueuedLogins(cfg.map);
          for (const l of toMap) logMapOutcome(cfg, l, outcome);
        } catch (e) {
          for (const l of toMap) await failed(e, l.addr.text, l.who);
          mapOk = false;
        }
      }
      if (shared.size > 0) await stopShared(cfg, [...shared.values()], quoteUntrusted);
      await toEngine(cfg, toShare, now, failed);
    }
  } finally {
    arrivals?.close();
  }
  return mapOk;
}

/** Watches the queue for the front's logins; null when it cannot (the recorder then exits once nothing waits). */
async function watchQueue(queue: string): Promise<Arrivals | null> {
  try {
    return (await import('./arrivals.js')).watchArrivals(queue);
  } catch {
    return null;
  }
}

/** Whether a login arrives within `ms`; false as soon as the front that started this recorder is gone. */
async function loginWithin(arrivals: Arrivals, ms: number, frontGone: () => boolean): Promise<boolean> {
  const by = Date.now() + ms;
  for (let left = ms; left > 0; left = by - Date.now()) {
    if (await arrivals.next(Math.min(left, 1000))) return true;
    if (frontGone()) return false;
  }
  return false;
}

/** Lets a crowd of logins pass before taking the CPU from it. */
async function crowdPassed(arrivals: Arrivals): Promise<void> {
  const by = Date.now() + CROWD_MS;
  do arrivals.mark();
  while (Date.now() < by && (await arrivals.next(QUIET_MS)));
}

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
