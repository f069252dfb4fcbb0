// Which client addresses have a live POP3 or IMAP session right now, from
// Dovecot's anvil process (doveadm who). The sweep treats each as just seen:
// an IMAP client that keeps one connection open for hours never logs in
// again, and would otherwise lose the right to relay after timeout_minutes.
//
// The answer is read as JSON (doveadm -f json), never by column position:
// Dovecot prints its tab and flow formats unescaped, so a login name holding
// a tab or a newline (a passdb that allows one) shifted the columns and made
// the root sweep keep an address of the client's choice. JSON escapes every
// string, 2.3 and 2.4 alike; each row must then be an object of the fields
// doveadm writes, each valid, or it is left out and counted.

import { spawnSync } from 'node:child_process';

import { parseClientAddress, type ClientAddress } from '../address.js';
import { quoteUntrusted } from '../errors.js';

/** The services whose sessions prove a login; never submission, lmtp or doveadm. */
const SERVICES = new Set(['pop3', 'imap']);

export interface LiveSessions {
  addresses: ClientAddress[];
  /** Rows of doveadm's answer that were not sessions as doveadm writes them: left out. */
  unreadable: number;
  /** Why the first of them was left out; '' when none was. */
  firstProblem: string;
}

export type LiveAnswer = LiveSessions | { error: string };

/** Why a row of `doveadm -f json who -1` is not a session as doveadm writes it; null when it is one. */
function rowProblem(row: unknown): string | null {
  if (typeof row !== 'object' || row === null || Array.isArray(row)) return 'not an object';
  const r = row as Record<string, unknown>;
  for (const key of ['username', 'service', 'pid', 'ip']) {
    if (!Object.hasOwn(r, key) || typeof r[key] !== 'string') return `no "${key}" string`;
  }
  const { service, pid } = r as Record<'service' | 'pid', string>;
  if (!/^[a-z][a-z0-9-]{0,31}$/.test(service)) return `service ${quoteUntrusted(service)} is not a service name`;
  if (!/^[1-9][0-9]{0,9}$/.test(pid)) return `pid ${quoteUntrusted(pid)} is not a process id`;
  return null;
}

/**
 * Parses `doveadm -f json who -1`: an array of one object per connection,
 * every value a string: 2.3 writes username, service, pid and ip, 2.4 adds
 * dest_ip. A row that is not such an object, or whose pid, service or
 * (non-empty) ip is not one, is left out and counted; an ip of '' is a
 * UNIX-socket client, which has no address. Throws when the answer is not
 * a JSON array at all.
 */
export function parseWho(text: string): LiveSessions {
  let rows: unknown;
  try {
    rows = JSON.parse(text);
  } catch (e) {
    throw new Error(
      `unexpected doveadm who output (not JSON: ${(e as Error).message}): ${quoteUntrusted(text.slice(0, 200), 200)}`,
      { cause: e },
    );
  }
  if (!Array.isArray(rows))
    throw new Error(`unexpected doveadm who output (not a JSON array): ${quoteUntrusted(text.slice(0, 200), 200)}`);
  const found = new Map<string, ClientAddress>();
  let unreadable = 0;
  let firstProblem = '';
  const skip = (why: string): void => {
    if (unreadable++ === 0) firstProblem = why;
  };
  for (const row of rows as unknown[]) {
    const problem = rowProblem(row);
    if (problem !== null) {
      skip(problem);
      continue;
    }
    const { service, ip } = row as Record<'service' | 'ip', string>;
    if (ip === '') continue; // a UNIX-socket client: no address
    let a: ClientAddress;
    try {
      a = parseClientAddress(ip);
    } catch {
      skip(`ip ${quoteUntrusted(ip)} is not a client address`);
      continue;
    }
    if (SERVICES.has(service)) found.set(a.text, a);
  }
  return { addresses: [...found.values()], unreadable, firstProblem };
}

/** One line on what was left out of an answer, for the sweep's stderr and doctor; '' when nothing was. */
export function describeUnreadable(answer: LiveSessions): string {
  return answer.unreadable === 0
    ? ''
    : `${answer.unreadable} row(s) of doveadm who's answer not understood and left out (the first: ${answer.firstProblem})`;
}

/**
 * Asks Dovecot through `doveadm who` on the anvil socket, without reading
 * Dovecot's configuration (-O: the sweep needs no access to it). Bounded:
 * a hung Dovecot must not hold up the sweep.
 */
export function liveAddresses(anvil: string, doveadm: string): LiveAnswer {
  const r = spawnSync(doveadm, ['-O', '-f', 'json', 'who', '-1', '-a', anvil], {
    encoding: 'utf8',
    timeout: 10_000,
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.error !== undefined) {
    const code = (r.error as NodeJS.ErrnoException).code;
    return {
      error:
        code === 'ENOENT'
          ? `${doveadm} not found`
          : code === 'ETIMEDOUT'
            ? `${doveadm} who did not answer within 10 s`
            : r.error.message,
    };
  }
  // A doveadm of another version than the anvil it asks exits 0 with an
  // empty list and "Error: Invalid input: VERSION..." (seen with 2.3's
  // doveadm and 2.4's anvil): any complaint means no answer.
  const complaint = r.stderr.trim();
  if (r.status !== 0 || complaint !== '')
    return { error: `${doveadm} who -a ${anvil} failed: ${complaint.split('\n')[0] || `exit ${r.status}`}` };
  try {
    return parseWho(r.stdout);
  } catch (e) {
    return { error: (e as Error).message };
  }
}
