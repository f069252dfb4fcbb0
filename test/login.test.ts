// poprelay-login run directly, as `IP=... poprelay-login` by hand and with a
// command to continue, without Dovecot (test/login-dovecot.test.ts has the
// real thing).

import { spawn } from 'node:child_process';
import { readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { parseHookArgs } from '../src/hook/arguments.js';
import { readEntries } from '../src/map/relay-map.js';
import { HOSTILE_ADDRESSES, hostileCases } from './support/hostile.js';
import { holdLock } from './support/locks.js';
import { dumpMap, expectVerified, settings } from './support/maps.js';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/tmp.js';

const HOOK = join(ROOT, 'bin/poprelay-login');

function setup(extra = ''): { dir: string; ini: string; map: string } {
  const dir = tempDir();
  const map = join(dir, 'popip.db');
  const ini = join(dir, 'poprelay.ini');
  const lockTimeout = extra.includes('lock_timeout_ms') ? '' : 'lock_timeout_ms = 2000\n';
  writeFileSync(ini, `dbfile = ${map}\nignore = 10.9.0.0/16\n${lockTimeout}${extra}`);
  return { dir, ini, map };
}

async function hook(env: Record<string, string>, args: string[] = [], input?: string) {
  return execa(HOOK, args, { env, extendEnv: false, reject: false, input: input ?? '', stripFinalNewline: false });
}

describe('parseHookArgs (the recorder)', () => {
  it('takes the options the front hands over', () => {
    expect(parseHookArgs(['--dovecot-log', '--config', '/x.ini', '--tag', 'pop3', '--'])).toEqual({
      config: '/x.ini',
      tag: 'pop3',
      help: false,
      dovecotLog: true,
      problems: [],
    });
  });
  it('notes unknown or incomplete options, and a command it was handed, without failing', () => {
    expect(parseHookArgs(['--bogus']).problems).toEqual(['unknown option "--bogus" ignored']);
    expect(parseHookArgs(['--config']).problems).toEqual(['--config needs a value']);
    expect(parseHookArgs(['/bin/cmd']).problems).toEqual([
      'argument "/bin/cmd" ignored: the front (bin/poprelay-login) runs the command',
    ]);
  });
});

describe('the front splits its arguments as Dovecot passes them: options, then the command', () => {
  it('leaves words after the command to the command, options included', async () => {
    const { ini, map } = setup();
    const r = await hook({ IP: '192.0.2.17' }, ['--config', ini, '/bin/sh', '-c', 'echo "$*"', 'sh', '--tag', 'x']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('--tag x\n');
    expect(r.stderr).toMatch(/^\x01\x02\d+ poprelay: recorded 192\.0\.2\.17 \(user=\(none\)\)\n$/);
    expect((await dumpMap(map)).map(([k]) => k)).toEqual(['192.0.2.17']);
  });
  it('starts the command after "--", even one that looks like an option', async () => {
    const { dir, ini } = setup();
    const odd = join(dir, '--odd-name');
    writeFileSync(odd, '#!/bin/sh\necho odd "$@"\n', { mode: 0o755 });
    const r = await hook({ IP: '192.0.2.18' }, ['--config', ini, '--tag', 'pop3', '--', odd, 'a']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('odd a\n');
    expect(r.stderr).toMatch(/poprelay: recorded 192\.0\.2\.18 \(user=\(none\), service=pop3\)\n$/);
  });
  it('logs an unknown option as a warning and still continues the login', async () => {
    const { ini } = setup();
    const r = await hook({ IP: '192.0.2.19' }, ['--bogus', '--config', ini, '/bin/echo', 'in']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('in\n');
    expect(r.stderr).toMatch(/^\x01\x03\d+ poprelay: unknown option "--bogus" ignored\n/);
  });
});

describe('run by hand (no command)', () => {
  it('records $IP, exits 0 and says so on stderr, never on stdout', async () => {
    const { ini, map } = setup();
    const t0 = Math.floor(Date.now() / 1000);
    const r = await hook({ IP: '192.0.2.7', USER: 'alice' }, ['--config', ini]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('poprelay: recorded 192.0.2.7 (user=alice)\n');
    const [entry] = readEntries(settings(join(map, '..')));
    expect(entry?.address).toBe('192.0.2.7');
    expect(entry?.time).toBeGreaterThanOrEqual(t0);
    expect(entry?.time).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
    await expectVerified(map);
  });

  it('reads the config from $POPRELAY_CONFIG', async () => {
    const { ini, map } = setup();
    const r = await hook({ IP: '2001:db8::7', POPRELAY_CONFIG: ini });
    expect(r.exitCode).toBe(0);
    expect((await dumpMap(map)).map(([k]) => k)).toEqual(['2001:db8::7', 'ipv6:2001:db8:0:0:0:0:0:7']);
  });

  it('skips addresses on the ignore list, successfully', async () => {
    const { ini, map } = setup();
    const r = await hook({ IP: '10.9.1.1', USER: 'bob' }, ['--config', ini]);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toBe('poprelay: not recorded 10.9.1.1 (user=bob): in the ignore list\n');
    expect(() => readEntries(settings(join(map, '..')))).toThrow(/does not exist/);
  });

  it('stays quiet about successes with log_recorded = no', async () => {
    const { ini } = setup('log_recorded = no\n');
    const r = await hook({ IP: '192.0.2.8' }, ['--config', ini]);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toBe('');
  });

  it('fails with exit 1 and the reason for a broken config, a missing $IP or a bad map', async () => {
    const { dir, ini, map } = setup('timeout_minutes = soon\n');
    let r = await hook({ IP: '192.0.2.9', USER: 'carol' }, ['--config', ini]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe(
      `poprelay: not recorded 192.0.2.9 (user=carol): config ${ini}: key "timeout_minutes": value "soon" is not allowed; expected a whole number of minutes from 1 to 10080 (one week)\n`,
    );
    r = await hook({ USER: 'carol' }, ['--config', ini]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^poprelay: not recorded \(user=carol\): no client address in \$IP/);
    writeFileSync(ini, `dbfile = ${map}\n`);
    writeFileSync(map, 'not a database');
    r = await hook({ IP: '192.0.2.9' }, ['--config', ini]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`cannot open map ${map}: it is not a readable Berkeley DB file`);
    expect(dir).toBeTruthy();
  });

  it('prints usage for --help on stdout, exit 0', async () => {
    const r = await hook({}, ['--help']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^Usage: poprelay-login/);
  });

  // An environment cannot hold a NUL byte; the parser tests cover those values.
  it.each(hostileCases((a) => !a.includes('\u0000')))(
    'records nothing for the hostile $IP %s, and logs one bounded line',
    async (_, ip) => {
      const { ini, map } = setup();
      const r = await hook({ IP: ip, USER: 'mallory' }, ['--config', ini]);
      expect(r.exitCode).toBe(1);
      expect(r.stdout).toBe('');
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      expect(lines.length).toBe(1);
      expect(lines[0]).toMatch(
        /^poprelay: (rejected \(user=mallory\): invalid client address|not recorded \(user=mallory\): no client address)/,
      );
      expect(lines[0]?.length).toBeLessThan(300);
      expect(r.stderr).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\uffff]/);
      expect(() => readEntries(settings(join(map, '..')))).toThrow(/does not exist/);
    },
  );

  it('quotes a hostile user name', async () => {
    const { ini } = setup();
    const r = await hook({ IP: '192.0.2.10', USER: 'eve\nFAKE LOG LINE' }, ['--config', ini]);
    expect(r.stderr).toBe('poprelay: recorded 192.0.2.10 (user="eve\\nFAKE LOG LINE")\n');
  });
});

describe('continuing a login (with a command)', () => {
  it('runs the command with fds 0, 1, 2 and 3 and the environment unchanged, and exits with its status', async () => {
    const { ini, map } = setup();
    const script = 'read line; echo "child got $line IP=$IP USER=$USER X=$X"; echo fd3 >&3; exit 7';
    const child = spawn(HOOK, ['--config', ini, '--tag', 'imap', '/bin/sh', '-c', script], {
      env: { IP: '192.0.2.11', USER: 'dave', X: 'kept' },
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let fd3 = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stdio[3]?.on('data', (d: Buffer) => (fd3 += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin?.end('hello\n');
    const code = await new Promise((res) => child.on('close', res));
    expect(code).toBe(7);
    expect(out).toBe('child got hello IP=192.0.2.11 USER=dave X=kept\n');
    expect(fd3).toBe('fd3\n');
    // Dovecot's log protocol: \x01, type+1 (\x02 = Info), pid, space.
    expect(err).toMatch(/^\x01\x02\d+ poprelay: recorded 192\.0\.2\.11 \(user=dave, service=imap\)\n$/);
    expect((await dumpMap(map)).map(([k]) => k)).toEqual(['192.0.2.11']);
  });

  it('exits 128 + the signal number when the continued login is killed by a signal', async () => {
    const { ini } = setup();
    for (const [sig, status] of [
      ['TERM', 143],
      ['ABRT', 134],
    ] as const) {
      const r = await hook({ IP: '192.0.2.16' }, ['--config', ini, '/bin/sh', '-c', `kill -${sig} $$`]);
      expect(r.exitCode, sig).toBe(status);
    }
  });

  it('continues the login even when recording fails', async () => {
    const { ini } = setup('dbtype = gdbm\n');
    const r = await hook({ IP: '192.0.2.12' }, ['--config', ini, '/bin/sh', '-c', 'echo continued']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('continued\n');
    expect(r.stderr).toMatch(/^\x01\x04\d+ poprelay: not recorded 192\.0\.2\.12 \(user=\(none\)\): config .*"dbtype"/);
  });

  it('continues the login for a hostile $IP, with a warning', async () => {
    const { ini } = setup();
    const r = await hook({ IP: '1.2.3.4\n5.6.7.8' }, ['--config', ini, '/bin/true']);
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toMatch(
      /^\x01\x03\d+ poprelay: rejected \(user=\(none\)\): invalid client address "1\.2\.3\.4\\n5\.6\.7\.8": contains white space\n$/,
    );
  });

  it('fails the login only when the command cannot run', async () => {
    const { ini } = setup();
    const r = await hook({ IP: '192.0.2.13' }, ['--config', ini, '/nonexistent/script-login']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('cannot continue the login: cannot run "/nonexistent/script-login"');
  });

  it('lets go of fds 0, 1 and 3 once the login is handed on, even while it still waits to record', async () => {
    const { ini, map } = setup('lock_timeout_ms = 3000\n');
    await hook({ IP: '192.0.2.14' }, ['--config', ini]); // create the map
    const release = await holdLock(map, '-x', 30);
    try {
      const child = spawn(HOOK, ['--config', ini, '/bin/true'], {
        env: { IP: '192.0.2.15' },
        stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
      });
      let err = '';
      child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      // The continued login (/bin/true) is over long before the lock is free;
      // the hook waits for it but holds none of the client's descriptors.
      const stdoutClosed = new Promise((res) => child.stdout?.on('close', res));
      const fds = await (async () => {
        for (let i = 0; i < 100; i++) {
          try {
            const seen = [0, 1, 3].map((fd) => readlinkSync(`/proc/${child.pid}/fd/${fd}`));
            if (seen.every((t) => t === '/dev/null')) return seen;
          } catch {
            // not there yet
          }
          await new Promise((res) => setTimeout(res, 20));
        }
        return [0, 1, 3].map((fd) => readlinkSync(`/proc/${child.pid}/fd/${fd}`));
      })();
      expect(fds).toEqual(['/dev/null', '/dev/null', '/dev/null']);
      await stdoutClosed; // the client side sees EOF while the hook is still waiting
      expect(child.exitCode).toBeNull();
      const code = await new Promise((res) => child.on('close', res));
      expect(code).toBe(0);
      expect(err).toContain('stayed locked by another process for more than lock_timeout_ms = 3000 ms');
    } finally {
      release();
    }
  });
});

it('hostile values reach no map through the hook (sanity: the list is long enough)', () => {
  expect(HOSTILE_ADDRESSES.length).toBeGreaterThanOrEqual(40);
  void execa;
});
