// The processes running now, from /proc, for the sections that watch them.

import { readdirSync, readFileSync } from 'node:fs';

export interface RunningProcess {
  pid: string;
  argv: string[];
}

/** Every process with its command line; one gone meanwhile is left out. */
export function runningProcesses(): RunningProcess[] {
  const out: RunningProcess[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      out.push({ pid, argv: readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0') });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
