// Where poprelay.ini lives on a stock Debian server, tried with the real
// paths: each command runs in a mount namespace of its own with an overlay
// on /etc (the same upper layer every time), so /etc/mail and /etc/poprelay
// are this test's and the host's stay as they are. On Debian /etc/mail is
// sendmail's (smmta:smmsp 2755, and sendmailconfig sets it back): the
// default config lives in /etc/poprelay instead, root's, readable by the
// hook's group only; a file left in /etc/mail by an earlier install is
// still read, and where root may not obey it the error says how to move it.

import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { LEGACY_CONFIG_PATH, MOVE_LEGACY_CONFIG } from '../src/config.js';
import { BIN } from './support/paths.js';
import { safeDir, tempDir } from './support/tmp.js';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** A private /etc: every call sees the changes of the calls before it. */
function privateEtc(): (script: string) => Run {
  const w = tempDir('poprelay-etc-');
  mkdirSync(join(w, 'upper'));
  mkdirSync(join(w, 'work'));
  const mount = `mount -t overlay overlay -o lowerdir=/etc,upperdir=${w}/upper,workdir=${w}/work /etc`;
  return (script) => {
    try {
      const stdout = execFileSync('unshare', ['-m', 'sh', '-c', `${mount} && ${script}`], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      return { code: 0, stdout, stderr: '' };
    } catch (e) {
      const r = e as { status: number | null; stdout: string; stderr: string };
      return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    }
  };
}

/** A map directory owned by the hook's user, as the installer makes it. */
function mapDir(): string {
  const dir = safeDir();
  const uid = Number(execFileSync('id', ['-u', 'poprelay'], { encoding: 'utf8' }));
  const gid = Number(execFileSync('id', ['-g', 'poprelay'], { encoding: 'utf8' }));
  chownSync(dir, uid, gid);
  return dir;
}

const asNobody = (cmd: string): string => `setpriv --reuid=nobody --regid=nogroup --clear-groups ${cmd}`;
const asHookUser = (cmd: string): string => `setpriv --reuid=poprelay --regid=poprelay --init-groups ${cmd}`;
const debianEtcMail = 'mkdir -p /etc/mail && chown smmta:smmsp /etc/mail && chmod 2755 /etc/mail';

describe('the config on a stock Debian server', () => {
  it('/etc/poprelay/poprelay.ini, root:poprelay 0640: root sweeps, the hook user reads it, another account cannot', () => {
    const etc = privateEtc();
    const map = join(mapDir(), 'popip.db');
    expect(
      etc(
        `${debianEtcMail} && rm -f /etc/mail/poprelay.ini && install -d -m 0755 /etc/poprelay && ` +
          `printf 'dbfile = ${map}\\n' > /etc/poprelay/poprelay.ini && ` +
          'chown root:poprelay /etc/poprelay/poprelay.ini && chmod 0640 /etc/poprelay/poprelay.ini',
      ).code,
    ).toBe(0);
    expect(etc(`${BIN.admin} init`)).toMatchObject({ code: 0 });
    const sweep = etc(`${BIN.sweep}`);
    expect(sweep.stderr).toBe('');
    expect(sweep.code).toBe(0);
    expect(etc(asHookUser(`${BIN.admin} add 192.0.2.33`))).toMatchObject({ code: 0 });
    expect(etc(`${BIN.admin} list`).stdout).toContain('192.0.2.33');
    const other = etc(asNobody(`${BIN.admin} list`));
    expect(other.code).toBe(2);
    expect(other.stderr).toContain('config /etc/poprelay/poprelay.ini: is not readable by this user');
  });

  it('an earlier install in /etc/mail, sendmail-owned: root refuses it, saying how to move it; moved so, it works', () => {
    const etc = privateEtc();
    const map = join(mapDir(), 'popip.db');
    expect(
      etc(
        `${debianEtcMail} && rm -rf /etc/poprelay && printf 'dbfile = ${map}\\n' > ${LEGACY_CONFIG_PATH} && ` +
          `chmod 0644 ${LEGACY_CONFIG_PATH}`,
      ).code,
    ).toBe(0);
    const refused = etc(BIN.sweep);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(
      `config ${LEGACY_CONFIG_PATH}: its directory /etc/mail can be changed by another user`,
    );
    expect(refused.stderr).toContain(MOVE_LEGACY_CONFIG);
    // The administrator runs the commands the error gives.
    const move = MOVE_LEGACY_CONFIG.replace(/ \(then .*\)$/, '');
    expect(etc(move).code).toBe(0);
    expect(etc(`${BIN.admin} init`)).toMatchObject({ code: 0 });
    expect(etc(BIN.sweep)).toMatchObject({ code: 0, stderr: '' });
    expect(etc('stat -c "%U:%G %a" /etc/poprelay/poprelay.ini').stdout.trim()).toBe('root:poprelay 640');
  });

  it('an earlier install in a root-owned /etc/mail keeps working where the new file is absent', () => {
    const etc = privateEtc();
    const map = join(mapDir(), 'popip.db');
    expect(
      etc(
        'mkdir -p /etc/mail && chown root:root /etc/mail && chmod 0755 /etc/mail && rm -rf /etc/poprelay && ' +
          `printf 'dbfile = ${map}\\ntimeout_minutes = 7\\n' > ${LEGACY_CONFIG_PATH} && chmod 0644 ${LEGACY_CONFIG_PATH}`,
      ).code,
    ).toBe(0);
    expect(etc(`${BIN.admin} init`)).toMatchObject({ code: 0 });
    expect(etc(`${BIN.sweep} --dry-run`)).toMatchObject({ code: 0 });
    expect(etc(`${BIN.admin} add 192.0.2.34`)).toMatchObject({ code: 0 });
    expect(etc(`${BIN.admin} list`).stdout).toContain('192.0.2.34');
  });
});
