// The Debian package (npm run deb, scripts/build-deb.sh): what it holds and
// declares, lintian's verdict, that its dependencies resolve on this Debian
// 12 machine (with its Node.js 20 package), and a real life on Debian 13 in
// an overlay of the Debian 13 tree (test/fixtures/deb-trixie.sh): apt
// install, doctor, a login, root's commands, an upgrade, nodejs's trigger,
// dpkg-reconfigure, apt remove, apt install, apt purge. It builds the
// package only when build/deb has none newer than what goes into it.

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';

import { doctorStatuses } from './support/doctor.js';
import { dovecotVersions } from './support/dovecot.js';
import { expectVerified } from './support/maps.js';
import { ROOT, runtimeModules } from './support/paths.js';
import { tempDir } from './support/tmp.js';

const DEB_DIR = join(ROOT, 'build/deb');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const ARCH = spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout.trim();
const DEB = join(DEB_DIR, `poprelay_${VERSION}_${ARCH}.deb`);

/** The newest modification time of the files under `paths` (in the checkout). */
function newest(paths: string[]): number {
  let t = 0;
  for (const p of paths.map((q) => join(ROOT, q))) {
    if (!existsSync(p)) continue;
    const st = statSync(p);
    if (st.isDirectory()) {
      for (const e of readdirSync(p, { recursive: true, encoding: 'utf8' }))
        t = Math.max(t, statSync(join(p, e)).mtimeMs);
    } else t = Math.max(t, st.mtimeMs);
  }
  return t;
}

/** The package, built unless build/deb holds one newer than everything it is made of. */
async function builtDeb(): Promise<void> {
  const inputs = ['dist', 'bin', 'etc', 'man', 'dovecot-conf', 'debian', 'scripts/build-deb.sh', 'build/Release'];
  if (existsSync(DEB) && statSync(DEB).mtimeMs > newest(inputs)) return;
  const r = await execa('npm', ['run', 'deb'], { cwd: ROOT, reject: false, all: true });
  if (r.exitCode !== 0) throw new Error(`npm run deb failed:\n${r.all ?? ''}`);
}

/** One "name: value" line each, as the fixture's state() writes them. */
function parseState(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .split('\n')
      .filter((l) => l.includes(': '))
      .map((l) => [l.slice(0, l.indexOf(': ')), l.slice(l.indexOf(': ') + 2).trim()]),
  );
}

const PROGRAMS = ['poprelay', 'poprelay-login', 'poprelay-sweep', 'poprelayd'];
const MAN_PAGES = [
  'man8/poprelay.8',
  'man8/poprelay-login.8',
  'man8/poprelay-sweep.8',
  'man8/poprelayd.8',
  'man5/poprelay.ini.5',
];
const UNITS = ['poprelay-sweep.service', 'poprelay-sweep.timer', 'poprelayd.service'];

describe('npm run deb', () => {
  const x = tempDir('poprelay-deb-');
  const file = (path: string): string => readFileSync(join(x, path), 'utf8');
  const control = (name: string): string => readFileSync(join(x, 'DEBIAN', name), 'utf8');

  beforeAll(async () => {
    await builtDeb();
    await execa('dpkg-deb', ['-R', DEB, x]);
  }, 300_000);

  it('builds exactly one package, build/deb/poprelay_<version>_<arch>.deb', () => {
    expect(readdirSync(DEB_DIR)).toEqual([`poprelay_${VERSION}_${ARCH}.deb`]);
    const fields = spawnSync('dpkg-deb', ['--field', DEB, 'Package', 'Version', 'Architecture'], { encoding: 'utf8' });
    expect(fields.stdout).toBe(`Package: poprelay\nVersion: ${VERSION}\nArchitecture: ${ARCH}\n`);
  });

  it('holds the compiled addon, linking the system libdb 5.3, and the built JavaScript', async () => {
    const lib = join(x, 'usr/lib/poprelay');
    const addon = join(lib, 'build/Release/poprelay_native.node');
    expect(readFileSync(addon).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    const { stdout: dynamic } = await execa('readelf', ['-d', addon]);
    expect(dynamic).toMatch(/NEEDED.*\[libdb-5\.3\.so\]/);
    expect(readdirSync(join(lib, 'dist')).sort()).toEqual(readdirSync(join(ROOT, 'dist')).sort());
    expect(file('usr/lib/poprelay/dist/poprelay-login.cjs')).toBe(
      readFileSync(join(ROOT, 'dist/poprelay-login.cjs'), 'utf8'),
    );
    expect(JSON.parse(file('usr/lib/poprelay/package.json'))).toMatchObject({ name: 'poprelay', type: 'module' });
    // The run-time modules and nothing else: no node-addon-api, no development tools.
    const modules = runtimeModules();
    for (const m of modules) expect(existsSync(join(lib, m, 'package.json')), m).toBe(true);
    const shipped = readdirSync(join(lib, 'node_modules')).flatMap((d) =>
      d.startsWith('@')
        ? readdirSync(join(lib, 'node_modules', d)).map((e) => `node_modules/${d}/${e}`)
        : [`node_modules/${d}`],
    );
    expect(shipped.sort()).toEqual([...modules].sort());
    expect(readdirSync(lib).sort()).toEqual(['bin', 'build', 'dist', 'etc', 'node_modules', 'package.json']);
  });

  it('runs the programs with /usr/bin/node, from /usr/sbin', () => {
    for (const p of PROGRAMS) {
      expect(readlinkSync(join(x, 'usr/sbin', p))).toBe(`../lib/poprelay/bin/${p}`);
      expect(statSync(join(x, 'usr/lib/poprelay/bin', p)).mode & 0o777).toBe(0o755);
    }
    for (const p of ['poprelay', 'poprelay-sweep', 'poprelayd'])
      expect(file(`usr/lib/poprelay/bin/${p}`).split('\n')[0]).toBe('#!/usr/bin/node');
    // The hook is the compiled front; the postinst writes recorder.conf beside it for the Node installed.
    expect(file('usr/lib/poprelay/bin/poprelay-login').slice(0, 4)).toBe('\x7fELF');
    expect(existsSync(join(x, 'usr/lib/poprelay/bin/recorder.conf'))).toBe(false);
  });

  it('holds the manual pages, compressed', () => {
    for (const m of MAN_PAGES) {
      const page = gunzipSync(readFileSync(join(x, 'usr/share/man', `${m}.gz`))).toString('utf8');
      expect(page, m).toBe(readFileSync(join(ROOT, 'man', m), 'utf8'));
    }
  });

  it('holds the units, the cron entry and the Dovecot snippets with the /usr/sbin paths', () => {
    const atUsrSbin = (path: string): string =>
      readFileSync(join(ROOT, path), 'utf8').replaceAll('/usr/local/sbin/', '/usr/sbin/');
    for (const u of UNITS) expect(file(`lib/systemd/system/${u}`), u).toBe(atUsrSbin(`etc/systemd/${u}`));
    expect(file('lib/systemd/system/poprelay-sweep.service')).toMatch(
      /^ExecStart=\/usr\/sbin\/poprelay-sweep --quiet$/m,
    );
    expect(file('lib/systemd/system/poprelayd.service')).toMatch(/^ExecStart=\/usr\/sbin\/poprelayd$/m);
    expect(file('etc/cron.d/poprelay')).toContain(
      '* * * * *\troot\t[ -d /run/systemd/system ] || [ ! -x /usr/sbin/poprelay-sweep ] || /usr/sbin/poprelay-sweep --quiet\n',
    );
    expect(file('etc/poprelay/poprelay.ini')).toBe(readFileSync(join(ROOT, 'etc/poprelay.ini'), 'utf8'));
    for (const v of ['2.3', '2.4']) {
      const snippet = file(`usr/share/poprelay/dovecot-conf/${v}/95-poprelay.conf`);
      expect(snippet).toBe(atUsrSbin(`dovecot-conf/${v}/95-poprelay.conf`));
      expect(snippet).toContain('executable = script-login /usr/sbin/poprelay-login --tag pop3\n');
    }
    // The reference copy beside the programs, which poprelay doctor points to, names /usr/sbin too.
    expect(file('usr/lib/poprelay/etc/cron.d/poprelay')).toBe(file('etc/cron.d/poprelay'));
    const listing = spawnSync('dpkg-deb', ['--contents', DEB], { encoding: 'utf8' }).stdout;
    expect(listing).not.toContain('/usr/local');
  });

  it('ships poprelay.ini and the cron entry as conffiles', () => {
    expect(control('conffiles').split('\n').filter(Boolean).sort()).toEqual([
      '/etc/cron.d/poprelay',
      '/etc/poprelay/poprelay.ini',
    ]);
  });

  it('depends on what it runs with, and on no compiler, npm or -dev package', () => {
    const depends =
      control('control')
        .match(/^Depends: (.*)$/m)?.[1]
        ?.split(', ') ?? [];
    expect(depends).toEqual(
      expect.arrayContaining(['nodejs (>= 20)', 'libdb5.3', 'adduser', 'cron | cron-daemon | systemd-sysv']),
    );
    expect(depends.join(' ')).not.toMatch(/-dev\b|\bnpm\b|\bg\+\+|\bgcc\b|\bmake\b|node-gyp/);
    expect(control('control')).toMatch(/^Recommends: dovecot-core, openssl$/m);
  });

  it('enables and starts the sweep timer on install, and does not enable poprelayd', () => {
    const postinst = control('postinst');
    expect(postinst).toContain("deb-systemd-helper enable 'poprelay-sweep.timer'");
    expect(postinst).toContain("deb-systemd-invoke $_dh_action 'poprelay-sweep.timer'");
    // poprelayd is enabled again only where the administrator enabled it (was-enabled).
    expect(postinst).toMatch(
      /if deb-systemd-helper --quiet was-enabled 'poprelayd\.service'; then\n\s*# Create new symlinks/,
    );
  });

  it('lintian finds no error and no warning', async () => {
    const r = await execa('lintian', ['--fail-on', 'error,warning', DEB], { reject: false, all: true });
    expect((r.all ?? '').split('\n').filter((l) => /^[EW]: /.test(l))).toEqual([]);
    expect(r.exitCode, r.all).toBe(0);
  });

  it('installs on this Debian 12 machine with its Node.js 20 package: apt resolves every dependency', async () => {
    expect(readFileSync('/etc/debian_version', 'utf8')).toMatch(/^12\./);
    const r = await execa('apt-get', ['install', '--simulate', '--reinstall', DEB], { reject: false, all: true });
    expect(r.exitCode, r.all).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^Inst poprelay .*${VERSION.replaceAll('.', '\\.')}`, 'm'));
    expect(r.stdout).toMatch(/^Conf poprelay /m);
  });
});

describe.runIf(dovecotVersions().includes('2.4'))('the package on Debian 13 (its own nodejs, Dovecot 2.4)', () => {
  const work = tempDir('poprelay-deb-trixie-');
  const out = (step: string): string => readFileSync(join(work, `${step}.out`), 'utf8');
  const rc = (step: string): number => Number(readFileSync(join(work, `${step}.rc`), 'utf8'));
  const state = (step: string): Record<string, string> => parseState(readFileSync(join(work, `${step}.state`), 'utf8'));

  beforeAll(async () => {
    await builtDeb();
    const r = await execa('unshare', ['-m', 'bash', join(ROOT, 'test/fixtures/deb-trixie.sh'), work, DEB], {
      reject: false,
      all: true,
    });
    if (r.exitCode !== 0) throw new Error(`deb-trixie.sh failed:\n${r.all ?? ''}`);
  }, 600_000);

  it('apt install ./poprelay_*.deb with Dovecot in the same run: the user, the map, the config, the snippet, the timer', async () => {
    expect(rc('install'), out('install')).toBe(0);
    const s = state('install');
    expect(s.status).toBe('ii');
    expect(s.user).toMatch(/^poprelay:x:\d+:\d+::\/nonexistent:\/usr\/sbin\/nologin$/);
    expect(s.group).toBe('poprelay');
    expect(s['/etc/poprelay']).toBe('root:root 755 directory');
    expect(s['/etc/poprelay/poprelay.ini']).toBe('root:poprelay 640 regular file');
    expect(s.statoverride).toBe('root poprelay 640 /etc/poprelay/poprelay.ini');
    expect(s['/var/lib/poprelay']).toBe('poprelay:poprelay 755 directory');
    expect(s['/var/lib/poprelay/popip.db']).toBe('poprelay:poprelay 644 regular file');
    await expectVerified(join(work, 'installed-popip.db'));
    // Dovecot 2.4's snippet, the packaged hook's path; Debian 13's Node 20 needs no vsz_limit.
    expect(out('install')).toContain('poprelay: installed /etc/dovecot/conf.d/95-poprelay.conf (Dovecot 2.4)');
    const snippet = readFileSync(join(work, 'installed-95-poprelay.conf'), 'utf8');
    expect(snippet).toContain('executable = script-login /usr/sbin/poprelay-login --tag imap\n');
    expect(snippet).not.toMatch(/^\s*vsz_limit/m);
    expect(s['recorder flags']).toBe('--jitless --no-expose-wasm');
    expect(s['/etc/cron.d/poprelay']).toBe('root:root 644 regular file');
    expect(s['/etc/systemd/system/timers.target.wants/poprelay-sweep.timer']).toMatch(/symbolic link$/);
    expect(s['/etc/systemd/system/multi-user.target.wants/poprelayd.service']).toBe('absent');
  });

  it('poprelay doctor passes the checks a chroot can pass, and the hook records a login as Dovecot runs it', () => {
    // No Dovecot, MTA, cron daemon or systemd runs in the chroot: live sessions, mta and sweep are not judged here.
    const statuses = doctorStatuses(out('doctor'));
    for (const check of [
      'config',
      'dovecot pop3',
      'dovecot imap',
      'map',
      'map access',
      'map readers',
      'map directory',
      'hook',
    ])
      expect(statuses[check], `${check}\n${out('doctor')}`).toBe('OK');
    expect(out('doctor')).toContain('config: /etc/poprelay/poprelay.ini parses');
    expect(out('hook')).toBe('poprelay: recorded 192.0.2.7 (user=(none))\n');
    expect(rc('hook')).toBe(0);
  });

  it("root's commands and the sweep work with Debian 13's nodejs", () => {
    expect(out('add'), 'poprelay add as root').not.toMatch(/internal error/);
    expect(rc('add')).toBe(0);
    expect(out('sweep'), 'poprelay-sweep as root').not.toMatch(/internal error/);
    expect(rc('sweep')).toBe(0);
    expect(out('list-upgrade')).toMatch(/192\.0\.2\.1\b/);
    expect(out('list-upgrade')).toMatch(/192\.0\.2\.7\b/);
  });

  it('an upgrade keeps the map, the edited config, its group and mode, and the snippet', () => {
    expect(rc('upgrade'), out('upgrade')).toBe(0);
    const [before, after] = [state('edited'), state('upgrade')];
    expect(before['ini sha256']).not.toBe(state('install')['ini sha256']);
    for (const key of [
      'map sha256',
      'ini sha256',
      '/etc/poprelay/poprelay.ini',
      '/var/lib/poprelay',
      '/etc/dovecot/conf.d/95-poprelay.conf',
    ])
      expect(after[key], key).toBe(before[key]);
    expect(out('upgrade')).not.toMatch(/Configuration file .*poprelay\.ini/);
  });

  it("writes the hook's Node flags again when the nodejs package changes (dpkg trigger)", () => {
    expect(rc('node-trigger'), out('node-trigger')).toBe(0);
    expect(out('node-trigger')).toContain('Processing triggers for poprelay');
    expect(state('node-trigger')['recorder flags']).toBe('--jitless --no-expose-wasm');
  });

  it('a snippet the administrator deleted stays deleted on upgrade; dpkg-reconfigure installs it again', () => {
    expect(rc('upgrade-deleted')).toBe(0);
    expect(state('upgrade-deleted')['/etc/dovecot/conf.d/95-poprelay.conf']).toBe('absent');
    expect(rc('reconfigure'), out('reconfigure')).toBe(0);
    expect(state('reconfigure')['/etc/dovecot/conf.d/95-poprelay.conf']).toBe('root:root 644 regular file');
  });

  it('apt remove keeps the map and the config, and sets the snippet aside so that logins no longer run the hook', () => {
    expect(rc('remove'), out('remove')).toBe(0);
    const [before, s] = [state('reconfigure'), state('remove')];
    expect(s.status).toBe('rc');
    expect(s['/usr/sbin/poprelay-login']).toBe('absent');
    expect(s['/usr/lib/poprelay/bin/recorder.conf']).toBe('absent');
    expect(s['map sha256']).toBe(before['map sha256']);
    expect(s['ini sha256']).toBe(before['ini sha256']);
    expect(s['/etc/poprelay/poprelay.ini']).toBe('root:poprelay 640 regular file');
    expect(s['/etc/dovecot/conf.d/95-poprelay.conf']).toBe('absent');
    expect(s['/etc/dovecot/conf.d/95-poprelay.conf.disabled']).toBe('root:root 644 regular file');
  });

  it('apt install after a removal enables the snippet again and keeps the map', () => {
    expect(rc('reinstall'), out('reinstall')).toBe(0);
    const s = state('reinstall');
    expect(s['/etc/dovecot/conf.d/95-poprelay.conf']).toBe('root:root 644 regular file');
    expect(s['/etc/dovecot/conf.d/95-poprelay.conf.disabled']).toBe('absent');
    expect(s['map sha256']).toBe(state('remove')['map sha256']);
  });

  it('apt purge removes the config, the map and the snippet, and leaves the system user', () => {
    expect(rc('purge'), out('purge')).toBe(0);
    const s = state('purge');
    expect(s.status).toBe('absent');
    for (const p of [
      '/etc/poprelay',
      '/var/lib/poprelay',
      '/etc/dovecot/conf.d/95-poprelay.conf',
      '/etc/dovecot/conf.d/95-poprelay.conf.disabled',
      '/etc/cron.d/poprelay',
      '/etc/systemd/system/timers.target.wants/poprelay-sweep.timer',
    ])
      expect(s[p], p).toBe('absent');
    expect(s.statoverride).toBe('none');
    expect(s.user).toMatch(/^poprelay:/);
  });
});
