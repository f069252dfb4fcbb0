// safefs.ts's openOwnSocket, through which poprelayd gives its UNIX socket
// its group and mode: only the socket this process's user made at that name
// is opened, never what a link there points to, nor a file or another
// account's socket put in its place (a directory such as Postfix's private/
// is another account's to write).

import { closeSync, fstatSync, lchownSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { openOwnSocket } from '../src/safefs.js';
import { tempDir } from './support/tmp.js';

const dir = tempDir();
const servers: Server[] = [];

function bound(name: string): Promise<string> {
  const path = join(dir, name);
  const server = createServer();
  servers.push(server);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve(path));
  });
}

afterAll(() => {
  for (const s of servers) s.close();
});

describe('openOwnSocket', () => {
  it('opens the socket this process bound, as itself', async () => {
    const path = await bound('own');
    const fd = openOwnSocket(path);
    try {
      const st = fstatSync(fd);
      expect(st.isSocket()).toBe(true);
      expect(st.uid).toBe(process.geteuid?.());
    } finally {
      closeSync(fd);
    }
  });

  it('refuses a link at the name, even to a socket of ours: O_PATH with O_NOFOLLOW opens the link itself (ENOTSOCK)', async () => {
    const target = join(dir, 'secret');
    writeFileSync(target, 'ours\n', { mode: 0o600 });
    symlinkSync(target, join(dir, 'to-file'));
    expect(() => openOwnSocket(join(dir, 'to-file'))).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
    symlinkSync(await bound('real'), join(dir, 'to-socket'));
    expect(() => openOwnSocket(join(dir, 'to-socket'))).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
  });

  it('refuses a file of ours, and a socket another account made, in its place (ENOTSOCK)', async () => {
    const file = join(dir, 'file');
    writeFileSync(file, '');
    expect(() => openOwnSocket(file)).toThrow(expect.objectContaining({ code: 'ENOTSOCK' }));
    const other = await bound('other');
    lchownSync(other, 65534, 65534);
    expect(() => openOwnSocket(other)).toThrow(/no longer the socket this process made: another account replaced it/);
  });
});
