// The processes running now, from /proc, for the sections that watch them.

import { readdirSync, readFileSync } from 'node:fs';

export interface RunningProcess {
  pid: string;
  /** The parent's pid. */
  ppid: string;
  argv: string[];
}

/** Every process with its command line; one gone meanwhile is left out. */
export function runningProcesses(): RunningProcess[] {
  const out: RunningProcess[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0');
      // After the command name in parentheses (which may hold anything): the state, then the parent's pid.
      const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
      const ppid = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1] ?? '';
      out.push({ pid, ppid, argv });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
