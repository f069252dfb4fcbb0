// The files of other programs that doctor reads, which poprelay doctor's
// options can name elsewhere.

export interface DoctorPaths {
  /** Passed to doveconf -c; undefined = Dovecot's default. */
  doveconfConfig?: string;
  hookUser?: string;
  sendmailCf: string;
  postfixMainCf: string;
  cronFile: string;
  /** The pid file of the cron daemon, which runs the cron entry where systemd does not run. */
  cronPid: string;
}

export const DEFAULT_DOCTOR_PATHS: DoctorPaths = {
  sendmailCf: '/etc/mail/sendmail.cf',
  postfixMainCf: '/etc/postfix/main.cf',
  cronFile: '/etc/cron.d/poprelay',
  cronPid: '/run/crond.pid',
};
