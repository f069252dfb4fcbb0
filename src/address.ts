// Client addresses: the strict acceptance rule, and the map keys each MTA
// looks up. We parse by hand rather than with node:net's isIP because isIP
// accepts zone ids ("fe80::1%eth0") and we must name the exact reason for a
// rejection.

import { PoprelayError, quoteUntrusted } from './errors.js';

export interface ClientAddress {
  family: 4 | 6;
  /** Dotted quad, or compressed lowercase IPv6 (RFC 5952): what Postfix and Exim look up. */
  text: string;
  /** Every key recorded for this address; an IPv6 login writes two. */
  keys: string[];
}

/** Longest valid IPv6 text (with an embedded dotted quad) is 45 characters. */
const MAX_TEXT = 45;

const DEC_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

function reject(input: string, why: string): never {
  throw new PoprelayError('ERR_BAD_ADDRESS', `invalid client address ${quoteUntrusted(input)}: ${why}`);
}

function parseIPv4(s: string): number[] | string {
  const parts = s.split('.');
  if (parts.length !== 4) return 'not a dotted quad of four decimal numbers';
  const octets: number[] = [];
  for (const p of parts) {
    if (!DEC_OCTET.test(p)) {
      return /^0[0-9]+$/.test(p)
        ? `leading zero in "${p}" (ambiguous: octal or decimal)`
        : 'not a dotted quad of four decimal numbers';
    }
    const n = Number(p);
    if (n > 255) return `octet ${p} is out of range 0-255`;
    octets.push(n);
  }
  return octets;
}

/** Eight 16-bit groups, or the reason the text is not an IPv6 address. */
function parseIPv6(s: string): number[] | string {
  const halves = s.split('::');
  if (halves.length > 2) return '"::" may appear only once';
  const side = (h: string): string[] => (h === '' ? [] : h.split(':'));
  const head = side(halves[0] ?? '');
  const tail = halves.length === 2 ? side(halves[1] ?? '') : [];
  const readGroups = (list: string[], isLastList: boolean): number[] | string => {
    const out: number[] = [];
    for (let i = 0; i < list.length; i++) {
      const g = list[i] ?? '';
      if (isLastList && i === list.length - 1 && g.includes('.')) {
        const v4 = parseIPv4(g);
        if (typeof v4 === 'string') return `embedded IPv4 part: ${v4}`;
        out.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
        continue;
      }
      if (!HEX_GROUP.test(g))
        return g === '' ? 'empty group (a single ":" where "::" or a number belongs)' : `bad group "${g}"`;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const hasTail = halves.length === 2;
  const h = readGroups(head, !hasTail);
  if (typeof h === 'string') return h;
  const t = readGroups(tail, true);
  if (typeof t === 'string') return t;
  if (!hasTail) return h.length === 8 ? h : `${h.length} groups where 8 are needed`;
  const fill = 8 - h.length - t.length;
  if (fill < 1) return 'too many groups for "::"';
  return [...h, ...new Array<number>(fill).fill(0), ...t];
}

/** RFC 5952 text: lowercase, no leading zeros, the longest run (>= 2) of zero groups as "::". */
export function compressIPv6(groups: readonly number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** sendmail's ${client_addr} for IPv6: "IPv6:" and eight %x groups; lowercased as map keys are. */
function sendmailIPv6Key(groups: readonly number[]): string {
  return `ipv6:${groups.map((g) => g.toString(16)).join(':')}`;
}

function ipv4Unicast(o: readonly number[]): string | null {
  const first = o[0] ?? 0;
  if (first === 0) return 'in 0.0.0.0/8 ("this network"), not a client address';
  if (first >= 224 && first <= 239) return 'a multicast address';
  if (first >= 240) return o.every((x) => x === 255) ? 'the broadcast address' : 'in the reserved range 240.0.0.0/4';
  return null;
}

function fromIPv4(o: readonly number[]): ClientAddress {
  const text = o.join('.');
  return { family: 4, text, keys: [text] };
}

function fromIPv6(groups: readonly number[]): ClientAddress {
  return { family: 6, text: compressIPv6(groups), keys: [sendmailIPv6Key(groups), compressIPv6(groups)] };
}

function isV4Mapped(g: readonly number[]): boolean {
  return g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff;
}

function mappedOctets(g: readonly number[]): number[] {
  const hi = g[6] ?? 0;
  const lo = g[7] ?? 0;
  return [hi >> 8, hi & 255, lo >> 8, lo & 255];
}

/**
 * The acceptance rule for a client address (Dovecot's IP, or an address an
 * administrator types). Accepted, exactly as given (no trimming):
 * - an IPv4 dotted quad of four decimal octets 0-255 without leading zeros;
 * - an IPv6 address in RFC 4291 text form, any case, optionally with a
 *   trailing dotted quad. A v4-mapped address (::ffff:a.b.c.d) becomes the
 *   IPv4 address.
 * Rejected: anything else (empty, whitespace, control characters, brackets,
 * zone ids, CIDR suffixes, hostnames, non-ASCII digits), unspecified,
 * multicast, broadcast and reserved addresses, 0.0.0.0/8, and deprecated
 * IPv4-compatible IPv6 (::a.b.c.d).
 */
export function parseClientAddress(input: string): ClientAddress {
  if (input === '') reject(input, 'empty');
  if (input.length > MAX_TEXT) reject(input, `longer than ${MAX_TEXT} characters`);
  if (/[^0-9A-Fa-f:.]/.test(input)) {
    const bad = /[^0-9A-Fa-f:.]/.exec(input)?.[0] ?? '';
    if (bad === '%') reject(input, 'zone ids (%...) are not accepted');
    if (bad === '/') reject(input, 'a network (CIDR) where a single address belongs');
    if (bad === '[' || bad === ']') reject(input, 'brackets are not part of an address');
    if (/\s/.test(bad)) reject(input, 'contains white space');
    reject(input, `unexpected character ${quoteUntrusted(bad)}`);
  }
  if (!input.includes(':')) {
    const o = parseIPv4(input);
    if (typeof o === 'string') reject(input, o);
    const why = ipv4Unicast(o);
    if (why !== null) reject(input, why);
    return fromIPv4(o);
  }
  const g = parseIPv6(input);
  if (typeof g === 'string') reject(input, g);
  if (isV4Mapped(g)) {
    const o = mappedOctets(g);
    const why = ipv4Unicast(o);
    if (why !== null) reject(input, `v4-mapped address ${why}`);
    return fromIPv4(o);
  }
  if (g.every((x) => x === 0)) reject(input, 'the unspecified address ::');
  if ((g[0] ?? 0) >> 8 === 0xff) reject(input, 'a multicast address');
  if (g.slice(0, 6).every((x) => x === 0) && !(g[6] === 0 && g[7] === 1)) {
    reject(input, 'a deprecated IPv4-compatible address (::a.b.c.d)');
  }
  return fromIPv6(g);
}

/**
 * The address a map key stands for, so that list and sweep can show an IPv6
 * login once and remove its two keys together. Null for keys that are not
 * single addresses (an administrator may keep other entries in the map).
 */
export function addressOfKey(key: string): ClientAddress | null {
  const text = key.startsWith('ipv6:') ? key.slice(5) : key;
  if (key.startsWith('ipv6:') && text.split(':').length !== 8) return null;
  try {
    const a = parseClientAddress(text);
    if (key.startsWith('ipv6:') && a.family !== 6) return null;
    return a;
  } catch {
    return null;
  }
}

export interface Network {
  family: 4 | 6;
  address: string;
  prefix: number;
}

/**
 * A CIDR network (or a single address) for the ignore list. Unlike client
 * addresses, any address is allowed (0.0.0.0/0 is a network), but host bits
 * must be clear, as Postfix's cidr tables demand, because a typo there
 * silently ignores the wrong clients.
 */
export function parseNetwork(input: string): Network | string {
  const [addr = '', prefixText, extra] = input.split('/');
  if (extra !== undefined) return 'more than one "/"';
  let family: 4 | 6;
  let bits: number[];
  if (!addr.includes(':')) {
    const o = parseIPv4(addr);
    if (typeof o === 'string') return o;
    family = 4;
    bits = o.flatMap((x) => [...Array(8).keys()].map((i) => (x >> (7 - i)) & 1));
  } else {
    if (/[^0-9A-Fa-f:.]/.test(addr)) return 'not an IPv6 address';
    const g = parseIPv6(addr);
    if (typeof g === 'string') return g;
    family = 6;
    bits = g.flatMap((x) => [...Array(16).keys()].map((i) => (x >> (15 - i)) & 1));
  }
  const max = family === 4 ? 32 : 128;
  let prefix = max;
  if (prefixText !== undefined) {
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > max) {
      return `prefix length "${prefixText}" is not 0-${max}`;
    }
    prefix = Number(prefixText);
  }
  if (bits.slice(prefix).some((b) => b === 1)) return `host bits are set after /${prefix}`;
  return { family, address: addr, prefix };
}

/** The address as 16-bit groups: two for IPv4, eight for IPv6. */
function groupsOf(text: string): number[] | string {
  if (text.includes(':')) return parseIPv6(text);
  const o = parseIPv4(text);
  return typeof o === 'string' ? o : [((o[0] ?? 0) << 8) | (o[1] ?? 0), ((o[2] ?? 0) << 8) | (o[3] ?? 0)];
}

/**
 * Whether a client address lies in a network (the ignore list's test). By
 * hand rather than with node:net's BlockList: node:net brings Node's stream
 * modules into every hook process, several milliseconds of CPU per login
 * (docs/benchmarks.md, section 5).
 */
export function inNetwork(addr: ClientAddress, net: Network): boolean {
  if (addr.family !== net.family) return false;
  const a = groupsOf(addr.text);
  const n = groupsOf(net.address);
  if (typeof a === 'string' || typeof n === 'string') return false;
  for (let i = 0, left = net.prefix; left > 0; i++, left -= 16) {
    const mask = left >= 16 ? 0xffff : (0xffff << (16 - left)) & 0xffff;
    if (((a[i] ?? 0) & mask) !== ((n[i] ?? 0) & mask)) return false;
  }
  return true;
}

/**
 * A sort key for display order: IPv4 numerically, then IPv6 numerically,
 * then keys that are not addresses, by text. Computed once per entry (a
 * comparator that parsed on every comparison made sorting 500,000 entries
 * take seconds).
 */
function displayRank(text: string): string {
  const addr = addressOfKey(text);
  if (addr === null) return `2${text}`;
  if (addr.family === 4)
    return `0${addr.text
      .split('.')
      .map((o) => o.padStart(3, '0'))
      .join('.')}`;
  const g = parseIPv6(addr.text);
  return `1${typeof g === 'string' ? '' : g.map((x) => x.toString(16).padStart(4, '0')).join(':')}`;
}

/** Sorts items by their address text in display order. */
export function sortByAddress<T>(items: readonly T[], text: (item: T) => string): T[] {
  const ranked = items.map((item) => ({ item, rank: displayRank(text(item)) }));
  ranked.sort((a, b) => (a.rank < b.rank ? -1 : a.rank > b.rank ? 1 : 0));
  return ranked.map((r) => r.item);
}
