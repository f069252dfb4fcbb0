import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { parseClientAddress } from '../src/address.js';
import { DEFAULT_CONFIG_PATH, isIgnored, loadConfig, parseConfig } from '../src/config.js';
import { PoprelayError } from '../src/errors.js';
import { thrown } from './support/errors.js';
import { mapop } from './support/processes.js';
import { tempDir } from './support/tmp.js';

function configError(text: string): PoprelayError {
  const e = thrown(() => parseConfig(text, '/etc/mail/poprelay.ini'));
  expect(e).toBeInstanceOf(PoprelayError);
  return e as PoprelayError;
}

describe('parseConfig', () => {
  it('applies the documented defaults to an empty file', () => {
    const c = parseConfig('', null);
    expect(c).toMatchObject({
      source: null,
      map: { path: '/var/lib/poprelay/popip.db', type: 'hash', timeoutSeconds: 900, lockTimeoutMs: 2000, mode: 0o644 },
      logRecorded: true,
    });
    expect(c.ignore.map((n) => `${n.address}/${n.prefix}`)).toEqual(['127.0.0.0/8', '::1/128']);
    expect(isIgnored(c, parseClientAddress('127.9.9.9'))).toBe(true);
    expect(isIgnored(c, parseClientAddress('::1'))).toBe(true);
    expect(isIgnored(c, parseClientAddress('192.0.2.1'))).toBe(false);
  });

  it('reads every key, with comments of both kinds', () => {
    const c = parseConfig(
      [
        '; poprelay',
        '# comment',
        'dbfile = /etc/mail/popip.db',
        'dbtype = btree',
        'timeout_minutes = 30',
        'lock_timeout_ms = 500',
        'ignore = 10.0.0.0/8 192.168.1.1, 2001:db8::/32',
        'map_mode = 0640',
        'log_recorded = no',
      ].join('\n'),
      '/x.ini',
    );
    expect(c).toMatchObject({
      source: '/x.ini',
      map: { path: '/etc/mail/popip.db', type: 'btree', timeoutSeconds: 1800, lockTimeoutMs: 500, mode: 0o640 },
      logRecorded: false,
    });
    expect(isIgnored(c, parseClientAddress('10.200.0.1'))).toBe(true);
    expect(isIgnored(c, parseClientAddress('192.168.1.1'))).toBe(true);
    expect(isIgnored(c, parseClientAddress('192.168.1.2'))).toBe(false);
    expect(isIgnored(c, parseClientAddress('2001:db8:ffff::1'))).toBe(true);
    expect(isIgnored(c, parseClientAddress('127.0.0.1'))).toBe(false); // replaced, not added to
  });

  it('allows an empty ignore list', () => {
    expect(parseConfig('ignore =', null).ignore).toEqual([]);
  });

  it.each([
    ['dbfile = popip.db', 'dbfile', /absolute path ending in "\.db"/],
    ['dbfile = /etc/mail/popip', 'dbfile', /ending in "\.db"/],
    ['dbtype = dbm', 'dbtype', /"hash" or "btree"/],
    ['timeout_minutes = 0', 'timeout_minutes', /1 to 10080/],
    ['timeout_minutes = 15m', 'timeout_minutes', /whole number of minutes/],
    ['timeout_minutes = -5', 'timeout_minutes', /whole number/],
    ['lock_timeout_ms = 5', 'lock_timeout_ms', /10 to 30000/],
    ['lock_timeout_ms = 1e3', 'lock_timeout_ms', /whole number/],
    ['map_mode = 0666', 'map_mode', /never group- or world-writable/],
    ['map_mode = 0664', 'map_mode', /never group- or world-writable/],
    ['map_mode = 0444', 'map_mode', /read-write for the owner/],
    ['map_mode = 644x', 'map_mode', /octal mode/],
    ['log_recorded = maybe', 'log_recorded', /"yes" or "no"/],
  ])('refuses %j naming the file, key, value and what is allowed', (text, key, allowed) => {
    const e = configError(text);
    expect(e.code).toBe('ERR_CONFIG');
    expect(e.message).toContain('/etc/mail/poprelay.ini');
    expect(e.message).toContain(`"${key}"`);
    expect(e.message).toContain(JSON.stringify(text.split('=')[1]?.trim()));
    expect(e.message).toMatch(allowed);
  });

  it.each([
    ['ignore = 10.1.2.3/8', /"10\.1\.2\.3\/8": host bits are set/],
    ['ignore = 127.0.0.0/8, localhost', /"localhost": not a dotted quad/],
    ['ignore = 10.0.0.0/40', /prefix length "40"/],
  ])('names the bad item of an ignore list: %s', (text, why) => {
    const e = configError(text);
    expect(e.message).toMatch(why);
    expect(e.message).toContain('"ignore"');
  });

  it('refuses unknown keys and sections, listing the allowed keys', () => {
    expect(configError('db_file = /x.db').message).toMatch(
      /unknown key "db_file"; allowed keys \(no sections\): dbfile, dbtype/,
    );
    expect(configError('[poprelay]\ndbfile = /x.db').message).toMatch(/unknown section \[poprelay\]/);
  });
});

describe('loadConfig', () => {
  const dir = tempDir();

  it('uses defaults when the default file is absent, and says so', () => {
    // The test machine has no /etc/mail/poprelay.ini unless a developer made one.
    const c = loadConfig(undefined, {});
    expect(c.source === null || c.source === DEFAULT_CONFIG_PATH).toBe(true);
  });

  it('reads --config before $POPRELAY_CONFIG', () => {
    const a = join(dir, 'a.ini');
    const b = join(dir, 'b.ini');
    writeFileSync(a, 'timeout_minutes = 5\n');
    writeFileSync(b, 'timeout_minutes = 7\n');
    expect(loadConfig(a, { POPRELAY_CONFIG: b }).map.timeoutSeconds).toBe(300);
    expect(loadConfig(undefined, { POPRELAY_CONFIG: b })).toMatchObject({ map: { timeoutSeconds: 420 }, source: b });
  });

  it('fails when a named file does not exist', () => {
    const missing = join(dir, 'missing.ini');
    expect(() => loadConfig(missing, {})).toThrow(
      new RegExp(`config ${missing}: does not exist; it was named by --config`),
    );
    expect(() => loadConfig(undefined, { POPRELAY_CONFIG: missing })).toThrow(/does not exist/);
  });

  it('fails clearly on a file this user cannot read', async () => {
    const open = tempDir('poprelay-open-');
    chmodSync(open, 0o755);
    const f = join(open, 'unreadable.ini');
    writeFileSync(f, 'timeout_minutes = 3\n');
    chmodSync(f, 0o600);
    expect(await mapop(['config', f], 'nobody')).toEqual({
      error: `config ${f}: is not readable by this user`,
      code: 'ERR_CONFIG',
    });
    chmodSync(f, 0o644);
    expect(await mapop(['config', f], 'nobody')).toEqual({ ok: 180 });
  });
});
