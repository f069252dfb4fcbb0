// poprelayd's view of who is behind an address, from the who journal
// beside this host's map (who/journal.ts) where the POP/IMAP server shares the host:
// the journal is read as it grows, only its new bytes each time, and read
// again from the start when the sweep has replaced it, and looked at only
// when the directory says it changed (inotify), or after LOOK_AGAIN_MS. A
// journal that is not there or cannot be read names nobody; it never
// changes a decision.

import { closeSync, lstatSync, readSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';

import { openRegular } from '../safefs.js';
import { parseLine, whoFile } from '../who/journal.js';

/** Without word of a change from the directory, the journal is looked at again after this long. */
export const LOOK_AGAIN_MS = 1000;

export class LocalWho {
  /** address -> user -> last login (Unix seconds) */
  private readonly index = new Map<string, Map<string, number>>();
  private ino = -1;
  private offset = 0;
  private partial = '';
  private versionNow = 0;
  /** The directory said the journal changed (inotify): look at it before the next answer. */
  private changed = true;
  private lookedAt = 0;
  private readonly watcher: FSWatcher | null;

  constructor(
    dbfile: string,
    private readonly timeoutSeconds: number,
    private readonly path = whoFile(dbfile),
    private readonly now: () => number = Date.now,
  ) {
    // A look at the file for every answer would be a system call per answer; the
    // directory's word that the journal changed costs nothing until it does.
    let watcher: FSWatcher | null;
    try {
      const name = basename(this.path);
      watcher = watch(dirname(this.path), { persistent: false }, (_event, file) => {
        if (file === null || file === name || file.startsWith(`${name}.`)) this.changed = true;
      });
      watcher.on('error', () => undefined);
    } catch {
      watcher = null; // no directory (an MTA host without a map): looked at once in a while
    }
    this.watcher = watcher;
  }

  close(): void {
    this.watcher?.close();
  }

  /** Goes up whenever the journal gave new lines (or was replaced): what was read of it may have changed. */
  version(): number {
    this.catchUp();
    return this.versionNow;
  }

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
    const t = this.now();
    if (!this.changed && t - this.lookedAt < LOOK_AGAIN_MS) return;
    this.changed = false;
    this.lookedAt = t;
    const st = lstatSync(this.path, { throwIfNoEntry: false });
    if (st === undefined || !st.isFile()) return;
    if (st.ino !== this.ino || st.size < this.offset) {
      // Compacted by the sweep (a new file at the name): what is still in time is in the new one.
      this.index.clear();
      this.versionNow++;
      this.ino = st.ino;
      this.offset = 0;
      this.partial = '';
    }
    if (st.size === this.offset) return;
    this.versionNow++;
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
      const l = parseLine(line);
      if (l === null) continue;
      let users = this.index.get(l.a);
      if (users === undefined) this.index.set(l.a, (users = new Map()));
      if ((users.get(l.u) ?? -1) < l.t) users.set(l.u, l.t);
    }
  }
}
