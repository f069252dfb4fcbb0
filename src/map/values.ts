// What a map value means (docs/design.md, "The map"): the decimal Unix time of the
// last login, or, for any value that is not all digits (such as "OK"
// written by hand), a permanent entry. All digits but past the year 2286
// (more than 10 digits) is no time a login could have written: such an
// entry is "invalid", relays until the next sweep, and the sweep and
// flush remove it, so that a bogus value can never relay for ever.

import type { Database } from '../native.js';

export type EntryValue = { kind: 'dated'; time: number } | { kind: 'permanent' } | { kind: 'invalid' };

const DIGITS = /^[0-9]+$/;

export function classifyValue(value: string): EntryValue {
  if (!DIGITS.test(value)) return { kind: 'permanent' };
  if (value.length > 10) return { kind: 'invalid' };
  return { kind: 'dated', time: Number(value) };
}

/** A value as an entry's time: its seconds, null when permanent, 0 when invalid (swept as expired). */
export function entryTime(value: string): number | null {
  const v = classifyValue(value);
  return v.kind === 'dated' ? v.time : v.kind === 'permanent' ? null : 0;
}

const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

/**
 * Applies a login at `time` to `keys` unless an entry is permanent or
 * already as new: queued logins may be applied late, twice, or out of
 * order, and must never move an entry back in time. Returns whether it
 * changed anything.
 */
export function applyLogin(db: Database, keys: readonly string[], time: number): boolean {
  let changed = false;
  for (const key of keys.map(latin1)) {
    const old = db.get(key);
    if (old !== null) {
      const v = classifyValue(old.toString('latin1'));
      if (v.kind === 'permanent' || (v.kind === 'dated' && v.time >= time)) continue;
    }
    db.put(key, latin1(String(time)));
    changed = true;
  }
  return changed;
}
