// poprelay who ADDRESS: the users behind an address now, from the who
// journal beside the map (who/journal.ts): each user, the service of their last
// login, when, and how many logins within timeout_minutes.

import { out, outJson, table } from '../cli.js';
import { quoteUntrusted } from '../errors.js';
import { formatAgo, formatTime } from '../timefmt.js';
import { readWho, showUser, usersByAddress, type UserSeen } from '../who/journal.js';
import type { Config } from '../config.js';
import type { EngineEndpoint } from '../endpoints.js';
import type { ClientAddress } from '../address.js';
import { addressArg, JSON_OPTION, type Command } from './command.js';

/** The engine's who key for `addr` (every POP/IMAP host's logins), as the journal's users. */
async function fromEngine(
  cfg: Config,
  engine: EngineEndpoint,
  addr: ClientAddress,
  since: number,
): Promise<UserSeen[]> {
  const { connectOnce } = await import('../engine/client.js');
  const { parseEngineWho, whoKey } = await import('../engine/relayset.js');
  const client = await connectOnce(engine);
  try {
    return parseEngineWho(await client.get(whoKey(addr)), since).map((u) => ({
      user: u.user,
      service: u.service,
      last: u.time,
      logins: 0,
    }));
  } finally {
    await client.close();
  }
}

/** The engine's users and this host's journal's, each user once (the later login's service and time). */
function joined(here: readonly UserSeen[], shared: readonly UserSeen[]): UserSeen[] {
  const by = new Map<string, UserSeen>();
  for (const u of [...shared, ...here]) {
    const seen = by.get(u.user);
    if (seen === undefined) by.set(u.user, { ...u });
    else {
      seen.logins += u.logins;
      if (u.last > seen.last) Object.assign(seen, { last: u.last, service: u.service });
    }
  }
  return [...by.values()].sort((a, b) => b.last - a.last);
}

export const WHO_COMMAND: Command = {
  synopsis: 'ADDR [--json]',
  summary: 'the users who logged in from ADDR within timeout_minutes, and their services',
  usage: `Usage: poprelay who ADDR [--json] [--config FILE]

Lists the users who logged in from ADDR within timeout_minutes, from the
who journal beside the map (dbfile.who) and, with engine set, the engine
(every POP/IMAP host's logins): each user, the service of their last login
(the hook's tag, such as pop3), when, and how many logins here. With
shared_address_users set, says whether ADDR has more users than that and
so may not relay. Exit 1 when nobody logged in from ADDR in that time.
User names that are not plain are shown quoted and escaped.
  --json   one JSON object instead of text`,
  args: ['ADDR'],
  options: JSON_OPTION,
  run: async (ctx) => {
    const addr = addressArg(ctx);
    const cfg = ctx.config();
    const since = ctx.now - cfg.map.timeoutSeconds;
    const here = usersByAddress(readWho(cfg.map.path, new Set([addr.text])), since).get(addr.text) ?? [];
    const users = cfg.engine === null ? here : joined(here, await fromEngine(cfg, cfg.engine, addr, since));
    const limit = cfg.sharedAddressUsers;
    const shared = limit !== null && users.length > limit;
    if (ctx.values.json === true) {
      outJson({
        address: addr.text,
        users: users.map((u) => ({ user: u.user, service: u.service, lastLogin: u.last, logins: u.logins })),
        sharedAddressUsers: limit,
        shared,
      });
      return users.length > 0 ? 0 : 1;
    }
    if (users.length === 0) {
      out(`${addr.text}: nobody logged in from it within the last ${cfg.map.timeoutSeconds / 60} minutes`);
      return 1;
    }
    const verdict = shared
      ? `; more than shared_address_users = ${limit}: a shared address, it may not relay`
      : limit !== null
        ? ` (shared_address_users = ${limit})`
        : '';
    out(
      `${addr.text}: ${users.length} user${users.length === 1 ? '' : 's'} within the last ${cfg.map.timeoutSeconds / 60} minutes${verdict}`,
    );
    const rows = [['USER', 'SERVICE', 'LAST LOGIN', 'LOGINS']];
    for (const u of users)
      rows.push([
        showUser(u.user, quoteUntrusted),
        u.service === '' ? '-' : u.service,
        `${formatTime(u.last)} (${formatAgo(u.last, ctx.now)})`,
        u.logins === 0 ? '-' : String(u.logins),
      ]);
    for (const line of table(rows)) out(line);
    return 0;
  },
};
