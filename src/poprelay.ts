// poprelay: the administrator's command. The program only: it picks the
// command, parses its options and hands it a context; each command is a
// file under commands/, and COMMANDS lists them in the order --help does.

import { COMMON_OPTIONS, configFrom, nowFrom, parseCommandLine, UsageError } from './cli.js';
import type { Config } from './config.js';
import { actAsMapOwner } from './privilege.js';
import { ADD_COMMAND } from './commands/add.js';
import { CHECK_COMMAND } from './commands/check.js';
import type { Command } from './commands/command.js';
import { DEL_COMMAND } from './commands/del.js';
import { DOCTOR_COMMAND } from './commands/doctor.js';
import { FLUSH_COMMAND } from './commands/flush.js';
import { INIT_COMMAND } from './commands/init.js';
import { LIST_COMMAND } from './commands/list.js';
import type { RelayStore } from './commands/relay-store.js';
import { REPORT_COMMAND } from './commands/report.js';
import { STATS_COMMAND } from './commands/stats.js';
import { openStore } from './commands/store.js';
import { WHO_COMMAND } from './commands/who.js';

const COMMANDS: Record<string, Command> = {
  init: INIT_COMMAND,
  list: LIST_COMMAND,
  add: ADD_COMMAND,
  del: DEL_COMMAND,
  check: CHECK_COMMAND,
  stats: STATS_COMMAND,
  flush: FLUSH_COMMAND,
  doctor: DOCTOR_COMMAND,
  who: WHO_COMMAND,
  report: REPORT_COMMAND,
};

const EXIT_STATUS = `Exit status: 0 success; 1 a negative answer (check: may not relay; del:
not in the map; flush: not confirmed; doctor: a check failed; who: nobody); 2 an error: bad usage, a malformed
address, a config or map problem (the map is then left untouched).`;

/** Where the summaries start in --help's list of commands. */
const SUMMARY_COLUMN = 25;

/** A command's line in --help: its summary in the column, or below it when the synopsis reaches that far. */
function commandLine(name: string, cmd: Command): string {
  const synopsis = `  ${name} ${cmd.synopsis}`.trimEnd();
  return synopsis.length < SUMMARY_COLUMN
    ? `${synopsis.padEnd(SUMMARY_COLUMN)}${cmd.summary}`
    : `${synopsis}\n${' '.repeat(SUMMARY_COLUMN)}${cmd.summary}`;
}

const ADMIN_USAGE = `Usage: poprelay COMMAND [OPTIONS]

Commands:
${Object.entries(COMMANDS)
  .map(([name, cmd]) => commandLine(name, cmd))
  .join('\n')}

Options of every command:
  --config FILE  settings file (default: $POPRELAY_CONFIG, else /etc/poprelay/poprelay.ini,
                 else the older /etc/mail/poprelay.ini)
  --now SECONDS  act as if the time were SECONDS since the epoch (for testing)
  -h, --help     help for the command

"poprelay COMMAND --help" describes each command. Data goes to stdout,
errors to stderr as "poprelay: ...".
${EXIT_STATUS}
`;

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
  // Loaded on first use; root then becomes the map's owner before anything touches the map.
  const config = (): Config => {
    if (cfg === undefined) {
      cfg = configFrom(values);
      actAsMapOwner(cfg.map.path);
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
