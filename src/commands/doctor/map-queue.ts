// doctor's check of the login queue beside the map (dbfile.queue): the
// hook's front leaves logins there, and they must not stay.

import { lstatSync } from 'node:fs';

import type { MapSettings } from '../../config.js';
import { quoteUntrusted } from '../../errors.js';
import { queueDir, readIncoming, readQueue } from '../../map/queue.js';
import { formatAgo, unixNow } from '../../timefmt.js';
import { bad, ok, type Check } from './check.js';

/** How long a login may wait in the queue before doctor calls it stuck: two sweeps. */
const QUEUE_STUCK_SECONDS = 120;

/** Logins wait in the queue only until the next writer; the sweep applies leftovers every minute. */
export function queueCheck(s: MapSettings, user: string): Check {
  let q;
  try {
    q = readQueue(s.path);
  } catch (e) {
    return bad(
      'FAIL',
      'map queue',
      `cannot read ${queueDir(s.path)}: ${(e as Error).message}`,
      `remove it if it is not a directory; ${user} recreates it`,
    );
  }
  if (q.strays.length > 0) {
    return bad(
      'WARN',
      'map queue',
      `${queueDir(s.path)} holds ${q.strays.length} file(s) that are not queued logins, such as ${quoteUntrusted(q.strays[0] ?? '')}`,
      'remove them; only poprelay writes there',
    );
  }
  if (lstatSync(queueDir(s.path), { throwIfNoEntry: false }) === undefined) {
    return bad(
      'WARN',
      'map queue',
      `there is no ${queueDir(s.path)}: the hook's front cannot leave logins there, so every login starts its own Node recorder`,
      `run poprelay init as ${user}`,
    );
  }
  const now = unixNow();
  const waiting = [...q.logins, ...readIncoming(s.path)];
  const oldest = Math.min(...waiting.map((l) => l.time));
  if (waiting.length > 0 && now - oldest > QUEUE_STUCK_SECONDS) {
    return bad(
      'FAIL',
      'map queue',
      `${waiting.length} login(s) queued beside the map, the oldest ${formatAgo(oldest, now)}: the queue is not draining, so those users cannot relay`,
      'run poprelay-sweep by hand and read its error (a damaged or unwritable map?); check that the sweep is scheduled',
    );
  }
  return ok('map queue', `${waiting.length} login(s) queued, none older than ${QUEUE_STUCK_SECONDS} s`);
}
