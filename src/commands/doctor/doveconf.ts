// Readers of what `doveconf -n` prints, for the Dovecot checks: the parts
// that say which program a login runs, as whom, and within which limits.

export interface DovecotService {
  executable?: string;
  user?: string;
  vsz_limit?: string;
  process_limit?: string;
}

/** The service blocks of `doveconf -n` output, by name. */
export function parseDoveconfServices(text: string): Map<string, DovecotService> {
  const services = new Map<string, DovecotService>();
  let current: DovecotService | undefined;
  let depth = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const open = /^service (\S+) \{$/.exec(line);
    if (depth === 0 && open) {
      current = {};
      services.set(open[1] ?? '', current);
      depth = 1;
      continue;
    }
    if (line.endsWith('{')) depth++;
    else if (line === '}') {
      depth = Math.max(0, depth - 1);
      if (depth === 0) current = undefined;
    } else if (current && depth === 1) {
      const kv = /^(executable|user|vsz_limit|process_limit) = (.*)$/.exec(line);
      if (kv) current[kv[1] as keyof DovecotService] = kv[2] ?? '';
    }
  }
  return services;
}

/**
 * The enabled protocols in doveconf -n output. 2.3 prints a list, maybe
 * quoted (protocols = " imap pop3"); 2.4 prints the list, or a block of
 * "name = yes|no" lines when the configuration used one. Left out when it
 * is the default, which includes imap and pop3 once they are installed.
 */
export function parseDoveconfProtocols(text: string): string[] {
  const list = /^protocols = (.*)$/m.exec(text);
  if (list)
    return (list[1] ?? '')
      .replace(/"/g, ' ')
      .split(/\s+/)
      .filter((p) => p !== '');
  const block = /^protocols \{\n((?:[ \t]+.*\n)*)\}/m.exec(text);
  if (block) return [...(block[1] ?? '').matchAll(/^\s+(\S+) = yes$/gm)].map((m) => m[1] ?? '');
  return ['imap', 'pop3'];
}

/** A vsz_limit in bytes, as Dovecot applies it (RLIMIT_AS and RLIMIT_DATA); null: no limit. */
export function vszBytes(v: string): number | null {
  if (v === '0' || v === 'unlimited') return null;
  const m = /^(\d+)\s*([kmgt]?)b?$/i.exec(v);
  if (!m) return null;
  const mult: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };
  return Number(m[1]) * (mult[(m[2] ?? '').toLowerCase()] ?? 1);
}
