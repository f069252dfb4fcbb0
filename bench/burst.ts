// Section: a crowd of logins' post-login scripts started at once, on maps
// of three sizes: poprelay-login as Dovecot runs it (cold, and with a
// recorder already waiting) side by side with the same crowd of do-nothing
// `/bin/sh exec "$@"` scripts, the fair floor now that the compiled front is
// what a login waits for.

import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { execa } from 'execa';

import { lookupKeys } from '../src/map/file.js';
import { installHook } from '../test/support/app.js';
import { PASSWORD, startDovecot } from '../test/support/dovecot.js';
import { pop3Login } from '../test/support/mailclient.js';
import { makemapSized, settings } from '../test/support/maps.js';
import { runningProcesses } from './processes.js';
import { safeDir } from '../test/support/tmp.js';
import { header, ms, row, stats, type Verdict } from './report.js';

const CROWDS = [50, 200, 500];
const MAPS = [10, 100_000, 1_000_000];
/** The target: p99 start to visible at most this many times the sh crowd's p99 start to exit. */
const FLOOR_TIMES = 3;

const address = (i: number): string => `172.16.${i >> 7}.${(i & 127) + 1}`;

/**
 * The launcher: forks one process per line of IPS (with only IP= in its
 * environment, as Dovecot gives no PATH), as fast as a small Perl forks,
 * reaping between forks, and prints for each "index start exit status" in
 * seconds of CLOCK_MONOTONIC (process.hrtime's clock). Reaping as children
 * exit times each exit to within one fork.
 */
const LAUNCHER = String.raw`use strict;
use warnings;
use POSIX qw(:sys_wait_h _exit);
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);
my ($ips, $errors, @program) = @ARGV;
open my $in, '<', $ips or die "$ips: $!";
chomp(my @ip = <$in>);
close $in;
open my $err, '>>', $errors or die "$errors: $!";
my (%index, @start, @exit, @status);
sub reap {
  my ($flags) = @_;
  while ((my $pid = waitpid(-1, $flags)) > 0) {
    my $i = $index{$pid};
    $exit[$i] = clock_gettime(CLOCK_MONOTONIC);
    $status[$i] = $?;
  }
}
for my $i (0 .. $#ip) {
  $start[$i] = clock_gettime(CLOCK_MONOTONIC);
  my $pid = fork // die "fork: $!";
  if ($pid == 0) {
    %ENV = (IP => $ip[$i]);
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', '/dev/null';
    open STDERR, '>&', $err;
    exec { $program[0] } @program or _exit(127);
  }
  $index{$pid} = $i;
  reap(WNOHANG);
}
reap(0);
print "$_ $start[$_] $exit[$_] $status[$_]\n" for 0 .. $#ip;
`;

/** Milliseconds of CLOCK_MONOTONIC, the launcher's clock. */
const clock = (): number => Number(process.hrtime.bigint()) / 1e6;

interface Crowd {
  /** Each login's start, exit and (null if never) first sight in the map, in ms of the launcher's clock. */
  results: Array<{ start: number; exit: number; status: number; visible: number | null }>;
  /** Renames of the map into place while the crowd ran: the recorders' copies. */
  copies: number;
  stderr: string;
}

/**
 * Starts `program` once per address, all at once (bench's LAUNCHER), and
 * with `map`, notes when each address is first found in the published map:
 * looked up after every rename of the map, and every 10 ms, and for up to
 * `afterMs` after the crowd has exited (a recorder that was waiting before
 * the crowd goes on after it).
 */
async function runCrowd(dir: string, program: string[], ips: string[], map?: string, afterMs = 0): Promise<Crowd> {
  const launcher = join(dir, 'launcher.pl');
  writeFileSync(launcher, LAUNCHER);
  writeFileSync(join(dir, 'ips'), `${ips.join('\n')}\n`);
  const errors = join(dir, 'stderr');
  writeFileSync(errors, '');
  const visible = new Map<string, number>();
  let copies = 0;
  const look = (): void => {
    if (map === undefined || visible.size === ips.length) return;
    const pending = ips.filter((ip) => !visible.has(ip));
    let values: Array<string | null> | null = null;
    try {
      values = lookupKeys(settings(dirname(map), basename(map)), pending);
    } catch {
      return; // renamed away meanwhile: the next look finds the new copy
    }
    const t = clock();
    pending.forEach((ip, i) => {
      if (values?.[i] !== null && values?.[i] !== undefined) visible.set(ip, t);
    });
  };
  const watcher =
    map === undefined
      ? null
      : watch(dirname(map), (event, name) => {
          if (event === 'rename' && name === basename(map)) {
            copies++;
            look();
          }
        });
  const timer = map === undefined ? null : setInterval(look, 10);
  let out: string;
  try {
    out = await new Promise<string>((resolve, reject) => {
      const p = spawn('perl', [launcher, join(dir, 'ips'), errors, ...program], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let text = '';
      p.stdout.on('data', (d: Buffer) => (text += d.toString()));
      p.on('error', reject);
      p.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`launcher: exit ${code}`))));
    });
    look();
    const by = performance.now() + afterMs;
    while (visible.size < ips.length && performance.now() < by) await new Promise((r) => setTimeout(r, 10));
  } finally {
    watcher?.close();
    if (timer !== null) clearInterval(timer);
  }
  const results = out
    .trim()
    .split('\n')
    .map((line) => {
      const [i = 0, start = 0, exit = 0, status = 0] = line.split(' ').map(Number);
      return { start: start * 1000, exit: exit * 1000, status, visible: visible.get(ips[i] ?? '') ?? null };
    });
  return { results, copies, stderr: readFileSync(errors, 'utf8') };
}

/** From the crowd's first start to its last: how long the launcher took to start it. */
const spread = (c: Crowd): number =>
  Math.max(...c.results.map((r) => r.start)) - Math.min(...c.results.map((r) => r.start));

export async function burstSection(verdict: Verdict): Promise<string[]> {
  const md = [
    '## 4. Bursts: many logins at once',
    '',
    'N post-login scripts started at once, as Dovecot would start them for N logins, by a small Perl launcher that',
    'forks them one after the other as fast as it can (each with only `IP=` in its environment) and reaps each as it',
    'exits; every variant is started the same way. The floor is a crowd of do-nothing `/bin/sh exec "$@"` scripts',
    'continuing the login (`/bin/true` here): what a login waits for without poprelay. poprelay-login runs as Dovecot',
    'runs it: the compiled front with `--config poprelay.ini --queue <dbfile>.queue /bin/true`, which leaves the',
    'login in the queue and becomes the login, or continues it and runs the recorder. **Cold**:',
    '`recorder_idle_seconds = 0` and no recorder running when the crowd starts (a storm after a quiet spell).',
    '**Warm**: the default `recorder_idle_seconds` (10), with a recorder already waiting, started by one login just',
    "before. Each run gets a fresh copy of its map. Milliseconds from each process's start to its exit, and to its",
    'address being first found in the published map (looked up after each rename of the map into place, and every',
    '10 ms). "recorded": visible once the whole crowd (and so every recorder it started) has exited, or when warm,',
    'within 15 s of that (the recorder waiting before the crowd goes on after it). "copies": the',
    'renames of the map while the crowd ran. "verifies": `db5.3_verify` on the map after the crowd. "started over": from',
    'the crowd\'s first start to its last; "last start to all visible": from then to the last address visible.',
    `Target: poprelay-login's p99 start to visible at most ${FLOOR_TIMES} times the sh crowd's p99 start to exit, every login`,
    'recorded, every map verified.',
    '',
    ...header(
      [
        'N',
        'map entries',
        'variant',
        'recorded',
        'copies',
        'verifies',
        'exit p50',
        'exit p99',
        'visible p50',
        'visible p99',
        `ratio to sh p99 exit (target ${FLOOR_TIMES})`,
        'started over',
        'last start to all visible',
      ],
      3,
    ),
  ];
  const dir = safeDir();
  const originals = new Map<number, string>();
  const now = Math.floor(Date.now() / 1000);
  for (const n of MAPS) {
    const orig = join(dir, `orig-${n}.db`);
    await makemapSized(orig, n, now);
    originals.set(n, orig);
  }
  const work = join(dir, 'work');
  mkdirSync(work, { mode: 0o755 });
  chmodSync(work, 0o755);
  const map = join(dir, 'popip.db');
  const queue = `${map}.queue`;
  // The front as installed: its own recorder.conf, pointing at a copy of the app (a rebuild meanwhile changes nothing).
  const front = installHook(work);
  const shExec = join(work, 'sh-exec');
  writeFileSync(shExec, '#!/bin/sh\nexec "$@"\n', { mode: 0o755 });
  const iniOf = (idle: number): string => {
    const ini = join(dir, `poprelay-${idle}.ini`);
    writeFileSync(
      ini,
      `dbfile = ${map}\nignore =\nlog_recorded = no\nlive_sessions = no\nrecorder_idle_seconds = ${idle}\n`,
    );
    return ini;
  };
  const variants = [
    { label: 'poprelay-login, cold', ini: iniOf(0), warm: false },
    { label: 'poprelay-login, warm', ini: iniOf(10), warm: true },
  ];
  // A fresh map, and an empty queue as `poprelay init` leaves it (0700, the front's own): a login a crowd left
  // queued must not show up as visible in the next run (the addresses repeat).
  const fresh = (n: number): void => {
    copyFileSync(originals.get(n) ?? '', map);
    rmSync(queue, { recursive: true, force: true });
    mkdirSync(queue, { mode: 0o700 });
    chmodSync(queue, 0o700);
  };

  const problems: string[] = [];
  let notRecorded = 0;
  let unverified = 0;
  for (const crowd of CROWDS) {
    const ips = Array.from({ length: crowd }, (_, i) => address(i));
    const floor = await runCrowd(work, [shExec, '/bin/true'], ips);
    const floorExit = stats(floor.results.map((r) => r.exit - r.start));
    md.push(
      row([
        crowd,
        '-',
        '/bin/sh `exec "$@"`',
        '-',
        '-',
        '-',
        ms(floorExit.median),
        ms(floorExit.p99),
        '-',
        '-',
        '-',
        ms(spread(floor)),
        '-',
      ]),
    );
    for (const n of MAPS) {
      for (const v of variants) {
        fresh(n);
        // Warm: one login first, whose recorder then waits for more; its front is stopped after the crowd (the
        // recorder sees it gone within a second and exits).
        let primer: ReturnType<typeof spawn> | null = null;
        if (v.warm) {
          primer = spawn(front, ['--config', v.ini, '--queue', queue, '/bin/true'], {
            env: { IP: '192.0.2.1' },
            stdio: 'ignore',
          });
          const s = settings(dir, 'popip.db');
          const by = performance.now() + 10_000;
          while ((lookupKeys(s, ['192.0.2.1'])?.[0] ?? null) === null && performance.now() < by)
            await new Promise((r) => setTimeout(r, 10));
          // The recorder has recorded the primer and waits (inotify) for the next login.
          await new Promise((r) => setTimeout(r, 200));
        }
        const run = await runCrowd(
          work,
          [front, '--config', v.ini, '--queue', queue, '/bin/true'],
          ips,
          map,
          v.warm ? 15_000 : 0,
        );
        if (primer !== null) {
          if (primer.exitCode === null && primer.signalCode === null) {
            const exited = new Promise((r) => primer?.once('exit', r));
            primer.kill('SIGTERM');
            await exited;
          }
          // Its recorder exits once it finds the front gone (it looks every second).
          const by = performance.now() + 5_000;
          while (runningProcesses().some(({ argv }) => argv.includes(queue)) && performance.now() < by)
            await new Promise((r) => setTimeout(r, 50));
        }
        const seen = stats(run.results.filter((r) => r.visible !== null).map((r) => (r.visible ?? 0) - r.start));
        const exit = stats(run.results.map((r) => r.exit - r.start));
        const recorded = run.results.filter((r) => r.visible !== null).length;
        const failedExits = run.results.filter((r) => r.status !== 0).length;
        const verifies = (await execa('db5.3_verify', ['-q', map], { reject: false })).exitCode === 0;
        if (run.stderr.trim() !== '' || failedExits > 0)
          problems.push(
            `${crowd} on ${n.toLocaleString('en')}, ${v.label}: ${failedExits} exited non-zero; ${run.stderr.trim().split('\n').slice(0, 3).join(' / ')}`,
          );
        const p99 = recorded === crowd ? seen.p99 : Infinity;
        const allVisible = recorded === crowd ? Math.max(...run.results.map((r) => r.visible ?? 0)) : Infinity;
        console.log(`burst of ${crowd} on ${n} entries, ${v.label}: visible p99 ${ms(p99)} ms`);
        const ratio = p99 / floorExit.p99;
        md.push(
          row([
            crowd,
            n.toLocaleString('en'),
            v.label,
            `${recorded}/${crowd}`,
            run.copies,
            verifies ? 'yes' : '**no**',
            ms(exit.median),
            ms(exit.p99),
            ms(seen.median),
            ms(seen.p99),
            `${ratio.toFixed(2)}${ratio <= FLOOR_TIMES ? '' : ' **missed**'}`,
            ms(spread(run)),
            ms(allVisible - Math.max(...run.results.map((r) => r.start))),
          ]),
        );
        const what = `burst of ${crowd} on ${n.toLocaleString('en')} entries, ${v.label}`;
        verdict(
          `${what}: p99 start to visible against the sh crowd's p99 exit`,
          ratio,
          FLOOR_TIMES,
          `the crowd took ${ms(spread(run))} ms to start (the sh crowd: ${ms(spread(floor))}), and the recorder runs at nice 10 and records a crowd once it has passed (${v.warm ? "the waiting recorder's crowd wait, docs/design.md, then a round" : "cold: Node's start waits behind the crowd's processes"}), so the first logins wait for the whole crowd to start: visible p99 is about "started over" plus the catch-up after the last start (${ms(allVisible - Math.max(...run.results.map((r) => r.start)))} ms here, a round that copies the map: 42 MB at 1,000,000 entries). The sh floor's p99 is one process's exit, not the crowd's.`,
        );
        notRecorded += crowd - recorded;
        if (!verifies) unverified++;
      }
    }
  }
  verdict('bursts: logins not recorded, all runs', notRecorded, 0, 'see the recorded column above.');
  verdict('bursts: maps failing db5.3_verify, all runs', unverified, 0, 'see the verifies column above.');
  if (problems.length > 0)
    md.push('', 'Problems the crowds reported (stderr, exit status):', '', ...problems.map((p) => `- ${p}`));
  md.push('', ...(await stormSection()));
  return md;
}

/** Each running recorder's resident memory in KiB: a node process running poprelay-login.cjs . */
function recorders(): number[] {
  const out: number[] = [];
  for (const { pid, argv } of runningProcesses()) {
    const [argv0 = '', ...args] = argv;
    if (!/(^|\/)node$/.test(argv0) || !args.some((a) => a.endsWith('poprelay-login.cjs'))) continue;
    try {
      out.push(Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))?.[1] ?? 0));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const STORM = 500;

/**
 * A storm through Dovecot: STORM POP3 logins at once against one instance
 * configured like dovecot-conf/ (so the post-login service has Dovecot's
 * default process_limit), sampling how many recorders run at once.
 */
export async function stormSection(): Promise<string[]> {
  // The login and mail services get room for the whole storm (with Dovecot's default of 100 each, a third of
  // the logins time out waiting for a greeting, with or without a post-login script); the post-login service
  // keeps the default, as shipped.
  const room = (c: string): string =>
    `${c}\nservice pop3-login {\n  process_limit = ${STORM + 100}\n}\nservice pop3 {\n  process_limit = ${STORM + 100}\n}\n`;
  const dc = await startDovecot({ users: 4, ini: 'ignore =\nlog_recorded = no\n', editConf: room });
  try {
    let peak = 0;
    let peakKib = 0;
    let maxKib = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const rss = recorders();
        peak = Math.max(peak, rss.length);
        peakKib = Math.max(
          peakKib,
          rss.reduce((a, b) => a + b, 0),
        );
        maxKib = Math.max(maxKib, ...rss, 0);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const ips = Array.from({ length: STORM }, (_, i) => `127.50.${i >> 7}.${(i & 127) + 1}`);
    const t0 = performance.now();
    const latencies = await Promise.all(
      ips.map((ip, i) =>
        pop3Login({ ...dc.pop3, localAddress: ip }, `user${i % 4}`, PASSWORD).then(
          (c) => (c.ok ? (c.at[2] ?? NaN) - (c.at[1] ?? NaN) : NaN),
          () => NaN,
        ),
      ),
    );
    const s = { path: dc.mapPath, type: 'hash' as const, lockTimeoutMs: 5000, mode: 0o644, timeoutSeconds: 900 };
    const visible = (): number => (lookupKeys(s, ips) ?? []).filter((v) => v !== null).length;
    const deadline = performance.now() + 120_000;
    while (visible() < STORM && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const allSeen = performance.now() - t0;
    sampling = false;
    await sampler;
    const ok = latencies.filter((t) => !Number.isNaN(t));
    const lat = stats(ok);
    return [
      '### A storm through Dovecot',
      '',
      `${STORM} POP3 logins at once from ${STORM} addresses against one Dovecot 2.3 configured like \`dovecot-conf/\`: the`,
      `post-login service has Dovecot's default process_limit (100); pop3-login and pop3 get ${STORM + 100}, so that the storm`,
      'reaches it (at 100, a third of the logins time out before the greeting, with no post-login script too).',
      'Recorders counted, and their resident memory summed, from /proc every 10 ms. Each recorder holds its post-login',
      'slot until it is done, so Dovecot bounds how many run at once.',
      '',
      ...header(
        [
          'logins',
          'failed',
          'PASS to +OK p50',
          'p99',
          'recorded',
          'all visible after (ms)',
          'peak recorders',
          'their peak memory (MiB)',
          'one recorder, max (MiB)',
        ],
        0,
      ),
      row([
        STORM,
        STORM - ok.length,
        ms(lat.median),
        ms(lat.p99),
        `${visible()}/${STORM}`,
        ms(allSeen),
        peak,
        (peakKib / 1024).toFixed(0),
        (maxKib / 1024).toFixed(1),
      ]),
    ];
  } finally {
    await dc.stop();
  }
}
