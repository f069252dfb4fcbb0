// poprelay init: the map and its login queue, made once as the hook's user.

import { out } from '../cli.js';
import { makeQueue } from '../map/queue.js';
import { ensureMap } from '../map/relay-map.js';
import type { Command } from './command.js';

export const INIT_COMMAND: Command = {
  synopsis: '',
  summary: 'create the map if it does not exist (never changes an existing one)',
  usage: `Usage: poprelay init [--config FILE]

Creates an empty map at dbfile, of dbtype and with map_mode, if there is
none, and the login queue beside it (dbfile.queue). An existing map is only
checked (type, readability, NUL-free keys) and never changed. Run it as the
user the Dovecot hook runs as, so that both belong to that user.`,
  args: [],
  run: (ctx) => {
    const s = ctx.config().map;
    if (ensureMap(s)) out(`created ${s.path} (${s.type}, mode ${s.mode.toString(8).padStart(4, '0')})`);
    else out(`${s.path} exists and is a usable ${s.type} map; left as it is`);
    makeQueue(s.path);
    return 0;
  },
};
