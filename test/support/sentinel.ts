// A Sentinel set on loopback, as sites run one: a primary, a replica and
// three Sentinels (quorum 2) that promote the replica when the primary
// dies. Down after 1 s (the default is 30 s) so that a failover happens
// within a test; nothing else differs from a site's.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';

import { freePort } from './ports.js';
import { terminate } from './terminate.js';
import {
  DEFAULT_KIND,
  serverCommand,
  startEngine,
  type Engine,
  type EngineKind,
  type EngineTlsFiles,
} from './engine.js';
import { eventually, untilServing } from './wait.js';

export const SERVICE = 'poprelay';

export interface SentinelSet {
  kind: EngineKind;
  /** engine = ... for poprelay.ini (redis+sentinel://, or rediss+sentinel:// with TLS). */
  url: string;
  /** The two data nodes; which is the primary changes with failovers. */
  nodes: Engine[];
  sentinelPorts: number[];
  /** The port the Sentinels name as the primary now. */
  primaryPort(): Promise<number>;
  /** The node that is the primary now. */
  primary(): Promise<Engine>;
  /** Waits until the Sentinels name a primary other than `port`, and it answers as one; returns its port. */
  promotedFrom(port: number): Promise<number>;
  stop(): Promise<void>;
}

/** One question to a Sentinel (or engine) on loopback; the raw answer up to its close. */
export function ask(port: number, words: string[], tls?: EngineTlsFiles, password?: string): Promise<string> {
  const bulk = (w: string): string => `$${Buffer.byteLength(w)}\r\n${w}\r\n`;
  const cmd = (c: string[]): string => `*${c.length}\r\n${c.map(bulk).join('')}`;
  return new Promise((resolve, reject) => {
    const s =
      tls === undefined
        ? netConnect({ host: '127.0.0.1', port })
        : tlsConnect({
            host: '127.0.0.1',
            port,
            ca: readFileSync(tls.ca),
            cert: readFileSync(tls.cert),
            key: readFileSync(tls.key),
          });
    let got = '';
    s.setTimeout(5000, () => s.destroy(new Error('no answer')));
    s.on(tls === undefined ? 'connect' : 'secureConnect', () =>
      // Redis 7.0's Sentinel knows no QUIT: a protocol error (an unbalanced quote) makes it close.
      s.write(`${password === undefined ? '' : cmd(['AUTH', password])}${cmd(words)}${cmd(['QUIT'])}"\r\n`),
    );
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('error', reject);
    s.on('close', () => resolve(got));
  });
}

/**
 * Starts the set; `password` is the data nodes' (and given to the
 * Sentinels as auth-pass), `tls` makes every node and Sentinel TLS only.
 */
export async function startSentinelSet(
  o: { kind?: EngineKind; tls?: EngineTlsFiles; password?: string; sentinelsAskPassword?: boolean } = {},
): Promise<SentinelSet> {
  // The Sentinels' own password, where they ask for one: the engine's, as docs/cluster.md sets them up.
  const sentinelPassword = o.sentinelsAskPassword === true ? o.password : undefined;
  const kind = o.kind ?? DEFAULT_KIND;
  const first = await startEngine([], o.password, { kind, tls: o.tls });
  const second = await startEngine([], o.password, { kind, tls: o.tls, replicaOf: first.port });
  const nodes = [first, second];
  await eventually(
    async () => (await ask(second.port, ['INFO', 'replication'], o.tls, o.password)).includes('master_link_status:up'),
    60_000,
    'the replica in sync with the primary',
    100,
  );
  const dir = mkdtempSync(join(tmpdir(), 'poprelay-sentinel-'));
  const [bin, pre] = serverCommand(kind, 'sentinel', dir);
  const procs: ChildProcess[] = [];
  const sentinelPorts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const conf = join(dir, `sentinel-${i}.conf`);
    const tlsLines =
      o.tls === undefined
        ? [`port ${port}`]
        : [
            'port 0',
            `tls-port ${port}`,
            `tls-cert-file ${o.tls.cert}`,
            `tls-key-file ${o.tls.key}`,
            `tls-ca-cert-file ${o.tls.ca}`,
            'tls-auth-clients optional',
            'tls-replication yes',
          ];
    writeFileSync(
      conf,
      [
        ...tlsLines,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${SERVICE} 127.0.0.1 ${first.port} 2`,
        `sentinel down-after-milliseconds ${SERVICE} 1000`,
        `sentinel failover-timeout ${SERVICE} 5000`,
        ...(o.password === undefined ? [] : [`sentinel auth-pass ${SERVICE} ${o.password}`]),
        ...(sentinelPassword === undefined ? [] : [`requirepass ${sentinelPassword}`]),
        '',
      ].join('\n'),
    );
    let output = '';
    const proc = spawn(bin, [...pre, conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    procs.push(proc);
    sentinelPorts.push(port);
    await untilServing(
      `${kind}-sentinel`,
      proc,
      async () => {
        if (!(await ask(port, ['PING'], o.tls, sentinelPassword)).includes('+PONG')) throw new Error('no PONG');
      },
      60_000,
      () => output,
    );
  }
  const primaryPort = async (): Promise<number> => {
    for (const port of sentinelPorts) {
      const answer = await ask(port, ['SENTINEL', 'get-master-addr-by-name', SERVICE], o.tls, sentinelPassword).catch(
        () => '',
      );
      const m = /\$\d+\r\n127\.0\.0\.1\r\n\$\d+\r\n(\d+)\r\n/.exec(answer);
      if (m !== null) return Number(m[1]);
    }
    throw new Error('no Sentinel names the primary');
  };
  const isPrimary = async (port: number): Promise<boolean> =>
    (await ask(port, ['ROLE'], o.tls, o.password).catch(() => '')).includes('master');
  // Ready when every Sentinel sees the replica and the other Sentinels: a failover can then happen.
  await eventually(
    async () => {
      for (const port of sentinelPorts) {
        const answer = await ask(port, ['SENTINEL', 'master', SERVICE], o.tls, sentinelPassword).catch(() => '');
        if (!/num-slaves\r\n\$1\r\n1\r\n/.test(answer) || !/num-other-sentinels\r\n\$1\r\n2\r\n/.test(answer))
          return false;
      }
      return true;
    },
    60_000,
    'the Sentinels seeing the replica and one another',
    100,
  );
  const url =
    `${o.tls === undefined ? 'redis' : 'rediss'}+sentinel://${o.password === undefined ? '' : `:${o.password}@`}` +
    `${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(',')}/${SERVICE}/0`;
  return {
    kind,
    url,
    nodes,
    sentinelPorts,
    primaryPort,
    primary: async () => {
      const port = await primaryPort();
      const node = nodes.find((n) => n.port === port);
      if (node === undefined) throw new Error(`the Sentinels name port ${port}, which is no node of this set`);
      return node;
    },
    promotedFrom: (port) =>
      eventually(
        async () => {
          const now = await primaryPort().catch(() => port);
          return now !== port && (await isPrimary(now)) && now;
        },
        60_000,
        `a primary other than port ${port}`,
        50,
      ),
    stop: async () => {
      await Promise.all(procs.map((p) => terminate(p)));
      await Promise.all(nodes.map((n) => n.stop()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
