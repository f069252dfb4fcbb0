// poprelayd against the other accounts of its host (docs/security.md): any
// local account may connect to a TCP listener on loopback, and to a UNIX
// socket its mode lets it reach. Attacks as tests, each run as nobody
// (setpriv, test/fixtures/flood.mjs) while this process asks as the MTA
// does:
//
// - a UNIX socket given ?group=NAME is reachable by that group alone (the
//   way Postfix's and OpenDKIM's sockets are set up);
// - 1,000 idle connections held open on every socket, opened again the
//   moment they are closed, do not keep the MTA's questions out: a new
//   connection evicts the longest-idle one (of the peer that holds most);
// - a client that pipelines requests and never reads the answers is no
//   longer read beyond a small bound, and poprelayd's memory stays flat.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { askDaemon } from '../src/daemon/client.js';
import { parseListen, type ListenEndpoint } from '../src/endpoints.js';
import { respCall } from '../src/engine/call.js';
import { appCopy } from './support/app.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { BIN } from './support/paths.js';
import { startPoprelayd, type Daemon } from './support/poprelayd.js';
import { tempDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

const KNOWN = '192.0.2.50';
const UNKNOWN = '192.0.2.51';
/** What clients that never read may add to poprelayd's peak RSS (VmRSS, KiB). */
const MEMORY_BOUND_KIB = 16 * 1024;
/** The pipelining clients, and how long they write (and the MTA asks, before and during). */
const PIPELINES = 16;
const ATTACK_MS = 30_000;
/** Requests each writes a millisecond: a pace poprelayd keeps up with, so that none is closed for too many waiting. */
const PER_MS = 0.5;
/** How long one answer may take under attack on a loaded 2-core machine: a bound, not a measurement. */
const ANSWER_MS = 20_000;

let engine: Engine;
let daemon: Daemon;
let dir: string;
const at: Record<'policy' | 'socketmap' | 'readsocket', ListenEndpoint> = {} as never;

function rssKiB(pid: number): number {
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

async function gidOf(group: string): Promise<number> {
  return Number((await execa('getent', ['group', group])).stdout.split(':')[2]);
}

interface FloodStats {
  opened: number;
  closed: number;
  refused: number;
  open: number;
  written: number;
  errors: Record<string, number>;
}

/** test/fixtures/flood.mjs as `user`, with room for thousands of descriptors. */
function flood(
  args: string[],
  user = 'nobody',
): { proc: ChildProcess; stats(): FloodStats; stop(): Promise<FloodStats> } {
  const proc = spawn(
    'prlimit',
    [
      '--nofile=8192:8192',
      'setpriv',
      `--reuid=${user}`,
      `--regid=${user === 'nobody' ? 'nogroup' : user}`,
      '--clear-groups',
      process.execPath,
      join(appCopy(), 'test/fixtures/flood.mjs'),
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const stats = (): FloodStats => {
    const last = out.trim().split('\n').at(-1);
    if (proc.exitCode !== null) throw new Error(`flood.mjs ended (${proc.exitCode}): ${err}`);
    return last === undefined || last === ''
      ? { opened: 0, closed: 0, refused: 0, open: 0, written: 0, errors: {} }
      : (JSON.parse(last) as FloodStats);
  };
  return {
    proc,
    stats,
    stop: async () => {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
      return JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as FloodStats;
    },
  };
}

/** Asks as `user` (setpriv, the built client in the world-readable copy); the answer, or the error's code. */
async function askAs(user: string, protocol: 'socketmap' | 'readsocket', address: string): Promise<string> {
  const client = join(appCopy(), 'dist/daemon/client.js');
  const script =
    `const { askDaemon } = await import(${JSON.stringify(client)});` +
    `askDaemon(${JSON.stringify(protocol)}, ${JSON.stringify(at[protocol])}, ${JSON.stringify(address)}, ${ANSWER_MS})` +
    `.then((r) => console.log(String(r)), (e) => console.log(e.message));`;
  const r = await execa(
    'setpriv',
    [
      `--reuid=${user}`,
      `--regid=${user === 'nobody' ? 'nogroup' : user}`,
      '--clear-groups',
      process.execPath,
      '--input-type=module',
      '-e',
      script,
    ],
    { reject: false },
  );
  return r.stdout.trim() || r.stderr;
}

/** The MTA's questions (this process, root), each on a new connection: the times they took, in ms. */
async function mtaAsks(): Promise<number[]> {
  const took: number[] = [];
  for (const protocol of ['policy', 'socketmap', 'readsocket'] as const) {
    for (const [address, relay] of [
      [KNOWN, true],
      [UNKNOWN, false],
    ] as const) {
      const t0 = performance.now();
      const answer = await askDaemon(protocol, at[protocol], address, ANSWER_MS).catch((e: Error) => e.message);
      took.push(performance.now() - t0);
      expect(answer, `${protocol} about ${address}`).toBe(relay);
    }
  }
  return took;
}

beforeAll(async () => {
  engine = await startEngine();
  respCall({ host: '127.0.0.1', port: engine.port, db: 0, display: '' }, [['SET', `poprelay:${KNOWN}`, 'OK']], 5000);
  dir = tempDir();
  chmodSync(dir, 0o755); // every account may reach the sockets' directory: only their modes decide
  const port = await freePort();
  Object.assign(at, {
    policy: parseListen(`inet:127.0.0.1:${port}`),
    socketmap: parseListen(`unix:${join(dir, 'socketmap')}?group=smmta&mode=0660`),
    readsocket: parseListen(`unix:${join(dir, 'exim.sock')}`),
  });
  const ini = join(dir, 'poprelay.ini');
  writeFileSync(
    ini,
    `dbfile = ${join(dir, 'popip.db')}\nengine = ${engine.url}\npolicy_listen = inet:127.0.0.1:${port}\n` +
      `socketmap_listen = unix:${join(dir, 'socketmap')}?group=smmta&mode=0660\n` +
      `readsocket_listen = unix:${join(dir, 'exim.sock')}\n`,
  );
  daemon = await startPoprelayd(ini, 3);
});
afterAll(async () => {
  await daemon?.stop();
  await engine?.stop();
});

describe('a UNIX socket with ?group=NAME', () => {
  it.each([
    ['unix:/run/poprelay/sm?group=smmta', { group: 'smmta' }],
    ['unix:/run/poprelay/sm?group=Debian-exim&mode=0660', { group: 'Debian-exim', mode: 0o660 }],
    ['unix:/run/poprelay/sm?mode=600&group=108', { group: '108', mode: 0o600 }],
    ['unix:/run/poprelay/sm?mode=0666', { mode: 0o666 }],
  ])('%s is read as the socket /run/poprelay/sm, its group and mode', (text, access) => {
    expect(parseListen(text)).toEqual({ path: '/run/poprelay/sm', display: 'unix:/run/poprelay/sm', ...access });
  });

  it.each([
    'unix:/run/poprelay/sm?',
    'unix:/run/poprelay/sm?group=',
    'unix:/run/poprelay/sm?group=a b',
    'unix:/run/poprelay/sm?group=x&group=y',
    'unix:/run/poprelay/sm?mode=0777', // execute bits
    'unix:/run/poprelay/sm?mode=0460', // the owner could not write
    'unix:/run/poprelay/sm?mode=4660',
    'unix:/run/poprelay/sm?owner=smmta',
    'unix:/run/poprelay/sm?group=smmta&',
  ])('refuses %s', (text) => {
    expect(parseListen(text)).toBeUndefined();
  });

  it("is the group's alone (mode 0660): nobody and another MTA's account are refused, the group's account answered", async () => {
    const st = lstatSync(at.socketmap.display.slice('unix:'.length));
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    expect(st.gid).toBe(await gidOf('smmta'));
    expect(daemon.log()).toMatch(/answering socketmap on unix:\S+\/socketmap \(group smmta, mode 0660\)/);
    expect(await askAs('nobody', 'socketmap', KNOWN)).toBe('EACCES');
    expect(await askAs('Debian-exim', 'socketmap', KNOWN)).toBe('EACCES');
    expect(await askAs('smmta', 'socketmap', KNOWN)).toBe('true');
    expect(await askAs('smmta', 'socketmap', UNKNOWN)).toBe('false');
    // Without ?group=, as before: every account may connect.
    expect(lstatSync(at.readsocket.display.slice('unix:'.length)).mode & 0o777).toBe(0o666);
    expect(await askAs('nobody', 'readsocket', KNOWN)).toBe('true');
  });

  it('poprelayd not in that group (the systemd unit without the drop-in) exits 1 and says what to add', async () => {
    // A map directory of poprelay's: started as root, poprelayd becomes poprelay (no other group).
    const top = tempDir();
    chmodSync(top, 0o755);
    const own = join(top, 'poprelay');
    mkdirSync(own, { mode: 0o755 });
    chownSync(own, Number((await execa('id', ['-u', 'poprelay'])).stdout), await gidOf('poprelay'));
    const ini = join(top, 'poprelay.ini'); // root's, as root's commands require
    writeFileSync(
      ini,
      `dbfile = ${join(own, 'popip.db')}\nengine = ${engine.url}\nsocketmap_listen = unix:${join(own, 'sm')}?group=smmta\n`,
    );
    // Bounded: a poprelayd that does not refuse would serve until stopped.
    const r = await execa(BIN.daemon, ['--config', ini], { reject: false, timeout: 60_000 });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(
      /cannot listen: socketmap on unix:\S+\/sm: poprelayd \(uid \d+\) may not give its socket to group smmta/,
    );
    expect(r.stderr).toContain('SupplementaryGroups=smmta');
    expect(r.stderr).toContain('PrivateUsers=no');
  });
});

describe('a client that pipelines requests and never reads the answers', () => {
  it("is not read beyond a small bound: poprelayd's memory stays flat, and the MTA is answered meanwhile", async () => {
    const pid = daemon.proc.pid ?? 0;
    const body = `drac ${KNOWN}`;
    // On the UNIX socket, as the account it belongs to (a broken or hostile MTA):
    // the kernel buffers little there, so poprelayd's own buffers are what is at stake.
    const path = at.socketmap.display.slice('unix:'.length);
    /** The MTA asking for ATTACK_MS, poprelayd's highest VmRSS (KiB) sampled after each round. */
    const peakWhileAsking = async (): Promise<number> => {
      let peak = 0;
      for (const end = Date.now() + ATTACK_MS; Date.now() < end;) {
        await mtaAsks();
        peak = Math.max(peak, rssKiB(pid));
        await new Promise((r) => setTimeout(r, 250));
      }
      return peak;
    };
    // Before: the same traffic from the MTA for as long, without the attacker
    // (a daemon that has just started grows its heap as it serves).
    const before = await peakWhileAsking();
    const attack = flood(['pipeline', String(PIPELINES), String(PER_MS), path, `${body.length}:${body},`], 'smmta');
    let during = 0;
    try {
      await eventually(() => attack.stats().written > 0, 60_000, 'the pipelining client writing');
      during = await peakWhileAsking();
    } finally {
      const s = await attack.stop();
      console.log(
        `pipelining, ${PIPELINES} connections that never read, ${ATTACK_MS / 1000} s: the kernel took ` +
          `${(s.written / 2 ** 20).toFixed(1)} MiB of requests over ${s.opened} connections; poprelayd's peak VmRSS ` +
          `${(before / 1024).toFixed(1)} MiB before (the MTA alone), ${(during / 1024).toFixed(1)} MiB during ` +
          `(${during >= before ? '+' : ''}${((during - before) / 1024).toFixed(1)} MiB; the bound: +${MEMORY_BOUND_KIB / 1024} MiB)`,
      );
    }
    expect(during - before).toBeLessThan(MEMORY_BOUND_KIB);
    expect(daemon.proc.exitCode).toBeNull();
    await mtaAsks();
  }, 300_000);
});

describe('another account holds 1,000 idle connections open on every socket', () => {
  it("the MTA's questions are answered throughout, on every socket", async () => {
    const tcp = at.policy as { host: string; port: number };
    const paths = [at.socketmap, at.readsocket].map((e) => e.display.slice('unix:'.length));
    const attack = flood(['hold', '1000', `${tcp.host}:${tcp.port}`, ...paths]);
    const took: number[] = [];
    let s: FloodStats;
    try {
      // The flood is on: each socket it may reach got its 1,000, and is closing some to keep up.
      await eventually(() => attack.stats().opened >= 2000 && attack.stats().closed > 0, 120_000, 'the flood');
      // Throughout: while the flood opens 20,000 more connections (and at least 10 rounds).
      const until = attack.stats().opened + 20_000;
      for (let round = 0; round < 10 || attack.stats().opened < until; round++) {
        took.push(...(await mtaAsks())); // stats() throws if the flood has ended
      }
    } finally {
      s = await attack.stop();
      console.log(
        `flood: ${s.opened} connections opened, ${s.closed} closed by poprelayd, ${s.open} open at the end, ` +
          `refused ${JSON.stringify(s.errors)}; the MTA's ${took.length} questions: ` +
          `median ${Math.round(took.sort((a, b) => a - b)[took.length >> 1] ?? NaN)} ms, max ${Math.round(Math.max(...took))} ms`,
      );
    }
    expect(s.errors.EACCES, 'nobody never reaches the socket of group smmta').toBeGreaterThan(0);
    expect(daemon.log()).toMatch(
      /policy on inet:127\.0\.0\.1:\d+: 127\.0\.0\.1 holds 128 connections: closed its longest-idle one/,
    );
    // On a UNIX socket the peer is its uid (SO_PEERCRED): nobody's connections evict nobody's own.
    expect(daemon.log()).toMatch(
      /readsocket on unix:\S+: uid 65534 holds 128 connections: closed its longest-idle one/,
    );
    expect(daemon.proc.exitCode).toBeNull();
    await mtaAsks();
  }, 300_000);
});
