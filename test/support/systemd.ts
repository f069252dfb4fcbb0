// A Debian tree booted with systemd as PID 1, for tests of what a package
// does on a real system: the tree's own systemd, dbus, services and apt.
// Each boot runs an overlay of the tree (the tree itself never changes; the
// overlay's upper directory is in a temporary directory of the boot's own)
// in new mount, PID, network, UTS, IPC and cgroup namespaces, in a cgroup
// of its own, so that several boots and the host never meet
// (test/fixtures/systemd-boot.sh says what the system is given). The host
// needs no systemd: systemd-nspawn is not used.
//
// Its network holds lo and one end of a veth pair with the system's address
// SERVER_ADDR. The other end is in the clients' host: a network namespace
// of its own holding the clients' addresses (not the system's own: sendmail
// lets its own addresses relay), where a forwarder runs
// (test/fixtures/netns-forward.mjs). Clients in this process reach a server
// inside through endpoint(): the forwarder connects for them from the
// client address they name.
//
// shutdown() kills PID 1 (the kernel then kills every process of the PID
// namespace, and the mounts go with the mount namespace), ends the
// forwarder, removes the cgroup and the temporary directory; the processes
// that hold the namespaces die with the test process if it dies first
// (setpriv --pdeathsig).

import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, statfsSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

import type { Endpoint } from './mailclient.js';
import { ROOT } from './paths.js';
import { eventually } from './wait.js';

/** The booted system's own address (TEST-NET-2): its services listen on it, and clients connect to it. */
export const SERVER_ADDR = '198.51.100.1';

const BOOT_SCRIPT = join(ROOT, 'test/fixtures/systemd-boot.sh');
const FORWARDER = join(ROOT, 'test/fixtures/netns-forward.mjs');
const CGROUP2_SUPER_MAGIC = 0x63677270;
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface BootOptions {
  /** The tree: a directory, or several joined with ':' (the uppermost first), as overlayfs takes lowerdir. */
  tree: string;
  /** The addresses clients may connect from, in SERVER_ADDR's /24. */
  clients: string[];
  /** How long to wait for systemctl is-system-running to say running or degraded. */
  bootMs?: number;
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  timeoutMs?: number;
  /** Extra environment, on top of PATH, HOME=/root, LANG=C.UTF-8 and no pager. */
  env?: Record<string, string>;
}

export interface Booted {
  /** PID 1 of the booted system, as this process sees it. */
  pid: number;
  /** What systemctl is-system-running said once the boot was over (running or degraded). */
  state: string;
  /** A path inside the booted system, as this process can read and write it (/proc/PID/root/...). */
  path(inside: string): string;
  /** Runs a command inside, as root in every namespace of the system and with its root directory. */
  run(cmd: string[], o?: RunOptions): Promise<CommandResult>;
  /** run() of `sh -c script`. */
  sh(script: string, o?: RunOptions): Promise<CommandResult>;
  /** sh(), failing with its output when the script fails. */
  must(script: string, o?: RunOptions): Promise<string>;
  /** systemctl show -p NAME --value UNIT. */
  property(unit: string, name: string): Promise<string>;
  /** Copies a file of this machine into the system. */
  copyIn(from: string, inside: string): void;
  /**
   * An endpoint on this machine's loopback whose connections arrive at
   * HOST:PORT inside (default SERVER_ADDR) from the address `from`.
   */
  endpoint(from: string, port: number, host?: string): Promise<Endpoint>;
  /** What systemd wrote to its console. */
  console(): string;
  /** Stops everything the boot started and removes its files; safe to call twice. */
  shutdown(): Promise<void>;
}

/** The cgroup2 hierarchy this machine mounts: /sys/fs/cgroup itself, or its unified/ beside cgroup v1 controllers. */
function cgroup2Root(): string {
  for (const dir of ['/sys/fs/cgroup', '/sys/fs/cgroup/unified']) {
    if (existsSync(dir) && statfsSync(dir).type === CGROUP2_SUPER_MAGIC) return dir;
  }
  throw new Error('no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified: systemd cannot boot here');
}

/** A cgroup for the boot under the one this process is in (its cgroup v2 line in /proc/self/cgroup). */
function makeCgroup(): string {
  const own = /^0::(\/.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '/';
  const parent = join(cgroup2Root(), own);
  return mkdtempSync(join(parent, 'poprelay-boot-'));
}

/** Removes a cgroup and those systemd made below it, the deepest first; false while a process is still leaving. */
function removeCgroup(dir: string): boolean {
  if (!existsSync(dir)) return true;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory() && !removeCgroup(join(dir, e.name))) return false;
  }
  try {
    rmdirSync(dir);
    return true;
  } catch {
    return false;
  }
}

function ended(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

async function stop(p: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (ended(p)) return;
  const exited = new Promise((r) => p.once('exit', r));
  p.kill(signal);
  await exited;
}

/** Boots the tree; resolves once systemd says the boot is over (running or degraded). */
export async function boot(o: BootOptions): Promise<Booted> {
  const work = mkdtempSync(join(tmpdir(), 'poprelay-boot-'));
  const cgroup = makeCgroup();
  const servers: Server[] = [];
  let forwarder: ChildProcess | undefined;
  const forwarderSocket = join(work, 'forward.sock');
  let pid1 = 0;
  let output = '';
  let done = false;

  const proc = spawn(
    'setpriv',
    [
      '--pdeathsig',
      'KILL',
      'sh',
      '-c',
      'echo $$ >"$0/cgroup.procs" && exec unshare --pid --fork --kill-child --mount --net --uts --ipc --cgroup --propagation private bash "$@"',
      cgroup,
      BOOT_SCRIPT,
      work,
      o.tree,
      SERVER_ADDR,
      ...o.clients,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  proc.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (output += d.toString()));

  const consoleText = (): string => {
    try {
      return readFileSync(join(work, 'console.log'), 'utf8');
    } catch {
      return '';
    }
  };

  const shutdown = async (): Promise<void> => {
    if (done) return;
    done = true;
    for (const s of servers.splice(0)) s.close();
    if (forwarder !== undefined) await stop(forwarder);
    if (pid1 !== 0) {
      try {
        process.kill(pid1, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    await stop(proc);
    // The processes of the PID namespace are gone once they have been reaped; until then their cgroups stay.
    await eventually(() => removeCgroup(cgroup), 60_000, `removing the cgroup ${cgroup}`, 100).catch((e: unknown) =>
      console.warn(`${(e as Error).message}: a process of the boot is still there`),
    );
    rmSync(work, { recursive: true, force: true });
  };

  const run = async (cmd: string[], ro: RunOptions = {}): Promise<CommandResult> => {
    const env = Object.entries({
      PATH,
      HOME: '/root',
      LANG: 'C.UTF-8',
      SYSTEMD_PAGER: '',
      SYSTEMD_COLORS: '0',
      DEBIAN_FRONTEND: 'noninteractive',
      ...ro.env,
    }).map(([k, v]) => `${k}=${v}`);
    const r = await execa(
      'nsenter',
      ['-t', String(pid1), '-m', '-u', '-i', '-n', '-p', '-C', '-r', '-w', 'env', '-i', ...env, ...cmd],
      { reject: false, input: ro.input ?? '', timeout: ro.timeoutMs ?? 300_000 },
    );
    return { code: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  const sh = (script: string, ro?: RunOptions) => run(['sh', '-c', script], ro);

  try {
    // PID 1 is the child of unshare (--fork): the script that becomes systemd.
    pid1 = await eventually(
      () => {
        if (ended(proc)) throw new Error(`the boot ended (${proc.exitCode ?? proc.signalCode}): ${output}`);
        const kids = readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim();
        return kids === '' ? undefined : Number(kids.split(' ')[0]);
      },
      30_000,
      'the boot process',
    );
    const state = await eventually(
      async () => {
        if (ended(proc)) throw new Error(`the boot ended (${proc.exitCode ?? proc.signalCode}): ${output}`);
        const r = await run(['systemctl', 'is-system-running'], { timeoutMs: 30_000 });
        const s = r.stdout.trim();
        return (s === 'running' || s === 'degraded') && s;
      },
      o.bootMs ?? 180_000,
      'systemctl is-system-running: running or degraded',
      250,
    ).catch((e: unknown) => {
      throw new Error(`${(e as Error).message}\n${output}\nconsole:\n${consoleText()}`);
    });
    if (state === 'degraded') {
      const failed = await run(['systemctl', '--failed', '--no-legend', '--plain']);
      console.log(`booted ${o.tree}: degraded; failed units:\n${failed.stdout}`);
    }

    // The clients' host: the forwarder in a network namespace of its own, given the veth's other end.
    const f = spawn(
      'setpriv',
      ['--pdeathsig', 'KILL', 'unshare', '--net', process.execPath, FORWARDER, forwarderSocket],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    forwarder = f;
    await new Promise<void>((resolve, reject) => {
      f.stdout?.once('data', () => resolve());
      f.once('exit', (c) => reject(new Error(`netns-forward.mjs ended (${c})`)));
    });
    const clientNet = `--net=/proc/${f.pid}/ns/net`;
    await execa('nsenter', [`--net=/proc/${pid1}/ns/net`, 'ip', 'link', 'set', 'pr1', 'netns', String(f.pid)]);
    await execa('nsenter', [
      clientNet,
      'sh',
      '-c',
      'ip link set lo up && for a; do ip addr add "$a/24" dev pr1; done && ip link set pr1 up',
      'sh',
      ...o.clients,
    ]);
    // Reachable once a connection from a client is answered, if only by a refusal.
    await eventually(
      async () =>
        (
          await execa(
            'nsenter',
            [
              clientNet,
              process.execPath,
              '-e',
              `require('net').connect({ host: '${SERVER_ADDR}', port: 9, localAddress: '${o.clients[0] ?? ''}' })` +
                `.on('connect', () => process.exit(0)).on('error', (e) => process.exit(e.code === 'ECONNREFUSED' ? 0 : 1))`,
            ],
            { reject: false, timeout: 10_000 },
          )
        ).exitCode === 0,
      60_000,
      `${SERVER_ADDR} reachable from the clients' host`,
      250,
    );

    const booted: Booted = {
      pid: pid1,
      state,
      path: (inside) => `/proc/${pid1}/root${inside}`,
      run,
      sh,
      must: async (script, ro) => {
        const r = await sh(script, ro);
        if (r.code !== 0) throw new Error(`inside: ${script}\nexit ${r.code}\n${r.stdout}\n${r.stderr}`);
        return r.stdout;
      },
      property: async (unit, name) => (await run(['systemctl', 'show', '-p', name, '--value', unit])).stdout.trim(),
      copyIn: (from, inside) => cpSync(from, `/proc/${pid1}/root${inside}`),
      endpoint: async (from, port, host = SERVER_ADDR) => {
        const server = createServer((client: Socket) => {
          const inner = connect(forwarderSocket);
          inner.write(`${from} ${host} ${port}\n`);
          client.pipe(inner);
          inner.pipe(client);
          inner.on('error', () => client.destroy());
          client.on('error', () => inner.destroy());
          inner.on('close', () => client.end());
          client.on('close', () => inner.end());
        });
        servers.push(server);
        await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
        const addr = server.address();
        return { host: '127.0.0.1', port: typeof addr === 'object' && addr !== null ? addr.port : 0 };
      },
      console: consoleText,
      shutdown,
    };
    return booted;
  } catch (e) {
    await shutdown();
    throw e;
  }
}
