// The three ways an MTA asks poprelayd, as framers: each takes the bytes a
// connection sends, returns the complete requests in them (the client
// address asked about, or null when the request names none it can use),
// and writes the answer. Every request has a size limit: a client that
// sends more is a ProtocolError, and its connection is closed.
//
// - Postfix policy delegation (check_policy_service): name=value lines ended
//   by an empty line; answer "action=OK" or "action=DUNNO" and an empty line.
//   Never a 4xx: DUNNO lets the rest of smtpd_relay_restrictions decide;
//   user_limit alone answers DEFER_IF_REJECT, which defers only a recipient
//   that the rest would refuse (a relayed one), never local mail.
// - The socketmap protocol (sendmail's socket maps, Postfix's socketmap:):
//   netstrings "NAME KEY", answered "OK OK" (any value relays) or "NOTFOUND ".
//   sendmail sends keys lowercased, IPv6 as "ipv6:" and eight groups.
// - Exim's ${readsocket}: one line with $sender_host_address, answered
//   "yes" or "no", then the connection closes.

import { addressOfKey, parseClientAddress, type ClientAddress } from '../address.js';
import type { Config } from '../config.js';
import type { ListenEndpoint } from '../endpoints.js';

export type ProtocolName = 'policy' | 'socketmap' | 'readsocket';

/** Each protocol with where poprelay.ini says poprelayd answers it (null: not served). */
export function listenersOf(
  cfg: Pick<Config, 'policyListen' | 'socketmapListen' | 'readsocketListen'>,
): Array<[ProtocolName, ListenEndpoint | null]> {
  return [
    ['policy', cfg.policyListen],
    ['socketmap', cfg.socketmapListen],
    ['readsocket', cfg.readsocketListen],
  ];
}

export class ProtocolError extends Error {}

/** What a Postfix policy request says besides the client: for the audit line and user_limit. */
export interface RequestFields {
  sender?: string;
  recipient?: string;
  queueId?: string;
  saslUsername?: string;
}

/** One request: the client address asked about (null when it names none usable), and what else it says. */
export interface Request {
  addr: ClientAddress | null;
  fields: RequestFields;
}

/** poprelayd's answer: relay or not; `action`, a Postfix policy action to give instead (user_limit). */
export interface Decision {
  relay: boolean;
  action?: string;
}

export interface Framer {
  /** Complete requests in `data` (with what came before); throws ProtocolError on a malformed or oversized one. */
  take(data: Buffer): Array<ClientAddress | null>;
  /** At the end of the input: a last request without its terminator (readsocket), or nothing. */
  end(): Array<ClientAddress | null>;
  answer(relay: boolean): string;
  /** As take and end, with each request's fields. */
  requests(data: Buffer): Request[];
  endRequests(): Request[];
  /** The answer to a decision: answer(relay), or the policy's own action where it has one. */
  respond(d: Decision): string;
  /** Whether the connection closes after one answer. */
  readonly once: boolean;
}

/** Framers that know nothing but the client address. */
abstract class AddressOnly {
  abstract take(data: Buffer): Array<ClientAddress | null>;
  abstract end(): Array<ClientAddress | null>;
  abstract answer(relay: boolean): string;
  requests(data: Buffer): Request[] {
    return this.take(data).map((addr) => ({ addr, fields: {} }));
  }
  endRequests(): Request[] {
    return this.end().map((addr) => ({ addr, fields: {} }));
  }
  respond(d: Decision): string {
    return this.answer(d.relay);
  }
}

/** The policy request's attributes poprelayd reads, by name. */
const POLICY_FIELDS: Record<string, keyof RequestFields> = {
  sender: 'sender',
  recipient: 'recipient',
  queue_id: 'queueId',
  sasl_username: 'saslUsername',
};

/** The most one request may hold, by protocol. */
export const REQUEST_LIMIT: Record<ProtocolName, number> = { policy: 16_384, socketmap: 1_024, readsocket: 256 };

function address(text: string): ClientAddress | null {
  try {
    return parseClientAddress(text);
  } catch {
    return null;
  }
}

class PolicyFramer implements Framer {
  readonly once = false;
  private buf = '';

  take(data: Buffer): Array<ClientAddress | null> {
    return this.requests(data).map((r) => r.addr);
  }

  requests(data: Buffer): Request[] {
    this.buf += data.toString('latin1');
    const out: Request[] = [];
    for (let end = this.buf.indexOf('\n\n'); end >= 0; end = this.buf.indexOf('\n\n')) {
      const block = this.buf.slice(0, end);
      this.buf = this.buf.slice(end + 2);
      let addr: ClientAddress | null = null;
      const fields: RequestFields = {};
      for (const line of block.split('\n')) {
        const eq = line.indexOf('=');
        if (eq < 0) continue;
        const name = line.slice(0, eq);
        if (name === 'client_address') addr = address(line.slice(eq + 1));
        else if (Object.hasOwn(POLICY_FIELDS, name)) {
          const value = line.slice(eq + 1);
          if (value !== '') fields[POLICY_FIELDS[name] as keyof RequestFields] = value;
        }
      }
      out.push({ addr, fields });
    }
    if (this.buf.length > REQUEST_LIMIT.policy) {
      throw new ProtocolError(`a policy request longer than ${REQUEST_LIMIT.policy} bytes`);
    }
    return out;
  }

  end(): Array<ClientAddress | null> {
    return [];
  }

  endRequests(): Request[] {
    return [];
  }

  answer(relay: boolean): string {
    return relay ? 'action=OK\n\n' : 'action=DUNNO\n\n';
  }

  respond(d: Decision): string {
    return d.action === undefined ? this.answer(d.relay) : `action=${d.action.replace(/[\r\n]/g, ' ')}\n\n`;
  }
}

class SocketmapFramer extends AddressOnly implements Framer {
  readonly once = false;
  private buf: Buffer = Buffer.alloc(0);

  take(data: Buffer): Array<ClientAddress | null> {
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    const out: Array<ClientAddress | null> = [];
    for (;;) {
      const colon = this.buf.indexOf(':');
      if (colon < 0) {
        if (this.buf.length > 5 || !/^[0-9]*$/.test(this.buf.toString('latin1'))) throw this.malformed();
        return out;
      }
      const lenText = this.buf.toString('latin1', 0, colon);
      if (!/^[0-9]{1,5}$/.test(lenText)) throw this.malformed();
      const len = Number(lenText);
      if (len > REQUEST_LIMIT.socketmap) {
        throw new ProtocolError(`a netstring of ${len} bytes (at most ${REQUEST_LIMIT.socketmap})`);
      }
      if (this.buf.length < colon + 1 + len + 1) return out;
      if (this.buf[colon + 1 + len] !== 0x2c) throw this.malformed();
      const request = this.buf.toString('latin1', colon + 1, colon + 1 + len);
      this.buf = this.buf.subarray(colon + 2 + len);
      const space = request.indexOf(' ');
      out.push(space < 0 ? null : addressOfKey(request.slice(space + 1).toLowerCase()));
    }
  }

  end(): Array<ClientAddress | null> {
    return [];
  }

  answer(relay: boolean): string {
    const reply = relay ? 'OK OK' : 'NOTFOUND ';
    return `${reply.length}:${reply},`;
  }

  private malformed(): ProtocolError {
    return new ProtocolError('not a netstring');
  }
}

class ReadsocketFramer extends AddressOnly implements Framer {
  readonly once = true;
  private buf = '';
  private done = false;

  take(data: Buffer): Array<ClientAddress | null> {
    if (this.done) return [];
    this.buf += data.toString('latin1');
    const eol = this.buf.indexOf('\n');
    if (eol >= 0) return this.finish(this.buf.slice(0, eol));
    if (this.buf.length > REQUEST_LIMIT.readsocket) {
      throw new ProtocolError(`a line longer than ${REQUEST_LIMIT.readsocket} bytes`);
    }
    return [];
  }

  end(): Array<ClientAddress | null> {
    return this.done || this.buf === '' ? [] : this.finish(this.buf);
  }

  answer(relay: boolean): string {
    return relay ? 'yes' : 'no';
  }

  private finish(line: string): Array<ClientAddress | null> {
    this.done = true;
    return [address(line.replace(/\r$/, '').trim())];
  }
}

export function framer(protocol: ProtocolName): Framer {
  switch (protocol) {
    case 'policy':
      return new PolicyFramer();
    case 'socketmap':
      return new SocketmapFramer();
    case 'readsocket':
      return new ReadsocketFramer();
  }
}
