// The real map readers, driven without any MTA daemon: sendmail -bt with a
// .cf built by m4, Postfix's postmap -q and Exim -be/-bs, both unpacked by
// scripts/install-deps.sh --test. The MTA configuration comes from the
// shipped etc/mta/ snippets, with only the map path changed.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

import { ROOT } from './paths.js';

export const PEERS = '/var/cache/poprelay-test-peers/root';
const POSTMAP = join(PEERS, 'usr/sbin/postmap');
const POSTCONF = join(PEERS, 'usr/sbin/postconf');
const EXIM = join(PEERS, 'usr/sbin/exim4');
const POSTFIX_ENV = { LD_LIBRARY_PATH: join(PEERS, 'usr/lib/postfix') };
export function checkPeersInstalled(): void {
  for (const f of [POSTMAP, EXIM]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: run scripts/install-deps.sh --test as root`);
  }
}

function shipped(name: string, mapBase: string): string {
  return readFileSync(join(ROOT, 'etc/mta', name), 'utf8').replaceAll('/var/lib/poprelay/popip', mapBase);
}

/** The map name without .db, as MTA configurations name it. */
function base(map: string): string {
  return map.replace(/\.db$/, '');
}

export interface Sendmail {
  cf: string;
}

/**
 * A sendmail.cf with the shipped FEATURE(`drac') line, plus a classic
 * popauth-style ruleset that looks up ${client_addr} exactly in `map`. With
 * `socket` (sendmail's inet:PORT@HOST or unix:PATH), the drac line is the
 * shipped one that asks poprelayd there instead.
 */
export async function sendmailConfig(dir: string, map: string, socket?: string): Promise<Sendmail> {
  const drac =
    socket === undefined
      ? shipped('sendmail.mc', base(map))
      : shipped('sendmail-socketmap.mc', base(map)).replaceAll('unix:/run/poprelay/socketmap', socket);
  const mc = [
    "include(`/usr/share/sendmail/cf/m4/cf.m4')dnl",
    "OSTYPE(`linux')dnl",
    "define(`confDONT_PROBE_INTERFACES',`True')dnl",
    drac,
    "MAILER(`local')dnl",
    "MAILER(`smtp')dnl",
    'LOCAL_CONFIG',
    `Kpopip hash -o ${base(map)}`,
    'LOCAL_RULESETS',
    'SPopauth_check',
    'R$*\t\t$: $(popip $&{client_addr} $: <NOTFOUND> $)',
    'R<NOTFOUND>\t$@ <NO>',
    'R$*\t\t$@ <YES>',
  ].join('\n');
  writeFileSync(join(dir, 'test.mc'), mc + '\n');
  const { stdout } = await execa('m4', [join(dir, 'test.mc')]);
  const cf = join(dir, 'test.cf');
  writeFileSync(cf, stdout + '\n');
  return { cf };
}

/** sendmail -bt under a dotted hostname (an unqualified one makes it warn and sleep). */
export function sendmailBt(sm: Sendmail): ChildProcess {
  return spawn('unshare', ['--uts', 'sh', '-c', `hostname test.example.org && exec sendmail -C ${sm.cf} -bt`], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/**
 * For each client address (as sendmail's ${client_addr}: dotted quad, or
 * IPv6: with eight uncompressed groups), whether FEATURE(`drac') lets it
 * relay (Relay_ok returns RELAY) and whether the exact popauth lookup finds it.
 */
export async function sendmailDecisions(
  sm: Sendmail,
  clientAddrs: string[],
): Promise<Array<{ relay: boolean; popauth: boolean }>> {
  const input = clientAddrs.map((a) => `.D{client_addr}${a}\nRelay_ok x\nPopauth_check x\n`).join('');
  const r = await execa(
    'unshare',
    ['--uts', 'sh', '-c', `hostname test.example.org && exec sendmail -C ${sm.cf} -bt`],
    { input },
  );
  const relay = [...r.stdout.matchAll(/^Relay_ok +returns: (.*)$/gm)].map((m) => m[1] === 'RELAY');
  const popauth = [...r.stdout.matchAll(/^Popauth_check +returns: (.*)$/gm)].map((m) => m[1] === '< YES >');
  if (relay.length !== clientAddrs.length || popauth.length !== clientAddrs.length) {
    throw new Error(`unexpected sendmail -bt output:\n${r.stdout}\n${r.stderr}`);
  }
  return clientAddrs.map((_, i) => ({ relay: relay[i] ?? false, popauth: popauth[i] ?? false }));
}

/**
 * sendmail -bt's check_rcpt for a client and a recipient: the ruleset's
 * verdict, "OK" or the error it returns ("5.7.1 ... Relaying denied", or a
 * 4.x.x deferral).
 */
export async function sendmailCheckRcpt(sm: Sendmail, clientAddr: string, rcpt: string): Promise<string> {
  const input = `.D{client_addr}${clientAddr}\ncheck_rcpt <${rcpt}>\n`;
  const r = await execa(
    'unshare',
    ['--uts', 'sh', '-c', `hostname test.example.org && exec sendmail -C ${sm.cf} -bt`],
    { input },
  );
  const m = /^check_rcpt +returns: (.*)$/m.exec(r.stdout);
  if (m === null) throw new Error(`unexpected sendmail -bt output:\n${r.stdout}\n${r.stderr}`);
  const verdict = (m[1] ?? '').replace(/(\d) \. (\d) \. (\d)/, '$1.$2.$3');
  return /\$# error/.test(verdict)
    ? verdict.replace(/^.*\$@ /, '').replace(/ \$: /, ' ')
    : verdict === ''
      ? 'OK'
      : verdict;
}

/** postmap -q against poprelayd's socketmap listener (inet:HOST:PORT): the value found, or null. */
export async function postmapSocketmap(cfdir: string, inet: string, key: string): Promise<string | null> {
  const r = await execa(POSTMAP, ['-c', cfdir, '-q', key, `socketmap:${inet}:drac`], {
    env: POSTFIX_ENV,
    reject: false,
  });
  if (r.exitCode === 0) return r.stdout;
  if (r.exitCode === 1 && r.stderr === '') return null;
  throw new Error(`postmap -q ${key} socketmap:${inet}:drac failed (${r.exitCode}): ${r.stderr}`);
}

/** A directory with a main.cf that lets postmap run without Postfix installed. */
export function postfixConfig(dir: string, map: string): string {
  const cfdir = join(dir, 'postfix');
  mkdirSync(cfdir, { recursive: true });
  writeFileSync(
    join(cfdir, 'main.cf'),
    `compatibility_level = 3.6\nmail_owner = dovenull\nsetgid_group = dovecot\n${shipped('postfix-main.cf', base(map))}`,
  );
  writeFileSync(join(cfdir, 'master.cf'), '');
  return cfdir;
}

/** postmap -q: the value found, or null when not found. */
export async function postmapQuery(cfdir: string, map: string, key: string): Promise<string | null> {
  const r = await execa(POSTMAP, ['-c', cfdir, '-q', key, `hash:${base(map)}`], { env: POSTFIX_ENV, reject: false });
  if (r.exitCode === 0) return r.stdout;
  if (r.exitCode === 1 && r.stderr === '') return null;
  throw new Error(`postmap -q ${key} failed (${r.exitCode}): ${r.stderr}`);
}

/** postconf -n: the effective non-default settings of a config directory. */
export async function postconf(cfdir: string): Promise<{ stdout: string; stderr: string }> {
  const r = await execa(POSTCONF, ['-c', cfdir, '-n'], { env: POSTFIX_ENV });
  return { stdout: r.stdout, stderr: r.stderr };
}

export interface Exim {
  conf: string;
}

/**
 * An Exim configuration whose RCPT ACL holds the shipped poprelay statement:
 * the map lookup, or with `socket` the readsocket that asks poprelayd there.
 */
export function eximConfig(dir: string, map: string, socket?: string): Exim {
  const statement =
    socket === undefined
      ? shipped('exim4-acl.conf', base(map))
      : shipped('exim4-readsocket.conf', base(map)).replaceAll('/run/poprelay/exim.sock', socket);
  for (const d of ['exim-log', 'exim-spool']) {
    mkdirSync(join(dir, d), { recursive: true });
    chmodSync(join(dir, d), 0o777);
  }
  const conf = join(dir, 'exim.conf');
  writeFileSync(
    conf,
    [
      'exim_user = Debian-exim',
      'exim_group = Debian-exim',
      'primary_hostname = test.example.org',
      `log_file_path = ${dir}/exim-log/%slog`,
      `spool_directory = ${dir}/exim-spool`,
      'keep_environment =',
      'domainlist local_domains = test.example.org',
      'acl_smtp_rcpt = acl_check_rcpt',
      'begin acl',
      'acl_check_rcpt:',
      statement,
      '  accept domains = +local_domains',
      '  deny message = relay not permitted',
      '',
    ].join('\n'),
  );
  return { conf };
}

/** exim -be with the dbmnz lookup: whether the key is found. */
export async function eximLookup(ex: Exim, map: string, key: string): Promise<boolean> {
  const r = await execa(EXIM, ['-C', ex.conf, '-be', `\${lookup{${key}}dbmnz{${map}}{yes}{no}}`]);
  if (r.stdout !== 'yes' && r.stdout !== 'no') throw new Error(`exim -be: ${r.stdout} ${r.stderr}`);
  return r.stdout === 'yes';
}

/**
 * An SMTP session on stdin (exim -bs) from `client` (-oMa: the address as a
 * real session sees it, inet_ntop's text): whether RCPT to `rcpt` (by
 * default in a remote domain: whether relaying is allowed) is accepted.
 * Any other answer than accepted or refused (a deferral) throws.
 */
export async function eximRelays(ex: Exim, client: string, rcpt = 'x@elsewhere.example'): Promise<boolean> {
  const input = `HELO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<${rcpt}>\r\nQUIT\r\n`;
  const r = await execa(EXIM, ['-C', ex.conf, '-bs', '-oMa', client], { input });
  if (/^250 Accepted/m.test(r.stdout)) return true;
  if (/^550 relay not permitted/m.test(r.stdout)) return false;
  throw new Error(`exim -bs: unexpected answer:\n${r.stdout}\n${r.stderr}`);
}
