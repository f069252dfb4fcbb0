// Inputs that reach root's sweep and the recorder from people who are not
// root (docs/security.md): a mail client's login name, as Dovecot's
// `doveadm who` reports it, and whatever the hook's user leaves in the
// login queue. Each attack is a test: no login name may make the sweep keep
// an address of its choosing, no name in the queue may stop expiry or keep
// a front starting recorders, and the help text is printed as written.

import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { parseWho } from '../src/hook/live.js';
import { loadConfig } from '../src/config.js';
import { liveCheck } from '../src/commands/doctor/live-sessions.js';
import { readEntries, recordLogin } from '../src/map/relay-map.js';
import { queueDir, readQueue } from '../src/map/queue.js';
import { installHook } from './support/app.js';
import { type Dovecot, dovecotVersions, PASSWORD, startDovecot, whoOf } from './support/dovecot.js';
import { holdSession } from './support/mailclient.js';
import { configured, settings } from './support/maps.js';
import { BIN, ROOT } from './support/paths.js';
import { tempDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

const T = Math.floor(Date.now() / 1000);
const addr = parseClientAddress;
const sweep = (ini: string, more: string[] = []) => execa(BIN.sweep, ['--config', ini, ...more], { reject: false });

/**
 * A login name that, printed unescaped in doveadm who's tab columns, reads
 * as two more sessions: an IMAP one from 198.51.100.7 and a POP3 one from
 * 198.51.100.8.
 */
const FORGING_USER = 'x\timap\t1\t198.51.100.7\nq\tpop3\t2\t198.51.100.8';
const FORGED = ['198.51.100.7', '198.51.100.8'];

describe('live sessions: no login name can make the sweep keep an address (doveadm who)', () => {
  /** A map whose forged addresses logged in 20 minutes ago, and a sweep config that asks `doveadm`. */
  function site(doveadmScript: string): { ini: string; map: string; dir: string } {
    const { dir, ini, map, s } = configured();
    const doveadm = join(dir, 'doveadm');
    writeFileSync(doveadm, `#!/bin/sh\n${doveadmScript}`, { mode: 0o755 });
    writeFileSync(join(dir, 'anvil'), '');
    writeFileSync(
      ini,
      `dbfile = ${map}\nignore =\nlive_sessions = yes\ndovecot_anvil = ${join(dir, 'anvil')}\ndoveadm = ${doveadm}\n`,
    );
    for (const a of FORGED) recordLogin(s, addr(a), T - 20 * 60);
    return { ini, map, dir };
  }

  it('a fake doveadm printing what Dovecot 2.3 printed for that name (tab format unescaped, JSON escaped): the forged addresses expire', async () => {
    // Verbatim from Debian 12's doveadm -f tab who -1 and -f json who -1, one IMAP session of FORGING_USER from 127.8.0.9.
    const { ini, map } = site(
      `case " $* " in\n` +
        `  *" -f json "*) printf '%s' '[{"username":"x\\\\timap\\\\t1\\\\t198.51.100.7\\\\nq\\\\tpop3\\\\t2\\\\t198.51.100.8","service":"imap","pid":"27889","ip":"127.8.0.9"}]' ;;\n` +
        `  *) printf 'username\\tproto\\tpid\\tip\\nx\\timap\\t1\\t198.51.100.7\\nq\\tpop3\\t2\\t198.51.100.8\\timap\\t27889\\t127.8.0.9\\n' ;;\n` +
        `esac\n`,
    );
    const r = await sweep(ini);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    // The real session's address is kept as live; the forged ones are not.
    expect(r.stdout).toBe(`${map}: kept 1, removed 2, permanent 0, refreshed 1 live`);
    expect(readEntries(settings(join(map, '..'))).map((e) => e.address)).toEqual(['127.8.0.9']);
  });

  it('rows that are not sessions as doveadm writes them are left out and counted on stderr', async () => {
    const rows = [
      { username: 'a', service: 'imap', pid: '12', ip: '198.51.100.7' },
      { username: 'b', service: 'imap\tx', pid: '13', ip: '198.51.100.8' },
      { username: 'c', service: 'pop3', pid: '1 2', ip: '198.51.100.8' },
      { username: 'd', service: 'pop3', pid: '14', ip: '198.51.100.8\n' },
      { username: 'e', service: 'pop3', pid: 15, ip: '198.51.100.8' },
      ['f', 'imap', '16', '198.51.100.8'],
      null,
    ];
    expect(parseWho(JSON.stringify(rows))).toMatchObject({
      unreadable: 6,
      firstProblem: expect.stringMatching(/^service "imap\\tx"/),
    });
    const { ini, map } = site(`printf '%s' '${JSON.stringify(rows)}'\n`);
    const r = await sweep(ini);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toBe(
      `poprelay-sweep: live sessions: 6 row(s) of doveadm who's answer not understood and left out (the first: service "imap\\tx" is not a service name)`,
    );
    expect(r.stdout).toBe(`${map}: kept 1, removed 1, permanent 0, refreshed 1 live`);
    // doctor asks the same way, and says so.
    expect(liveCheck(loadConfig(ini))).toMatchObject({
      status: 'WARN',
      detail: expect.stringMatching(
        /: 1 address\(es\) with a live POP3 or IMAP session; 6 row\(s\) of doveadm who's answer not understood/,
      ),
    });
  });
});

describe.each(dovecotVersions())(
  'live sessions with a real Dovecot %s and a login name of tabs and newlines',
  (version) => {
    let dc: Dovecot;
    let anvil: string;
    let doveadm: string;
    beforeAll(async () => {
      // Any name logs in with the password (a static passdb after the passwd-file), and any character may be in it.
      // No post-login script: Dovecot's script-login cuts a name at its first tab, but a session that does not pass
      // through one (submission, or a service without poprelay's hook) reaches anvil with its name whole.
      const passdb =
        version === '2.3'
          ? `passdb {\n  driver = static\n  args = password=${PASSWORD}\n}\n`
          : `passdb static {\n  password = ${PASSWORD}\n}\n`;
      dc = await startDovecot({
        users: 1,
        version,
        hook: 'none',
        editConf: (c) => `${c}\nauth_username_chars =\n${passdb}`,
      });
      ({ anvil, doveadm } = whoOf(dc.dir, version));
    });
    afterAll(async () => dc?.stop());

    it('an IMAP session of that name keeps its own address, never the ones its name spells', async () => {
      const plain = Buffer.from(`\0${FORGING_USER}\0${PASSWORD}`).toString('base64');
      const held = await holdSession({ ...dc.imap, localAddress: '127.8.5.1' }, [
        { until: /^\* OK[^\r\n]*\r\n/m },
        { send: `a AUTHENTICATE PLAIN ${plain}`, until: /^a OK[^\r\n]*\r\n/m },
      ]);
      try {
        // Dovecot lists the session under the whole name (escaped in JSON; its tab format prints it as it is).
        const who = (format: string): string =>
          spawnSync(doveadm, ['-O', '-f', format, 'who', '-1', '-a', anvil], { encoding: 'utf8' }).stdout;
        await eventually(() => who('json').includes('127.8.5.1'), 60_000, 'doveadm who lists the session');
        expect(JSON.parse(who('json'))).toEqual([expect.objectContaining({ username: FORGING_USER, ip: '127.8.5.1' })]);
        expect(who('tab')).toContain('\nx\timap\t1\t198.51.100.7\nq\tpop3\t2\t198.51.100.8\t');
        // The sweep runs on this host: the map by its host path (a chrooted Dovecot sees another).
        const ini = join(dc.dir, 'sweep.ini');
        writeFileSync(
          ini,
          `dbfile = ${dc.mapPath}\nignore =\nlive_sessions = yes\ndovecot_anvil = ${anvil}\ndoveadm = ${doveadm}\n`,
        );
        // The forged addresses logged in 20 minutes ago (poprelay add, as the map's owner).
        for (const a of FORGED)
          expect((await execa(BIN.admin, ['add', a, '--config', ini, '--now', String(T - 20 * 60)])).exitCode).toBe(0);
        const r = await sweep(ini);
        expect(r.stderr).toBe('');
        expect(r.stdout).toBe(`${dc.mapPath}: kept 1, removed 2, permanent 0, refreshed 1 live`);
        expect(readEntries(settings(dc.mapDir)).map((e) => e.address)).toEqual(['127.8.5.1']);
      } finally {
        await held.close();
      }
    });
  },
);

describe('the login queue: no name in it stops expiry or loops a front', () => {
  /** The queue beside `map`, with `plant` done in it, and an entry that expired 20 minutes ago. */
  function planted(plant: (dir: string) => void): { ini: string; map: string } {
    const { ini, map, s } = configured();
    recordLogin(s, addr('192.0.2.200'), T - 20 * 60);
    mkdirSync(queueDir(map), { recursive: true });
    plant(queueDir(map));
    return { ini, map };
  }
  const raw = (dir: string, name: Buffer): Buffer => Buffer.concat([Buffer.from(`${dir}/`), name]);
  const NOT_UTF8 = Buffer.concat([Buffer.from('f1_192.0.2.1_pop3_'), Buffer.from([0xff, 0xfe])]);

  it.each([
    [
      'a directory holding a file',
      (d: string) => {
        mkdirSync(join(d, 'f1_192.0.2.1_pop3_alice'));
        writeFileSync(join(d, 'f1_192.0.2.1_pop3_alice', 'x'), '');
      },
      /a directory, not a login as the front leaves them; moved to stray\.[0-9a-f.]+ in the queue$/,
    ],
    ['an empty directory', (d: string) => mkdirSync(join(d, 'f2_x')), /a directory, not a login .*; removed$/],
    [
      'a FIFO',
      (d: string) => expect(spawnSync('mkfifo', [join(d, 'f3_192.0.2.1__')]).status).toBe(0),
      /a FIFO, not a login .*; removed$/,
    ],
    [
      'a symbolic link to a root-only file',
      (d: string) => symlinkSync('/etc/shadow', join(d, 'f4_192.0.2.1__')),
      /a symbolic link, not a login .*; removed$/,
    ],
    [
      'a name that is not UTF-8',
      (d: string) => writeFileSync(raw(d, NOT_UTF8), ''),
      /^f1_192\.0\.2\.1_pop3_\\xff\\xfe\): a name that is not UTF-8, not a login .*; removed$/,
    ],
  ])('%s at a front-style name: the sweep still expires, exits 0, and says what it was', async (_what, plant, said) => {
    const { ini, map } = planted(plant);
    const r = await sweep(ini);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(`${map}: kept 0, removed 1, permanent 0`);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^poprelay-sweep: dropped a queued login \(/);
    expect(lines[0]?.replace(/^poprelay-sweep: dropped a queued login \(/, '')).toMatch(said);
    // Nothing the front's glob (f[0-9]*_*) would find is left; /etc/shadow is as it was.
    expect(
      readdirSync(queueDir(map), { encoding: 'buffer' }).filter((n) => /^f[0-9].*_/s.test(n.toString('latin1'))),
    ).toEqual([]);
    expect(readFileSync('/etc/shadow').length).toBeGreaterThan(0);
  });

  it('a directory at a record-style name is a stray: writers and the sweep go on, doctor sees it', async () => {
    const { ini, map } = planted((d) => {
      mkdirSync(join(d, `${T}_192.0.2.9_1_ab`));
      writeFileSync(join(d, `${T}_192.0.2.9_1_ab`, 'x'), '');
    });
    const r = await sweep(ini);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(`${map}: kept 0, removed 1, permanent 0`);
    expect(readQueue(map)).toEqual({ logins: [], incoming: [], strays: [`${T}_192.0.2.9_1_ab`] });
    expect((await execa(BIN.admin, ['add', '192.0.2.10', '--config', ini], { reject: false })).exitCode).toBe(0);
  });

  /** A front as Dovecot runs it, whose node= notes each recorder it starts. */
  function frontSite(): { ini: string; map: string; front: string; starts: () => number; dir: string } {
    const dir = tempDir();
    const map = join(dir, 'popip.db');
    const ini = join(dir, 'poprelay.ini');
    writeFileSync(ini, `dbfile = ${map}\nignore =\nlive_sessions = no\nrecorder_idle_seconds = 0\n`);
    expect(spawnSync(BIN.admin, ['init', '--config', ini]).status).toBe(0);
    const log = join(dir, 'starts');
    const wrapper = join(dir, 'node');
    writeFileSync(wrapper, `#!/bin/sh\necho "$*" >>${log}\nexec ${process.execPath} "$@"\n`);
    chmodSync(wrapper, 0o755);
    const front = installHook(dir, wrapper, ROOT, process.execPath);
    const starts = (): number =>
      existsSync(log)
        ? readFileSync(log, 'utf8')
            .split('\n')
            .filter((l) => l.includes('--drain')).length
        : 0;
    return { ini, map, front, starts, dir };
  }

  it.each([
    ['a name that is not UTF-8', (d: string) => writeFileSync(raw(d, NOT_UTF8), '')],
    [
      'a directory holding a file',
      (d: string) => {
        mkdirSync(join(d, 'f1_192.0.2.1_pop3_alice'));
        writeFileSync(join(d, 'f1_192.0.2.1_pop3_alice', 'x'), '');
      },
    ],
  ])('%s at a front-style name: the login is recorded by one recorder, and the front stops', async (_what, plant) => {
    const s = frontSite();
    plant(queueDir(s.map));
    const r = await execa(s.front, ['--config', s.ini, '--queue', queueDir(s.map), '--tag', 'pop3', '/bin/true'], {
      env: { IP: '192.0.2.77', USER: 'alice', PATH: '/usr/bin:/bin' },
      extendEnv: false,
      reject: false,
    });
    expect(r.exitCode).toBe(0);
    expect(readEntries(settings(s.dir)).map((e) => e.address)).toEqual(['192.0.2.77']);
    expect(s.starts()).toBe(1);
    expect(r.stderr).toMatch(/not a login as the front leaves them/);
  });
});

describe('help', () => {
  it('poprelay COMMAND --help prints its text as written: newlines, not \\x0a', async () => {
    for (const cmd of ['list', 'add', 'doctor']) {
      const r = await execa(BIN.admin, [cmd, '--help']);
      expect(r.stdout).not.toContain('\\x0a');
      expect(r.stdout.split('\n').length).toBeGreaterThan(5);
      expect(r.stdout).toMatch(new RegExp(`^Usage: poprelay ${cmd}[^\\n]*\\n[\\s\\S]*\\nExit status: 0 success`));
    }
  });
});
