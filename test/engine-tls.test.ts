// engine = rediss://: TLS to a real engine (and to real Sentinels) with a
// CA the test makes, for every client: the hook, the sweep, poprelay's
// commands and poprelayd. The certificate is checked against
// engine_ca_file and the name the engine is reached by; an engine that
// asks for client certificates gets engine_cert_file; a stand-in engine
// that speaks no TLS hears no password and no address.

import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { askDaemon } from '../src/daemon/client.js';
import { engineMissedFile } from '../src/engine/record.js';
import { parseListen } from '../src/endpoints.js';
import { opensslExchange, workerExchange } from '../src/engine/tls-exchange.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { NOT_LIVE } from './support/ini.js';
import { configured } from './support/maps.js';
import { BIN } from './support/paths.js';
import { startPoprelayd } from './support/poprelayd.js';
import { run } from './support/processes.js';
import { ask, startSentinelSet, type SentinelSet } from './support/sentinel.js';
import { makeTestCa, type TestCa } from './support/tls.js';
import { safeDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

const PASSWORD = 'Tls-Secret-77';

let ca: TestCa;
let engine: Engine;
beforeAll(async () => {
  ca = makeTestCa(safeDir());
  // Reached as 127.0.0.1 (in its certificate) and as 127.0.0.2 (not in it).
  engine = await startEngine(['127.0.0.2'], PASSWORD, { tls: ca });
}, 120_000);
afterAll(async () => {
  await engine?.stop();
});

const url = (host = '127.0.0.1', port = engine.port): string => `rediss://:${PASSWORD}@${host}:${port}/0`;
const tlsLines = (caFile: string, client = false): string =>
  `engine_ca_file = ${caFile}\n` +
  (client ? `engine_cert_file = ${ca.clientCert}\nengine_key_file = ${ca.clientKey}\n` : '');

async function held(port: number, ip: string): Promise<string | null> {
  const answer = await ask(port, ['GET', `poprelay:${ip}`], ca, PASSWORD);
  return /^\+OK\r\n\$\d+\r\n([^\r]+)\r\n/.exec(answer)?.[1] ?? null;
}

const login = (ini: string, ip: string) => run(BIN.login, ['--config', ini], { env: { IP: ip } });

describe('engine = rediss://', () => {
  it('the hook records over TLS, checking the engine against engine_ca_file', async () => {
    const { ini } = configured(`engine = ${url()}\n${tlsLines(ca.ca)}engine_timeout_ms = 2000\n${NOT_LIVE}`);
    const r = await login(ini, '198.51.100.60');
    expect(r.stderr).toContain('recorded 198.51.100.60 in the engine');
    expect(r.code).toBe(0);
    expect(await held(engine.port, '198.51.100.60')).toMatch(/^\d+$/);
  });

  it('refuses an engine whose certificate another CA signed, or that does not name the host; the login goes on', async () => {
    const other = configured(`engine = ${url()}\n${tlsLines(ca.otherCa)}engine_timeout_ms = 2000\n${NOT_LIVE}`);
    const r = await login(other.ini, '198.51.100.61');
    expect(r.stderr).toContain('recorded 198.51.100.61 (user=(none))');
    expect(r.stderr).toMatch(/not recorded 198\.51\.100\.61 in the engine .*TLS: .*engine_ca_file = /);
    expect(r.stderr).not.toContain(PASSWORD);
    expect(readFileSync(engineMissedFile(other.map), 'utf8')).toMatch(/^198\.51\.100\.61 \d+\n$/);
    const wrongName = configured(
      `engine = ${url('127.0.0.2')}\n${tlsLines(ca.ca)}engine_timeout_ms = 2000\n${NOT_LIVE}`,
    );
    const w = await login(wrongName.ini, '198.51.100.62');
    expect(w.stderr).toMatch(
      /not recorded 198\.51\.100\.62 in the engine .*127\.0\.0\.2.*TLS: .*(?:mismatch|altnames)/,
    );
    expect(await held(engine.port, '198.51.100.61')).toBeNull();
    expect(await held(engine.port, '198.51.100.62')).toBeNull();
  });

  it('the sweep, poprelay and poprelayd use TLS too', async () => {
    const hostA = configured(`engine = ${url()}\n${tlsLines(ca.ca)}${NOT_LIVE}`);
    expect((await run(BIN.admin, ['add', '--config', hostA.ini, '198.51.100.63'])).code).toBe(0);
    expect(await held(engine.port, '198.51.100.63')).toMatch(/^\d+$/);
    // The sweep sends the engine this host's map (a run_id it has not seeded): what the engine lost comes back.
    await login(hostA.ini, '198.51.100.69');
    await ask(engine.port, ['DEL', 'poprelay:198.51.100.69'], ca, PASSWORD);
    expect(await held(engine.port, '198.51.100.69')).toBeNull();
    const sweep = await run(BIN.sweep, ['--config', hostA.ini]);
    expect(sweep.stderr).toBe('');
    expect(await held(engine.port, '198.51.100.69')).toMatch(/^\d+$/);
    const policy = `inet:127.0.0.1:${await freePort()}`;
    const hostB = configured(`engine = ${url()}\n${tlsLines(ca.ca)}policy_listen = ${policy}\n`);
    const daemon = await startPoprelayd(hostB.ini, 1);
    try {
      // Once connected (poprelayd answers no until then: it listens before the engine answers).
      await eventually(() => askDaemon('policy', parseListen(policy)!, '198.51.100.63', 5000), 30_000, 'a yes');
      expect(await askDaemon('policy', parseListen(policy)!, '198.51.100.64', 5000)).toBe(false);
    } finally {
      await daemon.stop();
    }
    expect(daemon.log()).not.toContain(PASSWORD);
  });

  it('with an engine that asks for client certificates, engine_cert_file and engine_key_file', async () => {
    const strict = await startEngine([], PASSWORD, { tls: ca, clientCertificates: true });
    try {
      const without = configured(
        `engine = ${url('127.0.0.1', strict.port)}\n${tlsLines(ca.ca)}engine_timeout_ms = 2000\n${NOT_LIVE}`,
      );
      expect((await login(without.ini, '198.51.100.65')).stderr).toContain('not recorded 198.51.100.65 in the engine');
      const withCert = configured(
        `engine = ${url('127.0.0.1', strict.port)}\n${tlsLines(ca.ca, true)}engine_timeout_ms = 2000\n${NOT_LIVE}`,
      );
      const r = await login(withCert.ini, '198.51.100.65');
      expect(r.stderr).toContain('recorded 198.51.100.65 in the engine');
      expect(r.stderr).not.toContain('BEGIN');
      expect(await held(strict.port, '198.51.100.65')).toMatch(/^\d+$/);
    } finally {
      await strict.stop();
    }
  });

  it('a stand-in engine that speaks no TLS hears neither the password nor the address', async () => {
    let heard = Buffer.alloc(0);
    const standIn: Server = createServer((c) => {
      c.on('data', (d: Buffer) => (heard = Buffer.concat([heard, d])));
      c.on('error', () => undefined);
      setTimeout(() => c.end('+OK\r\n'), 200);
    });
    await new Promise<void>((r) => standIn.listen(0, '127.0.0.1', r));
    const port = (standIn.address() as { port: number }).port;
    try {
      const { ini } = configured(
        `engine = ${url('127.0.0.1', port)}\n${tlsLines(ca.ca)}engine_timeout_ms = 2000\n${NOT_LIVE}`,
      );
      const r = await login(ini, '198.51.100.66');
      expect(r.stderr).toContain('not recorded 198.51.100.66 in the engine');
      expect(heard.length).toBeGreaterThan(0); // the TLS ClientHello
      expect(heard.includes(PASSWORD)).toBe(false);
      expect(heard.includes('198.51.100.66')).toBe(false);
    } finally {
      standIn.close();
    }
  });

  it('TLS files with an engine that is not rediss:// are a config error naming the key', async () => {
    const { ini } = configured(`engine = redis://127.0.0.1:${engine.port}/0\nengine_ca_file = ${ca.ca}\n`);
    const r = await run(BIN.admin, ['list', '--config', ini]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('key "engine_ca_file" is for TLS to the engine: write engine as rediss://');
  });
});

describe('both ways of a blocking TLS exchange (openssl s_client where installed, else node:tls in a worker)', () => {
  const request = Buffer.from(
    `*2\r\n$4\r\nAUTH\r\n$${PASSWORD.length}\r\n${PASSWORD}\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n`,
  );
  it.each([
    ['openssl', opensslExchange],
    ['worker', workerExchange],
  ])('%s: answers with the right CA and name; refuses another CA, another name, a closed port', (_, exchange) => {
    const at = { host: '127.0.0.1', port: engine.port };
    expect(exchange(at, { caFile: ca.ca }, request, 5000).toString()).toBe('+OK\r\n+PONG\r\n+OK\r\n');
    const failure = (f: () => unknown): { code: string; phase: string; message: string } => {
      try {
        f();
      } catch (e) {
        return e as { code: string; phase: string; message: string };
      }
      throw new Error('no failure');
    };
    expect(failure(() => exchange(at, { caFile: ca.otherCa }, request, 5000)).message).toMatch(/certificate/i);
    expect(failure(() => exchange({ ...at, host: '127.0.0.2' }, { caFile: ca.ca }, request, 5000)).message).toMatch(
      /IP|altnames|mismatch/i,
    );
    expect(failure(() => exchange({ ...at, port: 1 }, { caFile: ca.ca }, request, 5000)).code).toBe('ECONNREFUSED');
  });
});

describe('engine = rediss+sentinel://', () => {
  let set: SentinelSet;
  beforeAll(async () => {
    // Sentinels that ask for a password too (the engine's).
    set = await startSentinelSet({ tls: ca, password: PASSWORD, sentinelsAskPassword: true });
  }, 120_000);
  afterAll(async () => {
    await set?.stop();
  });

  it('the hook and poprelayd find the primary through Sentinels over TLS, and follow a failover', async () => {
    const hostA = configured(`engine = ${set.url}\n${tlsLines(ca.ca)}engine_timeout_ms = 2000\n${NOT_LIVE}`);
    expect((await login(hostA.ini, '198.51.100.67')).stderr).toContain('recorded 198.51.100.67 in the engine');
    const policy = `inet:127.0.0.1:${await freePort()}`;
    const hostB = configured(`engine = ${set.url}\n${tlsLines(ca.ca)}policy_listen = ${policy}\n`);
    const daemon = await startPoprelayd(hostB.ini, 1);
    try {
      const allowed = (ip: string) => askDaemon('policy', parseListen(policy)!, ip, 5000);
      expect(await eventually(() => allowed('198.51.100.67'), 30_000, 'poprelayd to allow 198.51.100.67')).toBe(true);
      const old = await set.primary();
      await old.kill();
      const promoted = await set.promotedFrom(old.port);
      await eventually(
        async () => (await login(hostA.ini, '198.51.100.68')).stderr.includes('recorded 198.51.100.68 in the engine'),
        60_000,
        'a login recorded on the new primary',
        500,
      );
      expect(await held(promoted, '198.51.100.68')).toMatch(/^\d+$/);
      expect(await eventually(() => allowed('198.51.100.68'), 60_000, 'poprelayd to allow 198.51.100.68')).toBe(true);
    } finally {
      await daemon.stop();
    }
    expect(daemon.log()).not.toContain(PASSWORD);
  });
});
