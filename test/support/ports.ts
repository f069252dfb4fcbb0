// A loopback port nobody listens on, for the peers each test starts.

import { createServer } from 'node:net';

/** A port the kernel just handed out on 127.0.0.1, closed again for the caller to listen on. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
    });
  });
}
