/*
 * carehub-school — send a school's daily attendance export to carehub.
 *
 *   carehub-school -b ENDPOINT -a AGENT --school NAME [options] FILE.csv…
 *
 * Every row whose status is `absent` becomes one `absence` event (PROTOCOL
 * §8); present and late rows are counted and skipped. The event's id (the
 * idempotency key) is derived from school + student + date with the school's
 * own key (idkey.h), so sending the same export twice, or a later export that
 * repeats a day, never makes a second event (the broker answers the repeats
 * with duplicate:true), and no one without the key can tell the student from it.
 *
 * Events go through libcarehub's spool: each is on disk before the program
 * waits for the broker, and what the broker has not acknowledged within
 * --wait stays there for the next run (exit 75).
 *
 * The CSV format (header names, values, also the Chinese ones of row.c) is
 * documented in docs/agents.md and in --help. The file is UTF-8 or GB18030/GBK
 * (--encoding, or detected: carehub-school/enc.h); each field is converted to
 * UTF-8 with iconv after the CSV reader split the record, so that the ids come
 * from the converted text and an undecodable byte spoils only its row. A bad
 * row is reported as FILE:LINE and skipped; the good rows are still sent, and
 * the exit code is 65.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "carehub_wire.h"
#include "carehub.h"
#include "carehub-school/enc.h"
#include "carehub-school/row.h"
#include "cli.h"
#include "csv.h"
#include "idkey.h"
#include "schema_tables.h"
#include "util.h"

#define SOFTWARE "carehub-school/1.0"
/* The school's id key in the spool (idkey.h), and the prefix of an absence's id:
 * "abs:" + 60 hex digits of BLAKE2b-240(school NUL student NUL date), keyed. */
#define IDKEY_FILE "school-id.key"
#define ABSENCE_ID_PREFIX "abs:"
#define DEFAULT_WAIT_MS 30000

/* ---- the run --------------------------------------------------------------------- */

/* One absence submitted in this run. */
typedef struct {
    const char *file;   /* the file it came from (argv) */
    long line;          /* the line its record started on */
    char key[CAREHUB_ID_MAX + 1];       /* its event id (idempotency key) */
    char student[SCHEMA_ABSENCE_CHILD_ID_MAX_LENGTH * 4 + 1];  /* student_id (UTF-8) */
    char date[11];      /* the day of the absence */
    int done;           /* acknowledged or refused */
} row_t;

typedef struct {
    row_t *rows;
    size_t nrows, cap;
    cli_map_t *by_key;   /* key -> index in rows */
    int json;            /* --json: one JSON line per result */
    const char *school;
    unsigned char idkey[IDKEY_BYTES]; /* the school's secret behind its ids (idkey.h) */
    cli_outcomes_t *outcomes; /* outcomes pushed after hello are logged here */
    carehub_t *c;             /* for carehub_event_tag() in the callbacks */
    row_t earlier_row;        /* a row of an earlier run, from its spool tag */
    char earlier_file[1024];
    long bad;            /* rows refused here */
    long refused;        /* events refused by the broker */
    long acked_new, acked_dup, earlier;
    long absent, skipped;
} school_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [-b ENDPOINT] -a AGENT --school NAME [options] FILE.csv...\n"
            "       %s --check --school NAME [--separator C] [--encoding E] FILE.csv...\n"
            "\n"
            "Send the absent rows of a school's attendance export (CSV, UTF-8 or GB18030) to carehub as\n"
            "`absence` events, one per pupil and day. Running it again on the same file sends\n"
            "nothing twice (the event id comes from school + student + date, hashed with the\n"
            "school's own id key, so that the id does not give the student away).\n"
            "\n"
            "Options:\n"
            "%s"
            "      --school NAME      the school's name or code, sent in every event (required)\n"
            "      --json             print one JSON line per acknowledged or refused event\n"
            "      --check            only check the file(s): report bad rows, send nothing\n"
            "      --separator C      the field separator: , (default) ; or tab\n"
            "      --allow-extra-columns  ignore columns this program does not know\n"
            "      --encoding E       the file's encoding: utf-8, gb18030 or gbk; default: detected\n"
            "                         (a UTF-8 byte order mark or (mostly) valid UTF-8: UTF-8;\n"
            "                         else GB18030)\n"
            "      --id-key FILE      the school's id key (32 bytes, mode 0600); default\n"
            "                         SPOOL/school-id.key, made on the first run: keep it with\n"
            "                         the spool (lost, the days sent again become new events)\n"
            "\n"
            "The first line names the columns (any order; case, spaces and '-' are ignored).\n"
            "Required: student_id, name, date (YYYY-MM-DD), status (present|late|absent),\n"
            "reason (%s; empty means unknown),\n"
            "consecutive_days (school days absent in a row, this day included; required on\n"
            "absent rows). Optional: gender (%s), birth_date,\n"
            "guardian_contacted (yes|no|true|false), period (%s),\n"
            "guardian_name, guardian_relation, guardian_phone, category\n"
            "(%s;\n"
            "several separated by ';'), jurisdiction, severity (%s),\n"
            "note. Empty optional cells are left out (the values: schemas/absence.json).\n"
            "Chinese headers and values are accepted too (学号, 姓名, 日期, 出勤状态, 缺勤原因,\n"
            "连续缺勤天数, …; 缺勤, 病假, 男, 全天, 是, …): the table is in docs/agents.md.\n"
            "\n"
            "Exit: 0 all sent and acknowledged; 64 usage; 65 a bad row or a refused event (the\n"
            "good rows are still sent); 66 a file cannot be opened (nothing is sent); 74 the\n"
            "spool cannot be written, or a read error; 75 the broker stayed silent for --wait\n"
            "(default %ds) with events unacknowledged: they stay in the spool and go out on\n"
            "the next run; 77 the broker refused this agent (not configured).\n",
            cli_prog(), cli_prog(), cli_common_help, SCHEMA_ABSENCE_REASON_ENUM_TEXT,
            SCHEMA_ABSENCE_CHILD_GENDER_ENUM_TEXT, SCHEMA_ABSENCE_PERIOD_ENUM_TEXT,
            SCHEMA_ABSENCE_CHILD_CATEGORY_ITEMS_ENUM_TEXT, SCHEMA_ABSENCE_SEVERITY_ENUM_TEXT,
            DEFAULT_WAIT_MS / 1000);
}

/* Header cell (UTF-8) -> column (csv_header_name: case, blanks and '-' ignored; the
 * Chinese names of row_column_alias). -1 when unknown, ROW_COL_IGNORED for one that is
 * known and not sent. */
static int column_of(const char *cell)
{
    char norm[64];
    if (!strncmp(cell, "\xef\xbb\xbf", 3))
        cell += 3; /* U+FEFF: a byte order mark converted from GB18030 */
    if (csv_header_name(cell, norm, sizeof norm) < 0)
        return -1;
    for (int i = 0; i < NCOLS; i++)
        if (!strcmp(norm, COLS[i].name))
            return i;
    return row_column_alias(norm);
}

/* The fields of the record just read, converted to UTF-8 (n of them, each freed by
 * free_fields); NULL with why[] naming the field when one cannot be decoded. */
static char **convert_fields(csv_reader_t *r, enc_conv_t *conv, size_t n, char **hdr,
                             char *why, size_t whylen)
{
    char **u = xcalloc(n ? n : 1, sizeof *u);
    char sub[200];
    for (size_t i = 0; i < n; i++) {
        if (!(u[i] = enc_to_utf8(conv, csv_field(r, i), csv_field_len(r, i), sub, sizeof sub))) {
            if (hdr)
                util_fmt(why, whylen, "field %zu (%s) cannot be read: %s", i + 1,
                         cli_show(hdr[i]), sub);
            else
                util_fmt(why, whylen, "field %zu cannot be read: %s", i + 1, sub);
            for (size_t j = 0; j < i; j++)
                free(u[j]);
            free(u);
            return NULL;
        }
    }
    return u;
}

static void free_fields(char **u, size_t n)
{
    for (size_t i = 0; u && i < n; i++)
        free(u[i]);
    free(u);
}


/* ---- callbacks --------------------------------------------------------------------- */

static void print_result(school_t *s, const row_t *r, int earlier, const char *ref,
                         const char *event,
                         const char *case_id, int duplicate, const char *code, const char *error,
                         const char *field)
{
    if (s->json) {
        json_t *o = json_object();
        if (r) {
            row_set_str(o, "file", r->file);
            json_object_set_new(o, "line", json_integer(r->line));
            row_set_str(o, "student_id", r->student);
            row_set_str(o, "date", r->date);
        }
        if (earlier || !r)
            json_object_set_new(o, "earlier_run", json_true());
        row_set_str(o, "id", ref);
        if (code) {
            row_set_str(o, "status", "refused");
            row_set_str(o, "code", code);
            row_set_str(o, "error", error ? error : "");
            if (field)
                row_set_str(o, "field", field);
        } else {
            row_set_str(o, "status", "acknowledged");
            row_set_str(o, "event", event);
            row_set_str(o, "case", case_id);
            json_object_set_new(o, "duplicate", json_boolean(duplicate));
        }
        char *text = json_dumps(o, JSON_COMPACT);
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(o);
        fflush(stdout);
        return;
    }
    if (code) {
        if (r)
            fprintf(stderr, "%s:%ld: the broker refused the absence of %s on %s%s: %s: %s%s%s\n",
                    r->file, r->line, r->student, r->date, earlier ? " (an earlier run)" : "",
                    code, error ? error : "", field ? " at " : "", field ? field : "");
        else
            fprintf(stderr, "%s: the broker refused event %s (from an earlier run): %s: %s\n",
                    cli_prog(), ref, code, error ? error : "");
        return;
    }
    if (r)
        printf("%s:%ld  %s  %s  case %s  event %s  %s%s\n", r->file, r->line, r->student,
               r->date, case_id, event, duplicate ? "already sent" : "new",
               earlier ? " (spooled by an earlier run)" : "");
    else
        printf("earlier run  %s  case %s  event %s  %s\n", ref, case_id, event,
               duplicate ? "already sent" : "new");
    fflush(stdout);
}

/* The spool tag of an event: where it came from, "LINE\tSTUDENT\tDATE\tFILE". */
static void row_tag(const char *file, long line, const char *student, const char *date,
                    char *buf, size_t len)
{
    util_fmt(buf, len, "%ld\t%s\t%s\t%s", line, student, date, file);
}

/* The row an answer is about: one of this run, or one of an earlier run
 * rebuilt from the event's spool tag (*earlier = 1), or NULL. */
static row_t *row_of(school_t *s, const char *ref, int *earlier)
{
    long i;
    *earlier = 0;
    if (ref && cli_map_get(s->by_key, ref, &i))
        return &s->rows[i];
    const char *tag = s->c ? carehub_event_tag(s->c) : NULL;
    if (!tag || !ref)
        return NULL;
    row_t *r = &s->earlier_row;
    memset(r, 0, sizeof *r);
    char *end = NULL;
    r->line = strtol(tag, &end, 10);
    if (*end != '\t')
        return NULL;
    const char *st = end + 1, *dt = strchr(st, '\t');
    const char *fl = dt ? strchr(dt + 1, '\t') : NULL;
    if (!dt || !fl || (size_t)(dt - st) >= sizeof r->student || (size_t)(fl - dt - 1) >= sizeof r->date)
        return NULL;
    memcpy(r->student, st, (size_t)(dt - st));
    memcpy(r->date, dt + 1, (size_t)(fl - dt - 1));
    util_fmt(s->earlier_file, sizeof s->earlier_file, "%s", fl + 1);
    r->file = s->earlier_file;
    util_fmt(r->key, sizeof r->key, "%s", ref);
    *earlier = 1;
    return r;
}

/* The row an answer to ref is about (see row_of), marked done; *again when this
 * run's row was answered before (a second answer to a resend: not counted). */
static row_t *answered(school_t *s, const char *ref, int *earlier, int *again)
{
    row_t *r = row_of(s, ref, earlier);
    *again = 0;
    if (r && !*earlier) {
        *again = r->done;
        r->done = 1;
    }
    return r;
}

static void on_ack(void *ud, const char *ref, const char *event, const char *case_id, int duplicate)
{
    school_t *s = ud;
    int earlier, again;
    row_t *r = answered(s, ref, &earlier, &again);
    if (again)
        return;
    if (!r || earlier)
        s->earlier++;
    if (duplicate)
        s->acked_dup++;
    else
        s->acked_new++;
    print_result(s, r, earlier, ref, event, case_id, duplicate, NULL, NULL, NULL);
}

static void on_nack(void *ud, const char *ref, const char *code, const char *error,
                    const char *field)
{
    school_t *s = ud;
    int earlier, again;
    row_t *r = answered(s, ref, &earlier, &again);
    if (again)
        return;
    s->refused++;
    print_result(s, r, earlier, ref ? ref : "", NULL, NULL, 0, code ? code : "?", error, field);
}

/* A case the school reported on was resolved: keep the outcome (libcarehub
 * confirms it with `received` when this returns). */
static void on_push(void *ud, const char *op, const char *json)
{
    school_t *s = ud;
    if (strcmp(op, "outcome") != 0 || !s->outcomes)
        return;
    if (cli_outcomes_add(s->outcomes, json) == 1) {
        json_t *j = json_loads(json, 0, NULL);
        fprintf(stderr, "%s: outcome of case %s (event %s): %s; kept in %s\n", cli_prog(),
                cli_json_str(j, "case", "?"), cli_json_str(j, "ref", "?"),
                cli_json_str(j, "status", "?"), CLI_OUTCOMES_FILE);
        json_decref(j);
    }
}

/* ---- reading a file ----------------------------------------------------------------- */

static void bad_row(school_t *s, const char *file, long line, const char *why)
{
    s->bad++;
    fprintf(stderr, "%s:%ld: %s; row skipped\n", file, line, why);
}

/*
 * Read one export and submit its absent rows (c is NULL with --check).
 * 0, or CLI_EX_IO / CLI_EX_DATA for a failure that stops this file (the
 * message is printed).
 */
static int read_file(school_t *s, carehub_t *c, const char *path, FILE *f, char sep,
                     int allow_extra, enc_t enc)
{
    csv_limits_t lim = {sep, 16384, 64, 262144};
    csv_reader_t *r = NULL;
    enc_conv_t *conv = NULL;
    FILE *in = f;   /* with a detection: a stream over f (enc_detect_stream) */
    char **hdr = NULL;
    int colpos[NCOLS];
    size_t ncells = 0;
    int rc = 0;
    char why[512];
    const char *how = enc == ENC_AUTO ? "detected" : "given";

    for (int i = 0; i < NCOLS; i++)
        colpos[i] = -1;
    if (enc == ENC_AUTO && !(in = enc_detect_stream(f, &enc))) {
        fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
        return CLI_EX_IO;
    }
    if (!enc_separator_ok(enc, sep)) {
        fprintf(stderr, "%s: the separator '%c' can be part of a %s character (%s): use , ; "
                        "or tab\n", path, sep, enc_name(enc), how);
        rc = CLI_EX_DATA;
        goto out;
    }
    if (!(conv = enc_conv_new(enc))) {
        fprintf(stderr, "%s: iconv cannot convert %s to UTF-8: %s\n", path, enc_name(enc),
                strerror(errno));
        rc = CLI_EX_IO;
        goto out;
    }
    r = csv_new(in, &lim);

    /* the header */
    for (;;) {
        int k = csv_next(r);
        if (k == CSV_EOF) {
            fprintf(stderr, "%s: the file is empty (the first line must name the columns)\n", path);
            rc = CLI_EX_DATA;
            goto out;
        }
        if (k == CSV_IOERR) {
            fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
            rc = CLI_EX_IO;
            goto out;
        }
        if (k == CSV_BAD) {
            fprintf(stderr, "%s:%ld: the header line is not valid CSV: %s\n", path, csv_line(r),
                    csv_error(r));
            rc = CLI_EX_DATA;
            goto out;
        }
        break;
    }
    ncells = csv_count(r);
    if (!(hdr = convert_fields(r, conv, ncells, NULL, why, sizeof why))) {
        fprintf(stderr, "%s:%ld: the header line is not %s (%s; --encoding utf-8|gb18030|gbk "
                        "names the file's encoding): %s\n",
                path, csv_line(r), enc_name(enc), how, why);
        rc = CLI_EX_DATA;
        goto out;
    }
    for (size_t i = 0; i < ncells; i++) {
        const char *h = hdr[i];
        int col = column_of(h);
        if (col == ROW_COL_IGNORED)
            continue;
        if (col < 0) {
            if (allow_extra)
                continue;
            fprintf(stderr, "%s:%ld: unknown column '%s' (misspelt? known: student_id, name, "
                            "date, status, reason, consecutive_days, gender, birth_date, "
                            "guardian_contacted, period, guardian_name, guardian_relation, "
                            "guardian_phone, category, jurisdiction, severity, note, or "
                            "their Chinese names (docs/agents.md); file read as %s, %s; "
                            "--allow-extra-columns ignores others)\n",
                    path, csv_line(r), cli_show(h), enc_name(enc), how);
            rc = CLI_EX_DATA;
            goto out;
        }
        if (colpos[col] >= 0) {
            fprintf(stderr, "%s:%ld: column %s appears twice\n", path, csv_line(r),
                    COLS[col].name);
            rc = CLI_EX_DATA;
            goto out;
        }
        colpos[col] = (int)i;
    }
    for (int i = 0; i < NCOLS; i++) {
        if (COLS[i].required && colpos[i] < 0) {
            fprintf(stderr, "%s:%ld: the header has no %s column (required: student_id, name, "
                            "date, status, reason, consecutive_days)\n",
                    path, csv_line(r), COLS[i].name);
            rc = CLI_EX_DATA;
            goto out;
        }
    }

    /* the rows */
    for (;;) {
        int k = csv_next(r);
        if (k == CSV_EOF)
            break;
        if (k == CSV_IOERR) {
            fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
            rc = CLI_EX_IO;
            goto out;
        }
        long line = csv_line(r);
        if (k == CSV_BAD) {
            bad_row(s, path, line, csv_error(r));
            continue;
        }
        size_t n = csv_count(r);
        int blank = 1;
        for (size_t i = 0; i < n && blank; i++) {
            const char *v = csv_field(r, i);
            blank = v[strspn(v, " \t")] == '\0';
        }
        if (blank)
            continue;
        if (n != ncells) {
            util_fmt(why, sizeof why, "the row has %zu fields, the header %zu", n, ncells);
            bad_row(s, path, line, why);
            continue;
        }
        char sub[400];
        char **u = convert_fields(r, conv, n, hdr, sub, sizeof sub);
        if (!u) {
            util_fmt(why, sizeof why, "the row is not valid %s (%s): %s%s", enc_name(enc), how,
                     sub, enc == ENC_UTF8 ? " (a GB18030/GBK export? give --encoding gb18030)"
                                          : "");
            bad_row(s, path, line, why);
            continue;
        }
        cells_t cells;
        for (int i = 0; i < NCOLS; i++)
            cells.v[i] = cli_trim(xstrdup(colpos[i] >= 0 ? u[colpos[i]] : ""));
        free_fields(u, n);
        row_map_values(&cells);

        char *status = cells.v[COL_STATUS];
        row_lower_ascii(status);
        if (cli_enum_index(status, STATUS_SKIP) >= 0) {
            s->skipped++;
            row_cells_free(&cells);
            continue;
        }
        if (strcmp(status, "absent") != 0) {
            util_fmt(why, sizeof why, "status '%s' is not present, late or absent", cli_show(status));
            bad_row(s, path, line, why);
            row_cells_free(&cells);
            continue;
        }
        json_t *body = row_absence_body(s->school, &cells, why, sizeof why);
        if (!body) {
            bad_row(s, path, line, why);
            row_cells_free(&cells);
            continue;
        }
        char key[CAREHUB_ID_MAX + 1];
        const char *parts[] = {s->school, cells.v[COL_STUDENT_ID], cells.v[COL_DATE]};
        idkey_id(s->idkey, ABSENCE_ID_PREFIX, parts, 3, key);
        long prev;
        if (cli_map_get(s->by_key, key, &prev)) {
            util_fmt(why, sizeof why, "student %s is already absent on %s at %s:%ld (one "
                     "absence per pupil and day)", cli_show(cells.v[COL_STUDENT_ID]), cells.v[COL_DATE],
                     s->rows[prev].file, s->rows[prev].line);
            bad_row(s, path, line, why);
            json_decref(body);
            row_cells_free(&cells);
            continue;
        }
        if (s->nrows == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 64;
            s->rows = xrealloc(s->rows, s->cap * sizeof *s->rows);
        }
        row_t *row = &s->rows[s->nrows];
        memset(row, 0, sizeof *row);
        row->file = path;
        row->line = line;
        memcpy(row->key, key, sizeof row->key);
        util_fmt(row->student, sizeof row->student, "%s", cells.v[COL_STUDENT_ID]);
        util_fmt(row->date, sizeof row->date, "%s", cells.v[COL_DATE]);
        cli_map_put(s->by_key, key, (long)s->nrows);
        s->nrows++;
        s->absent++;
        row_cells_free(&cells);

        if (c) {
            char *text = json_dumps(body, JSON_COMPACT);
            char tag[1400];
            row_tag(path, line, row->student, row->date, tag, sizeof tag);
            int err = text ? carehub_submit_tagged(c, "absence", 0, text, key, tag, NULL)
                           : CAREHUB_EJSON;
            free(text);
            if (err != CAREHUB_OK) {
                fprintf(stderr, "%s:%ld: cannot put the event in the spool: %s\n", path, line,
                        carehub_last_error(c));
                json_decref(body);
                rc = cli_exit_for(err) == CLI_EX_IO ? CLI_EX_IO : CLI_EX_DATA;
                goto out;
            }
            if (s->nrows % 64 == 0)
                (void)carehub_poll(c, 0);   /* let acks in; errors show in the wait below */
        }
        json_decref(body);
    }
out:
    free_fields(hdr, ncells);
    csv_destroy(&r);
    enc_conv_free(&conv);
    if (in != f)
        fclose(in);
    return rc;
}

/* The broker's answers so far (a cli_until_t progress). */
static size_t answer_count(carehub_t *c, void *ud)
{
    (void)c;
    const school_t *s = ud;
    return (size_t)(s->acked_new + s->acked_dup + s->refused);
}

/* ---- main ------------------------------------------------------------------------------ */

enum { OPT_SCHOOL = CLI_OPT_FIRST_PROGRAM, OPT_JSON, OPT_CHECK, OPT_SEPARATOR, OPT_EXTRA, OPT_ID_KEY,
       OPT_ENCODING };

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"school", required_argument, NULL, OPT_SCHOOL},
        {"json", no_argument, NULL, OPT_JSON},
        {"check", no_argument, NULL, OPT_CHECK},
        {"separator", required_argument, NULL, OPT_SEPARATOR},
        {"allow-extra-columns", no_argument, NULL, OPT_EXTRA},
        {"id-key", required_argument, NULL, OPT_ID_KEY},
        {"encoding", required_argument, NULL, OPT_ENCODING},
        {NULL, 0, NULL, 0},
    };
    cli_common_t co;
    school_t s;
    int check = 0, allow_extra = 0, opt, rc;
    const char *id_key = NULL;
    char sep = ',';
    enc_t enc = ENC_AUTO;

    cli_init(argv[0]);
    cli_common_init(&co);
    memset(&s, 0, sizeof s);
    while ((opt = cli_getopt(&co, argc, argv, longopts)) > 0) {
        switch (opt) {
        case OPT_SCHOOL:
            s.school = optarg;
            break;
        case OPT_JSON:
            s.json = 1;
            break;
        case OPT_CHECK:
            check = 1;
            break;
        case OPT_SEPARATOR:
            if (!strcmp(optarg, "tab") || !strcmp(optarg, "\\t"))
                sep = '\t';
            else if (strlen(optarg) == 1 && optarg[0] != '"' && optarg[0] != '\n' &&
                     optarg[0] != '\r')
                sep = optarg[0];
            else {
                cli_err("--separator %s: give one character, e.g. , or ; or tab", optarg);
                return CLI_EX_USAGE;
            }
            break;
        case OPT_EXTRA:
            allow_extra = 1;
            break;
        case OPT_ID_KEY:
            id_key = optarg;
            break;
        case OPT_ENCODING:
            if (enc_parse(optarg, &enc) < 0) {
                cli_err("--encoding %s: give utf-8, gb18030 or gbk", optarg);
                return CLI_EX_USAGE;
            }
            break;
        default:
            fprintf(stderr, "Try '%s --help'.\n", cli_prog());
            return CLI_EX_USAGE;
        }
    }
    if (opt < 0)
        return CLI_EX_USAGE;
    if (co.help) {
        usage(stdout);
        return CLI_EX_OK;
    }
    if (!s.school || !*s.school) {
        cli_err("--school NAME is required: the school's name or code, as the events carry it");
        return CLI_EX_USAGE;
    }
    if (cli_utf8_len(s.school) > SCHEMA_ABSENCE_SCHOOL_MAX_LENGTH ||
        !util_utf8_valid(s.school, strlen(s.school))) {
        cli_err("--school: at most %d characters of UTF-8", SCHEMA_ABSENCE_SCHOOL_MAX_LENGTH);
        return CLI_EX_USAGE;
    }
    if (optind >= argc) {
        cli_err("no file: give the attendance export(s) to send (- for standard input)");
        return CLI_EX_USAGE;
    }
    if (!check && (rc = cli_common_check(&co, 1)) != 0)
        return rc;
    if (sodium_init() < 0) {
        cli_err("libsodium cannot start");
        return CLI_EX_IO;
    }

    /* Open every file first: nothing is sent when one cannot be read. */
    int nfiles = argc - optind;
    FILE **files = xcalloc((size_t)nfiles, sizeof *files);
    int stdin_used = 0;
    rc = CLI_EX_OK;
    for (int i = 0; i < nfiles; i++) {
        const char *path = argv[optind + i];
        if (!strcmp(path, "-")) {
            if (stdin_used++) {
                cli_err("- (standard input) given twice");
                rc = CLI_EX_USAGE;
                break;
            }
            files[i] = stdin;
        } else if (!(files[i] = fopen(path, "rb"))) {
            cli_err("cannot open %s: %s", path, strerror(errno));
            rc = CLI_EX_NOINPUT;
            break;
        }
    }

    carehub_t *c = NULL;
    s.by_key = cli_map_new();
    if (rc == CLI_EX_OK && !check) {
        carehub_callbacks_t cb = {on_ack, on_nack, on_push, NULL, &s};
        s.outcomes = cli_outcomes_open(co.spool_dir);
        c = cli_open(&co, SOFTWARE, &cb, &rc);
        s.c = c;
    }
    if (rc == CLI_EX_OK && check) {
        randombytes_buf(s.idkey, sizeof s.idkey); /* --check sends nothing: ids only pair rows */
    } else if (rc == CLI_EX_OK && c) { /* after cli_open: the spool exists */
        char path[4200], why[4400];
        int created;
        util_fmt(path, sizeof path, "%s/%s", co.spool_dir, IDKEY_FILE);
        if (idkey_load(id_key ? id_key : path, !id_key, s.idkey, &created, why, sizeof why)) {
            cli_err("the school's id key %s %s", id_key ? id_key : path, why);
            rc = CLI_EX_NOINPUT;
        }
        if (created)
            fprintf(stderr, "%s: made the school's id key %s: keep it with the spool (without it, "
                    "days sent again become new events)\n", cli_prog(), path);
    }
    cli_catch_signals();
    int file_rc = 0;
    for (int i = 0; rc == CLI_EX_OK && i < nfiles && !cli_stop; i++) {
        int k = read_file(&s, c, argv[optind + i], files[i], sep, allow_extra, enc);
        if (k == CLI_EX_IO) {
            rc = CLI_EX_IO;   /* the spool or the file broke: stop */
        } else if (k && !file_rc) {
            file_rc = k;
        }
    }

    if (rc == CLI_EX_OK && c) {
        /* --wait is how long the broker may stay silent: each answer restarts it,
         * so a long export is not cut short while acks keep coming. */
        int wait_ms = cli_wait(&co, DEFAULT_WAIT_MS);
        cli_until_t u = {cli_nothing_pending, answer_count, &s, 0};
        rc = cli_poll_until(c, wait_ms, &u);
        size_t pending = carehub_pending(c);
        if (rc == CLI_EX_OK && pending > 0) {
            cli_err("%zu event(s) not acknowledged (no answer for %d s; %s): they stay in the "
                    "spool %s and go out on the next run",
                    pending, wait_ms / 1000,
                    carehub_connected(c) ? "the broker is slow" : "the broker did not answer",
                    co.spool_dir);
            rc = CLI_EX_UNREACHABLE;
        }
    }

    FILE *sum = s.json ? stderr : stdout;
    if (rc != CLI_EX_USAGE) {
        fprintf(sum, "%ld absent row(s) read, %ld present or late, %ld bad", s.absent, s.skipped,
                s.bad);
        if (check)
            fprintf(sum, " (checked only; nothing sent)\n");
        else
            fprintf(sum, "; acknowledged: %ld new, %ld already sent; refused: %ld\n", s.acked_new,
                    s.acked_dup, s.refused);
    }
    if (rc == CLI_EX_OK || rc == CLI_EX_UNREACHABLE) {
        if (s.bad || s.refused || file_rc)
            rc = CLI_EX_DATA;
    }

    carehub_destroy(&c);
    for (int i = 0; i < nfiles; i++)
        if (files[i] && files[i] != stdin)
            fclose(files[i]);
    free(files);
    free(s.rows);
    cli_map_destroy(&s.by_key);
    cli_outcomes_close(&s.outcomes);
    return rc;
}
