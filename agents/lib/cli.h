/*
 * cli.h — what the carehub command-line agents (carehub-school,
 * carehub-report, carehub-agency) share: the common options, key loading,
 * the default spool directory, exit codes, and small parsers for values
 * people type (booleans, dates, times, durations, enums).
 *
 * Every program prints its errors as "PROGRAM: sentence" on stderr
 * (cli_err) and exits with one of the codes below (sysexits(3) numbers, so
 * shell scripts and cron can tell the failures apart).
 */
#ifndef CAREHUB_CLI_H
#define CAREHUB_CLI_H

#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "carehub.h"

/* ---- exit codes ------------------------------------------------------------ */

enum {
    CLI_EX_OK = 0,           /* done; everything acknowledged */
    CLI_EX_USAGE = 64,       /* bad command line: unknown option, missing or bad value */
    CLI_EX_DATA = 65,        /* bad input data, or the broker refused a message (nack) */
    CLI_EX_NOINPUT = 66,     /* an input or key file cannot be read */
    CLI_EX_IO = 74,          /* the spool (outbox) or a local file cannot be written */
    CLI_EX_UNREACHABLE = 75, /* the broker did not answer in time; spooled events are kept */
    CLI_EX_NOPERM = 77,      /* the broker refused this agent (hello: unauthorized) */
};

/* The same defaults as carehub-send and carehub-monitor (agents/lib/feed.h). */
#define CLI_DEFAULT_ENDPOINT "tcp://127.0.0.1:5570"

/* The exit code for a libcarehub error (CAREHUB_E*). */
int cli_exit_for(int carehub_err);

/* ---- messages -------------------------------------------------------------- */

/* Set the program name used in messages (basename of argv[0]), and the umask
 * to 077: what an agent program writes (spool, rejected lines, outcomes,
 * reports) is its user's only. Every agent program calls it first (carehub-send
 * and carehub-monitor through feed_opts_init). */
void cli_init(const char *argv0);
const char *cli_prog(void);

/* "PROGRAM: message" on stderr, with a newline. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- the common options ---------------------------------------------------- */

/* getopt_long values of the common long options without a short form. */
enum {
    CLI_OPT_KEY_FILE = 0x100,
    CLI_OPT_SERVER_KEY,
    CLI_OPT_LANG,
    CLI_OPT_FIRST_PROGRAM = 0x200 /* programs number their own options from here */
};

/* Short options of the common set, to put in front of a program's own. */
#define CLI_COMMON_SHORTOPTS "b:a:s:w:h"

/* The common long options, to put at the start of a program's table. */
#define CLI_COMMON_LONGOPTS                                                   \
    {"broker", required_argument, NULL, 'b'},                                 \
    {"agent", required_argument, NULL, 'a'},                                  \
    {"spool", required_argument, NULL, 's'},                                  \
    {"key-file", required_argument, NULL, CLI_OPT_KEY_FILE},                  \
    {"server-key", required_argument, NULL, CLI_OPT_SERVER_KEY},              \
    {"wait", required_argument, NULL, 'w'},                                   \
    {"lang", required_argument, NULL, CLI_OPT_LANG},                          \
    {"help", no_argument, NULL, 'h'}

/* The help text of the common options (for a program's --help). */
extern const char cli_common_help[];

typedef struct {
    const char *endpoint;    /* -b; else $CAREHUB_ENDPOINT, else CLI_DEFAULT_ENDPOINT */
    const char *agent;       /* -a; else $CAREHUB_AGENT */
    const char *spool_dir;   /* -s/--spool; else cli_default_spool() (filled by cli_common_check) */
    const char *key_file;    /* --key-file: the agent's secret key file (CURVE) */
    const char *server_key;  /* --server-key: the broker's public key, Z85 or @FILE */
    int wait_ms;             /* --wait, in ms; -1 = not given */
    int help;                /* -h/--help given */
    int no_spool;            /* set by the program: requests only, no default spool (cli_open
                              * opens libcarehub without one unless --spool was given) */
    int request_timeout_ms;  /* set by the program: libcarehub's resend timeout (0: its own) */
    /* filled by cli_common_check(): */
    char spool_buf[4096];
    char secret[41];
    char public_key[41];
    char server[41];
    int curve;               /* 1 when the three keys are loaded */
} cli_common_t;

/* Start with no options given. */
void cli_common_init(cli_common_t *c);

/* Handle one getopt_long result if it is a common option: 1 handled, 0 not a
 * common option, -1 a bad value (the message is printed). */
int cli_common_opt(cli_common_t *c, int opt, const char *arg);

/* The next option of the program's own (getopt_long over longopts, which start
 * with CLI_COMMON_LONGOPTS; the common ones are handled here on the way): its
 * value, 0 at the end, -1 after a bad common value (the message is printed).
 * An unknown option comes back as '?' for the program's `default:`. */
int cli_getopt(cli_common_t *c, int argc, char **argv, const struct option *longopts);

/* After parsing: fill defaults from the environment, check that there is an
 * agent id (need_agent; without it only when --spool is given), compute the
 * spool directory, load the CURVE keys. 0 or an exit code (the message is
 * printed). */
int cli_common_check(cli_common_t *c, int need_agent);

/* The wait in ms: --wait if given, else def_ms. */
int cli_wait(const cli_common_t *c, int def_ms);

/*
 * The default spool directory of an agent, into buf: $CAREHUB_SPOOL if set,
 * else ./carehub-spool-AGENT (as carehub-send). 0, or -1 when it does not fit.
 */
int cli_default_spool(const char *agent, char *buf, size_t len);

/* Read this agent's secret key file into out[41] (carehub_read_secret_key: the
 * file itself, not a link; mode 0600 or tighter). 0, or an exit code with the
 * reason in why, a predicate that follows the file's name (keyfile_why):
 * CLI_EX_USAGE (not a key), CLI_EX_NOINPUT (cannot or may not be read: missing,
 * a symbolic link, group or others may read it — the reason gives the chmod). */
int cli_read_secret_key(const char *path, char out[41], char *why, size_t whylen);

/* Open a file the agent appends children's data to (refused lines, outcomes):
 * created 0600, and never through a symbolic link (O_NOFOLLOW). A descriptor,
 * or -1 with errno set; cli_open_errstr(errno) says why. */
int cli_open_append(const char *path);
const char *cli_open_errstr(int err);

/* Open libcarehub with the common options. NULL on failure, with the message
 * printed and *exit_code set. */
carehub_t *cli_open(const cli_common_t *c, const char *software, const carehub_callbacks_t *cb,
                    int *exit_code);

/* Poll until the broker has welcomed this connection or timeout_ms passed
 * (-1 forever, until cli_stop). 0 connected, CLI_EX_UNREACHABLE, or the exit
 * code of a poll error (message printed). */
int cli_wait_connected(carehub_t *c, int timeout_ms);

/*
 * The agent programs' one wait loop: poll c in steps of at most 200 ms until
 * done() says the wait is over, wait_ms passed, or a signal (cli_stop). With
 * progress(), wait_ms is a quiet period: the clock restarts whenever the count
 * it returns changes (answers still coming in). Callbacks may be NULL.
 */
typedef struct {
    int (*done)(carehub_t *c, void *ud);       /* 1: stop waiting */
    size_t (*progress)(carehub_t *c, void *ud); /* grows as answers come */
    void *ud;
    int retry_enet; /* ZeroMQ errors are left to the library's resending, not returned */
} cli_until_t;

/* 0 (done, time out or signal: the caller looks at what it has), or the exit
 * code (cli_exit_for) of the first error carehub_poll() gave, its message
 * printed. */
int cli_poll_until(carehub_t *c, int64_t wait_ms, const cli_until_t *u);

/* Wait to be connected (quiet_ms, at least 5 s), then poll until quiet_ms pass
 * without `seen` (what the program's callbacks record) growing. 0, or the exit
 * code; when the broker did not answer, "the broker did not answer; HINT" is
 * printed (hint may be NULL). */
struct cli_map; /* cli_map_t, below */
int cli_collect_quiet(carehub_t *c, int quiet_ms, const struct cli_map *seen, const char *hint);

/* A cli_until_t done(): the spool and the requests are all answered. */
int cli_nothing_pending(carehub_t *c, void *ud);
/* A cli_until_t done(): the int that ud points to is not 0 (an answer came). */
int cli_flag_set(carehub_t *c, void *ud);

/* ---- refusals ---------------------------------------------------------------- */

/* A refusal (nack) from the broker, as a program keeps it until it reports it. */
typedef struct {
    char code[64], error[1024], field[256];
} cli_nack_t;

/* Keep a nack's code ("?" when NULL), error and field ("" when NULL). */
void cli_nack_set(cli_nack_t *n, const char *code, const char *error, const char *field);
/* Print "PROG: the broker refused WHAT: CODE: ERROR at FIELD" (what may be ""),
 * and return the exit code for it: CLI_EX_UNREACHABLE for `unavailable` (try
 * again later), else CLI_EX_DATA. */
int cli_nack_report(const cli_nack_t *n, const char *what);

/* ---- stopping --------------------------------------------------------------- */

/* Set to 1 by SIGINT/SIGTERM once cli_catch_signals() was called. */
extern volatile sig_atomic_t cli_stop;
void cli_catch_signals(void);

/* ---- values people type ------------------------------------------------------ */

/* yes/no/true/false/y/n/1/0 (any case, blanks around ignored) into *out. 0 or -1. */
int cli_parse_bool(const char *s, int *out);

/* Index of s in the NULL-terminated list vals (exact match), or -1. */
int cli_enum_index(const char *s, const char *const *vals);

/* "a|b|c" of a NULL-terminated list into buf. */
void cli_enum_list(const char *const *vals, const char *sep, char *buf, size_t len);

/* cli_enum_index(s, vals); when s is not in vals, -1 with why = "'S' is not one
 * of A<sep>B<sep>C" (S as cli_show() prints it). */
int cli_enum_check(const char *s, const char *const *vals, const char *sep, char *why,
                   size_t whylen);

/* Dates and times (cli_time.c). */

/* 1 when s is a calendar date YYYY-MM-DD that exists. */
int cli_valid_date(const char *s);

/*
 * A point in time into ms since the epoch: all digits (already ms), "now",
 * YYYY-MM-DD (local midnight), YYYY-MM-DD[T ]HH:MM[:SS[.fff]] (local time),
 * the latter followed by Z or ±HH:MM (that offset instead). 0 or -1.
 */
int cli_parse_time(const char *s, int64_t *out_ms);

/*
 * An RFC 3339 date-time only, as machines write it: YYYY-MM-DD[Tt ]HH:MM:SS[.f...]
 * then Z (or z) or ±HH:MM, a day that exists, not before 1970 (UTC), into ms
 * since the epoch (digits of the fraction beyond the third are dropped). 0 or -1.
 */
int cli_parse_rfc3339(const char *s, int64_t *out_ms);

/* A duration: a number (seconds, may have a fraction) with an optional
 * suffix ms, s, m or h; at most one day. 0 or -1. */
int cli_parse_duration_ms(const char *s, int *out_ms);

/* A longer span: a number (may have a fraction) with a suffix s, m, h, d (days
 * of 24 h) or w (weeks); a bare number is seconds. At most 366 days. 0 or -1. */
int cli_parse_span_ms(const char *s, int64_t *out_ms);

/* ---- what people read: language, time zone, agency names (cli_local.c) ------- */

/*
 * The display language: headings, labels and HTML reports in Chinese (the
 * default) or English. --lang zh|en (a common option) sets it; without it
 * $CAREHUB_LANG, when it is "zh" or "en". Machine output (--json, --csv, the
 * wire) does not change with it.
 */
typedef enum { CLI_LANG_ZH = 0, CLI_LANG_EN } cli_lang_t;
/* "zh" or "en" into *out: 0, or -1 for anything else. */
int cli_lang_parse(const char *s, cli_lang_t *out);
/* --lang: wins over $CAREHUB_LANG. */
void cli_set_lang(cli_lang_t l);
cli_lang_t cli_lang(void);
/* 0, or CLI_EX_USAGE with the message printed when $CAREHUB_LANG is set to
 * something other than zh or en and no --lang was given (cli_common_check). */
int cli_lang_check_env(void);
/* en or zh, as the display language says (both static strings). */
const char *cli_tr(const char *en, const char *zh);

/* The longest zone name cli_use_timezone() takes. */
#define CAREHUB_TZ_NAME_MAX 128
/*
 * Show times in zone tz (an IANA name, e.g. "Asia/Shanghai"): setenv("TZ") and
 * tzset(), so that localtime_r() and cli_format_time() use the C library's rules
 * for it. NULL or "": nothing changes (the host's zone stays). 0, or -1 when tz
 * is too long or setenv fails.
 */
int cli_use_timezone(const char *tz);
/* cli_use_timezone(carehub_timezone(c)): the broker's broker.timezone, learnt
 * from welcome. cli_wait_connected() and cli_poll_until() call it. */
void cli_follow_broker_zone(const carehub_t *c);
/* The zone times are shown in, for a heading: the name cli_use_timezone() set,
 * else $TZ, else NULL (the host's zone; the offset in each time says which). */
const char *cli_zone_name(void);
/* " (ZONE)" of cli_zone_name() for a heading after a time, or "" without one. */
void cli_zone_note(char *buf, size_t len);
/* The agency's name from welcome (carehub_agency_name), else its id. */
const char *cli_agency_label(const carehub_t *c, const char *agency);

/* Terminal columns of a UTF-8 string: Chinese (East Asian wide) characters take
 * two, so that tables line up under Chinese headings. */
size_t cli_display_width(const char *s);

/* ms since the epoch as local time "YYYY-MM-DD HH:MM:SS +08:00" (the numeric
 * offset of the zone in effect: cli_use_timezone). */
void cli_format_time(int64_t ms, char *buf, size_t len);

/* 1 when s is well-formed UTF-8. */
int cli_utf8_valid(const char *s);

/* Characters (code points) of a UTF-8 string: JSON Schema's maxLength counts these. */
size_t cli_utf8_len(const char *s);

/* The string member `key` of object o, or def when missing or not a string. */
const char *cli_json_str(const json_t *o, const char *key, const char *def);

/* A short printable copy of s for messages: at most 40 characters, invalid
 * UTF-8 and control characters as '?', "..." when cut. The result lives in a
 * static ring of 8 buffers (valid until the 8th next call; one thread). */
const char *cli_show(const char *s);

/* Write s with control characters (terminal escapes, newlines) shown as '?':
 * for text from the network in readable output. */
void cli_put_safe(FILE *f, const char *s);

/* Strip blanks (space, tab, CR, LF) at both ends in place; returns s. */
char *cli_trim(char *s);

/* ---- a string map ------------------------------------------------------------ */

/* Strings (copied) to long values: ids seen in this run, rows by event id. */
typedef struct cli_map cli_map_t;
cli_map_t *cli_map_new(void);
void cli_map_destroy(cli_map_t **m);
/* Set key to value: 1 when the key is new, 0 when it was there (now updated). */
int cli_map_put(cli_map_t *m, const char *key, long value);
/* 1 and *value when the key is there, else 0. value may be NULL. */
int cli_map_get(const cli_map_t *m, const char *key, long *value);
size_t cli_map_size(const cli_map_t *m);

/* ---- the local log of outcomes (SPOOL/outcomes.jsonl) ------------------------- */

/*
 * Every program that sends events may receive `outcome` pushes (PROTOCOL §6)
 * right after its hello; libcarehub confirms them with `received` when the
 * push callback returns, so they are written here first: one JSON object
 * per line, the outcome message plus "received_at" (ms), appended and
 * fsync'ed, each outcome id once. `carehub-report outcomes --local` reads it.
 */
#define CLI_OUTCOMES_FILE "outcomes.jsonl"

typedef struct cli_outcomes cli_outcomes_t;

/* Open the log in spool_dir (created on the first outcome) and read the ids
 * already in it. Never NULL. */
cli_outcomes_t *cli_outcomes_open(const char *spool_dir);
void cli_outcomes_close(cli_outcomes_t **o);

/* Record an outcome message (JSON text). 1 when new and written, 0 when its
 * id is logged already, -1 when it cannot be written (message printed) or is
 * not an outcome object. */
int cli_outcomes_add(cli_outcomes_t *o, const char *json);

/*
 * The same log for other pushes kept by id (carehub-director's reminders in
 * SPOOL/reminders.jsonl): cli_pushlog_open(spool_dir, FILE), then
 * cli_outcomes_add() and cli_outcomes_close() as above. A message is on disk
 * (fsync'ed) when cli_outcomes_add() returns 1 or 0.
 */
typedef cli_outcomes_t cli_pushlog_t;
cli_pushlog_t *cli_pushlog_open(const char *spool_dir, const char *file);
/* The log's path (SPOOL/FILE). */
const char *cli_pushlog_path(const cli_pushlog_t *o);


#endif
