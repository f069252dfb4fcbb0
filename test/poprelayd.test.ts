// poprelayd against hostile and broken clients on every socket: garbage,
// oversized requests, a slowloris, a thousand connections at once. Each
// gets a clear log line, poprelayd keeps answering everyone else, and its
// memory stays bounded.

import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { askDaemon } from '../src/daemon/client.js';
import { parseListen, type ListenEndpoint } from '../src/endpoints.js';
import { MAX_PER_PEER, REQUEST_MS } from '../src/daemon/listeners.js';
import { respCall } from '../src/engine/call.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { startPoprelayd, type Daemon } from './support/poprelayd.js';
import { tempDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

let engine: Engine;
let daemon: Daemon;
const at: Record<'policy' | 'socketmap' | 'readsocket', ListenEndpoint> = {} as never;

/** Opens a connection to `where` and sends `data`; resolves with what came back once the server closed it. */
function sendAndWait(where: ListenEndpoint, data: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = 'path' in where ? connect({ path: where.path }) : connect({ host: where.host, port: where.port });
    let got = '';
    s.on('connect', () => s.write(data));
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
  });
}

function rssKiB(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

beforeAll(async () => {
  engine = await startEngine();
  respCall({ host: '127.0.0.1', port: engine.port, db: 0, display: '' }, [['SET', 'poprelay:192.0.2.50', 'OK']], 5000);
  const dir = tempDir();
  const [p1, p2] = [await freePort(), await freePort()];
  Object.assign(at, {
    policy: parseListen(`inet:127.0.0.1:${p1}`),
    socketmap: parseListen(`inet:127.0.0.1:${p2}`),
    readsocket: parseListen(`unix:${join(dir, 'exim.sock')}`),
  });
  const ini = join(dir, 'poprelay.ini');
  writeFileSync(
    ini,
    `dbfile = ${join(dir, 'popip.db')}\nengine = ${engine.url}\npolicy_listen = ${at.policy.display}\n` +
      `socketmap_listen = ${at.socketmap.display}\nreadsocket_listen = ${at.readsocket.display}\n`,
  );
  daemon = await startPoprelayd(ini, 3);
});
afterAll(async () => {
  await daemon?.stop();
  await engine?.stop();
});

/** poprelayd still answers a well-formed question on every socket. */
async function stillAnswers(): Promise<void> {
  for (const protocol of ['policy', 'socketmap', 'readsocket'] as const) {
    expect(await askDaemon(protocol, at[protocol], '192.0.2.50', 10_000), protocol).toBe(true);
    expect(await askDaemon(protocol, at[protocol], '192.0.2.51', 10_000), protocol).toBe(false);
  }
  expect(daemon.proc.exitCode).toBeNull();
}

describe('hostile input', () => {
  it.each([
    [
      'socketmap',
      'garbage, not a netstring',
      'GET / HTTP/1.0\r\n\r\n',
      /socketmap on .*: closed a connection: not a netstring/,
    ],
    [
      'socketmap',
      'an oversized netstring',
      '99999:drac ',
      /closed a connection: a netstring of 99999 bytes \(at most 1024\)/,
    ],
    [
      'policy',
      'a request without end',
      `client_address=${'x'.repeat(20_000)}`,
      /policy on .*: closed a connection: a policy request longer than 16384 bytes/,
    ],
    [
      'readsocket',
      'a line without end',
      '1'.repeat(1000),
      /readsocket on .*: closed a connection: a line longer than 256 bytes/,
    ],
    [
      'socketmap',
      'binary noise',
      Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 37) & 255)),
      /closed a connection: not a netstring/,
    ],
  ] as const)('%s: %s is closed with a log line, and nothing else changes', async (protocol, _what, data, logged) => {
    const answer = await sendAndWait(at[protocol], data);
    expect(answer).toBe(''); // no answer to a request it could not read
    await eventually(() => logged.test(daemon.log()), 60_000, `the log line ${logged}`);
    await stillAnswers();
  });

  it('a slowloris holds its connection only until the request is due, and blocks no one meanwhile', async () => {
    const slow: Socket = connect({
      host: (at.policy as { host: string }).host,
      port: (at.policy as { port: number }).port,
    });
    let closed = false;
    slow.on('error', () => undefined);
    slow.on('close', () => (closed = true));
    await new Promise<void>((r) => slow.on('connect', () => r()));
    // A policy request that never ends: a byte now and then, far below the size limit.
    slow.write('request=smtpd_access_policy\nclient_address=192.0.2.');
    const drip = setInterval(() => slow.write('1'), 500);
    try {
      await stillAnswers();
      await eventually(() => closed, REQUEST_MS * 6, 'poprelayd closing the slow connection');
    } finally {
      clearInterval(drip);
    }
    expect(daemon.log()).toMatch(new RegExp(`closed a connection: a request not complete within ${REQUEST_MS} ms`));
  }, 120_000);

  it(`a thousand connections at once from one address: beyond ${MAX_PER_PEER} each evicts its longest-idle one, with a log line; memory stays bounded, and it answers afterwards`, async () => {
    const before = rssKiB(daemon.proc.pid ?? 0);
    const sockets: Socket[] = [];
    let closed = 0;
    await Promise.all(
      Array.from(
        { length: 1000 },
        () =>
          new Promise<void>((resolve) => {
            const s = connect({ host: '127.0.0.1', port: (at.policy as { port: number }).port });
            sockets.push(s);
            s.on('error', () => undefined);
            s.on('connect', () => {
              s.write('request=smtpd_access_policy\n'); // half a request each
              resolve();
            });
            s.on('close', () => {
              closed++;
              resolve();
            });
          }),
      ),
    );
    await eventually(() => closed >= 1000 - MAX_PER_PEER, 60_000, `${1000 - MAX_PER_PEER} connections evicted`);
    expect(daemon.log()).toMatch(
      new RegExp(`policy on .*: 127\\.0\\.0\\.1 holds ${MAX_PER_PEER} connections: closed its longest-idle one`),
    );
    const during = rssKiB(daemon.proc.pid ?? 0);
    for (const s of sockets) s.destroy();
    await eventually(
      async () => {
        try {
          return await askDaemon('policy', at.policy, '192.0.2.50', 5000);
        } catch {
          return false;
        }
      },
      60_000,
      'poprelayd answering policy again',
    );
    await stillAnswers();
    // Bounded: a few MiB for the connections, not growth without end.
    expect(during - before).toBeLessThan(64 * 1024);
  }, 120_000);
});
