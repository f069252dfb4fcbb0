// Sentinel's failover notice (+switch-master on a Sentinel's pub/sub) for
// the long-lived clients: the moment the Sentinels promote a replica, not
// at the next second's question. One Sentinel at a time; when its
// connection ends, the next one after a pause. A notice missed while
// disconnected is what the question every second is for.

import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

import { tlsOptions } from './node-client.js';
import type { EngineEndpoint, EngineNode } from '../endpoints.js';
import { encodeCommand, parseReply, RespError } from './resp.js';

const RETRY_MS = 1000;

/**
 * Calls `switched` with the new primary each time a Sentinel announces
 * that `e.service` moved; `sentinels()` gives the ones to listen to.
 */
export function watchFailovers(
  e: EngineEndpoint & { service: string },
  sentinels: () => readonly EngineNode[],
  switched: (to: EngineNode) => void,
): { stop(): void } {
  let socket: Socket | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let next = 0;
  const listen = (): void => {
    const list = sentinels();
    const at = list[next++ % Math.max(1, list.length)];
    if (stopped || at === undefined) return;
    const s: Socket =
      e.tls === undefined
        ? netConnect({ host: at.host, port: at.port })
        : tlsConnect({ host: at.host, port: at.port, ...tlsOptions(e, at.host) });
    socket = s;
    const auth =
      e.password === undefined
        ? []
        : [e.username === undefined ? ['AUTH', e.password] : ['AUTH', e.username, e.password]];
    s.once(e.tls === undefined ? 'connect' : 'secureConnect', () =>
      s.write(Buffer.concat([...auth, ['SUBSCRIBE', '+switch-master']].map(encodeCommand))),
    );
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      try {
        for (let r = parseReply(buf); r !== null; r = parseReply(buf)) {
          buf = buf.subarray(r.next);
          const v = r.value;
          // A refused AUTH matters only if the Sentinel then refuses SUBSCRIBE (sentinelRefusal).
          if (v instanceof RespError && /^NOAUTH\b/.test(v.message)) s.destroy();
          if (!Array.isArray(v) || v[0] !== 'message' || typeof v[2] !== 'string') continue;
          // "<service> <old-ip> <old-port> <new-ip> <new-port>"
          const [name, , , host, port] = v[2].split(' ');
          if (name === e.service && host !== undefined && port !== undefined) switched({ host, port: Number(port) });
        }
      } catch {
        s.destroy();
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      if (socket === s && !stopped) timer = setTimeout(listen, RETRY_MS);
    });
  };
  listen();
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
      socket?.destroy();
    },
  };
}
