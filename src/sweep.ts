// poprelay-sweep: removes expired entries; run every minute by cron or a
// systemd timer.

import { existsSync, lstatSync, unlinkSync } from 'node:fs';

import { addressOfKey, sortByAddress, type ClientAddress } from './address.js';
import { COMMON_OPTIONS, configFrom, nowFrom, out, parseCommandLine, UsageError } from './cli.js';
import { isIgnored, type Config } from './config.js';
import { escapeControls, PoprelayError, quoteUntrusted } from './errors.js';
import { admitIncoming } from './hook/incoming.js';
import { describeUnreadable, liveAddresses } from './hook/live.js';
import type { EngineEndpoint } from './endpoints.js';
import { liveTime, readEntries, sweepMap, type RelayEntry } from './map/relay-map.js';
import { actAsMapOwner } from './privilege.js';
import { recordSweep } from './map/stats.js';
import { describeUsers, removeShared } from './who/shared-address.js';
import { formatAgo } from './timefmt.js';
import { showUser, type UserSeen } from './who/journal.js';
import { sweepWho } from './who/sweep.js';

export const SWEEP_USAGE = `Usage: poprelay-sweep [--dry-run] [--verbose | --quiet] [--config FILE]

Removes the relay map entries whose last login is older than timeout_minutes.
Entries whose value is not a number (such as OK) are permanent and stay. The
two keys of an IPv6 address are removed together. Entries dated in the future
count as fresh; all-digit values past the year 2286 are invalid and removed.
First it applies any logins still queued beside the map (dbfile.queue), so
none waits longer than a minute, and with live_sessions it asks Dovecot
(doveadm who) which addresses have a live POP3 or IMAP session and keeps
each as if it had just logged in. It records what it did beside the map
(dbfile.sweep, shown by poprelay stats) and in metrics_file if set. Run it
every minute as root (/etc/cron.d/poprelay, or the systemd timer
poprelay-sweep.timer): it asks Dovecot, then takes the map owner's
rights for the map.

  --dry-run      change nothing; list each entry that would be removed, with its age
  --verbose      also list each removed entry and each entry dated in the future
  --quiet        no summary line (for cron, which mails any output)
  --config FILE  settings file (default: $POPRELAY_CONFIG, else /etc/poprelay/poprelay.ini,
                 else the older /etc/mail/poprelay.ini)
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

export async function sweepMain(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(argv, OPTIONS, 'poprelay-sweep --help');
  if (values.help === true) {
    process.stdout.write(SWEEP_USAGE);
    return 0;
  }
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}; see poprelay-sweep --help`);
  if (values.verbose === true && values.quiet === true)
    throw new UsageError('--verbose and --quiet exclude each other');
  const started = performance.now();
  const now = nowFrom(values);
  const cfg = configFrom(values);
  // Asked before taking the map owner's rights: run as root, the sweep can
  // read Dovecot's anvil socket, which the hook's user must not.
  const asked = liveSessions(cfg);
  actAsMapOwner(cfg.map.path);
  const dryRun = values['dry-run'] === true;
  const left = dryRun ? [] : admitLeftovers(cfg, now);
  // Who logged in where: the journal expires with the entries, and a shared address's live sessions keep nothing.
  const who = sweepWho(cfg, now, dryRun);
  if (who.problem !== null) process.stderr.write(`poprelay-sweep: ${escapeControls(who.problem)}\n`);
  const live = asked.filter((a) => !who.shared.has(a.text));
  const report = sweepMap(cfg.map, { now, dryRun, live, list: dryRun || values.verbose === true });
  const stopped = dryRun ? [] : stopSharedAddresses(cfg, who.shared);
  if (!dryRun && cfg.engine !== null) {
    const at = liveTime(now);
    await syncEngine(cfg, cfg.engine, [...live.map((addr) => ({ addr, time: at })), ...left], now);
  }
  if (!dryRun) {
    const durationSeconds = Math.round(performance.now() - started) / 1000;
    try {
      // After the sweep every dated entry left is one it kept.
      recordSweep(
        cfg,
        now,
        { at: now, removed: report.removedCount, refreshed: report.refreshed, durationSeconds },
        {
          dated: report.kept,
          permanent: report.permanent,
          ...(cfg.sharedAddressUsers === null ? {} : { shared: who.shared.size }),
        },
      );
    } catch (e) {
      const what =
        cfg.metricsFile === null
          ? ''
          : ` or metrics_file ${cfg.metricsFile} (the map's owner must be able to write its directory)`;
      throw new PoprelayError(
        'ERR_SWEEP_RECORD',
        `the sweep is done, but its record beside the map${what} could not be written: ${(e as Error).message}`,
      );
    }
  }
  const ago = (e: RelayEntry): string => formatAgo(e.time ?? now, now);
  const verb = dryRun ? 'would remove' : 'removed';
  if (dryRun || values.verbose === true) {
    for (const e of byAddress(report.removed)) out(`${verb} ${e.address} (last login ${ago(e)})`);
  }
  if (values.verbose === true) {
    for (const e of byAddress(report.future))
      out(`kept ${e.address}: last login ${ago(e)} (clock skew?); counted as fresh`);
  }
  if (values.quiet !== true) {
    for (const [a, users] of stopped)
      out(
        `stopped shared address ${a}: ${describeUsers(users, (u) => showUser(u, quoteUntrusted))} within timeout_minutes`,
      );
    const refreshed =
      report.refreshed > 0 ? `, ${dryRun ? 'would refresh' : 'refreshed'} ${report.refreshed} live` : '';
    out(
      `${dryRun ? 'dry run, ' : ''}${cfg.map.path}: kept ${report.kept}, ${verb} ${report.removedCount}, permanent ${report.permanent}${refreshed}`,
    );
  }
  return 0;
}

/**
 * The dated entries of addresses over shared_address_users leave the map
 * (a login recorded before the guard saw the others, a live session, or a
 * lowered limit); the ones it removed, with their users.
 */
function stopSharedAddresses(cfg: Config, shared: Map<string, UserSeen[]>): Array<[string, UserSeen[]]> {
  const addrs = [...shared.keys()].flatMap((a) => addressOfKey(a) ?? []);
  return removeShared(cfg.map, addrs).map((a) => [a.text, shared.get(a.text) ?? []]);
}

/**
 * Logins the front left that no recorder admitted (one killed, say) go in
 * with this sweep; they are returned for the engine, which missed them too.
 */
function admitLeftovers(cfg: Config, now: number): Array<{ addr: ClientAddress; time: number }> {
  const left: Array<{ addr: ClientAddress; time: number }> = [];
  for (const a of admitIncoming(cfg, now)) {
    if (a.addr === null)
      process.stderr.write(`poprelay-sweep: dropped a queued login (${escapeControls(a.login.name)}): ${a.problem}\n`);
    else if (a.outcome === 'queued' || a.outcome === 'fresh') left.push({ addr: a.addr, time: a.login.time });
  }
  return left;
}

/**
 * The engine expires entries itself, but it must hear of what this host
 * knows: live sessions (each a login now), and every entry of the map still
 * in its time when the engine may lack some: after hooks missed it (the
 * engine-missed marker), and when it is not the engine this host last
 * seeded (a restart, empty without persistence, or a failover: its run_id
 * changed), whether or not a login failed meanwhile. A failure is one
 * line; the sweep of the map is done either way.
 */
async function syncEngine(
  cfg: Config,
  engine: EngineEndpoint,
  fresh: ReadonlyArray<{ addr: ClientAddress; time: number }>,
  now: number,
): Promise<void> {
  const { engineMissedFile, engineRunId, recordSeeded, seededRunId, syncToEngine } = await import('./engine/record.js');
  const marker = engineMissedFile(cfg.map.path);
  const missedAt = lstatSync(marker, { throwIfNoEntry: false })?.mtimeMs;
  try {
    const runId = engineRunId(cfg, engine);
    const reseed = missedAt !== undefined || runId === null || runId !== seededRunId(cfg.map.path);
    const logins = [...fresh];
    if (reseed) {
      for (const e of readEntries(cfg.map)) {
        const addr = e.time !== null && e.time > now - cfg.map.timeoutSeconds ? addressOfKey(e.address) : null;
        if (addr !== null && e.time !== null) logins.push({ addr, time: e.time });
      }
    }
    syncToEngine(cfg, engine, logins);
    if (reseed && runId !== null) recordSeeded(cfg.map.path, runId);
    // Unless a hook missed the engine again meanwhile: its login may not be in what was sent.
    if (missedAt !== undefined && lstatSync(marker, { throwIfNoEntry: false })?.mtimeMs === missedAt)
      unlinkSync(marker);
  } catch (e) {
    process.stderr.write(`poprelay-sweep: the engine did not take this host's logins: ${(e as Error).message}\n`);
  }
}

/**
 * The addresses with a live POP3/IMAP session (live_sessions), less the
 * ignore list. When Dovecot cannot be asked, one line says why and the
 * sweep goes on as if none were live: it never keeps an address it cannot
 * prove live. With "auto", a host without doveadm or without the anvil
 * socket (no Dovecot runs) is not asked at all.
 */
function liveSessions(cfg: Config): ClientAddress[] {
  if (cfg.liveSessions === 'no') return [];
  if (cfg.liveSessions === 'auto' && !existsSync(cfg.dovecotAnvil)) return [];
  const answer = liveAddresses(cfg.dovecotAnvil, cfg.doveadm);
  if ('error' in answer) {
    if (cfg.liveSessions === 'auto' && answer.error.endsWith(' not found')) return [];
    process.stderr.write(
      `poprelay-sweep: live sessions not checked (${escapeControls(answer.error)}); sweeping as if none were live\n`,
    );
    return [];
  }
  const skipped = describeUnreadable(answer);
  if (skipped !== '') process.stderr.write(`poprelay-sweep: live sessions: ${escapeControls(skipped)}\n`);
  return answer.addresses.filter((a) => !isIgnored(cfg, a));
}
