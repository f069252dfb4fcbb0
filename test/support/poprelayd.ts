// poprelayd as its own process, for tests and the benchmark: started with a
// config, ready once it says it answers on each of its listeners (and, with
// mirror = yes, once the first resync is done).

import { spawn, type ChildProcess } from 'node:child_process';

import { terminate } from './terminate.js';
import { BIN } from './paths.js';
import { eventually } from './wait.js';

export interface Daemon {
  proc: ChildProcess;
  /** What it has logged so far. */
  log(): string;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

export async function startPoprelayd(ini: string, listeners: number, mirror = false): Promise<Daemon> {
  const proc = spawn(BIN.daemon, ['--config', ini], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  proc.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const daemon: Daemon = {
    proc,
    log: () => log,
    stop: () => terminate(proc),
    kill: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await exited;
    },
  };
  try {
    await eventually(
      () => {
        if (proc.exitCode !== null) throw new Error(`poprelayd ended (${proc.exitCode}): ${log}`);
        return (log.match(/: answering /g) ?? []).length >= listeners && (!mirror || log.includes('mirror: resynced'));
      },
      60_000,
      `poprelayd ready: ${log}`,
    );
  } catch (e) {
    await daemon.stop();
    throw e;
  }
  return daemon;
}
