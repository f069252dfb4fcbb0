// File operations for the map's directory, which belongs to the hook's
// user: an account that handles input from the network. Nothing here
// follows a symbolic link, waits on a FIFO, or trusts a name twice: files
// are opened with O_NOFOLLOW | O_NONBLOCK and must be regular, new files
// are created with O_EXCL, their mode is set through the descriptor, and
// libdb is pointed at the very file we opened (/proc/self/fd/N), never at
// its name again (docs/security.md).

import {
  closeSync,
  constants as C,
  existsSync,
  fchmodSync,
  fstatSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { dirname } from 'node:path';

const SAFE = C.O_NOFOLLOW | C.O_NONBLOCK;

/** An error with a Node-style errno code, for the callers' translation. */
function codeError(code: string, message: string, path?: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(message);
  e.code = code;
  if (path !== undefined) e.path = path;
  return e;
}

/**
 * Opens an existing regular file without following a link (ELOOP) or
 * blocking on a FIFO; anything else is ENOTREG. `flags` adds to O_RDONLY.
 */
export function openRegular(path: string, flags = C.O_RDONLY): { fd: number; st: Stats } {
  const fd = openSync(path, flags | SAFE);
  let st: Stats;
  try {
    st = fstatSync(fd);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  if (!st.isFile()) {
    closeSync(fd);
    throw codeError('ENOTREG', `${path} is not a regular file`, path);
  }
  return { fd, st };
}

/** Creates a new file (EEXIST if the name is taken, by anything) and gives it `mode` despite the umask. */
export function createExclusive(path: string, mode: number): number {
  const fd = openSync(path, C.O_RDWR | C.O_CREAT | C.O_EXCL | SAFE, mode);
  try {
    fchmodSync(fd, mode);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return fd;
}

/** Linux's O_PATH, which node:fs does not name: a descriptor of the file itself, whatever its kind. */
const O_PATH = 0o10000000;

/**
 * Opens the UNIX socket this process just bound at `path` as the file
 * itself (no link followed), checked to be a socket of this process's
 * user: its group and mode are then set through fdPath(), so that another
 * account that may write the socket's directory (Postfix's private/) cannot
 * swap the name for a link to one of our files in between.
 */
export function openOwnSocket(path: string): number {
  const fd = openSync(path, O_PATH | C.O_NOFOLLOW);
  const st = fstatSync(fd);
  if (!st.isSocket() || st.uid !== process.geteuid?.()) {
    closeSync(fd);
    throw codeError('ENOTSOCK', `${path} is no longer the socket this process made: another account replaced it`, path);
  }
  return fd;
}

/** Opens a directory itself, not what a link of that name points to. */
export function openDirectory(path: string): number {
  return openSync(path, C.O_RDONLY | C.O_DIRECTORY | SAFE);
}

let procChecked = false;

/**
 * A name for an open file that cannot be swapped: libdb opens by path, and
 * this path resolves to the descriptor's own file whatever happens to the
 * name it was opened by. Needs /proc (always mounted on Linux, but not in
 * a bare chroot).
 */
export function fdPath(fd: number): string {
  if (!procChecked) {
    if (!existsSync('/proc/self/fd')) {
      throw codeError(
        'ENOPROC',
        '/proc is not mounted: poprelay opens the map through /proc/self/fd so that no name can be swapped under it',
      );
    }
    procChecked = true;
  }
  return `/proc/self/fd/${fd}`;
}

/** Makes a rename or a new name in `dir` durable. */
export function syncDirectory(dir: string): void {
  const fd = openDirectory(dir);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A regular file's text, opened as openRegular opens it; null when there is no such file. */
export function readRegularText(path: string): string | null {
  let fd: number;
  try {
    fd = openRegular(path).fd;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `text` to `path` as a new file (O_EXCL, synced) renamed into place,
 * so that a reader sees the old file or the new one, never half of one.
 */
export function replaceFile(path: string, text: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    unlinkSync(tmp);
  } catch {
    // none left over
  }
  const fd = createExclusive(tmp, mode);
  let open = true;
  try {
    writeSync(fd, text);
    fsyncSync(fd);
    closeSync(fd);
    open = false;
    // A rename that fails leaves no temporary file behind either: the next one has another pid.
    renameSync(tmp, path);
  } catch (e) {
    if (open) closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  syncDirectory(dirname(path));
}
