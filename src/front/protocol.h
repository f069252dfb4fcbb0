/* What the front and the recorder agree on (src/map/queue.ts reads the same
 * names; test/front-protocol.test.ts fails when the two disagree). */
#ifndef POPRELAY_PROTOCOL_H
#define POPRELAY_PROTOCOL_H

/* The queue of the package's default map, used when Dovecot's executable
 * line names neither --queue nor --config. */
#define DEFAULT_QUEUE "/var/lib/poprelay/popip.db.queue"

/* A login left in the queue: "f<pid>_<IP>_<tag>_<user>", an empty file. */
#define IP_CHARS "0123456789ABCDEFabcdef:."
#define IP_MAX 45
#define TAG_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"
#define TAG_MAX 32
#define USER_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@._+-"
#define USER_MAX 64

/* The fd on which a recorder started with --lock-fd holds the queue's lock. */
#define LOCK_FD 3

/* The recorder's niceness: the logins going on beside it get the CPU first. */
#define RECORDER_NICE 10

/* The recorder's bound: it ends its own rounds well within it. */
#define RUN_SECONDS 60
#define KILL_GRACE_SECONDS 5
/* The longest a front lets the continued login go before it starts a recorder. */
#define LOGIN_FIRST_MS 50
/* Recorders one front starts at most, one after the other. */
#define MAX_ROUNDS 100

#endif
