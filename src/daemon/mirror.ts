// mirror = yes: poprelayd keeps this host's map (dbfile) equal to the shared
// set, for MTAs whose configuration keeps its map lookups. The engine's
// keyspace notifications say what changed; they are lost while the mirror
// is disconnected, so every (re)connection starts with a full resync: the
// whole set read, then written in one copy (with the login queue, through
// the same writer as the hook). A lost engine changes nothing in the map:
// only a resync with the engine back removes what it no longer holds.

import type { Config } from '../config.js';
import type { DaemonLog } from './log.js';
import { keepConnected, readSharedSet, type EngineClient } from '../engine/client.js';
import type { EngineEndpoint } from '../endpoints.js';
import { mirrorEntries, type MirroredEntry } from '../map/relay-map.js';
import { addressOfEngineKey, keyspaceChannel } from '../engine/relayset.js';
import { entryTime } from '../map/values.js';

/** Notifications are applied in batches this often: one copy of the map for many changes. */
export const BATCH_MS = 50;
/** What the engine must notify: keyspace events (K) for generic (g), string ($) and expired (x) commands. */
const NOTIFY_FLAGS = ['K', 'g', '$', 'x'];

export class Mirror {
  private readonly sub: EngineClient;
  private pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private synced = false;

  constructor(
    private readonly cfg: Config,
    engine: EngineEndpoint,
    private readonly client: EngineClient,
    private readonly log: DaemonLog,
    private readonly forget: (addressText: string) => void,
  ) {
    this.sub = keepConnected(engine, (line) => log.say('info', `mirror: ${line}`));
    // After every (re)connection: notifications first, then the full read, so that nothing falls between.
    // node-redis subscribes again by itself after a reconnection.
    const channel = keyspaceChannel(engine.db);
    let subscribed = false;
    this.sub.on('ready', () => {
      const first = subscribed ? Promise.resolve() : this.sub.pSubscribe(channel, (event, ch) => this.noted(event, ch));
      subscribed = true;
      void first
        .then(() => this.resync())
        .catch((e: Error) => log.say('error', `mirror: cannot subscribe: ${e.message}`));
    });
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    await this.sub.close().catch(() => undefined);
  }

  private noted(event: string, channel: string): void {
    const key = channel.slice(channel.indexOf(':') + 1);
    // The who keys change at each login and user_limit's count keys at each counted recipient, on the
    // same channel: none is an entry, so none costs this map a read.
    const addr = addressOfEngineKey(key);
    if (addr === null) return;
    if (event === 'del' || event === 'expired') this.forget(addr.text);
    this.pending.add(key);
    this.timer ??= setTimeout(() => void this.flush(), BATCH_MS);
  }

  private async resync(): Promise<void> {
    this.synced = false;
    try {
      // The main client asks the engine: wait for it too (it reconnects on its own schedule).
      for (let i = 0; i < 50 && !this.client.isReady; i++) await new Promise((r) => setTimeout(r, 100));
      await this.ensureNotifications();
      const shared = await readSharedSet(this.client);
      const changed = mirrorEntries(
        this.cfg.map,
        shared.map((e) => ({ addr: e.addr, time: e.time })),
        true,
      );
      this.synced = true;
      this.log.say(
        'info',
        `mirror: resynced ${this.cfg.map.path} with the shared set: ${shared.length} entries, ${changed} changed`,
      );
    } catch (e) {
      this.log.say(
        'error',
        `mirror: resync of ${this.cfg.map.path} failed: ${(e as Error).message}; trying again at the next connection`,
      );
    }
  }

  /**
   * The engine must publish keyspace events for our keys: added to its
   * setting if missing. The read role (docs/cluster.md) may not run CONFIG:
   * then the engine's administrator sets it, and this only says so.
   */
  private async ensureNotifications(): Promise<void> {
    let current: string;
    try {
      current = (await this.client.configGet('notify-keyspace-events'))['notify-keyspace-events'] ?? '';
    } catch (e) {
      const why = (e as Error).message;
      this.log.say(
        /^NOPERM\b/.test(why) ? 'info' : 'warning',
        `mirror: notify-keyspace-events not checked (${why}): the engine's configuration must include Kg$x, ` +
          'or this map learns of changes only when the mirror resyncs',
      );
      return;
    }
    try {
      const missing = NOTIFY_FLAGS.filter((f) => !current.includes(f) && !(f !== 'K' && current.includes('A')));
      if (missing.length > 0) await this.client.configSet('notify-keyspace-events', `${current}${missing.join('')}`);
    } catch (e) {
      this.log.say(
        'warning',
        `mirror: cannot make the engine notify changes (notify-keyspace-events = "${current}": ` +
          `${(e as Error).message}); set it to include Kg$x in the engine's configuration`,
      );
    }
  }

  private async flush(): Promise<void> {
    this.timer = undefined;
    const keys = [...this.pending];
    this.pending = new Set();
    if (keys.length === 0 || !this.synced) return; // the resync under way reads them anyway
    try {
      const values = await this.client.mGet(keys);
      const entries: MirroredEntry[] = [];
      keys.forEach((key, i) => {
        const addr = addressOfEngineKey(key);
        if (addr === null) return;
        // Gone from the engine, or a value that is no time (invalid): removed here too.
        const value = values[i];
        const time = value === null || value === undefined ? 0 : entryTime(value);
        entries.push({ addr, time: time === 0 ? undefined : time });
      });
      mirrorEntries(this.cfg.map, entries, false);
    } catch (e) {
      this.log.say(
        'error',
        `mirror: could not apply ${keys.length} change(s) to ${this.cfg.map.path}: ${(e as Error).message}`,
      );
      for (const key of keys) this.pending.add(key);
      this.timer ??= setTimeout(() => void this.flush(), 1000);
    }
  }
}
