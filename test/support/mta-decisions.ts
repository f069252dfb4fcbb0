// What each MTA on host B decides for a client, asked the way each asks
// poprelayd, and whether host B's mirrored map holds it.

import { parseClientAddress } from '../../src/address.js';
import { askDaemon } from '../../src/daemon/client.js';
import { parseListen } from '../../src/endpoints.js';
import { readEntries } from '../../src/map/relay-map.js';
import { settings } from './maps.js';
import { hostSendmail, type Listener, type MtaHost } from './mta-host.js';
import { eximConfig, eximRelays, postfixConfig, postmapSocketmap, sendmailDecisions } from './peers.js';

export interface Decisions {
  sendmail: boolean | undefined;
  policy: boolean;
  postfix: boolean;
  exim: boolean;
  mirrored: boolean;
}

export const ALL_YES: Decisions = { sendmail: true, policy: true, postfix: true, exim: true, mirrored: true };
export const ALL_NO: Decisions = { sendmail: false, policy: false, postfix: false, exim: false, mirrored: false };

/** What each MTA on host B decides for a client address (IPv4 dotted, or IPv6 compressed). */
export async function decisions(b: MtaHost<Listener>, address: string): Promise<Decisions> {
  const addr = parseClientAddress(address);
  const sendmailKey = addr.family === 4 ? address : `IPv6:${addr.keys[0]?.slice(5) ?? ''}`;
  const [sendmail] = await sendmailDecisions(await hostSendmail(b), [sendmailKey]);
  const policy = await askDaemon('policy', parseListen(b.policy)!, address, 5000);
  const postfix = await postmapSocketmap(postfixConfig(b.dir, b.map), b.socketmap, address);
  const exim = await eximRelays(eximConfig(b.dir, b.map, b.readsocket), address);
  const mirrored = readEntries(settings(b.mapDir)).some((e) => e.address === addr.text);
  return { sendmail: sendmail?.relay, policy, postfix: postfix !== null, exim, mirrored };
}
