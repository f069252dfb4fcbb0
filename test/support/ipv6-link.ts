// IPv6 clients for the tests whose addresses must be real ones, not ::1.

import { execa } from 'execa';

/**
 * A network namespace joined to this one by a veth pair, so that this
 * process can connect from real IPv6 addresses (other than ::1) to a
 * Dovecot inside it; where the machine cannot make one, the reason instead.
 */
export async function makeIPv6Link(
  name: string,
  outside: string[],
  inside: string,
): Promise<{ remove(): Promise<void> } | string> {
  const v0 = `${name}a`;
  const v1 = `${name}b`;
  const run = (args: string[]) => execa('ip', args);
  try {
    await run(['netns', 'add', name]);
  } catch (e) {
    return `cannot create a network namespace: ${(e as Error).message.split('\n')[0] ?? ''}`;
  }
  const remove = async (): Promise<void> => {
    await execa('ip', ['link', 'del', v0], { reject: false });
    await execa('ip', ['netns', 'del', name], { reject: false });
  };
  try {
    await run(['link', 'add', v0, 'type', 'veth', 'peer', 'name', v1, 'netns', name]);
    for (const a of outside) await run(['addr', 'add', `${a}/64`, 'dev', v0, 'nodad']);
    await run(['link', 'set', v0, 'up']);
    await run(['-n', name, 'addr', 'add', `${inside}/64`, 'dev', v1, 'nodad']);
    await run(['-n', name, 'link', 'set', v1, 'up']);
    await run(['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (e) {
    await remove();
    return `cannot set up the veth pair: ${(e as Error).message.split('\n')[0] ?? ''}`;
  }
  return { remove };
}
