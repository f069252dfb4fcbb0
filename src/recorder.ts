// The entry point bundled into dist/poprelay-login.cjs, which the front
// (bin/poprelay-login) runs. It reads its arguments and opens the log pipe,
// which load nothing of ours that could fail, then loads the recorder in the one import
// it guards: a module that cannot load (a broken libdb addon, say) is then
// one log line and a failed recording, as any other problem is, not a stack
// trace on Dovecot's log.

import { parseHookArgs, USAGE } from './hook/arguments.js';
import { envAddressText, log, logNotRecorded, useDovecotFormat } from './hook/dovecot-log.js';

async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = parseHookArgs(argv);
  // Under Dovecot, fd 1 is no longer the client's, but help is for a person.
  if (args.help && !args.dovecotLog) {
    process.stdout.write(USAGE);
    return 0;
  }
  useDovecotFormat(args.dovecotLog);
  for (const p of args.problems) log('warning', p);
  let recorder: typeof import('./hook/recorder.js');
  try {
    recorder = await import('./hook/recorder.js');
  } catch (e) {
    // Nothing is loaded to quote the user name with: it goes as it is, and the log pipe escapes it.
    logNotRecorded(e, envAddressText(env), `user=${env.USER ?? '(none)'}`);
    return 1;
  }
  return (await recorder.recordFromEnv(args, env)) ? 0 : 1;
}

void main(process.argv.slice(2), process.env).then((status) => process.exit(status));
