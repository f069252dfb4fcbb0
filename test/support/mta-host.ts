// Host B: an MTA host without Dovecot, whose poprelayd answers its MTAs
// from the engine and, with the mirror, keeps its own map of the relay
// set. The cluster tests, the failover test and benchmark, and the cluster
// demo each start one; no vitest here, since the demo bundles it.

import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

import { HOOK_USER } from './dovecot.js';
import { type Sendmail, sendmailConfig } from './peers.js';
import { startPoprelayd, type Daemon } from './poprelayd.js';
import { freePort } from './ports.js';

/** poprelayd's listeners, by the MTA that asks each: Postfix's policy, sendmail's socket map and Exim's readsocket. */
export type Listener = 'policy' | 'socketmap' | 'readsocket';

/** Every listener: the MTA host the cluster tests ask through every MTA. */
export const ALL_LISTENERS: readonly Listener[] = ['policy', 'socketmap', 'readsocket'];

/** Each listener started: inet:127.0.0.1:PORT for policy and socketmap, a unix socket's path for readsocket. */
export type MtaHost<L extends Listener> = Record<L, string> & {
  dir: string;
  /** The map's directory, the hook user's, as poprelay init leaves it. */
  mapDir: string;
  map: string;
  ini: string;
  daemon: Daemon;
};

/**
 * Host B in `dir`: a map directory of the hook user's, and poprelayd with
 * `listeners` against the engine at `engineUrl`, mirroring the relay set
 * into the map with `mirror`.
 */
export async function startMtaHost<L extends Listener>(
  dir: string,
  engineUrl: string,
  listeners: readonly L[],
  mirror: boolean,
): Promise<MtaHost<L>> {
  const mapDir = join(dir, 'map');
  mkdirSync(mapDir, { mode: 0o755 });
  const { stdout: uid } = await execa('id', ['-u', HOOK_USER]);
  const { stdout: gid } = await execa('id', ['-g', HOOK_USER]);
  chownSync(mapDir, Number(uid), Number(gid));
  const map = join(mapDir, 'popip.db');
  const ini = join(dir, 'poprelay.ini');
  const at = {} as Record<L, string>;
  const lines = [`dbfile = ${map}`, 'ignore =', `engine = ${engineUrl}`];
  for (const l of listeners) {
    at[l] = l === 'readsocket' ? join(mapDir, 'exim.sock') : `inet:127.0.0.1:${await freePort()}`;
    lines.push(`${l}_listen = ${l === 'readsocket' ? `unix:${at[l]}` : at[l]}`);
  }
  if (mirror) lines.push('mirror = yes');
  writeFileSync(ini, `${lines.join('\n')}\n`);
  return { ...at, dir, mapDir, map, ini, daemon: await startPoprelayd(ini, listeners.length, mirror) };
}

/** The port of an inet:HOST:PORT listener. */
export const portOf = (listen: string): number => Number(listen.split(':')[2]);

/** Host B's sendmail, asking its poprelayd through the socket map. */
export function hostSendmail(b: MtaHost<'socketmap'>): Promise<Sendmail> {
  return sendmailConfig(b.dir, b.map, `inet:${portOf(b.socketmap)}@127.0.0.1`);
}
