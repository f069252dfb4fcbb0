// Section 3 of npm run bench: the sweep against db5.3_dump reading the same
// map, the copies of the map it makes, and logins made while it runs.

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

import { makemapSized } from '../test/support/maps.js';
import { BIN, ROOT } from '../test/support/paths.js';
import { safeDir } from '../test/support/tmp.js';
import { header, ms, row, stats, timeRuns, type Verdict } from './report.js';

const RUNS = 3;
const TARGET = 1.5;

/**
 * Logins every 100 ms (a busy server's 10 a second) for `forMs`, each from a
 * new address: "record" waits for the lock and writes, as `poprelay add`
 * does; "queue" queues the login as the hook does and, when the lock is
 * taken, leaves it to the holder, then looks up the map until the address
 * is there. Prints [start (epoch ms), milliseconds until it was in the
 * published map] for each.
 */
const LOGIN_LOOP = `
import { queueLogin, recordLogin } from ${JSON.stringify(join(ROOT, 'dist/map/relay-map.js'))};
import { lookupKeys } from ${JSON.stringify(join(ROOT, 'dist/map/file.js'))};
import { parseClientAddress } from ${JSON.stringify(join(ROOT, 'dist/address.js'))};
const [mode, path, forMs] = process.argv.slice(1);
const s = { path, type: 'hash', lockTimeoutMs: 30000, mode: 0o644, timeoutSeconds: 900 };
const sleep = (n) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Math.max(0, n));
const out = [];
const end = Date.now() + Number(forMs);
for (let i = 0; Date.now() < end; i++) {
  const addr = parseClientAddress('172.16.' + ((i >> 8) & 255) + '.' + (i & 255));
  const at = Date.now();
  const t0 = performance.now();
  if (mode === 'record') recordLogin(s, addr, Math.floor(at / 1000));
  else {
    queueLogin(s, addr, Math.floor(at / 1000), 0);
    while ((lookupKeys(s, addr.keys)?.[0] ?? null) === null) sleep(2);
  }
  const took = performance.now() - t0;
  out.push([at, took]);
  sleep(100 - took);
}
process.stdout.write(JSON.stringify(out));
`;

type Login = [number, number];

/** A map of `n` IPv6 addresses, both keys of each (sendmail's and the compressed form), every other one two hours old. */
async function makemapIPv6(path: string, n: number, now: number): Promise<void> {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const g = [0x2001, 0xdb8, 0, 0, 0, 1, i >> 16, i & 0xffff].map((x) => x.toString(16));
    const time = i % 2 === 0 ? now - 7200 : now;
    lines.push(`ipv6:${g.join(':')} ${time}`, `2001:db8::1:${g[6]}:${g[7]} ${time}`);
  }
  await execa('makemap', ['hash', path.slice(0, -3)], { input: lines.join('\n') + '\n' });
  chmodSync(path, 0o644);
}

/** Runs the sweep once, under strace when `copies` is wanted, and says how long it took and how many copies it published. */
function sweepOnce(bin: string, ini: string, map: string, dir: string): { ms: number; start: number; copies: number } {
  const trace = join(dir, 'renames');
  const start = Date.now();
  const t0 = performance.now();
  const r = spawnSync(
    'strace',
    [
      '-f',
      '-qq',
      '--seccomp-bpf',
      '-e',
      'trace=rename,renameat,renameat2',
      '-o',
      trace,
      process.execPath,
      bin,
      '--quiet',
      '--config',
      ini,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const took = performance.now() - t0;
  if (r.status !== 0) throw new Error(`poprelay-sweep: exit ${r.status}: ${r.stderr}`);
  const copies = readFileSync(trace, 'utf8')
    .split('\n')
    .filter((l) => l.includes(`.poprelay-tmp", "${map}"`)).length;
  return { ms: took, start, copies };
}

/** Starts the login loop, runs one sweep once it is going, and returns the sweep and the logins started during it. */
async function sweepWithLogins(
  mode: 'record' | 'queue',
  bin: string,
  ini: string,
  map: string,
  dir: string,
  forMs: number,
): Promise<{ sweep: ReturnType<typeof sweepOnce>; during: number[] }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', LOGIN_LOOP, mode, map, String(forMs)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => child.on('close', r));
  await new Promise((r) => setTimeout(r, 300));
  const sweep = sweepOnce(bin, ini, map, dir);
  await exited;
  const end = sweep.start + sweep.ms;
  const during = (JSON.parse(out) as Login[]).filter(([at]) => at >= sweep.start && at < end).map(([, t]) => t);
  return { sweep, during };
}

export async function sweepSection(verdict: Verdict, now: number, bin = BIN.sweep): Promise<string[]> {
  const md: string[] = [];
  const cost: string[] = [];
  const logins: string[] = [];
  const maps: Array<{ label: string; n: number; v6: boolean }> = [
    { label: '100,000', n: 100_000, v6: false },
    { label: '1,000,000', n: 1_000_000, v6: false },
    { label: '500,000 IPv6 (1,000,000 keys)', n: 500_000, v6: true },
  ];
  for (const { label, n, v6 } of maps) {
    const dir = safeDir();
    const orig = join(dir, 'orig.db');
    if (v6) await makemapIPv6(orig, n, now);
    else await makemapSized(orig, n, now, 2);
    const map = join(dir, 'popip.db');
    const ini = join(dir, 'p.ini');
    writeFileSync(ini, `dbfile = ${map}\nignore =\nlive_sessions = no\n`);
    // Interleaved, so that both see the machine in the same state.
    const dumps: number[] = [];
    const sweeps: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      dumps.push(...timeRuns(1, 'db5.3_dump', [orig]));
      copyFileSync(orig, map);
      sweeps.push(...timeRuns(1, process.execPath, [bin, '--quiet', '--config', ini]));
    }
    copyFileSync(orig, map);
    const alone = sweepOnce(bin, ini, map, dir);
    const dump = stats(dumps).median;
    const sw = stats(sweeps).median;
    cost.push(
      row([
        label,
        `${(statSync(orig).size / 2 ** 20).toFixed(0)} MiB`,
        ms(dump),
        ms(sw),
        (sw / dump).toFixed(2),
        alone.copies,
      ]),
    );
    verdict(
      `sweep of ${label}${v6 ? '' : ' entries'}, half expired, against db5.3_dump`,
      sw / dump,
      TARGET,
      `poprelay-sweep pays Node's start-up (section 5: about ${ms(stats(timeRuns(10, process.execPath, ['-e', ''])).median)} ms), which weighs more the smaller the map.`,
    );
    if (v6) continue; // the logins below are IPv4: the 1,000,000-entry map shows them
    const forMs = Math.max(3000, 3 * sw + 1000);
    for (const [mode, what] of [
      ['record', 'waits for the lock (`poprelay add`)'],
      ['queue', 'queued, left to the lock holder (the hook)'],
    ] as const) {
      copyFileSync(orig, map);
      const { sweep, during } = await sweepWithLogins(mode, bin, ini, map, dir, forMs);
      const st = stats(during);
      logins.push(
        row([
          label,
          what,
          ms(sweep.ms),
          sweep.copies,
          during.length,
          ms(st.median),
          ms(during.length > 0 ? Math.max(...during) : NaN),
        ]),
      );
    }
  }
  md.push(
    '',
    '## 3. Sweep cost',
    '',
    `Maps made by makemap, half the entries expired (two hours old), the others fresh: IPv4 addresses, and IPv6`,
    `addresses with both their keys (sendmail's and the compressed form: one entry each). \`db5.3_dump\` reads the same map`,
    `as the C baseline; it and the sweep run in turn, ${RUNS} times each, the sweep on a fresh copy of the map each time`,
    '(wall time, Node start-up included, milliseconds). "copies": the copies of the map the sweep published',
    '(renamed into place), counted with strace in a further run.',
    '',
    ...header(
      ['entries', 'file', 'db5.3_dump median', 'poprelay-sweep median', `ratio (target ≤ ${TARGET})`, 'copies'],
      0,
    ),
    ...cost,
    '',
    'Logins during a sweep: a process makes a login from a new address every 100 ms (10 a second) while the sweep',
    'runs, either as `poprelay add` does (it waits for the lock, then writes) or as the hook does (it queues the',
    'login and, finding the lock taken, leaves it to the holder). "wait": from the start of the login until its',
    'address is in the published map, for the logins started while the sweep ran. The sweep here runs under',
    'strace (which counts its copies); it publishes what it has done and lets the writer in only when one waits,',
    'in batches that hold the lock about 200 ms, so a login waits for one batch at most.',
    '',
    ...header(['entries', 'login', 'sweep', 'copies', 'logins during', 'wait median', 'wait max'], 2),
    ...logins,
  );
  return md;
}
