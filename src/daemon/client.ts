// Asking poprelayd as an MTA would (protocols.ts has its side): poprelay
// doctor checks each listener this way, and the MTA lines name the same
// endpoints in each MTA's own syntax.

import { connect } from 'node:net';

import type { ListenEndpoint } from '../endpoints.js';
import { framer, type ProtocolName } from './protocols.js';

/** The request an MTA sends about `address`. */
export function requestFor(protocol: ProtocolName, address: string): string {
  switch (protocol) {
    case 'policy':
      return `request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=${address}\n\n`;
    case 'socketmap': {
      const body = `drac ${address}`;
      return `${body.length}:${body},`;
    }
    case 'readsocket':
      return `${address}\n`;
  }
}

/** Whether an answer says "may relay"; undefined when it is no answer of that protocol. */
export function relayIn(protocol: ProtocolName, answer: string): boolean | undefined {
  const f = framer(protocol);
  return answer === f.answer(true) ? true : answer === f.answer(false) ? false : undefined;
}

/** Asks one question on a new connection; rejects on no well-formed answer within `timeoutMs`. */
export function askDaemon(
  protocol: ProtocolName,
  at: ListenEndpoint,
  address: string,
  timeoutMs: number,
): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = 'path' in at ? connect({ path: at.path }) : connect({ host: at.host, port: at.port });
    let got = '';
    const done = (err: Error | null, relay?: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      if (err !== null) reject(err);
      else resolve(relay ?? false);
    };
    const timer = setTimeout(() => done(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.on('connect', () => socket.write(requestFor(protocol, address)));
    socket.on('error', (e: NodeJS.ErrnoException) => done(new Error(e.code ?? e.message)));
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const relay = relayIn(protocol, got);
      if (relay !== undefined) done(null, relay);
      else if (got.length > 64) done(new Error(`an answer poprelayd never gives: ${JSON.stringify(got.slice(0, 64))}`));
    });
    socket.on('end', () => {
      const relay = relayIn(protocol, got);
      done(relay === undefined ? new Error(`closed after ${JSON.stringify(got)}`) : null, relay);
    });
  });
}

/** The endpoint as sendmail's socket map names it (inet:PORT@HOST, unix:PATH). */
export function sendmailSocketSpec(at: ListenEndpoint): string {
  return 'path' in at ? `unix:${at.path}` : `inet:${at.port}@${at.host}`;
}
