// poprelay.ini: where it is, what each key means, and what is allowed.
// Every key has a default, so a missing default file means "defaults";
// a file the administrator named explicitly must exist.

import { closeSync, fstatSync, openSync, readFileSync, statSync, type Stats } from 'node:fs';
import { dirname, isAbsolute } from 'node:path';
import { parse as parseIni } from 'ini';

import { inNetwork, parseNetwork, type ClientAddress, type Network } from './address.js';
import {
  maskEngine,
  parseEngine,
  parseListen,
  readEngine,
  type EngineEndpoint,
  type ListenEndpoint,
} from './endpoints.js';
import { errnoCode, PoprelayError, quoteUntrusted } from './errors.js';

export const DEFAULT_CONFIG_PATH = '/etc/poprelay/poprelay.ini';
/**
 * Where installs before 0.2 put it. Read when DEFAULT_CONFIG_PATH is absent,
 * so that such an install keeps working; doctor says how to move it (on
 * Debian, /etc/mail is smmta's, and root refuses a file there).
 */
export const LEGACY_CONFIG_PATH = '/etc/mail/poprelay.ini';
/** How to move the legacy file where root alone controls it. */
export const MOVE_LEGACY_CONFIG = `install -d -m 0755 /etc/poprelay && mv ${LEGACY_CONFIG_PATH} ${DEFAULT_CONFIG_PATH} && chown root:poprelay ${DEFAULT_CONFIG_PATH} && chmod 0640 ${DEFAULT_CONFIG_PATH} (then drop --config ${LEGACY_CONFIG_PATH} from Dovecot's executable lines, if given)`;

/** The map and how to write it: dbfile, dbtype, lock_timeout_ms, map_mode and timeout_minutes, in the units the code uses. */
export type DbType = 'hash' | 'btree';

/** user_limit = N/PERIOD: recipients per user per period (src/daemon/user-limit.ts counts them). */
export interface UserLimit {
  max: number;
  periodSeconds: number;
  /** As written in poprelay.ini, for messages: "100/1h". */
  text: string;
}

const UNIT: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** "N/PERIOD" with PERIOD a whole number and s, m, h or d ("100/1h", "20/10m"); undefined when it is not one. */
export function parseUserLimit(v: string): UserLimit | undefined {
  const m = /^([0-9]{1,7})\/([0-9]{1,5})([smhd])$/.exec(v);
  if (m === null) return undefined;
  const max = Number(m[1]);
  const periodSeconds = Number(m[2]) * (UNIT[m[3] ?? 's'] ?? 1);
  if (max < 1 || periodSeconds < 1 || periodSeconds > 31 * 86_400) return undefined;
  return { max, periodSeconds, text: v };
}

export interface MapSettings {
  path: string;
  type: DbType;
  lockTimeoutMs: number;
  /** Mode of a map created by poprelay. */
  mode: number;
  /** How long an entry lets its address relay; a queued login older than this is dropped, not applied. */
  timeoutSeconds: number;
}

export interface Config {
  /** The file the settings came from; null when no file exists and defaults apply. */
  source: string | null;
  map: MapSettings;
  /** A login whose entry is younger than this writes nothing; 0: every login writes. */
  refreshSeconds: number;
  /** How long a recorder with nothing to do waits for more logins before it exits; 0: it exits at once. */
  recorderIdleSeconds: number;
  /** The ignore list, in the order written. */
  ignore: readonly Network[];
  logRecorded: boolean;
  /** Whether the sweep asks Dovecot which addresses have a live session; auto: when the anvil socket exists. */
  liveSessions: LiveSessions;
  /** The socket doveadm who asks. */
  dovecotAnvil: string;
  doveadm: string;
  /** Where the sweep writes its metrics (Prometheus text format); null: nowhere. */
  metricsFile: string | null;
  /** More distinct users than this from one address within the timeout stop its relaying; null: off. */
  sharedAddressUsers: number | null;
  /** Days of per-user login summaries kept in <dbfile>.report (poprelay report); 0: none kept. */
  reportDays: number;
  /** The shared relay set (Valkey/Redis); null: this host's map only. */
  engine: EngineEndpoint | null;
  /** The most the hook spends on the engine, connecting included. */
  engineTimeoutMs: number;
  /** poprelayd's listeners; null: not served. */
  policyListen: ListenEndpoint | null;
  socketmapListen: ListenEndpoint | null;
  readsocketListen: ListenEndpoint | null;
  /** poprelayd keeps dbfile equal to the shared set. */
  mirror: boolean;
  /** poprelayd logs one line per relay decision. */
  auditLog: boolean;
  /** Recipients per user per period in poprelayd's policy answers; null: none. */
  userLimit: UserLimit | null;
  /** What a recipient over user_limit gets: a 4xx deferral, or no relaying. */
  userLimitAction: 'defer' | 'refuse';
}

export type LiveSessions = 'yes' | 'no' | 'auto';

interface KeySpec<T> {
  default: string;
  allowed: string;
  parse(value: string): T | undefined;
  /** Why a value was refused, where "expected ..." alone would not show which part. */
  explain?(value: string): string;
  /** The value as an error may show it, where it can hold a secret. */
  show?(value: string): string;
}

function wholeNumber(min: number, max: number) {
  return (v: string): number | undefined => {
    if (!/^[0-9]{1,9}$/.test(v)) return undefined;
    const n = Number(v);
    return n >= min && n <= max ? n : undefined;
  };
}

function parseMode(v: string): number | undefined {
  if (!/^0?[0-7]{3}$/.test(v)) return undefined;
  const mode = parseInt(v, 8);
  // sendmail refuses group- or world-writable maps ("unsafe map file"), and
  // the writer itself must be able to read and write it.
  if ((mode & 0o022) !== 0 || (mode & 0o600) !== 0o600) return undefined;
  return mode;
}

/** A PEM file for TLS to the engine: "none", or an absolute path (messages name the file, never show what it holds). */
function tlsFileKey(what: string) {
  return {
    default: 'none',
    allowed: `"none", or the absolute path of ${what}`,
    parse: (v: string) => (v === 'none' ? v : absolutePath()(v)),
  };
}

/** An absolute path ending in `suffix`, with no NUL or newline (it goes into messages and argv). */
function absolutePath(suffix = '') {
  return (v: string): string | undefined => (isAbsolute(v) && v.endsWith(suffix) && !/[\0\n]/.test(v) ? v : undefined);
}

function parseBool(v: string): boolean | undefined {
  if (/^(yes|true|on|1)$/i.test(v)) return true;
  if (/^(no|false|off|0)$/i.test(v)) return false;
  return undefined;
}

function listenKey(what: string): KeySpec<ListenEndpoint | 'none'> {
  return {
    default: 'none',
    allowed: `"none", inet:HOST:PORT or unix:/PATH[?group=NAME][&mode=MODE]: where poprelayd answers ${what}`,
    parse: (v) => (v === 'none' ? v : parseListen(v)),
  };
}

function ignoreItems(v: string): Array<[string, Network | string]> {
  return v
    .split(/[\s,]+/)
    .filter((s) => s !== '')
    .map((item) => [item, parseNetwork(item)]);
}

function parseIgnore(v: string): Network[] | undefined {
  const nets = ignoreItems(v).map(([, n]) => n);
  return nets.every((n): n is Network => typeof n !== 'string') ? nets : undefined;
}

function explainIgnore(v: string): string {
  const bad = ignoreItems(v).find(([, n]) => typeof n === 'string');
  return bad === undefined ? '' : `${quoteUntrusted(bad[0])}: ${String(bad[1])}`;
}

const KEYS = {
  dbfile: {
    default: '/var/lib/poprelay/popip.db',
    allowed: 'an absolute path ending in ".db" (the MTAs name the map without .db and add it)',
    parse: (v: string) => (v.length > 4 ? absolutePath('.db')(v) : undefined),
  },
  dbtype: {
    default: 'hash',
    allowed: '"hash" or "btree"',
    parse: (v: string): DbType | undefined => (v === 'hash' || v === 'btree' ? v : undefined),
  },
  timeout_minutes: {
    default: '15',
    allowed: 'a whole number of minutes from 1 to 10080 (one week)',
    parse: wholeNumber(1, 10080),
  },
  lock_timeout_ms: {
    default: '2000',
    allowed: 'a whole number of milliseconds from 10 to 30000',
    parse: wholeNumber(10, 30000),
  },
  refresh_seconds: {
    default: '60',
    allowed: 'a whole number of seconds from 0 to 3600, less than half of timeout_minutes',
    parse: wholeNumber(0, 3600),
  },
  recorder_idle_seconds: {
    default: '10',
    allowed: 'a whole number of seconds from 0 to 30',
    parse: wholeNumber(0, 30),
  },
  ignore: {
    default: '127.0.0.0/8, ::1/128',
    allowed: 'a list of addresses or CIDR networks (host bits clear), separated by commas or spaces; empty for none',
    parse: parseIgnore,
    explain: explainIgnore,
  },
  map_mode: {
    default: '0644',
    allowed:
      'an octal mode such as 0644 or 0640: read-write for the owner, never group- or world-writable (sendmail refuses such maps)',
    parse: parseMode,
  },
  log_recorded: {
    default: 'yes',
    allowed: '"yes" or "no"',
    parse: parseBool,
  },
  live_sessions: {
    default: 'auto',
    allowed: '"yes", "no" or "auto" (yes when dovecot_anvil exists)',
    parse: (v: string): LiveSessions | undefined => {
      if (/^auto$/i.test(v)) return 'auto';
      const b = parseBool(v);
      return b === undefined ? undefined : b ? 'yes' : 'no';
    },
  },
  dovecot_anvil: {
    default: '/run/dovecot/anvil',
    allowed: "the absolute path of Dovecot's anvil socket (base_dir/anvil)",
    parse: absolutePath(),
  },
  doveadm: {
    default: '/usr/bin/doveadm',
    allowed: 'the absolute path of doveadm (of the same Dovecot version as the anvil it asks)',
    parse: absolutePath(),
  },
  metrics_file: {
    default: 'none',
    allowed: '"none", or an absolute path ending in ".prom"',
    parse: (v: string) => (v === 'none' ? v : absolutePath('.prom')(v)),
  },
  shared_address_users: {
    default: 'off',
    allowed: '"off", or a whole number of users from 1 to 100000',
    parse: (v: string): number | 'off' | undefined => (/^off$/i.test(v) ? 'off' : wholeNumber(1, 100000)(v)),
  },
  report_days: {
    default: '90',
    allowed: 'a whole number of days from 0 to 3660',
    parse: wholeNumber(0, 3660),
  },
  engine: {
    default: 'none',
    allowed:
      '"none", redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], or unix:/PATH (unix://[[USER]:PASSWORD@]/PATH[?db=N]), ' +
      'with "@", "/", "%", "#", ";" and spaces in USER and PASSWORD percent-escaped (%40, %2F, %25, %23, %3B, %20)',
    parse: (v: string): EngineEndpoint | 'none' | undefined => (v === 'none' ? v : parseEngine(v)),
    explain: (v: string): string => {
      const e = readEngine(v);
      return 'problem' in e ? e.problem : '';
    },
    // The value may hold the password: errors never show its userinfo.
    show: maskEngine,
  },
  engine_timeout_ms: {
    default: '150',
    allowed: 'a whole number of milliseconds from 10 to 10000',
    parse: wholeNumber(10, 10000),
  },
  engine_ca_file: tlsFileKey("the CA certificate(s) that signed the engine's (PEM)"),
  engine_cert_file: tlsFileKey("this host's client certificate for the engine (PEM)"),
  engine_key_file: tlsFileKey('the key of engine_cert_file (PEM)'),
  policy_listen: listenKey('Postfix policy delegation'),
  socketmap_listen: listenKey('the socketmap protocol (sendmail, Postfix)'),
  readsocket_listen: listenKey("Exim's readsocket"),
  mirror: {
    default: 'no',
    allowed: '"yes" or "no"',
    parse: parseBool,
  },
  audit_log: {
    default: 'yes',
    allowed: '"yes" or "no"',
    parse: parseBool,
  },
  user_limit: {
    default: 'none',
    allowed:
      '"none", or N/PERIOD: N recipients (1 to 9999999) per PERIOD, a whole number with s, m, h or d (at most 31d), such as 200/1h',
    parse: (v: string): UserLimit | 'none' | undefined => (v === 'none' ? v : parseUserLimit(v)),
  },
  user_limit_action: {
    default: 'defer',
    allowed: '"defer" (a 4xx for that recipient) or "refuse" (no relaying: the next restriction decides)',
    parse: (v: string): 'defer' | 'refuse' | undefined => (v === 'defer' || v === 'refuse' ? v : undefined),
  },
} satisfies Record<string, KeySpec<unknown>>;

type KeyName = keyof typeof KEYS;

/** Every key poprelay.ini may hold, in the order above. */
export const CONFIG_KEYS: readonly string[] = Object.keys(KEYS);
type Parsed = { [K in KeyName]: NonNullable<ReturnType<(typeof KEYS)[K]['parse']>> };

function isKeyName(k: string): k is KeyName {
  return Object.hasOwn(KEYS, k);
}

function configError(source: string, message: string): PoprelayError {
  return new PoprelayError('ERR_CONFIG', `config ${source}: ${message}`);
}

/** Whether the ignore list covers a client address. */
export function isIgnored(cfg: Pick<Config, 'ignore'>, addr: ClientAddress): boolean {
  return cfg.ignore.some((n) => inNetwork(addr, n));
}

function unknownName(where: string, what: string): PoprelayError {
  return configError(where, `unknown ${what}; allowed keys (no sections): ${Object.keys(KEYS).join(', ')}`);
}

/**
 * What the ini package accepts silently: a key given twice (the last one
 * wins) and names it drops (__proto__, as a key or a section). Read off
 * the lines themselves, so that no line of the file goes unexplained.
 */
function checkNames(text: string, where: string): void {
  const seen = new Set<string>();
  for (const line of text.split(/\r?\n/).map((l) => l.trim())) {
    if (line === '' || line.startsWith(';') || line.startsWith('#')) continue;
    const section = /^\[(.*)\]$/.exec(line);
    if (section !== null) throw unknownName(where, `section [${quoteUntrusted(section[1] ?? '').slice(1, -1)}]`);
    const key = (line.split('=')[0] ?? '').trim();
    if (!isKeyName(key)) throw unknownName(where, `key ${quoteUntrusted(key)}`);
    if (seen.has(key)) throw configError(where, `key "${key}" is given twice; give it once`);
    seen.add(key);
  }
}

/**
 * A "#" or ";" starts a comment in poprelay.ini, wherever it stands: an
 * unescaped one in the engine's password cuts the value short, and what is
 * left may even parse, as a host and port that messages then show. So an
 * engine line whose value a comment cuts is refused when the cut is in the
 * middle of a word or leaves an "@" behind (a comment after a space that
 * holds no "@" is a comment). The line itself is never shown.
 */
function checkEngineLine(text: string, where: string): void {
  const line = /^[ \t]*engine[ \t]*=(.*)$/m.exec(text)?.[1]?.trim() ?? '';
  if (/^(["']).*\1$/.test(line)) return; // quoted: the ini parser keeps all of it
  const cut = /^((?:[^\\;#]|\\.)*)([;#].*)$/.exec(line);
  if (cut === null) return;
  const [, kept = '', comment = ''] = cut;
  const afterSpace = kept === '' || /\s$/.test(kept);
  if (!afterSpace || comment.includes('@')) {
    throw configError(
      where,
      `key "engine": a "${comment[0] ?? '#'}" cuts its value short (poprelay.ini takes "#" and ";" as the start of a comment); ` +
        'write them in a user name or password as %23 and %3B, and put a comment on a line of its own',
    );
  }
}

/** Parses and validates the text of a poprelay.ini. `source` names it in errors. */
export function parseConfig(text: string, source: string | null): Config {
  const where = source ?? '(defaults)';
  let raw: Record<string, unknown>;
  try {
    raw = parseIni(text) as Record<string, unknown>;
  } catch (e) {
    throw configError(where, `cannot parse: ${(e as Error).message}`);
  }
  checkNames(text, where);
  checkEngineLine(text, where);
  const values = new Map<KeyName, string>();
  for (const [k, v] of Object.entries(raw)) {
    if (!isKeyName(k))
      throw unknownName(where, typeof v === 'object' && v !== null ? `section [${k}]` : `key ${quoteUntrusted(k)}`);
    if (typeof v === 'object') throw configError(where, `key "${k}" is given as a list; give it once`);
    values.set(k, String(v).trim());
  }
  const parsed: Partial<Record<KeyName, unknown>> = {};
  for (const name of Object.keys(KEYS) as KeyName[]) {
    const spec: KeySpec<unknown> = KEYS[name];
    const given = values.get(name);
    const value = spec.parse(given ?? spec.default);
    if (value === undefined) {
      const detail = spec.explain ? ` (${spec.explain(given ?? '')})` : '';
      const shown = spec.show ? spec.show(given ?? '') : (given ?? '');
      throw configError(
        where,
        `key "${name}": value ${quoteUntrusted(shown)} is not allowed${detail}; expected ${spec.allowed}`,
      );
    }
    parsed[name] = value;
  }
  const p = parsed as Parsed;
  // A login skipped as fresh must leave its entry time to be refreshed
  // again before it expires.
  if (p.refresh_seconds * 2 > p.timeout_minutes * 60) {
    throw configError(
      where,
      `key "refresh_seconds": ${p.refresh_seconds} is more than half of timeout_minutes = ${p.timeout_minutes} (${p.timeout_minutes * 60} s); ` +
        `a user who keeps logging in could then lose the right to relay`,
    );
  }
  const served = (['policy_listen', 'socketmap_listen', 'readsocket_listen', 'mirror'] as const).filter(
    (k) => p[k] !== 'none' && p[k] !== false,
  );
  if (p.engine === 'none' && served.length > 0) {
    throw configError(where, `key "${served[0]}" needs engine: poprelayd answers from the shared relay set`);
  }
  const engine = p.engine === 'none' ? null : withTlsFiles(where, p.engine, p);
  return {
    source,
    map: {
      path: p.dbfile,
      type: p.dbtype,
      lockTimeoutMs: p.lock_timeout_ms,
      mode: p.map_mode,
      timeoutSeconds: p.timeout_minutes * 60,
    },
    refreshSeconds: p.refresh_seconds,
    recorderIdleSeconds: p.recorder_idle_seconds,
    ignore: p.ignore,
    logRecorded: p.log_recorded,
    liveSessions: p.live_sessions,
    dovecotAnvil: p.dovecot_anvil,
    doveadm: p.doveadm,
    metricsFile: p.metrics_file === 'none' ? null : p.metrics_file,
    sharedAddressUsers: p.shared_address_users === 'off' ? null : p.shared_address_users,
    reportDays: p.report_days,
    engine,
    engineTimeoutMs: p.engine_timeout_ms,
    policyListen: p.policy_listen === 'none' ? null : p.policy_listen,
    socketmapListen: p.socketmap_listen === 'none' ? null : p.socketmap_listen,
    readsocketListen: p.readsocket_listen === 'none' ? null : p.readsocket_listen,
    mirror: p.mirror,
    auditLog: p.audit_log,
    userLimit: p.user_limit === 'none' ? null : p.user_limit,
    userLimitAction: p.user_limit_action,
  };
}

/**
 * The engine with the TLS files poprelay.ini names: they apply to rediss://
 * and rediss+sentinel:// alone, and a client certificate comes with its key.
 */
function withTlsFiles(
  where: string,
  engine: EngineEndpoint,
  p: Pick<Parsed, 'engine_ca_file' | 'engine_cert_file' | 'engine_key_file'>,
): EngineEndpoint {
  const given = (['engine_ca_file', 'engine_cert_file', 'engine_key_file'] as const).filter((k) => p[k] !== 'none');
  if (given.length === 0) return engine;
  if (engine.tls === undefined) {
    throw configError(
      where,
      `key "${given[0]}" is for TLS to the engine: write engine as rediss:// (or rediss+sentinel://), or remove it`,
    );
  }
  if ((p.engine_cert_file === 'none') !== (p.engine_key_file === 'none')) {
    throw configError(where, 'keys "engine_cert_file" and "engine_key_file" go together: set both, or neither');
  }
  const file = (v: string): string | undefined => (v === 'none' ? undefined : v);
  const tls = { caFile: file(p.engine_ca_file), certFile: file(p.engine_cert_file), keyFile: file(p.engine_key_file) };
  return { ...engine, tls: Object.fromEntries(Object.entries(tls).filter(([, v]) => v !== undefined)) };
}

/**
 * The config in force: `explicit` (--config), else $POPRELAY_CONFIG, else
 * /etc/poprelay/poprelay.ini, else the legacy /etc/mail/poprelay.ini. Only
 * the default files may be absent (then the defaults apply).
 */
export function loadConfig(explicit?: string, env: NodeJS.ProcessEnv = process.env): Config {
  const named = explicit ?? (env.POPRELAY_CONFIG || undefined);
  if (named !== undefined) return readConfig(named, true) ?? parseConfig('', null);
  return readConfig(DEFAULT_CONFIG_PATH, false) ?? readConfig(LEGACY_CONFIG_PATH, false) ?? parseConfig('', null);
}

/** The config at `path`; null when it does not exist and was not `named`. */
function readConfig(path: string, named: boolean): Config | null {
  let text: string;
  try {
    const fd = openSync(path, 'r');
    try {
      if (process.geteuid?.() === 0) checkRootMayObey(path, fstatSync(fd));
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    if (e instanceof PoprelayError) throw e;
    const code = errnoCode(e);
    if (code === 'ENOENT' && !named) return null;
    const how =
      code === 'ENOENT'
        ? 'does not exist'
        : code === 'EACCES'
          ? 'is not readable by this user'
          : `cannot be read (${code ?? String(e)})`;
    throw configError(
      path,
      `${how}${named && code === 'ENOENT' ? '; it was named by --config or POPRELAY_CONFIG' : ''}`,
    );
  }
  return parseConfig(text, path);
}

/**
 * The config names the map that root's commands write, so root obeys only
 * a file that no one but root can change, in a directory likewise (as sshd
 * treats its keys): otherwise the hook's user could point root elsewhere.
 */
function checkRootMayObey(path: string, st: Stats): void {
  const dir = dirname(path);
  const dirSt = statSync(dir);
  const fix =
    path === LEGACY_CONFIG_PATH
      ? `move it where root alone controls it: ${MOVE_LEGACY_CONFIG}`
      : `chown root:poprelay ${path} && chmod 0640 ${path} (the group: the hook's user's; and the directory ${dir}: owned by root, chmod go-w)`;
  const problem =
    st.uid !== 0
      ? `it belongs to uid ${st.uid}, not root`
      : (st.mode & 0o022) !== 0
        ? `it is writable by ${(st.mode & 0o002) !== 0 ? 'everyone' : 'its group'}`
        : dirSt.uid !== 0 || (dirSt.mode & 0o022) !== 0
          ? `its directory ${dir} can be changed by another user than root`
          : null;
  if (problem !== null) {
    throw configError(
      path,
      `${problem}; run as root, poprelay obeys only a config that only root can change. Fix: ${fix}`,
    );
  }
}
