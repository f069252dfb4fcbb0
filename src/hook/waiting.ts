// The waiting recorder: once nothing waits in the queue, a recorder waits
// recorder_idle_seconds for more logins (the fronts of those logins find the
// queue's lock busy and leave them to it), lets a crowd pass before it takes
// the CPU, and hands the lock back to the fronts when it is done
// (src/front/protocol.h, docs/design.md's table of what a front does).

import { processExists } from '../processes.js';
import { readIncoming } from '../map/queue.js';
import { flock } from '../native.js';
import { watchArrivals, type Arrivals } from './arrivals.js';

/** A crowd: a waiting recorder lets it pass (no login for QUIET_MS, at most CROWD_MS) before it takes the CPU. */
const QUIET_MS = 5;
const CROWD_MS = 250;
/** How often a recorder waiting for logins looks whether its front is still there. */
const FRONT_LOOK_MS = 1000;

export interface Waiting {
  /** Forgets the logins that arrived so far: called before each look at the queue. */
  mark(): void;
  /**
   * Called when the last look found nothing: true once there are logins to
   * take (a crowd arrived within `idleMs` and passed, or one waits and this
   * recorder took the lock back for it); false when the run is over.
   */
  more(idleMs: number): Promise<boolean>;
  close(): void;
}

export interface WaitingOptions {
  /** The queue directory and its map. */
  queue: string;
  mapPath: string;
  /** recorder_idle_seconds is not 0: watch the queue for arrivals. */
  idle: boolean;
  /** The front that started this recorder (--front), and the fd of the lock it handed over (--lock-fd). */
  front?: number;
  lockFd?: number;
}

/**
 * Starts watching the queue, before the first look at it, so that no login
 * left after a look goes unnoticed.
 */
export function waitingRecorder({ queue, mapPath, idle, front, lockFd }: WaitingOptions): Waiting {
  const arrivals = idle ? watchQueue(queue) : null;
  /**
   * Lets go of the queue's lock, then looks again: a front that left a login while this recorder held the
   * lock found it busy and counts on that look. True when a login waits and this recorder took the lock
   * back to record it; when another took it first, that one sees the login.
   */
  const tookBack = (): boolean => {
    if (lockFd === undefined) return false;
    flock(lockFd, 'un', 0);
    return readIncoming(mapPath).length > 0 && flock(lockFd, 'ex', 0);
  };
  /** The front that started this recorder is gone: Dovecot ended it. */
  const frontGone = (): boolean => front !== undefined && !processExists(front);
  return {
    mark: () => arrivals?.mark(),
    more: async (idleMs) => {
      if (arrivals !== null && idleMs > 0 && (await loginWithin(arrivals, idleMs, frontGone))) {
        await crowdPassed(arrivals);
        return true;
      }
      return tookBack();
    },
    close: () => arrivals?.close(),
  };
}

/** Watches the queue for the front's logins; null when it cannot (the recorder then exits once nothing waits). */
function watchQueue(queue: string): Arrivals | null {
  try {
    return watchArrivals(queue);
  } catch {
    return null;
  }
}

/** Whether a login arrives within `ms`; false as soon as the front that started this recorder is gone. */
async function loginWithin(arrivals: Arrivals, ms: number, frontGone: () => boolean): Promise<boolean> {
  const by = Date.now() + ms;
  for (let left = ms; left > 0; left = by - Date.now()) {
    if (await arrivals.next(Math.min(left, FRONT_LOOK_MS))) return true;
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
