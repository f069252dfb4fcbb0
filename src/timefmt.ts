// Times and ages as an administrator reads them in a terminal or a cron mail.

/** "45s", "15m03s", "2h04m", "3d02h": two units at most. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n: number): string => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d${pad(Math.floor((s % 86400) / 3600))}h`;
}

/** "2026-11-29 20:01:02" in local time (TZ applies). */
export function formatTime(unixSeconds: number): string {
  const d = new Date(unixSeconds * 1000);
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The current time in Unix seconds. */
export function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}

/** "3m05s ago", or "10m00s in the future" for a time ahead of now. */
export function formatAgo(unixSeconds: number, now: number): string {
  return unixSeconds > now
    ? `${formatDuration(unixSeconds - now)} in the future`
    : `${formatDuration(now - unixSeconds)} ago`;
}
