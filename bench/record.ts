// Section 2 of npm run bench: what one recording costs against the map's
// size, in-process and as the hook process run by hand.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { parseClientAddress } from '../src/address.js';
import { recordLogin } from '../src/map/relay-map.js';
import { appCopy } from '../test/support/app.js';
import { makemapSized, settings } from '../test/support/maps.js';
import { safeDir } from '../test/support/tmp.js';
import { header, ms, row, stats, timeRuns, type Verdict } from './report.js';

export async function recordSection(verdict: Verdict, now: number): Promise<string[]> {
  const md: string[] = [];
  md.push('', '## 2. Record cost against map size', '');
  md.push(
    'In-process: one `recordLogin` (lock, copy, change, fsync, rename) on a map of that size, 30 times.',
    'End to end: the hook run by hand (`IP=... poprelay-login`), 30 times, which is what its process costs',
    '(the login itself does not wait for it: the front continues the login first; see section 1).',
    '',
    ...header(['entries', 'file', 'in-process median', 'p90', 'hook process median', 'p90'], 0),
  );
  const recordMed: Record<number, [number, number]> = {};
  for (const n of [10, 10_000, 100_000]) {
    const dir = safeDir();
    const map = join(dir, 'popip.db');
    await makemapSized(map, n, now);
    const s = settings(dir, 'popip.db', { lockTimeoutMs: 5000 });
    const inproc: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      recordLogin(s, parseClientAddress(`172.20.0.${i + 1}`), now);
      inproc.push(performance.now() - t0);
    }
    const ini = join(dir, 'p.ini');
    writeFileSync(ini, `dbfile = ${map}\nignore =\nlog_recorded = no\n`);
    const hook = timeRuns(30, join(appCopy(), 'bin/poprelay-login'), ['--config', ini], { IP: '172.20.1.1' });
    const a = stats(inproc);
    const b = stats(hook);
    recordMed[n] = [a.median, b.median];
    md.push(
      row([
        n.toLocaleString('en'),
        `${(Number(execFileSync('stat', ['-c', '%s', map], { encoding: 'utf8' })) / 1024).toFixed(0)} KiB`,
        ms(a.median),
        ms(a.p90),
        ms(b.median),
        ms(b.p90),
      ]),
    );
  }
  const r10 = recordMed[10] ?? [1, 1];
  const r100k = recordMed[100_000] ?? [1, 1];
  md.push(
    '',
    `100,000 entries against 10 (target: at most 1.1): in-process ${(r100k[0] / r10[0]).toFixed(2)}x, hook process ${(r100k[1] / r10[1]).toFixed(2)}x.`,
  );
  const copyWhy =
    'By design: every write copies the map, changes the copy, fsyncs it and renames it into place (docs/design.md), so its cost grows with ' +
    'the file (section 2, in-process). In-place updates would be O(1) but a writer killed between page writes corrupts the map ' +
    '(shown with strace fault injection) and unlocked readers such as Exim could read half-written pages. The login does not pay this: ' +
    'the front hands the login on before the recording starts (section 1, 100,000-entry map row).';
  verdict('record, 100,000 entries against 10, hook process', r100k[1] / r10[1], 1.1, copyWhy);
  verdict('record, 100,000 entries against 10, in-process', r100k[0] / r10[0], 1.1, copyWhy);
  return md;
}
