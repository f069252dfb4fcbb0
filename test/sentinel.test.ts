// engine = redis+sentinel://: the hook, the sweep, poprelay's commands and
// poprelayd find the primary through real Sentinels (a primary, a replica,
// three Sentinels on loopback), remember it, and follow a failover: the
// primary SIGKILLed, the replica promoted, each client on the new primary
// without being told.

import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { askDaemon } from '../src/daemon/client.js';
import { enginePrimaryFile } from '../src/engine/record.js';
import { parseListen } from '../src/endpoints.js';
import { freePort } from './support/ports.js';
import { NOT_LIVE } from './support/ini.js';
import { configured } from './support/maps.js';
import { BIN } from './support/paths.js';
import { startPoprelayd, type Daemon } from './support/poprelayd.js';
import { run } from './support/processes.js';
import { ask, startSentinelSet, type SentinelSet } from './support/sentinel.js';
import { eventually } from './support/wait.js';

const PASSWORD = 'Sent1nel-pw';

let set: SentinelSet;
beforeAll(async () => {
  set = await startSentinelSet({ password: PASSWORD });
}, 120_000);
afterAll(async () => {
  await set?.stop();
});

/** What the primary holds for an address now. */
async function held(ip: string): Promise<string | null> {
  const answer = await ask(await set.primaryPort(), ['GET', `poprelay:${ip}`], undefined, PASSWORD);
  const m = /\$\d+\r\n([^\r]+)\r\n\+OK/.exec(answer.replace(/^\+OK\r\n/, ''));
  return m?.[1] ?? null;
}

describe('engine = redis+sentinel://', () => {
  let hostA: ReturnType<typeof configured>;
  let daemon: Daemon;
  let policy: string;

  beforeAll(async () => {
    hostA = configured(`engine = ${set.url}\nengine_timeout_ms = 2000\n${NOT_LIVE}`);
    const hostB = configured(`engine = ${set.url}\npolicy_listen = inet:127.0.0.1:${await freePort()}\n`);
    policy = /policy_listen = (\S+)/.exec(readFileSync(hostB.ini, 'utf8'))?.[1] ?? '';
    daemon = await startPoprelayd(hostB.ini, 1);
  }, 120_000);
  afterAll(async () => {
    await daemon?.stop();
  });

  const login = (ip: string) => run(BIN.login, ['--config', hostA.ini], { env: { IP: ip } });
  const allowed = (ip: string) => askDaemon('policy', parseListen(policy)!, ip, 5000);

  it('the hook records on the primary the Sentinels name and remembers it beside the map', async () => {
    const r = await login('198.51.100.40');
    expect(r.stderr).toContain('recorded 198.51.100.40 in the engine');
    expect(await held('198.51.100.40')).toMatch(/^\d+$/);
    expect(readFileSync(enginePrimaryFile(hostA.map), 'utf8')).toBe(`127.0.0.1 ${await set.primaryPort()}\n`);
    expect(await eventually(() => allowed('198.51.100.40'), 30_000, 'poprelayd to allow 198.51.100.40')).toBe(true);
  });

  it('a remembered node that is a replica is not written to: the Sentinels are asked and the primary gets it', async () => {
    const primaryPort = await set.primaryPort();
    const replica = set.nodes.find((n) => n.port !== primaryPort)!;
    writeFileSync(enginePrimaryFile(hostA.map), `127.0.0.1 ${replica.port}\n`);
    const r = await login('198.51.100.41');
    expect(r.stderr).toContain('recorded 198.51.100.41 in the engine');
    expect(await held('198.51.100.41')).toMatch(/^\d+$/);
    expect(readFileSync(enginePrimaryFile(hostA.map), 'utf8')).toBe(`127.0.0.1 ${await set.primaryPort()}\n`);
  });

  it('doctor names the primary the Sentinels name, and says the engine user may not run ROLE when it may not', async () => {
    const doctor = async (ini: string) => (await run(BIN.admin, ['doctor', '--config', ini])).stdout;
    const out = await doctor(hostA.ini);
    expect(out).toMatch(
      new RegExp(`engine primary.*name 127\\.0\\.0\\.1:${await set.primaryPort()}, and it is the primary`),
    );
    expect(out).not.toContain(PASSWORD);
    const primary = await set.primary();
    await primary.acl([`ACL SETUSER norole on >norole-pw ~poprelay:* +@all -role`]);
    const norole = configured(`engine = ${set.url.replace(`:${PASSWORD}@`, 'norole:norole-pw@')}\n${NOT_LIVE}`);
    expect(await doctor(norole.ini)).toMatch(/engine primary.*may not run ROLE/);
  });

  it("poprelay's commands work on the primary", async () => {
    const admin = configured(`engine = ${set.url}\n${NOT_LIVE}`);
    expect((await run(BIN.admin, ['add', '--config', admin.ini, '198.51.100.42'])).code).toBe(0);
    expect(await held('198.51.100.42')).toMatch(/^\d+$/);
    const list = await run(BIN.admin, ['list', '--config', admin.ini]);
    expect(list.stdout).toContain('198.51.100.42');
    expect(list.stdout + list.stderr).not.toContain(PASSWORD);
  });

  it('a failover without a crash (SENTINEL FAILOVER): poprelayd moves on the notice, the hook on ROLE', async () => {
    const before = await set.primaryPort();
    expect(await ask(set.sentinelPorts[0]!, ['SENTINEL', 'FAILOVER', 'poprelay'])).toContain('+OK');
    const promoted = await set.promotedFrom(before);
    await eventually(
      () => daemon.log().includes(`connected to the primary 127.0.0.1:${promoted}`),
      60_000,
      'poprelayd on the new primary',
    );
    // The demoted primary keeps its connections: what moved poprelayd was the notice (or the question each second).
    expect(daemon.log()).toMatch(
      new RegExp(`failover notice: the Sentinels promoted 127\\.0\\.0\\.1:${promoted}|now name`),
    );
    await eventually(
      async () => (await ask(before, ['ROLE'], undefined, PASSWORD)).includes('slave'),
      60_000,
      'the old primary to be a replica',
      100,
    );
    // The hook still remembers the old primary; its ROLE answer sends the hook to the Sentinels.
    expect(readFileSync(enginePrimaryFile(hostA.map), 'utf8')).toBe(`127.0.0.1 ${before}\n`);
    expect((await login('198.51.100.45')).stderr).toContain('recorded 198.51.100.45 in the engine');
    expect(readFileSync(enginePrimaryFile(hostA.map), 'utf8')).toBe(`127.0.0.1 ${promoted}\n`);
    expect(await held('198.51.100.45')).toMatch(/^\d+$/);
    expect(await eventually(() => allowed('198.51.100.45'), 30_000, 'poprelayd to allow 198.51.100.45')).toBe(true);
  });

  it('after the primary is SIGKILLed and the replica promoted, every client uses the new primary', async () => {
    const old = await set.primary();
    await old.kill();
    const promoted = await set.promotedFrom(old.port);
    // The hook's remembered primary is dead: it asks the Sentinels and records on the new one.
    const r = await eventually(
      async () => {
        const out = await login('198.51.100.43');
        return out.stderr.includes('recorded 198.51.100.43 in the engine') && out;
      },
      60_000,
      'a login recorded on the new primary',
      500,
    );
    expect(r.stderr).not.toContain(PASSWORD);
    expect(readFileSync(enginePrimaryFile(hostA.map), 'utf8')).toBe(`127.0.0.1 ${promoted}\n`);
    expect(await held('198.51.100.43')).toMatch(/^\d+$/);
    // poprelayd found the new primary by itself: it knows the login made there, and those made before.
    expect(await eventually(() => allowed('198.51.100.43'), 60_000, 'poprelayd to allow 198.51.100.43')).toBe(true);
    expect(await allowed('198.51.100.40')).toBe(true);
    expect(await allowed('198.51.100.99')).toBe(false);
    expect(daemon.log()).toContain(`connected to the primary 127.0.0.1:${promoted}`);
    expect(daemon.log()).not.toContain(PASSWORD);
    // The sweep sees a new run_id and sends the new primary every entry of host A's map.
    const sweep = await run(BIN.sweep, ['--config', hostA.ini]);
    expect(sweep.stderr).toBe('');
    expect(await held('198.51.100.40')).toMatch(/^\d+$/);
    // The old primary comes back empty; the Sentinels make it a replica of the new one.
    await old.start();
    await eventually(
      async () => (await ask(old.port, ['ROLE'], undefined, PASSWORD)).includes('slave'),
      60_000,
      'the old primary to be a replica',
      200,
    );
    writeFileSync(enginePrimaryFile(hostA.map), `127.0.0.1 ${old.port}\n`);
    expect((await login('198.51.100.44')).stderr).toContain('recorded 198.51.100.44 in the engine');
    expect(await held('198.51.100.44')).toMatch(/^\d+$/);
  });

  it('a primary that stops answering (SIGSTOP: its host hung) costs the hook half its budget, not the failover', async () => {
    const hung = await set.primary();
    const ini = configured(`engine = ${set.url}\nengine_timeout_ms = 1000\n${NOT_LIVE}`);
    const hook = (ip: string) => run(BIN.login, ['--config', ini.ini], { env: { IP: ip } });
    expect((await hook('198.51.100.46')).stderr).toContain('recorded 198.51.100.46 in the engine');
    process.kill(hung.pid()!, 'SIGSTOP');
    try {
      const promoted = await set.promotedFrom(hung.port);
      // The remembered node never answers; the Sentinels name the promoted one within the same budget.
      const r = await hook('198.51.100.47');
      expect(r.stderr).toContain('recorded 198.51.100.47 in the engine');
      expect(readFileSync(enginePrimaryFile(ini.map), 'utf8')).toBe(`127.0.0.1 ${promoted}\n`);
      expect(await eventually(() => allowed('198.51.100.47'), 60_000, 'poprelayd to allow 198.51.100.47')).toBe(true);
      expect(daemon.log()).toMatch(/no answer to PING within 500 ms|failover notice|now name/);
    } finally {
      process.kill(hung.pid()!, 'SIGCONT');
    }
  });
});
