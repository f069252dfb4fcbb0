// Section 3 of npm run bench: the sweep against db5.3_dump reading the same
// map, and a login recording while the sweep runs.

import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { makemapSized } from '../test/support/maps.js';
import { BIN } from '../test/support/paths.js';
import { mapop } from '../test/support/processes.js';
import { safeDir } from '../test/support/tmp.js';
import { header, ms, row, stats, timeRuns, type Verdict } from './report.js';

export async function sweepSection(verdict: Verdict, now: number): Promise<string[]> {
  const md: string[] = [];
  md.push(
    '',
    '## 3. Sweep cost',
    '',
    'Maps made by makemap, half the entries expired. `db5.3_dump` reads the same map as the C baseline. The',
    'sweep runs on a fresh copy each time (3 runs). "Record during sweep" is a separate process recording',
    "an address every 100 ms (10 logins a second) while the sweep runs: each record's time, lock wait included.",
    '',
    ...header(
      [
        'entries',
        'db5.3_dump median',
        'poprelay-sweep median',
        'ratio (target ≤ 3)',
        'record idle, median',
        'record during sweep, median',
        'max',
      ],
      0,
    ),
  );
  for (const n of [100_000, 1_000_000]) {
    const dir = safeDir();
    const orig = join(dir, 'orig.db');
    await makemapSized(orig, n, now, 2);
    const map = join(dir, 'popip.db');
    const ini = join(dir, 'p.ini');
    writeFileSync(ini, `dbfile = ${map}\nignore =\n`);
    const dump = stats(timeRuns(3, 'db5.3_dump', [orig]).map((x) => x)).median;
    const sweeps: number[] = [];
    for (let i = 0; i < 3; i++) {
      copyFileSync(orig, map);
      sweeps.push(...timeRuns(1, process.execPath, [BIN.sweep, '--quiet', '--config', ini]));
    }
    copyFileSync(orig, map);
    const idle = await mapop(['record-loop', map, '1000']);
    copyFileSync(orig, map);
    const during = mapop(['record-loop', map, String(Math.max(2000, stats(sweeps).median))]);
    await new Promise((r) => setTimeout(r, 200));
    timeRuns(1, process.execPath, [BIN.sweep, '--quiet', '--config', ini]);
    const rec = (await during).ok as number[];
    const sw = stats(sweeps).median;
    md.push(
      row([
        n.toLocaleString('en'),
        ms(dump),
        ms(sw),
        (sw / dump).toFixed(2),
        ms(stats(idle.ok as number[]).median),
        ms(stats(rec).median),
        ms(Math.max(...rec)),
      ]),
    );
    verdict(
      `sweep of ${n.toLocaleString('en')} entries against db5.3_dump`,
      sw / dump,
      3,
      `poprelay-sweep pays Node's start-up (section 5: about ${ms(stats(timeRuns(10, process.execPath, ['-e', ''])).median)} ms) that the C tool does not, and removes in locked batches of about 200 ms, each copying the map.`,
    );
  }
  return md;
}
