// An SMTP client for tests: asks a server whether the client may relay.
// EHLO, MAIL FROM and RCPT TO to a remote domain; the answer to RCPT is
// the verdict (250: may relay; 550 or 554: refused). Nothing is sent, so no
// delivery is ever needed.

import { converse, type Endpoint, type Step } from './mailclient.js';

/** A complete reply: its last line has a space after the code (continuation lines have a dash). */
const REPLY = /^\d{3} [^\r\n]*\r\n/m;

export interface RelayAnswer {
  /** The code of the reply to RCPT TO. */
  code: number;
  /** That reply's last line, without its line end. */
  reply: string;
  transcript: string;
}

export async function relayAnswer(
  ep: Endpoint,
  from = 'a@example.org',
  to = 'b@example.net',
  timeoutMs = 60_000,
): Promise<RelayAnswer> {
  const steps: Step[] = [
    { until: REPLY },
    { send: 'EHLO client.example.org', until: REPLY },
    { send: `MAIL FROM:<${from}>`, until: REPLY },
    { send: `RCPT TO:<${to}>`, until: REPLY },
    { send: 'QUIT', until: REPLY },
  ];
  const c = await converse(ep, steps, timeoutMs);
  const last = [...(c.replies[3] ?? '').matchAll(/^(\d{3})[ -]([^\r\n]*)\r\n/gm)].at(-1);
  if (last === undefined) throw new Error(`no reply to RCPT TO; transcript:\n${c.transcript}`);
  return { code: Number(last[1]), reply: `${last[1]} ${last[2]}`, transcript: c.transcript };
}
