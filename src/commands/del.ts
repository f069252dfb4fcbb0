// poprelay del: an address out of the relay set.

import { out } from '../cli.js';
import { addressArg, type Command } from './command.js';

export const DEL_COMMAND: Command = {
  synopsis: 'ADDR',
  summary: 'remove ADDR (both keys of an IPv6 address)',
  usage: `Usage: poprelay del ADDR [--config FILE]

Removes ADDR from the relay map, both keys of an IPv6 address. Exit 1 when it
was not there.`,
  args: ['ADDR'],
  run: async (ctx) => {
    const addr = addressArg(ctx);
    const store = await ctx.store();
    if (!(await store.remove(addr))) {
      process.stderr.write(`poprelay: ${addr.text} is not in ${store.noun}\n`);
      return 1;
    }
    out(`removed ${addr.text}`);
    return 0;
  },
};
