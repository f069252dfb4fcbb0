// Section: a crowd of hook processes started at once, on maps of three
// sizes, side by side with the same crowd of do-nothing Node processes and
// of a poprelayd-style in-place writer (bench/poprelayd-style.pl).

import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { BIN, makemapSized, ROOT, runCrowd, type CrowdResult } from '../test/helpers.js';
import { safeDir } from '../test/peers.js';
import { header, ms, row, stats, type Verdict } from './report.js';

const CROWDS = [50, 200, 500];
const MAPS = [10, 100_000, 1_000_000];
const PERL = join(ROOT, 'bench/poprelayd-style.pl');

const address = (i: number): string => `172.16.${i >> 7}.${(i & 127) + 1}`;

function visibleAfterStart(results: CrowdResult[]): number[] {
  return results.filter((r) => r.visibleMs !== null).map((r) => (r.visibleMs ?? 0) - r.startMs);
}

export async function burstSection(verdict: Verdict): Promise<string[]> {
  const md = [
    '## 4. Bursts: many logins at once',
    '',
    'N hook processes started at the same moment (`IP=... poprelay-login`, as Dovecot would start them for N logins),',
    'from a small launcher (test/fixtures/crowd.mjs) that watches the map: "visible" is when an address is first',
    'found in the published map (looked up after each rename, and every 10 ms). The same N do-nothing Node processes',
    '(`node -e 0`) give the floor: the time the crowd takes just to start and exit. "poprelayd-style" is a Perl hook',
    'that ties the map with DB_File and writes in place under flock, one login at a time. Each run gets a fresh copy',
    'of its map. Milliseconds from each process\'s start. Target: poprelay\'s p99 to visible within 1.25x of the',
    'do-nothing crowd\'s p99 to exit.',
    '',
    ...header(['N', 'map entries', 'variant', 'recorded', 'copies', 'p50', 'p99'], 3),
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
  writeFileSync(ini, `dbfile = ${map}\nignore =\n`);
  const fresh = (n: number): void => {
    copyFileSync(originals.get(n) ?? '', map);
  };

  for (const crowd of CROWDS) {
    const logins = Array.from({ length: crowd }, (_, i) => ({ ip: address(i) }));
    const floor = await runCrowd([process.execPath, '-e', '0'], logins);
    const floorExit = stats(floor.results.map((r) => r.exitMs - r.startMs));
    md.push(row([crowd, '-', 'do-nothing Node (to exit)', '-', '-', ms(floorExit.median), ms(floorExit.p99)]));
    for (const n of MAPS) {
      for (const [label, program] of [
        ['poprelay-login', [BIN.login, '--config', ini]],
        ['poprelayd-style (Perl, in place)', [PERL, map]],
      ] as const) {
        fresh(n);
        const run = await runCrowd([...program], logins, map);
        const seen = stats(visibleAfterStart(run.results));
        const recorded = run.results.filter((r) => r.visibleMs !== null).length;
        md.push(row([crowd, n.toLocaleString('en'), label, `${recorded}/${crowd}`, label.startsWith('poprelay-login') ? run.copies : 'in place', ms(seen.median), ms(seen.p99)]));
        if (label === 'poprelay-login') {
          verdict(
            `burst of ${crowd} on ${n.toLocaleString('en')} entries: p99 to visible against the do-nothing crowd's p99 to exit`,
            seen.p99 / floorExit.p99,
            1.25,
            'each hook runs longer than `node -e 0` (it loads the config, libdb and the map code), and the last logins of a crowd wait for one more copy of the map.',
          );
        }
      }
    }
  }
  return md;
}
