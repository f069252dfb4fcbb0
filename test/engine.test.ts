// The hook, the sweep and poprelay's commands against a real engine
// (redis-server): what the hook writes and how long it may take, what it
// does when the engine is dead or silent, and the commands' answers.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { respCall } from '../src/engine/call.js';
import { readEntries } from '../src/map/relay-map.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { NOT_LIVE } from './support/ini.js';
import { configured } from './support/maps.js';
import { BIN } from './support/paths.js';
import { run } from './support/processes.js';

let engine: Engine;
const endpoint = () => ({ host: '127.0.0.1', port: engine.port, db: 3, display: 'test' });
const engineGet = async (key: string): Promise<[unknown, unknown]> => {
  const [value, ttl] = respCall(
    endpoint(),
    [
      ['GET', key],
      ['TTL', key],
    ],
    5000,
  );
  return [value, ttl];
};

beforeAll(async () => {
  engine = await startEngine();
});
afterAll(async () => {
  await engine?.stop();
});

/** A config with the map in a fresh directory and the engine's database 3. */
const withEngine = (extra = '') => configured(`engine = redis://127.0.0.1:${engine.port}/3\n${extra}`);

describe('the hook with engine set', () => {
  it('records the login in the map and in the engine, with the engine expiring it after timeout_minutes', async () => {
    const { ini, s } = withEngine('timeout_minutes = 10\n');
    const r = await run(BIN.login, ['--config', ini], { env: { IP: '198.51.100.10' } });
    expect(r.stderr).toBe(
      'poprelay: recorded 198.51.100.10 (user=(none))\npoprelay: recorded 198.51.100.10 in the engine (user=(none))\n',
    );
    expect(r.code).toBe(0);
    const [value, ttl] = await engineGet('poprelay:198.51.100.10');
    expect(Number(value)).toBeGreaterThan(Math.floor(Date.now() / 1000) - 120);
    expect(ttl).toBeGreaterThan(500);
    expect(ttl).toBeLessThanOrEqual(600);
    expect(readEntries(s).map((e) => e.address)).toEqual(['198.51.100.10']);
  });

  it('writes IPv6 in its compressed form, leaves a permanent entry as it is, and skips a fresh one', async () => {
    const { ini } = withEngine();
    respCall(endpoint(), [['SET', 'poprelay:198.51.100.11', 'OK']], 5000);
    const login = (ip: string) => run(BIN.login, ['--config', ini], { env: { IP: ip } });
    expect((await login('2001:DB8:0:0::1')).code).toBe(0);
    expect((await engineGet('poprelay:2001:db8::1'))[0]).toMatch(/^\d+$/);
    expect((await login('198.51.100.11')).stderr).toContain(
      'recorded 198.51.100.11 in the engine (user=(none)): a permanent entry there, left as it is',
    );
    expect(await engineGet('poprelay:198.51.100.11')).toEqual(['OK', -1]);
    expect((await login('2001:db8::1')).stderr).toContain(
      'in the engine (user=(none)): younger than refresh_seconds there',
    );
  });

  it('with the engine silent, gives up after engine_timeout_ms; the login is marked for the sweep to send', async () => {
    // A server that accepts and never answers: an engine hung, not gone.
    let connections = 0;
    const silent: Server = createServer((c) => {
      connections++;
      c.on('error', () => undefined);
    });
    const port = await freePort();
    await new Promise<void>((r) => silent.listen(port, '127.0.0.1', r));
    try {
      const { ini, map, s } = configured(`engine = redis://127.0.0.1:${port}\nengine_timeout_ms = 150\n`);
      const first = await run(BIN.login, ['--config', ini], { env: { IP: '198.51.100.12' } });
      expect(first.stderr).toContain(
        `poprelay: not recorded 198.51.100.12 in the engine (user=(none)): engine redis://127.0.0.1:${port}/0: no answer within engine_timeout_ms = 150 ms`,
      );
      expect(first.code).toBe(1); // by hand: a failure says so; under Dovecot the login has gone on already
      expect(readEntries(s).map((e) => e.address)).toEqual(['198.51.100.12']); // the map has it all the same
      expect(existsSync(`${map}.engine-missed`)).toBe(true); // for the sweep to catch the engine up
      expect(existsSync(`${map}.engine-down`)).toBe(false); // it answered the connection: no pause
      await run(BIN.login, ['--config', ini], { env: { IP: '198.51.100.13' } });
      expect(connections).toBe(2);
    } finally {
      silent.close();
    }
  });

  it('with the engine unreachable (no connection within the time), the next hooks leave it alone for a while', async () => {
    // A listener whose accept queue is full: the kernel drops further SYNs, as a host that drops packets does.
    const holder = spawn('python3', [
      '-c',
      'import socket,sys,time\ns=socket.socket();s.bind(("127.0.0.1",0));s.listen(0)\n' +
        'print(s.getsockname()[1],flush=True)\nc=[socket.create_connection(s.getsockname()) for _ in range(2)]\ntime.sleep(120)',
    ]);
    try {
      const port = Number(await new Promise<string>((r) => holder.stdout.once('data', (d: Buffer) => r(d.toString()))));
      const { ini, map } = configured(`engine = redis://127.0.0.1:${port}\nengine_timeout_ms = 150\n`);
      const first = await run(BIN.login, ['--config', ini], { env: { IP: '198.51.100.15' } });
      expect(first.stderr).toContain(
        `engine redis://127.0.0.1:${port}/0: no connection within engine_timeout_ms = 150 ms`,
      );
      expect(existsSync(`${map}.engine-down`)).toBe(true);
      const second = await run(BIN.login, ['--config', ini], { env: { IP: '198.51.100.16' } });
      expect(second.stderr).toMatch(/not recorded 198\.51\.100\.16 in the engine .*hooks leave it alone for 30 s/);
    } finally {
      holder.kill();
    }
  });

  it('with the engine refusing the password, says so', async () => {
    const { ini } = configured(`engine = redis://:wrong@127.0.0.1:${engine.port}\n`);
    const r = await run(BIN.login, ['--config', ini], { env: { IP: '198.51.100.14' } });
    expect(r.stderr).toMatch(/not recorded 198\.51\.100\.14 in the engine .*refused AUTH: ERR AUTH/);
  });
});

describe('the sweep with engine set', () => {
  it('gives the engine, once it is back, every login of this host that hooks could not send it', async () => {
    const dead = await freePort();
    const { ini, map } = configured(`engine = redis://127.0.0.1:${dead}/5\n`);
    for (const ip of ['198.51.100.20', '198.51.100.21']) await run(BIN.login, ['--config', ini], { env: { IP: ip } });
    expect(existsSync(`${map}.engine-missed`)).toBe(true);
    writeFileSync(ini, `dbfile = ${map}\nignore =\n${NOT_LIVE}engine = redis://127.0.0.1:${engine.port}/5\n`);
    const sweep = await run(BIN.sweep, ['--config', ini]);
    expect([sweep.code, sweep.stderr]).toEqual([0, '']);
    const [value] = respCall(
      { ...endpoint(), db: 5 },
      [['MGET', 'poprelay:198.51.100.20', 'poprelay:198.51.100.21']],
      5000,
    );
    expect((value as string[]).every((v) => /^\d+$/.test(v))).toBe(true);
    expect(existsSync(`${map}.engine-missed`)).toBe(false); // nothing left to catch up on
  });
});

describe('the next recorder that reaches the engine', () => {
  it('sends it the logins earlier recorders could not, in the same exchange, without waiting for the sweep', async () => {
    const dead = await freePort();
    const { ini, map } = configured(`engine = redis://127.0.0.1:${dead}/7\n${NOT_LIVE}`);
    for (const ip of ['198.51.100.22', '198.51.100.23']) await run(BIN.login, ['--config', ini], { env: { IP: ip } });
    expect(readFileSync(`${map}.engine-missed`, 'utf8')).toMatch(/^198\.51\.100\.22 \d+\n198\.51\.100\.23 \d+\n$/);
    writeFileSync(ini, `dbfile = ${map}\nignore =\n${NOT_LIVE}engine = redis://127.0.0.1:${engine.port}/7\n`);
    expect((await run(BIN.login, ['--config', ini], { env: { IP: '198.51.100.24' } })).stderr).toContain(
      'recorded 198.51.100.24 in the engine',
    );
    const [values] = respCall(
      { ...endpoint(), db: 7 },
      [['MGET', 'poprelay:198.51.100.22', 'poprelay:198.51.100.23', 'poprelay:198.51.100.24']],
      5000,
    );
    expect((values as string[]).every((v) => /^\d+$/.test(v))).toBe(true);
    // The lines are sent; the marker stays, for the sweep to send the whole map once.
    expect(readFileSync(`${map}.engine-missed`, 'utf8')).toBe('');
  });
});

describe('the sweep re-seeds an engine that restarted empty', () => {
  let own: Engine;
  beforeAll(async () => {
    own = await startEngine();
  });
  afterAll(async () => {
    await own?.stop();
  });

  it('sends every entry still in its time within one sweep, though no login failed meanwhile; not an entry deleted from a running engine', async () => {
    const { ini, map } = configured(`engine = redis://127.0.0.1:${own.port}/6\n`);
    const at = { host: '127.0.0.1', port: own.port, db: 6, display: 'own' };
    const value = (ip: string): unknown => respCall(at, [['GET', `poprelay:${ip}`]], 5000)[0];
    for (const ip of ['198.51.100.30', '198.51.100.31'])
      expect((await run(BIN.login, ['--config', ini], { env: { IP: ip } })).code).toBe(0);
    expect(existsSync(`${map}.engine-missed`)).toBe(false);
    expect(await run(BIN.sweep, ['--config', ini, '--quiet'])).toMatchObject({ code: 0, stderr: '' });
    // An administrator's del on a running engine stays done: the sweep does not send the entry back.
    respCall(at, [['DEL', 'poprelay:198.51.100.31']], 5000);
    expect(await run(BIN.sweep, ['--config', ini, '--quiet'])).toMatchObject({ code: 0, stderr: '' });
    expect(value('198.51.100.31')).toBeNull();
    await own.kill();
    await own.start();
    expect(value('198.51.100.30')).toBeNull();
    expect(await run(BIN.sweep, ['--config', ini, '--quiet'])).toMatchObject({ code: 0, stderr: '' });
    expect(value('198.51.100.30')).toMatch(/^\d+$/);
    expect(value('198.51.100.31')).toMatch(/^\d+$/); // still in this host's map, so the new engine gets it too
  });
});

describe('poprelay with engine set', () => {
  it("del removes the address from this host's map too, where the hook recorded it", async () => {
    const { ini, s } = withEngine();
    expect((await run(BIN.login, ['--config', ini], { env: { IP: '198.51.100.32' } })).code).toBe(0);
    expect(readEntries(s).map((e) => e.address)).toEqual(['198.51.100.32']);
    expect((await run(BIN.admin, ['del', '198.51.100.32', '--config', ini])).stdout).toBe('removed 198.51.100.32\n');
    expect(readEntries(s)).toEqual([]);
    expect((await engineGet('poprelay:198.51.100.32'))[0]).toBeNull();
  });

  it('adds, lists, checks, counts, removes and flushes in the shared set', async () => {
    const { ini } = configured(`engine = redis://127.0.0.1:${engine.port}/4\n`);
    const cmd = (...args: string[]) => run(BIN.admin, [...args, '--config', ini]);
    expect((await cmd('add', '192.0.2.40', '--now', '1800000000')).stdout).toBe(
      'added 192.0.2.40 (may relay for 15m00s)\n',
    );
    expect((await cmd('add', '2001:db8::40', '--permanent')).stdout).toBe('added 2001:db8::40 (permanent)\n');
    const list = await cmd('list', '--json', '--now', '1800000060');
    expect((JSON.parse(list.stdout) as Array<{ address: string }>).map((e) => e.address)).toEqual([
      '192.0.2.40',
      '2001:db8::40',
    ]);
    const check = await cmd('check', '192.0.2.40', '--now', '1800000060');
    expect(check.stdout).toBe('192.0.2.40 may relay: last login 1m00s ago, 14m00s left\n');
    const missing = await cmd('check', '192.0.2.41');
    expect([missing.code, missing.stdout]).toEqual([1, '192.0.2.41 may not relay: not in the shared set\n']);
    const stats = JSON.parse((await cmd('stats', '--json', '--now', '1800000060')).stdout) as Record<string, unknown>;
    expect(stats).toMatchObject({ engine: `redis://127.0.0.1:${engine.port}/4`, entries: 2, dated: 1, permanent: 1 });
    expect((await cmd('del', '192.0.2.40')).stdout).toBe('removed 192.0.2.40\n');
    expect((await cmd('del', '192.0.2.40')).code).toBe(1);
    await cmd('add', '192.0.2.42');
    expect((await cmd('flush', '--yes')).stdout).toBe(`redis://127.0.0.1:${engine.port}/4: removed 1, permanent 1\n`);
    expect(JSON.parse((await cmd('list', '--json')).stdout)).toEqual([
      expect.objectContaining({ address: '2001:db8::40', permanent: true }),
    ]);
  });

  it('says what is wrong when the engine cannot be reached (exit 2, an error; nothing else touched)', async () => {
    const port = await freePort();
    const { ini, map } = configured(`engine = redis://127.0.0.1:${port}\n`);
    const r = await run(BIN.admin, ['add', '192.0.2.43', '--config', ini]);
    expect(r.stderr).toBe(
      `poprelay: engine redis://127.0.0.1:${port}/0: connect ECONNREFUSED 127.0.0.1:${port}. Check engine in poprelay.ini and that the engine runs.\n`,
    );
    expect(r.code).toBe(2);
    expect(existsSync(map)).toBe(false);
  });

  it('doctor checks the engine and says which poprelayd listener does not answer', async () => {
    const { dir, ini } = configured(
      `engine = redis://127.0.0.1:${engine.port}/4\npolicy_listen = inet:127.0.0.1:${await freePort()}\n`,
    );
    writeFileSync(join(dir, 'sendmail.cf'), '');
    const r = await run(BIN.admin, ['doctor', '--config', ini, '--doveconf-config', join(dir, 'none.conf')]);
    expect(r.stdout).toMatch(new RegExp(`^OK {4}engine: redis://127\\.0\\.0\\.1:${engine.port}/4 answers`, 'm'));
    expect(r.stdout).toMatch(
      /^FAIL {2}poprelayd policy: no answer on inet:127\.0\.0\.1:\d+: ECONNREFUSED\n {6}fix: start it/m,
    );
  });
});
