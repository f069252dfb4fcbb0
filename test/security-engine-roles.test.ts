// The shared engine's users, one per role (docs/cluster.md): an MTA host's
// reads (and counts user_limit's recipients in the count keys alone), a
// POP/IMAP host's records logins, the administrators' is their own.
// Each is made with exactly the ACL SETUSER line the docs give (and doctor's
// fix prints: engineRoleAcl), on a real engine whose default user needs a
// password, so that nothing runs as anyone else. Each role's programs run
// under it, and the engine's ACL LOG shows everything they send allowed; the
// MTA role is refused every command beyond its reads and its counts, and
// every write but a count's, so that whoever reads an MTA host's
// poprelay.ini cannot grant relaying. A POP/IMAP host's credential can: recording a login is that.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import { loadConfig } from '../src/config.js';
import { askDaemon } from '../src/daemon/client.js';
import { countKey } from '../src/daemon/engine-counter.js';
import { engineRoleAcl } from '../src/engine/roles.js';
import { engineRoleCheck } from '../src/commands/doctor/engine-role.js';
import { DEFAULT_DOCTOR_PATHS } from '../src/commands/doctor/paths.js';
import { formatChecks, runDoctor } from '../src/commands/doctor/run.js';
import type { EngineEndpoint } from '../src/endpoints.js';
import { parseListen } from '../src/endpoints.js';
import { readEntries } from '../src/map/relay-map.js';
import { RECORD_SCRIPT } from '../src/engine/relayset.js';
import { respCall } from '../src/engine/call.js';
import { RespError, type RespValue } from '../src/engine/resp.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { configured } from './support/maps.js';
import { BIN } from './support/paths.js';
import { startPoprelayd, type Daemon } from './support/poprelayd.js';
import { run } from './support/processes.js';
import { eventually } from './support/wait.js';

/** The default user's password: the engine's administrator, who makes the users. */
const ROOT_SECRET = 'engine-admin-secret';
const ROLES = ['mta', 'pop', 'admin'] as const;
type Role = (typeof ROLES)[number];
const SECRET: Record<Role, string> = { mta: 'mta-secret', pop: 'pop-secret', admin: 'admin-secret' };
/** What each role's line allows, beside AUTH and QUIT, which every connection may send. */
const ALLOWED: Record<Role, string[]> = {
  mta: ['get', 'pexpiretime', 'mget', 'scan', 'psubscribe', 'incrby', 'expireat', 'ping', 'dbsize'],
  pop: ['eval', 'get', 'set', 'del', 'info', 'ping', 'dbsize'],
  admin: ['eval', 'get', 'set', 'del', 'mget', 'scan', 'ping', 'dbsize'],
};

let engine: Engine;
const endpoint = (role?: Role): EngineEndpoint => ({
  host: '127.0.0.1',
  port: engine.port,
  db: 0,
  ...(role === undefined ? { password: ROOT_SECRET } : { username: `poprelay-${role}`, password: SECRET[role] }),
  display: `test ${role ?? 'default'}`,
});
const url = (role: Role): string => `redis://poprelay-${role}:${SECRET[role]}@127.0.0.1:${engine.port}/0`;
/** Commands as the engine's administrator (the default user). */
const asRoot = (commands: string[][]): RespValue[] => respCall(endpoint(), commands, 10_000);
const as = (role: Role, commands: string[][]): RespValue[] => respCall(endpoint(role), commands, 10_000);
const noPerm = (v: RespValue | undefined): boolean => v instanceof RespError && /\bNOPERM\b/.test(v.message);

/** What the engine refused since the last reset: user and command (ACL LOG). */
function refusals(): Array<{ user: string; object: string; reason: string }> {
  const [log] = asRoot([['ACL', 'LOG', '128']]);
  return (log as string[][]).map((entry) => {
    const field = (k: string): string => String(entry[entry.indexOf(k) + 1]);
    return { user: field('username'), object: field('object'), reason: field('reason') };
  });
}

const value = (key: string): RespValue | undefined => asRoot([['GET', key]])[0];

beforeAll(async () => {
  engine = await startEngine([], ROOT_SECRET);
  await engine.acl(ROLES.map((r) => engineRoleAcl(r, 0, undefined, SECRET[r])));
  // The engine's administrator sets what the mirror needs: the read role may not run CONFIG.
  expect(asRoot([['CONFIG', 'SET', 'notify-keyspace-events', 'Kg$x']])).toEqual(['OK']);
});
afterAll(async () => {
  await engine?.stop();
});
beforeEach(() => {
  asRoot([['ACL', 'LOG', 'RESET']]);
});

it('the ACL lines are those the docs give: reads on poprelay:* and writes on the count keys alone for MTA hosts', () => {
  expect(engineRoleAcl('mta', 0)).toBe(
    'ACL SETUSER poprelay-mta reset on >PASSWORD %R~poprelay:* ~poprelay:count:* &__keyspace@0__:poprelay:* ' +
      '+get +pexpiretime +mget +scan +psubscribe +incrby +expireat +ping +dbsize',
  );
  expect(engineRoleAcl('pop', 0)).toBe(
    'ACL SETUSER poprelay-pop reset on >PASSWORD ~poprelay:* +eval +get +set +del +info +ping +dbsize',
  );
  expect(engineRoleAcl('admin', 0)).toBe(
    'ACL SETUSER poprelay-admin reset on >PASSWORD ~poprelay:* +eval +get +set +del +mget +scan +ping +dbsize',
  );
  expect(engineRoleAcl(['pop', 'mta'], 0)).toBe(
    'ACL SETUSER poprelay-pop-mta reset on >PASSWORD ~poprelay:* &__keyspace@0__:poprelay:* ' +
      '+eval +get +set +del +info +pexpiretime +mget +scan +psubscribe +incrby +expireat +ping +dbsize',
  );
  expect(engineRoleAcl('mta', 3)).toBe(
    'ACL SETUSER poprelay-mta reset on >PASSWORD %R~poprelay:* ~poprelay:count:* &__keyspace@3__:poprelay:* ' +
      '+get +pexpiretime +mget +scan +psubscribe +incrby +expireat +ping +dbsize +select',
  );
});

/**
 * Every command and subcommand the engine knows (COMMAND), with arguments
 * enough for its arity (a command with too few is refused for that before
 * the ACL is looked at), each key a poprelay:* one.
 */
function everyCommand(): Array<{ name: string; words: string[] }> {
  const [info] = asRoot([['COMMAND']]);
  const out: Array<{ name: string; words: string[] }> = [];
  const add = (name: string, arity: number): void => {
    const words = name.split('|');
    while (words.length < Math.abs(arity)) words.push(`poprelay:probe${words.length}`);
    out.push({ name, words });
  };
  for (const c of info as RespValue[][]) {
    const subcommands = (c[9] ?? []) as RespValue[][];
    if (subcommands.length === 0) add(String(c[0]), Number(c[1]));
    for (const s of subcommands) add(String(s[0]), Number(s[1]));
  }
  return out;
}

describe.each(ROLES)('the %s role', (role) => {
  it('is refused every command but its own, each on a connection of its own', () => {
    const answered: string[] = [];
    const commands = everyCommand();
    expect(commands.length).toBeGreaterThan(200);
    for (const { name, words } of commands) {
      if (ALLOWED[role].includes(words[0] ?? '')) continue;
      let reply: RespValue | undefined;
      try {
        [reply] = as(role, [words]);
      } catch (e) {
        reply = new RespError((e as Error).message); // QUIT: the engine closes before our own QUIT
      }
      if (!noPerm(reply)) answered.push(`${name}: ${reply instanceof RespError ? reply.message : 'answered'}`);
    }
    // Beside those refused by the ACL (NOPERM; EXEC's EXECABORT names it), AUTH, HELLO, RESET
    // and QUIT, which every connection may send, and what the engine refuses to everyone
    // (DEBUG and MODULE: enable-debug-command and enable-module-command are no).
    const others = answered.filter(
      (a) => !/^(auth|hello|reset|quit): /.test(a) && !/^(debug|module\|\w+): ERR \w+ command not allowed/.test(a),
    );
    expect(others).toEqual([]);
    // Nothing ran: the commands that were refused wrote nothing anywhere.
    expect(asRoot([['DBSIZE']])).toEqual([0]);
  });

  it('may not touch keys outside poprelay:*', () => {
    asRoot([['SET', 'other:1', 'x']]);
    const replies = as(role, [
      ['GET', 'other:1'],
      ['MGET', 'other:1'],
      ['SET', 'other:1', 'y'],
      ['INCRBY', 'other:1', '1'],
      ['EVAL', "return redis.call('SET', 'other:1', 'y')", '0'],
    ]);
    // NOPERM, or for a script the engine's refusal of the key inside it.
    // (Redis: "can't access ... keys"; Valkey: "No permissions to access a key").
    const allowed = replies.filter(
      (r) =>
        !noPerm(r) && !/can't access .* keys|No permissions to access a key/.test(String((r as RespError).message)),
    );
    expect(allowed).toEqual([]);
    expect(value('other:1')).toBe('x');
    asRoot([['DEL', 'other:1']]);
  });
});

describe('an MTA host reads, and writes only its counts', () => {
  it('the mta role cannot write poprelay:*: SET, DEL, EVAL of the record script, FUNCTION, all NOPERM', () => {
    asRoot([['SET', 'poprelay:198.51.100.1', '1700000000']]);
    const replies = as('mta', [
      ['SET', 'poprelay:198.51.100.2', 'OK'],
      ['SET', 'poprelay:198.51.100.1', 'OK'],
      ['DEL', 'poprelay:198.51.100.1'],
      ['EVAL', RECORD_SCRIPT, '1', 'poprelay:198.51.100.2', '1700000000', '4102444800', '0'],
      ['EVAL', "return redis.call('SET', 'poprelay:198.51.100.2', 'OK')", '0'],
      ['EVAL_RO', 'return 0', '0'],
      ['FUNCTION', 'LOAD', "#!lua name=p\nredis.register_function('f', function() return 0 end)"],
      ['PERSIST', 'poprelay:198.51.100.1'],
      ['FLUSHDB'],
    ]);
    expect(replies.filter((r) => !noPerm(r))).toEqual([]);
    expect(value('poprelay:198.51.100.1')).toBe('1700000000');
    expect(value('poprelay:198.51.100.2')).toBeNull();
    // Its reads: the probe of the mirror's channel included.
    const [get, pexp, mget, scan, sub] = as('mta', [
      ['GET', 'poprelay:198.51.100.1'],
      ['PEXPIRETIME', 'poprelay:198.51.100.1'],
      ['MGET', 'poprelay:198.51.100.1'],
      ['SCAN', '0', 'MATCH', 'poprelay:*', 'COUNT', '1000'],
      ['PSUBSCRIBE', '__keyspace@0__:poprelay:*'],
    ]);
    expect([get, pexp, mget, (scan as RespValue[])[1], sub]).toEqual([
      '1700000000',
      -1,
      ['1700000000'],
      ['poprelay:198.51.100.1'],
      ['psubscribe', '__keyspace@0__:poprelay:*', 1],
    ]);
    asRoot([['DEL', 'poprelay:198.51.100.1']]);
  });

  it("the mta role counts (INCRBY, EXPIREAT) in poprelay:count:* alone: never an address's key nor a who key", () => {
    asRoot([
      ['SET', 'poprelay:198.51.100.5', '1700000000'],
      ['SET', 'poprelay:who:198.51.100.5', '{}'],
    ]);
    const count = countKey(3600, 472_222, 'alice');
    const [n, expiry, again, get] = as('mta', [
      ['INCRBY', count, '1'],
      ['EXPIREAT', count, '4102444800', 'NX'],
      ['INCRBY', count, '1'],
      ['GET', count],
    ]);
    expect([n, expiry, again, get]).toEqual([1, 1, 2, '2']);
    const refused = as('mta', [
      ['INCRBY', 'poprelay:198.51.100.5', '1'],
      ['INCRBY', 'poprelay:198.51.100.6', '1'],
      ['INCR', 'poprelay:198.51.100.6'],
      ['INCR', count],
      ['EXPIREAT', 'poprelay:198.51.100.5', '1'],
      ['EXPIREAT', 'poprelay:198.51.100.6', '1'],
      ['INCRBY', 'poprelay:who:198.51.100.5', '1'],
      ['EXPIREAT', 'poprelay:who:198.51.100.5', '1'],
      ['SET', 'poprelay:198.51.100.6', 'OK'],
      ['SET', count, 'OK'],
      ['DEL', count],
      ['PERSIST', count],
    ]);
    expect(refused.filter((r) => !noPerm(r))).toEqual([]);
    expect(
      asRoot([
        ['GET', 'poprelay:198.51.100.5'],
        ['GET', 'poprelay:198.51.100.6'],
        ['GET', 'poprelay:who:198.51.100.5'],
        ['GET', count],
        ['EXPIRETIME', count],
      ]),
    ).toEqual(['1700000000', null, '{}', '2', 4102444800]);
    asRoot([['DEL', 'poprelay:198.51.100.5', 'poprelay:who:198.51.100.5', count]]);
  });

  it("poprelay's commands with an MTA host's config cannot add, make permanent, delete or flush", async () => {
    asRoot([['SET', 'poprelay:198.51.100.3', String(Math.floor(Date.now() / 1000))]]);
    const { ini } = configured(`engine = ${url('mta')}\n`);
    for (const args of [
      ['add', '198.51.100.4'],
      ['add', '198.51.100.4', '--permanent'],
      ['del', '198.51.100.3'],
      ['flush', '--yes'],
    ]) {
      const r = await run(BIN.admin, [...args, '--config', ini]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(
        /^poprelay: engine \S+ refused: NOPERM .*\. This engine user may not do that \(an MTA host's reads only\); administrators use their own/,
      );
      expect(r.stderr, args.join(' ')).not.toMatch(/internal error|\n\s+at /);
    }
    expect(value('poprelay:198.51.100.4')).toBeNull();
    expect(value('poprelay:198.51.100.3')).toMatch(/^\d+$/);
    // Reading is allowed: list shows the entry.
    const list = await run(BIN.admin, ['list', '--config', ini]);
    expect(list.stdout).toContain('198.51.100.3');
    expect(refusals().map((r) => `${r.user} ${r.object}`)).toEqual(
      expect.arrayContaining(['poprelay-mta eval', 'poprelay-mta set', 'poprelay-mta del']),
    );
    asRoot([['DEL', 'poprelay:198.51.100.3']]);
  });
});

describe('each role runs its programs with nothing refused', () => {
  let daemon: Daemon | undefined;
  afterAll(async () => {
    await daemon?.stop();
  });

  it('pop: the hook records, the sweep reads run_id (INFO) and re-seeds, del (doctor removes its test entry)', async () => {
    const { ini, map, s } = configured(`engine = ${url('pop')}\n`);
    const login = await run(BIN.login, ['--config', ini, '--tag', 'pop3'], {
      env: { IP: '198.51.100.10', USER: 'alice' },
    });
    expect(login.stderr).toContain('recorded 198.51.100.10 in the engine');
    expect(value('poprelay:198.51.100.10')).toMatch(/^\d+$/);
    // Its user, in the who key the same script writes (GET and SET on poprelay:who:*, nothing more).
    expect(Object.keys(JSON.parse(String(value('poprelay:who:198.51.100.10') ?? '{}')) as object)).toEqual(['alice']);
    const sweep = await run(BIN.sweep, ['--config', ini]);
    expect(sweep.stderr).toBe('');
    expect(sweep.code).toBe(0);
    // It seeded this engine: its run_id is recorded beside the map, so the next sweep sends nothing.
    const [info] = asRoot([['INFO', 'server']]);
    const runId = /^run_id:([0-9a-f]+)/m.exec(String(info))?.[1];
    expect(readFileSync(`${map}.engine-run`, 'utf8').trim()).toBe(runId);
    const del = await run(BIN.admin, ['del', '198.51.100.10', '--config', ini]);
    expect(del.stdout).toBe('removed 198.51.100.10\n');
    expect(value('poprelay:198.51.100.10')).toBeNull();
    expect(readEntries(s)).toEqual([]);
    expect(refusals()).toEqual([]);
  });

  it('mta: poprelayd answers on its three listeners and mirrors by notifications; only CONFIG is refused, and it says so', async () => {
    const { dir, ini, s } = configured();
    const [p1, p2] = [await freePort(), await freePort()];
    const listen = {
      policy: parseListen(`inet:127.0.0.1:${p1}`)!,
      socketmap: parseListen(`inet:127.0.0.1:${p2}`)!,
      readsocket: parseListen(`unix:${join(dir, 'exim.sock')}`)!,
    };
    writeFileSync(
      ini,
      `dbfile = ${s.path}\nignore =\nlive_sessions = no\nengine = ${url('mta')}\n` +
        `policy_listen = ${listen.policy.display}\nsocketmap_listen = ${listen.socketmap.display}\n` +
        `readsocket_listen = ${listen.readsocket.display}\nmirror = yes\n`,
    );
    daemon = await startPoprelayd(ini, 3, true);
    const d = daemon;
    expect(d.log()).toMatch(
      /mirror: notify-keyspace-events not checked \(NOPERM[^)]*config\|get[^)]*\): the engine's configuration must include Kg\$x/,
    );
    // A POP host's hook records a login (as the pop role): poprelayd answers yes, and the mirror has it
    // from the notification, with no second resync.
    const pop = configured(`engine = ${url('pop')}\n`);
    expect((await run(BIN.login, ['--config', pop.ini], { env: { IP: '198.51.100.20' } })).code).toBe(0);
    const ask = async (address: string) =>
      Promise.all((['policy', 'socketmap', 'readsocket'] as const).map((p) => askDaemon(p, listen[p], address, 5000)));
    expect(await ask('198.51.100.20')).toEqual([true, true, true]);
    expect(await ask('198.51.100.21')).toEqual([false, false, false]);
    const mirrored = (): boolean => readEntries(s).some((e) => e.address === '198.51.100.20');
    await eventually(mirrored, 60_000, 'the mirror to hold 198.51.100.20');
    // The administrator's del reaches the mirror the same way.
    const admin = configured(`engine = ${url('admin')}\n`);
    expect((await run(BIN.admin, ['del', '198.51.100.20', '--config', admin.ini])).code).toBe(0);
    await eventually(() => !mirrored(), 60_000, 'the mirror to drop 198.51.100.20');
    expect(await ask('198.51.100.20')).toEqual([false, false, false]);
    expect((d.log().match(/mirror: resynced /g) ?? []).length).toBe(1);
    // poprelayd sent nothing the read role refuses but CONFIG GET, which it copes with.
    expect(refusals()).toEqual([{ user: 'poprelay-mta', object: 'config|get', reason: 'command' }]);
    await d.stop();
    daemon = undefined;
  });

  it('in database 3: the lines for it (+select, the channel of database 3) serve the hook and poprelayd', async () => {
    await engine.acl([
      engineRoleAcl('pop', 3, 'poprelay-pop-db3', 'pop3-secret'),
      engineRoleAcl('mta', 3, 'poprelay-mta-db3', 'mta3-secret'),
    ]);
    const at = (user: string, secret: string) => `redis://${user}:${secret}@127.0.0.1:${engine.port}/3`;
    const pop = configured(`engine = ${at('poprelay-pop-db3', 'pop3-secret')}\n`);
    const mta = configured(
      `engine = ${at('poprelay-mta-db3', 'mta3-secret')}\npolicy_listen = inet:127.0.0.1:${await freePort()}\nmirror = yes\n`,
    );
    const policy = loadConfig(mta.ini, {}).policyListen!;
    daemon = await startPoprelayd(mta.ini, 1, true);
    const d = daemon;
    expect((await run(BIN.login, ['--config', pop.ini], { env: { IP: '198.51.100.25' } })).stderr).toContain(
      'recorded 198.51.100.25 in the engine',
    );
    expect(await askDaemon('policy', policy, '198.51.100.25', 5000)).toBe(true);
    await eventually(
      () => readEntries(mta.s).some((e) => e.address === '198.51.100.25'),
      60_000,
      'the mirror of database 3 to hold 198.51.100.25',
    );
    expect(refusals()).toEqual([{ user: 'poprelay-mta-db3', object: 'config|get', reason: 'command' }]);
    await d.stop();
    daemon = undefined;
    respCall({ ...endpoint(), db: 3 }, [['FLUSHDB']], 10_000);
  });

  it("admin: poprelay's commands add, add --permanent, check, list, stats, del and flush", async () => {
    const { ini } = configured(`engine = ${url('admin')}\n`);
    const ok = async (...args: string[]): Promise<string> => {
      const r = await run(BIN.admin, [...args, '--config', ini]);
      expect(r.stderr, args.join(' ')).toBe('');
      expect(r.code, args.join(' ')).toBe(0);
      return r.stdout;
    };
    await ok('add', '198.51.100.30');
    await ok('add', '198.51.100.31', '--permanent');
    await ok('check', '198.51.100.30');
    expect(await ok('list')).toMatch(/198\.51\.100\.30[\s\S]*198\.51\.100\.31 +- +- +permanent/);
    expect(await ok('stats')).toContain('entries:    2 (1 dated, 1 permanent)');
    await ok('del', '198.51.100.31');
    expect(await ok('flush', '--yes')).toContain('removed 1');
    expect(asRoot([['DBSIZE']])).toEqual([0]);
    expect(refusals()).toEqual([]);
  });
});

describe("doctor names the role of this host's engine user, writing nothing", () => {
  let old: string;
  beforeAll(async () => {
    // The one credential docs/cluster.md recommended for every host before the roles.
    old = `ACL SETUSER poprelay-old reset on >old-secret ~poprelay:* &__keyspace@0__:poprelay:* +eval +info +get +mget +set +del +scan +pexpiretime +ping +dbsize +psubscribe`;
    await engine.acl([
      old,
      engineRoleAcl('pop', 0, 'poprelay-noinfo', 'noinfo-secret').replace(' +info', ''),
      engineRoleAcl(['pop', 'mta'], 0, undefined, 'popmta-secret'),
    ]);
  });

  const mtaHost = (user: string, secret: string) => {
    const { ini } = configured(
      `engine = redis://${user}:${secret}@127.0.0.1:${engine.port}/0\npolicy_listen = inet:127.0.0.1:1\nmirror = yes\n`,
    );
    return loadConfig(ini, {});
  };
  const popHost = (user: string, secret: string) =>
    loadConfig(configured(`engine = redis://${user}:${secret}@127.0.0.1:${engine.port}/0\n`).ini, {});
  const check = (cfg: ReturnType<typeof loadConfig>, hook: boolean) => {
    if (cfg.engine === null) throw new Error('no engine');
    return engineRoleCheck(cfg, cfg.engine, hook);
  };

  it('on an MTA host: OK with the read role, WARN with any that can write, FAIL without what poprelayd reads', () => {
    asRoot([['SET', 'poprelay:198.51.100.40', 'OK']]);
    const mta = check(mtaHost('poprelay-mta', SECRET.mta), false);
    expect(mta.status).toBe('OK');
    expect(mta.detail).toBe(
      'reads only (MTA host): SET and EVAL refused; GET, PEXPIRETIME, SCAN, MGET, PSUBSCRIBE allowed',
    );
    for (const [user, secret] of [
      ['poprelay-old', 'old-secret'],
      ['poprelay-pop-mta', 'popmta-secret'],
    ] as const) {
      const c = check(mtaHost(user, secret), false);
      expect(c.status, user).toBe('WARN');
      expect(c.detail).toMatch(
        /^can write the relay set \(SET and EVAL allowed\): whoever can read \S+ can grant relaying on every host; an MTA host needs only the read role$/,
      );
      expect(c.fix).toBe(
        `give this host an engine user of its own role in engine = (docs/cluster.md): ${engineRoleAcl('mta', 0)}`,
      );
    }
    // Both a POP/IMAP host and an MTA host: that credential is what it needs.
    const both = check(mtaHost('poprelay-pop-mta', 'popmta-secret'), true);
    expect([both.status, both.detail]).toEqual([
      'OK',
      'records logins and reads (a POP/IMAP host that is an MTA host too): EVAL, SET, INFO, GET, PEXPIRETIME, SCAN, MGET, PSUBSCRIBE allowed',
    ]);
    const pop = check(mtaHost('poprelay-pop', SECRET.pop), false);
    expect(pop.status).toBe('FAIL');
    expect(pop.detail).toMatch(
      /^the engine user may not run PEXPIRETIME, SCAN, MGET, PSUBSCRIBE, which poprelayd needs here \(NOPERM/,
    );
    // Nothing was written: the one key is as it was, nothing else is there, no probe key.
    expect(asRoot([['DBSIZE'], ['GET', 'poprelay:198.51.100.40']])).toEqual([1, 'OK']);
    asRoot([['DEL', 'poprelay:198.51.100.40']]);
  });

  it('on an MTA host with user_limit: OK when the role may count, WARN naming what it may not when it reads only', async () => {
    await engine.acl([
      engineRoleAcl('mta', 0, 'poprelay-mta-nocount', 'nocount-secret').replace(' +incrby +expireat', ''),
    ]);
    const limited = (user: string, secret: string) => {
      const { ini } = configured(
        `engine = redis://${user}:${secret}@127.0.0.1:${engine.port}/0\npolicy_listen = inet:127.0.0.1:1\nuser_limit = 5/1h\n`,
      );
      return loadConfig(ini, {});
    };
    const mta = check(limited('poprelay-mta', SECRET.mta), false);
    expect([mta.status, mta.detail]).toEqual([
      'OK',
      "reads only (MTA host): SET and EVAL refused; GET, PEXPIRETIME allowed; counts user_limit's recipients (INCRBY, EXPIREAT on poprelay:count:* keys)",
    ]);
    const old = check(limited('poprelay-mta-nocount', 'nocount-secret'), false);
    expect(old.status).toBe('WARN');
    expect(old.detail).toMatch(
      /^the engine user may not run INCRBY, EXPIREAT on poprelay:count:\* keys: user_limit = 5\/1h is not applied on this host \(NOPERM/,
    );
    expect(old.fix).toBe(
      `give this host an engine user of its own role in engine = (docs/cluster.md): ${engineRoleAcl('mta', 0)}`,
    );
    // The probes wrote nothing: no count key was made.
    expect(asRoot([['DBSIZE']])).toEqual([0]);
  });

  it('on a POP/IMAP host: OK with the record role, WARN without INFO, FAIL with the read role', () => {
    const pop = check(popHost('poprelay-pop', SECRET.pop), true);
    expect(pop.status).toBe('OK');
    expect(pop.detail).toMatch(/^records logins \(POP\/IMAP host\): EVAL, SET and INFO allowed; /);
    const noInfo = check(popHost('poprelay-noinfo', 'noinfo-secret'), true);
    expect(noInfo.status).toBe('WARN');
    expect(noInfo.detail).toMatch(/may not run INFO: the sweep .* every minute/);
    const mta = check(popHost('poprelay-mta', SECRET.mta), true);
    expect(mta.status).toBe('FAIL');
    expect(mta.detail).toMatch(/^the engine user may not run EVAL, SET, which the hook and the sweep need here/);
    expect(mta.fix).toContain(engineRoleAcl('pop', 0));
    expect(asRoot([['DBSIZE']])).toEqual([0]);
  });

  it('poprelay doctor on an MTA host (no Dovecot hook) prints the line', async () => {
    const cfg = mtaHost('poprelay-mta', SECRET.mta);
    const checks = await runDoctor(cfg.source ?? '', { ...DEFAULT_DOCTOR_PATHS, doveconfConfig: '/nonexistent' });
    expect(formatChecks(checks)).toContain(
      'OK    engine role: reads only (MTA host): SET and EVAL refused; GET, PEXPIRETIME, SCAN, MGET, PSUBSCRIBE allowed',
    );
  });
});
