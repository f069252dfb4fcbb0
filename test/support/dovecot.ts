// A private Dovecot for tests and benchmarks: loopback ports, its own
// base_dir, passwd-file users and log, and poprelay-login installed into its
// directory and configured through the shipped dovecot-conf/ snippet.
// Debian 12's Dovecot 2.3 runs as installed; Dovecot 2.4 runs chrooted in a
// Debian 13 tree that scripts/install-deps.sh --test makes with debootstrap.

import { spawn, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

import { appCopy, installHook } from './app.js';
import { converse, type Endpoint } from './mailclient.js';
import { unlessLive } from './ini.js';
import { ROOT } from './paths.js';
import { freePort } from './ports.js';
import { terminate } from './terminate.js';
import { untilServing } from './wait.js';

/**
 * A post-login script other than poprelay's, to compare poprelay's with
 * (bench/hook-variants.ts). It gets no poprelay options: "$@" must be
 * script-login alone.
 */
export interface OtherScript {
  /** Writes the script into the instance's directory; returns its path. */
  write(dir: string, node: string): string;
  /** Whether Dovecot runs Node itself: then it needs vsz_limit lifted, and the host's Node (no chroot). */
  node: boolean;
}

/** What runs as the post-login script: poprelay-login as installed, none, or another script. */
export type PostLogin = 'poprelay' | 'none' | OtherScript;

export interface DovecotOptions {
  hook?: PostLogin;
  /** Extra poprelay.ini lines; dbfile points into the instance's map directory. */
  ini?: string;
  /** Run inside this network namespace (for IPv6 clients other than ::1). */
  netns?: string;
  listen?: string;
  /** The address clients connect to (default 127.0.0.1). */
  host?: string;
  /** Rewrites the shipped snippet before use (to show what a setting is for). */
  editConf?: (conf: string) => string;
  users?: number;
  /** The Node.js that runs poprelay-login (default: the one running the tests). */
  node?: string;
  /** Debian 12's Dovecot 2.3 (default), or 2.4 chrooted in TRIXIE; each with its own shipped snippet. */
  version?: DovecotVersion;
  /**
   * A Dovecot snippet as scripts/install.sh installed it, included as it is
   * instead of the instance's own hook (the demo's); the instance's
   * poprelay.ini and map are then unused.
   */
  installedSnippet?: string;
}

export type DovecotVersion = '2.3' | '2.4';

/** Debian 13 (Dovecot 2.4), made by scripts/install-deps.sh --test. */
export const TRIXIE = '/var/cache/poprelay-test-peers/trixie';

/** The tree a version runs in: this machine ('') for 2.3, the Debian 13 tree for 2.4. */
export function treeOf(version: DovecotVersion): string {
  return version === '2.4' ? TRIXIE : '';
}

/**
 * How the sweep asks a private Dovecot which sessions are live: its anvil
 * socket as the Dovecot sees it, and a doveadm of its version (2.3's cannot
 * ask 2.4's anvil, so 2.4's runs in its tree, through a wrapper in `dir`).
 */
export function whoOf(dir: string, version: DovecotVersion): { anvil: string; doveadm: string } {
  const root = treeOf(version);
  const anvil = join(dir, 'run/anvil').slice(root.length);
  if (root === '') return { anvil, doveadm: '/usr/bin/doveadm' };
  const doveadm = join(dir, 'doveadm');
  writeFileSync(doveadm, `#!/bin/sh\nexec chroot ${root} doveadm "$@"\n`, { mode: 0o755 });
  return { anvil, doveadm };
}

/** The lines a Dovecot configuration of that version must begin with. */
export function configHead(version: DovecotVersion): string[] {
  return version === '2.4' ? ['dovecot_config_version = 2.4.1', 'dovecot_storage_version = 2.4.1'] : [];
}

/** That version's doveconf, run in its tree: paths in `args` are as seen there. */
export function doveconf(version: DovecotVersion, args: string[]) {
  const root = treeOf(version);
  return root === ''
    ? execa('doveconf', args, { reject: false })
    : execa('chroot', [root, 'doveconf', ...args], { reject: false });
}

/** A POP3 server answers on `ep`: it greets and takes QUIT. */
export function pop3Greets(ep: Endpoint): Promise<unknown> {
  return converse(ep, [{ until: /^\+OK/m }, { send: 'QUIT', until: /^\+OK/m }], 2000);
}

/**
 * The Dovecot versions this machine can run: 2.4 too, unless
 * install-deps.sh could not make its tree and left the reason beside it
 * (printed here; the tests of 2.4 are then left out). Without either, the
 * setup was not run: an error.
 */
export function dovecotVersions(): DovecotVersion[] {
  if (existsSync(join(TRIXIE, 'usr/sbin/dovecot'))) return ['2.3', '2.4'];
  let why: string;
  try {
    why = readFileSync(`${TRIXIE}.unavailable`, 'utf8').trim();
  } catch {
    throw new Error(`${TRIXIE} has no Dovecot 2.4: run scripts/install-deps.sh --test as root`);
  }
  console.log(`Dovecot 2.4 tests skipped: ${why}`);
  return ['2.3'];
}

export interface Dovecot {
  dir: string;
  pop3: Endpoint;
  imap: Endpoint;
  mapDir: string;
  mapPath: string;
  iniPath: string;
  /** Dovecot's log so far. */
  log(): string;
  stop(): Promise<void>;
}

export const PASSWORD = 'secret-pw';
export const HOOK_USER = 'poprelay';

async function uidOf(user: string): Promise<{ uid: number; gid: number }> {
  const { stdout } = await execa('id', ['-u', user]);
  const { stdout: g } = await execa('id', ['-g', user]);
  return { uid: Number(stdout), gid: Number(g) };
}

/**
 * Where an instance's files are, seen from this process and from Dovecot
 * (which may run chrooted in `root`).
 */
interface Place {
  dir: string;
  root: string;
  /** The path as Dovecot and the hook see it. */
  inside(path: string): string;
}

function hookScript(
  at: Place,
  hook: PostLogin,
  iniPath: string,
  queue: string,
  node = process.execPath,
): string | null {
  if (hook === 'none') return null;
  if (hook !== 'poprelay') {
    if (hook.node && at.root !== '') throw new Error("a Node script runs with the host's Dovecot only");
    return at.inside(hook.write(at.dir, node));
  }
  if (at.root === '') return `${installHook(at.dir, node)} --config ${iniPath} --queue ${queue}`;
  // Chrooted: the interpreter and the app must be inside the tree too.
  // A hard link where it can be: Node is 100 MB, and there are several instances.
  try {
    linkSync(node, join(at.dir, 'node'));
  } catch {
    cpSync(node, join(at.dir, 'node'));
  }
  cpSync(appCopy(), join(at.dir, 'app'), { recursive: true });
  const front = installHook(at.dir, at.inside(join(at.dir, 'node')), at.inside(join(at.dir, 'app')), node);
  return `${at.inside(front)} --config ${at.inside(iniPath)} --queue ${at.inside(queue)}`;
}

/** A Dovecot snippet with `vsz_limit = value` added to each post-login service (after its user line), as the installer adds it. */
export function withVszLimit(conf: string, value: string): string {
  return conf.replace(/^(\s*user = poprelay\n)/gm, `$1  vsz_limit = ${value}\n`);
}

/**
 * The shipped snippet with the instance's script; every other line as
 * shipped. Another script gets no poprelay options, and a Node script that
 * Dovecot runs itself vsz_limit = 0 (unlimited in 2.4).
 */
function poprelayConf(script: string, hook: PostLogin, version: DovecotVersion): string {
  const shipped = readFileSync(join(ROOT, `dovecot-conf/${version}/95-poprelay.conf`), 'utf8');
  const withOptions =
    hook === 'poprelay' ? shipped : shipped.replace(/(\/usr\/local\/sbin\/poprelay-login) --tag \w+/g, '$1');
  const nodeFirst = hook !== 'poprelay' && hook !== 'none' && hook.node;
  const limited = nodeFirst ? withVszLimit(withOptions, version === '2.3' ? '0' : 'unlimited') : withOptions;
  return limited.replace(/\/usr\/local\/sbin\/poprelay-login/g, script);
}

/** The lines that differ between the versions: 2.4 renamed most of them. */
function versionConf(version: DovecotVersion, dir: string, nobody: { uid: number; gid: number }): string[] {
  if (version === '2.3') {
    return [
      'disable_plaintext_auth = no',
      'mail_location = maildir:~/Maildir',
      'pop3_uidl_format = %08Xu%08Xv',
      `passdb {\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u ${dir}/passwd\n}`,
      `userdb {\n  driver = static\n  args = uid=${nobody.uid} gid=${nobody.gid} home=${dir}/home/%u\n}`,
    ];
  }
  return [
    'auth_allow_cleartext = yes',
    'mail_driver = maildir',
    'mail_path = ~/Maildir',
    `passdb passwd-file {\n  passwd_file_path = ${dir}/passwd\n}`,
    `userdb static {\n  fields {\n    uid = ${nobody.uid}\n    gid = ${nobody.gid}\n    home = ${dir}/home/%{user}\n  }\n}`,
  ];
}

export async function startDovecot(o: DovecotOptions = {}): Promise<Dovecot> {
  const version = o.version ?? '2.3';
  const root = treeOf(version);
  const dir = mkdtempSync(join(root + tmpdir(), 'poprelay-dovecot-'));
  chmodSync(dir, 0o755);
  const at: Place = { dir, root, inside: (p) => p.slice(root.length) };
  const hookUser = await uidOf(HOOK_USER);
  const nobody = await uidOf('nobody');
  for (const d of ['run', 'state', 'home']) mkdirSync(join(dir, d));
  const mapDir = join(dir, 'map');
  mkdirSync(mapDir, { mode: 0o755 });
  chownSync(mapDir, hookUser.uid, hookUser.gid);
  const mapPath = join(mapDir, 'popip.db');
  // The login queue, as `poprelay init` leaves it: the front leaves logins only where it exists.
  mkdirSync(`${mapPath}.queue`, { mode: 0o700 });
  chownSync(`${mapPath}.queue`, hookUser.uid, hookUser.gid);
  const iniPath = join(dir, 'poprelay.ini');
  writeFileSync(iniPath, `dbfile = ${at.inside(mapPath)}\n${unlessLive(o.ini ?? 'ignore =\n')}`);

  const users = o.users ?? 3;
  const passwd: string[] = [];
  for (let i = 0; i < users; i++) {
    const name = `user${i}`;
    passwd.push(`${name}:{PLAIN}${PASSWORD}::::::`);
    // One message in each mailbox, so RETR and SELECT have something to show.
    const md = join(dir, 'home', name, 'Maildir');
    for (const sub of ['cur', 'new', 'tmp']) mkdirSync(join(md, sub), { recursive: true });
    writeFileSync(
      join(md, 'new', `1700000000.M1P1.test`),
      `From: a@example.org\r\nSubject: hello ${name}\r\n\r\nbody of ${name}\r\n`,
    );
    await execa('chown', ['-R', `${nobody.uid}:${nobody.gid}`, join(dir, 'home', name)]);
  }
  writeFileSync(join(dir, 'passwd'), passwd.join('\n') + '\n');

  const [pop3Port, imapPort] = [await freePort(), await freePort()];
  const script =
    o.installedSnippet === undefined ? hookScript(at, o.hook ?? 'poprelay', iniPath, `${mapPath}.queue`, o.node) : null;
  const base = at.inside(dir);
  const conf = [
    // Dovecot 2.4 requires these first.
    ...configHead(version),
    `base_dir = ${base}/run`,
    `state_dir = ${base}/state`,
    `log_path = ${base}/dovecot.log`,
    `listen = ${o.listen ?? '127.0.0.1'}`,
    'protocols = pop3 imap',
    'ssl = no',
    'auth_mechanisms = plain',
    'mail_max_userip_connections = 1000',
    ...versionConf(version, base, nobody),
    `service pop3-login {\n  inet_listener pop3 {\n    port = ${pop3Port}\n  }\n  inet_listener pop3s {\n    port = 0\n  }\n}`,
    `service imap-login {\n  inet_listener imap {\n    port = ${imapPort}\n  }\n  inet_listener imaps {\n    port = 0\n  }\n}`,
    // No anti-brute-force penalty between the many test logins from one address.
    'auth_failure_delay = 0',
    `!include ${o.installedSnippet === undefined ? `${base}/95-poprelay.conf` : at.inside(o.installedSnippet)}`,
  ];
  const snippet = script === null ? '' : poprelayConf(script, o.hook ?? 'poprelay', version);
  writeFileSync(join(dir, '95-poprelay.conf'), o.editConf ? o.editConf(snippet) : snippet);
  writeFileSync(join(dir, 'dovecot.conf'), conf.join('\n') + '\n');

  const cmd = [
    ...(o.netns === undefined ? [] : ['ip', 'netns', 'exec', o.netns]),
    // The hook needs /proc (it opens the map through /proc/self/fd); a bare chroot has none.
    ...(root === ''
      ? []
      : ['unshare', '-m', 'sh', '-c', 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"', root]),
    'dovecot',
    '-F',
    '-c',
    `${base}/dovecot.conf`,
  ];
  const proc: ChildProcess = spawn(cmd[0] ?? 'dovecot', cmd.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const host = o.host ?? '127.0.0.1';
  const dc: Dovecot = {
    dir,
    pop3: { host, port: pop3Port },
    imap: { host, port: imapPort },
    mapDir,
    mapPath,
    iniPath,
    log: () => {
      try {
        return readFileSync(join(dir, 'dovecot.log'), 'utf8');
      } catch {
        return '';
      }
    },
    stop: async () => {
      await terminate(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  // Ready when it greets on both ports.
  try {
    await untilServing(
      'dovecot',
      proc,
      async () => {
        await pop3Greets(dc.pop3);
        await converse(dc.imap, [{ until: /^\* OK/m }, { send: 'z LOGOUT', until: /^z OK/m }], 2000);
      },
      60_000,
      () => stderr,
    );
  } catch (e) {
    await dc.stop();
    throw e;
  }
  return dc;
}
