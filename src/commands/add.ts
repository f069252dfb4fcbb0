// poprelay add: an address recorded by hand, as a login or for good.

import { out } from '../cli.js';
import { formatDuration } from '../timefmt.js';
import { addressArg, type Command } from './command.js';

export const ADD_COMMAND: Command = {
  synopsis: 'ADDR [--permanent]',
  summary: 'record ADDR as if it had just logged in; --permanent: never expires',
  usage: `Usage: poprelay add ADDR [--permanent] [--config FILE]

Records ADDR as if it had just logged in (it may relay for timeout_minutes),
or with --permanent as a permanent entry (value OK) that the sweep never
removes. The same address rules and locking as the Dovecot hook apply; the
ignore list does not (you asked for this address).`,
  args: ['ADDR'],
  options: { permanent: { type: 'boolean' } },
  run: async (ctx) => {
    const addr = addressArg(ctx);
    const s = ctx.config().map;
    const store = await ctx.store();
    if (ctx.values.permanent === true) {
      await store.putPermanent(addr);
      out(`added ${addr.text} (permanent)`);
      return 0;
    }
    if ((await store.record(addr, ctx.now)) === 'permanent') {
      out(`${addr.text} has a permanent entry, left as it is (remove it with: poprelay del ${addr.text})`);
    } else out(`added ${addr.text} (may relay for ${formatDuration(s.timeoutSeconds)})`);
    return 0;
  },
};
