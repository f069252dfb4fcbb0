// Logins arriving in the queue directory while a recorder waits for more
// (recorder_idle_seconds): inotify through fs.watch, so that a waiting
// recorder takes no CPU and wakes as the front leaves a login. Only the
// front's names count: the recorder's own records and removals there do not
// wake it.

import { watch, type FSWatcher } from 'node:fs';

/** The front's names (map/queue.ts has the whole pattern). */
const FRONT_NAME = /^f[0-9]/;

export interface Arrivals {
  /** Forgets what arrived so far: call it before looking at the queue. */
  mark(): void;
  /** Resolves true once a login arrived since the last mark (at once if one did), false after `ms`. */
  next(ms: number): Promise<boolean>;
  close(): void;
}

export function watchArrivals(dir: string): Arrivals {
  let arrived = 0;
  let marked = 0;
  let wake: (() => void) | null = null;
  const watcher: FSWatcher = watch(dir, { persistent: true }, (_event, name) => {
    if (name !== null && !FRONT_NAME.test(String(name))) return;
    arrived++;
    wake?.();
  });
  return {
    mark: () => {
      marked = arrived;
    },
    next: (ms) =>
      new Promise((resolve) => {
        if (arrived > marked) return resolve(true);
        const timer = setTimeout(() => done(false), ms);
        const done = (v: boolean): void => {
          clearTimeout(timer);
          wake = null;
          resolve(v);
        };
        wake = () => done(true);
      }),
    close: () => watcher.close(),
  };
}
