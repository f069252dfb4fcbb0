// poprelay stats: the relay set in numbers, and what the last sweep did.

import { out, outJson } from '../cli.js';
import { entryStats, mapStats } from '../map/stats.js';
import { formatAgo, formatTime } from '../timefmt.js';
import { JSON_OPTION, type Command } from './command.js';
import { sharedAddresses } from './shared-addresses.js';

export const STATS_COMMAND: Command = {
  synopsis: '[--json]',
  summary: 'counts, map size, oldest and newest entry',
  usage: `Usage: poprelay stats [--json] [--config FILE]

Counts the entries (dated, permanent, and expired but not yet swept), and
shows the map's size, its oldest and newest dated entry, the logins queued
beside the map and not yet in it, the logins the hook could not record, and
what the last sweep did, and with shared_address_users the addresses it
stops now. The sweep's metrics_file carries the same numbers.
  --json   one JSON object instead of text`,
  args: [],
  options: JSON_OPTION,
  run: async (ctx) => {
    const cfg = ctx.config();
    const s = cfg.map;
    const when = (e: { address: string; lastLogin: number } | null): string =>
      e === null ? '-' : `${e.address}, last login ${formatTime(e.lastLogin)} (${formatAgo(e.lastLogin, ctx.now)})`;
    const shared = cfg.sharedAddressUsers === null ? null : await sharedAddresses(cfg, ctx.now);
    const sharedLine = (): void => {
      if (shared !== null)
        out(
          `shared:     ${shared.size} address${shared.size === 1 ? '' : 'es'} with more than shared_address_users = ${cfg.sharedAddressUsers} users, not relaying${shared.size === 0 ? '' : `: ${[...shared.keys()].slice(0, 10).join(', ')}${shared.size > 10 ? ', ...' : ''}`}`,
        );
    };
    if (cfg.engine !== null) {
      // The engine expires entries itself: nothing is queued, expired or swept there.
      const store = await ctx.store();
      const stats = {
        engine: store.where,
        ...entryStats(await store.entries(), ctx.now, s.timeoutSeconds),
        ...(shared === null ? {} : { shared: shared.size, sharedAddresses: [...shared.keys()] }),
      };
      if (ctx.values.json === true) outJson(stats);
      else {
        out(`engine:     ${stats.engine}`);
        out(`entries:    ${stats.entries} (${stats.dated} dated, ${stats.permanent} permanent)`);
        out(`oldest:     ${when(stats.oldest)}`);
        out(`newest:     ${when(stats.newest)}`);
        sharedLine();
      }
      return 0;
    }
    const stats = {
      ...mapStats(s, ctx.now),
      ...(shared === null ? {} : { shared: shared.size, sharedAddresses: [...shared.keys()] }),
    };
    if (ctx.values.json === true) {
      outJson(stats);
      return 0;
    }
    out(`map:        ${stats.map} (${stats.type}, ${stats.bytes} bytes)`);
    out(`entries:    ${stats.entries} (${stats.dated} dated, ${stats.permanent} permanent; ${stats.keys} keys)`);
    out(`expired:    ${stats.expired} (older than ${s.timeoutSeconds / 60} minutes, removed by the next sweep)`);
    out(`oldest:     ${when(stats.oldest)}`);
    out(`newest:     ${when(stats.newest)}`);
    out(
      `queued:     ${stats.queued} login${stats.queued === 1 ? '' : 's'} not yet in the map${stats.oldestQueued === null ? '' : `; oldest ${when(stats.oldestQueued)}`}`,
    );
    out(
      `failures:   ${stats.recordingFailuresTotal} login${stats.recordingFailuresTotal === 1 ? '' : 's'} the hook could not record (in all)`,
    );
    const last = stats.lastSweep;
    const failures = (n: number): string => `${n} recording failure${n === 1 ? '' : 's'}`;
    const sweep =
      last === null
        ? '-'
        : `${formatTime(last.at)} (${formatAgo(last.at, ctx.now)}): removed ${last.removed}, ` +
          `refreshed ${last.refreshed} live, ${failures(last.failures)} since the one before, took ${last.durationSeconds} s`;
    out(`last sweep: ${sweep}`);
    sharedLine();
    return 0;
  },
};
