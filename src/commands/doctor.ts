// poprelay doctor: checks a live installation, one line per check, each
// problem with its fix. It changes nothing except for the last check, which
// records a documentation address (192.0.2.254) through the real hook and
// removes it again, both as the hook's user.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  DEFAULT_CONFIG_PATH,
  LEGACY_CONFIG_PATH,
  loadConfig,
  MOVE_LEGACY_CONFIG,
  parseConfig,
  type Config,
} from '../config.js';
import { askDaemon, sendmailSocketSpec } from '../daemon/client.js';
import { viaSentinel, withoutSecrets, type EngineEndpoint, type EngineNode } from '../endpoints.js';
import { listenersOf } from '../daemon/protocols.js';
import { EngineError, respCall, respCallTo, RespError, type RespValue } from '../engine/resp.js';
import { askSentinels, showNode } from '../engine/sentinel.js';
import { errnoCode, escapeControls, isPoprelayError, quoteUntrusted } from '../errors.js';
import type { MapSettings } from '../config.js';
import { readEntries, readRecords } from '../map/relay-map.js';
import { describeUnreadable, liveAddresses } from '../hook/live.js';
import { queueDir, readIncoming, readQueue } from '../map/queue.js';
import { KEY_PREFIX, keyspaceChannel } from '../engine/relayset.js';
import { engineRoleAcl, type EngineRole } from '../engine/roles.js';
import { formatAgo, unixNow } from '../timefmt.js';
import { sharedCheck } from './doctor-shared.js';

export interface DoctorPaths {
  /** Passed to doveconf -c; undefined = Dovecot's default. */
  doveconfConfig?: string;
  hookUser?: string;
  sendmailCf: string;
  postfixMainCf: string;
  cronFile: string;
  /** The pid file of the cron daemon, which runs the cron entry where systemd does not run. */
  cronPid: string;
}

export const DEFAULT_DOCTOR_PATHS: DoctorPaths = {
  sendmailCf: '/etc/mail/sendmail.cf',
  postfixMainCf: '/etc/postfix/main.cf',
  cronFile: '/etc/cron.d/poprelay',
  cronPid: '/run/crond.pid',
};

/** The configuration poprelay ships (etc/ beside dist/), in the checkout or the installed copy. */
const SHIPPED = fileURLToPath(new URL('../../etc/', import.meta.url));
/** Dovecot's snippets: beside dist/ (a checkout, install.sh), or where the Debian package puts them. */
function snippetsDir(): string {
  const beside = fileURLToPath(new URL('../../dovecot-conf/', import.meta.url));
  return existsSync(beside) ? beside : '/usr/share/poprelay/dovecot-conf/';
}

export type Status = 'OK' | 'WARN' | 'FAIL';

export interface Check {
  status: Status;
  name: string;
  detail: string;
  fix?: string;
}

const TEST_ADDRESS = '192.0.2.254'; // TEST-NET-1 (RFC 5737): never a real client
/** bin/poprelay beside dist/, in a checkout and as installed. */
const ADMIN_PROGRAM = fileURLToPath(new URL('../../bin/poprelay', import.meta.url));

function ok(name: string, detail: string): Check {
  return { status: 'OK', name, detail };
}
function bad(status: 'WARN' | 'FAIL', name: string, detail: string, fix: string): Check {
  return { status, name, detail, fix };
}

/**
 * Runs a command as `user`, within an address-space limit if given (as
 * Dovecot's vsz_limit); null when this process may not switch users.
 * Bounded: a hook that hangs must not hang doctor.
 */
function asUser(
  user: string,
  cmd: string[],
  env: NodeJS.ProcessEnv = {},
  vsz: number | null = null,
): { status: number | null; stderr: string } | null {
  if (process.getuid?.() !== 0) return null;
  const gid = spawnSync('id', ['-g', user], { encoding: 'utf8' }).stdout?.trim() ?? '';
  if (!/^\d+$/.test(gid)) return { status: 1, stderr: `no user ${user}` };
  const asThem = ['setpriv', `--reuid=${user}`, `--regid=${gid}`, '--init-groups', ...cmd];
  const [file = 'setpriv', ...args] =
    vsz === null ? asThem : ['prlimit', `--as=${vsz}`, `--data=${vsz}`, '--', ...asThem];
  const r = spawnSync(file, args, { env, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stderr: r.stderr ?? '' };
}

interface DovecotService {
  executable?: string;
  user?: string;
  vsz_limit?: string;
  process_limit?: string;
}

/** The service blocks of `doveconf -n` output, by name. */
export function parseDoveconfServices(text: string): Map<string, DovecotService> {
  const services = new Map<string, DovecotService>();
  let current: DovecotService | undefined;
  let depth = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const open = /^service (\S+) \{$/.exec(line);
    if (depth === 0 && open) {
      current = {};
      services.set(open[1] ?? '', current);
      depth = 1;
      continue;
    }
    if (line.endsWith('{')) depth++;
    else if (line === '}') {
      depth = Math.max(0, depth - 1);
      if (depth === 0) current = undefined;
    } else if (current && depth === 1) {
      const kv = /^(executable|user|vsz_limit|process_limit) = (.*)$/.exec(line);
      if (kv) current[kv[1] as keyof DovecotService] = kv[2] ?? '';
    }
  }
  return services;
}

/**
 * The enabled protocols in doveconf -n output. 2.3 prints a list, maybe
 * quoted (protocols = " imap pop3"); 2.4 prints the list, or a block of
 * "name = yes|no" lines when the configuration used one. Left out when it
 * is the default, which includes imap and pop3 once they are installed.
 */
export function parseDoveconfProtocols(text: string): string[] {
  const list = /^protocols = (.*)$/m.exec(text);
  if (list)
    return (list[1] ?? '')
      .replace(/"/g, ' ')
      .split(/\s+/)
      .filter((p) => p !== '');
  const block = /^protocols \{\n((?:[ \t]+.*\n)*)\}/m.exec(text);
  if (block) return [...(block[1] ?? '').matchAll(/^\s+(\S+) = yes$/gm)].map((m) => m[1] ?? '');
  return ['imap', 'pop3'];
}

/** A vsz_limit in bytes, as Dovecot applies it (RLIMIT_AS and RLIMIT_DATA); null: no limit. */
export function vszBytes(v: string): number | null {
  if (v === '0' || v === 'unlimited') return null;
  const m = /^(\d+)\s*([kmgt]?)b?$/i.exec(v);
  if (!m) return null;
  const mult: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };
  return Number(m[1]) * (mult[(m[2] ?? '').toLowerCase()] ?? 1);
}

interface HookService {
  /** The hook and the words Dovecot passes it, as script-login runs it. */
  hook: string[];
  user: string;
  vsz: string;
}

function dovecotChecks(paths: DoctorPaths): { checks: Check[]; service?: HookService } {
  const args = paths.doveconfConfig === undefined ? ['-n'] : ['-n', '-c', paths.doveconfConfig];
  let text: string;
  try {
    text = execFileSync('doveconf', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const why =
      (e as { code?: string; stderr?: string }).code === 'ENOENT'
        ? 'doveconf not found'
        : ((e as { stderr?: string }).stderr ?? String(e)).trim();
    return {
      checks: [bad('FAIL', 'dovecot', why, 'install Dovecot, or fix the configuration doveconf -n complains about')],
    };
  }
  const services = parseDoveconfServices(text);
  const protocols = parseDoveconfProtocols(text);
  const checks: Check[] = [];
  let service: HookService | undefined;
  for (const proto of ['pop3', 'imap']) {
    const name = `dovecot ${proto}`;
    if (!protocols.includes(proto)) {
      checks.push(ok(name, `${proto} is not enabled (protocols = ${protocols.join(' ')})`));
      continue;
    }
    const exec = services.get(proto)?.executable?.split(/\s+/) ?? [];
    const post = exec[1];
    const svc = post === undefined ? undefined : services.get(post);
    const words = svc?.executable?.split(/\s+/) ?? [];
    if (
      post === undefined ||
      svc === undefined ||
      words[0] !== 'script-login' ||
      !(words[1] ?? '').endsWith('/poprelay-login')
    ) {
      checks.push(
        bad(
          'FAIL',
          name,
          `${proto} logins do not run poprelay-login (service ${proto}: executable = ${exec.join(' ') || '(default)'})`,
          `install ${snippetsDir()}2.3/95-poprelay.conf (or 2.4) into conf.d and reload Dovecot (the Debian package: dpkg-reconfigure poprelay)`,
        ),
      );
      continue;
    }
    // doveconf -n leaves out defaults: the service then has default_vsz_limit.
    const vsz = svc.vsz_limit ?? /^default_vsz_limit = (.*)$/m.exec(text)?.[1] ?? '256M';
    service = { hook: words.slice(1), user: svc.user || 'root', vsz };
    const runs = `post-login service ${post} runs ${service.hook.join(' ')} as ${service.user}, vsz_limit = ${vsz}`;
    // The front is the service's process until its recorder ends, and a recorder may wait
    // (recorder_idle_seconds, the map's lock): with one process, Dovecot drops the logins behind it.
    checks.push(
      svc.process_limit === '1'
        ? bad(
            'WARN',
            name,
            `${runs}, process_limit = 1: while a recorder waits for more logins or for the map, Dovecot drops the logins that wait for that one process`,
            `remove process_limit from service ${post} (the default is 100), or set it to 2 or more`,
          )
        : ok(name, runs),
    );
  }
  return { checks, service };
}

function mapChecks(cfg: Config, user: string): Check[] {
  const s = cfg.map;
  const checks: Check[] = [];
  try {
    const n = readRecords(s).length;
    checks.push(ok('map', `${s.path} is a ${s.type} map with ${n} keys`));
  } catch (e) {
    const fix = isPoprelayError(e, 'ERR_MAP_MISSING')
      ? `create it as ${user}: runuser -u ${user} -- poprelay init`
      : 'see "Recovering a damaged map" in docs/operating.md';
    return [bad('FAIL', 'map', (e as Error).message, fix)];
  }
  const dir = dirname(s.path);
  const canWrite = asUser(user, ['test', '-w', dir]);
  const canRead = asUser(user, ['test', '-r', s.path]);
  if (canWrite === null || canRead === null)
    checks.push(
      bad('WARN', 'map access', `cannot check access as ${user} without root`, 'run poprelay doctor as root'),
    );
  else if (canWrite.status !== 0 || canRead.status !== 0) {
    checks.push(
      bad(
        'FAIL',
        'map access',
        `${user} cannot ${canRead.status !== 0 ? `read ${s.path}` : `write the directory ${dir}`}`,
        `chown ${user} ${dir} && chmod 0755 ${dir}`,
      ),
    );
  } else checks.push(ok('map access', `${user} can read the map and replace it in ${dir}`));
  checks.push(queueCheck(s, user));
  const mode = lstatSync(s.path).mode & 0o777;
  if ((mode & 0o004) !== 0)
    checks.push(ok('map readers', `mode ${mode.toString(8)}: sendmail, Postfix and Exim can read it`));
  else if ((mode & 0o040) !== 0)
    checks.push(
      bad(
        'WARN',
        'map readers',
        `mode ${mode.toString(8)}: only the group can read it`,
        "make sure the MTA users (smmta, postfix, Debian-exim) are in the map's group",
      ),
    );
  else
    checks.push(
      bad('FAIL', 'map readers', `mode ${mode.toString(8)}: the MTAs cannot read it`, `chmod 0644 ${s.path}`),
    );
  return checks;
}

/** How long a login may wait in the queue before doctor calls it stuck: two sweeps. */
const QUEUE_STUCK_SECONDS = 120;

/** Logins wait in the queue only until the next writer; the sweep applies leftovers every minute. */
function queueCheck(s: MapSettings, user: string): Check {
  let q;
  try {
    q = readQueue(s.path);
  } catch (e) {
    return bad(
      'FAIL',
      'map queue',
      `cannot read ${queueDir(s.path)}: ${(e as Error).message}`,
      `remove it if it is not a directory; ${user} recreates it`,
    );
  }
  if (q.strays.length > 0) {
    return bad(
      'WARN',
      'map queue',
      `${queueDir(s.path)} holds ${q.strays.length} file(s) that are not queued logins, such as ${quoteUntrusted(q.strays[0] ?? '')}`,
      'remove them; only poprelay writes there',
    );
  }
  if (lstatSync(queueDir(s.path), { throwIfNoEntry: false }) === undefined) {
    return bad(
      'WARN',
      'map queue',
      `there is no ${queueDir(s.path)}: the hook's front cannot leave logins there, so every login starts its own Node recorder`,
      `run poprelay init as ${user}`,
    );
  }
  const now = unixNow();
  const waiting = [...q.logins, ...readIncoming(s.path)];
  const oldest = Math.min(...waiting.map((l) => l.time));
  if (waiting.length > 0 && now - oldest > QUEUE_STUCK_SECONDS) {
    return bad(
      'FAIL',
      'map queue',
      `${waiting.length} login(s) queued beside the map, the oldest ${formatAgo(oldest, now)}: the queue is not draining, so those users cannot relay`,
      'run poprelay-sweep by hand and read its error (a damaged or unwritable map?); check that the sweep is scheduled',
    );
  }
  return ok('map queue', `${waiting.length} login(s) queued, none older than ${QUEUE_STUCK_SECONDS} s`);
}

/** sendmail refuses maps under group- or world-writable directories ("unsafe map file"). */
function dirPathCheck(mapPath: string): Check {
  for (let d = dirname(mapPath); ; d = dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o022) !== 0) {
      return bad(
        'FAIL',
        'map directory',
        `${d} is group- or world-writable: sendmail refuses the map as unsafe`,
        `chmod go-w ${d}, or move the map (dbfile) elsewhere`,
      );
    }
    if (d === '/') return ok('map directory', `no directory above ${mapPath} is group- or world-writable`);
  }
}

/** Whether the process in a pid file runs; null: no such file, or no such process. */
function runningPid(pidFile: string): number | null {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (e) {
    return errnoCode(e) === 'EPERM' ? pid : null;
  }
}

/**
 * Which schedule runs the sweep. Where systemd runs, the timer does (the
 * cron entry defers to it), so the timer must be active; elsewhere the cron
 * entry does, so a cron daemon must run: a file in /etc/cron.d alone sweeps
 * nothing.
 */
function sweepCheck(paths: DoctorPaths, systemdRuns = existsSync('/run/systemd/system')): Check {
  if (systemdRuns) {
    const state = spawnSync('systemctl', ['is-active', 'poprelay-sweep.timer'], { encoding: 'utf8' });
    const active = (state.stdout ?? '').trim();
    if (active === 'active') return ok('sweep', 'systemd runs, and poprelay-sweep.timer is active');
    return bad(
      'FAIL',
      'sweep',
      `systemd runs, and poprelay-sweep.timer is ${active || 'unknown to it'} (the cron entry defers to systemd): nothing sweeps, entries never expire`,
      'systemctl enable --now poprelay-sweep.timer',
    );
  }
  // The cron.d line that runs the sweep: five time fields (or one @keyword), the user, the command.
  const cronLine = existsSync(paths.cronFile)
    ? /^[^#\n]*poprelay-sweep.*$/m.exec(readFileSync(paths.cronFile, 'utf8'))?.[0]
    : undefined;
  if (cronLine === undefined) {
    return bad(
      'FAIL',
      'sweep',
      `systemd does not run here, and ${paths.cronFile} does not schedule poprelay-sweep: entries never expire`,
      `install ${SHIPPED}cron.d/poprelay as ${paths.cronFile}, and run a cron daemon`,
    );
  }
  const fields = cronLine.trim().split(/\s+/);
  const user = fields[(fields[0] ?? '').startsWith('@') ? 1 : 5];
  if (runningPid(paths.cronPid) === null) {
    return bad(
      'FAIL',
      'sweep',
      `${paths.cronFile} schedules poprelay-sweep, but no cron daemon runs (none in ${paths.cronPid}), nor systemd: entries never expire`,
      'install and start cron (apt install cron), or run under systemd with poprelay-sweep.timer',
    );
  }
  if (user !== 'root') {
    return bad(
      'WARN',
      'sweep',
      `${paths.cronFile} runs poprelay-sweep as ${user ?? '?'}, which cannot ask Dovecot's anvil socket which sessions are live`,
      `run it as root, as ${SHIPPED}cron.d/poprelay does: it takes the map owner's rights for the map`,
    );
  }
  return ok('sweep', `${paths.cronFile} runs poprelay-sweep as root, and a cron daemon runs`);
}

/** Whether sendmail.cf and Postfix's main.cf ask the map, or poprelayd where it answers them. */
function mtaCheck(paths: DoctorPaths, cfg: Config): Check {
  const base = cfg.map.path.replace(/\.db$/, '');
  const found: string[] = [];
  const missing: string[] = [];
  if (existsSync(paths.sendmailCf)) {
    const text = readFileSync(paths.sendmailCf, 'utf8');
    const socket = cfg.socketmapListen === null ? null : sendmailSocketSpec(cfg.socketmapListen);
    (text.includes(base) || (socket !== null && text.includes(socket)) ? found : missing).push(paths.sendmailCf);
  }
  if (existsSync(paths.postfixMainCf)) {
    const text = readFileSync(paths.postfixMainCf, 'utf8');
    const quoted = base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const policy = cfg.policyListen?.display;
    (new RegExp(`check_client_access\\s+hash:${quoted}(\\s|$)`, 'm').test(text) ||
    (policy !== undefined && new RegExp(`check_policy_service\\s+(\\{\\s*)?${policy}[\\s,}]`).test(`${text} `))
      ? found
      : missing
    ).push(paths.postfixMainCf);
  }
  if (missing.length > 0) {
    return bad(
      'FAIL',
      'mta',
      `${missing.join(' and ')} does not use the map ${base}${cfg.engine === null ? '' : ' or poprelayd'}`,
      `add the lines from ${SHIPPED}mta/ (each file says where) and reload the MTA`,
    );
  }
  if (found.length > 0) return ok('mta', `${found.join(' and ')} ${found.length > 1 ? 'use' : 'uses'} the map`);
  return bad(
    'WARN',
    'mta',
    `no ${paths.sendmailCf} or ${paths.postfixMainCf} found`,
    `for Exim, check that acl_check_rcpt has the statement from ${SHIPPED}mta/exim4-acl.conf`,
  );
}

/**
 * Runs the hook exactly as Dovecot would (as its user, within its vsz_limit,
 * with the words of its executable line, no PATH, IP set) and looks for the
 * record in the map this doctor was told about: a hook reading another
 * config, or one that cannot start within the limit, shows up here.
 */
function liveHookCheck(cfg: Config, { hook, user, vsz }: HookService): Check {
  const s = cfg.map;
  const had = readEntries(s).some((e) => e.address === TEST_ADDRESS);
  const env = { IP: TEST_ADDRESS, USER: 'poprelay-doctor' };
  const r = asUser(user, hook, env, vszBytes(vsz));
  if (r === null)
    return bad('WARN', 'hook', `cannot run the hook as ${user} without root`, 'run poprelay doctor as root');
  const recorded = readEntries(s).some((e) => e.address === TEST_ADDRESS);
  // Removed as the hook's user too: root writes nothing in its directory.
  // With engine set, del removes it from the shared set and from this map.
  const removal =
    !had && recorded
      ? asUser(user, [
          process.execPath,
          ADMIN_PROGRAM,
          'del',
          TEST_ADDRESS,
          ...(cfg.source === null ? [] : ['--config', cfg.source]),
        ])
      : null;
  if (removal !== null && readEntries(s).some((e) => e.address === TEST_ADDRESS)) {
    return bad(
      'WARN',
      'hook',
      `the hook recorded ${TEST_ADDRESS} in ${s.path}, but it could not be removed again: ${removal.stderr.trim() || `exit ${removal.status}`}`,
      `remove it: poprelay del ${TEST_ADDRESS}${cfg.source === null ? '' : ` --config ${cfg.source}`}`,
    );
  }
  if (r.status !== 0 || !recorded) {
    const said = r.stderr.trim() || `exit ${r.status}`;
    return bad(
      'FAIL',
      'hook',
      `${hook.join(' ')} run as ${user} within vsz_limit = ${vsz} with IP=${TEST_ADDRESS} did not record it in ${s.path}: ${said}`,
      'fix what the message says (Dovecot logs the same line for every login); a hook that reads another config ' +
        'needs --config on its executable line; Node needs a vsz_limit of at least 256M',
    );
  }
  return ok(
    'hook',
    `${hook.join(' ')} run as ${user} within vsz_limit = ${vsz} recorded ${TEST_ADDRESS} in ${s.path} (removed again)`,
  );
}

/** Whether the sweep can ask Dovecot which sessions are live (live_sessions). */
export function liveCheck(cfg: Config): Check {
  if (cfg.liveSessions === 'no')
    return ok(
      'live sessions',
      'off (live_sessions = no): a session that outlasts timeout_minutes loses the right to relay',
    );
  if (!existsSync(cfg.dovecotAnvil)) {
    return bad(
      'WARN',
      'live sessions',
      `no ${cfg.dovecotAnvil}: is Dovecot running? Until it is, the sweep keeps no address for a live session`,
      'start Dovecot, or set dovecot_anvil to its base_dir/anvil',
    );
  }
  const answer = liveAddresses(cfg.dovecotAnvil, cfg.doveadm);
  if ('addresses' in answer) {
    const found = `doveadm who answers on ${cfg.dovecotAnvil}: ${answer.addresses.length} address(es) with a live POP3 or IMAP session`;
    const unreadable = describeUnreadable(answer);
    return unreadable === ''
      ? ok('live sessions', found)
      : bad(
          'WARN',
          'live sessions',
          `${found}; ${escapeControls(unreadable)}`,
          'the sweep leaves such rows out; a user name with tabs or newlines is the usual cause',
        );
  }
  if (cfg.liveSessions === 'auto' && answer.error.endsWith(' not found')) {
    return bad(
      'WARN',
      'live sessions',
      'doveadm not found: the sweep does not ask Dovecot, and a session that outlasts timeout_minutes loses the right to relay',
      'install dovecot-core, or set live_sessions = no',
    );
  }
  return bad(
    'FAIL',
    'live sessions',
    answer.error,
    "run the sweep as root (the anvil socket is root's), and set dovecot_anvil to Dovecot's base_dir/anvil",
  );
}

/**
 * The queue the front leaves logins in: --queue on its executable line, else
 * the default map's where the line names no --config (the front reads no
 * poprelay.ini). It must be dbfile's, and only its owner may open it.
 */
function queueLineCheck(cfg: Config, hook: readonly string[], user: string): Check {
  const i = hook.indexOf('--queue');
  const named = i >= 0 ? hook[i + 1] : undefined;
  const queue = named ?? (hook.includes('--config') ? null : queueDir(parseConfig('', null).map.path));
  const right = queueDir(cfg.map.path);
  const fix = `give --queue ${right} on the executable lines of Dovecot's post-login services`;
  if (queue === null)
    return bad(
      'WARN',
      'hook queue',
      'the hook is given --config but no --queue: every login starts Node of its own',
      fix,
    );
  if (queue !== right)
    return bad('FAIL', 'hook queue', `the hook leaves logins in ${queue}, but dbfile is ${cfg.map.path}`, fix);
  let mode: number;
  try {
    mode = lstatSync(queue).mode;
  } catch {
    return bad(
      'WARN',
      'hook queue',
      `no ${queue}: every login starts Node of its own`,
      `runuser -u ${user} -- poprelay init`,
    );
  }
  if ((mode & 0o077) !== 0)
    return bad(
      'WARN',
      'hook queue',
      `${queue} has mode ${(mode & 0o7777).toString(8)}: other accounts could hold its lock, so the hook records every login directly`,
      `chmod 0700 ${queue}`,
    );
  return ok('hook queue', `the hook leaves logins in ${queue}, beside dbfile`);
}

/** The file the hook reads: --config on its executable line, else the default one that exists (null: none). */
function hookConfigPath(hook: readonly string[]): string | null {
  const i = hook.indexOf('--config');
  if (i >= 0 && hook[i + 1] !== undefined) return resolve(hook[i + 1] ?? '');
  return [DEFAULT_CONFIG_PATH, LEGACY_CONFIG_PATH].find((p) => existsSync(p)) ?? null;
}

/**
 * The config check: it parses; it is the file the hook reads; it is where
 * root alone controls it; an engine password in it is not for every account.
 */
function configCheck(cfg: Config, named: boolean, hookReads: string | null | undefined, user: string): Check {
  const source = cfg.source ?? 'no poprelay.ini (the defaults)';
  if (hookReads !== undefined && (cfg.source === null ? null : resolve(cfg.source)) !== hookReads) {
    return bad(
      'WARN',
      'config',
      `${source} parses, but the hook reads ${hookReads ?? 'no poprelay.ini (the defaults)'}: these checks are of another file than the one logins use`,
      hookReads === null
        ? `give --config ${source} on the executable lines of Dovecot's post-login services`
        : `run poprelay doctor --config ${hookReads}, or give the hook --config ${source}`,
    );
  }
  const mode = cfg.source === null ? 0 : statSync(cfg.source).mode & 0o777;
  if (cfg.engine?.password !== undefined && (mode & 0o004) !== 0) {
    return bad(
      'FAIL',
      'config',
      `${source} holds the engine's password, and every account on this host can read it (mode ${mode.toString(8)})`,
      `chown root:${user} ${source} && chmod 0640 ${source}`,
    );
  }
  if (cfg.source === LEGACY_CONFIG_PATH) {
    return bad(
      'WARN',
      'config',
      `${source} parses; it is where earlier versions kept it, in sendmail's directory (Debian's sendmailconfig resets its owner)`,
      MOVE_LEGACY_CONFIG,
    );
  }
  const whose = named || hookReads === undefined ? '' : ' (the file the hook reads)';
  return ok('config', cfg.source === null ? 'no poprelay.ini; the defaults apply' : `${source} parses${whose}`);
}

/**
 * `named`: --config or $POPRELAY_CONFIG; without it, doctor checks the
 * file the hook reads, which Dovecot's executable line may name.
 */
export async function runDoctor(named: string | undefined, paths: DoctorPaths): Promise<Check[]> {
  const dovecot = dovecotChecks(paths);
  const user = paths.hookUser ?? dovecot.service?.user ?? 'poprelay';
  const hookReads = dovecot.service === undefined ? undefined : hookConfigPath(dovecot.service.hook);
  let cfg: Config;
  try {
    cfg = loadConfig(named ?? hookReads ?? undefined, {});
  } catch (e) {
    return [
      bad(
        'FAIL',
        'config',
        (e as Error).message,
        `correct the file (see poprelay.ini(5), or ${SHIPPED}poprelay.ini for every key)`,
      ),
    ];
  }
  const checks: Check[] = [configCheck(cfg, named !== undefined, hookReads, user), ...dovecot.checks];
  const mapOk = mapChecks(cfg, user);
  checks.push(...mapOk);
  if (dovecot.service !== undefined) checks.push(queueLineCheck(cfg, dovecot.service.hook, user));
  if (existsSync(dirname(cfg.map.path))) checks.push(dirPathCheck(cfg.map.path));
  checks.push(sweepCheck(paths));
  checks.push(liveCheck(cfg));
  const shared = sharedCheck(cfg, unixNow());
  if (shared !== null) checks.push(shared);
  if (cfg.engine !== null) checks.push(...(await engineChecks(cfg, cfg.engine, dovecot.service !== undefined)));
  checks.push(mtaCheck(paths, cfg));
  if (dovecot.service === undefined)
    checks.push(
      bad('FAIL', 'hook', 'no poprelay-login in the Dovecot configuration to run', 'see the dovecot checks above'),
    );
  else if (mapOk.some((c) => c.name === 'map' && c.status === 'FAIL'))
    checks.push(bad('FAIL', 'hook', 'not run: the map is not usable', 'see the map check above'));
  else checks.push(liveHookCheck(cfg, { ...dovecot.service, user }));
  return checks;
}

/**
 * The engine answers; its user has the role this host needs (`hook`: Dovecot
 * runs poprelay-login here); each poprelayd listener this host configures
 * answers as the MTAs ask it.
 */
async function engineChecks(cfg: Config, engine: EngineEndpoint, hook: boolean): Promise<Check[]> {
  const checks: Check[] = [];
  try {
    const [pong, size] = respCall(engine, [['PING'], ['DBSIZE']], Math.max(cfg.engineTimeoutMs, 2000));
    if (pong !== 'PONG') throw new Error(`PING answered ${withoutSecrets(engine, JSON.stringify(pong))}`);
    checks.push(ok('engine', `${engine.display} answers (${String(size)} keys in its database)`));
  } catch (e) {
    checks.push(
      bad(
        'FAIL',
        'engine',
        (e as Error).message,
        'start the engine, or correct engine in poprelay.ini (and its password)',
      ),
    );
  }
  if (checks[0]?.status === 'OK' && viaSentinel(engine)) checks.push(sentinelCheck(cfg, engine));
  if (checks[0]?.status === 'OK') checks.push(engineRoleCheck(cfg, engine, hook));
  for (const [protocol, at] of listenersOf(cfg)) {
    if (at === null) continue;
    try {
      await askDaemon(protocol, at, TEST_ADDRESS, 2000);
      checks.push(ok(`poprelayd ${protocol}`, `answers on ${at.display}`));
    } catch (e) {
      checks.push(
        bad(
          'FAIL',
          `poprelayd ${protocol}`,
          `no answer on ${at.display}: ${(e as Error).message}`,
          'start it: systemctl enable --now poprelayd (journalctl -u poprelayd says why it stopped)',
        ),
      );
    }
  }
  return checks;
}

/**
 * Through Sentinel: the primary they name, and that it says so (ROLE).
 * Every client sends ROLE beside its first command: a user that may not
 * run it leaves only -READONLY to tell a replica, and the engine logs the
 * refusal in ACL LOG at every login.
 */
function sentinelCheck(cfg: Config, engine: EngineEndpoint & { sentinels: EngineNode[]; service: string }): Check {
  const name = 'engine primary';
  try {
    const primary = askSentinels(engine, performance.now() + Math.max(cfg.engineTimeoutMs, 2000));
    const [role] = respCallTo(engine, primary, [['ROLE']], Math.max(cfg.engineTimeoutMs, 2000));
    if (role instanceof RespError) {
      return bad(
        'WARN',
        name,
        `the Sentinels name ${showNode(primary)}; the engine user may not run ROLE (${withoutSecrets(engine, role.message)})`,
        "add +role to this host's engine user (docs/cluster.md): without it, only -READONLY tells a replica from the primary",
      );
    }
    const said = Array.isArray(role) ? String(role[0]) : JSON.stringify(role);
    if (said !== 'master')
      return bad(
        'FAIL',
        name,
        `the Sentinels name ${showNode(primary)}, which says it is a ${said}`,
        'a failover may be under way: run doctor again',
      );
    return ok(name, `the Sentinels of ${engine.service} name ${showNode(primary)}, and it is the primary`);
  } catch (e) {
    const why = e instanceof EngineError ? e.message : String(e);
    return bad('FAIL', name, why, 'check the Sentinels in engine = (HOST:PORT,...) and the service they monitor');
  }
}

/** A key under poprelay's prefix that is no address: no host takes it for an entry. */
const PROBE_KEY = `${KEY_PREFIX}doctor-probe`;

/**
 * What doctor sends to learn what the engine user may run. None of it
 * writes, whatever the user may: reads of a key no host uses, a script
 * that does nothing, and a SET the engine refuses as a syntax error (NX
 * with XX), which it does only after checking the ACL: NOPERM means the
 * user may not SET there, a syntax error that it may. PSUBSCRIBE (the
 * mirror's) goes last: it puts the connection in subscriber mode, where
 * QUIT still ends it.
 */
function roleProbes(db: number, mirror: boolean): Array<[string, string[]]> {
  return [
    ['GET', ['GET', PROBE_KEY]],
    ['PEXPIRETIME', ['PEXPIRETIME', PROBE_KEY]],
    ['MGET', ['MGET', PROBE_KEY]],
    ['SCAN', ['SCAN', '0', 'MATCH', PROBE_KEY, 'COUNT', '1']],
    ['INFO', ['INFO', 'server']],
    ['EVAL', ['EVAL', 'return 0', '0']],
    ['SET', ['SET', PROBE_KEY, '0', 'NX', 'XX']],
    ...(mirror ? [['PSUBSCRIBE', ['PSUBSCRIBE', keyspaceChannel(db)]] as [string, string[]]] : []),
  ];
}

const refusal = (v: RespValue | undefined): string | null =>
  v instanceof RespError && /^NOPERM\b/.test(v.message) ? v.message : null;

/**
 * Which role the engine user of this host's engine = has, found out by
 * trying (roleProbes), against what this host needs: a host where Dovecot
 * runs the hook records logins; one with a poprelayd listener or mirror =
 * yes reads. An MTA host alone must not be able to write the relay set:
 * with that credential, whoever reads its poprelay.ini could grant relaying
 * on every host. A POP/IMAP host's credential always can: recording a login
 * is granting relaying. It tries SET and EVAL, the ways poprelay writes,
 * not every write command there is: the read role's line refuses them all
 * (test/security-engine-roles.test.ts tries each).
 */
export function engineRoleCheck(cfg: Config, engine: EngineEndpoint, hook: boolean): Check {
  const name = 'engine role';
  const answers = listenersOf(cfg).some(([, at]) => at !== null);
  const reads = answers || cfg.mirror;
  const probes = roleProbes(engine.db, cfg.mirror);
  let replies: RespValue[];
  try {
    replies = respCall(
      engine,
      probes.map(([, command]) => command),
      Math.max(cfg.engineTimeoutMs, 2000),
    );
  } catch (e) {
    return bad('WARN', name, `could not find out: ${(e as Error).message}`, 'run poprelay doctor again');
  }
  // SET's probe answers a syntax error when allowed; every other probe answers no error at all.
  const why = new Map<string, string>();
  probes.forEach(([command], i) => {
    const reply = replies[i];
    const no = command === 'SET' ? refusal(reply) : reply instanceof RespError ? reply.message : null;
    if (no !== null) why.set(command, no);
  });
  const may = (command: string): boolean => !why.has(command);
  const roles: EngineRole[] = [...(hook ? (['pop'] as const) : []), ...(reads ? (['mta'] as const) : [])];
  const source = cfg.source ?? 'poprelay.ini';
  const fix = (wanted: readonly EngineRole[]): string =>
    `give this host an engine user of its own role in engine = (docs/cluster.md): ${engineRoleAcl(wanted, engine.db)}`;
  const needs = [
    ...(hook ? ['EVAL', 'SET', 'GET'] : []),
    ...(answers ? ['GET', 'PEXPIRETIME'] : []),
    ...(cfg.mirror ? ['SCAN', 'MGET', 'PSUBSCRIBE'] : []),
  ].filter((c, i, all) => all.indexOf(c) === i);
  const missing = needs.filter((c) => !may(c));
  if (missing.length > 0) {
    const who =
      hook && reads
        ? 'the hook, the sweep and poprelayd need'
        : hook
          ? 'the hook and the sweep need'
          : 'poprelayd needs';
    return bad(
      'FAIL',
      name,
      `the engine user may not run ${missing.join(', ')}, which ${who} here (${why.get(missing[0] ?? '') ?? ''})`,
      fix(roles.length > 0 ? roles : ['mta']),
    );
  }
  const writes = ['SET', 'EVAL'].filter(may);
  const readList = needs.filter((c) => !['EVAL', 'SET'].includes(c)).join(', ');
  if (hook) {
    if (!may('INFO'))
      return bad(
        'WARN',
        name,
        'records logins, but may not run INFO: the sweep cannot tell a restarted engine from the one it seeded, so it sends every entry of the map every minute',
        fix(roles),
      );
    return ok(
      name,
      reads
        ? `records logins and reads (a POP/IMAP host that is an MTA host too): EVAL, SET, INFO, ${readList} allowed`
        : 'records logins (POP/IMAP host): EVAL, SET and INFO allowed; like every POP/IMAP host it can grant relaying, which recording a login is',
    );
  }
  if (reads) {
    if (writes.length > 0)
      return bad(
        'WARN',
        name,
        `can write the relay set (${writes.join(' and ')} allowed): whoever can read ${source} can grant relaying on every host; an MTA host needs only the read role`,
        fix(roles),
      );
    return ok(name, `reads only (MTA host): SET and EVAL refused; ${readList} allowed`);
  }
  return ok(
    name,
    may('SET')
      ? `can write the relay set (SET allowed${may('SCAN') ? ', and SCAN: the admin role' : ''}): a POP/IMAP host's or an administrator's credential`
      : 'reads only: SET and EVAL refused',
  );
}

export function formatChecks(checks: readonly Check[]): string[] {
  return checks.flatMap((c) => [
    `${c.status.padEnd(4)}  ${c.name}: ${c.detail}`,
    ...(c.fix === undefined ? [] : [`      fix: ${c.fix}`]),
  ]);
}
