/*
 * feed.h — what carehub-send and carehub-monitor share: their common options,
 * turning JSON lines into spooled events with stable ids, reporting answers
 * (refusals with FILE:LINE, the rejected file) and the exit codes.
 *
 * Each input line is one of
 *   - an event body, a JSON object: {"school": "…", …}
 *   - a whole event: {"id": "…", "at": …, "body": {…}} (id and at optional);
 *     recognised by a "body" key holding an object and no keys besides id, at, body
 *   - (detections, FEED_DETECTION) a body that may carry its own "id" and "at",
 *     which are taken out of it.
 * An event without an id gets feed_line_id(): a BLAKE2b hash (libsodium
 * crypto_generichash) of the type, the input name, the line number and the
 * line's bytes, so that the same input sent again after a crash or a restart
 * yields the same ids and the broker stores each event once.
 *
 * `at` is milliseconds since the epoch, or an RFC 3339 text
 * (2025-03-03T08:15:00Z, 2025-03-03T16:15:00.250+08:00); absent = now.
 */
#ifndef CAREHUB_FEED_H
#define CAREHUB_FEED_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "carehub_wire.h"
#include "cli.h"

/* The agent programs' exit codes (cli.h), as these programs use them. */
enum {
    FEED_EX_OK = CLI_EX_OK,
    FEED_EX_USAGE = CLI_EX_USAGE,         /* bad command line, key or endpoint */
    FEED_EX_DATAERR = CLI_EX_DATA,        /* at least one line was refused (by the broker or locally) */
    FEED_EX_NOINPUT = CLI_EX_NOINPUT,     /* an input or key file cannot be read */
    FEED_EX_IOERR = CLI_EX_IO,            /* the spool or the rejected file cannot be written */
    FEED_EX_TEMPFAIL = CLI_EX_UNREACHABLE, /* the broker did not answer within --wait: events stay spooled */
    FEED_EX_NOPERM = CLI_EX_NOPERM,       /* the broker refused this agent (hello unauthorized) */
};

/* The last lines of both programs' option help: the options feed_getopt() takes
 * for both with the same meaning (a string literal, for the usage text). */
#define FEED_HELP_ANSWERS \
"      --timeout MS       resend after MS without an answer (reconnecting; default 3000)\n" \
"  -v, --verbose          one line per answer on standard output:\n" \
"                         FILE:LINE <TAB> ID <TAB> EVENT <TAB> CASE <TAB> new|duplicate|refused:CODE\n" \
"  -q, --quiet            no summary on standard error\n" \
"  -h, --help             this text;  -V, --version  the version\n"

typedef enum { FEED_EVENTS, FEED_DETECTION } feed_mode_t;

typedef struct {
    const char *prog;        /* for messages: "carehub-send" */
    const char *endpoint;    /* -b; default $CAREHUB_ENDPOINT or tcp://127.0.0.1:5570 */
    const char *agent;       /* -a; default $CAREHUB_AGENT */
    const char *spool;       /* --spool; default $CAREHUB_SPOOL or ./carehub-spool-AGENT */
    const char *rejected;    /* --rejected; default SPOOL/rejected.jsonl */
    const char *key_file;    /* --key-file: the agent's secret key */
    const char *server_key;  /* --server-key: 40 Z85 chars or @FILE */
    int wait_s;              /* --wait: seconds the broker may stay silent (default 10) */
    int timeout_ms;          /* --timeout: Lazy Pirate request timeout (default 3000) */
    int verbose;             /* -v: one line per answer on stdout */
    int quiet;               /* -q: no summary */
    int follow;              /* --follow (carehub-monitor) */
    int poll_ms;             /* --follow: how often to look for more input (default 200) */
    feed_mode_t mode;
} feed_opts_t;

/* Defaults into o (prog and mode are set by the caller). */
void feed_opts_init(feed_opts_t *o, const char *prog, feed_mode_t mode);

/* Parse the options both programs take (-b -a --spool --rejected --key-file
 * --server-key --wait --timeout -v -q -h -V; with allow_follow also --follow
 * and --poll-interval) with getopt_long. Returns the index of the first
 * operand; -1 after --help or --version (printed; exit 0); -2 on a usage error
 * (message printed; exit 64). */
int feed_getopt(feed_opts_t *o, int argc, char **argv, int allow_follow,
                void (*usage)(FILE *out));

/*
 * Run the inputs (paths; none = standard input) through the broker:
 * spool every line, send, wait for the answers; returns an exit code
 * (FEED_EX_*). With o->follow the inputs are followed until SIGINT/SIGTERM.
 */
int feed_run(const feed_opts_t *o, const char *type, char **paths, int npaths);

/*
 * A whole program: feed_opts_init(), feed_getopt() (--follow with
 * FEED_DETECTION), then feed_run() over the operands. The event type is `type`,
 * or when NULL the first operand (TYPE, which must be a protocol id; the others
 * are the files). Returns the exit code (FEED_EX_*).
 */
int feed_main(const char *prog, feed_mode_t mode, const char *type, int argc, char **argv,
              void (*usage)(FILE *out));

/* The id feed_run gives a line without one: "h-" and 32 hex digits. */
void feed_line_id(const char *type, const char *name, long lineno, const char *text, size_t len,
                  char out[CAREHUB_ID_MAX + 1]);

/* The id given to a detection whose own "id" is not a protocol id (a URL, …):
 * "d-" and 32 hex digits of BLAKE2b over the type and the value. */
void feed_foreign_id(const char *type, const char *value, char out[CAREHUB_ID_MAX + 1]);

/* Parse an `at` text (an integer `at` is ms already): RFC 3339, as
 * cli_parse_rfc3339() reads it. 0 or -1. */
int feed_parse_time(const char *s, int64_t *ms);

#endif
