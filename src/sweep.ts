// poprelay-sweep: removes expired entries; run every minute by cron or a
// systemd timer.

import { sortByAddress } from './address.js';
import { COMMON_OPTIONS, configFrom, nowFrom, out, parseCommandLine, UsageError } from './cli.js';
import { mapSettings, sweepMap, type RelayEntry } from './map.js';
import { actAsMapOwner } from './privilege.js';
import { formatAgo } from './timefmt.js';

export const SWEEP_USAGE = `Usage: poprelay-sweep [--dry-run] [--verbose | --quiet] [--config FILE]

Removes the relay map entries whose last login is older than timeout_minutes.
Entries whose value is not a number (such as OK) are permanent and stay. The
two keys of an IPv6 address are removed together. Entries dated in the future
count as fresh; all-digit values past the year 2286 are invalid and removed.
First it applies any logins still queued beside the map (dbfile.queue), so
none waits longer than a minute. Run it every minute, as the map's owner (scripts/poprelay.cron,
or the systemd timer scripts/poprelay-sweep.timer).

  --dry-run      change nothing; list each entry that would be removed, with its age
  --verbose      also list each removed entry and each entry dated in the future
  --quiet        no summary line (for cron, which mails any output)
  --config FILE  settings file (default: $POPRELAY_CONFIG, else /etc/mail/poprelay.ini)
  --now SECONDS  act as if the time were SECONDS since the epoch (for testing)
  -h, --help     show this text

Output: data and the summary ("MAP: kept K, removed R, permanent P") on
stdout; errors on stderr as "poprelay-sweep: ...".
Exit status: 0 success; 1 error (missing or corrupt map, bad config, map
locked too long); 2 bad usage.
`;

const OPTIONS = {
  ...COMMON_OPTIONS,
  'dry-run': { type: 'boolean' },
  verbose: { type: 'boolean', short: 'v' },
  quiet: { type: 'boolean', short: 'q' },
} as const;

const byAddress = (entries: readonly RelayEntry[]): RelayEntry[] => sortByAddress(entries, (e) => e.address);

export function sweepMain(argv: readonly string[]): number {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, 'poprelay-sweep --help');
  if (values.help === true) {
    process.stdout.write(SWEEP_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}; see poprelay-sweep --help`);
  if (values.verbose === true && values.quiet === true) throw new UsageError('--verbose and --quiet exclude each other');
  const now = nowFrom(values);
  const cfg = configFrom(values);
  actAsMapOwner(cfg.dbfile);
  const dryRun = values['dry-run'] === true;
  const report = sweepMap(mapSettings(cfg), { now, timeoutSeconds: cfg.timeoutMinutes * 60, dryRun });
  const ago = (e: RelayEntry): string => formatAgo(e.time ?? now, now);
  const verb = dryRun ? 'would remove' : 'removed';
  if (dryRun || values.verbose === true) {
    for (const e of byAddress(report.removed)) out(`${verb} ${e.address} (last login ${ago(e)})`);
  }
  if (values.verbose === true) {
    for (const e of byAddress(report.future)) out(`kept ${e.address}: last login ${ago(e)} (clock skew?); counted as fresh`);
  }
  if (values.quiet !== true) {
    out(`${dryRun ? 'dry run, ' : ''}${cfg.dbfile}: kept ${report.kept}, ${verb} ${report.removed.length}, permanent ${report.permanent}`);
  }
  return 0;
}
