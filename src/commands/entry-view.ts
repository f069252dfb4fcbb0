// One relay entry as list and check tell it: its age, the time it has left,
// and whether the sweep removes it next.

import type { RelayEntry } from '../map/relay-map.js';

/** What the table and --json say about one entry. */
export function describeEntry(e: RelayEntry, now: number, timeoutSeconds: number) {
  const permanent = e.time === null;
  const age = e.time === null ? null : now - e.time;
  const left = age === null ? null : Math.max(0, timeoutSeconds - Math.max(0, age));
  return {
    address: e.address,
    keys: [...e.keys].sort(),
    permanent,
    lastLogin: e.time,
    ageSeconds: age,
    leftSeconds: left,
    expired: e.invalid === true || (age !== null && age > timeoutSeconds),
    invalid: e.invalid === true,
    /** A login in the queue beside the map, not yet in it. */
    queued: false,
  };
}
