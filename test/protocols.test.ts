// poprelayd's three protocols as framers: what each request means, what is
// answered, and what a malformed or oversized request does.

import { describe, expect, it } from 'vitest';

import { relayIn, requestFor } from '../src/daemon/client.js';
import { framer, ProtocolError, REQUEST_LIMIT, type ProtocolName } from '../src/daemon/protocols.js';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const texts = (r: Array<{ text: string } | null>): Array<string | null> => r.map((a) => a?.text ?? null);

describe('policy delegation', () => {
  it('reads requests split anywhere, several per connection, and answers OK or DUNNO', () => {
    const f = framer('policy');
    expect(f.take(b('request=smtpd_access_policy\nclient_addr'))).toEqual([]);
    expect(texts(f.take(b('ess=192.0.2.7\nsender=a@b\n\nclient_address=2001:DB8::1\n\nrecipient=x\n\n')))).toEqual([
      '192.0.2.7',
      '2001:db8::1',
      null,
    ]);
    expect(f.answer(true)).toBe('action=OK\n\n');
    expect(f.answer(false)).toBe('action=DUNNO\n\n');
  });

  it('takes no malformed address, and refuses an oversized request', () => {
    expect(texts(framer('policy').take(b('client_address=unknown\n\n')))).toEqual([null]);
    expect(() => framer('policy').take(b('x'.repeat(REQUEST_LIMIT.policy + 1)))).toThrow(ProtocolError);
  });
});

describe('socketmap', () => {
  it("canonicalises sendmail's keys (lowercased, IPv6 uncompressed with ipv6:) and Postfix's", () => {
    const f = framer('socketmap');
    const one = (s: string): string => `${s.length}:${s},`;
    const got = f.take(b(one('drac 192.0.2.7') + one('drac ipv6:2001:db8:0:0:0:0:0:1') + one('drac 2001:db8::2')));
    expect(texts(got)).toEqual(['192.0.2.7', '2001:db8::1', '2001:db8::2']);
    expect(f.answer(true)).toBe('5:OK OK,');
    expect(f.answer(false)).toBe('9:NOTFOUND ,');
  });

  it.each([['garbage'], ['12345678:x'], ['3:abc;'], [`${REQUEST_LIMIT.socketmap + 1}:`]])('refuses %j', (input) => {
    expect(() => framer('socketmap').take(b(input))).toThrow(ProtocolError);
  });
});

describe('readsocket', () => {
  it('answers one line, with or without its newline', () => {
    const f = framer('readsocket');
    expect(texts(f.take(b('192.0.2.7\n')))).toEqual(['192.0.2.7']);
    expect(f.once).toBe(true);
    const g = framer('readsocket');
    expect(g.take(b('192.0.2.8'))).toEqual([]);
    expect(texts(g.end())).toEqual(['192.0.2.8']);
    expect(() => framer('readsocket').take(b('1'.repeat(REQUEST_LIMIT.readsocket + 1)))).toThrow(ProtocolError);
  });
});

describe.each(['policy', 'socketmap', 'readsocket'] as ProtocolName[])('%s: the client side agrees', (protocol) => {
  it('reads back what the framer answers, from what it asks', () => {
    const f = framer(protocol);
    expect(texts(f.take(b(requestFor(protocol, '192.0.2.9'))))).toEqual(['192.0.2.9']);
    expect(relayIn(protocol, f.answer(true))).toBe(true);
    expect(relayIn(protocol, f.answer(false))).toBe(false);
  });
});
