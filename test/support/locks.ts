// flock(2) locks held by other processes, and who is waiting for them, as
// the kernel shows them in /proc/locks.

import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';

import { eventually } from './wait.js';

/**
 * The flock(2) locks on `path`: the pid of each holder, and of each process
 * blocked waiting ("->" lines). Matching by inode, so a file renamed over
 * `path` since does not count.
 */
function flocksOn(path: string): { holders: number[]; waiters: number[] } {
  const ino = statSync(path).ino;
  const holders: number[] = [];
  const waiters: number[] = [];
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1234 fe:01:5678 0 EOF"; a waiter has "->" after "1:".
    const m = /^\d+: (-> )?FLOCK\s+\S+\s+\S+\s+(\d+) [0-9a-f]+:[0-9a-f]+:(\d+) /.exec(line);
    if (m === null || Number(m[3]) !== ino) continue;
    (m[1] === undefined ? holders : waiters).push(Number(m[2]));
  }
  return { holders, waiters };
}

/**
 * Holds flock on `path` from another process (util-linux flock) for at
 * most `seconds`; resolves once the kernel shows the lock held, with a
 * function that releases it (by killing the holder).
 */
export async function holdLock(path: string, mode: '-x' | '-s' = '-x', seconds = 60): Promise<() => void> {
  const child = spawn('flock', ['-o', mode, path, 'sleep', String(seconds)], { stdio: 'ignore' });
  const pid = child.pid ?? -1;
  // A short-lived holder may be gone before a busy machine lets us look.
  await eventually(
    () => child.exitCode !== null || flocksOn(path).holders.includes(pid),
    60_000,
    `flock ${mode} ${path}`,
  );
  return () => child.kill('SIGKILL');
}

/** Resolves once some process is blocked waiting for a lock on the file now at `path`. */
export async function lockWaiter(path: string): Promise<void> {
  await eventually(() => flocksOn(path).waiters.length > 0, 60_000, `a process waiting for the lock on ${path}`);
}

/** Whether any process holds flock on `path` (a queue directory's lock is a running recorder). */
export function queueLocked(path: string): boolean {
  return flocksOn(path).holders.length > 0;
}
