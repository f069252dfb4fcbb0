// A private Valkey/Redis engine on loopback for tests, the benchmark and
// npm run demo:cluster: Debian's redis-tools ships the server as
// redis-check-rdb, which serves when run under the name redis-server (no
// system service, no port 6379). No persistence: a restart starts empty,
// as after losing the engine's data.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { freePort, terminate } from './dovecot.js';
import { untilServing } from './wait.js';

const SERVER = '/usr/bin/redis-check-rdb';

/**
 * Whether the server answers PING (after AUTH): with node:net rather than
 * src/resp.ts, whose exchange is the addon's, so that npm run demo:cluster
 * can bundle this file.
 */
function ping(port: number, password: string | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    let got = '';
    const done = (err?: Error): void => {
      s.destroy();
      if (err === undefined) resolve();
      else reject(err);
    };
    s.setTimeout(1000, () => done(new Error('no answer')));
    s.on('error', done);
    s.on('connect', () => s.write(`${password === undefined ? '' : `AUTH ${password}\r\n`}PING\r\n`));
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
function simpleCommands(port: number, password: string | undefined, commands: string[][]): Promise<void> {
  const all = [...(password === undefined ? [] : [['AUTH', password]]), ...commands, ['QUIT']];
  const bulk = (w: string): string => `$${Buffer.byteLength(w)}\r\n${w}\r\n`;
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    let got = '';
    s.setTimeout(10_000, () => s.destroy(new Error(`no answer to ${commands.length} command(s)`)));
    s.on('error', reject);
    s.on('connect', () => s.write(all.map((c) => `*${c.length}\r\n${c.map(bulk).join('')}`).join('')));
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

/**
 * Listens on 127.0.0.1, and on `alsoOn` (an address another network
 * namespace reaches) too; beyond loopback Redis wants a `password`.
 */
export async function startEngine(alsoOn: string[] = [], password?: string): Promise<Engine> {
  if (!existsSync(SERVER)) throw new Error(`${SERVER} is missing: run scripts/install-deps.sh --test as root`);
  const dir = mkdtempSync(join(tmpdir(), 'poprelay-engine-'));
  const bin = join(dir, 'redis-server');
  symlinkSync(SERVER, bin);
  const port = await freePort();
  const auth = password === undefined ? [] : ['--requirepass', password];
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
        );
  const start = async (): Promise<void> => {
    output = '';
    proc = spawn(
      bin,
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        ...alsoOn,
        '--save',
        '',
        '--appendonly',
        'no',
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
      'redis-server',
      proc,
      () => ping(port, password),
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
    url: `redis://${password === undefined ? '' : `:${password}@`}127.0.0.1:${port}/0`,
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
