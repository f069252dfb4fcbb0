// The logins the engine missed, kept in <dbfile>.engine-missed (one
// "ADDRESS TIME" line each) so that the next recorder that reaches the
// engine sends them in the same exchange as its own: after a failover or a
// restart the engine has them back with the first login that gets
// through, not a minute later with the sweep. The file stays a marker for
// the sweep too (it then sends the whole map): these lines only make the
// catch-up sooner, so losing some to a race between recorders, or not
// writing them past a bound, costs only that wait.

import { closeSync, constants as C, fstatSync, ftruncateSync, futimesSync, readFileSync, writeSync } from 'node:fs';

import { addressOfKey, type ClientAddress } from '../address.js';
import { openRegular } from '../safefs.js';

/** Past this size, missed logins are left to the sweep alone: a long outage does not grow every recorder's exchange. */
const MAX_BYTES = 64 * 1024;

export interface Missed {
  logins: Array<{ addr: ClientAddress; time: number }>;
  /** The file's size when read: the lines are cleared only if no recorder has added any since. */
  size: number;
}

/** Adds `logins` to the file (while it is small) and sets its time to `now`; never throws. */
export function noteMissed(
  path: string,
  logins: ReadonlyArray<{ addr: ClientAddress; time: number }>,
  now: number,
): void {
  try {
    const { fd } = openRegular(path, C.O_WRONLY | C.O_CREAT | C.O_APPEND);
    try {
      if (fstatSync(fd).size < MAX_BYTES && logins.length > 0)
        writeSync(fd, logins.map((l) => `${l.addr.text} ${l.time}\n`).join(''));
      futimesSync(fd, now, now);
    } finally {
      closeSync(fd);
    }
  } catch {
    // The next hook tries the engine again, and the sweep catches it up: slower, not wrong.
  }
}

/** The missed logins still in their time (after `since`); none when there is no file. */
export function missedLogins(path: string, since: number): Missed {
  try {
    const { fd } = openRegular(path);
    try {
      const size = fstatSync(fd).size;
      if (size === 0 || size > MAX_BYTES + 4096) return { logins: [], size };
      const logins = readFileSync(fd, 'latin1')
        .split('\n')
        .flatMap((line) => {
          const [text = '', timeText = ''] = line.split(' ');
          const addr = /^[0-9]{1,12}$/.test(timeText) ? addressOfKey(text) : null;
          const time = Number(timeText);
          return addr !== null && time > since ? [{ addr, time }] : [];
        });
      return { logins, size };
    } finally {
      closeSync(fd);
    }
  } catch {
    return { logins: [], size: 0 };
  }
}

/** Clears the lines sent, when no recorder has added any since they were read; the marker stays for the sweep. */
export function clearMissed(path: string, read: Missed): void {
  if (read.size === 0) return;
  try {
    const { fd } = openRegular(path, C.O_WRONLY);
    try {
      if (fstatSync(fd).size === read.size) ftruncateSync(fd, 0);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Sent again by the next recorder: the record script leaves what is newer as it is.
  }
}
