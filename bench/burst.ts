// Section: a crowd of hook processes started at once, on maps of three
// sizes, side by side with the same crowd of do-nothing Node processes and
// of a poprelayd-style in-place writer (bench/poprelayd-style.pl).

import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

import { lookupKeys } from '../src/mapfile.js';
import { PASSWORD, startDovecot } from '../test/support/dovecot.js';
import { pop3Login } from '../test/support/mailclient.js';
import { makemapSized } from '../test/support/maps.js';
import { BIN, ROOT } from '../test/support/paths.js';
import { type CrowdResult, runCrowd } from '../test/support/processes.js';
import { runningProcesses } from './processes.js';
import { safeDir } from '../test/support/tmp.js';
import { header, ms, row, stats, type Verdict } from './report.js';

const CROWDS = [50, 200, 500];
const MAPS = [10, 100_000, 1_000_000];
const PERL = join(ROOT, 'bench/poprelayd-style.pl');

const DOVECOT_RUNS = 'poprelay-login as Dovecot runs it';

const address = (i: number): string => `172.16.${i >> 7}.${(i & 127) + 1}`;

function visibleAfterStart(results: CrowdResult[]): number[] {
  return results.filter((r) => r.visibleMs !== null).map((r) => (r.visibleMs ?? 0) - r.startMs);
}

export async function burstSection(verdict: Verdict): Promise<string[]> {
  const md = [
    '## 4. Bursts: many logins at once',
    '',
    'N hook processes started at the same moment, as Dovecot would start them for N logins: "as Dovecot runs it" is the',
    'front with a command to continue (`/bin/true` here), which leaves the login in the queue for one recorder at a',
    'time (from cold: `recorder_idle_seconds = 0`, so no recorder waits from an earlier run); "by hand" is `IP=... poprelay-login` with no command, a Node recorder for each login (the path the front',
    'also takes for what it cannot vouch for, such as an unusual user name). All from a small launcher',
    '(test/fixtures/crowd.mjs) that watches the map: "visible" is when an address is first',
    'found in the published map (looked up after each rename, and every 10 ms). The same N do-nothing Node processes',
    '(`node -e 0`) give the floor: the time the crowd takes just to start and exit. "poprelayd-style" is a Perl hook',
    'that ties the map with DB_File and writes in place under flock, one login at a time. Each run gets a fresh copy',
    "of its map. Milliseconds from each process's start, to its exit and to its address being visible. Node's",
    'spawn() returns only once a child has started, so a crowd is started as fast as the machine lets it, not in',
    'one instant; every variant is started the same way. "recorded": visible by the time the crowd\'s last process',
    "exited; a poprelay login still queued then (a lock holder stops applying others' logins after lock_timeout_ms)",
    'goes in with the next writer or the sweep, within a minute. "verifies": `db5.3_verify` on the map after the crowd.',
    "Target: poprelay's p99 to visible, as Dovecot runs it, within 1.25x of the do-nothing crowd's p99 to exit.",
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
  const map = join(dir, 'popip.db');
  const ini = join(dir, 'poprelay.ini');
  writeFileSync(ini, `dbfile = ${map}\nignore =\nrecorder_idle_seconds = 0\n`);
  // A fresh map and an empty queue: a login a crowd left queued must not
  // show up as visible in the next run (the addresses repeat).
  const fresh = (n: number): void => {
    copyFileSync(originals.get(n) ?? '', map);
    rmSync(`${map}.queue`, { recursive: true, force: true });
  };

  for (const crowd of CROWDS) {
    const logins = Array.from({ length: crowd }, (_, i) => ({ ip: address(i) }));
    const floor = await runCrowd([process.execPath, '-e', '0'], logins);
    const floorExit = stats(floor.results.map((r) => r.exitMs - r.startMs));
    md.push(row([crowd, '-', 'do-nothing Node', '-', '-', '-', ms(floorExit.median), ms(floorExit.p99), '-', '-']));
    for (const n of MAPS) {
      for (const [label, program] of [
        [DOVECOT_RUNS, [BIN.login, '--config', ini, '/bin/true']],
        ['poprelay-login by hand', [BIN.login, '--config', ini]],
        ['poprelayd-style (Perl, in place)', [PERL, map]],
      ] as const) {
        fresh(n);
        const run = await runCrowd([...program], logins, map);
        const seen = stats(visibleAfterStart(run.results));
        const exit = stats(run.results.map((r) => r.exitMs - r.startMs));
        const recorded = run.results.filter((r) => r.visibleMs !== null).length;
        const verifies =
          (await execa('db5.3_verify', ['-q', map], { reject: false })).exitCode === 0 ? 'yes' : '**no**';
        md.push(
          row([
            crowd,
            n.toLocaleString('en'),
            label,
            `${recorded}/${crowd}`,
            label.startsWith('poprelay-login') ? run.copies : 'in place',
            verifies,
            ms(exit.median),
            ms(exit.p99),
            ms(seen.median),
            ms(seen.p99),
          ]),
        );
        if (label === DOVECOT_RUNS) {
          verdict(
            `burst of ${crowd} on ${n.toLocaleString('en')} entries: p99 to visible against the do-nothing crowd's p99 to exit`,
            seen.p99 / floorExit.p99,
            1.25,
            'the recorder copies the map for each round of logins it admits (5 MB at 100,000 entries, 42 MB at 1,000,000), so a big map takes longer to catch up with the crowd.',
          );
        }
      }
    }
  }
  md.push('', ...(await stormSection()));
  return md;
}

/** Each running recorder's resident memory in KiB: a node process running poprelay-login.cjs (not the timeout(1) before it). */
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
