// poprelayd's log holds the audit lines back for one write (log.ts's
// soon()): they come out within SOON_MS, at once past SOON_CHARS, before any
// line said at once, and whenever the process exits as Node sees it
// (process.exit, an uncaught error, the end of its work). A poprelayd stopped
// with SIGTERM right after its last answer has written every audit line.

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { auditLine } from '../src/daemon/audit.js';
import { DaemonLog, SOON_CHARS, SOON_MS } from '../src/daemon/log.js';
import { freePort } from './support/ports.js';
import { startEngine, type Engine } from './support/engine.js';
import { BIN, ROOT } from './support/paths.js';
import { tempDir } from './support/tmp.js';
import { eventually } from './support/wait.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('DaemonLog: lines said soon', () => {
  it('waits at most SOON_MS, then writes them in one write; a line said at once goes after them', async () => {
    const writes: string[] = [];
    const log = new DaemonLog((l) => writes.push(l), false);
    log.soon('info', 'one');
    log.soonEscaped('info', 'two');
    expect(writes).toEqual([]);
    await sleep(SOON_MS + 50);
    expect(writes).toEqual(['poprelayd: one\npoprelayd: two\n']);
    log.soon('info', 'three');
    log.say('warning', 'four');
    expect(writes.slice(1)).toEqual(['poprelayd: three\n', 'poprelayd: four\n']);
    await sleep(SOON_MS + 50);
    expect(writes).toHaveLength(3); // nothing written twice
  });

  it('writes at once when SOON_CHARS characters wait', () => {
    const writes: string[] = [];
    const log = new DaemonLog((l) => writes.push(l), true);
    // Lines of 1,024 characters with the journal's prefix ("<6>poprelayd: ", and the newline).
    const text = 'x'.repeat(1024 - '<6>poprelayd: \n'.length);
    const n = SOON_CHARS / 1024;
    for (let i = 0; i < n - 1; i++) log.soon('info', text);
    expect(writes).toEqual([]);
    log.soon('info', text);
    expect(writes).toHaveLength(1);
    expect(writes[0]?.split('\n').filter((l) => l !== '')).toEqual(Array(n).fill(`<6>poprelayd: ${text}`));
  });

  it('escapes control characters in soon(); an audit line has none left to escape', () => {
    const writes: string[] = [];
    const log = new DaemonLog((l) => writes.push(l), false);
    log.soon('info', 'a\u0085b\u007fc\nd');
    const odd = 'ev"il\u0085\u007f\n\u2028x';
    const line = auditLine({
      protocol: 'policy',
      client: '192.0.2.1',
      decision: 'relay',
      users: [odd, '', '-', 'plain'],
      fields: { sender: odd, recipient: 'r@example.com', queueId: 'A\u0080B' },
      over: odd,
    });
    expect(line).not.toMatch(/[\x00-\x1f\x7f-\x9f]/);
    log.soonEscaped('info', line);
    log.flush();
    expect(writes.join('')).toBe(
      'poprelayd: a\\x85b\\x7fc\\x0ad\n' +
        'poprelayd: audit: protocol=policy client=192.0.2.1 decision=relay ' +
        'user="ev\\"il\\x85\\x7f\\n\u2028x","","-",plain sender="ev\\"il\\x85\\x7f\\n\u2028x" ' +
        'recipient=r@example.com queue_id="A\\x80B" over="ev\\"il\\x85\\x7f\\n\u2028x"\n',
    );
  });

  // A process of its own: what matters is what reaches its stderr as it ends.
  const ends = async (how: string): Promise<{ code: number | null; stderr: string }> => {
    const url = new URL('dist/daemon/log.js', `file://${ROOT}`).href;
    const code = `import { DaemonLog } from '${url}'; const log = new DaemonLog(); log.soon('info', 'held back'); ${how}`;
    const p = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const status = await new Promise<number | null>((r) => p.on('close', r));
    return { code: status, stderr };
  };

  it.each([
    ['process.exit()', 'process.exit(3);', 3],
    ['an uncaught error', "setImmediate(() => { throw new Error('boom'); });", 1],
    ['the end of its work (the timer keeps nothing alive)', '', 0],
  ])('writes what waits when the process ends by %s', async (_what, how, status) => {
    const r = await ends(how);
    expect(r.code).toBe(status);
    expect(r.stderr).toContain('poprelayd: held back\n');
  });
});

describe('poprelayd stopped right after its answers', () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await startEngine();
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('has written an audit line for every answer it gave when SIGTERM came', async () => {
    const dir = tempDir();
    const port = await freePort();
    const ini = join(dir, 'poprelay.ini');
    writeFileSync(
      ini,
      `dbfile = ${join(dir, 'popip.db')}\nengine = ${engine.url}\npolicy_listen = inet:127.0.0.1:${port}\naudit_log = yes\n`,
    );
    const proc = spawn(BIN.daemon, ['--config', ini], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    proc.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    const closed = new Promise<number | null>((r) => proc.on('close', r));
    await eventually(() => log.includes(': answering policy'), 60_000, `poprelayd ready: ${log}`);
    const n = 500;
    const requests = Array.from(
      { length: n },
      (_, i) =>
        `request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.${1 + (i % 200)}\nsender=s${i}@example.net\nrecipient=r${i}@example.com\n\n`,
    );
    // Fifty at a time: a connection may have MAX_PENDING requests waiting.
    const s = connect({ port, host: '127.0.0.1' });
    await new Promise((resolve, reject) => s.on('connect', resolve).on('error', reject));
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    for (let i = 0; i < n; i += 50) {
      s.write(requests.slice(i, i + 50).join(''));
      await eventually(() => got.split('\n\n').length > i + 50, 60_000, `answers to ${i + 50} requests`);
    }
    s.destroy();
    proc.kill('SIGTERM'); // within SOON_MS of the last answer: its lines still wait
    expect(await closed).toBe(0);
    const audit = log.split('\n').filter((l) => l.startsWith('poprelayd: audit: '));
    expect(audit).toHaveLength(n);
    expect(audit.at(-1)).toBe(
      `poprelayd: audit: protocol=policy client=192.0.2.${1 + ((n - 1) % 200)} decision=no user=- sender=s${n - 1}@example.net recipient=r${n - 1}@example.com`,
    );
  });
});
