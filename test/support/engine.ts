// A private Valkey/Redis engine on loopback for tests, the benchmark and
// npm run demo:cluster: Debian's redis-tools ships the server as
// redis-check-rdb, which serves when run under the name redis-server (no
// system service, no port 6379), and as Sentinel under the name
// redis-sentinel. Valkey is Debian 13's (the tree install-deps makes), run
// with that tree's loader and libraries: POPRELAY_TEST_ENGINE=valkey makes
// it every test's engine. No persistence: a restart starts empty, as after
// losing the engine's data.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';

import { TRIXIE } from './dovecot.js';
import { freePort } from './ports.js';
import { terminate } from './terminate.js';
import { untilServing } from './wait.js';

const SERVER = '/usr/bin/redis-check-rdb';
const VALKEY = join(TRIXIE, 'usr/bin/valkey-check-rdb');

export type EngineKind = 'redis' | 'valkey';

/** The engine the tests run: Debian 12's Redis, or Debian 13's Valkey with POPRELAY_TEST_ENGINE=valkey. */
export const DEFAULT_KIND: EngineKind = process.env.POPRELAY_TEST_ENGINE === 'valkey' ? 'valkey' : 'redis';

/** Whether Debian 13's Valkey is in its tree (scripts/install-deps.sh --test adds it). */
export const valkeyPresent = (): boolean => existsSync(VALKEY);

/**
 * The command that runs the server (`role` server or sentinel) of `kind`,
 * from `dir`: a symlink of the right name for Debian 12's, the Debian 13
 * tree's own loader for Valkey.
 */
export function serverCommand(kind: EngineKind, role: 'server' | 'sentinel', dir: string): [string, string[]] {
  if (kind === 'valkey') {
    if (!valkeyPresent()) throw new Error(`${VALKEY} is missing: run scripts/install-deps.sh --test as root`);
    const libs = ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu'].map((d) => join(TRIXIE, d)).join(':');
    return [join(TRIXIE, 'lib64/ld-linux-x86-64.so.2'), ['--library-path', libs, '--argv0', `valkey-${role}`, VALKEY]];
  }
  if (!existsSync(SERVER)) throw new Error(`${SERVER} is missing: run scripts/install-deps.sh --test as root`);
  const bin = join(dir, `redis-${role}`);
  if (!existsSync(bin)) symlinkSync(SERVER, bin);
  return [bin, []];
}

/** The files of a TLS engine: its certificate and key, and the CA that clients check it with. */
export interface EngineTlsFiles {
  ca: string;
  cert: string;
  key: string;
}

/** A connection to a local engine or Sentinel, over TLS when `tls` is given. */
function connect(port: number, tls?: EngineTlsFiles): Socket {
  if (tls === undefined) return netConnect({ host: '127.0.0.1', port });
  return tlsConnect({
    host: '127.0.0.1',
    port,
    ca: readFileSync(tls.ca),
    cert: readFileSync(tls.cert),
    key: readFileSync(tls.key),
  });
}

/**
 * Whether the server answers PING (after AUTH): with node:net rather than
 * src/engine/resp.ts, whose exchange is the addon's, so that npm run demo:cluster
 * can bundle this file.
 */
export function ping(port: number, password: string | undefined, tls?: EngineTlsFiles): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(port, tls);
    let got = '';
    const done = (err?: Error): void => {
      s.destroy();
      if (err === undefined) resolve();
      else reject(err);
    };
    s.setTimeout(1000, () => done(new Error('no answer')));
    s.on('error', done);
    s.on(tls === undefined ? 'connect' : 'secureConnect', () =>
      s.write(`${password === undefined ? '' : `AUTH ${password}\r\n`}PING\r\n`),
    );
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('+PONG')) done();
      else if (got.includes('-')) done(new Error(got.trim()));
    });
  });
}

/**
 * Sends `commands` whose replies are single lines (+OK, -ERR ...), such as
 * ACL SETUSER, after AUTH; rejects with the first error reply. Each
 * command's words are sent as they are, as RESP bulk strings.
 */
export function simpleCommands(
  port: number,
  password: string | undefined,
  commands: string[][],
  tls?: EngineTlsFiles,
): Promise<void> {
  const all = [...(password === undefined ? [] : [['AUTH', password]]), ...commands, ['QUIT']];
  const bulk = (w: string): string => `$${Buffer.byteLength(w)}\r\n${w}\r\n`;
  return new Promise((resolve, reject) => {
    const s = connect(port, tls);
    let got = '';
    s.setTimeout(10_000, () => s.destroy(new Error(`no answer to ${commands.length} command(s)`)));
    s.on('error', reject);
    s.on(tls === undefined ? 'connect' : 'secureConnect', () =>
      s.write(all.map((c) => `*${c.length}\r\n${c.map(bulk).join('')}`).join('')),
    );
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('close', () => {
      const lines = got.split('\r\n').filter((l) => l !== '');
      const error = lines.find((l) => l.startsWith('-'));
      if (error !== undefined) reject(new Error(`the engine refused: ${error.slice(1)}`));
      else if (lines.length < all.length) reject(new Error(`the engine closed after ${lines.length} replies`));
      else resolve();
    });
  });
}

export interface Engine {
  port: number;
  kind: EngineKind;
  /** Its process id while it runs. */
  pid(): number | undefined;
  /** engine = ... for poprelay.ini. */
  url: string;
  /** Stops it (SIGKILL: as a crash would). */
  kill(): Promise<void>;
  /** Starts it again on the same port, empty. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * Runs ACL SETUSER lines (as an administrator types them: words split at
   * spaces) as the default user, now and after every start(), which begins
   * with no users again.
   */
  acl(lines: string[]): Promise<void>;
}

export interface EngineOptions {
  /** Debian 12's Redis (the default, unless POPRELAY_TEST_ENGINE=valkey) or Debian 13's Valkey. */
  kind?: EngineKind;
  /** TLS alone (no cleartext port), clients' certificates checked when they send one. */
  tls?: EngineTlsFiles;
  /** With tls: every client must show a certificate the CA signed. */
  clientCertificates?: boolean;
  /** A replica of the primary on this port. */
  replicaOf?: number;
}

/**
 * Listens on 127.0.0.1, and on `alsoOn` (an address another network
 * namespace reaches) too; beyond loopback Redis wants a `password`.
 */
export async function startEngine(alsoOn: string[] = [], password?: string, o: EngineOptions = {}): Promise<Engine> {
  const kind = o.kind ?? DEFAULT_KIND;
  const dir = mkdtempSync(join(tmpdir(), 'poprelay-engine-'));
  const [bin, pre] = serverCommand(kind, 'server', dir);
  const port = await freePort();
  const auth = password === undefined ? [] : ['--requirepass', password, '--masterauth', password];
  const tls =
    o.tls === undefined
      ? ['--port', String(port)]
      : [
          '--port',
          '0',
          '--tls-port',
          String(port),
          '--tls-cert-file',
          o.tls.cert,
          '--tls-key-file',
          o.tls.key,
          '--tls-ca-cert-file',
          o.tls.ca,
          '--tls-auth-clients',
          o.clientCertificates === true ? 'yes' : 'optional',
          '--tls-replication',
          'yes',
        ];
  const replica = o.replicaOf === undefined ? [] : ['--replicaof', '127.0.0.1', String(o.replicaOf)];
  let proc: ChildProcess | undefined;
  let output = '';
  const aclLines: string[] = [];
  const applyAcl = (lines: readonly string[]): Promise<void> =>
    lines.length === 0
      ? Promise.resolve()
      : simpleCommands(
          port,
          password,
          lines.map((l) => l.split(' ')),
          o.tls,
        );
  const start = async (): Promise<void> => {
    output = '';
    proc = spawn(
      bin,
      [
        ...pre,
        ...tls,
        ...replica,
        '--bind',
        '127.0.0.1',
        ...alsoOn,
        '--save',
        '',
        '--appendonly',
        'no',
        // A replica's first sync at once, not after the 5 s Redis waits for others to join.
        '--repl-diskless-sync-delay',
        '0',
        '--dir',
        dir,
        ...auth,
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    proc.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    await untilServing(
      `${kind}-server`,
      proc,
      () => ping(port, password, o.tls),
      60_000,
      () => output,
    );
    await applyAcl(aclLines);
  };
  await start();
  const kill = async (): Promise<void> => {
    if (proc === undefined) return;
    const p = proc;
    proc = undefined;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  };
  return {
    port,
    kind,
    pid: () => proc?.pid,
    url: `${o.tls === undefined ? 'redis' : 'rediss'}://${password === undefined ? '' : `:${password}@`}127.0.0.1:${port}/0`,
    kill,
    start,
    stop: async () => {
      if (proc !== undefined) await terminate(proc);
      proc = undefined;
      rmSync(dir, { recursive: true, force: true });
    },
    acl: async (lines) => {
      await applyAcl(lines);
      aclLines.push(...lines);
    },
  };
}
