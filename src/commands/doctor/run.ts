// poprelay doctor's runner: checks a live installation, one line per check,
// each problem with its fix. It changes nothing except for the hook check,
// which records a documentation address through the real hook and removes
// it again, both as the hook's user. Each area's checks are a file beside
// this one; a new check is a new file and a line in CHECKS.

import { existsSync } from 'node:fs';
import { dirname } from 'node:path';

import { loadConfig, type Config } from '../../config.js';
import { unixNow } from '../../timefmt.js';
import type { Check } from './check.js';
import { brokenConfigCheck, configCheck, hookConfigPath } from './config.js';
import { dovecotChecks, type DovecotFindings, type HookService } from './dovecot.js';
import { engineChecks } from './engine.js';
import { engineRoleCheck } from './engine-role.js';
import { hookCheck } from './hook.js';
import { queueLineCheck } from './hook-queue.js';
import { liveCheck } from './live-sessions.js';
import { dirPathCheck, mapChecks } from './map.js';
import { mtaCheck } from './mta.js';
import type { DoctorPaths } from './paths.js';
import { poprelaydChecks } from './poprelayd.js';
import { sharedCheck } from './shared.js';
import { sweepCheck } from './sweep.js';

/** What the checks are given: the installation as doctor found it, and what the checks before found. */
interface Findings {
  cfg: Config;
  paths: DoctorPaths;
  /** The config was named (--config, $POPRELAY_CONFIG) rather than taken from the hook's line. */
  named: boolean;
  dovecot: DovecotFindings;
  /** The post-login service that runs the hook, as the user doctor checks as; undefined: none does. */
  hook: HookService | undefined;
  user: string;
  /** The config the hook reads (null: none, the defaults); undefined when no hook runs. */
  hookReads: string | null | undefined;
  earlier: readonly Check[];
}

type Step = (f: Findings) => Check | Check[] | null | Promise<Check[]>;

const passed = (f: Findings, name: string): boolean => f.earlier.find((c) => c.name === name)?.status === 'OK';

/** The checks in the order doctor reports them; a step that does not apply here gives null. */
const CHECKS: readonly Step[] = [
  (f) => configCheck(f.cfg, f.named, f.hookReads, f.user),
  (f) => f.dovecot.checks,
  (f) => mapChecks(f.cfg, f.user),
  (f) => (f.hook === undefined ? null : queueLineCheck(f.cfg, f.hook.hook, f.user)),
  (f) => (existsSync(dirname(f.cfg.map.path)) ? dirPathCheck(f.cfg.map.path) : null),
  (f) => sweepCheck(f.paths),
  (f) => liveCheck(f.cfg),
  (f) => sharedCheck(f.cfg, unixNow()),
  (f) => (f.cfg.engine === null ? null : engineChecks(f.cfg, f.cfg.engine)),
  (f) =>
    f.cfg.engine !== null && passed(f, 'engine') ? engineRoleCheck(f.cfg, f.cfg.engine, f.hook !== undefined) : null,
  (f) => (f.cfg.engine === null ? null : poprelaydChecks(f.cfg)),
  (f) => mtaCheck(f.paths, f.cfg),
  (f) => hookCheck(f.cfg, f.hook, !f.earlier.some((c) => c.name === 'map' && c.status === 'FAIL')),
];

/**
 * `named`: --config or $POPRELAY_CONFIG; without it, doctor checks the
 * file the hook reads, which Dovecot's executable line may name.
 */
export async function runDoctor(named: string | undefined, paths: DoctorPaths): Promise<Check[]> {
  const dovecot = dovecotChecks(paths);
  const user = paths.hookUser ?? dovecot.service?.user ?? 'poprelay';
  const hook = dovecot.service === undefined ? undefined : { ...dovecot.service, user };
  const hookReads = hook === undefined ? undefined : hookConfigPath(hook.hook);
  let cfg: Config;
  try {
    cfg = loadConfig(named ?? hookReads ?? undefined, {});
  } catch (e) {
    return [brokenConfigCheck(e)];
  }
  const earlier: Check[] = [];
  const findings: Findings = { cfg, paths, named: named !== undefined, dovecot, hook, user, hookReads, earlier };
  for (const step of CHECKS) {
    const found = await step(findings);
    if (found !== null) earlier.push(...[found].flat());
  }
  return earlier;
}

export function formatChecks(checks: readonly Check[]): string[] {
  return checks.flatMap((c) => [
    `${c.status.padEnd(4)}  ${c.name}: ${c.detail}`,
    ...(c.fix === undefined ? [] : [`      fix: ${c.fix}`]),
  ]);
}
