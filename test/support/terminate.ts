// Stopping a peer the tests started (Dovecot, poprelayd, an engine): no
// vitest here, since the demos bundle it too.

import type { ChildProcess } from 'node:child_process';

/** Ends `proc` with SIGTERM and waits for it; nothing to do if it has ended. */
export async function terminate(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}
