// poprelay check: whether the MTA would let an address relay now, and why.

import { out } from '../cli.js';
import { formatAgo, formatDuration } from '../timefmt.js';
import { addressArg, type Command } from './command.js';
import { describeEntry } from './entry-view.js';

export const CHECK_COMMAND: Command = {
  synopsis: 'ADDR',
  summary: 'exit 0 if the MTA would let ADDR relay now, 1 if not',
  usage: `Usage: poprelay check ADDR [--config FILE]

Says whether the MTA would let ADDR relay now, that is whether the map holds
it: exit 0 if so, 1 if not, 2 on error. An entry older than timeout_minutes
still counts until the sweep removes it, and the answer says so.`,
  args: ['ADDR'],
  run: async (ctx) => {
    const addr = addressArg(ctx);
    const s = ctx.config().map;
    const store = await ctx.store();
    const entry = await store.entry(addr);
    if (entry === null) {
      const queued = (await store.queued()).filter((q) => q.address.text === addr.text);
      if (queued.length > 0) {
        const last = Math.max(...queued.map((q) => q.time));
        out(
          `${addr.text} may not relay yet: its login ${formatAgo(last, ctx.now)} is queued, not yet in the map (the next writer or the sweep applies it)`,
        );
      } else out(`${addr.text} may not relay: not in ${store.noun}`);
      return 1;
    }
    const d = describeEntry(entry, ctx.now, s.timeoutSeconds);
    const partial = addr.keys.length > entry.keys.length ? ` (only the key ${entry.keys.join(', ')} is present)` : '';
    if (d.permanent) out(`${addr.text} may relay: permanent entry${partial}`);
    else if (d.invalid)
      out(
        `${addr.text} may relay until the next sweep: its value is no possible time (invalid), so the sweep removes it${partial}`,
      );
    else if (d.expired) {
      out(
        `${addr.text} may relay until the next sweep: last login ${formatAgo(entry.time ?? 0, ctx.now)}, expired${partial}`,
      );
    } else {
      out(
        `${addr.text} may relay: last login ${formatAgo(entry.time ?? 0, ctx.now)}, ${formatDuration(d.leftSeconds ?? 0)} left${partial}`,
      );
    }
    return 0;
  },
};
