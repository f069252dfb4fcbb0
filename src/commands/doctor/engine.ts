// doctor's engine checks: the engine of engine = answers, and through
// Sentinel, the node the Sentinels name is the primary.

import type { Config } from '../../config.js';
import { viaSentinel, withoutSecrets, type EngineEndpoint, type EngineNode } from '../../endpoints.js';
import { respCall } from '../../engine/call.js';
import { EngineError, respCallTo, RespError } from '../../engine/resp.js';
import { askSentinels, showNode } from '../../engine/sentinel.js';
import { bad, ok, type Check } from './check.js';

/**
 * How long doctor waits for the engine: engine_timeout_ms is what a login
 * may spend on it; doctor, with nobody waiting, gives a slow engine longer
 * before calling it down.
 */
export function engineWaitMs(cfg: Config): number {
  return Math.max(cfg.engineTimeoutMs, 2000);
}

/** The engine answers; through Sentinel, the primary too. */
export function engineChecks(cfg: Config, engine: EngineEndpoint): Check[] {
  let answers: Check;
  try {
    const [pong, size] = respCall(engine, [['PING'], ['DBSIZE']], engineWaitMs(cfg));
    if (pong !== 'PONG') throw new Error(`PING answered ${withoutSecrets(engine, JSON.stringify(pong))}`);
    answers = ok('engine', `${engine.display} answers (${String(size)} keys in its database)`);
  } catch (e) {
    return [
      bad(
        'FAIL',
        'engine',
        (e as Error).message,
        'start the engine, or correct engine in poprelay.ini (and its password)',
      ),
    ];
  }
  return viaSentinel(engine) ? [answers, sentinelCheck(cfg, engine)] : [answers];
}

/**
 * Through Sentinel: the primary they name, and that it says so (ROLE).
 * Every client sends ROLE beside its first command: a user that may not
 * run it leaves only -READONLY to tell a replica, and the engine logs the
 * refusal in ACL LOG at every login.
 */
function sentinelCheck(cfg: Config, engine: EngineEndpoint & { sentinels: EngineNode[]; service: string }): Check {
  const name = 'engine primary';
  try {
    const primary = askSentinels(engine, performance.now() + engineWaitMs(cfg));
    const [role] = respCallTo(engine, primary, [['ROLE']], engineWaitMs(cfg));
    if (role instanceof RespError) {
      return bad(
        'WARN',
        name,
        `the Sentinels name ${showNode(primary)}; the engine user may not run ROLE (${withoutSecrets(engine, role.message)})`,
        "add +role to this host's engine user (docs/cluster.md): without it, only -READONLY tells a replica from the primary",
      );
    }
    const said = Array.isArray(role) ? String(role[0]) : JSON.stringify(role);
    if (said !== 'master')
      return bad(
        'FAIL',
        name,
        `the Sentinels name ${showNode(primary)}, which says it is a ${said}`,
        'a failover may be under way: run doctor again',
      );
    return ok(name, `the Sentinels of ${engine.service} name ${showNode(primary)}, and it is the primary`);
  } catch (e) {
    const why = e instanceof EngineError ? e.message : String(e);
    return bad('FAIL', name, why, 'check the Sentinels in engine = (HOST:PORT,...) and the service they monitor');
  }
}
