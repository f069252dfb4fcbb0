// The manual pages in man/: well-formed for groff, and in step with the
// programs they describe (every option of --help, every config key with
// its default, every subcommand).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

import { BIN, ROOT } from './support/paths.js';

const PAGES = ['poprelay.8', 'poprelay-login.8', 'poprelay-sweep.8', 'poprelayd.8', 'poprelay.ini.5'];

/** man/man8/poprelay.8 and so on: MANPATH=man finds them in a checkout. */
const pagePath = (page: string): string => join(ROOT, 'man', `man${page.slice(-1)}`, page);

/** The page as man shows it, plain text (no overstrike, no hyphenation at line ends). */
async function rendered(page: string): Promise<string> {
  const r = await execa('man', ['-l', pagePath(page)], {
    env: { MANWIDTH: '1000', MAN_KEEP_FORMATTING: '', MANPAGER: 'cat', PAGER: 'cat' },
  });
  return r.stdout.replace(/.\x08/g, '');
}

/** The long options a --help text names. */
function optionsOf(help: string): string[] {
  return [...new Set([...help.matchAll(/(?<![\w-])--[a-z][a-z-]*/g)].map((m) => m[0]))].sort();
}

describe.each(PAGES)('man/%s', (page) => {
  it('formats without a groff warning, and man renders NAME, SYNOPSIS and SEE ALSO', async () => {
    const g = await execa('groff', ['-man', '-ww', '-z', pagePath(page)], { reject: false });
    expect(g.stderr).toBe('');
    expect(g.exitCode).toBe(0);
    const text = await rendered(page);
    for (const section of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'SEE ALSO'])
      expect(text).toMatch(new RegExp(`^${section}$`, 'm'));
  });
});

describe('the pages and the programs agree', () => {
  it.each([
    ['poprelay-login.8', BIN.login, [] as string[]],
    ['poprelay-sweep.8', BIN.sweep, []],
    ['poprelayd.8', BIN.daemon, []],
    ['poprelay.8', BIN.admin, []],
    ['poprelay.8', BIN.admin, ['doctor']],
    ['poprelay.8', BIN.admin, ['flush']],
    ['poprelay.8', BIN.admin, ['list']],
    ['poprelay.8', BIN.admin, ['who']],
    ['poprelay.8', BIN.admin, ['report']],
  ])('%s describes every option of %s %s --help', async (page, bin, sub) => {
    const help = (await execa(bin, [...sub, '--help'])).stdout;
    const text = await rendered(page);
    const options = optionsOf(help);
    expect(options.length).toBeGreaterThan(0);
    // Each in the tag of a paragraph (indented 7, or 14 in a nested list), not
    // just mentioned: its own, or its command's ("add address [--permanent]").
    for (const o of options) {
      expect(text, o).toMatch(new RegExp(`^(?: {7}(?:[a-z]+ .*)?| {14})(?:-\\w, )?${o}(?![\\w-])`, 'm'));
    }
  });

  it('poprelay.8 describes every command poprelay --help lists', async () => {
    const help = (await execa(BIN.admin, ['--help'])).stdout;
    const commands = [
      ...help
        .split('Commands:')[1]!
        .split('\n\n')[0]!
        .matchAll(/^ {2}([a-z]+)/gm),
    ].map((m) => m[1]!);
    expect(commands).toEqual(['init', 'list', 'add', 'del', 'check', 'stats', 'flush', 'doctor', 'who', 'report']);
    const text = await rendered('poprelay.8');
    const described = text.split(/^COMMANDS$/m)[1]!.split(/^OPTIONS$/m)[0]!;
    for (const c of commands) expect(described, c).toMatch(new RegExp(`^ {7}${c}\\b`, 'm'));
  });

  it('poprelay.ini.5 describes every key with its default, and no other', async () => {
    // The shipped sample states every key with its default (test/sample-config.test.ts checks that).
    const sample = readFileSync(join(ROOT, 'etc/poprelay.ini'), 'utf8');
    const defaults = Object.fromEntries([...sample.matchAll(/^([a-z_]+) = (.*)$/gm)].map((m) => [m[1]!, m[2]!]));
    const source = readFileSync(pagePath('poprelay.ini.5'), 'utf8').split('.SH KEYS\n')[1]!.split('.SH ')[0]!;
    expect([...source.matchAll(/^\.TP\n\.B (\S+)$/gm)].map((m) => m[1]!).sort()).toEqual(Object.keys(defaults).sort());
    // As rendered, each key's entry runs from its tag to the next key's.
    const keys = (await rendered('poprelay.ini.5')).split(/^KEYS$/m)[1]!.split(/^EXAMPLES$/m)[0]!;
    const tag = new RegExp(`^ {7}(?:${Object.keys(defaults).join('|')})(?: |$)`, 'm');
    const entries = keys.split(tag).slice(1);
    const names = [...keys.matchAll(new RegExp(tag.source, 'gm'))].map((m) => m[0].trim());
    for (const [key, value] of Object.entries(defaults)) {
      const entry = entries[names.indexOf(key)] ?? '';
      expect(entry.replace(/\s+/g, ' '), key).toContain(`Default: ${value}.`);
    }
  });
});
