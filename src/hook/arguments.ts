// The recorder's command line, as the front hands it over. Read by the entry
// point (src/recorder.ts) before the recorder's modules load, so it imports
// nothing of ours: its problems are logged even when those cannot load.

export const USAGE = `Usage: poprelay-login [--config FILE] [--queue DIR] [--tag NAME] [--] [COMMAND [ARG...]]

Dovecot post-login script: continues the login by running COMMAND (Dovecot
passes /usr/lib/dovecot/script-login) with the client connection and
environment unchanged, then records the client address ($IP) in the relay
map, and exits with COMMAND's status.
Run by hand without COMMAND (IP=192.0.2.7 poprelay-login) it only records,
and exits 0 on success, 1 on failure, with the reason on stderr.

  --config FILE  settings file (default: $POPRELAY_CONFIG, else /etc/poprelay/poprelay.ini,
                 else the older /etc/mail/poprelay.ini)
  --queue DIR    the login queue beside the map, dbfile.queue (default:
                 /var/lib/poprelay/popip.db.queue where no --config is given)
  --tag NAME     a word for the log line, such as pop3 or imap
  --help         this text

A recording failure never refuses or delays a login: it is logged on stderr
and the login goes on.
`;

export interface HookArgs {
  config?: string;
  tag?: string;
  help: boolean;
  /** Started by the front for a Dovecot login: log in Dovecot's format. */
  dovecotLog: boolean;
  /** The queue directory where the front left this login: admit and apply what is there. */
  drain?: string;
  /** The front's pid: a recorder waiting for more logins stops once it is gone (Dovecot ended it). */
  front?: number;
  /** The fd on which the front handed over the queue's lock, held. */
  lockFd?: number;
  /** The queue Dovecot's executable line names (checked against dbfile). */
  queue?: string;
  /** Options that were not understood; logged, never fatal. */
  problems: string[];
}

/**
 * The front hands over only the options it was given (Dovecot puts words
 * from the executable line before "$@"), and --dovecot-log first.
 */
export function parseHookArgs(argv: readonly string[]): HookArgs {
  const out: HookArgs = { help: false, dovecotLog: false, problems: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') {
      for (const w of argv.slice(i + 1))
        out.problems.push(`argument ${JSON.stringify(w)} ignored: the front (bin/poprelay-login) runs the command`);
      break;
    }
    if (a === '--help' || a === '-h') out.help = true;
    else if (a === '--dovecot-log') out.dovecotLog = true;
    else if (['--config', '--tag', '--queue', '--drain', '--front', '--lock-fd'].includes(a)) {
      const v = argv[i + 1];
      if (v === undefined) out.problems.push(`${a} needs a value`);
      else if (a === '--config') out.config = v;
      else if (a === '--drain') out.drain = v;
      else if (a === '--queue') out.queue = v;
      else if (a === '--front') out.front = /^[1-9][0-9]{0,9}$/.test(v) ? Number(v) : undefined;
      else if (a === '--lock-fd') out.lockFd = /^[0-9]{1,4}$/.test(v) ? Number(v) : undefined;
      else out.tag = v;
      i++;
    } else if (a.startsWith('-')) out.problems.push(`unknown option ${JSON.stringify(a)} ignored`);
    else out.problems.push(`argument ${JSON.stringify(a)} ignored: the front (bin/poprelay-login) runs the command`);
  }
  return out;
}
