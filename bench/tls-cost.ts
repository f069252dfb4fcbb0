// What TLS and Sentinel cost a recording (part of section 6): the hook run
// by hand against a cleartext engine, one over TLS and one behind
// Sentinels; and, in one process, one exchange natively against one over
// TLS each way the hook can make it (openssl s_client, or a worker thread
// with node:tls: a full handshake either way, what a recorder pays once
// per run).

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { respCall } from '../src/engine/call.js';
import { opensslExchange, workerExchange } from '../src/engine/tls-exchange.js';
import { appCopy } from '../test/support/app.js';
import { startEngine } from '../test/support/engine.js';
import { startSentinelSet } from '../test/support/sentinel.js';
import { safeDir } from '../test/support/tmp.js';
import { makeTestCa } from '../test/support/tls.js';
import { header, ms, row, stats, timeRuns, type Verdict } from './report.js';

const RUNS = 30;

export async function tlsCostTable(verdict: Verdict): Promise<string[]> {
  const ca = makeTestCa(safeDir());
  const plain = await startEngine();
  const tls = await startEngine([], undefined, { tls: ca });
  const set = await startSentinelSet();
  try {
    const dir = safeDir();
    const ini = (name: string, engine: string, extra = ''): string => {
      const path = join(dir, `${name}.ini`);
      writeFileSync(
        path,
        `dbfile = ${join(dir, `${name}.db`)}\nignore =\nlog_recorded = no\nrefresh_seconds = 0\nengine = ${engine}\n` +
          `engine_timeout_ms = 2000\n${extra}`,
      );
      return path;
    };
    const variants: Array<[string, string]> = [
      ['`redis://`', ini('plain', plain.url)],
      ['`rediss://`', ini('tls', tls.url, `engine_ca_file = ${ca.ca}\n`)],
      ['`redis+sentinel://` (primary remembered)', ini('sentinel', set.url)],
    ];
    const hook = join(appCopy(), 'bin/poprelay-login');
    const runs = new Map<string, number[]>(variants.map(([name]) => [name, []]));
    for (let i = 0; i < RUNS; i++)
      for (const [name, path] of variants)
        runs.get(name)?.push(...timeRuns(1, hook, ['--config', path], { IP: '172.23.0.1' }));
    const base = stats(runs.get('`redis://`') ?? []);
    const md = [
      `The recorder run by hand against each kind of engine (${RUNS} runs each, interleaved), wall time in milliseconds:`,
      '',
      ...header(['engine =', 'median', 'p90', 'ratio']),
    ];
    for (const [name] of variants) {
      const s = stats(runs.get(name) ?? []);
      md.push(row([name, ms(s.median), ms(s.p90), (s.median / base.median).toFixed(2)]));
    }
    const tlsRatio = stats(runs.get('`rediss://`') ?? []).median / base.median;
    verdict(
      'hook with a TLS engine against a cleartext one',
      tlsRatio,
      1.5,
      'each recorder run starts openssl s_client and makes a full handshake (below).',
    );

    // In-process: one exchange each way, after a first one that loads what it needs.
    const at = (port: number, withTls: boolean) => ({
      host: '127.0.0.1',
      port,
      db: 0,
      display: '',
      ...(withTls ? { tls: { caFile: ca.ca } } : {}),
    });
    const once = (e: ReturnType<typeof at>): number => {
      const t0 = performance.now();
      respCall(e, [['PING']], 5000);
      return performance.now() - t0;
    };
    const request = Buffer.from('*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n');
    const timed = (f: () => unknown): number => {
      const t0 = performance.now();
      f();
      return performance.now() - t0;
    };
    const node = { host: '127.0.0.1', port: tls.port };
    const firstWorker = timed(() => workerExchange(node, { caFile: ca.ca }, request, 5000));
    const exchanges = { native: [] as number[], openssl: [] as number[], worker: [] as number[] };
    for (let i = 0; i < 40; i++) {
      exchanges.native.push(once(at(plain.port, false)));
      exchanges.openssl.push(timed(() => opensslExchange(node, { caFile: ca.ca }, request, 5000)));
      exchanges.worker.push(timed(() => workerExchange(node, { caFile: ca.ca }, request, 5000)));
    }
    const [n, o, w] = [stats(exchanges.native), stats(exchanges.openssl), stats(exchanges.worker)];
    md.push(
      '',
      'One exchange (`PING`) in a running process, 40 each, with a full TLS handshake (P-256 certificate) each time:',
      'the addon natively in cleartext; `openssl s_client` (what the hook uses where `/usr/bin/openssl` is installed); node:tls',
      `in a worker thread (the fallback; the first one in a process, loading node:tls, took ${ms(firstWorker)} ms).`,
      '',
      ...header(['exchange', 'median', 'p90']),
      row(['native, cleartext', ms(n.median), ms(n.p90)]),
      row(['openssl s_client, TLS', ms(o.median), ms(o.p90)]),
      row(['worker thread, TLS', ms(w.median), ms(w.p90)]),
      '',
    );
    return md;
  } finally {
    await set.stop();
    await tls.stop();
    await plain.stop();
  }
}
