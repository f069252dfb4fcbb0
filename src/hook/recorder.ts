// poprelay-login's recorder: records the client address ($IP) in the relay map.
//
// Dovecot runs the compiled front (src/front/poprelay-login.c), which
// continues the login at once and then runs this, bundled into one file
// (dist/poprelay-login.cjs) so that Node loads as little as it can: the
// client waits for the front's start-up, not Node's, and the hook's CPU stays
// near a bare Node start. By the time this runs, fds 0, 1 and 3 are
// /dev/null; diagnostics go to fd 2, which Dovecot puts in its log.
//
// A login's route: with --drain, the logins the front left in the queue go
// through rounds.ts (and the waiting recorder, waiting.ts); otherwise, or
// when Dovecot's executable line names another queue than dbfile's, $IP is
// recorded directly here. Both go to the map, then to the engine
// (to-engine.ts).

import { parseClientAddress, type ClientAddress } from '../address.js';
import { isIgnored, loadConfig, type Config } from '../config.js';
import { quoteUntrusted } from '../errors.js';
import { countFailure } from '../map/failures.js';
import { queueDir } from '../map/queue.js';
import { queueLogin } from '../map/relay-map.js';
import { actAsMapOwner } from '../privilege.js';
import type { HookArgs } from './arguments.js';
import { describeUser, envAddressText, log, logNotRecorded } from './dovecot-log.js';
import { logMapOutcome, type Failed, type Recorded } from './recorded.js';
import { drain, failWaiting } from './rounds.js';
import { keptWho } from './shared-stop.js';
import { toEngine } from './to-engine.js';

/**
 * Records $IP, or with --drain the logins the front left (incoming.ts).
 * Never throws: every failure is one log line and `false`.
 */
export async function recordFromEnv(args: HookArgs, env: NodeJS.ProcessEnv): Promise<boolean> {
  const who = describeUser(env.USER, args.tag, quoteUntrusted);
  const envIp = envAddressText(env);
  let dbfile: string | undefined;
  const failed: Failed = (e, ip = envIp, whose = who, where = '') => {
    logNotRecorded(e, ip, whose, where);
    if (dbfile !== undefined) countFailure(dbfile);
    return false;
  };
  try {
    let disagree = false;
    if (args.drain !== undefined) {
      const queue = args.drain;
      let cfg: Config;
      try {
        cfg = loadConfig(args.config, env);
      } catch (e) {
        return failWaiting(e, queue, failed);
      }
      dbfile = cfg.map.path;
      actAsMapOwner(cfg.map.path);
      if (queue === queueDir(cfg.map.path)) {
        // Read again for every round: an administrator's change applies to the logins that arrive after it.
        const again = (): Config | null => {
          const next = loadConfig(args.config, env);
          return queueDir(next.map.path) === queue ? next : null;
        };
        return await drain(cfg, again, queue, args, failed);
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
    let addr: ClientAddress;
    try {
      addr = parseClientAddress(ipText);
    } catch (e) {
      log('warning', `rejected (${who}): ${(e as Error).message}`);
      return false;
    }
    const cfg = loadConfig(args.config, env);
    dbfile = cfg.map.path;
    const ownQueue = queueDir(cfg.map.path);
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
    if (!keptWho(cfg, login, env.USER, args.tag)) {
      // The engine stops it too (its other POP/IMAP hosts' logins may have made it relay there).
      toEngine(cfg, [{ ...login, shared: true }], now, failed);
      return !disagree;
    }
    // The map and the engine each on their own: one failing does not keep the login from the other.
    let recorded = true;
    try {
      logMapOutcome(cfg, login, queueLogin(cfg.map, addr, now, cfg.refreshSeconds));
    } catch (e) {
      recorded = failed(e);
    }
    return toEngine(cfg, [login], now, failed) && recorded && !disagree;
  } catch (e) {
    return failed(e);
  }
}
