// poprelayd's sockets: one server per configured protocol, each with bounds
// that a hostile or broken client cannot push: connections at once (a new
// one evicts the longest-idle, so that a flood of idle connections cannot
// keep the MTA's out), connections per peer (its TCP address, or on a UNIX
// socket its uid), requests waiting on one
// connection, answers it leaves unread (then it is no longer read), the time
// a request may take to arrive (a slowloris holds nothing for long), and
// idle connections. A UNIX socket may be given to the MTA's group alone.

import { chmodSync, chownSync, closeSync, fstatSync, lstatSync, readFileSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';

import type { DaemonLog } from './log.js';
import type { ListenEndpoint } from '../endpoints.js';
import { peerCredentials } from '../native.js';
import { errnoCode } from '../errors.js';
import { fdPath, openOwnSocket } from '../safefs.js';
import { framer, ProtocolError, type Decision, type ProtocolName, type Request } from './protocols.js';

/** Connections one listener holds; at that, a new one evicts the longest-idle (of the peer that holds most). */
export const MAX_CONNECTIONS = 256;
/**
 * Connections one peer (a TCP address, a UNIX socket's uid) holds; at that,
 * its new one evicts its own longest-idle. Loopback MTAs and a local
 * attacker share 127.0.0.1: eviction, not refusal, keeps the MTA's fresh
 * connections in. On a UNIX socket the MTA's uid is its own.
 */
export const MAX_PER_PEER = 128;
/**
 * The kernel's queue of connections not yet accepted (at most
 * net.core.somaxconn): a flood's reconnections wait there beside the MTA's
 * rather than making a UNIX socket refuse them (EAGAIN).
 */
export const BACKLOG = 4096;
/** A request must be complete this long after its first byte. */
export const REQUEST_MS = 10_000;
/** A connection with nothing asked for this long is closed (Postfix and sendmail reconnect). */
export const IDLE_MS = 60_000;
/** Requests one connection may have waiting for answers. */
export const MAX_PENDING = 64;
/**
 * Answers one connection may leave unread (written, not yet taken by the
 * kernel because the client does not read) before poprelayd stops reading
 * its requests; it reads again once the client has taken them all. A client
 * that pipelines and never reads then fills its own buffers, not poprelayd.
 */
export const MAX_UNREAD = 64;

/** poprelayd's decision on one request; a failure answers no. */
export type Decide = (req: Request) => Promise<Decision>;

/** One client connection, as eviction sees it. */
class Connection {
  /** When it was last of use (accepted, or a request completed), in the listener's order. */
  lastUse = 0;
  /** Requests read and not yet answered. */
  pending = 0;
  /** Its answers are not being read: poprelayd stopped reading it. */
  stalled = false;

  constructor(
    readonly socket: Socket,
    /** The remote address on TCP; on a UNIX socket, one name for every peer. */
    readonly peer: string,
  ) {}

  /** Idle, or stalled: what a newcomer may evict (never one whose answer is being looked up). */
  get evictable(): boolean {
    return this.pending === 0 || this.stalled;
  }
}

/** The connection to evict among `conns`: a stalled one first, else the longest-idle; undefined when none may go. */
function idlest(conns: Iterable<Connection>): Connection | undefined {
  let best: Connection | undefined;
  for (const c of conns) {
    if (!c.evictable) continue;
    if (best === undefined || (c.stalled !== best.stalled ? c.stalled : c.lastUse < best.lastUse)) best = c;
  }
  return best;
}

function serveConnection(
  conn: Connection,
  protocol: ProtocolName,
  decide: Decide,
  log: DaemonLog,
  where: string,
  used: () => void,
): void {
  const { socket } = conn;
  const f = framer(protocol);
  let chain: Promise<void> = Promise.resolve();
  let deadline: NodeJS.Timeout | undefined;
  let unread = 0;
  const drop = (why: string): void => {
    // One line per kind of trouble and interval: a flood of one kind cannot hide another.
    log.limited(
      'warning',
      `${protocol}: ${why.replace(/\d+/g, 'N')}`,
      `${protocol} on ${where}: closed a connection: ${why}`,
    );
    socket.destroy();
  };
  const answer = (requests: Request[]): void => {
    for (const req of requests) {
      if (++conn.pending > MAX_PENDING) return drop(`more than ${MAX_PENDING} requests waiting`);
      chain = chain.then(async () => {
        const decision = await decide(req).catch((): Decision => ({ relay: false }));
        conn.pending--;
        if (socket.destroyed) return;
        unread++;
        socket.write(f.respond(decision), () => {
          // Taken by the kernel (or the connection is gone): with every answer taken, read on.
          if (--unread === 0 && conn.stalled) {
            conn.stalled = false;
            socket.resume();
          }
        });
        // MAX_UNREAD answers not taken: read no more until they are.
        if (unread >= MAX_UNREAD && !conn.stalled) {
          conn.stalled = true;
          socket.pause();
        }
        if (f.once) socket.end();
      });
    }
  };
  socket.setTimeout(IDLE_MS, () => socket.destroy());
  socket.on('error', () => undefined); // a reset by the client: nothing to do
  socket.on('data', (data: Buffer) => {
    let requests: Request[];
    try {
      requests = f.requests(data);
    } catch (e) {
      return drop(e instanceof ProtocolError ? e.message : String(e));
    }
    // A request must be complete within REQUEST_MS of its first byte, however
    // its bytes trickle in (a slowloris sends one now and then).
    if (requests.length > 0) {
      clearTimeout(deadline);
      deadline = undefined;
      used();
    } else deadline ??= setTimeout(() => drop(`a request not complete within ${REQUEST_MS} ms`), REQUEST_MS);
    answer(requests);
  });
  socket.on('end', () => {
    clearTimeout(deadline);
    answer(f.endRequests());
    // Every answer written, the connection ends from this side too.
    void chain.then(() => socket.end());
  });
  socket.on('close', () => clearTimeout(deadline));
}

/** The numeric id of `group` (a name in /etc/group, or a number). */
function groupId(group: string): number {
  if (/^[0-9]+$/.test(group)) return Number(group);
  for (const line of readFileSync('/etc/group', 'latin1').split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^[0-9]+$/.test(gid)) return Number(gid);
  }
  throw new Error(`there is no group ${group} in /etc/group (a group from elsewhere can be given by its number)`);
}

/**
 * Gives a listening UNIX socket its group and mode, and returns the mode.
 * Until then it has the mode the umask gave it, which lets no other account
 * connect (connecting needs write permission; poprelayd.service's
 * UMask=0077, a shell's 022). Done through the socket's own descriptor: the
 * directory may be another account's to write.
 */
function setAccess(at: { path: string; group?: string; mode?: number }): number {
  const fd = openOwnSocket(at.path);
  try {
    const self = fdPath(fd);
    if (at.group !== undefined) {
      const gid = groupId(at.group);
      try {
        chownSync(self, -1, gid);
      } catch (e) {
        const code = errnoCode(e);
        if (code !== 'EPERM' && code !== 'EINVAL') throw e;
        throw new Error(
          `poprelayd (uid ${process.geteuid?.() ?? '?'}) may not give its socket to group ${at.group}: it must be a member. ` +
            `Under poprelayd.service: systemctl edit poprelayd.service, add [Service] SupplementaryGroups=${at.group} ` +
            `and PrivateUsers=no (with PrivateUsers=yes no group but its own exists for it), then systemctl restart poprelayd`,
          { cause: e },
        );
      }
    }
    // Without a group, every account: the MTAs run as other users (smmta, postfix, Debian-exim).
    chmodSync(self, at.mode ?? (at.group === undefined ? 0o666 : 0o660));
    return fstatSync(fd).mode & 0o777;
  } finally {
    closeSync(fd);
  }
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

/**
 * Who a connection is from, for the limit per peer: its TCP address, or on
 * a UNIX socket the uid of the process that connected (SO_PEERCRED; Node
 * keeps the descriptor in its handle).
 */
function peerOf(socket: Socket): string {
  const address = socket.remoteAddress;
  if (address !== undefined) return address.replace(/^::ffff:(?=\d+\.)/, '');
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  try {
    if (fd !== undefined && fd >= 0) return `uid ${peerCredentials(fd).uid}`;
  } catch {
    // Gone already: it is about to close.
  }
  return 'a local process';
}

/** A listening socket; close() also ends the connections it has open. */
export interface Listener {
  close(): Promise<void>;
}

/**
 * Who is let in: every new connection is, and when its TCP peer holds
 * MAX_PER_PEER, or the listener MAX_CONNECTIONS, it evicts the longest-idle
 * connection of that peer, or of the peer that holds most. Only when every
 * candidate is waiting for its answer is the newcomer refused.
 */
class Admission {
  readonly all = new Set<Connection>();
  private readonly byPeer = new Map<string, Set<Connection>>();
  private clock = 0;

  constructor(
    private readonly protocol: ProtocolName,
    private readonly where: string,
    private readonly log: DaemonLog,
  ) {}

  /** The connection `socket` is, once let in; null when it was refused. */
  admit(socket: Socket): Connection | null {
    const peer = peerOf(socket);
    const mine = this.byPeer.get(peer);
    if (mine !== undefined && mine.size >= MAX_PER_PEER) {
      if (!this.evict(idlest(mine), `${peer} holds ${MAX_PER_PEER} connections: closed its longest-idle one`, 'peer'))
        return this.refuse(socket, `${peer} holds ${MAX_PER_PEER} connections, none idle`);
    }
    if (this.all.size >= MAX_CONNECTIONS) {
      const peers = [...this.byPeer.values()].sort((a, b) => b.size - a.size);
      let victim: Connection | undefined;
      for (const conns of peers) if ((victim = idlest(conns)) !== undefined) break;
      if (!this.evict(victim, `${MAX_CONNECTIONS} open: closed the longest-idle one (from ${victim?.peer})`, 'full'))
        return this.refuse(socket, `${MAX_CONNECTIONS} open, none idle`);
    }
    const conn = new Connection(socket, peer);
    this.used(conn);
    this.all.add(conn);
    const set = mine ?? new Set<Connection>();
    set.add(conn);
    this.byPeer.set(peer, set);
    socket.on('close', () => {
      this.all.delete(conn);
      set.delete(conn);
      if (set.size === 0 && this.byPeer.get(peer) === set) this.byPeer.delete(peer);
    });
    return conn;
  }

  /** Marks `conn` as just used: the last to be evicted. */
  used(conn: Connection): void {
    conn.lastUse = ++this.clock;
  }

  private evict(victim: Connection | undefined, why: string, kind: string): boolean {
    if (victim === undefined) return false;
    this.log.limited('warning', `${this.protocol}-${kind}`, `${this.protocol} on ${this.where}: ${why} for a new one`);
    this.all.delete(victim);
    this.byPeer.get(victim.peer)?.delete(victim);
    victim.socket.destroy();
    return true;
  }

  private refuse(socket: Socket, why: string): null {
    this.log.limited(
      'warning',
      `${this.protocol}-busy`,
      `${this.protocol} on ${this.where}: refused a connection: ${why}`,
    );
    socket.destroy();
    return null;
  }
}

/** Starts serving `protocol` on `at`; resolves once it listens. */
export async function listen(
  protocol: ProtocolName,
  at: ListenEndpoint,
  decide: Decide,
  log: DaemonLog,
): Promise<Listener> {
  const admission = new Admission(protocol, at.display, log);
  // Half-open: Exim's readsocket shuts its side down after the request and still reads the answer.
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    const conn = admission.admit(socket);
    if (conn !== null) serveConnection(conn, protocol, decide, log, at.display, () => admission.used(conn));
  });
  try {
    if ('path' in at) await removeStaleSocket(at.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if ('path' in at) server.listen({ path: at.path, backlog: BACKLOG }, resolve);
      else server.listen({ port: at.port, host: at.host, backlog: BACKLOG }, resolve);
    });
  } catch (e) {
    throw new Error(`${protocol} on ${at.display}: ${whyNotListening(at, e)}`, { cause: e });
  }
  let access = '';
  if ('path' in at) {
    let bits: number;
    try {
      bits = setAccess(at);
    } catch (e) {
      await closeServer(server, admission);
      throw new Error(`${protocol} on ${at.display}: ${(e as Error).message}`, { cause: e });
    }
    const mode = bits.toString(8).padStart(4, '0');
    access = at.group === undefined ? ` (mode ${mode})` : ` (group ${at.group}, mode ${mode})`;
  }
  log.say('info', `answering ${protocol} on ${at.display}${access}`);
  return { close: () => closeServer(server, admission) };
}

/** Stops listening (the UNIX socket is removed) and ends every connection. */
function closeServer(server: Server, admission: Admission): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    for (const c of admission.all) c.socket.destroy();
  });
}
