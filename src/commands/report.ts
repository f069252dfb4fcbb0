// poprelay report --since DAYS: which users relied on POP-before-SMTP and
// how much, from what poprelay keeps (the report's days, who/report.ts, and the
// who journal's lines not yet folded into it), so that an administrator
// can move them to SMTP AUTH and retire the feature.

import { out, outJson, table, UsageError } from '../cli.js';
import { quoteUntrusted } from '../errors.js';
import { readRelayed } from '../who/relay-counts.js';
import { dayOf, fold, readReport, usersSince } from '../who/report.js';
import { readWho, showUser } from '../who/journal.js';
import { JSON_OPTION, type Command } from './command.js';

export const REPORT_COMMAND: Command = {
  synopsis: '--since DAYS [--json]',
  summary: 'which users relied on POP-before-SMTP in the last DAYS days, and how much',
  usage: `Usage: poprelay report --since DAYS [--json] [--config FILE]

Lists the users who logged in (and so could relay by POP-before-SMTP) in
the last DAYS days, today included (UTC days), most logins first: their
logins, on how many days, from how many distinct addresses, over which
services, and their last day. It reads what poprelay keeps beside the map:
the sweep's summary (dbfile.report, kept report_days days) and the who
journal (dbfile.who) for the logins the sweep has not folded in yet. Where
poprelayd runs on this host, RELAYED counts the relay decisions it made for
the addresses each user logged in from (dbfile.relayed; every user behind
an address counts each one). Users who appear here are the ones to move to
SMTP AUTH before turning POP-before-SMTP off.
  --since DAYS   how many days back, from 1 to 3660
  --json         one JSON array instead of the table`,
  args: [],
  options: { since: { type: 'string' }, ...JSON_OPTION },
  run: (ctx) => {
    const given = ctx.values.since;
    if (typeof given !== 'string' || !/^[0-9]{1,4}$/.test(given) || Number(given) < 1 || Number(given) > 3660)
      throw new UsageError(
        'report needs --since DAYS, a whole number of days from 1 to 3660; see poprelay report --help',
      );
    const days = Number(given);
    const cfg = ctx.config();
    const sinceDay = dayOf(ctx.now - (days - 1) * 86_400);
    const report = fold(readReport(cfg.map.path), readWho(cfg.map.path));
    const users = usersSince(report, sinceDay, readRelayed(cfg.map.path));
    if (ctx.values.json === true) {
      outJson(users);
      return 0;
    }
    const kept = days > cfg.reportDays ? ` (report_days = ${cfg.reportDays}: older days are not kept)` : '';
    out(`${users.length} user${users.length === 1 ? '' : 's'} logged in from ${sinceDay} to ${dayOf(ctx.now)}${kept}`);
    if (users.length === 0) return 0;
    const rows = [['USER', 'LOGINS', 'DAYS', 'ADDRESSES', 'SERVICES', 'LAST DAY', 'RELAYED']];
    for (const u of users)
      rows.push([
        showUser(u.user, quoteUntrusted),
        String(u.logins),
        String(u.days),
        String(u.addresses),
        u.services.join(',') || '-',
        u.lastDay || '-',
        String(u.relayed),
      ]);
    for (const line of table(rows)) out(line);
    return 0;
  },
};
