// RESP2 as the hook speaks it: commands encoded as arrays of bulk strings,
// replies parsed whole or not at all (a reply cut short is "not yet").

import { describe, expect, it } from 'vitest';

import { encodeCommand, parseReply, RespError } from '../src/engine/resp.js';

const all = (text: string) => {
  const buf = Buffer.from(text, 'latin1');
  const out = [];
  for (let r = parseReply(buf); r !== null; r = parseReply(buf, r.next)) out.push(r.value);
  return out;
};

describe('RESP2', () => {
  it('encodes a command as an array of bulk strings, lengths in bytes', () => {
    expect(encodeCommand(['SET', 'poprelay:192.0.2.1', '1800000000']).toString()).toBe(
      '*3\r\n$3\r\nSET\r\n$18\r\npoprelay:192.0.2.1\r\n$10\r\n1800000000\r\n',
    );
    expect(encodeCommand(['ECHO', 'é']).toString('latin1')).toContain('$2\r\n');
  });

  it('parses every kind of reply, errors as values', () => {
    expect(all('+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n*-1\r\n-ERR wrong\r\n')).toEqual([
      'OK',
      42,
      'hello',
      null,
      ['a', 1],
      null,
      new RespError('ERR wrong'),
    ]);
  });

  it('waits for a reply cut anywhere, and refuses one that is not RESP', () => {
    const full = '*2\r\n$5\r\nhello\r\n:7\r\n';
    for (let cut = 0; cut < full.length; cut++) expect(parseReply(Buffer.from(full.slice(0, cut)))).toBeNull();
    expect(() => parseReply(Buffer.from('HTTP/1.0 400\r\n'))).toThrow(/malformed reply/);
    expect(() => parseReply(Buffer.from('$-7\r\n'))).toThrow(/malformed bulk length/);
  });
});
