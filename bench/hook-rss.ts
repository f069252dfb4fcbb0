// The peak RSS of a post-login script's process, through GNU time on the
// executable line of the snippet: the latency section's last table.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

import { PASSWORD, type PostLogin, startDovecot } from '../test/support/dovecot.js';
import { pop3Login } from '../test/support/mailclient.js';
import { safeDir } from '../test/support/tmp.js';

/** The peak RSS (GNU time's %M, KiB, including the script-login it runs) of each of `logins` logins' script process. */
export async function peakRss(hook: PostLogin, logins: number): Promise<number[]> {
  const rssDir = safeDir();
  await execa('chown', ['poprelay:poprelay', rssDir]); // GNU time writes it as the hook's user
  const file = join(rssDir, 'rss.txt');
  const dc = await startDovecot({
    hook,
    users: 1,
    // Each login's own recorder, which exits before GNU time reports.
    ini: 'ignore =\nlog_recorded = no\nrecorder_idle_seconds = 0\n',
    editConf: (c) =>
      c.replace(/executable = script-login /g, `executable = script-login /usr/bin/time -a -o ${file} -f %M `),
  });
  try {
    for (let i = 0; i < logins; i++)
      await pop3Login({ ...dc.pop3, localAddress: `127.40.0.${i + 1}` }, 'user0', PASSWORD).catch((e: Error) => {
        throw new Error(`${e.message}\n${dc.log()}`);
      });
    await new Promise((r) => setTimeout(r, 500));
    return readFileSync(file, 'utf8').trim().split('\n').map(Number);
  } finally {
    await dc.stop();
  }
}
