// Which client addresses have a live POP3 or IMAP session right now, from
// Dovecot's anvil process (doveadm who). The sweep treats each as just seen:
// an IMAP client that keeps one connection open for hours never logs in
// again, and would otherwise lose the right to relay after timeout_minutes.

import { spawnSync } from 'node:child_process';

import { parseClientAddress, type ClientAddress } from './address.js';

/** The services whose sessions prove a login; never submission, lmtp or doveadm. */
const SERVICES = new Set(['pop3', 'imap']);

export type LiveAnswer = { addresses: ClientAddress[] } | { error: string };

/**
 * Parses `doveadm -f tab who -1`: a header line, then one tab-separated line
 * per connection. The columns are found by name: 2.3 prints "username proto
 * pid ip", 2.4 "username service pid ip dest_ip".
 */
export function parseWho(text: string): ClientAddress[] {
  const [head = '', ...lines] = text.split('\n').filter((l) => l !== '');
  const cols = head.split('\t');
  const service = cols.includes('service') ? cols.indexOf('service') : cols.indexOf('proto');
  const ip = cols.indexOf('ip');
  if (service < 0 || ip < 0)
    throw new Error(
      `unexpected doveadm who output (no "service" or "proto", and "ip" columns): ${JSON.stringify(head.slice(0, 200))}`,
    );
  const found = new Map<string, ClientAddress>();
  for (const line of lines) {
    const fields = line.split('\t');
    if (!SERVICES.has(fields[service] ?? '')) continue;
    try {
      const a = parseClientAddress(fields[ip] ?? '');
      found.set(a.text, a);
    } catch {
      // A UNIX-socket client (no address) or one we would not record either.
    }
  }
  return [...found.values()];
}

/**
 * Asks Dovecot through `doveadm who` on the anvil socket, without reading
 * Dovecot's configuration (-O: the sweep needs no access to it). Bounded:
 * a hung Dovecot must not hold up the sweep.
 */
export function liveAddresses(anvil: string, doveadm: string): LiveAnswer {
  const r = spawnSync(doveadm, ['-O', '-f', 'tab', 'who', '-1', '-a', anvil], { encoding: 'utf8', timeout: 10_000 });
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
    return { addresses: parseWho(r.stdout) };
  } catch (e) {
    return { error: (e as Error).message };
  }
}
