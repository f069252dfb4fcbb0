// engine = as poprelay.ini writes it for TLS and Sentinel: what each form
// means, what messages show of it, and the problems named for a malformed
// one (never quoting the password).

import { describe, expect, it } from 'vitest';

import { maskEngine, readEngine } from '../src/endpoints.js';

describe('rediss:// and redis+sentinel://', () => {
  it.each([
    [
      'rediss://:pw@engine.example.net/2',
      {
        host: 'engine.example.net',
        port: 6379,
        db: 2,
        password: 'pw',
        tls: {},
        display: 'rediss://engine.example.net:6379/2',
      },
    ],
    [
      'redis+sentinel://relay:p%40ss@s1.example.net,s2.example.net:26380,[2001:db8::3]:26381/poprelay',
      {
        sentinels: [
          { host: 's1.example.net', port: 26379 },
          { host: 's2.example.net', port: 26380 },
          { host: '2001:db8::3', port: 26381 },
        ],
        service: 'poprelay',
        db: 0,
        username: 'relay',
        password: 'p@ss',
        display: 'redis+sentinel://s1.example.net:26379,s2.example.net:26380,[2001:db8::3]:26381/poprelay/0',
      },
    ],
    [
      'rediss+sentinel://127.0.0.1:26379/mymaster/3',
      {
        sentinels: [{ host: '127.0.0.1', port: 26379 }],
        service: 'mymaster',
        db: 3,
        tls: {},
        display: 'rediss+sentinel://127.0.0.1:26379/mymaster/3',
      },
    ],
  ])('%s', (text, want) => {
    expect(readEngine(text)).toEqual(want);
  });

  it.each([
    ['redis+sentinel://:S3cr3t@h1:1,h2:2', /after the Sentinels comes \/SERVICE/],
    ['redis+sentinel://:S3cr3t@h1:1,:2/svc', /a Sentinel: there is no host/],
    ['redis+sentinel://:S3cr3t@h1:99999/svc', /a Sentinel: the port must be a number/],
    ['redis+sentinel://:S3cr3t@h1/svc/100', /the database after the service must be a number from 0 to 99/],
    ['redis+sentinel://:S3cr3t@h1/s%vc', /the service after the Sentinels must be a name/],
    ['rediss://:S3cr3t@/0', /there is no host/],
    ['redis+tls://:S3cr3t@h', /it must begin with redis:\/\/, rediss:\/\/ \(TLS\), redis\+sentinel:\/\//],
  ])('%s: a problem naming the part, never the password', (text, problem) => {
    const r = readEngine(text);
    expect('problem' in r && r.problem).toMatch(problem);
    expect(JSON.stringify(r)).not.toContain('S3cr3t');
  });

  it('messages show a Sentinel URL without its user name and password', () => {
    expect(maskEngine('redis+sentinel://u:S3cr3t@h1:1,h2:2/svc/0')).toBe('redis+sentinel://***@h1:1,h2:2/svc/0');
    expect(maskEngine('redis+sentinel://h1:1,h2:2/svc/0')).toBe('redis+sentinel://h1:1,h2:2/svc/0');
    expect(maskEngine('rediss+sentinel://h1:1,S3:cr3t/svc')).toBe('rediss+sentinel://***');
  });
});
