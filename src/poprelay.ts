// poprelay: the administrator's command (list, add, del, check, stats, flush).

import { createInterface } from 'node:readline';

import { parseClientAddress, sortByAddress } from './address.js';
import {
  COMMON_OPTIONS,
  configFrom,
  nowFrom,
  out,
  outJson,
  parseCommandLine,
  stringOption,
  table,
  UsageError,
  type OptionSpec,
  type OptionValues,
} from './cli.js';
import type { Config } from './config.js';
import { DEFAULT_DOCTOR_PATHS } from './commands/doctor/paths.js';
import { formatChecks, runDoctor } from './commands/doctor/run.js';
import { ensureMap, type RelayEntry } from './map/relay-map.js';
import { makeQueue } from './map/queue.js';
import { actAsMapOwner } from './privilege.js';
import { entryStats, mapStats } from './map/stats.js';
import type { RelayStore } from './commands/relay-store.js';
import { openStore } from './commands/store.js';
import { formatAgo, formatDuration, formatTime } from './timefmt.js';
import { WHO_COMMAND } from './commands/who.js';
import { sharedFromJournal } from './who/shared-address.js';
import type { UserSeen } from './who/journal.js';
import { REPORT_COMMAND } from './commands/report.js';

const EXIT_STATUS = `Exit status: 0 success; 1 a negative answer (check: may not relay; del:
not in the map; flush: not confirmed; doctor: a check failed; who: nobody); 2 an error: bad usage, a malformed
address, a config or map problem (the map is then left untouched).`;

export const ADMIN_USAGE = `Usage: poprelay COMMAND [OPTIONS]

Commands:
  init                   create the map if it does not exist (never changes an existing one)
  list [--json]          every entry: address, last login, age, time left or "permanent"
  add ADDR [--permanent] record ADDR as if it had just logged in; --permanent: never expires
  del ADDR               remove ADDR (both keys of an IPv6 address)
  check ADDR             exit 0 if the MTA would let ADDR relay now, 1 if not
  stats [--json]         counts, map size, oldest and newest entry
  flush [--yes]          remove every dated entry, keeping permanent ones
  doctor                 check the installation: config, map, Dovecot, sweep, MTA, the hook itself
  who ADDR [--json]      the users who logged in from ADDR within timeout_minutes, and their services
  report --since DAYS [--json]
                         which users relied on POP-before-SMTP in the last DAYS days, and how much

Options of every command:
  --config FILE  settings file (default: $POPRELAY_CONFIG, else /etc/poprelay/poprelay.ini,
                 else the older /etc/mail/poprelay.ini)
  --now SECONDS  act as if the time were SECONDS since the epoch (for testing)
  -h, --help     help for the command

"poprelay COMMAND --help" describes each command. Data goes to stdout,
errors to stderr as "poprelay: ...".
${EXIT_STATUS}
`;

export interface Command {
  usage: string;
  args: string[];
  options?: OptionSpec;
  run(ctx: Context): number | Promise<number>;
}

export interface Context {
  /** Loaded on first use, so that doctor can report a broken config as a finding. */
  config(): Config;
  /** The map, or the shared engine when engine is set; opened on first use. */
  store(): Promise<RelayStore>;
  now: number;
  values: OptionValues;
  args: string[];
}

const JSON_OPTION = { json: { type: 'boolean' } } satisfies OptionSpec;

/** What the table and --json say about one entry. */
function describe(e: RelayEntry, now: number, timeoutSeconds: number) {
  const permanent = e.time === null;
  const age = e.time === null ? null : now - e.time;
  const left = age === null ? null : Math.max(0, timeoutSeconds - Math.max(0, age));
  return {
    address: e.address,
    keys: [...e.keys].sort(),
    permanent,
    lastLogin: e.time,
    ageSeconds: age,
    leftSeconds: left,
    expired: e.invalid === true || (age !== null && age > timeoutSeconds),
    invalid: e.invalid === true,
    /** A login in the queue beside the map, not yet in it. */
    queued: false,
  };
}

function addressArg(ctx: Context): ReturnType<typeof parseClientAddress> {
  return parseClientAddress(ctx.args[0] ?? '');
}

const COMMANDS: Record<string, Command> = {
  init: {
    usage: `Usage: poprelay init [--config FILE]

Creates an empty map at dbfile, of dbtype and with map_mode, if there is
none, and the login queue beside it (dbfile.queue). An existing map is only
checked (type, readability, NUL-free keys) and never changed. Run it as the
user the Dovecot hook runs as, so that both belong to that user.`,
    args: [],
    run: (ctx) => {
      const s = ctx.config().map;
      if (ensureMap(s)) out(`created ${s.path} (${s.type}, mode ${s.mode.toString(8).padStart(4, '0')})`);
      else out(`${s.path} exists and is a usable ${s.type} map; left as it is`);
      makeQueue(s.path);
      return 0;
    },
  },

  list: {
    usage: `Usage: poprelay list [--json] [--config FILE]

Lists every entry of the relay map, sorted by address: the address (an IPv6
address once, though the map holds two keys for it), the last login, its
age, and the time left before the sweep removes it; "expired" when it is
older than timeout_minutes but not yet swept; "permanent" for entries whose
value is not a number; "invalid value" for all-digit values past the year
2286 (the sweep removes them). Then the logins still queued beside the map
("queued: not yet in the map"), which the next writer or the sweep applies.
With shared_address_users set, last the addresses with more users than that
within timeout_minutes ("shared: N users, may not relay").
  --json   one JSON array instead of the table (queued logins have "queued": true,
           shared addresses "shared": true and "users": N)`,
    args: [],
    options: JSON_OPTION,
    run: async (ctx) => {
      const s = ctx.config().map;
      const store = await ctx.store();
      const items = [
        ...sortByAddress(await store.entries(), (e) => e.address).map((e) => describe(e, ctx.now, s.timeoutSeconds)),
        ...sortByAddress(await store.queued(), (q) => q.address.text).map((q) => ({
          ...describe({ address: q.address.text, keys: q.address.keys, time: q.time }, ctx.now, s.timeoutSeconds),
          queued: true,
        })),
      ];
      const cfg = ctx.config();
      const stopped = await sharedAddresses(ctx, cfg);
      const shared = sortByAddress([...stopped], ([a]) => a).map(([address, users]) => ({
        address,
        keys: [] as string[],
        shared: true,
        users: users.length,
      }));
      if (ctx.values.json === true) {
        outJson([...items, ...shared]);
        return 0;
      }
      const rows = [['ADDRESS', 'LAST LOGIN', 'AGE', 'LEFT']];
      for (const i of items) {
        if (i.lastLogin === null) rows.push([i.address, '-', '-', 'permanent']);
        else if (i.invalid) rows.push([i.address, '-', '-', 'invalid value: removed by the next sweep']);
        else if (i.queued)
          rows.push([
            i.address,
            formatTime(i.lastLogin),
            formatDuration(Math.max(0, i.ageSeconds ?? 0)),
            'queued: not yet in the map',
          ]);
        else {
          const age = (i.ageSeconds ?? 0) < 0 ? 'future' : formatDuration(i.ageSeconds ?? 0);
          rows.push([
            i.address,
            formatTime(i.lastLogin),
            age,
            i.expired ? 'expired' : formatDuration(i.leftSeconds ?? 0),
          ]);
        }
      }
      for (const sh of shared)
        rows.push([sh.address, '-', '-', `shared: ${sh.users} users, may not relay (poprelay who ${sh.address})`]);
      for (const line of table(rows)) out(line);
      return 0;
    },
  },

  add: {
    usage: `Usage: poprelay add ADDR [--permanent] [--config FILE]

Records ADDR as if it had just logged in (it may relay for timeout_minutes),
or with --permanent as a permanent entry (value OK) that the sweep never
removes. The same address rules and locking as the Dovecot hook apply; the
ignore list does not (you asked for this address).`,
    args: ['ADDR'],
    options: { permanent: { type: 'boolean' } },
    run: async (ctx) => {
      const addr = addressArg(ctx);
      const s = ctx.config().map;
      const store = await ctx.store();
      if (ctx.values.permanent === true) {
        await store.putPermanent(addr);
        out(`added ${addr.text} (permanent)`);
        return 0;
      }
      if ((await store.record(addr, ctx.now)) === 'permanent') {
        out(`${addr.text} has a permanent entry, left as it is (remove it with: poprelay del ${addr.text})`);
      } else out(`added ${addr.text} (may relay for ${formatDuration(s.timeoutSeconds)})`);
      return 0;
    },
  },

  del: {
    usage: `Usage: poprelay del ADDR [--config FILE]

Removes ADDR from the relay map, both keys of an IPv6 address. Exit 1 when it
was not there.`,
    args: ['ADDR'],
    run: async (ctx) => {
      const addr = addressArg(ctx);
      const store = await ctx.store();
      if (!(await store.remove(addr))) {
        process.stderr.write(`poprelay: ${addr.text} is not in ${store.noun}\n`);
        return 1;
      }
      out(`removed ${addr.text}`);
      return 0;
    },
  },

  check: {
    usage: `Usage: poprelay check ADDR [--config FILE]

Says whether the MTA would let ADDR relay now, that is whether the map holds
it: exit 0 if so, 1 if not, 2 on error. An entry older than timeout_minutes
still counts until the sweep removes it, and the answer says so.`,
    args: ['ADDR'],
    run: async (ctx) => {
      const addr = addressArg(ctx);
      const s = ctx.config().map;
      const store = await ctx.store();
      const entry = await store.entry(addr);
      if (entry === null) {
        const queued = (await store.queued()).filter((q) => q.address.text === addr.text);
        if (queued.length > 0) {
          const last = Math.max(...queued.map((q) => q.time));
          out(
            `${addr.text} may not relay yet: its login ${formatAgo(last, ctx.now)} is queued, not yet in the map (the next writer or the sweep applies it)`,
          );
        } else out(`${addr.text} may not relay: not in ${store.noun}`);
        return 1;
      }
      const d = describe(entry, ctx.now, s.timeoutSeconds);
      const partial = addr.keys.length > entry.keys.length ? ` (only the key ${entry.keys.join(', ')} is present)` : '';
      if (d.permanent) out(`${addr.text} may relay: permanent entry${partial}`);
      else if (d.invalid)
        out(
          `${addr.text} may relay until the next sweep: its value is no possible time (invalid), so the sweep removes it${partial}`,
        );
      else if (d.expired) {
        out(
          `${addr.text} may relay until the next sweep: last login ${formatAgo(entry.time ?? 0, ctx.now)}, expired${partial}`,
        );
      } else {
        out(
          `${addr.text} may relay: last login ${formatAgo(entry.time ?? 0, ctx.now)}, ${formatDuration(d.leftSeconds ?? 0)} left${partial}`,
        );
      }
      return 0;
    },
  },

  stats: {
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
      const shared = cfg.sharedAddressUsers === null ? null : await sharedAddresses(ctx, cfg);
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
  },

  flush: {
    usage: `Usage: poprelay flush [--yes] [--config FILE]

Removes every dated entry, keeping permanent ones: nobody may relay until
they log in again. Asks for confirmation on the terminal unless --yes.`,
    args: [],
    options: { yes: { type: 'boolean', short: 'y' } },
    run: async (ctx) => {
      const store = await ctx.store();
      const dated = (await store.entries()).filter((e) => e.time !== null).length;
      if (dated === 0) {
        out(`${store.where}: no dated entries to remove`);
        return 0;
      }
      if (ctx.values.yes !== true) {
        if (!process.stdin.isTTY)
          throw new UsageError('flush needs confirmation: stdin is not a terminal, so give --yes');
        if (
          !(await confirm(`Remove all ${dated} dated entries from ${store.where} (permanent entries stay)? [y/N] `))
        ) {
          process.stderr.write('poprelay: not flushed\n');
          return 1;
        }
      }
      const report = await store.flushDated();
      out(`${store.where}: removed ${report.removed}, permanent ${report.permanent}`);
      return 0;
    },
  },

  doctor: {
    usage: `Usage: poprelay doctor [--config FILE] [PATH OPTIONS]

Checks a live installation and prints one line per check, OK, WARN or FAIL,
with the fix for each problem: the config parses, is the file the hook reads
(without --config, doctor checks that file) and keeps an engine password
from other accounts; Dovecot's effective configuration (doveconf -n) runs
poprelay-login after pop3 and imap logins; the map exists, is a usable map
of dbtype, is writable by the hook's user and readable by the MTAs; no
directory above it is group- or world-writable (sendmail refuses such
maps); the sweep is scheduled (the timer active where systemd runs, else
the cron entry and a running cron daemon); sendmail.cf or Postfix's main.cf
uses the map; and the hook, run as its user within its service's vsz_limit
with IP=192.0.2.254 (a documentation address), really records it (the entry
is removed again, from the shared set too). Run it as root.
Exit 0 when nothing FAILed, 1 otherwise.

  --hook-user NAME         the hook's user (default: from doveconf, else poprelay)
  --doveconf-config FILE   the Dovecot configuration to check (doveconf -c FILE)
  --sendmail-cf FILE       (default ${DEFAULT_DOCTOR_PATHS.sendmailCf})
  --postfix-main-cf FILE   (default ${DEFAULT_DOCTOR_PATHS.postfixMainCf})
  --cron-file FILE         (default ${DEFAULT_DOCTOR_PATHS.cronFile})
  --cron-pid FILE          the cron daemon's pid file (default ${DEFAULT_DOCTOR_PATHS.cronPid})`,
    args: [],
    options: {
      'hook-user': { type: 'string' },
      'doveconf-config': { type: 'string' },
      'sendmail-cf': { type: 'string' },
      'postfix-main-cf': { type: 'string' },
      'cron-file': { type: 'string' },
      'cron-pid': { type: 'string' },
    },
    run: async (ctx) => {
      const v = ctx.values;
      const checks = await runDoctor(stringOption(v.config) ?? (process.env.POPRELAY_CONFIG || undefined), {
        doveconfConfig: stringOption(v['doveconf-config']),
        hookUser: stringOption(v['hook-user']),
        sendmailCf: stringOption(v['sendmail-cf']) ?? DEFAULT_DOCTOR_PATHS.sendmailCf,
        postfixMainCf: stringOption(v['postfix-main-cf']) ?? DEFAULT_DOCTOR_PATHS.postfixMainCf,
        cronFile: stringOption(v['cron-file']) ?? DEFAULT_DOCTOR_PATHS.cronFile,
        cronPid: stringOption(v['cron-pid']) ?? DEFAULT_DOCTOR_PATHS.cronPid,
      });
      for (const line of formatChecks(checks)) out(line);
      return checks.some((c) => c.status === 'FAIL') ? 1 : 0;
    },
  },

  who: WHO_COMMAND,
  report: REPORT_COMMAND,
};

/** The addresses stopped as shared: from the engine's who keys with engine set, else from the who journal. */
async function sharedAddresses(ctx: Context, cfg: Config): Promise<Map<string, UserSeen[]>> {
  if (cfg.engine === null) return sharedFromJournal(cfg, ctx.now);
  if (cfg.sharedAddressUsers === null) return new Map();
  const { connectOnce } = await import('./engine/client.js');
  const { sharedInEngine } = await import('./engine/shared.js');
  const client = await connectOnce(cfg.engine);
  try {
    return await sharedInEngine(cfg, client, ctx.now);
  } finally {
    await client.close();
  }
}

function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  return new Promise((resolve) => {
    rl.question(question, (answer) => {
      rl.close();
      resolve(/^y(es)?$/i.test(answer.trim()));
    });
  });
}

export async function adminMain(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined) {
    process.stderr.write(ADMIN_USAGE);
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(ADMIN_USAGE);
    return 0;
  }
  const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (cmd === undefined) {
    throw new UsageError(
      `unknown command ${JSON.stringify(name)}; commands: ${Object.keys(COMMANDS).join(', ')} (see poprelay --help)`,
    );
  }
  const { values, positionals } = parseCommandLine(
    rest,
    { ...COMMON_OPTIONS, ...cmd.options },
    `poprelay ${name} --help`,
  );
  if (values.help === true) {
    // Our own text, newlines and all: out() would show them as \x0a.
    process.stdout.write(
      `${cmd.usage}\n\nOptions of every command: --config FILE, --now SECONDS (testing), -h/--help.\n${EXIT_STATUS}\n`,
    );
    return 0;
  }
  if (positionals.length !== cmd.args.length) {
    const want = cmd.args.length === 0 ? 'no arguments' : cmd.args.join(' ');
    throw new UsageError(`${name} takes ${want}; see poprelay ${name} --help`);
  }
  const now = nowFrom(values);
  let cfg: Config | undefined;
  // Loaded on first use; root then becomes the map's owner before anything
  // touches the map (doctor stays root to run its checks, and writes
  // nothing itself).
  const config = (): Config => {
    if (cfg === undefined) {
      cfg = configFrom(values);
      if (name !== 'doctor') actAsMapOwner(cfg.map.path);
    }
    return cfg;
  };
  let store: RelayStore | undefined;
  try {
    return await cmd.run({
      config,
      store: async () => (store ??= await openStore(config())),
      now,
      values,
      args: positionals,
    });
  } finally {
    await store?.close();
  }
}
