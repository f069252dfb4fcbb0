// engine and *_listen in poprelay.ini: what each text means, and what is refused.

import { describe, expect, it } from 'vitest';

import { parseConfig } from '../src/config.js';
import { parseEngine, parseListen } from '../src/endpoints.js';
import { PoprelayError } from '../src/errors.js';
import { thrown } from './support/errors.js';

describe('engine', () => {
  it.each([
    ['redis://127.0.0.1', { host: '127.0.0.1', port: 6379, db: 0, display: 'redis://127.0.0.1:6379/0' }],
    [
      'redis://[2001:db8::1]:6380/2',
      { host: '2001:db8::1', port: 6380, db: 2, display: 'redis://[2001:db8::1]:6380/2' },
    ],
    ['redis://:secret@h:1/3', { host: 'h', port: 1, db: 3, password: 'secret', display: 'redis://h:1/3' }],
    [
      'redis://relay:p%40ss@h',
      { host: 'h', port: 6379, db: 0, username: 'relay', password: 'p@ss', display: 'redis://h:6379/0' },
    ],
    [
      'unix:/run/valkey/valkey.sock',
      { path: '/run/valkey/valkey.sock', db: 0, display: 'unix:/run/valkey/valkey.sock?db=0' },
    ],
    ['unix://:pw@/run/v.sock?db=2', { path: '/run/v.sock', db: 2, password: 'pw', display: 'unix:/run/v.sock?db=2' }],
  ])('%s', (text, expected) => {
    expect(parseEngine(text)).toEqual(expected);
  });

  it.each([
    'http://h',
    'redis://h:0',
    'redis://h:65536',
    'redis://[zz]:1',
    'redis://h/100',
    'unix:relative',
    'unix:/a b',
  ])('refuses %s', (text) => {
    expect(parseEngine(text)).toBeUndefined();
  });

  it('never shows the password in the display form, and needs engine for poprelayd keys', () => {
    expect(parseConfig('engine = redis://:topsecret@h\n', null).engine?.display).not.toContain('topsecret');
    const e = thrown(() => parseConfig('mirror = yes\n', '/x.ini'));
    expect(e).toBeInstanceOf(PoprelayError);
    expect((e as PoprelayError).message).toBe(
      'config /x.ini: key "mirror" needs engine: poprelayd answers from the shared relay set',
    );
  });
});

describe('*_listen', () => {
  it.each([
    ['inet:127.0.0.1:10031', { host: '127.0.0.1', port: 10031, display: 'inet:127.0.0.1:10031' }],
    ['inet:[::1]:10032', { host: '::1', port: 10032, display: 'inet:[::1]:10032' }],
    ['unix:/run/poprelay/socketmap', { path: '/run/poprelay/socketmap', display: 'unix:/run/poprelay/socketmap' }],
  ])('%s', (text, expected) => {
    expect(parseListen(text)).toEqual(expected);
  });

  it.each(['inet:h:0', 'inet:h', 'unix:run/p', 'tcp:1', `unix:/${'x'.repeat(120)}`])('refuses %s', (text) => {
    expect(parseListen(text)).toBeUndefined();
  });
});
