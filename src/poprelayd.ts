// poprelayd: answers each MTA host's "may this client relay?" from the
// shared engine (Postfix policy delegation, the socketmap protocol, Exim's
// readsocket), and with mirror = yes keeps this host's map equal to the
// shared set. Long-lived, one per MTA host, run by systemd as the map's
// owner; logs to stderr (the journal).

import { Answers } from './daemon/answers.js';
import { COMMON_OPTIONS, configFrom, parseCommandLine, UsageError } from './cli.js';
import { DaemonLog } from './daemon/log.js';
import { EngineWho } from './daemon/engine-who.js';
import { Decider } from './daemon/decider.js';
import { userLimitCounter } from './daemon/engine-counter.js';
import { keepConnected } from './engine/client.js';
import { PoprelayError } from './errors.js';
import { listen, type Listener } from './daemon/listeners.js';
import { Mirror } from './daemon/mirror.js';
import { actAsMapOwner } from './privilege.js';
import { listenersOf } from './daemon/protocols.js';
import { RelayCounts } from './who/relay-counts.js';
import { LocalWho } from './daemon/who-index.js';

export const DAEMON_USAGE = `Usage: poprelayd [--config FILE]

Answers the MTAs of this host from the shared relay set in the engine
(engine in poprelay.ini): Postfix policy delegation (policy_listen), the
socketmap protocol for sendmail and Postfix (socketmap_listen) and Exim's
readsocket (readsocket_listen). Known clients keep relaying through a
short engine outage; unknown ones are never told "try later". With
mirror = yes it keeps dbfile equal to the shared set. Runs in the
foreground until SIGTERM or SIGINT; logs to stderr.

  --config FILE  settings file (default: $POPRELAY_CONFIG, else /etc/poprelay/poprelay.ini,
                 else the older /etc/mail/poprelay.ini)
  -h, --help     this text

Exit status: 0 after SIGTERM or SIGINT; 1 when it cannot start (config,
engine unset, a socket it cannot listen on); 2 bad usage.
`;

export async function daemonMain(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parseCommandLine(
    argv,
    { config: COMMON_OPTIONS.config, help: COMMON_OPTIONS.help },
    'poprelayd --help',
  );
  if (values.help === true) {
    process.stdout.write(DAEMON_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError('poprelayd takes no arguments; see poprelayd --help');
  const cfg = configFrom(values);
  const engine = cfg.engine;
  if (engine === null) {
    throw new PoprelayError(
      'ERR_CONFIG',
      `config ${cfg.source ?? '(defaults)'}: poprelayd needs engine (the shared relay set)`,
    );
  }
  const listeners = listenersOf(cfg);
  if (listeners.every(([, at]) => at === null) && !cfg.mirror) {
    throw new PoprelayError(
      'ERR_CONFIG',
      `config ${cfg.source ?? '(defaults)'}: poprelayd has nothing to do: set policy_listen, socketmap_listen, readsocket_listen or mirror = yes`,
    );
  }
  // Root starting it (not systemd's User=) gives the map owner's rights first, as every command does.
  actAsMapOwner(cfg.map.path);
  const log = new DaemonLog();
  const client = keepConnected(engine, (line) => log.say(line.endsWith('connected') ? 'info' : 'error', line));
  const answers = new Answers(client);
  // Who is behind an address: the engine's who keys, with this host's own journal where Dovecot runs here.
  const who = new EngineWho(client, cfg.map.timeoutSeconds, new LocalWho(cfg.map.path, cfg.map.timeoutSeconds));
  const counts = new RelayCounts(cfg.map.path, cfg.reportDays, (text) => log.limited('warning', 'relayed', text));
  // user_limit counts in the engine: every MTA host's recipients add to the same count.
  const decider = new Decider(cfg, answers, who, userLimitCounter(client), log, cfg.reportDays > 0 ? counts : null);
  const servers: Listener[] = [];
  try {
    for (const [protocol, at] of listeners) {
      if (at === null) continue;
      servers.push(await listen(protocol, at, (req) => decider.decide(protocol, req), log));
    }
  } catch (e) {
    await Promise.all(servers.map((s) => s.close()));
    // destroy, not close: close waits for a connection that may never come,
    // and poprelayd must exit for systemd (Restart=on-failure) to act.
    client.destroy();
    throw new PoprelayError('ERR_CONFIG', `cannot listen: ${(e as Error).message}`);
  }
  const mirror = cfg.mirror ? new Mirror(cfg, engine, client, log, (text) => answers.forget(text)) : null;
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  log.say('info', 'stopping');
  await Promise.all(servers.map((s) => s.close()));
  counts.close();
  await mirror?.close();
  await client.close().catch(() => undefined);
  return 0;
}
