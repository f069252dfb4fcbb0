// The hook's write to the shared engine: one EVAL (relayset.ts) within
// engine_timeout_ms, connecting included. Two marker files beside the map:
// <dbfile>.engine-missed, after any failure, tells the sweep to send the
// engine this host's live entries (catching up after an outage); and
// <dbfile>.engine-down, when no connection could even be made in time (a
// host that drops packets costs each hook its whole budget), makes the
// hooks leave the engine alone for ENGINE_PAUSE_SECONDS. A refused
// connection costs a hook next to nothing, so it pauses nothing. The
// missed logins themselves ride along with the next recorder that gets
// through (catchup.ts).

import { closeSync, constants as C, ftruncateSync, futimesSync, lstatSync, readFileSync, writeSync } from 'node:fs';

import type { ClientAddress } from '../address.js';
import type { Config } from '../config.js';
import { withoutSecrets, type EngineEndpoint } from '../endpoints.js';
import { PoprelayError } from '../errors.js';
import { recordCommand, recordWhoCommand, type EngineOutcome } from './relayset.js';
import { respCall } from './call.js';
import { EngineError, RespError } from './resp.js';
import { clearMissed, missedLogins, noteMissed } from './catchup.js';
import { openRegular } from '../safefs.js';
import { parseNode, type PrimaryMemory } from './sentinel.js';

export const ENGINE_PAUSE_SECONDS = 30;

export const engineDownFile = (dbfile: string): string => `${dbfile}.engine-down`;
export const engineMissedFile = (dbfile: string): string => `${dbfile}.engine-missed`;
/** The engine's run_id when this host last sent it every entry. */
export const engineRunFile = (dbfile: string): string => `${dbfile}.engine-run`;
/** Through Sentinel, the primary last found ("host port"): asked first, so that a login costs no question to them. */
export const enginePrimaryFile = (dbfile: string): string => `${dbfile}.engine-primary`;

function readSmall(path: string): string | null {
  try {
    const { fd } = openRegular(path);
    try {
      return readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch {
    return null;
  }
}

function writeSmall(path: string, text: string): void {
  const { fd } = openRegular(path, C.O_WRONLY | C.O_CREAT);
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/** The primary this host's clients last found, in the file beside the map. */
export function primaryMemory(dbfile: string): PrimaryMemory {
  const path = enginePrimaryFile(dbfile);
  return {
    recall: () => parseNode(readSmall(path) ?? ''),
    keep: (node) => {
      try {
        writeSmall(path, `${node.host} ${node.port}\n`);
      } catch {
        // The next client asks the Sentinels again: slower, not wrong.
      }
    },
  };
}

/** When the engine last failed a hook, if within the pause; else null. */
export function enginePausedSince(dbfile: string, now: number): number | null {
  const st = lstatSync(engineDownFile(dbfile), { throwIfNoEntry: false });
  if (st === undefined || !st.isFile()) return null;
  const since = Math.floor(st.mtimeMs / 1000);
  return now - since < ENGINE_PAUSE_SECONDS && since <= now ? since : null;
}

/** Sets a marker's time to `now`; never throws (it runs when something already failed). */
function mark(path: string, now: number): void {
  try {
    const { fd } = openRegular(path, C.O_WRONLY | C.O_CREAT);
    try {
      futimesSync(fd, now, now);
    } finally {
      closeSync(fd);
    }
  } catch {
    // The next hook tries the engine again: slower, not wrong.
  }
}

/**
 * Records logins in the engine, in one exchange: each one's outcome, in
 * order. Throws ERR_ENGINE on any failure (marking the logins missed, and
 * the engine down when unreachable); ERR_ENGINE_PAUSED while a recent
 * "down" stands.
 */
export function recordInEngine(
  cfg: Config,
  engine: EngineEndpoint,
  logins: ReadonlyArray<EngineLogin>,
  now: number,
): EngineOutcome[] {
  const missedFile = engineMissedFile(cfg.map.path);
  const since = enginePausedSince(cfg.map.path, now);
  // A login the shared-address guard stopped is never caught up: that would record its address.
  const missable = logins.filter((l) => l.shared !== true);
  if (since !== null) {
    noteMissed(missedFile, missable, now);
    throw new PoprelayError(
      'ERR_ENGINE_PAUSED',
      `engine ${engine.display} failed ${now - since} s ago; hooks leave it alone for ${ENGINE_PAUSE_SECONDS} s ` +
        `(remove ${engineDownFile(cfg.map.path)} to try at once)`,
    );
  }
  // What earlier recorders could not send goes with these logins, in the same exchange.
  const behind = missedLogins(missedFile, now - cfg.map.timeoutSeconds);
  try {
    const replies = respCall(
      engine,
      [
        ...logins.map((l) =>
          l.user === undefined
            ? recordCommand(l.addr, l.time, cfg.map.timeoutSeconds, cfg.refreshSeconds)
            : recordWhoCommand(
                l.addr,
                l.time,
                cfg.map.timeoutSeconds,
                cfg.refreshSeconds,
                l.user,
                l.service ?? '',
                l.shared === true ? -1 : (cfg.sharedAddressUsers ?? 0),
              ),
        ),
        ...behind.logins.map((l) => recordCommand(l.addr, l.time, cfg.map.timeoutSeconds, 0)),
      ],
      cfg.engineTimeoutMs,
      primaryMemory(cfg.map.path),
    );
    const outcomes = replies.slice(0, logins.length).map((reply) => {
      if (reply instanceof RespError)
        throw new PoprelayError('ERR_ENGINE', `engine ${engine.display}: ${withoutSecrets(engine, reply.message)}`);
      if (typeof reply === 'string' && reply.startsWith('shared ')) return reply as EngineOutcome;
      if (reply !== 'recorded' && reply !== 'fresh' && reply !== 'permanent') {
        throw new PoprelayError(
          'ERR_ENGINE',
          `engine ${engine.display}: unexpected answer ${withoutSecrets(engine, JSON.stringify(reply))}`,
        );
      }
      return reply;
    });
    if (behind.logins.length > 0 && replies.slice(logins.length).every((r) => !(r instanceof RespError)))
      clearMissed(missedFile, behind);
    return outcomes;
  } catch (e) {
    noteMissed(missedFile, missable, now);
    if (e instanceof EngineError && e.unreachable) mark(engineDownFile(cfg.map.path), now);
    throw e;
  }
}

/** A login for the engine; with its user (the who key, and shared_address_users there), and whether the guard stopped it here. */
export interface EngineLogin {
  addr: ClientAddress;
  time: number;
  user?: string;
  service?: string;
  shared?: boolean;
}

/** Logins the sweep sends in one exchange: bounded answers, and a deadline per batch. */
const SYNC_BATCH = 5000;

/**
 * The sweep's logins for the engine (its live sessions, and what hooks
 * missed), in batches; it runs once a minute, so no pause applies.
 */
export function syncToEngine(
  cfg: Config,
  engine: EngineEndpoint,
  logins: ReadonlyArray<{ addr: ClientAddress; time: number }>,
): void {
  for (let i = 0; i < logins.length; i += SYNC_BATCH) {
    const replies = respCall(
      engine,
      logins.slice(i, i + SYNC_BATCH).map((l) => recordCommand(l.addr, l.time, cfg.map.timeoutSeconds, 0)),
      Math.max(cfg.engineTimeoutMs, 10_000),
      primaryMemory(cfg.map.path),
    );
    const refused = replies.find((r): r is RespError => r instanceof RespError);
    if (refused !== undefined)
      throw new PoprelayError('ERR_ENGINE', `engine ${engine.display}: ${withoutSecrets(engine, refused.message)}`);
  }
}

/**
 * The engine's run_id (INFO server): a new one after every restart and on
 * the replica a failover promotes, when the set may have lost what this
 * host recorded. null when the engine does not say.
 */
export function engineRunId(cfg: Config, engine: EngineEndpoint): string | null {
  const [info] = respCall(
    engine,
    [['INFO', 'server']],
    Math.max(cfg.engineTimeoutMs, 10_000),
    primaryMemory(cfg.map.path),
  );
  if (typeof info !== 'string') return null;
  return /^run_id:([0-9a-f]+)\r?$/m.exec(info)?.[1] ?? null;
}

/** The run_id this host last seeded; null when none is recorded. */
export function seededRunId(dbfile: string): string | null {
  return readSmall(engineRunFile(dbfile))?.trim() || null;
}

export function recordSeeded(dbfile: string, runId: string): void {
  writeSmall(engineRunFile(dbfile), `${runId}\n`);
}
