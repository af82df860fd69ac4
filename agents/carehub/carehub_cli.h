/*
 * carehub_cli.h — what the files of bin/carehub share (agents/carehub.c, the
 * command line and the commands; agents/carehub/: the session, printing, the
 * report). Not a library: one program's parts.
 */
#ifndef CAREHUB_CAREHUB_CLI_H
#define CAREHUB_CAREHUB_CLI_H

#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "carehub.h"
#include "cli.h"

#define PAGE_MAX 1000             /* the broker's largest page */
#define REGISTER_SAMPLE_MAX 100   /* the broker's largest register_sample n */
#define REGISTER_SEED_MAX 128     /* and its longest seed, in bytes */
#define SILENCE_MATCH_MAX 15      /* --match options: with --type, the broker's 16 conditions */

/* The options of the commands, as parsed by main. */
typedef struct {
    unsigned given;         /* BIT(OPT_*) of the options given */
    int json, csv, overdue, all;
    const char *html, *status, *agency, *type, *after, *data, *seed;
    const char *data_key, *head;  /* verify --data: the data key file, an anchored head */
    const char *village, *director; /* register, sample --register: filters (NULL: all) */
    int reg;                /* sample --register: draw register entries, not cases */
    int64_t since;          /* -1 = not given */
    /* silence add: --match key=value (up to SILENCE_MATCH_MAX), --starts, --ends, --for, --reason */
    const char *match[SILENCE_MATCH_MAX];
    int n_match;
    int64_t starts, ends, span; /* -1 = not given */
    const char *reason;
    long limit, n;
} opts_t;

/* ---- session.c: libcarehub without a spool, one request at a time ------------- */

typedef struct {
    carehub_t *c;
    const cli_common_t *co;
    int wait_ms;               /* for each answer (--wait) */
    char want[CAREHUB_ID_MAX + 1]; /* the request waiting for its answer */
    int answered;              /* 1 answer in reply, -1 refused (code, error, field) */
    json_t *reply;
    cli_nack_t nack;
} sess_t;

/* Connect and say hello: 0, or an exit code with the message printed
 * (75 unreachable, 77 refused, 64 a bad option). */
int sess_open(sess_t *s, cli_common_t *co);
void sess_close(sess_t *s);
/* One request ({op, ...} without v and id): 0 and the answer in *out, or an
 * exit code with the message printed (65 refused, 75 no answer). */
int sess_request(sess_t *s, json_t *req, json_t **out);
/* A query {op:"query", what, ...fields}: 0 and the answer in *out, or an exit
 * code with the message printed (65 refused, 75 no answer). */
int sess_query(sess_t *s, const char *what, json_t *fields, json_t **out);
/* The query `what` ("case", "trail") of one case: {case: case_id}. */
int sess_query_case(sess_t *s, const char *what, const char *case_id, json_t **out);
/* Every item (`key` of each answer) of the list query `what`, following `next`
 * while all (else one page). items gets them; *last the last answer (or NULL). */
int sess_query_pages(sess_t *s, const char *what, json_t *fields, const char *key, int all,
                     json_t *items, json_t **last, const char **next_out);

/* ---- show.c: printing ------------------------------------------------------- */

int show_is_time_key(const char *k);
void show_val(FILE *f, const char *key, const json_t *v);
void show_tree(FILE *f, const char *indent, const char *prefix, const json_t *o);
void show_json_line(const json_t *j);
void show_cell(const char *key, const json_t *v, int width);
void show_case_row(const json_t *c);
void show_case_header(void);
/* A table's header line: en[k] or zh[k] (cli_tr), each but the last padded to
 * width[k] display columns and followed by a space. */
void show_header(const char *const *en, const char *const *zh, const int *width, size_t n);
/* " key=value" for each of keys (NULL-terminated) that o has, values as show_val. */
void show_fields(FILE *f, const json_t *o, const char *const *keys);
/* s with HTML's special characters as entities, control characters as '?'. */
void show_html_escape(FILE *f, const char *s);
/* s as one CSV field (RFC 4180: quoted when it holds a comma, quote or newline). */
void show_csv_field(FILE *f, const char *s);
/* The columns s (UTF-8) takes in a terminal: CJK and fullwidth characters count 2. */
size_t show_width(const char *s);
/* s as cli_put_safe() writes it, padded with blanks to width terminal columns
 * (right: on the left, for numbers); nothing is cut. */
void show_padded(FILE *f, const char *s, int width, int right);

/* ---- report.c --------------------------------------------------------------- */

/* `carehub report`: an exit code. */
int report_command(sess_t *s, const opts_t *o);

/* ---- register.c --------------------------------------------------------------- */

/* `carehub register` (the register per village and director, PROTOCOL §9): an exit code. */
int register_command(sess_t *s, const opts_t *o);
/* `carehub sample --register` (the yearly spot check of register entries): an exit code. */
int register_sample_command(sess_t *s, const opts_t *o);

/* ---- silence.c --------------------------------------------------------------- */

/* `carehub silence add|list|expire` (PROTOCOL §10; supervisors): args[0] is the
 * subcommand, args[1] the silence id for expire. silence_usage() checks them
 * and the options before anything is sent (0, or CLI_EX_USAGE with the message
 * printed); silence_command() runs it: an exit code. */
int silence_usage(const opts_t *o, int nargs, char **args);
int silence_command(sess_t *s, const opts_t *o, int nargs, char **args);

#endif
