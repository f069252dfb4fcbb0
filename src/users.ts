// Login names as poprelay writes them: a plain name (the characters of
// ordinary user names, at most 64) goes into a log line, an answer or an
// engine key as it is; anything else is anyone's input, and each caller
// quotes, replaces or digests it.

const PLAIN = /^[A-Za-z0-9@._+-]{1,64}$/;

/** Whether `user` may be written as it is. */
export const isPlainUser = (user: string): boolean => PLAIN.test(user);
