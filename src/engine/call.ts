// The short-lived programs' call to the engine (the hook, the sweep's
// seeding, doctor): to the node engine = names, or through its Sentinels to
// the primary. The wire is resp.ts's; finding the primary, sentinel.ts's.

import { viaSentinel, type EngineEndpoint } from '../endpoints.js';
import { respCallTo, type RespValue } from './resp.js';
import { primaryCall, type PrimaryMemory } from './sentinel.js';

/**
 * respCallTo the engine `e` names; through Sentinels, its primary (`memory`
 * keeps the one last found, so that a login costs no question to them).
 */
export function respCall(
  e: EngineEndpoint,
  commands: readonly string[][],
  timeoutMs: number,
  memory?: PrimaryMemory,
): RespValue[] {
  if (viaSentinel(e)) return primaryCall(e, commands, timeoutMs, memory);
  return respCallTo(e, e, commands, timeoutMs);
}
