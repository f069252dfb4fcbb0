// Under load: 32 writer processes record and re-record thousands of
// addresses (as the hook does) and a sweeper runs again and again, while long-lived readers
// (sendmail -bt, a process holding the map open through our binding) and
// fresh readers (postmap -q, exim -be) keep looking up keys that do not
// change. No reader may ever err or answer wrongly for those keys, and
// every recorded address must be in the final map.

import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';

import { readEntries, readQueued, updateMap } from '../src/map/relay-map.js';
import { expectVerified, makemap, settings } from './support/maps.js';
import {
  checkPeersInstalled,
  eximConfig,
  eximLookup,
  postfixConfig,
  postmapQuery,
  sendmailBt,
  sendmailConfig,
} from './support/peers.js';
import { mapop, type OpResult } from './support/processes.js';
import { safeDir } from './support/tmp.js';

const WRITERS = 32;
const PER_WRITER = 50;

it('readers never err or answer wrongly for unchanged keys while 32 writers and a sweeper run', async () => {
  checkPeersInstalled();
  const dir = safeDir();
  const T = Math.floor(Date.now() / 1000);

  // The fixed keys: permanent (IPv4 and an IPv6 pair), recorded before the
  // load (fresh, so never swept), and keys that must stay absent. Expired
  // entries give the sweeper work.
  const expectKeys: Record<string, string | null> = {};
  const lines: string[] = [];
  for (let i = 1; i <= 20; i++) {
    expectKeys[`192.0.2.${i}`] = 'OK';
    expectKeys[`198.51.100.${i}`] = String(T);
    expectKeys[`203.0.113.${i}`] = null;
  }
  expectKeys['2001:db8:ffff::1'] = 'OK';
  expectKeys['ipv6:2001:db8:ffff:0:0:0:0:1'] = 'OK';
  expectKeys['2001:db8:eeee::1'] = null;
  for (const [k, v] of Object.entries(expectKeys)) if (v !== null) lines.push(`${k} ${v}`);
  for (let i = 0; i < 1500; i++) lines.push(`10.200.${i >> 8}.${i & 255} ${T - 7200}`);
  const map = await makemap(dir, 'popip', lines);
  chmodSync(map, 0o644);
  const expectFile = join(dir, 'expect.json');
  writeFileSync(expectFile, JSON.stringify(expectKeys));
  const stopFile = join(dir, 'stop');

  const sm = await sendmailConfig(dir, map);
  const pf = postfixConfig(dir, map);
  const ex = eximConfig(dir, map);
  const keys = Object.keys(expectKeys);
  let sweeps = 0;
  const problems: string[] = [];
  let done = false;
  const readsSoFar = { sendmail: 0, fresh: 0 };

  // Long-lived: one sendmail -bt process answering /map lookups in rounds.
  const sendmailReader = (async () => {
    const bt = sendmailBt(sm);
    let buf = '';
    bt.stdout?.setEncoding('latin1');
    bt.stdout?.on('data', (d: string) => (buf += d));
    let rounds = 0;
    while (!done || rounds === 0) {
      buf = '';
      bt.stdin?.write(keys.map((k) => `/map drac ${k}\n`).join(''));
      const deadline = Date.now() + 10_000;
      while ((buf.match(/map_lookup: /g) ?? []).length < keys.length && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 5));
      const answers = [...buf.matchAll(/map_lookup: drac \(([^)]*)\) (returns (\S*) \((\d+)\)|no match \((\d+)\))/g)];
      if (answers.length !== keys.length)
        problems.push(`sendmail -bt: ${answers.length} answers to ${keys.length} lookups: ${buf.slice(0, 300)}`);
      for (const a of answers) {
        const status = a[4] ?? a[5];
        const got = a[3] ?? null;
        if (status !== '0') problems.push(`sendmail -bt: ${a[1]}: status ${status}`);
        if (got !== expectKeys[a[1] ?? ''])
          problems.push(`sendmail -bt: ${a[1]}: got ${got}, want ${expectKeys[a[1] ?? '']}`);
      }
      rounds++;
      readsSoFar.sendmail = rounds;
    }
    bt.stdin?.end();
    return rounds;
  })();

  // Long-lived: a handle opened once through our binding.
  const holder = mapop(['hold', map, expectFile, stopFile]);

  // Fresh readers, one lookup per process, round-robin over the keys.
  const freshReaders = (async () => {
    let n = 0;
    while (!done || n === 0) {
      const key = keys[n % keys.length] ?? '';
      const want = expectKeys[key] ?? null;
      try {
        const pv = await postmapQuery(pf, map, key);
        if (pv !== want) problems.push(`postmap -q ${key}: got ${pv}, want ${want}`);
        const ev = await eximLookup(ex, map, key);
        if (ev !== (want !== null)) problems.push(`exim -be ${key}: got ${ev}, want ${want !== null}`);
      } catch (e) {
        problems.push(`fresh reader error: ${(e as Error).message}`);
      }
      n++;
      readsSoFar.fresh = n;
    }
    return n;
  })();

  // The load: 32 writers recording logins as the hook does (queued, then
  // applied by whoever holds the lock), each its 50 addresses twice per
  // round, and a sweeper. Writers go on, round after round, until every
  // kind of reader has looked a few times under load: an outcome, not a
  // duration.
  const enoughReads = (): boolean => readsSoFar.sendmail >= 3 && readsSoFar.fresh >= 3 && sweeps >= 2;
  const writers = Array.from({ length: WRITERS }, async (_, p) => {
    const addrs = Array.from({ length: PER_WRITER }, (_, i) => `10.${100 + p}.0.${i + 1}`);
    const rounds: OpResult[] = [];
    do rounds.push(await mapop(['queue', map, String(T), ...addrs, ...addrs]));
    while (!enoughReads());
    return rounds;
  });
  const sweeper = (async () => {
    while (!done) {
      const r = await mapop(['sweep', map, String(Math.floor(Date.now() / 1000)), '900', '100']);
      if (r.error !== undefined) problems.push(`sweep: ${r.error}`);
      sweeps++;
    }
  })();

  const results = (await Promise.all(writers)).flat();
  done = true;
  writeFileSync(stopFile, '');
  const [smRounds, fresh, held] = await Promise.all([sendmailReader, freshReaders, holder, sweeper]);

  expect(results.filter((r) => r.ok !== PER_WRITER * 2)).toEqual([]);
  expect(problems).toEqual([]);
  expect(held.error).toBeUndefined();
  expect((held.ok as { wrong: unknown[] }).wrong).toEqual([]);
  // The readers really overlapped the load.
  expect(smRounds).toBeGreaterThan(1);
  expect(fresh).toBeGreaterThan(1);
  expect((held.ok as { lookups: number }).lookups).toBeGreaterThan(keys.length);
  expect(sweeps).toBeGreaterThan(1);

  await expectVerified(map);
  updateMap(settings(dir), () => false); // what a writer left queued, as the next writer or sweep would
  expect(readQueued(settings(dir))).toEqual([]);
  await expectVerified(map);
  const final = new Map(readEntries(settings(dir)).map((e) => [e.address, e.time]));
  for (let p = 0; p < WRITERS; p++) {
    for (let i = 1; i <= PER_WRITER; i++) expect(final.get(`10.${100 + p}.0.${i}`), `10.${100 + p}.0.${i}`).toBe(T);
  }
  expect([...final.keys()].filter((a) => a.startsWith('10.200.'))).toEqual([]); // the sweeper did its work
  console.log(
    `load: ${results.length * PER_WRITER * 2} writes, ${sweeps} sweeps, ${smRounds} sendmail rounds, ${fresh} fresh lookups`,
  );
}, 300_000);
