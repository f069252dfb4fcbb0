// The demo's steps after the set-up (scripts/demo.sh): poprelay installed by
// scripts/install.sh into a temporary tree, a real Dovecot login recorded,
// sendmail letting that address relay, and the sweep taking it back. The
// Dovecot, the POP3 client and sendmail are driven by the tests' own code
// (test/support/), so the demo shows what the suite proves. Exits 1 at the
// first thing that turns out differently.

import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

import { PASSWORD, startDovecot, type Dovecot } from '../test/support/dovecot.js';
import { pop3Login } from '../test/support/mailclient.js';
import { ROOT } from '../test/support/paths.js';
import { sendmailConfig, sendmailDecisions } from '../test/support/peers.js';
import { eventually } from '../test/support/wait.js';

const CLIENT = '127.0.0.42';
const OTHER = '127.0.0.43';
const STEPS = 7;
let stepNo = 0; // the set-up before these (packages, build) is scripts/demo.sh's

function step(what: string): void {
  stepNo++;
  console.log(`\n[${stepNo}/${STEPS}] ${what}`);
}

function show(text: string): void {
  for (const line of text.trimEnd().split('\n')) console.log(`      ${line}`);
}

class Unexpected extends Error {}

function expectThat(ok: boolean, what: string): void {
  if (!ok) throw new Unexpected(what);
}

async function demo(tree: string, started: (dc: Dovecot) => void): Promise<void> {
  const sbin = join(tree, 'usr/sbin');
  const map = join(tree, 'var/lib/poprelay/popip.db');
  const ini = join(tree, 'etc/poprelay/poprelay.ini');
  const snippet = join(tree, 'etc/dovecot/conf.d/95-poprelay.conf');

  step(`Installing poprelay with scripts/install.sh into ${tree}`);
  const dirs = [
    '--prefix',
    'usr',
    '--map-dir',
    'var/lib/poprelay',
    '--dovecot-confdir',
    'etc/dovecot/conf.d',
    '--cron-dir',
    'etc/cron.d',
    '--systemd-dir',
    'etc/systemd/system',
  ];
  const args = dirs.map((a, i) => (i % 2 === 1 ? join(tree, a) : a));
  const installed = await execa('bash', [join(ROOT, 'scripts/install.sh'), ...args, '--config', ini], {
    reject: false,
    all: true,
  });
  if (installed.exitCode !== 0) show(installed.all ?? '');
  expectThat(installed.exitCode === 0, `scripts/install.sh failed (exit ${installed.exitCode})`);
  // Loopback is on the default ignore list; the demo's client comes from 127.0.0.42.
  writeFileSync(ini, readFileSync(ini, 'utf8').replace(/^ignore = .*$/m, 'ignore = ::1/128'));
  show(`programs in ${sbin}, map ${map} (owner poprelay, mode 0644)`);
  show(`Dovecot snippet ${snippet}; ignore list emptied of 127.0.0.0/8 for the demo`);

  step('Starting a private Dovecot on loopback with that snippet: poprelay-login is its post-login script');
  const dc = await startDovecot({ installedSnippet: snippet, users: 1 });
  started(dc);
  show(`ready on 127.0.0.1:${dc.pop3.port} (${(await execa('dovecot', ['--version'])).stdout.split(' ')[0] ?? ''})`);

  step(`POP3 login as user0 from ${CLIENT}`);
  const login = await pop3Login({ ...dc.pop3, localAddress: CLIENT }, 'user0', PASSWORD);
  show(`S: ${(login.replies[2] ?? '').trim()}`);
  expectThat(login.ok, 'the login failed');
  const logged = await eventually(
    () =>
      dc
        .log()
        .split('\n')
        .find((l) => l.includes(`poprelay: recorded ${CLIENT} `)),
    60_000,
    'the log line of the recording',
  ).catch(() => undefined);
  show(
    `Dovecot's log says:\n  ${(
      logged ??
      dc
        .log()
        .split('\n')
        .filter((l) => l.includes('poprelay'))
        .join('\n  ')
    ).replace(/^\S+ \d+ [\d:]+ /, '')}`,
  );
  expectThat(logged !== undefined, 'the login was not recorded');

  step('The map, as poprelay list shows it');
  show((await execa(join(sbin, 'poprelay'), ['list', '--config', ini])).stdout);

  step(`sendmail -bt with the shipped FEATURE(\`drac', \`hash -o ${map.slice(0, -3)}')`);
  const sm = await sendmailConfig(tree, map);
  const relays = async (): Promise<boolean[]> => (await sendmailDecisions(sm, [CLIENT, OTHER])).map((d) => d.relay);
  const verdict = (addr: string, relay: boolean | undefined): string =>
    `client ${addr}: Relay_ok returns ${relay === true ? 'RELAY (may relay)' : 'no RELAY (may not relay)'}`;
  const [first, other] = await relays();
  show(`${verdict(CLIENT, first)}\n${verdict(OTHER, other)}`);
  expectThat(first === true, 'sendmail does not let the recorded address relay');
  expectThat(other === false, 'sendmail lets an unrecorded address relay');

  const later = String(Math.floor(Date.now() / 1000) + 16 * 60);
  const sweep = async (extra: string[]): Promise<string> =>
    (await execa(join(sbin, 'poprelay-sweep'), ['--config', ini, ...extra])).stdout;
  step('poprelay-sweep --dry-run, now and with the clock 16 minutes ahead (timeout: 15 minutes)');
  show(`now:\n  ${await sweep(['--dry-run'])}`);
  show(`in 16 minutes:\n  ${(await sweep(['--dry-run', '--now', later])).replaceAll('\n', '\n  ')}`);

  step('poprelay-sweep with the clock 16 minutes ahead, then sendmail again');
  show(await sweep(['--verbose', '--now', later]));
  const [after] = await relays();
  show(verdict(CLIENT, after));
  expectThat(after === false, 'the swept address may still relay');
}

// sendmail accepts maps only under directories that are not group- or
// world-writable, so the tree is under /var/lib, not /tmp.
const tree = mkdtempSync('/var/lib/poprelay-demo.');
chmodSync(tree, 0o755);
let dovecot: Dovecot | undefined;
let status = 0;
try {
  await demo(tree, (dc) => (dovecot = dc));
  console.log(`\nAll as expected. Cleaning up: stopping Dovecot, removing ${tree} (the system user poprelay stays).`);
} catch (e) {
  console.error(e instanceof Unexpected ? `      UNEXPECTED: ${e.message}` : e);
  if (dovecot !== undefined) console.error(`Dovecot's log:\n${dovecot.log()}`);
  status = 1;
} finally {
  await dovecot?.stop();
  rmSync(tree, { recursive: true, force: true });
}
process.exit(status);
