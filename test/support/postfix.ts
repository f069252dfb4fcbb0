// A private Postfix (master, smtpd, cleanup, trivial-rewrite) from the
// unpacked package (scripts/install-deps.sh --test), listening on a
// loopback port, with the shipped etc/mta/postfix-policy.cf pointed at a
// test's poprelayd: what a real smtpd decides for RCPT TO, policy service
// and its default_action included. Mail it accepts stays in its queue
// (no qmgr runs).

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';

import { freePort } from './ports.js';
import { PEERS } from './peers.js';
import { ROOT } from './paths.js';
import { eventually } from './wait.js';

export const LOCAL_DOMAIN = 'test.example.org';

export interface Postfix {
  port: number;
  /** The reply codes to RCPT TO for each recipient, in one session from `client`. */
  rcpt(client: string, recipients: readonly string[]): Promise<string[]>;
  stop(): Promise<void>;
}

/** Queue directories that smtpd and cleanup write, owned by the mail owner. */
const OWNED = ['private', 'public', 'incoming', 'maildrop', 'active', 'deferred', 'hold', 'corrupt', 'trace'];

export async function startPostfix(dir: string, policyPort: number): Promise<Postfix> {
  const base = join(dir, 'postfix');
  const [cf, queue, data] = ['cf', 'queue', 'data'].map((d) => join(base, d)) as [string, string, string];
  for (const d of [cf, data, join(queue, 'pid'), ...OWNED.map((o) => join(queue, o))])
    mkdirSync(d, { recursive: true });
  // mail_owner and setgid_group as postmap's tests use them: existing, and different.
  await execa('chown', ['-R', 'dovenull:dovecot', data, ...OWNED.map((o) => join(queue, o))]);
  const port = await freePort();
  const policy = readFileSync(join(ROOT, 'etc/mta/postfix-policy.cf'), 'utf8').replaceAll(
    'inet:127.0.0.1:10031',
    `inet:127.0.0.1:${policyPort}`,
  );
  writeFileSync(
    join(cf, 'main.cf'),
    [
      'compatibility_level = 3.6',
      'mail_owner = dovenull',
      'setgid_group = dovecot',
      `queue_directory = ${queue}`,
      `data_directory = ${data}`,
      `daemon_directory = ${PEERS}/usr/lib/postfix/sbin`,
      `command_directory = ${PEERS}/usr/sbin`,
      `meta_directory = ${PEERS}/etc/postfix`,
      `shlib_directory = ${PEERS}/usr/lib/postfix`,
      'import_environment = MAIL_CONFIG LANG TZ LD_LIBRARY_PATH',
      `maillog_file = ${join(base, 'maillog')}`,
      'maillog_file_prefixes = /',
      'myhostname = mx.test.example.org',
      `mydestination = ${LOCAL_DOMAIN}`,
      'local_recipient_maps =',
      // No client of the tests is in mynetworks: relaying is the policy's to allow.
      'mynetworks = 192.0.2.0/24',
      'smtpd_client_connection_count_limit = 0',
      'smtpd_client_connection_rate_limit = 0',
      policy,
    ].join('\n'),
  );
  writeFileSync(
    join(cf, 'master.cf'),
    [
      `127.0.0.1:${port} inet n - n - - smtpd`,
      'cleanup unix n - n - 0 cleanup',
      'rewrite unix - - n - - trivial-rewrite',
      'anvil unix - - n - 1 anvil',
      'proxymap unix - - n - - proxymap',
      'postlog unix-dgram n - n - 1 postlogd',
      '',
    ].join('\n'),
  );
  const env = { LD_LIBRARY_PATH: `${PEERS}/usr/lib/postfix`, MAIL_CONFIG: cf };
  const master: ChildProcess = spawn(`${PEERS}/usr/lib/postfix/sbin/master`, ['-d', '-c', cf], {
    env,
    stdio: 'ignore',
  });
  const rcpt = (client: string, recipients: readonly string[]): Promise<string[]> =>
    smtpSession(port, client, recipients);
  await eventually(
    async () => {
      if (master.exitCode !== null) throw new Error(`Postfix master exited with ${master.exitCode}`);
      return smtpSession(port, '127.0.0.1', []).then(
        () => true,
        () => false,
      );
    },
    60_000,
    'Postfix smtpd to answer',
  );
  return {
    port,
    rcpt,
    stop: async () => {
      if (master.exitCode !== null) return;
      const gone = new Promise((res) => master.once('exit', res));
      master.kill('SIGTERM');
      await gone;
    },
  };
}

/** EHLO, MAIL FROM, one RCPT TO each, QUIT: the three-digit code of each RCPT's reply. */
function smtpSession(port: number, client: string, recipients: readonly string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', localAddress: client });
    const steps = ['EHLO client.example', 'MAIL FROM:<sender@example.net>', ...recipients.map((r) => `RCPT TO:<${r}>`)];
    const codes: string[] = [];
    let sent = 0;
    let buf = '';
    s.setTimeout(30_000, () => s.destroy(new Error('SMTP session timed out')));
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const lines = buf.split('\r\n');
      buf = lines.pop() ?? '';
      for (const line of lines) {
        if (!/^\d{3} /.test(line)) continue; // a continuation line
        if (sent > 2) codes.push(line.slice(0, 3));
        const next = steps[sent++];
        if (next !== undefined) s.write(`${next}\r\n`);
        else {
          s.end('QUIT\r\n');
          resolve(codes);
        }
      }
    });
  });
}
