// poprelay flush: every dated entry out at once, after the administrator
// confirms it on the terminal.

import { createInterface } from 'node:readline';

import { out, UsageError } from '../cli.js';
import type { Command } from './command.js';

export const FLUSH_COMMAND: Command = {
  synopsis: '[--yes]',
  summary: 'remove every dated entry, keeping permanent ones',
  usage: `Usage: poprelay flush [--yes] [--config FILE]

Removes every dated entry, keeping permanent ones: nobody may relay until
they log in again. Asks for confirmation on the terminal unless --yes.`,
  args: [],
  options: { yes: { type: 'boolean', short: 'y' } },
  run: async (ctx) => {
    const store = await ctx.store();
    const dated = (await store.entries()).filter((e) => e.time !== null).length;
    if (dated === 0) {
      out(`${store.where}: no dated entries to remove`);
      return 0;
    }
    if (ctx.values.yes !== true) {
      if (!process.stdin.isTTY)
        throw new UsageError('flush needs confirmation: stdin is not a terminal, so give --yes');
      if (!(await confirm(`Remove all ${dated} dated entries from ${store.where} (permanent entries stay)? [y/N] `))) {
        process.stderr.write('poprelay: not flushed\n');
        return 1;
      }
    }
    const report = await store.flushDated();
    out(`${store.where}: removed ${report.removed}, permanent ${report.permanent}`);
    return 0;
  },
};

function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  return new Promise((resolve) => {
    rl.question(question, (answer) => {
      rl.close();
      resolve(/^y(es)?$/i.test(answer.trim()));
    });
  });
}
