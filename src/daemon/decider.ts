// poprelayd's decision on one MTA request: the relay set's answer
// (answers.ts), then user_limit for a Postfix policy request that would
// relay, then one audit line naming every user behind the client's address
// (audit.ts). Nothing here can turn a no into a yes; user_limit only turns a
// yes into the configured action.

import type { Answers } from './answers.js';
import { auditLine, type AuditDecision, type AuditFields } from './audit.js';
import type { DaemonLog } from './log.js';
import type { Decision, ProtocolName, Request } from './protocols.js';
import type { Config, UserLimit } from '../config.js';
import { overLimit, type Counter } from './user-limit.js';
import { isPlainUser } from '../users.js';

/** Who is behind an address: the users who logged in from it within the timeout, latest first. */
export interface WhoSource {
  users(address: string, nowSeconds: number): string[] | Promise<string[]>;
}

/** The deferral a recipient over user_limit gets: Postfix answers it 450 4.7.1 unless the recipient is local. */
function deferAction(limit: UserLimit, user: string): string {
  const who = isPlainUser(user) ? user : 'this user';
  return `DEFER_IF_REJECT 4.7.1 ${who} sent more than ${limit.max} recipients in ${limit.text.split('/')[1]} (poprelay user_limit = ${limit.text}); try again later`;
}

export class Decider {
  constructor(
    private readonly cfg: Pick<Config, 'auditLog' | 'userLimit' | 'userLimitAction'>,
    private readonly answers: Pick<Answers, 'ask'>,
    private readonly who: WhoSource,
    private readonly counter: Counter,
    private readonly log: DaemonLog,
    /** Where each relay decision counts for the users behind the address (poprelay report); null: not counted. */
    private readonly counts: { add(users: readonly string[], nowSeconds: number): void } | null = null,
    private readonly now: () => number = Date.now,
  ) {}

  async decide(protocol: ProtocolName, req: Request): Promise<Decision> {
    const nowSeconds = Math.floor(this.now() / 1000);
    if (req.addr === null) {
      this.audit({ protocol, client: null, decision: 'no', users: [], fields: req.fields });
      return { relay: false };
    }
    // Asked together: the who lookup (one more GET in the engine) adds no wait to the answer. Without the
    // audit line, user_limit and the relay counts nobody needs the names.
    let named: string[] | Promise<string[]> = [];
    if (this.cfg.auditLog || this.cfg.userLimit !== null || this.counts !== null) {
      try {
        const u = this.who.users(req.addr.text, nowSeconds);
        named = Array.isArray(u) ? u : u.catch((): string[] => []); // handled at once, not only once awaited
      } catch {
        named = []; // nobody named: the decision stands
      }
    }
    const { relay, cached } = await this.answers.ask(req.addr);
    const users = Array.isArray(named) ? named : await named;
    const limit = this.cfg.userLimit;
    let decision: Decision = { relay };
    let said: AuditDecision = relay ? 'relay' : 'no';
    let over: string | null = null;
    const limited = users.includes('') ? users.filter((u) => u !== '') : users;
    if (relay && limit !== null && protocol === 'policy' && req.fields.recipient !== undefined && limited.length > 0) {
      try {
        over = await overLimit(limit, this.counter, limited, nowSeconds);
      } catch (e) {
        this.log.limited(
          'warning',
          'user-limit-counter',
          `user_limit not applied: the counter failed (${e instanceof Error ? e.message : String(e)}); relaying as if no limit were set`,
        );
      }
      if (over !== null) {
        decision =
          this.cfg.userLimitAction === 'defer' ? { relay: false, action: deferAction(limit, over) } : { relay: false };
        said = this.cfg.userLimitAction;
      }
    }
    if (said === 'relay' && limited.length > 0) this.counts?.add(limited, nowSeconds);
    const a: AuditFields = { protocol, client: req.addr.text, decision: said, users, fields: req.fields };
    if (cached) a.from = 'cache';
    if (over !== null && limit !== null) {
      a.limit = limit.text;
      a.over = over;
    }
    this.audit(a);
    return decision;
  }

  private audit(a: AuditFields): void {
    if (this.cfg.auditLog || a.decision === 'defer' || a.decision === 'refuse')
      this.log.soonEscaped('info', auditLine(a));
  }
}
