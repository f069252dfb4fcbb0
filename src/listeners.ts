// poprelayd's sockets: one server per configured protocol, each with bounds
// that a hostile or broken client cannot push: connections at once,
// requests waiting on one connection, the time a request may take to
// arrive (a slowloris holds nothing for long), and idle connections.

import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { dirname } from 'node:path';

import type { ClientAddress } from './address.js';
import type { DaemonLog } from './daemon-log.js';
import type { ListenEndpoint } from './endpoints.js';
import { errnoCode } from './errors.js';
import { framer, ProtocolError, type ProtocolName } from './protocols.js';

export const MAX_CONNECTIONS = 256;
/** A request must be complete this long after its first byte. */
export const REQUEST_MS = 10_000;
/** A connection with nothing asked for this long is closed (Postfix and sendmail reconnect). */
export const IDLE_MS = 60_000;
/** Requests one connection may have waiting for answers. */
export const MAX_PENDING = 64;

export type Decide = (addr: ClientAddress) => Promise<boolean>;

function serveConnection(socket: Socket, protocol: ProtocolName, decide: Decide, log: DaemonLog, where: string): void {
  const f = framer(protocol);
  let pending = 0;
  let chain: Promise<void> = Promise.resolve();
  let deadline: NodeJS.Timeout | undefined;
  const drop = (why: string): void => {
    // One line per kind of trouble and interval: a flood of one kind cannot hide another.
    log.limited(
      'warning',
      `${protocol}: ${why.replace(/\d+/g, 'N')}`,
      `${protocol} on ${where}: closed a connection: ${why}`,
    );
    socket.destroy();
  };
  const answer = (requests: Array<ClientAddress | null>): void => {
    for (const addr of requests) {
      if (++pending > MAX_PENDING) return drop(`more than ${MAX_PENDING} requests waiting`);
      chain = chain.then(async () => {
        const relay = addr === null ? false : await decide(addr).catch(() => false);
        pending--;
        if (socket.destroyed) return;
        socket.write(f.answer(relay));
        if (f.once) socket.end();
      });
    }
  };
  socket.setTimeout(IDLE_MS, () => socket.destroy());
  socket.on('error', () => undefined); // a reset by the client: nothing to do
  socket.on('data', (data: Buffer) => {
    let requests: Array<ClientAddress | null>;
    try {
      requests = f.take(data);
    } catch (e) {
      return drop(e instanceof ProtocolError ? e.message : String(e));
    }
    // A request must be complete within REQUEST_MS of its first byte, however
    // its bytes trickle in (a slowloris sends one now and then).
    if (requests.length > 0) {
      clearTimeout(deadline);
      deadline = undefined;
    } else deadline ??= setTimeout(() => drop(`a request not complete within ${REQUEST_MS} ms`), REQUEST_MS);
    answer(requests);
  });
  socket.on('end', () => {
    clearTimeout(deadline);
    answer(f.end());
    // Every answer written, the connection ends from this side too.
    void chain.then(() => socket.end());
  });
  socket.on('close', () => clearTimeout(deadline));
}

/** Removes a UNIX socket left by a poprelayd that is gone (nothing answers on it). */
async function removeStaleSocket(path: string): Promise<void> {
  if (lstatSync(path, { throwIfNoEntry: false })?.isSocket() !== true) return;
  const alive = await new Promise<boolean>((resolve) => {
    const probe = createConnection({ path }, () => {
      probe.destroy();
      resolve(true);
    });
    probe.on('error', () => resolve(false));
  });
  if (!alive) unlinkSync(path);
}

/** What an administrator needs to know when `at` cannot be listened on. */
function whyNotListening(at: ListenEndpoint, e: unknown): string {
  const code = errnoCode(e);
  if ('path' in at) {
    const dir = dirname(at.path);
    // libuv reports a missing directory as EACCES: look for ourselves.
    if (lstatSync(dir, { throwIfNoEntry: false }) === undefined)
      return (
        `the directory ${dir} does not exist. poprelayd.service makes /run/poprelay (RuntimeDirectory=); ` +
        `started otherwise, make it first: install -d -o poprelay -m 0755 ${dir}`
      );
    if (code === 'EACCES' || code === 'EPERM')
      return `uid ${process.geteuid?.() ?? '?'} may not create a socket in ${dir}: make the directory poprelayd's user's (install -d -o poprelay -m 0755 ${dir})`;
  } else if (code === 'EADDRINUSE') {
    return `the address is in use by another program (ss -ltnp 'sport = :${at.port}' shows which); stop it or choose another port`;
  } else if (code === 'EACCES') {
    return `port ${at.port} is privileged (below 1024): choose a port above 1023`;
  } else if (code === 'EADDRNOTAVAIL') {
    return `${at.host} is not an address of this host`;
  }
  return e instanceof Error ? e.message : String(e);
}

/** A listening socket; close() also ends the connections it has open. */
export interface Listener {
  close(): Promise<void>;
}

/** Starts serving `protocol` on `at`; resolves once it listens. */
export async function listen(
  protocol: ProtocolName,
  at: ListenEndpoint,
  decide: Decide,
  log: DaemonLog,
): Promise<Listener> {
  const open = new Set<Socket>();
  // Half-open: Exim's readsocket shuts its side down after the request and still reads the answer.
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    serveConnection(socket, protocol, decide, log, at.display);
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.on('drop', () =>
    log.limited(
      'warning',
      `${protocol}-full`,
      `${protocol} on ${at.display}: refused a connection: ${MAX_CONNECTIONS} open`,
    ),
  );
  try {
    if ('path' in at) await removeStaleSocket(at.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if ('path' in at) server.listen(at.path, resolve);
      else server.listen(at.port, at.host, resolve);
    });
  } catch (e) {
    throw new Error(`${protocol} on ${at.display}: ${whyNotListening(at, e)}`, { cause: e });
  }
  // The MTAs run as other users (smmta, postfix, Debian-exim): they must be able to connect.
  if ('path' in at) chmodSync(at.path, 0o666);
  log.say('info', `answering ${protocol} on ${at.display}`);
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of open) s.destroy();
      }),
  };
}
