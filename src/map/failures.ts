// The hook's count of recording failures: one byte appended to
// <dbfile>.failures per login it could not record. Appending is atomic and
// costs the hook one open and one write; the count is the file's size, and
// it only grows (a Prometheus counter); the sweep remembers what it saw last
// (src/map/stats.ts) for "since the last sweep". Removing the file resets it.

import { closeSync, constants as C, lstatSync, writeSync } from 'node:fs';

import { openRegular } from '../safefs.js';

export function failuresFile(dbfile: string): string {
  return `${dbfile}.failures`;
}

/** Counts one failure; never throws (it runs when something already failed). */
export function countFailure(dbfile: string): void {
  try {
    // O_CREAT without O_EXCL: the file is shared by every hook; openRegular
    // still refuses a link or anything but a regular file in its place.
    const { fd } = openRegular(failuresFile(dbfile), C.O_WRONLY | C.O_APPEND | C.O_CREAT);
    try {
      writeSync(fd, 'x');
    } finally {
      closeSync(fd);
    }
  } catch {
    // The failure is logged anyway; only the count misses it.
  }
}

/** Recording failures counted so far; 0 when none were. */
export function failuresSoFar(dbfile: string): number {
  return lstatSync(failuresFile(dbfile), { throwIfNoEntry: false })?.size ?? 0;
}
