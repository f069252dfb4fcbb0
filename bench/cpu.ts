// Section: the CPU one recording costs (user + sys of every process of the
// hook), side by side with a bare Node start, in one interleaved run.

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { appCopy, installHook } from '../test/support/app.js';
import { safeDir } from '../test/support/tmp.js';
import { header, ms, row, stats, type Verdict } from './report.js';

const RUNS = 100;
const CROWD = 50;
const CROWD_RUNS = 10;

/** User + sys milliseconds of a command and all its children, from bash's `times` (millisecond resolution). */
async function cpuOf(cmd: string[], env: NodeJS.ProcessEnv): Promise<number> {
  // Asynchronous, so that the bench's runner stays responsive through the section.
  const { stdout: out } = await promisify(execFile)(
    'bash',
    ['-c', '"$@" </dev/null >/dev/null 2>&1; times', 'cpu', ...cmd],
    { env, encoding: 'utf8' },
  );
  const children = out.trim().split('\n')[1] ?? '';
  const secs = [...children.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  return ((secs[0] ?? NaN) + (secs[1] ?? NaN)) * 1000;
}

export async function cpuSection(verdict: Verdict): Promise<string[]> {
  const dir = safeDir();
  const ini = join(dir, 'poprelay.ini');
  // refresh_seconds = 0: every run writes the map, the most a recording does.
  writeFileSync(
    ini,
    `dbfile = ${join(dir, 'popip.db')}\nignore =\nlog_recorded = no\nrefresh_seconds = 0\nrecorder_idle_seconds = 0\n`,
  );
  // The login queue as `poprelay init` leaves it: the front's own, 0700.
  const queue = join(dir, 'popip.db.queue');
  mkdirSync(queue, { mode: 0o700 });
  const hook = installHook(dir);
  const recorder = join(appCopy(), 'dist/poprelay-login.cjs');
  // How the front starts the recorder: recorder.conf beside it.
  const flags = /^flags=(.*)$/m.exec(readFileSync(join(dir, 'recorder.conf'), 'utf8'))?.[1]?.split(' ') ?? [];
  const variants: Array<[string, string[]]> = [
    ['`node -e 0`', [process.execPath, '-e', '0']],
    [
      'poprelay-login as Dovecot runs it (the front, the continued login `/bin/true`, the recorder)',
      [hook, '--config', ini, '--queue', queue, '/bin/true'],
    ],
    [`the recorder alone (\`node ${flags.join(' ')}\`)`, [process.execPath, ...flags, recorder, '--config', ini]],
    ['the recorder alone, with the JIT', [process.execPath, recorder, '--config', ini]],
  ];
  const env = { IP: '192.0.2.77', MALLOC_ARENA_MAX: '1', PATH: process.env.PATH ?? '/usr/bin:/bin' };
  const cpu = variants.map((): number[] => []);
  for (let i = 0; i < RUNS; i++) for (const [v, [, cmd]] of variants.entries()) cpu[v]?.push(await cpuOf(cmd, env));
  const base = stats(cpu[0] ?? []).median;
  const md = [
    '## 5. CPU per recording',
    '',
    `User + system CPU of every process involved (bash \`times\` over its children), ${RUNS} runs of each, interleaved;`,
    'every run writes the map (10 entries, `refresh_seconds = 0`) and starts and ends its own recorder (`recorder_idle_seconds = 0`). Milliseconds. The recorder is one bundled CommonJS',
    'file that loads no node:child_process, node:crypto or node:net (docs/design.md). Target: the hook as Dovecot runs',
    'it at most 1.25 times a bare `node -e 0`.',
    '',
    ...header(['process', 'median', 'p90', 'ratio to node -e 0']),
  ];
  variants.forEach(([label], v) => {
    const s = stats(cpu[v] ?? []);
    md.push(row([label, ms(s.median), ms(s.p90), (s.median / base).toFixed(2)]));
  });
  // A crowd: the same hook for CROWD logins started at once; all its CPU over CROWD.
  const crowdCpu: number[] = [];
  for (let i = 0; i < CROWD_RUNS; i++) {
    const script = `for i in $(seq ${CROWD}); do IP=192.0.3.$i "$@" & done; wait`;
    crowdCpu.push(
      (await cpuOf(['bash', '-c', script, 'crowd', hook, '--config', ini, '--queue', queue, '/bin/true'], env)) / CROWD,
    );
  }
  const c = stats(crowdCpu);
  md.push(
    row([
      `the same, ${CROWD} logins started at once (${CROWD_RUNS} runs), per login`,
      ms(c.median),
      ms(c.p90),
      (c.median / base).toFixed(2),
    ]),
  );
  verdict(
    'CPU per recording, the hook as Dovecot runs it, against `node -e 0`',
    stats(cpu[1] ?? []).median / base,
    1.25,
    'the recording itself (config, libdb, a copy of the map with fsyncs) adds to the start-up.',
  );
  return md;
}
