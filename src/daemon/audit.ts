// poprelayd's audit line: one per relay decision, key=value fields as
// Postfix's own log lines are, so that a relayed message can be tied to the
// users who logged in from its client's address (a POP-before-SMTP client
// has no SMTP AUTH name). Values that hold spaces, quotes, commas or "="
// are quoted and escaped: users and senders are anyone's text.

import { escapeControls } from '../errors.js';
import type { ProtocolName, RequestFields } from './protocols.js';

export type AuditDecision = 'relay' | 'no' | 'defer' | 'refuse';

export interface AuditFields {
  protocol: ProtocolName;
  /** The client address, or null when the request named none usable. */
  client: string | null;
  decision: AuditDecision;
  /** Every user behind the address within the timeout, latest first. */
  users: readonly string[];
  fields: RequestFields;
  /** Where the answer came from when not the engine itself: the cache. */
  from?: string;
  /** user_limit, when it decided. */
  limit?: string;
  /** The user over user_limit. */
  over?: string;
}

const PLAIN = /^[A-Za-z0-9@._+:/<>[\]-]+$/;

/**
 * A value as a key=value field takes it: bare when plain, else JSON-quoted,
 * with what JSON leaves as it is (DEL, C1 controls) escaped as the log
 * escapes it: an audit line holds no control character, so the log need not
 * look for one again.
 */
export function fieldValue(v: string): string {
  return PLAIN.test(v) ? v : escapeControls(JSON.stringify(v));
}

/** The users' field value, kept per list: the who lookups hand out the same list while they keep an answer. */
const usersValues = new WeakMap<readonly string[], string>();

/** The users as one field value: each one's own quoting, comma-separated; "-" for nobody. */
function usersValue(users: readonly string[]): string {
  if (users.length === 0) return '-';
  let v = usersValues.get(users);
  if (v === undefined) {
    v = users.map((u) => (u === '' || u === '-' ? JSON.stringify(u) : fieldValue(u))).join(',');
    usersValues.set(users, v);
  }
  return v;
}

/** The line, without a control character (see fieldValue). */
export function auditLine(a: AuditFields): string {
  let line = `audit: protocol=${a.protocol} client=${a.client ?? '-'} decision=${a.decision} user=${usersValue(a.users)}`;
  const f = a.fields;
  if (f.sender !== undefined) line += ` sender=${fieldValue(f.sender)}`;
  if (f.recipient !== undefined) line += ` recipient=${fieldValue(f.recipient)}`;
  if (f.queueId !== undefined) line += ` queue_id=${fieldValue(f.queueId)}`;
  if (a.from !== undefined) line += ` from=${a.from}`;
  if (a.limit !== undefined) line += ` limit=${a.limit}`;
  if (a.over !== undefined) line += ` over=${fieldValue(a.over)}`;
  return line;
}
