// user_limit's counts in the engine, so that every MTA host's poprelayd adds
// to the same count: a user cannot send N recipients through each host.
// One key per user, period and window, INCRBY and EXPIREAT ... NX sent
// together on poprelayd's own connection (node-redis writes the commands of
// one turn of the event loop at once: one round trip), the expiry an
// absolute time, so sending it again is harmless and a lost one is set by
// the next recipient. INCRBY rather than INCR: doctor can ask whether the
// engine user may run it without writing (INCRBY KEY x is refused after the
// ACL check), which INCR cannot. A count the engine cannot give in time is
// an error, which the decider takes as no limit.

import { createHash } from 'node:crypto';

import type { EngineClient } from '../engine/client.js';
import { COUNT_PREFIX } from '../engine/relayset.js';
import { isPlainUser } from '../users.js';
import { withTimeout } from './answers.js';
import { LocalCounter, type Counter } from './user-limit.js';

/**
 * The most a recipient's answer waits for its count: Postfix's smtpd waits
 * for the answer with the SMTP client on the line, and with the relay
 * lookup's own bound (answers.ts) it stays within the shipped policy line's
 * timeout=2s, past which Postfix would take default_action; a counter that
 * does not answer means no limit anyway.
 */
export const COUNT_TIMEOUT_MS = 500;

/**
 * Kept past its window's end: the hosts' clocks differ a little, and a host
 * whose clock lags would otherwise count again in a key that expired,
 * from 1.
 */
export const COUNT_MARGIN_SECONDS = 300;

/** A user name as it is in a key: plain names as they are, any other as a digest of fixed length. */
function userInKey(user: string): string {
  if (isPlainUser(user)) return user;
  // "~" is no plain name's: a digest never stands for a plain name.
  return `~${createHash('sha256').update(user, 'utf8').digest('hex').slice(0, 32)}`;
}

/** The count key of `user` in window `window` of `periodSeconds`: poprelay:count:PERIOD:WINDOW:USER. */
export const countKey = (periodSeconds: number, window: number, user: string): string =>
  `${COUNT_PREFIX}${periodSeconds}:${window}:${userInKey(user)}`;

/** Why a count failed, saying what to fix when the engine user may not count. */
function why(e: unknown): Error {
  const message = e instanceof Error ? e.message : String(e);
  return new Error(
    /^NOPERM\b/.test(message)
      ? `the engine refused to count: ${message}; this host's engine user needs +incrby +expireat on ` +
          `~${COUNT_PREFIX}* (the mta role, docs/cluster.md)`
      : `the engine did not count: ${message}`,
  );
}

export class EngineCounter implements Counter {
  constructor(
    private readonly client: Pick<EngineClient, 'isReady' | 'incrBy' | 'expireAtNx'>,
    private readonly timeoutMs = COUNT_TIMEOUT_MS,
  ) {}

  add(user: string, window: number, periodSeconds: number): Promise<number> {
    // Offline, node-redis fails a command at once; said here in words an operator reads.
    if (!this.client.isReady) return Promise.reject(why(new Error('not connected')));
    const key = countKey(periodSeconds, window, user);
    const counted = Promise.all([
      this.client.incrBy(key, 1),
      this.client.expireAtNx(key, (window + 1) * periodSeconds + COUNT_MARGIN_SECONDS),
    ]).then(([n]) => n);
    return withTimeout(counted, this.timeoutMs).catch((e: unknown) => Promise.reject(why(e)));
  }
}

/** Counts across every MTA host through the engine; without one, this poprelayd's own. */
export function userLimitCounter(client: EngineClient | null): Counter {
  return client === null ? new LocalCounter() : new EngineCounter(client);
}
