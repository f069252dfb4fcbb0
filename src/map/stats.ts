// The numbers that describe the relay set, in one place: `poprelay stats`
// prints them and the sweep writes them as Prometheus metrics
// (metrics_file), so the two always agree.

import { lstatSync } from 'node:fs';

import type { Config, MapSettings } from '../config.js';
import { failuresSoFar } from './failures.js';
import { readEntries, readQueued, type RelayEntry } from './relay-map.js';
import { readRegularText, replaceFile } from '../safefs.js';

/** What the last sweep did, kept beside the map in <dbfile>.sweep (JSON). */
export interface SweepRecord {
  /** Unix seconds when it finished. */
  at: number;
  removed: number;
  refreshed: number;
  durationSeconds: number;
  /** The hook's failure count when it ran. */
  failuresTotal: number;
  /** Failures the hook counted between the sweep before it and this one. */
  failures: number;
}

interface Edge {
  address: string;
  lastLogin: number;
}

/** What any relay set's entries say: counts, and the oldest and newest login. */
export interface EntryStats {
  entries: number;
  keys: number;
  dated: number;
  permanent: number;
  expired: number;
  oldest: Edge | null;
  newest: Edge | null;
}

export interface MapStats extends EntryStats {
  map: string;
  type: string;
  bytes: number;
  queued: number;
  oldestQueued: Edge | null;
  /** Recording failures the hook counted, in all (the last sweep has those since the one before). */
  recordingFailuresTotal: number;
  lastSweep: SweepRecord | null;
  /** Addresses over shared_address_users now (who journal); absent when it is off. */
  shared?: number;
}

export function sweepRecordFile(dbfile: string): string {
  return `${dbfile}.sweep`;
}

/** The last sweep's record; null when there is none or it is not one (the directory is the hook user's). */
export function readSweepRecord(dbfile: string): SweepRecord | null {
  let text: string | null;
  try {
    text = readRegularText(sweepRecordFile(dbfile));
  } catch {
    return null;
  }
  if (text === null) return null;
  try {
    const r = JSON.parse(text) as Record<string, unknown>;
    const n = (f: keyof SweepRecord): number =>
      typeof r[f] === 'number' && Number.isFinite(r[f]) ? Number(r[f]) : NaN;
    const rec: SweepRecord = {
      at: n('at'),
      removed: n('removed'),
      refreshed: n('refreshed'),
      durationSeconds: n('durationSeconds'),
      failuresTotal: n('failuresTotal'),
      failures: n('failures'),
    };
    return Object.values(rec).every((v) => !Number.isNaN(v)) ? rec : null;
  } catch {
    return null;
  }
}

/** The numbers the metrics carry. */
export type MetricNumbers = Pick<
  MapStats,
  'dated' | 'permanent' | 'bytes' | 'queued' | 'oldestQueued' | 'recordingFailuresTotal' | 'lastSweep' | 'shared'
>;

/** What costs no walk of the map: its size, the queue, the failures, the last sweep. */
function besideTheMap(
  s: MapSettings,
): Pick<MapStats, 'bytes' | 'queued' | 'oldestQueued' | 'recordingFailuresTotal' | 'lastSweep'> {
  const queued = readQueued(s).sort((a, b) => a.time - b.time);
  return {
    bytes: lstatSync(s.path).size,
    queued: queued.length,
    oldestQueued: queued[0] === undefined ? null : { address: queued[0].address.text, lastLogin: queued[0].time },
    recordingFailuresTotal: failuresSoFar(s.path),
    lastSweep: readSweepRecord(s.path),
  };
}

export function entryStats(entries: readonly RelayEntry[], now: number, timeoutSeconds: number): EntryStats {
  const dated = entries
    .filter((e): e is RelayEntry & { time: number } => e.time !== null)
    .sort((a, b) => a.time - b.time);
  const timed = dated.filter((e) => e.invalid !== true); // an invalid value has no time to show
  const edge = (e: (RelayEntry & { time: number }) | undefined): Edge | null =>
    e === undefined ? null : { address: e.address, lastLogin: e.time };
  return {
    entries: entries.length,
    keys: entries.reduce((n, e) => n + e.keys.length, 0),
    dated: dated.length,
    permanent: entries.length - dated.length,
    expired: dated.filter((e) => now - e.time > timeoutSeconds).length,
    oldest: edge(timed[0]),
    newest: edge(timed[timed.length - 1]),
  };
}

export function mapStats(s: MapSettings, now: number): MapStats {
  const entries = readEntries(s); // counted, not listed: no address sort
  const { bytes, ...rest } = besideTheMap(s);
  return { map: s.path, type: s.type, bytes, ...entryStats(entries, now, s.timeoutSeconds), ...rest };
}

/** The stats in the Prometheus text exposition format (node_exporter's textfile collector). */
export function prometheusText(st: MetricNumbers, now: number): string {
  const lines: string[] = [];
  const metric = (name: string, type: 'gauge' | 'counter', help: string, samples: Array<[string, number]>): void => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) lines.push(`${name}${labels} ${v}`);
  };
  metric(
    'poprelay_entries',
    'gauge',
    'Addresses in the relay map, by kind; queued: logins beside the map not yet in it.',
    [
      ['{kind="dated"}', st.dated],
      ['{kind="permanent"}', st.permanent],
      ['{kind="queued"}', st.queued],
    ],
  );
  metric('poprelay_map_bytes', 'gauge', 'Size of the relay map file.', [['', st.bytes]]);
  metric(
    'poprelay_queue_oldest_age_seconds',
    'gauge',
    'Age of the oldest login queued beside the map; 0 when none is.',
    [['', st.oldestQueued === null ? 0 : Math.max(0, now - st.oldestQueued.lastLogin)]],
  );
  metric('poprelay_recording_failures_total', 'counter', 'Logins the hook could not record.', [
    ['', st.recordingFailuresTotal],
  ]);
  if (st.shared !== undefined)
    metric(
      'poprelay_shared_addresses',
      'gauge',
      'Addresses with more users than shared_address_users within the timeout: they may not relay.',
      [['', st.shared]],
    );
  if (st.lastSweep !== null) {
    metric(
      'poprelay_sweep_recording_failures',
      'gauge',
      'Logins the hook could not record between the last two sweeps.',
      [['', st.lastSweep.failures]],
    );
    metric('poprelay_sweep_removed', 'gauge', 'Entries the last sweep removed.', [['', st.lastSweep.removed]]);
    metric('poprelay_sweep_refreshed', 'gauge', 'Addresses with a live session the last sweep refreshed.', [
      ['', st.lastSweep.refreshed],
    ]);
    metric('poprelay_sweep_duration_seconds', 'gauge', 'How long the last sweep took.', [
      ['', st.lastSweep.durationSeconds],
    ]);
    metric('poprelay_sweep_timestamp_seconds', 'gauge', 'When the last sweep finished (Unix time).', [
      ['', st.lastSweep.at],
    ]);
  }
  return `${lines.join('\n')}\n`;
}

/**
 * What the sweep leaves behind: its record beside the map (poprelay stats
 * reads it) and, with metrics_file, the metrics. The entry counts are the
 * sweep's own (it has just walked the map; a 1,000,000-entry map is not read
 * twice). The failures it reports are those counted since the record the
 * sweep before it left.
 */
export function recordSweep(
  cfg: Config,
  now: number,
  done: Omit<SweepRecord, 'failuresTotal' | 'failures'>,
  counts: Pick<MapStats, 'dated' | 'permanent' | 'shared'>,
): void {
  const beside = besideTheMap(cfg.map);
  const total = beside.recordingFailuresTotal;
  // A count below the last one means the file was removed: counting starts again.
  const previous = Math.min(total, beside.lastSweep?.failuresTotal ?? 0);
  const record: SweepRecord = { ...done, failuresTotal: total, failures: total - previous };
  replaceFile(sweepRecordFile(cfg.map.path), `${JSON.stringify(record)}\n`, 0o644);
  if (cfg.metricsFile !== null)
    replaceFile(cfg.metricsFile, prometheusText({ ...counts, ...beside, lastSweep: record }, now), 0o644);
}
