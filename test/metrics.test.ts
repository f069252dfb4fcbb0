// The sweep's metrics_file (Prometheus text format) and `poprelay stats
// --json` carry the same numbers; the hook counts the logins it could not
// record, and the sweep reports those since the sweep before it.

import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { describe, expect, it } from 'vitest';

import type { MapStats } from '../src/map/stats.js';
import { configured } from './support/maps.js';
import { BIN } from './support/paths.js';
import { run } from './support/processes.js';

const T = Math.floor(Date.now() / 1000);

/** Each sample of the file as "name{labels}" -> value, after parsing it as Prometheus would. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const family of parsePrometheusTextFormat(text)) {
    for (const m of family.metrics) {
      const labels = Object.entries(m.labels ?? {})
        .map(([k, v]) => `${k}="${v}"`)
        .join(',');
      out.set(labels === '' ? family.name : `${family.name}{${labels}}`, Number(m.value));
    }
  }
  return out;
}

describe('metrics_file', () => {
  it('parses as Prometheus text, and its numbers are those of poprelay stats --json', async () => {
    const { dir, ini, map } = configured();
    const metrics = join(dir, 'poprelay.prom');
    writeFileSync(ini, `${readFileSync(ini, 'utf8')}metrics_file = ${metrics}\n`);
    const hook = (ip: string) => run(BIN.login, ['--config', ini], { env: { IP: ip } });

    // Two logins the hook cannot record (the map is not a map), counted beside
    // it; they stay queued and go in with the first write to a good map.
    writeFileSync(map, Buffer.alloc(4096, 7));
    expect((await hook('192.0.2.1')).code).toBe(1);
    expect((await hook('192.0.2.2')).code).toBe(1);
    expect(readFileSync(`${map}.failures`, 'latin1')).toBe('xx');
    rmSync(map);
    for (const [args, code] of [
      [['add', '192.0.2.10', '--now', String(T - 3600)], 0],
      [['add', '192.0.2.11', '--now', String(T - 60)], 0],
      [['add', '2001:db8::12', '--now', String(T - 30)], 0],
      [['add', '192.0.2.13', '--permanent'], 0],
    ] as const)
      expect((await run(BIN.admin, [...args, '--config', ini])).code).toBe(code);

    const swept = await run(BIN.sweep, ['--config', ini, '--now', String(T)]);
    expect(swept.stderr).toBe('');
    const m = samples(readFileSync(metrics, 'utf8'));
    const stats = JSON.parse(
      (await run(BIN.admin, ['stats', '--json', '--config', ini, '--now', String(T)])).stdout,
    ) as MapStats;
    expect(stats.lastSweep).not.toBeNull();
    const last = stats.lastSweep ?? {
      removed: NaN,
      refreshed: NaN,
      durationSeconds: NaN,
      failures: NaN,
      at: NaN,
      failuresTotal: NaN,
    };
    expect(Object.fromEntries(m)).toEqual({
      'poprelay_entries{kind="dated"}': stats.dated,
      'poprelay_entries{kind="permanent"}': stats.permanent,
      'poprelay_entries{kind="queued"}': stats.queued,
      poprelay_map_bytes: stats.bytes,
      poprelay_queue_oldest_age_seconds: 0,
      poprelay_recording_failures_total: stats.recordingFailuresTotal,
      poprelay_sweep_recording_failures: last.failures,
      poprelay_sweep_removed: last.removed,
      poprelay_sweep_refreshed: last.refreshed,
      poprelay_sweep_duration_seconds: last.durationSeconds,
      poprelay_sweep_timestamp_seconds: last.at,
    });
    // And the numbers themselves: the hour-old entry went; the two queued logins, two dated and one permanent stay.
    expect([stats.dated, stats.permanent, last.removed, last.at]).toEqual([4, 1, 1, T]);
    expect([stats.recordingFailuresTotal, last.failures]).toEqual([2, 2]);
    expect(last.durationSeconds).toBeGreaterThan(0);

    // The next sweep saw no new failure; the total stays.
    await run(BIN.sweep, ['--config', ini, '--now', String(T + 60)]);
    const next = samples(readFileSync(metrics, 'utf8'));
    expect([next.get('poprelay_sweep_recording_failures'), next.get('poprelay_recording_failures_total')]).toEqual([
      0, 2,
    ]);
  });
});
