// doctor's Dovecot checks: each enabled protocol's logins run poprelay-login
// after login (doveconf -n, Dovecot's effective configuration), and the
// post-login service lets its recorders wait without dropping logins.

import { execFileSync } from 'node:child_process';

import { bad, ok, type Check } from './check.js';
import { parseDoveconfProtocols, parseDoveconfServices } from './doveconf.js';
import type { DoctorPaths } from './paths.js';
import { snippetsDir } from './shipped.js';

export interface HookService {
  /** The hook and the words Dovecot passes it, as script-login runs it. */
  hook: string[];
  user: string;
  vsz: string;
}

export interface DovecotFindings {
  checks: Check[];
  /** The post-login service that runs the hook; undefined when none does. */
  service?: HookService;
}

export function dovecotChecks(paths: DoctorPaths): DovecotFindings {
  const args = paths.doveconfConfig === undefined ? ['-n'] : ['-n', '-c', paths.doveconfConfig];
  let text: string;
  try {
    text = execFileSync('doveconf', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const why =
      (e as { code?: string; stderr?: string }).code === 'ENOENT'
        ? 'doveconf not found'
        : ((e as { stderr?: string }).stderr ?? String(e)).trim();
    return {
      checks: [bad('FAIL', 'dovecot', why, 'install Dovecot, or fix the configuration doveconf -n complains about')],
    };
  }
  const services = parseDoveconfServices(text);
  const protocols = parseDoveconfProtocols(text);
  const checks: Check[] = [];
  let service: HookService | undefined;
  for (const proto of ['pop3', 'imap']) {
    const name = `dovecot ${proto}`;
    if (!protocols.includes(proto)) {
      checks.push(ok(name, `${proto} is not enabled (protocols = ${protocols.join(' ')})`));
      continue;
    }
    const exec = services.get(proto)?.executable?.split(/\s+/) ?? [];
    const post = exec[1];
    const svc = post === undefined ? undefined : services.get(post);
    const words = svc?.executable?.split(/\s+/) ?? [];
    if (
      post === undefined ||
      svc === undefined ||
      words[0] !== 'script-login' ||
      !(words[1] ?? '').endsWith('/poprelay-login')
    ) {
      checks.push(
        bad(
          'FAIL',
          name,
          `${proto} logins do not run poprelay-login (service ${proto}: executable = ${exec.join(' ') || '(default)'})`,
          `install ${snippetsDir()}2.3/95-poprelay.conf (or 2.4) into conf.d and reload Dovecot (the Debian package: dpkg-reconfigure poprelay)`,
        ),
      );
      continue;
    }
    // doveconf -n leaves out defaults: the service then has default_vsz_limit.
    const vsz = svc.vsz_limit ?? /^default_vsz_limit = (.*)$/m.exec(text)?.[1] ?? '256M';
    service = { hook: words.slice(1), user: svc.user || 'root', vsz };
    const runs = `post-login service ${post} runs ${service.hook.join(' ')} as ${service.user}, vsz_limit = ${vsz}`;
    // The front is the service's process until its recorder ends, and a recorder may wait
    // (recorder_idle_seconds, the map's lock): with one process, Dovecot drops the logins behind it.
    checks.push(
      svc.process_limit === '1'
        ? bad(
            'WARN',
            name,
            `${runs}, process_limit = 1: while a recorder waits for more logins or for the map, Dovecot drops the logins that wait for that one process`,
            `remove process_limit from service ${post} (the default is 100), or set it to 2 or more`,
          )
        : ok(name, runs),
    );
  }
  return { checks, service };
}
