// poprelayd's audit line: one per relay decision, key=value fields as
// Postfix's own log lines are, so that a relayed message can be tied to the
// users who logged in from its client's address (a POP-before-SMTP client
// has no SMTP AUTH name). Values that hold spaces, quotes, commas or "="
// are quoted and escaped: users and senders are anyone's text.

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

/** A value as a key=value field takes it: bare when plain, else JSON-quoted (control characters escaped). */
export function fieldValue(v: string): string {
  return /^[A-Za-z0-9@._+:/<>[\]-]+$/.test(v) ? v : JSON.stringify(v);
}

/** The users as one field value: each one's own quoting, comma-separated; "-" for nobody. */
function usersValue(users: readonly string[]): string {
  if (users.length === 0) return '-';
  return users.map((u) => (u === '' || u === '-' ? JSON.stringify(u) : fieldValue(u))).join(',');
}

export function auditLine(a: AuditFields): string {
  const parts = [
    `protocol=${a.protocol}`,
    `client=${a.client ?? '-'}`,
    `decision=${a.decision}`,
    `user=${usersValue(a.users)}`,
  ];
  const f = a.fields;
  if (f.sender !== undefined) parts.push(`sender=${fieldValue(f.sender)}`);
  if (f.recipient !== undefined) parts.push(`recipient=${fieldValue(f.recipient)}`);
  if (f.queueId !== undefined) parts.push(`queue_id=${fieldValue(f.queueId)}`);
  if (a.from !== undefined) parts.push(`from=${a.from}`);
  if (a.limit !== undefined) parts.push(`limit=${a.limit}`);
  if (a.over !== undefined) parts.push(`over=${fieldValue(a.over)}`);
  return `audit: ${parts.join(' ')}`;
}
