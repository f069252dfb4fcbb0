// npm run demo:cluster (after scripts/demo.sh's set-up, which it runs
// first): two hosts sharing one relay set. Host A is a POP server (a real
// Dovecot whose hook records in the engine); host B an SMTP relay whose
// poprelayd answers sendmail through its socket map and mirrors the set
// into B's own map. The engine is a Sentinel set (a primary, a replica,
// three Sentinels), found through engine = redis+sentinel://. A login on A
// lets the client relay on B; with the primary killed, B still lets that
// known client relay and refuses others without deferring mail, and once
// Sentinel has promoted the replica both hosts use it without being told.
// The engine, Dovecot, poprelayd and sendmail are driven by the tests' own
// code (test/support/). Exits 1 at the first surprise.

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

import { type Dovecot, PASSWORD, startDovecot } from '../test/support/dovecot.js';
import { startSentinelSet, type SentinelSet } from '../test/support/sentinel.js';
import { pop3Login } from '../test/support/mailclient.js';
import { hostSendmail, portOf, startMtaHost } from '../test/support/mta-host.js';
import { sendmailCheckRcpt, sendmailDecisions } from '../test/support/peers.js';
import type { Daemon } from '../test/support/poprelayd.js';
import { BIN } from '../test/support/paths.js';
import { eventually } from '../test/support/wait.js';

const CLIENT = '127.0.0.71';
const OTHER = '127.0.0.72';
let stepNo = 0;
const STEPS = 6;

const step = (what: string): void => console.log(`\n[${++stepNo}/${STEPS}] ${what}`);
const show = (text: string): void => {
  for (const line of text.trimEnd().split('\n')) console.log(`      ${line}`);
};
class Unexpected extends Error {}
const expectThat = (ok: boolean, what: string): void => {
  if (!ok) throw new Unexpected(what);
};

interface Running {
  engine?: SentinelSet;
  a?: Dovecot;
  b?: Daemon;
}

async function demo(tree: string, running: Running): Promise<void> {
  step('Starting the engine: a primary, a replica and three Sentinels (redis-server, redis-sentinel) on loopback');
  const engine = await startSentinelSet();
  running.engine = engine;
  show(`engine = ${engine.url}\nthe Sentinels name the primary 127.0.0.1:${await engine.primaryPort()}`);

  step('Host A, a POP server: a private Dovecot whose poprelay-login records each login in the engine');
  const a = await startDovecot({ users: 1, ini: `ignore =\nengine = ${engine.url}\n` });
  running.a = a;
  show(`Dovecot on 127.0.0.1:${a.pop3.port}; its poprelay.ini: engine = ${engine.url}`);

  step("Host B, an SMTP relay: poprelayd answers sendmail's socket map and mirrors the set into B's map");
  const b = await startMtaHost(tree, engine.url, ['socketmap'], true);
  running.b = b.daemon;
  show(b.daemon.log());
  const { map } = b;
  const port = portOf(b.socketmap);
  const sm = await hostSendmail(b);
  show(`sendmail.cf with FEATURE(\`drac', \`socket -t -d5 inet:${port}@127.0.0.1')`);

  const relays = async (addr: string): Promise<boolean> => (await sendmailDecisions(sm, [addr]))[0]?.relay === true;
  const say = (addr: string, relay: boolean): string =>
    `on host B, client ${addr}: Relay_ok returns ${relay ? 'RELAY (may relay)' : 'no RELAY (may not relay)'}`;

  step(`POP3 login on host A from ${CLIENT}, then sendmail on host B`);
  const login = await pop3Login({ ...a.pop3, localAddress: CLIENT }, 'user0', PASSWORD);
  show(`host A: S: ${(login.replies[2] ?? '').trim()}`);
  expectThat(login.ok, 'the login failed');
  await eventually(() => a.log().includes(`recorded ${CLIENT} in the engine`), 60_000, 'the hook to record').catch(
    () => undefined,
  );
  show(
    a
      .log()
      .split('\n')
      .filter((l) => l.includes('poprelay:'))
      .map((l) => `host A's log: ${l.replace(/^\S+ \d+ [\d:]+ /, '')}`)
      .join('\n'),
  );
  const first = await relays(CLIENT);
  const other = await relays(OTHER);
  show(`${say(CLIENT, first)}\n${say(OTHER, other)}`);
  expectThat(first, 'host B does not let the client relay');
  expectThat(!other, 'host B lets an unknown client relay');
  // B's own map as poprelay list shows it (a config that names only the map: with engine set, list shows the engine).
  const mapOnly = join(tree, 'b-map.ini');
  writeFileSync(mapOnly, `dbfile = ${map}\n`);
  const mirrored = async (): Promise<string> => (await execa(BIN.admin, ['list', '--config', mapOnly])).stdout;
  await eventually(async () => (await mirrored()).includes(CLIENT), 60_000, 'the mirror');
  show(`host B's own map (mirror = yes), poprelay list:\n${await mirrored()}`);

  step('The primary dies (SIGKILL): host B keeps what it knows, and defers no mail');
  const old = await engine.primary();
  await old.kill();
  const known = await relays(CLIENT);
  const unknown = await relays(OTHER);
  show(`${say(CLIENT, known)} (from poprelayd's cache, bounded by the entry's expiry)\n${say(OTHER, unknown)}`);
  const inbound = await sendmailCheckRcpt(sm, OTHER, 'root@test.example.org');
  show(
    `on host B, mail from ${OTHER} to a local user: check_rcpt ${/^\d\.\d\.\d/.test(inbound) ? `refuses it: ${inbound}` : `accepts it (${inbound})`}`,
  );
  expectThat(known && !unknown, 'host B changed its answers when the primary died');
  expectThat(!/4\.\d\.\d/.test(inbound), 'host B defers inbound mail');

  step(`Sentinel promotes the replica; another login on host A from ${OTHER}`);
  const t0 = performance.now();
  const promoted = await engine.promotedFrom(old.port);
  show(
    `the Sentinels name the primary 127.0.0.1:${promoted} (${((performance.now() - t0) / 1000).toFixed(1)} s after the kill)`,
  );
  const again = await pop3Login({ ...a.pop3, localAddress: OTHER }, 'user0', PASSWORD);
  show(`host A: S: ${(again.replies[2] ?? '').trim()} (the login does not wait for the engine)`);
  expectThat(again.ok, 'the login failed');
  await eventually(() => relays(OTHER), 60_000, `host B to let ${OTHER} relay`).catch(() => undefined);
  show(
    a
      .log()
      .split('\n')
      .filter((l) => l.includes(`${OTHER} in the engine`))
      .map((l) => `host A's log: ${l.replace(/^\S+ \d+ [\d:]+ /, '')}`)
      .join('\n'),
  );
  show(
    (running.b?.log() ?? '')
      .split('\n')
      .filter((l) => l.includes('primary'))
      .map((l) => `host B's log: ${l}`)
      .join('\n'),
  );
  const now = await relays(OTHER);
  show(`${say(OTHER, now)}\n${say(CLIENT, await relays(CLIENT))}`);
  expectThat(now, 'host B does not let the client relay after the failover');
}

const tree = mkdtempSync('/var/lib/poprelay-demo-cluster.');
chmodSync(tree, 0o755);
const running: Running = {};
let status = 0;
console.log('poprelay demo:cluster: two hosts, one relay set in a shared engine behind Sentinel.');
try {
  await demo(tree, running);
  console.log('\nAll as expected. Cleaning up: stopping poprelayd, Dovecot, the engine and its Sentinels.');
} catch (e) {
  console.error(e instanceof Unexpected ? `      UNEXPECTED: ${e.message}` : e);
  status = 1;
} finally {
  await running.b?.stop();
  await running.a?.stop();
  await running.engine?.stop();
  rmSync(tree, { recursive: true, force: true });
}
process.exit(status);
