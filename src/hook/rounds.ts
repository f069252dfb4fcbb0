// The recorder's rounds over the queue the fronts leave logins in: each
// round admits what waits there (incoming.ts), applies it to the map in one
// copy, stops shared addresses and sends the round to the engine; between
// rounds the recorder waits for more (waiting.ts).

import type { Config } from '../config.js';
import { quoteUntrusted } from '../errors.js';
import { mapOfQueue, readIncoming } from '../map/queue.js';
import { applyQueuedLogins } from '../map/relay-map.js';
import type { HookArgs } from './arguments.js';
import { describeUser, log } from './dovecot-log.js';
import { admitIncoming } from './incoming.js';
import { logMapOutcome, type Failed, type Recorded } from './recorded.js';
import { stopShared, whoNotKept, type SharedLogin } from './shared-stop.js';
import { toEngine } from './to-engine.js';
import { waitingRecorder } from './waiting.js';

/**
 * The longest one recorder goes on taking rounds: one more that waits lock_timeout_ms (at most 30 s) still ends
 * before its front stops it (RUN_SECONDS in src/front/protocol.h). Its front starts another for what is left.
 */
const RUN_MS = 25_000;

/**
 * The recorder cannot read its settings: each login waiting in the queue
 * gets the line (they stay there for the next recorder or the sweep), as
 * the recorder started for them; false.
 */
export function failWaiting(e: unknown, queue: string, failed: Failed): false {
  const map = mapOfQueue(queue);
  const waiting = map === null ? [] : readIncoming(map);
  for (const l of waiting) failed(e, l.ip ?? undefined, describeUser(l.user, l.tag, quoteUntrusted));
  if (waiting.length === 0) failed(e, undefined, `queue ${quoteUntrusted(queue)}`);
  return false;
}

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
export async function drain(
  first: Config,
  again: () => Config | null,
  queue: string,
  { front, lockFd }: HookArgs,
  failed: Failed,
): Promise<boolean> {
  const until = Date.now() + RUN_MS;
  const waiting = waitingRecorder({
    queue,
    mapPath: first.map.path,
    idle: first.recorderIdleSeconds > 0,
    front,
    lockFd,
  });
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
        return failWaiting(e, queue, failed);
      }
      waiting.mark();
      const now = Math.floor(Date.now() / 1000);
      const admitted = admitIncoming(cfg, now, (e) => whoNotKept(cfg, e));
      if (admitted.length === 0) {
        if (!(await waiting.more(Math.min(cfg.recorderIdleSeconds * 1000, until - Date.now())))) break;
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
          failed(new Error('it waited in the queue longer than timeout_minutes'), l.addr.text, whose);
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
          for (const l of toMap) failed(e, l.addr.text, l.who);
          mapOk = false;
        }
      }
      if (shared.size > 0) stopShared(cfg, [...shared.values()]);
      toEngine(cfg, toShare, now, failed);
    }
  } finally {
    waiting.close();
  }
  return mapOk;
}
