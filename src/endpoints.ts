// Where poprelay talks to the shared engine and where poprelayd listens:
// the text forms of poprelay.ini (engine, *_listen) and what they mean.

/** One engine node or Sentinel over TCP. */
export interface EngineNode {
  host: string;
  port: number;
}

/**
 * TLS to the engine (rediss://, rediss+sentinel://): the files poprelay.ini
 * names (engine_ca_file, engine_cert_file, engine_key_file), read when a
 * connection is made; without a CA, the system's.
 */
export interface EngineTls {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/**
 * A RESP server (Valkey, Redis): over TCP (TLS or not) or a UNIX socket, or
 * the primary that Sentinels name for a service; with an optional ACL user
 * and password (sent to the Sentinels too where they ask for one), and a
 * database.
 */
export type EngineEndpoint = (EngineNode | { path: string } | { sentinels: EngineNode[]; service: string }) & {
  db: number;
  username?: string;
  password?: string;
  tls?: EngineTls;
  /** The URL without its user name and password, for messages (and all that messages show of it). */
  display: string;
};

/** The engine is found through Sentinels. */
export const viaSentinel = (e: EngineEndpoint): e is EngineEndpoint & { sentinels: EngineNode[]; service: string } =>
  'sentinels' in e;

/**
 * Where a listener of poprelayd binds. A UNIX socket may name the group it
 * is given and its mode (display leaves them out: it is the socket as the
 * MTAs name it).
 */
export type ListenEndpoint =
  { host: string; port: number; display: string } | { path: string; display: string; group?: string; mode?: number };

const HOST = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])$/;

function port(text: string | undefined, fallback?: number): number | undefined {
  if (text === undefined || text === '') return fallback;
  if (!/^[0-9]{1,5}$/.test(text)) return undefined;
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** An absolute socket path with no NUL, newline or space (it goes into messages and MTA configuration). */
const socketPath = (p: string): boolean => p.startsWith('/') && !/[\0\n\s]/.test(p) && p.length <= 107;

/**
 * A user name or password: percent-escapes decoded. "@" and "/" (which
 * would make where the userinfo ends a guess), spaces and control
 * characters must be escaped, and every % must begin an escape; the problem
 * names the part and the character, never the text around it.
 */
function credential(raw: string, what: 'user name' | 'password'): string | { problem: string } {
  const bad = /[@/\0-\x20\x7f]/.exec(raw)?.[0];
  if (bad !== undefined) {
    const escape = `%${bad.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`;
    const shown = /[@/]/.test(bad) ? `an unescaped "${bad}"` : 'a space or control character';
    return { problem: `the ${what} holds ${shown}: write it as ${escape}` };
  }
  if (/%(?![0-9A-Fa-f]{2})/.test(raw)) {
    return { problem: `the ${what} holds a "%" that does not begin an escape such as %40; write "%" itself as %25` };
  }
  try {
    return decodeURIComponent(raw);
  } catch {
    return { problem: `the ${what}'s percent-escapes are not UTF-8 text` };
  }
}

/** USER:PASSWORD (either may be empty; without ":" there is a user name alone). */
function userinfo(raw: string): Pick<EngineEndpoint, 'username' | 'password'> | { problem: string } {
  const colon = raw.indexOf(':');
  const userText = colon < 0 ? raw : raw.slice(0, colon);
  const user = credential(userText, 'user name');
  if (typeof user !== 'string') return user;
  const pass = colon < 0 ? undefined : credential(raw.slice(colon + 1), 'password');
  if (pass !== undefined && typeof pass !== 'string') return pass;
  return { ...(user !== '' ? { username: user } : {}), ...(pass !== undefined ? { password: pass } : {}) };
}

const DB_RANGE = 'a number from 0 to 99';

function database(text: string): number | undefined {
  return /^[0-9]{1,2}$/.test(text) ? Number(text) : undefined;
}

/** HOST[:PORT][/DB], after redis://USERINFO@. */
function tcpPart(text: string): { host: string; shown: string; port: number; db: number } | { problem: string } {
  const slash = text.indexOf('/');
  const dbText = slash < 0 ? '' : text.slice(slash + 1);
  const db = dbText === '' ? 0 : database(dbText);
  if (db === undefined) return { problem: `the database after "/" must be ${DB_RANGE}` };
  const where = hostAndPort(slash < 0 ? text : text.slice(0, slash), 6379);
  return 'problem' in where ? where : { ...where, db };
}

/** HOST[:PORT], the host a name, an IPv4 address or an IPv6 address in brackets. */
function hostAndPort(
  hostPort: string,
  defaultPort: number,
): { host: string; shown: string; port: number } | { problem: string } {
  let shown: string;
  let portText: string | undefined;
  if (hostPort.startsWith('[')) {
    const close = hostPort.indexOf(']');
    if (close < 0) return { problem: 'an IPv6 address in "[" has no "]"' };
    shown = hostPort.slice(0, close + 1);
    const after = hostPort.slice(close + 1);
    if (after !== '' && !after.startsWith(':'))
      return { problem: 'after the "]" of an IPv6 address comes ":PORT" or nothing' };
    portText = after === '' ? undefined : after.slice(1);
  } else {
    const parts = hostPort.split(':');
    if (parts.length > 2)
      return { problem: 'the host holds more than one ":"; put an IPv6 address in brackets, as [2001:db8::1]' };
    [shown = '', portText] = parts;
  }
  if (shown === '') return { problem: 'there is no host' };
  if (!HOST.test(shown)) return { problem: 'the host must be a name, an IPv4 address, or an IPv6 address in brackets' };
  const p = port(portText, defaultPort);
  if (p === undefined) return { problem: 'the port must be a number from 1 to 65535' };
  return { host: shown.startsWith('[') ? shown.slice(1, -1) : shown, shown, port: p };
}

/** The name Sentinels know the primary by (sentinel monitor NAME ...). */
const SERVICE = /^[A-Za-z0-9._-]{1,64}$/;

/** HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB], after redis+sentinel://USERINFO@. */
function sentinelPart(
  text: string,
): { sentinels: EngineNode[]; shown: string; service: string; db: number } | { problem: string } {
  const [list = '', service = '', dbText, ...more] = text.split('/');
  if (dbText === undefined && service === '')
    return { problem: 'after the Sentinels comes /SERVICE, the name they monitor the primary by' };
  if (!SERVICE.test(service) || more.length > 0)
    return { problem: 'the service after the Sentinels must be a name of letters, digits, ".", "_" and "-"' };
  const db = dbText === undefined || dbText === '' ? 0 : database(dbText);
  if (db === undefined) return { problem: `the database after the service must be ${DB_RANGE}` };
  const sentinels: EngineNode[] = [];
  const shown: string[] = [];
  for (const item of list.split(',')) {
    const where = hostAndPort(item, 26379);
    if ('problem' in where) return { problem: `a Sentinel: ${where.problem}` };
    sentinels.push({ host: where.host, port: where.port });
    shown.push(`${where.shown}:${where.port}`);
  }
  return { sentinels, shown: shown.join(','), service, db };
}

/** The userinfo before the last "@" of what follows the scheme, and the rest. */
function splitUserinfo(
  rest: string,
): { auth: Pick<EngineEndpoint, 'username' | 'password'>; after: string } | { problem: string } {
  // The userinfo ends at the last "@": an unescaped "@" or "/" in the
  // password then lands in the userinfo, where it is refused, rather than
  // in the host or the database, which messages show.
  const at = rest.lastIndexOf('@');
  const auth = at < 0 ? {} : userinfo(rest.slice(0, at));
  return 'problem' in auth ? auth : { auth, after: rest.slice(at + 1) };
}

/**
 * redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (rediss:// with TLS),
 * redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]
 * (rediss+sentinel:// with TLS to the Sentinels and the engine), or
 * unix:/PATH[?db=N] and unix://[[USER]:PASSWORD@]/PATH[?db=N];
 * percent-escapes in USER and PASSWORD are decoded. A problem names the
 * part that is wrong and never quotes the text: it may hold the password.
 */
export function readEngine(text: string): EngineEndpoint | { problem: string } {
  const scheme = /^(rediss?)(\+sentinel)?:\/\//.exec(text);
  if (scheme !== null) {
    const [prefix, name = '', sentinel] = scheme;
    const split = splitUserinfo(text.slice(prefix.length));
    if ('problem' in split) return split;
    const tls = name === 'rediss' ? { tls: {} } : {};
    if (sentinel !== undefined) {
      const where = sentinelPart(split.after);
      if ('problem' in where) return where;
      const { sentinels, shown, service, db } = where;
      return { sentinels, service, db, ...split.auth, ...tls, display: `${name}+sentinel://${shown}/${service}/${db}` };
    }
    const where = tcpPart(split.after);
    if ('problem' in where) return where;
    const { host, shown, port: p, db } = where;
    return { host, port: p, db, ...split.auth, ...tls, display: `${name}://${shown}:${p}/${db}` };
  }
  if (text.startsWith('unix:')) {
    let rest = text.slice('unix:'.length);
    let auth: Pick<EngineEndpoint, 'username' | 'password'> | { problem: string } = {};
    if (rest.startsWith('//')) {
      rest = rest.slice(2);
      if (!rest.startsWith('/')) {
        // Likewise the last "@/": an unescaped "@" or "/" in the password stays in the userinfo.
        const at = rest.lastIndexOf('@/');
        if (at < 0) return { problem: 'after "unix://" comes /PATH, or [USER]:PASSWORD@/PATH' };
        auth = userinfo(rest.slice(0, at));
        if ('problem' in auth) return auth;
        rest = rest.slice(at + 1);
      }
    }
    const query = rest.indexOf('?');
    const path = query < 0 ? rest : rest.slice(0, query);
    const dbText = query < 0 ? '0' : /^db=(.*)$/.exec(rest.slice(query + 1))?.[1];
    if (dbText === undefined) return { problem: 'after the path, the only query is ?db=N' };
    const db = database(dbText);
    if (db === undefined) return { problem: `the database after "?db=" must be ${DB_RANGE}` };
    if (!socketPath(path)) {
      return { problem: 'the socket path must be absolute, at most 107 bytes, without spaces or control characters' };
    }
    return { path, db, ...auth, display: `unix:${path}?db=${db}` };
  }
  return { problem: 'it must begin with redis://, rediss:// (TLS), redis+sentinel://, rediss+sentinel:// or unix:' };
}

/** readEngine, undefined when malformed. */
export function parseEngine(text: string): EngineEndpoint | undefined {
  const e = readEngine(text);
  return 'problem' in e ? undefined : e;
}

/**
 * An engine value as messages may show it: whatever could be a user name
 * or password replaced by ***. That is everything from the scheme to the
 * last "@" and, where there is no "@", an authority that is not a plain
 * HOST[:PORT] (the rest of a password that a "#" or ";" cut short).
 */
export function maskEngine(text: string): string {
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:(?:\/\/)?/.exec(text)?.[0] ?? '';
  const rest = text.slice(scheme.length);
  const at = rest.lastIndexOf('@');
  if (at >= 0) return `${scheme}***${rest.slice(at)}`;
  if (!scheme.endsWith('//')) return text;
  const end = rest.search(/[/?]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  const node = '(?:[A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]*\\])(?::[0-9]*)?';
  const plain = authority === '' || new RegExp(`^${node}(?:,${node})*$`).test(authority);
  return plain ? text : `${scheme}***`;
}

/**
 * `text` (an engine's or a client library's message) with the endpoint's
 * password replaced by ***: an engine may quote what it was sent (a server
 * without AUTH names the arguments of the command it does not know).
 */
export function withoutSecrets(e: Pick<EngineEndpoint, 'password'>, text: string): string {
  if (e.password === undefined || e.password === '') return text;
  // As it is, and as JSON.stringify writes it (replies are quoted so).
  const forms = [e.password, JSON.stringify(e.password).slice(1, -1)];
  return forms.reduce((out, secret) => out.split(secret).join('***'), text);
}

/** A group name or number, as poprelayd gives its socket (?group=). */
const GROUP = /^(?:[0-9]{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31})$/;

/**
 * ?group=NAME&mode=MODE after a socket's path, either or both, in any
 * order: an octal mode (0660, 0666, 0600) that leaves the owner reading and
 * writing, with no execute or special bits. Undefined when malformed.
 */
function socketAccess(query: string): { group?: string; mode?: number } | undefined {
  const out: { group?: string; mode?: number } = {};
  for (const part of query.split('&')) {
    const [, name, value = ''] = /^(group|mode)=(.*)$/.exec(part) ?? [];
    if (name === 'group' && out.group === undefined && GROUP.test(value)) out.group = value;
    else if (name === 'mode' && out.mode === undefined && /^0?[0-7]{3}$/.test(value)) {
      const mode = parseInt(value, 8);
      if ((mode & 0o600) !== 0o600 || (mode & 0o111) !== 0) return undefined;
      out.mode = mode;
    } else return undefined;
  }
  return out;
}

/** inet:HOST:PORT or unix:/PATH[?group=NAME][&mode=MODE]. Undefined when malformed. */
export function parseListen(text: string): ListenEndpoint | undefined {
  const inet = /^inet:(.+):([0-9]{1,5})$/.exec(text);
  if (inet !== null) {
    const [, host = '', portText] = inet;
    const p = port(portText);
    if (!HOST.test(host) || p === undefined) return undefined;
    return { host: host.startsWith('[') ? host.slice(1, -1) : host, port: p, display: text };
  }
  const unix = /^unix:([^?]+)(?:\?(.*))?$/.exec(text);
  if (unix === null) return undefined;
  const [, path = '', query] = unix;
  const access = query === undefined ? {} : socketAccess(query);
  if (!socketPath(path) || access === undefined) return undefined;
  return { path, display: `unix:${path}`, ...access };
}
