// poprelay doctor: the command; its checks are under doctor/.

import { out, stringOption } from '../cli.js';
import type { Command } from './command.js';
import { DEFAULT_DOCTOR_PATHS } from './doctor/paths.js';
import { formatChecks, runDoctor } from './doctor/run.js';

export const DOCTOR_COMMAND: Command = {
  synopsis: '',
  summary: 'check the installation: config, map, Dovecot, sweep, MTA, the hook itself',
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
  // Never ctx.config(), which would make root the map's owner: the checks run as the users they name (the
  // hook's), which root alone may do, and runDoctor loads the config itself, to report a broken one.
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
};
