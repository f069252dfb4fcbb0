// Root does the map's work with the map owner's rights, as Postfix's
// postmap does on another user's file: the map's directory belongs to the
// hook's user, the account that handles input from the network, so
// whatever that account plants there must not be able to borrow root's
// hands (docs/security.md).

import { statSync } from 'node:fs';
import { dirname } from 'node:path';

import { dropPrivileges } from './native.js';
import { errnoCode, PoprelayError } from './errors.js';

/**
 * When running as root, becomes the owner of `mapPath`'s directory (its uid
 * and gid, no supplementary groups) before anything in it is opened. A
 * directory that root owns stays root's work: no other account can plant
 * names in it (poprelay's file discipline covers one that is
 * group-writable). Refuses when it cannot tell whose the directory is.
 */
export function actAsMapOwner(mapPath: string): void {
  if (process.geteuid?.() !== 0) return;
  const dir = dirname(mapPath);
  let st;
  try {
    st = statSync(dir);
  } catch (e) {
    throw new PoprelayError(
      'ERR_PRIVILEGE',
      `cannot tell who owns the map's directory ${dir} (${errnoCode(e) ?? String(e)}): as root, poprelay works on the map ` +
        `only with its owner's rights. Create it owned by the hook's user: install -d -o poprelay -g poprelay -m 0755 ${dir}`,
    );
  }
  if (st.uid === 0) return;
  if (st.gid === 0) {
    throw new PoprelayError(
      'ERR_PRIVILEGE',
      `the map's directory ${dir} belongs to uid ${st.uid} but to group root: as root, poprelay takes the directory's ` +
        `owner and group before it touches the map, and will not take group root. Fix: chgrp the directory to the hook user's group ` +
        `(chown poprelay:poprelay ${dir})`,
    );
  }
  // With io_uring on, a ring made before the switch would go on with root's rights.
  if (process.env.UV_USE_IO_URING === '1') {
    throw new PoprelayError(
      'ERR_PRIVILEGE',
      `UV_USE_IO_URING=1 is set: as root, poprelay takes the map owner's rights, which io_uring would not follow. Unset it`,
    );
  }
  try {
    dropPrivileges(st.uid, st.gid);
  } catch (e) {
    throw new PoprelayError(
      'ERR_PRIVILEGE',
      `cannot take the rights of the map's owner (uid ${st.uid}, gid ${st.gid}) to work on ${dir}: ${(e as Error).message}. ` +
        `Run as root with CAP_SETUID and CAP_SETGID (a systemd unit: no PrivateUsers=, and both in CapabilityBoundingSet=)`,
    );
  }
}
