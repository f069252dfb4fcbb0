// What one of doctor's checks finds: a line of its report, and the fix for
// a problem.

export type Status = 'OK' | 'WARN' | 'FAIL';

export interface Check {
  status: Status;
  name: string;
  detail: string;
  fix?: string;
}

export function ok(name: string, detail: string): Check {
  return { status: 'OK', name, detail };
}

export function bad(status: 'WARN' | 'FAIL', name: string, detail: string, fix: string): Check {
  return { status, name, detail, fix };
}
