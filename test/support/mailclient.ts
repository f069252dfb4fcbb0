// Minimal POP3 and IMAP clients for tests: one conversation per connection,
// bound to a chosen source address, keeping the whole transcript so tests
// can check that nothing but protocol reached the client.

import { connect, type Socket } from 'node:net';

export interface Step {
  send?: string;
  /** The reply is complete when the received text (since this step began) matches. */
  until: RegExp;
}

export interface Conversation {
  transcript: string;
  /** The reply to each step, in order. */
  replies: string[];
  /** Milliseconds from connecting until each step's reply was complete. */
  at: number[];
  /** Milliseconds until the server closed the connection, if it did. */
  closedAt?: number;
}

export interface Endpoint {
  host: string;
  port: number;
  localAddress?: string;
}

/**
 * Runs `steps` on one connection; resolves with the conversation once the
 * server closes it. `held`, if given, is called once every step has had its
 * reply, with a function that closes the connection (a session kept open).
 */
export function converse(
  ep: Endpoint,
  steps: Step[],
  timeoutMs = 60_000,
  held?: (close: () => void) => void,
): Promise<Conversation> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const socket: Socket = connect({ host: ep.host, port: ep.port, localAddress: ep.localAddress });
    const conv: Conversation = { transcript: '', replies: [], at: [] };
    let pending = '';
    let step = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new Error(`timeout at step ${step} (${JSON.stringify(steps[step]?.send)}); transcript:\n${conv.transcript}`),
      );
    }, timeoutMs);
    const advance = (): void => {
      while (step < steps.length && steps[step]?.until.test(pending)) {
        conv.replies.push(pending);
        conv.at.push(performance.now() - t0);
        pending = '';
        step++;
        const next = steps[step];
        if (next?.send !== undefined) {
          conv.transcript += `C: ${next.send}\n`;
          socket.write(`${next.send}\r\n`);
        }
        if (step === steps.length && held !== undefined) {
          clearTimeout(timer);
          held(() => socket.destroy());
        }
      }
    };
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      conv.transcript += d;
      pending += d;
      advance();
    });
    socket.on('close', () => {
      clearTimeout(timer);
      conv.closedAt = performance.now() - t0;
      if (step < steps.length) {
        reject(
          new Error(`closed at step ${step} (${JSON.stringify(steps[step]?.send)}); transcript:\n${conv.transcript}`),
        );
      } else resolve(conv);
    });
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    // The first step is the greeting; a first step with `send` sends at once.
    socket.on('connect', () => {
      const first = steps[0];
      if (first?.send !== undefined) socket.write(`${first.send}\r\n`);
    });
  });
}

const OK_LINE = /^(\+OK|-ERR)[^\r\n]*\r\n/m;
const MULTI_END = /\r\n\.\r\n$|^-ERR[^\r\n]*\r\n/m;

export function pop3Steps(user: string, pass: string, after: Step[] = []): Step[] {
  return [
    { until: OK_LINE },
    { send: `USER ${user}`, until: OK_LINE },
    { send: `PASS ${pass}`, until: OK_LINE },
    ...after,
    { send: 'QUIT', until: OK_LINE },
  ];
}

export const pop3 = {
  stat: { send: 'STAT', until: OK_LINE } satisfies Step,
  list: { send: 'LIST', until: MULTI_END } satisfies Step,
  retr: (n: number): Step => ({ send: `RETR ${n}`, until: MULTI_END }),
};

export function imapSteps(user: string, pass: string, after: Step[] = []): Step[] {
  return [
    { until: /^\* OK[^\r\n]*\r\n/m },
    { send: `a1 LOGIN ${user} ${pass}`, until: /^a1 (OK|NO|BAD)[^\r\n]*\r\n/m },
    ...after,
    { send: 'z9 LOGOUT', until: /^z9 (OK|NO|BAD)[^\r\n]*\r\n/m },
  ];
}

export const imapSelect: Step = { send: 'b1 SELECT INBOX', until: /^b1 (OK|NO|BAD)[^\r\n]*\r\n/m };

/** A POP3 login that reports success rather than throwing on -ERR. */
export async function pop3Login(
  ep: Endpoint,
  user: string,
  pass: string,
  after: Step[] = [],
): Promise<Conversation & { ok: boolean }> {
  const c = await converse(ep, pop3Steps(user, pass, after));
  return { ...c, ok: (c.replies[2] ?? '').startsWith('+OK') };
}

export async function imapLogin(
  ep: Endpoint,
  user: string,
  pass: string,
  after: Step[] = [],
): Promise<Conversation & { ok: boolean }> {
  const c = await converse(ep, imapSteps(user, pass, after));
  return { ...c, ok: /^a1 OK/m.test(c.replies[1] ?? '') };
}

/** A session left open after its steps (an IMAP client in IDLE, a POP3 client that never sends QUIT), until close(). */
export interface HeldSession {
  close(): Promise<void>;
}

export function holdSession(ep: Endpoint, steps: Step[], timeoutMs = 60_000): Promise<HeldSession> {
  return new Promise((resolve, reject) => {
    const ended = converse(ep, steps, timeoutMs, (close) =>
      resolve({
        close: () => {
          close();
          return ended.then(() => undefined);
        },
      }),
    );
    ended.catch(reject);
  });
}

/** An IMAP login that then waits in IDLE, as a mail client keeps its connection for hours. */
export function imapIdleSteps(user: string, pass: string): Step[] {
  return [...imapSteps(user, pass, [imapSelect]).slice(0, -1), { send: 'i1 IDLE', until: /^\+ [^\r\n]*\r\n/m }];
}

/** A POP3 login without QUIT. */
export function pop3OpenSteps(user: string, pass: string): Step[] {
  return pop3Steps(user, pass).slice(0, -1);
}
