// Hostile or malformed client addresses. None may ever be recorded, and no
// tool may crash on any of them. Shared by the hook and CLI tests.

export const HOSTILE_ADDRESSES: readonly string[] = [
  '',
  ' ',
  '1.2.3.4 ',
  ' 1.2.3.4',
  '1.2.3.4\n5.6.7.8',
  '1.2.3.4\r\n',
  '1.2.3.4\u0000',
  '\u001b[31m1.2.3.4',
  '1.2.3.4\tx',
  '*',
  '0.0.0.0',
  '0.0.0.0/0',
  '::',
  '::/0',
  '255.255.255.255',
  '224.0.0.1',
  '239.1.2.3',
  'ff02::1',
  'ff05::1:3',
  '240.1.2.3',
  '192.0.2.0/24',
  '2001:db8::/32',
  '[2001:db8::1]',
  '[192.0.2.1]',
  'fe80::1%eth0',
  'fe80::1%25eth0',
  '010.1.1.1',
  '192.168.001.1',
  '0x7f.0.0.1',
  '0177.0.0.1',
  '2130706433',
  '256.1.1.1',
  '1.2.3',
  '1.2.3.4.5',
  '::ffff:0.0.0.0',
  '::ffff:255.255.255.255',
  '::ffff:224.0.0.1',
  '::192.0.2.1',
  '::ffff:1.2.3',
  '::ffff:01.2.3.4',
  '\u0661.\u0662.\u0663.\u0664',
  '１２.0.0.1',
  '1.2.3.4\u200b',
  'localhost',
  'mail.example.com',
  'IPv6:2001:db8::1',
  'ipv6:2001:db8:0:0:0:0:0:1',
  '1:2:3:4:5:6:7:8:9',
  '1::2::3',
  '$(reboot)',
  "1.2.3.4'; DROP TABLE",
  'x'.repeat(10_000),
  '1'.repeat(100),
];

/**
 * [label, value] rows for it.each: the value as JSON, shortened for the
 * test's title (a 10,000-character value would fill a screen of CI log).
 */
export function hostileCases(keep: (a: string) => boolean = () => true): Array<[string, string]> {
  return HOSTILE_ADDRESSES.filter(keep).map((a) => {
    const j = JSON.stringify(a);
    return [j.length > 40 ? `${j.slice(0, 30)}..." (${a.length} characters)` : j, a];
  });
}
