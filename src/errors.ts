// Every failure poprelay reports on purpose is a PoprelayError: a stable
// `code` for programs and tests, and a message written for the mail
// administrator that names the thing and says what to do.

export type ErrorCode =
  | 'ERR_BAD_ADDRESS'
  | 'ERR_CONFIG'
  | 'ERR_MAP_MISSING'
  | 'ERR_MAP_CORRUPT'
  | 'ERR_MAP_TYPE'
  | 'ERR_MAP_NUL_KEYS'
  | 'ERR_MAP_LOCK_TIMEOUT'
  | 'ERR_MAP_PERMISSION'
  | 'ERR_MAP_IO'
  | 'ERR_MAP_UNSAFE'
  | 'ERR_PRIVILEGE'
  | 'ERR_SWEEP_RECORD'
  | 'ERR_ENGINE'
  | 'ERR_ENGINE_PAUSED';

export class PoprelayError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PoprelayError';
    this.code = code;
  }
}

export function isPoprelayError(e: unknown, code?: ErrorCode): e is PoprelayError {
  return e instanceof PoprelayError && (code === undefined || e.code === code);
}

/** The errno code of a Node or addon error (`ENOENT`, ...), if it has one. */
export function errnoCode(e: unknown): string | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string') {
    return e.code;
  }
  return undefined;
}

/**
 * Quote untrusted text for a log line: control characters and non-ASCII are
 * escaped, and long input is cut, so a hostile value can neither forge log
 * lines nor flood the log.
 */
export function quoteUntrusted(text: string, max = 64): string {
  const shown = text.length > max ? text.slice(0, max) : text;
  const quoted = JSON.stringify(shown).replace(
    /[\u007f-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return text.length > max ? `${quoted}... (${text.length} chars)` : quoted;
}

/**
 * Control characters (newlines, terminal escapes) shown as \xHH: for text
 * that may hold anyone's bytes (map keys) on its way to a terminal or log.
 */
export function escapeControls(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
