// The hook's exchange with an engine over TLS (rediss://), blocking like
// the addon's (native/exchange.cc), which speaks no TLS, so that the hook,
// the sweep and doctor keep one synchronous call: openssl s_client, where
// it is installed (ca-certificates brings it), run with the request on its
// standard input; else node:tls in a worker thread while this thread waits
// on shared memory, which costs a short-lived process several times more
// (docs/benchmarks.md, section 6). Nothing of either loads unless TLS is
// configured.

import { existsSync } from 'node:fs';

import type { EngineNode, EngineTls } from '../endpoints.js';

const OPENSSL = '/usr/bin/openssl';

/** The most of an answer kept, as the addon's exchange. */
const MAX_ANSWER = 1 << 20;

/** state[0]: 0 waiting, 1 answered, 2 failed; state[1]: bytes in the answer; state[2]: 1 once TCP connected. */
const WORKER = `
const { workerData: w } = require('node:worker_threads');
const tls = require('node:tls');
const fs = require('node:fs');
const state = new Int32Array(w.shared, 0, 3);
const out = new Uint8Array(w.shared, 12);
let ended = false;
const finish = (code, buf) => {
  if (ended) return;
  ended = true;
  const n = Math.min(buf.length, out.length);
  out.set(buf.subarray(0, n));
  state[1] = n;
  Atomics.store(state, 0, code);
  Atomics.notify(state, 0);
};
const fail = (err, phase) =>
  finish(2, Buffer.from(JSON.stringify({ code: err.code || 'ERR_TLS', phase, message: String(err.message || err) })));
try {
  const read = (f, what) => { try { return fs.readFileSync(f); } catch (e) { e.message = what + ' ' + f + ': ' + e.message; e.code = 'ENGINE_TLS_FILE'; throw e; } };
  const s = tls.connect({
    host: w.host,
    port: w.port,
    ...(w.servername ? { servername: w.servername } : {}),
    ...(w.caFile ? { ca: read(w.caFile, 'engine_ca_file') } : {}),
    ...(w.certFile ? { cert: read(w.certFile, 'engine_cert_file'), key: read(w.keyFile, 'engine_key_file') } : {}),
    rejectUnauthorized: true,
  });
  const chunks = [];
  let phase = 'connect';
  s.once('connect', () => { phase = 'handshake'; Atomics.store(state, 2, 1); });
  s.once('secureConnect', () => { phase = 'answer'; s.write(Buffer.from(w.request)); });
  s.on('data', (d) => chunks.push(d));
  s.on('error', (e) => fail(e, phase));
  s.on('close', () => finish(1, Buffer.concat(chunks)));
} catch (e) {
  fail(e, 'connect');
}
`;

/** How the exchange failed, in the shape of the addon's errors. */
export interface TlsExchangeError {
  code: string;
  phase: 'connect' | 'handshake' | 'answer';
  message: string;
}

const isIp = (host: string): boolean => /^[0-9.]+$/.test(host) || host.includes(':');

/**
 * Sends `request` to `at` over TLS, checking the engine's certificate
 * against the CA and the host name (or IP address) it was reached by, and
 * returns everything the engine sent until it closed. Throws a
 * TlsExchangeError; code ETIMEDOUT when the deadline passes.
 */
export function tlsExchange(at: EngineNode, files: EngineTls, request: Buffer, timeoutMs: number): Buffer {
  return existsSync(OPENSSL)
    ? opensslExchange(at, files, request, timeoutMs)
    : workerExchange(at, files, request, timeoutMs);
}

/** What s_client's standard error says went wrong. */
function opensslError(stderr: string): TlsExchangeError {
  const errno = /^connect:errno=(\d+)/m.exec(stderr)?.[1] ?? (/Connection refused/.test(stderr) ? '111' : undefined);
  if (errno !== undefined) {
    const code = errno === '111' ? 'ECONNREFUSED' : `errno ${errno}`;
    return { code, phase: 'connect', message: code };
  }
  const verify = /^verify error:num=\d+:(.+)$/m.exec(stderr)?.[1];
  const reason = /error:[0-9A-F]+:[^:]*:[^:]*:([^:\n]+)/.exec(stderr)?.[1];
  const message = verify ?? reason ?? (stderr.trim().split('\n').pop() || 'openssl s_client failed');
  return { code: verify !== undefined ? 'CERT_VERIFY' : 'ERR_TLS', phase: 'handshake', message };
}

/** The exchange through openssl s_client: the request on its input, the answer on its output, until the engine closes. */
export function opensslExchange(at: EngineNode, files: EngineTls, request: Buffer, timeoutMs: number): Buffer {
  const { spawnSync } = process.getBuiltinModule('node:child_process');
  const ip = isIp(at.host);
  const args = [
    's_client',
    '-connect',
    `${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}`,
    // -quiet: nothing but the engine's answer on the output, no commands read from the input, and
    // the connection kept until the engine closes it after QUIT.
    '-quiet',
    '-nocommands',
    '-verify_return_error',
    ...(ip ? ['-verify_ip', at.host] : ['-verify_hostname', at.host, '-servername', at.host]),
    ...(files.caFile !== undefined ? ['-CAfile', files.caFile] : []),
    ...(files.certFile !== undefined ? ['-cert', files.certFile, '-key', files.keyFile ?? files.certFile] : []),
  ];
  const r = spawnSync(OPENSSL, args, {
    input: request,
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    maxBuffer: MAX_ANSWER,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const stdout = r.stdout ?? Buffer.alloc(0);
  const stderr = r.stderr?.toString('utf8') ?? '';
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') {
    // Never "no connection": s_client kept from the CPU says nothing either, and that must not
    // make the hooks leave the engine alone (the pause is for a host that drops packets).
    const err: TlsExchangeError = {
      code: 'ETIMEDOUT',
      phase: stdout.length > 0 ? 'answer' : 'handshake',
      message: 'timed out',
    };
    throw err;
  }
  if (r.error !== undefined) throw { code: 'ERR_TLS', phase: 'connect', message: r.error.message } as TlsExchangeError;
  if (r.status !== 0 && stdout.length === 0) throw opensslError(stderr);
  return stdout;
}

/** The exchange through node:tls in a worker thread. */
export function workerExchange(at: EngineNode, files: EngineTls, request: Buffer, timeoutMs: number): Buffer {
  const { Worker } = process.getBuiltinModule('node:worker_threads');
  const shared = new SharedArrayBuffer(12 + MAX_ANSWER);
  const state = new Int32Array(shared, 0, 3);
  const worker = new Worker(WORKER, {
    eval: true,
    workerData: {
      shared,
      host: at.host,
      port: at.port,
      servername: isIp(at.host) ? undefined : at.host,
      ...files,
      request: new Uint8Array(request),
    },
    stdout: true,
    stderr: true,
  });
  worker.unref();
  try {
    if (Atomics.wait(state, 0, 0, timeoutMs) === 'timed-out') {
      const err: TlsExchangeError = {
        code: 'ETIMEDOUT',
        phase: Atomics.load(state, 2) === 1 ? 'answer' : 'connect',
        message: 'timed out',
      };
      throw err;
    }
    const answer = Buffer.from(new Uint8Array(shared, 12, Atomics.load(state, 1)));
    if (Atomics.load(state, 0) === 2) throw JSON.parse(answer.toString()) as TlsExchangeError;
    return answer;
  } finally {
    void worker.terminate();
  }
}
