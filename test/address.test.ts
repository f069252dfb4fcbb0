import { SocketAddress } from 'node:net';
import { describe, expect, it } from 'vitest';

import {
  addressOfKey,
  compressIPv6,
  inNetwork,
  parseClientAddress,
  parseNetwork,
  type Network,
} from '../src/address.js';
import { PoprelayError } from '../src/errors.js';
import { thrown } from './support/errors.js';
import { hostileCases } from './support/hostile.js';

describe('parseClientAddress accepts', () => {
  it.each([
    ['192.0.2.7', 4, '192.0.2.7', ['192.0.2.7']],
    ['1.2.3.4', 4, '1.2.3.4', ['1.2.3.4']],
    ['10.0.0.0', 4, '10.0.0.0', ['10.0.0.0']],
    ['127.0.0.1', 4, '127.0.0.1', ['127.0.0.1']],
    ['223.255.255.255', 4, '223.255.255.255', ['223.255.255.255']],
    ['::ffff:192.0.2.7', 4, '192.0.2.7', ['192.0.2.7']],
    ['::FFFF:192.0.2.7', 4, '192.0.2.7', ['192.0.2.7']],
    ['::ffff:c000:0207', 4, '192.0.2.7', ['192.0.2.7']],
    ['0:0:0:0:0:ffff:c000:207', 4, '192.0.2.7', ['192.0.2.7']],
    ['2001:db8::1', 6, '2001:db8::1', ['ipv6:2001:db8:0:0:0:0:0:1', '2001:db8::1']],
    ['2001:DB8::1', 6, '2001:db8::1', ['ipv6:2001:db8:0:0:0:0:0:1', '2001:db8::1']],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', 6, '2001:db8::1', ['ipv6:2001:db8:0:0:0:0:0:1', '2001:db8::1']],
    ['::1', 6, '::1', ['ipv6:0:0:0:0:0:0:0:1', '::1']],
    ['fe80::1', 6, 'fe80::1', ['ipv6:fe80:0:0:0:0:0:0:1', 'fe80::1']],
    ['2001:db8:0:1:1:1:1:1', 6, '2001:db8:0:1:1:1:1:1', ['ipv6:2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1']],
    ['2001:0:0:1:0:0:0:1', 6, '2001:0:0:1::1', ['ipv6:2001:0:0:1:0:0:0:1', '2001:0:0:1::1']],
    ['2001:db8:0:0:1:0:0:1', 6, '2001:db8::1:0:0:1', ['ipv6:2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1']],
    ['64:ff9b::192.0.2.33', 6, '64:ff9b::c000:221', ['ipv6:64:ff9b:0:0:0:0:c000:221', '64:ff9b::c000:221']],
    ['2001:db8::', 6, '2001:db8::', ['ipv6:2001:db8:0:0:0:0:0:0', '2001:db8::']],
  ])('%s', (input, family, text, keys) => {
    expect(parseClientAddress(input)).toEqual({ family, text, keys });
  });
});

describe('parseClientAddress rejects', () => {
  it.each([
    ['', /empty/],
    [' 1.2.3.4', /white space/],
    ['1.2.3.4 ', /white space/],
    ['1.2.3.4\n5.6.7.8', /white space/],
    ['1.2.3.4\u0000', /unexpected character/],
    ['[2001:db8::1]', /brackets/],
    ['fe80::1%eth0', /zone ids/],
    ['192.0.2.0/24', /CIDR/],
    ['010.1.1.1', /leading zero/],
    ['1.2.3.04', /leading zero/],
    ['256.1.1.1', /out of range/],
    ['1.2.3', /dotted quad/],
    ['1.2.3.4.5', /dotted quad/],
    ['1..2.3', /dotted quad/],
    ['mail.example.com', /unexpected character/],
    ['localhost', /unexpected character/],
    ['*', /unexpected character/],
    ['\u0661.2.3.4', /unexpected character/],
    ['１.2.3.4', /unexpected character/],
    ['0.0.0.0', /this network/],
    ['0.1.2.3', /this network/],
    ['255.255.255.255', /broadcast/],
    ['240.0.0.1', /reserved/],
    ['224.0.0.1', /multicast/],
    ['239.255.255.250', /multicast/],
    ['::', /unspecified/],
    ['::ffff:0.0.0.0', /this network/],
    ['::ffff:224.0.0.1', /multicast/],
    ['ff02::1', /multicast/],
    ['::192.0.2.7', /IPv4-compatible/],
    ['::2', /IPv4-compatible/],
    ['1::2::3', /only once/],
    ['1:2:3:4:5:6:7', /7 groups/],
    ['1:2:3:4:5:6:7:8:9', /9 groups/],
    ['1:2:3:4::5:6:7:8', /too many groups/],
    ['12345::1', /bad group/],
    ['2001:db8:::1', /empty group|bad group/],
    [':1:2:3:4:5:6:7', /empty group/],
    ['2001:db8::1.2.3.4.5', /embedded IPv4/],
    ['1.2.3.4:5', /bad group|embedded/],
    ['x'.repeat(10000), /longer than 45/],
  ])('%j', (input, why) => {
    const err = thrown(() => parseClientAddress(input));
    expect(err).toBeInstanceOf(PoprelayError);
    expect((err as PoprelayError).code).toBe('ERR_BAD_ADDRESS');
    expect((err as PoprelayError).message).toMatch(why);
    // The message never carries raw control characters or unbounded input.
    expect((err as PoprelayError).message).not.toMatch(/[\u0000-\u001f]/);
    expect((err as PoprelayError).message.length).toBeLessThan(300);
  });
});

it.each(hostileCases())('the hostile value %s is refused', (_, input) => {
  expect(() => parseClientAddress(input)).toThrow(PoprelayError);
});

describe('compressIPv6 follows RFC 5952', () => {
  it.each([
    [[0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], '2001:db8::1'],
    [[0x2001, 0xdb8, 0, 1, 1, 1, 1, 1], '2001:db8:0:1:1:1:1:1'], // a single zero group stays
    [[0x2001, 0, 0, 1, 0, 0, 0, 1], '2001:0:0:1::1'], // the longest run
    [[0x2001, 0xdb8, 0, 0, 1, 0, 0, 1], '2001:db8::1:0:0:1'], // the first of equal runs
    [[0, 0, 0, 0, 0, 0, 0, 0], '::'],
    [[1, 0, 0, 0, 0, 0, 0, 0], '1::'],
    [[0xabcd, 0xef, 1, 2, 3, 4, 5, 6], 'abcd:ef:1:2:3:4:5:6'],
  ])('%j -> %s', (groups, text) => {
    expect(compressIPv6(groups)).toBe(text);
  });
});

it('writes the same IPv6 text as inet_ntop, which Postfix and Exim see, for 20,000 zero-heavy addresses', () => {
  // A fixed-seed generator: groups are mostly 0 so that runs of every length occur.
  let seed = 12345;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let n = 0; n < 20_000; n++) {
    const groups = Array.from({ length: 8 }, () => (rnd() < 0.6 ? 0 : Math.floor(rnd() * 0x10000)));
    if (groups.slice(0, 6).every((g) => g === 0)) groups[0] = 0x2001; // skip ::/96 and ::ffff:0:0/96 forms
    if (groups[0] !== undefined && groups[0] >> 8 === 0xff) groups[0] = 0x2001;
    const full = groups.map((g) => g.toString(16).padStart(4, '0')).join(':');
    const viaLibuv = new SocketAddress({ address: full, family: 'ipv6' }).address;
    expect(parseClientAddress(full).text, full).toBe(viaLibuv);
  }
});

describe('addressOfKey', () => {
  it('maps both IPv6 key forms to the same address', () => {
    expect(addressOfKey('ipv6:2001:db8:0:0:0:0:0:1')?.text).toBe('2001:db8::1');
    expect(addressOfKey('2001:db8::1')?.text).toBe('2001:db8::1');
  });
  it('returns null for keys that are not single addresses', () => {
    expect(addressOfKey('192.168')).toBeNull();
    expect(addressOfKey('example.com')).toBeNull();
    expect(addressOfKey('ipv6:2001:db8::1')).toBeNull(); // sendmail never compresses
    expect(addressOfKey('ipv6:1.2.3.4')).toBeNull();
  });
});

describe('parseNetwork', () => {
  it.each([
    ['127.0.0.0/8', { family: 4, address: '127.0.0.0', prefix: 8 }],
    ['::1/128', { family: 6, address: '::1', prefix: 128 }],
    ['192.0.2.7', { family: 4, address: '192.0.2.7', prefix: 32 }],
    ['0.0.0.0/0', { family: 4, address: '0.0.0.0', prefix: 0 }],
    ['2001:db8::/32', { family: 6, address: '2001:db8::', prefix: 32 }],
  ])('accepts %s', (input, net) => {
    expect(parseNetwork(input)).toEqual(net);
  });
  it.each([
    ['10.1.2.3/8', /host bits/],
    ['10.0.0.0/33', /not 0-32/],
    ['10.0.0.0/08', /not 0-32/],
    ['2001:db8::1/32', /host bits/],
    ['1.2.3.4/8/9', /more than one/],
    ['example.com/24', /dotted quad/],
    ['fe80::%eth0/64', /not an IPv6/],
  ])('rejects %s', (input, why) => {
    expect(parseNetwork(input)).toMatch(why);
  });
});

describe('inNetwork', () => {
  const net = (text: string): Network => {
    const n = parseNetwork(text);
    if (typeof n === 'string') throw new Error(n);
    return n;
  };
  it.each([
    ['10.0.0.0/8', '10.255.1.2', true],
    ['10.0.0.0/8', '11.0.0.1', false],
    ['192.168.16.0/20', '192.168.31.255', true],
    ['192.168.16.0/20', '192.168.32.0', false],
    ['192.168.16.0/20', '192.168.15.255', false],
    ['203.0.113.7', '203.0.113.7', true],
    ['203.0.113.7', '203.0.113.8', false],
    ['0.0.0.0/0', '198.51.100.1', true],
    ['0.0.0.0/0', '2001:db8::1', false],
    ['::/0', '2001:db8::1', true],
    ['::/0', '198.51.100.1', false],
    ['2001:db8::/33', '2001:db8:7fff::1', true],
    ['2001:db8::/33', '2001:db8:8000::1', false],
    ['::1/128', '::1', true],
    ['::1/128', '2001:db8::1', false],
    ['fe80::/10', 'febf::1', true],
    ['fe80::/10', 'fec0::1', false],
  ])('%s holds %s: %s', (network, address, holds) => {
    expect(inNetwork(parseClientAddress(address), net(network))).toBe(holds);
  });
});
