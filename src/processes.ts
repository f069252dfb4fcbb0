// Whether a process is there, for those who watch one they did not start
// (the cron daemon of a pid file, the front that started a recorder).

import { errnoCode } from './errors.js';

/**
 * Whether a process with this pid exists. Signal 0 delivers nothing and is
 * refused only with ESRCH when there is no such process: EPERM says it
 * exists as another user's. A pid that cannot be a single process (zero,
 * negative: a process group; not an integer) is none.
 */
export function processExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errnoCode(e) === 'EPERM';
  }
}
