// poprelayd's view of who is behind an address, from the who journal
// beside this host's map (who.ts) where the POP/IMAP server shares the host:
// the journal is read as it grows, only its new bytes each time, and read
// again from the start when the sweep has replaced it. A journal that is not
// there or cannot be read names nobody; it never changes a decision.

import { closeSync, lstatSync, readSync } from 'node:fs';

import { openRegular } from './safefs.js';
import { whoFile } from './who.js';

export class LocalWho {
  /** address -> user -> last login (Unix seconds) */
  private readonly index = new Map<string, Map<string, number>>();
  private ino = -1;
  private offset = 0;
  private partial = '';

  constructor(
    dbfile: string,
    private readonly timeoutSeconds: number,
    private readonly path = whoFile(dbfile),
  ) {}

  /** The users who logged in from `address` within the timeout, latest first. */
  users(address: string, now: number): string[] {
    this.catchUp();
    const users = this.index.get(address);
    if (users === undefined) return [];
    const since = now - this.timeoutSeconds;
    const out: Array<[string, number]> = [];
    for (const [u, t] of users) {
      if (t >= since) out.push([u, t]);
      else users.delete(u);
    }
    if (users.size === 0) this.index.delete(address);
    return out.sort((a, b) => b[1] - a[1]).map(([u]) => u);
  }

  private catchUp(): void {
    const st = lstatSync(this.path, { throwIfNoEntry: false });
    if (st === undefined || !st.isFile()) return;
    if (st.ino !== this.ino || st.size < this.offset) {
      // Compacted by the sweep (a new file at the name): what is still in time is in the new one.
      this.index.clear();
      this.ino = st.ino;
      this.offset = 0;
      this.partial = '';
    }
    if (st.size === this.offset) return;
    let text: string;
    try {
      const { fd } = openRegular(this.path);
      try {
        const buf = Buffer.alloc(Math.min(st.size - this.offset, 64 << 20));
        const n = readSync(fd, buf, 0, buf.length, this.offset);
        this.offset += n;
        text = this.partial + buf.toString('utf8', 0, n);
      } finally {
        closeSync(fd);
      }
    } catch {
      return;
    }
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        const o = JSON.parse(line) as { t?: unknown; a?: unknown; u?: unknown };
        if (typeof o.t !== 'number' || typeof o.a !== 'string') continue;
        const u = typeof o.u === 'string' ? o.u : '';
        let users = this.index.get(o.a);
        if (users === undefined) this.index.set(o.a, (users = new Map()));
        if ((users.get(u) ?? -1) < o.t) users.set(u, o.t);
      } catch {
        // not a line of ours
      }
    }
  }
}
