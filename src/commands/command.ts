// What one of poprelay's commands is, and what the program hands it: each
// command is a file of its own under commands/, and src/poprelay.ts lists
// them in its table, so that a new command is a new file and one line there.

import { parseClientAddress, type ClientAddress } from '../address.js';
import type { OptionSpec, OptionValues } from '../cli.js';
import type { Config } from '../config.js';
import type { RelayStore } from './relay-store.js';

export interface Command {
  /** Its arguments and options as "poprelay --help" lists them after the name ("" for none). */
  synopsis: string;
  /** Its line in "poprelay --help". */
  summary: string;
  /** "poprelay NAME --help". */
  usage: string;
  args: string[];
  options?: OptionSpec;
  run(ctx: Context): number | Promise<number>;
}

export interface Context {
  /** Loaded on first use; root then becomes the map's owner (privilege.ts). */
  config(): Config;
  /** The map, or the shared engine when engine is set; opened on first use. */
  store(): Promise<RelayStore>;
  now: number;
  values: OptionValues;
  args: string[];
}

export const JSON_OPTION = { json: { type: 'boolean' } } satisfies OptionSpec;

/** The ADDR of a command that takes one. */
export function addressArg(ctx: Context): ClientAddress {
  return parseClientAddress(ctx.args[0] ?? '');
}
