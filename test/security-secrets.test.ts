// The engine's password (engine in poprelay.ini) is the one secret poprelay
// holds, and it must never be printed: not in a config error, not in the
// failure lines of the hook (which Dovecot logs), the sweep, poprelay's
// commands (--json included), doctor or poprelayd. Each malformed engine URL
// gets a clear error that names the part that is wrong. Attacks as tests:
// URLs an administrator gets wrong, and engines that fail or quote back
// what they were sent.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseConfig } from '../src/config.js';
// As a namespace: run against the code before this fix, each test fails on its own.
import * as endpoints from '../src/endpoints.js';
import { PoprelayError } from '../src/errors.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { configured } from './support/maps.js';
import { BIN } from './support/paths.js';
import { startPoprelayd } from './support/poprelayd.js';
import { run } from './support/processes.js';
import { thrown } from './support/errors.js';
import { eventually } from './support/wait.js';

/** Parts of every password below: no output may hold either, whole or percent-escaped. */
const FRAGMENTS = ['S3cr3t', 'Xy9q'];

function expectNoSecret(what: string, text: string): void {
  for (const f of FRAGMENTS) expect(text, `${what} shows (part of) the password:\n${text}`).not.toContain(f);
}

describe('a malformed engine URL: a clear error that never shows the password', () => {
  it.each([
    ['unix://:S3cr3t/Xy9q@/run/v.sock', /the password holds an unescaped "\/": write it as %2F/],
    ['redis://u:S3cr3t@Xy9q@h', /the password holds an unescaped "@": write it as %40/],
    ['redis://S3cr3t/Xy9q:pw@h', /the user name holds an unescaped "\/": write it as %2F/],
    [
      'redis://:S3cr3t%zzXy9q@h',
      /the password holds a "%" that does not begin an escape such as %40; write "%" itself as %25/,
    ],
    ['redis://:S3cr3tXy9q%4@h', /the password holds a "%" that does not begin an escape/],
    ['redis://:S3cr3t%FFXy9q@h', /the password's percent-escapes are not UTF-8 text/],
    ['redis://:S3cr3t Xy9q@h', /the password holds a space or control character: write it as %20/],
    ['redis://:S3cr3tXy9q@h:65536', /the port must be a number from 1 to 65535/],
    ['redis://:S3cr3tXy9q@h:0', /the port must be a number from 1 to 65535/],
    ['redis://S3cr3t:Xy9q', /the port must be a number from 1 to 65535/],
    ['redis://:S3cr3tXy9q@h/100', /the database after "\/" must be a number from 0 to 99/],
    ['unix://:S3cr3tXy9q@/run/v.sock?db=100', /the database after "\?db=" must be a number from 0 to 99/],
    ['unix://:S3cr3tXy9q@/run/v.sock?tls=1', /after the path, the only query is \?db=N/],
    ['redis://:S3cr3tXy9q@2001:db8::1', /put an IPv6 address in brackets/],
    ['redis://:S3cr3tXy9q@[2001:db8::1', /an IPv6 address in "\[" has no "\]"/],
    ['redis://:S3cr3tXy9q@h_x', /the host must be a name, an IPv4 address, or an IPv6 address in brackets/],
    ['redis://:S3cr3tXy9q@', /there is no host/],
    ['redis://:S3cr3tXy9q', /there is no host/],
    ['redis+sentinel://:S3cr3tXy9q@h', /after the Sentinels comes \/SERVICE/],
    ['rediss+sentinel://:S3cr3tXy9q@h:1,h:2/a b', /the service after the Sentinels must be a name/],
    ['http://S3cr3t:Xy9q@h', /it must begin with redis:\/\/, rediss:\/\/ \(TLS\), redis\+sentinel:\/\//],
    ['unix://:S3cr3tXy9q@run/v.sock', /after "unix:\/\/" comes \/PATH, or \[USER\]:PASSWORD@\/PATH/],
    ['unix://:S3cr3tXy9q@/run/a b.sock', /the socket path must be absolute/],
    // poprelay.ini takes "#" and ";" as the start of a comment: what is left must not be taken, nor shown.
    ['redis://:S3cr3t#Xy9q@h', /a "#" cuts its value short .* write them in a user name or password as %23 and %3B/],
    ['redis://S3cr3t:Xy9q;x@h:1', /a ";" cuts its value short/],
    ['redis://h:1 ; S3cr3t@Xy9q', /a ";" cuts its value short/],
  ])('%s', async (value, why) => {
    const { ini } = configured(`engine = ${value}\n`);
    for (const [name, bin, args, env] of [
      ['poprelay list', BIN.admin, ['list'], {}],
      ['the hook', BIN.login, [], { IP: '192.0.2.50' }],
    ] as const) {
      const r = await run(bin, [...args, '--config', ini], { env });
      expect(r.stderr, name).toContain(`config ${ini}: key "engine": `);
      expect(r.stderr, name).toMatch(why);
      expect(r.stderr, name).not.toMatch(/internal error|\n\s+at /);
      expect(r.code, name).not.toBe(0);
      expectNoSecret(name, r.stdout + r.stderr);
    }
  });

  it('shows the value with its user name and password as ***, and a value without them as it is', () => {
    const e = thrown(() => parseConfig('engine = redis://relay:S3cr3tXy9q@db.example:99999/1\n', '/x.ini'));
    expect(e).toBeInstanceOf(PoprelayError);
    expect((e as PoprelayError).message).toMatch(
      /^config \/x\.ini: key "engine": value "redis:\/\/\*\*\*@db\.example:99999\/1" is not allowed \(the port must be a number from 1 to 65535\); expected /,
    );
    expect(endpoints.maskEngine('redis://db.example:99999')).toBe('redis://db.example:99999');
    expect(endpoints.maskEngine('unix:/run/v.sock?db=x')).toBe('unix:/run/v.sock?db=x');
    expect(endpoints.maskEngine('redis://S3cr3t:Xy9q/2')).toBe('redis://***');
  });
});

describe('a well-formed engine URL: escapes decoded, no credential in what messages show', () => {
  it.each([
    [
      'redis://re%40lay:S3cr3t%2F%40%3A%25%23%3B%20Xy9q@h:7/2',
      { host: 'h', port: 7, db: 2, username: 're@lay', password: 'S3cr3t/@:%#; Xy9q', display: 'redis://h:7/2' },
    ],
    // ":", "?", "[" and "]" leave no doubt where the password ends: taken as they are.
    [
      'redis://:S3cr3t:?[]Xy9q@h',
      { host: 'h', port: 6379, db: 0, password: 'S3cr3t:?[]Xy9q', display: 'redis://h:6379/0' },
    ],
    [
      'unix://relay:S3cr3t%2FXy9q@/run/v@1.sock?db=3',
      { path: '/run/v@1.sock', db: 3, username: 'relay', password: 'S3cr3t/Xy9q', display: 'unix:/run/v@1.sock?db=3' },
    ],
    ['unix:///run/v.sock', { path: '/run/v.sock', db: 0, display: 'unix:/run/v.sock?db=0' }],
    ['unix:/run/v.sock?db=1', { path: '/run/v.sock', db: 1, display: 'unix:/run/v.sock?db=1' }],
  ])('%s', (text, expected) => {
    expect(endpoints.parseEngine(text)).toEqual(expected);
  });

  it('a comment after the value, on the same line, is still a comment', () => {
    expect(parseConfig('engine = redis://h:1 ; the shared engine\n', null).engine?.display).toBe('redis://h:1/0');
    expect(parseConfig('engine = "redis://:S3cr3t#Xy9q@h"\n', null).engine?.password).toBe('S3cr3t#Xy9q');
  });

  it("an engine's message that quotes the password shows *** instead, whether as it is or as JSON", () => {
    const e = { password: 'S3cr3t"Xy9q' };
    expect(endpoints.withoutSecrets(e, "ERR unknown command 'AUTH', with args beginning with: 'S3cr3t\"Xy9q'")).toBe(
      "ERR unknown command 'AUTH', with args beginning with: '***'",
    );
    expect(endpoints.withoutSecrets(e, JSON.stringify(['AUTH', 'S3cr3t"Xy9q']))).toBe('["AUTH","***"]');
  });
});

/** Every character a URL must escape, and those poprelay.ini takes for a comment. */
const PASSWORD = 'S3cr3t/@:%#;?[]Xy9q';
const url = (port: number, password: string, user = ''): string =>
  `redis://${user}:${encodeURIComponent(password)}@127.0.0.1:${port}/0`;

/**
 * A server that answers every command as a Redis without it does: with
 * the command's arguments quoted, the password of AUTH among them.
 */
function echoingEngine(): Promise<{ server: Server; port: number }> {
  const server = createServer((c: Socket) => {
    c.on('error', () => undefined);
    let got = Buffer.alloc(0);
    c.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      // Each whole RESP array of bulk strings: *N, then N times $LEN and the text.
      for (;;) {
        const lines = got.toString('latin1').split('\r\n');
        const n = /^\*(\d+)$/.exec(lines[0] ?? '')?.[1];
        if (n === undefined || lines.length < 2 * Number(n) + 2) return;
        const args = Array.from({ length: Number(n) }, (_, i) => lines[2 + 2 * i] ?? '');
        got = got.subarray(Buffer.byteLength(lines.slice(0, 2 * Number(n) + 1).join('\r\n') + '\r\n', 'latin1'));
        const [command = '', ...rest] = args;
        if (command.toUpperCase() === 'QUIT') {
          c.end('+OK\r\n'); // as a server does: the hook's exchange ends with QUIT
          return;
        }
        c.write(
          `-ERR unknown command '${command}', with args beginning with: ${rest.map((a) => `'${a}' `).join('')}\r\n`,
        );
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve({ server, port: typeof a === 'object' && a !== null ? a.port : 0 });
    }),
  );
}

let engine: Engine;
let echoing: { server: Server; port: number };
let refusedPort = 0;
beforeAll(async () => {
  engine = await startEngine([], PASSWORD);
  echoing = await echoingEngine();
  refusedPort = await freePort();
});
afterAll(async () => {
  await engine?.stop();
  echoing?.server.close();
});

type Kind = 'refused' | 'wrong password' | 'quotes what it is sent' | 'right password';
const KINDS: Kind[] = ['refused', 'wrong password', 'quotes what it is sent', 'right password'];

/** A config whose engine fails as `kind` says (or works), with a metrics file. */
function site(kind: Kind): { ini: string; dir: string; display: string } {
  const [port, password] =
    kind === 'refused'
      ? [refusedPort, PASSWORD]
      : kind === 'wrong password'
        ? [engine.port, `${PASSWORD}x`]
        : kind === 'quotes what it is sent'
          ? [echoing.port, PASSWORD]
          : [engine.port, PASSWORD];
  const user = kind === 'right password' ? 'default' : '';
  const { ini, dir } = configured(`engine = ${url(port, password, user)}\nmetrics_file = /dev/null/x.prom\n`);
  writeFileSync(ini, readFileSync(ini, 'utf8').replace('/dev/null/x.prom', join(dir, 'poprelay.prom')));
  return { ini, dir, display: `engine redis://127.0.0.1:${port}/0` };
}

/** What a program printed, and whether it did its work with the engine. */
type Outcome = { out: string; worked: boolean };

const PROGRAMS: Array<[string, (ini: string, dir: string) => Promise<Outcome>]> = [
  [
    "the hook (its lines go to Dovecot's log)",
    async (ini) => {
      const r = await run(BIN.login, ['--config', ini], { env: { IP: '192.0.2.60', USER: 'alice' } });
      return {
        out: r.stdout + r.stderr,
        worked: r.code === 0 && r.stderr.includes('recorded 192.0.2.60 in the engine'),
      };
    },
  ],
  [
    'poprelay-sweep, and its metrics file',
    async (ini, dir) => {
      await run(BIN.login, ['--config', ini], { env: { IP: '192.0.2.61' } }); // the map, and a login to send
      const r = await run(BIN.sweep, ['--verbose', '--config', ini]);
      const metrics = join(dir, 'poprelay.prom');
      const prom = existsSync(metrics) ? readFileSync(metrics, 'utf8') : '';
      return { out: r.stdout + r.stderr + prom, worked: r.code === 0 && !r.stderr.includes('engine') && prom !== '' };
    },
  ],
  [
    'poprelay list --json',
    async (ini) => {
      const r = await run(BIN.admin, ['list', '--json', '--config', ini]);
      return { out: r.stdout + r.stderr, worked: r.code === 0 && Array.isArray(JSON.parse(r.stdout)) };
    },
  ],
  [
    'poprelay stats --json',
    async (ini) => {
      const r = await run(BIN.admin, ['stats', '--json', '--config', ini]);
      return { out: r.stdout + r.stderr, worked: r.code === 0 && r.stdout.includes('"engine": "redis://127.0.0.1:') };
    },
  ],
  [
    'poprelay doctor',
    async (ini) => {
      const r = await run(BIN.admin, ['doctor', '--config', ini]);
      return { out: r.stdout + r.stderr, worked: /^OK +engine: redis:\/\/127\.0\.0\.1:\d+\/0 answers/m.test(r.stdout) };
    },
  ],
  [
    "poprelayd's log",
    async (ini) => {
      const port = await freePort();
      writeFileSync(ini, `${readFileSync(ini, 'utf8')}policy_listen = inet:127.0.0.1:${port}\n`);
      const d = await startPoprelayd(ini, 1);
      try {
        // It says what became of its first connection: connected, or why not.
        await eventually(() => /engine redis:\S+: \S/.test(d.log()), 60_000, `poprelayd's engine line: ${d.log()}`);
      } finally {
        await d.stop();
      }
      return { out: d.log(), worked: /engine redis:\S+: connected/.test(d.log()) };
    },
  ],
];

describe('an engine that fails, or quotes back what it is sent: no output holds the password', () => {
  it.each(PROGRAMS)(
    '%s',
    async (_, program) => {
      for (const kind of KINDS) {
        const { ini, dir, display } = site(kind);
        const { out, worked } = await program(ini, dir);
        expectNoSecret(`${kind}: ${_}`, out);
        if (kind === 'right password') {
          // The escaped password, every reserved character in it, logs in.
          expect(worked, `${kind}: ${_}:\n${out}`).toBe(true);
        } else {
          expect(worked, `${kind}: ${_}:\n${out}`).toBe(false);
          expect(out, `${kind}: ${_} says which engine failed`).toContain(display);
        }
      }
    },
    300_000,
  );
});
