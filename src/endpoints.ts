// Where poprelay talks to the shared engine and where poprelayd listens:
// the text forms of poprelay.ini (engine, *_listen) and what they mean.

/** A RESP server (Valkey, Redis): over TCP or a UNIX socket, with an optional ACL user and password, and a database. */
export type EngineEndpoint = ({ host: string; port: number } | { path: string }) & {
  db: number;
  username?: string;
  password?: string;
  /** The URL without its password, for messages. */
  display: string;
};

/** Where a listener of poprelayd binds. */
export type ListenEndpoint = { host: string; port: number; display: string } | { path: string; display: string };

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
 * redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix:/PATH, also
 * unix://[[USER]:PASSWORD@]/PATH[?db=N]. Undefined when malformed.
 */
export function parseEngine(text: string): EngineEndpoint | undefined {
  const auth = (user: string, pass: string | undefined): Pick<EngineEndpoint, 'username' | 'password'> => ({
    ...(user !== '' ? { username: decodeURIComponent(user) } : {}),
    ...(pass !== undefined ? { password: decodeURIComponent(pass) } : {}),
  });
  const tcp =
    /^redis:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?(\[[0-9A-Fa-f:.]+\]|[^:/@[\]]+)(?::([^/]*))?(?:\/([0-9]{1,2})?)?$/.exec(
      text,
    );
  if (tcp !== null) {
    const [, user = '', pass, host = '', portText, db = '0'] = tcp;
    const p = port(portText, 6379);
    if (!HOST.test(host) || p === undefined) return undefined;
    const bare = host.startsWith('[') ? host.slice(1, -1) : host;
    return { host: bare, port: p, db: Number(db), ...auth(user, pass), display: `redis://${host}:${p}/${db}` };
  }
  const unix = /^unix:(?:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?)?(\/[^?]*)(?:\?db=([0-9]{1,2}))?$/.exec(text);
  if (unix !== null) {
    const [, user = '', pass, path = '', db = '0'] = unix;
    if (!socketPath(path)) return undefined;
    return { path, db: Number(db), ...auth(user, pass), display: `unix:${path}?db=${db}` };
  }
  return undefined;
}

/** inet:HOST:PORT or unix:/PATH. Undefined when malformed. */
export function parseListen(text: string): ListenEndpoint | undefined {
  const inet = /^inet:(.+):([0-9]{1,5})$/.exec(text);
  if (inet !== null) {
    const [, host = '', portText] = inet;
    const p = port(portText);
    if (!HOST.test(host) || p === undefined) return undefined;
    return { host: host.startsWith('[') ? host.slice(1, -1) : host, port: p, display: text };
  }
  const unix = /^unix:(.+)$/.exec(text);
  if (unix !== null && socketPath(unix[1] ?? '')) return { path: unix[1] ?? '', display: text };
  return undefined;
}
