// poprelayd that cannot start says why and exits non-zero, so that systemd
// (Restart=on-failure) acts: a port another program holds, a socket
// directory that does not exist. The engine accepts connections and never
// answers, as a half-dead one does: its pending connection must not keep
// the daemon alive.

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { freePort } from './support/ports.js';
import { BIN } from './support/paths.js';
import { tempDir } from './support/tmp.js';

const held: Socket[] = [];
let silentEngine: Server;
let taken: Server;
let enginePort: number;
let takenPort: number;

function listening(server: Server, port: number): Promise<void> {
  return new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
}

beforeAll(async () => {
  silentEngine = createServer((s) => held.push(s.on('error', () => undefined)));
  enginePort = await freePort();
  await listening(silentEngine, enginePort);
  taken = createServer(() => undefined);
  takenPort = await freePort();
  await listening(taken, takenPort);
});
afterAll(() => {
  for (const s of held) s.destroy();
  silentEngine.close();
  taken.close();
});

/** Runs poprelayd with `listenLine` and a silent engine; resolves with its exit status and stderr. */
function start(listenLine: string): Promise<{ status: number | null; stderr: string }> {
  const dir = tempDir();
  const ini = join(dir, 'poprelay.ini');
  writeFileSync(ini, `dbfile = ${join(dir, 'popip.db')}\nengine = redis://127.0.0.1:${enginePort}\n${listenLine}\n`);
  const proc = spawn(BIN.daemon, ['--config', ini], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // Generous: the outcome is the exit itself; a daemon that never exits fails here.
  const bound = setTimeout(() => proc.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    proc.on('close', (status) => {
      clearTimeout(bound);
      resolve({ status, stderr });
    }),
  );
}

describe('poprelayd exits when it cannot listen', () => {
  it('a TCP port another program holds: exit 1, naming the address and how to find the holder', async () => {
    const r = await start(`policy_listen = inet:127.0.0.1:${takenPort}`);
    expect(r.stderr).toContain(
      `poprelayd: cannot listen: policy on inet:127.0.0.1:${takenPort}: the address is in use`,
    );
    expect(r.stderr).toContain(`ss -ltnp 'sport = :${takenPort}'`);
    expect(r.status).toBe(1);
  });

  it('a UNIX socket in a directory that does not exist: exit 1, naming the directory and how to make it', async () => {
    const missing = join(tempDir(), 'run-poprelay');
    const r = await start(`socketmap_listen = unix:${missing}/socketmap`);
    expect(r.stderr).toContain(`socketmap on unix:${missing}/socketmap: the directory ${missing} does not exist`);
    expect(r.stderr).toContain(`install -d -o poprelay -m 0755 ${missing}`);
    expect(r.status).toBe(1);
  });
});
