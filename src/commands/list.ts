// poprelay list: every entry of the relay set, the logins queued beside the
// map, and the addresses stopped as shared.

import { sortByAddress } from '../address.js';
import { out, outJson, table } from '../cli.js';
import { formatDuration, formatTime } from '../timefmt.js';
import { JSON_OPTION, type Command } from './command.js';
import { describeEntry } from './entry-view.js';
import { sharedAddresses } from './shared-addresses.js';

export const LIST_COMMAND: Command = {
  synopsis: '[--json]',
  summary: 'every entry: address, last login, age, time left or "permanent"',
  usage: `Usage: poprelay list [--json] [--config FILE]

Lists every entry of the relay map, sorted by address: the address (an IPv6
address once, though the map holds two keys for it), the last login, its
age, and the time left before the sweep removes it; "expired" when it is
older than timeout_minutes but not yet swept; "permanent" for entries whose
value is not a number; "invalid value" for all-digit values past the year
2286 (the sweep removes them). Then the logins still queued beside the map
("queued: not yet in the map"), which the next writer or the sweep applies.
With shared_address_users set, last the addresses with more users than that
within timeout_minutes ("shared: N users, may not relay").
  --json   one JSON array instead of the table (queued logins have "queued": true,
           shared addresses "shared": true and "users": N)`,
  args: [],
  options: JSON_OPTION,
  run: async (ctx) => {
    const s = ctx.config().map;
    const store = await ctx.store();
    const items = [
      ...sortByAddress(await store.entries(), (e) => e.address).map((e) => describeEntry(e, ctx.now, s.timeoutSeconds)),
      ...sortByAddress(await store.queued(), (q) => q.address.text).map((q) => ({
        ...describeEntry({ address: q.address.text, keys: q.address.keys, time: q.time }, ctx.now, s.timeoutSeconds),
        queued: true,
      })),
    ];
    const stopped = await sharedAddresses(ctx.config(), ctx.now);
    const shared = sortByAddress([...stopped], ([a]) => a).map(([address, users]) => ({
      address,
      keys: [] as string[],
      shared: true,
      users: users.length,
    }));
    if (ctx.values.json === true) {
      outJson([...items, ...shared]);
      return 0;
    }
    const rows = [['ADDRESS', 'LAST LOGIN', 'AGE', 'LEFT']];
    for (const i of items) {
      if (i.lastLogin === null) rows.push([i.address, '-', '-', 'permanent']);
      else if (i.invalid) rows.push([i.address, '-', '-', 'invalid value: removed by the next sweep']);
      else if (i.queued)
        rows.push([
          i.address,
          formatTime(i.lastLogin),
          formatDuration(Math.max(0, i.ageSeconds ?? 0)),
          'queued: not yet in the map',
        ]);
      else {
        const age = (i.ageSeconds ?? 0) < 0 ? 'future' : formatDuration(i.ageSeconds ?? 0);
        rows.push([
          i.address,
          formatTime(i.lastLogin),
          age,
          i.expired ? 'expired' : formatDuration(i.leftSeconds ?? 0),
        ]);
      }
    }
    for (const sh of shared)
      rows.push([sh.address, '-', '-', `shared: ${sh.users} users, may not relay (poprelay who ${sh.address})`]);
    for (const line of table(rows)) out(line);
    return 0;
  },
};
