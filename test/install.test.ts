// scripts/install.sh into a temporary tree (every path an option), and
// poprelay doctor against that install and against each way of breaking it.

import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { DOCTOR_ALL_OK, doctorStatuses } from './support/doctor.js';
import { dovecotVersions, TRIXIE, withVszLimit } from './support/dovecot.js';
import { dumpMap, expectVerified } from './support/maps.js';
import { ROOT, runtimeModules, shippedFiles } from './support/paths.js';
import { safeDir, tempDir } from './support/tmp.js';

interface Tree {
  dir: string;
  args: string[];
  sbin: string;
  map: string;
  ini: string;
  conf: string;
  cron: string;
  dovecotConf: string;
  sendmailCf: string;
}

/** The installer's options that put everything under `dir` (a path sendmail accepts). */
function tree(dir = safeDir()): Tree {
  const t = {
    dir,
    sbin: join(dir, 'usr/sbin'),
    map: join(dir, 'var/lib/poprelay/popip.db'),
    ini: join(dir, 'etc/poprelay/poprelay.ini'),
    conf: join(dir, 'etc/dovecot/conf.d/95-poprelay.conf'),
    cron: join(dir, 'etc/cron.d/poprelay'),
    dovecotConf: join(dir, 'dovecot.conf'),
    sendmailCf: join(dir, 'sendmail.cf'),
  };
  const args = [
    '--prefix',
    join(dir, 'usr'),
    '--map-dir',
    join(dir, 'var/lib/poprelay'),
    '--config',
    t.ini,
    '--dovecot-confdir',
    join(dir, 'etc/dovecot/conf.d'),
    '--cron-dir',
    join(dir, 'etc/cron.d'),
    '--systemd-dir',
    join(dir, 'etc/systemd/system'),
  ];
  return { ...t, args };
}

const RELOAD_DOVECOT = existsSync('/run/systemd/system') ? 'systemctl reload dovecot' : 'doveadm reload';

const install = (args: string[]) => execa('bash', [join(ROOT, 'scripts/install.sh'), ...args], { reject: false });

describe('scripts/install.sh', () => {
  it('--dry-run says what it would do and changes nothing', async () => {
    const t = tree();
    const r = await install([...t.args, '--dry-run']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`would run: cp -R ${ROOT.replace(/\/$/, '')}/dist ${t.dir}/usr/lib/poprelay/dist`);
    expect(r.stdout).toContain(`would run: ${t.sbin}/poprelay init as poprelay`);
    expect(r.stdout).toMatch(/FEATURE\(`drac', `hash -o .*\/var\/lib\/poprelay\/popip'\)dnl/);
    for (const p of [t.sbin, t.map, t.ini, t.conf, t.cron]) expect(existsSync(p), p).toBe(false);
  });

  it('installs programs, map, Dovecot snippet, cron entry and config, and a second run changes nothing', async () => {
    const t = tree();
    const r = await install(t.args);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    // Programs: linked into sbin, with absolute paths (Dovecot gives no PATH):
    // the interpreter, and for the hook's sh front Node and the recorder too.
    for (const p of ['poprelay-login', 'poprelay-sweep', 'poprelay']) {
      expect(readlinkSync(join(t.sbin, p))).toBe(join(t.dir, 'usr/lib/poprelay/bin', p));
    }
    for (const p of ['poprelay-sweep', 'poprelay'])
      expect(readFileSync(join(t.sbin, p), 'utf8').split('\n')[0]).toBe(`#!${process.execPath}`);
    // What ships is package.json's "files", besides package.json itself and the run-time dependencies.
    const lib = join(t.dir, 'usr/lib/poprelay');
    const files = shippedFiles();
    for (const f of files) expect(existsSync(join(lib, f)), f).toBe(true);
    expect(readdirSync(lib).sort()).toEqual(
      [...new Set(files.map((f) => f.split('/')[0] ?? f)), 'node_modules', 'package.json'].sort(),
    );
    for (const m of runtimeModules()) expect(existsSync(join(lib, m, 'package.json')), m).toBe(true);
    // poprelayd loads node-redis from there.
    expect((await execa(join(t.sbin, 'poprelayd'), ['--help'])).stdout).toMatch(/^Usage: poprelayd/);
    // The hook is the compiled front; recorder.conf beside it says how it starts the recorder.
    expect(readFileSync(join(t.sbin, 'poprelay-login')).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    const recorder = readFileSync(join(lib, 'build/Release/recorder.conf'), 'utf8');
    expect(recorder).toMatch(new RegExp(`^node=${process.execPath}$`, 'm'));
    expect(recorder).toMatch(new RegExp(`^script=${join(lib, 'dist/poprelay-login.cjs')}$`, 'm'));
    // This Node (20) runs the hook within Dovecot's default vsz_limit, so the snippet sets none.
    expect(recorder).toMatch(/^flags=--jitless --no-expose-wasm$/m);
    expect(readFileSync(t.conf, 'utf8')).not.toMatch(/^\s*vsz_limit/m);
    // The manual pages, where man finds them under the prefix.
    for (const [page, section] of [
      ['poprelay', '8'],
      ['poprelay-login', '8'],
      ['poprelay-sweep', '8'],
      ['poprelay.ini', '5'],
    ] as const) {
      const w = await execa('man', ['-w', section, page], { env: { MANPATH: join(t.dir, 'usr/share/man') } });
      expect(w.stdout).toBe(join(t.dir, `usr/share/man/man${section}/${page}.${section}`));
    }
    // The map: owned by poprelay in a poprelay-owned 0755 directory, mode 0644, valid.
    const { stdout: uid } = await execa('id', ['-u', 'poprelay']);
    expect(statSync(t.map).uid).toBe(Number(uid));
    expect(statSync(t.map).mode & 0o777).toBe(0o644);
    expect(statSync(join(t.dir, 'var/lib/poprelay')).uid).toBe(Number(uid));
    expect(statSync(join(t.dir, 'var/lib/poprelay')).mode & 0o777).toBe(0o755);
    await expectVerified(t.map);
    // The config: root's, readable by the hook's group (it may hold the engine's password).
    const { stdout: gid } = await execa('id', ['-g', 'poprelay']);
    expect(statSync(t.ini).uid).toBe(0);
    expect(statSync(t.ini).gid).toBe(Number(gid));
    expect(statSync(t.ini).mode & 0o777).toBe(0o640);
    // Dovecot is reloaded by systemctl only where systemd runs.
    expect(r.stdout).toContain(`doveconf -n accepts it; now reload Dovecot: ${RELOAD_DOVECOT}`);
    // Config, snippet and schedule name the installed paths.
    expect(readFileSync(t.ini, 'utf8')).toMatch(
      new RegExp(`^dbfile = ${t.map.replace('/var/lib/poprelay-tests', '.*')}$`, 'm'),
    );
    // A config outside /etc/poprelay/poprelay.ini is passed to the hook and the sweep.
    expect(readFileSync(t.conf, 'utf8')).toContain(
      `executable = script-login ${t.sbin}/poprelay-login --config ${t.ini} --queue ${t.map}.queue --tag pop3`,
    );
    expect(readFileSync(t.cron, 'utf8')).toContain(
      `* * * * *\troot\t[ -d /run/systemd/system ] || [ ! -x ${t.sbin}/poprelay-sweep ] || ${t.sbin}/poprelay-sweep --quiet --config ${t.ini}`,
    );
    // The installed snippet passes doveconf -n on top of Debian's stock configuration.
    writeFileSync(t.dovecotConf, `!include /etc/dovecot/dovecot.conf\n!include ${t.conf}\n`);
    const dc = await execa('doveconf', ['-n', '-c', t.dovecotConf], { reject: false });
    expect(dc.stderr).toBe('');
    // Again: the map and an edited config are kept.
    await execa(join(t.sbin, 'poprelay'), ['add', '192.0.2.1', '--config', t.ini]);
    writeFileSync(t.ini, `${readFileSync(t.ini, 'utf8')}\n; edited by the admin\n`);
    const ini = readFileSync(t.ini);
    const map = readFileSync(t.map);
    const again = await install(t.args);
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain(`keeping the existing ${t.ini}`);
    expect(again.stdout).toContain('exists and is a usable hash map; left as it is');
    expect(readFileSync(t.ini).equals(ini)).toBe(true);
    expect(readFileSync(t.map).equals(map)).toBe(true);
  });

  it('with Node 24, which needs more address space, gives the post-login services vsz_limit = 0', async () => {
    const node24 = '/var/cache/poprelay-test-peers/node/24/bin/node';
    const t = tree();
    const r = await install([...t.args, '--node', node24]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      `${node24} does not start within Dovecot's default vsz_limit: the post-login services get vsz_limit = 0`,
    );
    const conf = readFileSync(t.conf, 'utf8');
    expect(conf.match(/^ {2}user = poprelay\n {2}vsz_limit = 0$/gm)).toHaveLength(2);
    // Node 24 refuses --no-expose-wasm (and needs it not).
    expect(readFileSync(join(t.dir, 'usr/lib/poprelay/build/Release/recorder.conf'), 'utf8')).toMatch(
      /^flags=--jitless$/m,
    );
    writeFileSync(t.dovecotConf, `!include /etc/dovecot/dovecot.conf\n!include ${t.conf}\n`);
    const dc = await execa('doveconf', ['-n', '-c', t.dovecotConf], { reject: false });
    expect(dc.stderr).toBe('');
    expect(dc.stdout).toMatch(/service poprelay-pop3 \{\n(?:.*\n)*? {2}vsz_limit = 0\n/);
    const hook = await execa(join(t.sbin, 'poprelay-login'), ['--config', t.ini], {
      env: { IP: '192.0.2.9' },
      reject: false,
    });
    expect(hook.stderr).toBe('poprelay: recorded 192.0.2.9 (user=(none))\n'.trimEnd());
    expect(hook.exitCode).toBe(0);
  });

  it('installs both the cron entry and the systemd timer, the cron entry deferring to systemd where it runs', async () => {
    const t = tree();
    expect((await install(t.args)).exitCode).toBe(0);
    const service = readFileSync(join(t.dir, 'etc/systemd/system/poprelay-sweep.service'), 'utf8');
    expect(service).toContain(`ExecStart=${t.sbin}/poprelay-sweep --quiet --config ${t.ini}`);
    expect(service).toContain(`ReadWritePaths=${t.dir}/var/lib/poprelay`);
    expect(service).not.toMatch(/^User=/m); // root: it asks Dovecot, then takes the map owner's rights
    expect(existsSync(join(t.dir, 'etc/systemd/system/poprelay-sweep.timer'))).toBe(true);
    // poprelayd's unit, for several hosts: installed with this install's paths, not enabled.
    const daemon = readFileSync(join(t.dir, 'etc/systemd/system/poprelayd.service'), 'utf8');
    expect(daemon).toContain(`ExecStart=${t.sbin}/poprelayd --config ${t.ini}`);
    expect(daemon).toContain(`ReadWritePaths=${t.dir}/var/lib/poprelay`);
    // The cron line, run by sh as cron would: it sweeps where systemd does not run, and does nothing where it does.
    const line = /^\* \* \* \* \*\troot\t(.*)$/m.exec(readFileSync(t.cron, 'utf8'))?.[1] ?? '';
    expect(line).toBe(
      `[ -d /run/systemd/system ] || [ ! -x ${t.sbin}/poprelay-sweep ] || ${t.sbin}/poprelay-sweep --quiet --config ${t.ini}`,
    );
    const asCron = (systemdDir: string) =>
      execa('sh', ['-c', line.replace('/run/systemd/system', systemdDir)], { reject: false });
    const noSystemd = await asCron(join(t.dir, 'no-such-dir'));
    expect(noSystemd.exitCode).toBe(0);
    expect(readFileSync(join(t.dir, 'var/lib/poprelay/popip.db.sweep'), 'utf8')).toMatch(/"removed":0/);
    rmSync(join(t.dir, 'var/lib/poprelay/popip.db.sweep'));
    expect((await asCron(t.dir)).exitCode).toBe(0);
    expect(existsSync(join(t.dir, 'var/lib/poprelay/popip.db.sweep'))).toBe(false);
  });

  it('--uninstall removes what it installed and keeps the map and the config', async () => {
    const t = tree();
    expect((await install(t.args)).exitCode).toBe(0);
    const r = await install([...t.args, '--uninstall']);
    expect(r.exitCode).toBe(0);
    const man8 = join(t.dir, 'usr/share/man/man8');
    for (const p of [
      join(t.sbin, 'poprelay-login'),
      join(t.dir, 'usr/lib/poprelay'),
      t.conf,
      t.cron,
      join(man8, 'poprelay-sweep.8'),
    ])
      expect(existsSync(p), p).toBe(false);
    expect(existsSync(t.map)).toBe(true);
    expect(existsSync(t.ini)).toBe(true);
    expect(r.stdout).toContain(`kept the map ${t.map}`);
    expect(r.stdout).toContain(`now reload Dovecot (${RELOAD_DOVECOT}) so that logins no longer run the hook`);
  });

  it("writes /etc/poprelay/poprelay.ini by default, and keeps using an older install's /etc/mail/poprelay.ini, saying how to move it", async () => {
    const fresh = safeDir();
    const r = await install(['--root', fresh]);
    expect(r.exitCode, r.stderr).toBe(0);
    const ini = join(fresh, 'etc/poprelay/poprelay.ini');
    expect(statSync(ini).mode & 0o777).toBe(0o640);
    expect(statSync(join(fresh, 'etc/poprelay')).mode & 0o777).toBe(0o755);
    expect(statSync(join(fresh, 'etc/poprelay')).uid).toBe(0);
    // The programs read that file by default: the lines written name no --config.
    expect(readFileSync(join(fresh, 'etc/cron.d/poprelay'), 'utf8')).toMatch(/poprelay-sweep --quiet$/m);

    const old = safeDir();
    mkdirSync(join(old, 'etc/mail'), { recursive: true });
    cpSync(join(ROOT, 'etc/poprelay.ini'), join(old, 'etc/mail/poprelay.ini'));
    const before = readFileSync(join(old, 'etc/mail/poprelay.ini'));
    const o = await install(['--root', old]);
    expect(o.exitCode, o.stderr).toBe(0);
    expect(existsSync(join(old, 'etc/poprelay/poprelay.ini'))).toBe(false);
    expect(readFileSync(join(old, 'etc/mail/poprelay.ini')).equals(before)).toBe(true);
    expect(o.stdout).toContain(
      `install -d -m 0755 ${old}/etc/poprelay && mv ${old}/etc/mail/poprelay.ini ${old}/etc/poprelay/poprelay.ini && chown root:poprelay ${old}/etc/poprelay/poprelay.ini && chmod 0640 ${old}/etc/poprelay/poprelay.ini`,
    );
    expect(readFileSync(join(old, 'etc/dovecot/conf.d/95-poprelay.conf'), 'utf8')).toContain(
      'executable = script-login /usr/local/sbin/poprelay-login --config /etc/mail/poprelay.ini --queue /var/lib/poprelay/popip.db.queue --tag pop3',
    );
    expect(readFileSync(join(old, 'etc/cron.d/poprelay'), 'utf8')).toMatch(
      /\/usr\/local\/sbin\/poprelay-sweep --quiet --config \/etc\/mail\/poprelay\.ini$/m,
    );
    expect(readFileSync(join(old, 'etc/systemd/system/poprelayd.service'), 'utf8')).toContain(
      'ExecStart=/usr/local/sbin/poprelayd --config /etc/mail/poprelay.ini',
    );
  });

  it('refuses unknown options and an unsupported Dovecot', async () => {
    const t = tree();
    expect((await install(['--frobnicate'])).stderr).toBe(
      'install.sh: unknown option --frobnicate (see --help)\n'.trimEnd(),
    );
    const r = await install([...t.args, '--dovecot-version', '2.2']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe('install.sh: Dovecot 2.2 is not supported (2.3 or 2.4); give --dovecot-version');
  });
});

describe('poprelay doctor', () => {
  async function installed(): Promise<Tree> {
    const t = tree();
    const r = await install(t.args);
    if (r.exitCode !== 0) throw new Error(r.stderr);
    withoutLiveSessions(t);
    writeFileSync(t.dovecotConf, `!include /etc/dovecot/dovecot.conf\n!include ${t.conf}\n`);
    writeFileSync(t.sendmailCf, `Kdrac hash -o ${t.map.slice(0, -3)}\n`);
    return t;
  }

  /** No Dovecot runs for these checks (test/live.test.ts asks a running one). */
  function withoutLiveSessions(t: Tree): void {
    writeFileSync(t.ini, readFileSync(t.ini, 'utf8').replace(/^live_sessions = .*$/m, 'live_sessions = no'));
  }

  /** A pid file naming a live process (this one), unless a test left one of its own. */
  function cronPid(t: Tree): string {
    const file = join(t.dir, 'crond.pid');
    if (!existsSync(file)) writeFileSync(file, `${process.pid}\n`);
    return file;
  }

  /** `dovecot` says which doveconf to run (first on PATH) and on what; `config`, which file doctor is told of. */
  async function doctor(
    t: Tree,
    dovecot: { conf: string; path?: string } = { conf: t.dovecotConf },
    config: string[] = ['--config', t.ini],
  ) {
    const r = await execa(
      join(t.sbin, 'poprelay'),
      [
        'doctor',
        ...config,
        '--doveconf-config',
        dovecot.conf,
        '--sendmail-cf',
        t.sendmailCf,
        '--postfix-main-cf',
        join(t.dir, 'no-postfix'),
        '--cron-file',
        t.cron,
        // No systemd runs here; cron's pid file names a live process (this one), as where a cron daemon runs.
        '--cron-pid',
        cronPid(t),
      ],
      { reject: false, env: dovecot.path === undefined ? {} : { PATH: `${dovecot.path}:${process.env.PATH ?? ''}` } },
    );
    return { code: r.exitCode, stdout: r.stdout, statuses: doctorStatuses(r.stdout) };
  }

  it('finds nothing wrong with a correct install, and leaves the map as it was', async () => {
    const t = await installed();
    const before = await dumpMap(t.map);
    const r = await doctor(t);
    expect(r.statuses).toEqual(DOCTOR_ALL_OK);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      `hook: ${t.sbin}/poprelay-login --config ${t.ini} --queue ${t.map}.queue --tag imap run as poprelay within vsz_limit = 256M recorded 192.0.2.254 in ${t.map} (removed again)`,
    );
    expect(await dumpMap(t.map)).toEqual(before);
  });

  const broken: Array<[string, (t: Tree) => void | Promise<void>, string, RegExp]> = [
    ['a config with an unknown key', (t) => writeFileSync(t.ini, 'bogus = 1\n'), 'config', /unknown key "bogus"/],
    [
      'a missing map',
      (t) => rmSync(t.map),
      'map',
      /does not exist[\s\S]*fix: create it as poprelay: runuser -u poprelay -- poprelay init/,
    ],
    [
      'a corrupt map',
      (t) => writeFileSync(t.map, Buffer.alloc(8192, 1)),
      'map',
      /not a readable Berkeley DB file[\s\S]*fix: see "Recovering a damaged map"/,
    ],
    [
      'a map directory the hook user cannot write',
      (t) => chownSync(join(t.dir, 'var/lib/poprelay'), 0, 0),
      'map access',
      /poprelay cannot write the directory .*\n +fix: chown poprelay /,
    ],
    [
      'a map the MTAs cannot read',
      (t) => chmodSync(t.map, 0o600),
      'map readers',
      /mode 600: the MTAs cannot read it\n +fix: chmod 0644/,
    ],
    [
      'a group-writable directory above the map',
      (t) => chmodSync(join(t.dir, 'var/lib'), 0o775),
      'map directory',
      /var\/lib is group- or world-writable: sendmail refuses the map as unsafe/,
    ],
    [
      'Dovecot without the snippet',
      (t) => writeFileSync(t.dovecotConf, '!include /etc/dovecot/dovecot.conf\n'),
      'dovecot pop3',
      /pop3 logins do not run poprelay-login/,
    ],
    [
      'a vsz_limit too small for Node',
      (t) => writeFileSync(t.conf, withVszLimit(readFileSync(t.conf, 'utf8'), '96M')),
      'hook',
      /within vsz_limit = 96 ?M with IP=192\.0\.2\.254 did not record it in /,
    ],
    [
      'a queue that is not draining',
      async (t) => {
        const q = `${t.map}.queue`;
        await execa('install', ['-d', '-o', 'poprelay', '-g', 'poprelay', '-m', '0755', q]);
        writeFileSync(join(q, `${Math.floor(Date.now() / 1000) - 600}_192.0.2.77_1_ab`), '');
      },
      'map queue',
      /1 login\(s\) queued beside the map, the oldest 10m0\ds ago: the queue is not draining[\s\S]*fix: run poprelay-sweep by hand/,
    ],
    ['no sweep schedule', (t) => rmSync(t.cron), 'sweep', /entries never expire/],
    [
      'a cron entry with no cron daemon running',
      (t) => writeFileSync(join(t.dir, 'crond.pid'), `${spawnSync('true').pid}\n`),
      'sweep',
      /schedules poprelay-sweep, but no cron daemon runs \(none in .*crond\.pid\), nor systemd: entries never expire\n +fix: install and start cron/,
    ],
    [
      'an engine password every account can read',
      (t) => {
        writeFileSync(
          t.ini,
          `${readFileSync(t.ini, 'utf8')}engine = redis://:s3cret@127.0.0.1:1\n`.replace(/^engine = none\n/m, ''),
        );
        chmodSync(t.ini, 0o644);
      },
      'config',
      /holds the engine's password, and every account on this host can read it \(mode 644\)\n +fix: chown root:poprelay .* && chmod 0640 /,
    ],
    [
      'a sendmail.cf without the map',
      (t) => writeFileSync(t.sendmailCf, 'Kaliases implicit /etc/mail/aliases\n'),
      'mta',
      /sendmail\.cf does not use the map/,
    ],
    [
      'a hook that cannot start',
      (t) => writeFileSync(join(t.dir, 'usr/lib/poprelay/bin/poprelay-login'), '#!/nonexistent/sh\n'),
      'hook',
      /did not record it/,
    ],
    [
      "a hook that leaves logins in another queue than dbfile's",
      (t) =>
        writeFileSync(
          t.conf,
          readFileSync(t.conf, 'utf8').replaceAll(`--queue ${t.map}.queue`, '--queue /srv/x.db.queue'),
        ),
      'hook queue',
      /the hook leaves logins in \/srv\/x\.db\.queue, but dbfile is .*popip\.db\n +fix: give --queue .*popip\.db\.queue/,
    ],
    [
      'a hook that reads another config',
      (t) => writeFileSync(t.conf, readFileSync(t.conf, 'utf8').replaceAll(` --config ${t.ini}`, '')),
      'hook',
      /did not record it in .*popip\.db: .*not recorded 192\.0\.2\.254[\s\S]*needs --config on its executable line/,
    ],
  ];

  it.each(broken)('reports %s as a FAIL of its check, with the fix', async (_, breakIt, check, why) => {
    const t = await installed();
    await breakIt(t);
    const r = await doctor(t);
    expect(r.statuses[check], r.stdout).toBe('FAIL');
    expect(r.stdout).toMatch(why);
    expect(r.code).toBe(1);
  });

  it("without --config, checks the file the hook reads (Dovecot's executable line names it), and says so", async () => {
    const t = await installed();
    const r = await doctor(t, undefined, []);
    expect(r.stdout).toContain(`OK    config: ${t.ini} parses (the file the hook reads)`);
    expect(r.statuses).toEqual(DOCTOR_ALL_OK);
  });

  it('warns when told of another file than the one the hook reads', async () => {
    const t = await installed();
    const other = join(t.dir, 'other.ini');
    writeFileSync(other, readFileSync(t.ini, 'utf8'));
    const r = await doctor(t, undefined, ['--config', other]);
    expect(r.statuses.config, r.stdout).toBe('WARN');
    expect(r.stdout).toContain(
      `config: ${other} parses, but the hook reads ${t.ini}: these checks are of another file than the one logins use`,
    );
  });

  it('warns of a post-login service with process_limit = 1: a waiting recorder would keep logins out', async () => {
    const t = await installed();
    writeFileSync(
      t.conf,
      readFileSync(t.conf, 'utf8').replace(/^( *)user = poprelay$/m, '$1user = poprelay\n$1process_limit = 1'),
    );
    const r = await doctor(t);
    expect(r.statuses['dovecot pop3'], r.stdout).toBe('WARN');
    expect(r.statuses['dovecot imap'], r.stdout).toBe('OK');
    expect(r.stdout).toMatch(
      /process_limit = 1: while a recorder waits .*\n +fix: remove process_limit from service poprelay-pop3/,
    );
  });

  it('warns when the cron entry runs the sweep as the hook user, who cannot ask Dovecot which sessions are live', async () => {
    const t = await installed();
    writeFileSync(t.cron, readFileSync(t.cron, 'utf8').replace('\troot\t', '\tpoprelay\t'));
    const r = await doctor(t);
    expect(r.statuses.sweep, r.stdout).toBe('WARN');
    expect(r.stdout).toContain(
      `sweep: ${t.cron} runs poprelay-sweep as poprelay, which cannot ask Dovecot's anvil socket which sessions are live`,
    );
  });

  it.runIf(dovecotVersions().includes('2.4'))(
    'accepts the 2.4 snippet the installer chose, whose hook records within the default vsz_limit',
    async () => {
      const t = tree();
      const r = await install([...t.args, '--dovecot-version', '2.4']);
      expect(r.stdout).toContain('installing the Dovecot 2.4 snippet');
      withoutLiveSessions(t);
      writeFileSync(t.sendmailCf, `Kdrac hash -o ${t.map.slice(0, -3)}\n`);
      // Dovecot 2.4's doveconf, first on the doctor's PATH, reads a copy of
      // Debian 13's stock /etc/dovecot with the installed snippet in conf.d.
      const etc = tempDir('poprelay-etc-dovecot-', join(TRIXIE, 'tmp'));
      const bin = join(t.dir, 'dovecot-2.4-bin');
      cpSync(join(TRIXIE, 'etc/dovecot'), etc, { recursive: true });
      mkdirSync(bin);
      writeFileSync(join(bin, 'doveconf'), `#!/bin/sh\nexec chroot ${TRIXIE} doveconf "$@"\n`, { mode: 0o755 });
      const dovecot = { conf: join(etc.slice(TRIXIE.length), 'dovecot.conf'), path: bin };
      const snippet = readFileSync(t.conf, 'utf8');
      expect(snippet).not.toMatch(/^\s*vsz_limit/m);

      writeFileSync(join(etc, 'conf.d/95-poprelay.conf'), snippet);
      const good = await doctor(t, dovecot);
      expect(good.statuses, good.stdout).toEqual(DOCTOR_ALL_OK);
      expect(good.stdout).toContain(
        `dovecot pop3: post-login service poprelay-pop3 runs ${t.sbin}/poprelay-login --config ${t.ini} --queue ${t.map}.queue --tag pop3 as poprelay, vsz_limit = 256M`,
      );
      expect(good.stdout).toContain(
        `hook: ${t.sbin}/poprelay-login --config ${t.ini} --queue ${t.map}.queue --tag imap run as poprelay within vsz_limit = 256M recorded 192.0.2.254`,
      );
      expect(good.code).toBe(0);
    },
  );
});
