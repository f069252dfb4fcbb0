// The whole path an administrator takes on Debian 13, whose Dovecot is 2.4:
// scripts/install.sh picks the 2.4 snippet and doveconf -n accepts it among
// the stock configuration, poprelay doctor finds nothing wrong, and the
// stock Dovecot (PAM login, mbox) records a POP3 login in the map.
// test/fixtures/debian13-install.sh does the work inside an overlay of the
// Debian 13 tree, so the shared tree stays as it is.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { readEntries } from '../src/map/relay-map.js';
import { DOCTOR_ALL_OK, doctorStatuses } from './support/doctor.js';
import { dovecotVersions, pop3Greets } from './support/dovecot.js';
import { freePort } from './support/ports.js';
import { terminate } from './support/terminate.js';
import { type Endpoint, pop3, pop3Login } from './support/mailclient.js';
import { expectVerified, settings } from './support/maps.js';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/tmp.js';
import { eventually, untilServing } from './support/wait.js';

describe.runIf(dovecotVersions().includes('2.4'))('scripts/install.sh on Debian 13 (Dovecot 2.4)', () => {
  const work = tempDir('poprelay-debian13-');
  const upper = (path: string): string => join(work, 'upper', path);
  let ep: Endpoint;
  let stop = async (): Promise<void> => {};
  let output = '';

  beforeAll(async () => {
    ep = { host: '127.0.0.1', port: await freePort() };
    const run = spawn(
      'unshare',
      ['-m', 'bash', join(ROOT, 'test/fixtures/debian13-install.sh'), work, ROOT, process.execPath, String(ep.port)],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    run.stdout.on('data', (d: Buffer) => (output += d.toString()));
    run.stderr.on('data', (d: Buffer) => (output += d.toString()));
    stop = () => terminate(run);
    // Ready when Dovecot greets; the script ends early only on a failure.
    await untilServing(
      'debian13-install.sh and its Dovecot',
      run,
      () => pop3Greets(ep),
      120_000,
      () => output,
    );
  }, 150_000);
  afterAll(async () => stop());

  it('the installer picks the 2.4 snippet (no vsz_limit), and doveconf -n accepts it with the stock configuration', () => {
    const out = readFileSync(join(work, 'install.out'), 'utf8');
    expect(out).toContain('install.sh: installing the Dovecot 2.4 snippet as /etc/dovecot/conf.d/95-poprelay.conf');
    expect(out).toContain('install.sh: doveconf -n accepts it');
    expect(readFileSync(upper('etc/dovecot/conf.d/95-poprelay.conf'), 'utf8')).not.toMatch(/^\s*vsz_limit/m);
  });

  it('poprelay doctor finds nothing wrong but what the chroot lacks: an MTA, a cron daemon, a running Dovecot', () => {
    const doctor = readFileSync(join(work, 'doctor.out'), 'utf8');
    expect(doctorStatuses(doctor)).toEqual({
      ...DOCTOR_ALL_OK,
      mta: 'WARN',
      'live sessions': 'WARN',
      sweep: 'FAIL',
    });
    // No cron daemon and no systemd run in the chroot: only that fails the sweep's check.
    expect(doctor).toMatch(
      /^FAIL {2}sweep: \/etc\/cron\.d\/poprelay schedules poprelay-sweep, but no cron daemon runs/m,
    );
  });

  it('the stock Dovecot records a POP3 login, and the session works', async () => {
    const t0 = Math.floor(Date.now() / 1000);
    const login = await pop3Login({ ...ep, localAddress: '127.7.0.1' }, 'demo', 'demo-pw', [pop3.stat]);
    expect(login.ok).toBe(true);
    expect(login.replies[3]).toMatch(/^\+OK 0 0\r\n$/);
    const log = (): string => readFileSync(upper('var/log/dovecot-test.log'), 'utf8');
    await eventually(() =>
      log().includes('poprelay-pop3: Info: poprelay: recorded 127.7.0.1 (user=demo, service=pop3)'),
    );
    expect(log()).toMatch(/master: Info: Dovecot v2\.4\.\d/);
    const map = upper('var/lib/poprelay/popip.db');
    const entry = await eventually(() =>
      readEntries(settings(join(work, 'upper/var/lib/poprelay'))).find((e) => e.address === '127.7.0.1'),
    );
    expect(entry?.time).toBeGreaterThanOrEqual(t0);
    await expectVerified(map);
  });
});
