/*
 * carehub-director — the child director's (儿童主任) program: the register of
 * a village's children and the contacts and home visits it asks for (PROTOCOL §9).
 *
 *   carehub-director [common options] enrol FILE.csv [--village V]
 *   carehub-director [common options] visit CHILD_ID --kind contact|home_visit [fields]
 *   carehub-director [common options] --interactive     (or `interactive`: a visit as a form)
 *   carehub-director [common options] due [--within DURATION]
 *   carehub-director [common options] reminders [--local]
 *   carehub-director [common options] flush
 *
 * Store-and-forward like the other agent programs: every event is in
 * libcarehub's spool before the program waits for the broker, and what the
 * broker has not acknowledged within --wait stays there for the next run.
 *
 * Ids: an enrolment's id is a keyed hash of its row's content (roster.h), a
 * visit's of its fields, with the director's id key (idkey.h,
 * SPOOL/director-id.key): enrolling the same roster twice, or sending the same
 * visit again, sends nothing new (the broker answers duplicate:true), and no
 * one without the key can tell the child from an id.
 *
 * Privacy: children's names are printed only by `due`, on standard output (the
 * director's own terminal). Messages on standard error name rows by FILE:LINE
 * and children by their id, never by name; the local files (the roster state,
 * reminders.jsonl, outcomes.jsonl) hold no names. Only the outgoing events in
 * the spool carry what the director enrolled, as with every agent.
 *
 * Reminders the broker pushes (`reminder`, §9) are kept in SPOOL/reminders.jsonl
 * (fsync'ed) before libcarehub confirms them, in every mode; `reminders` lists them.
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
#include "carehub-director/roster.h"
#include "carehub-director/show.h"
#include "carehub-director/visit.h"
#include "cli.h"
#include "csv.h"
#include "idkey.h"
#include "schema_tables.h"
#include "util.h"

#define SOFTWARE "carehub-director/1.0"
#define DEFAULT_WAIT_MS DIRECTOR_DEFAULT_WAIT_MS
#define DEFAULT_QUIET_MS DIRECTOR_DEFAULT_QUIET_MS
#define DEFAULT_WITHIN_MS (7 * 86400000LL)
#define IDKEY_FILE DIRECTOR_IDKEY_FILE
#define REMINDERS_FILE DIRECTOR_REMINDERS_FILE

/* One event submitted in this run. */
typedef struct {
    const char *file;   /* enrolment: the roster it came from; NULL for a visit */
    long line;
    char key[CAREHUB_ID_MAX + 1];
    char child[CAREHUB_ID_MAX + 1];
    int done;
} item_t;

typedef struct {
    item_t *items;
    size_t n, cap;
    cli_map_t *by_key;          /* event id -> index in items */
    carehub_t *c;
    int json;
    unsigned char idkey[IDKEY_BYTES];
    roster_state_t *roster;
    cli_pushlog_t *reminders;   /* SPOOL/reminders.jsonl */
    cli_outcomes_t *outcomes;   /* SPOOL/outcomes.jsonl */
    cli_map_t *reminders_seen;  /* reminder ids that came in this run */
    item_t earlier;             /* an event of an earlier run, from its spool tag */
    char earlier_file[1024];
    long bad, refused, acked_new, acked_dup, from_earlier, rows;
    /* `due`: */
    char query_id[CAREHUB_ID_MAX + 1];
    json_t *result;
    int answered;               /* 1 result, -1 refused */
    cli_nack_t nack;
} director_t;

/* ---- answers ------------------------------------------------------------------------------- */

static void print_json(json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(o);
    fflush(stdout);
}

/* The spool tag of an event: "enrol\tLINE\tCHILD\tFILE" or "visit\t0\tCHILD\t". */
static void item_tag(const item_t *it, char *buf, size_t len)
{
    util_fmt(buf, len, "%s\t%ld\t%s\t%s", it->file ? "enrol" : "visit", it->line, it->child,
             it->file ? it->file : "");
}

/* The event an answer is about: one of this run, or one of an earlier run from
 * its spool tag (*earlier = 1), or NULL. */
static item_t *item_of(director_t *d, const char *ref, int *earlier)
{
    long i;
    *earlier = 0;
    if (ref && cli_map_get(d->by_key, ref, &i))
        return &d->items[i];
    const char *tag = d->c ? carehub_event_tag(d->c) : NULL;
    if (!tag || !ref)
        return NULL;
    item_t *it = &d->earlier;
    memset(it, 0, sizeof *it);
    int enrol = !strncmp(tag, "enrol\t", 6);
    if (!enrol && strncmp(tag, "visit\t", 6) != 0)
        return NULL;
    char *end = NULL;
    it->line = strtol(tag + 6, &end, 10);
    const char *ch = end && *end == '\t' ? end + 1 : NULL;
    const char *fl = ch ? strchr(ch, '\t') : NULL;
    if (!fl || (size_t)(fl - ch) >= sizeof it->child)
        return NULL;
    memcpy(it->child, ch, (size_t)(fl - ch));
    util_fmt(d->earlier_file, sizeof d->earlier_file, "%s", fl + 1);
    it->file = enrol ? d->earlier_file : NULL;
    util_fmt(it->key, sizeof it->key, "%s", ref);
    *earlier = 1;
    return it;
}

static void print_answer(director_t *d, const item_t *it, int earlier, const char *ref,
                         const char *event, const char *case_id, int dup, const char *code,
                         const char *error, const char *field)
{
    if (d->json) {
        json_t *o = json_object();
        if (it && it->file) {
            json_object_set_new(o, "file", json_string(it->file));
            json_object_set_new(o, "line", json_integer(it->line));
        }
        json_object_set_new(o, "type", json_string(it && !it->file ? "visit" : "enrolment"));
        if (it)
            json_object_set_new(o, "child_id", json_string(it->child));
        if (earlier || !it)
            json_object_set_new(o, "earlier_run", json_true());
        json_object_set_new(o, "id", json_string(ref));
        if (code) {
            json_object_set_new(o, "status", json_string("refused"));
            json_object_set_new(o, "code", json_string(code));
            json_object_set_new(o, "error", json_string(error ? error : ""));
            if (field)
                json_object_set_new(o, "field", json_string(field));
        } else {
            json_object_set_new(o, "status", json_string("acknowledged"));
            json_object_set_new(o, "event", json_string(event));
            json_object_set_new(o, "case", json_string(case_id));
            json_object_set_new(o, "duplicate", json_boolean(dup));
        }
        print_json(o);
        return;
    }
    char where[1200];
    if (it && it->file)
        util_fmt(where, sizeof where, "%s:%ld", it->file, it->line);
    else
        util_fmt(where, sizeof where, "%s", it ? "visit" : "earlier run");
    if (code) {
        fprintf(stderr, "%s: the broker refused the %s of child %s%s: %s: %s%s%s\n", where,
                it && !it->file ? "visit" : "enrolment", it ? it->child : ref,
                earlier ? " (an earlier run)" : "", code, error ? error : "", field ? " at " : "",
                field ? field : "");
        return;
    }
    printf("%s  %s  case %s  event %s  %s%s\n", where, it ? it->child : ref, case_id, event,
           dup ? "already sent" : "new", earlier ? " (spooled by an earlier run)" : "");
    fflush(stdout);
}

static item_t *answered(director_t *d, const char *ref, int *earlier)
{
    item_t *it = item_of(d, ref, earlier);
    if (it && !*earlier) {
        if (it->done)
            return NULL;   /* a second answer to a resend: not counted */
        it->done = 1;
    }
    return it;
}

static void on_ack(void *ud, const char *ref, const char *event, const char *case_id, int dup)
{
    director_t *d = ud;
    int earlier;
    long i;
    if (ref && cli_map_get(d->by_key, ref, &i) && d->items[i].done)
        return;
    item_t *it = answered(d, ref, &earlier);
    if (!it || earlier)
        d->from_earlier++;
    if (dup)
        d->acked_dup++;
    else
        d->acked_new++;
    print_answer(d, it, earlier, ref, event, case_id, dup, NULL, NULL, NULL);
}

static void on_nack(void *ud, const char *ref, const char *code, const char *error, const char *field)
{
    director_t *d = ud;
    int earlier;
    long i;
    if (ref && d->query_id[0] && !strcmp(ref, d->query_id)) {
        d->answered = -1;
        cli_nack_set(&d->nack, code, error, field);
        return;
    }
    if (ref && cli_map_get(d->by_key, ref, &i) && d->items[i].done)
        return;
    item_t *it = answered(d, ref, &earlier);
    d->refused++;
    print_answer(d, it, earlier, ref ? ref : "", NULL, NULL, 0, code ? code : "?", error, field);
}

static void on_reply(void *ud, const char *id, const char *json)
{
    director_t *d = ud;
    if (strcmp(id, d->query_id) != 0)
        return;
    json_decref(d->result);
    d->result = json_loads(json, 0, NULL);
    d->answered = 1;
}

/* A case the director reported on was resolved: keep the outcome (libcarehub
 * confirms it when this returns). */
static void on_push(void *ud, const char *op, const char *json)
{
    director_t *d = ud;
    if (strcmp(op, "outcome") != 0 || !d->outcomes)
        return;
    if (cli_outcomes_add(d->outcomes, json) == 1) {
        json_t *j = json_loads(json, 0, NULL);
        fprintf(stderr, "%s: outcome of case %s: %s; kept in %s\n", cli_prog(),
                cli_json_str(j, "case", "?"), cli_json_str(j, "status", "?"), CLI_OUTCOMES_FILE);
        json_decref(j);
    }
}

/* A reminder: kept in SPOOL/reminders.jsonl (fsync'ed) before it is confirmed. */
static int on_reminder(void *ud, const char *id, const char *child, const char *kind, int64_t due,
                       const char *json)
{
    director_t *d = ud;
    int k = cli_outcomes_add(d->reminders, json);
    if (k < 0)
        return -1;   /* not kept: the broker sends it again after the next hello */
    if (d->reminders_seen)
        cli_map_put(d->reminders_seen, id, 1);
    if (k == 1) {
        char t[64];
        cli_follow_broker_zone(d->c); /* the welcome may have come in this same poll */
        cli_format_time(due, t, sizeof t);
        fprintf(stderr, cli_tr("%s: reminder: %s of child %s due %s (kept; `%s reminders` lists them)\n",
                               "%1$s：提醒：儿童 %3$s 的%2$s 应于 %4$s 完成（已保存；`%5$s reminders` 可列出）\n"),
                cli_prog(), kind, child, t, cli_prog());
    }
    return 0;
}

/* ---- enrol ------------------------------------------------------------------------------------ */

static item_t *add_item(director_t *d, const char *file, long line, const char *key, const char *child)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 64;
        d->items = xrealloc(d->items, d->cap * sizeof *d->items);
    }
    item_t *it = &d->items[d->n];
    memset(it, 0, sizeof *it);
    it->file = file;
    it->line = line;
    util_fmt(it->key, sizeof it->key, "%s", key);
    util_fmt(it->child, sizeof it->child, "%s", child);
    cli_map_put(d->by_key, key, (long)d->n);
    d->n++;
    return it;
}

static void bad_row(director_t *d, const char *file, long line, const char *why)
{
    d->bad++;
    fprintf(stderr, "%s:%ld: %s; row skipped\n", file, line, why);
}

/* Read one roster and submit its good rows. 0, or CLI_EX_IO / CLI_EX_DATA for a
 * failure that stops this file (the message is printed). */
static int enrol_file(director_t *d, const char *path, FILE *f, const char *village,
                      cli_map_t *children)
{
    csv_limits_t lim = {',', 16384, 64, 262144};
    csv_reader_t *r = csv_new(f, &lim);
    int colpos[RC_NCOLS];
    int rc = 0;
    char why[768];
    for (int i = 0; i < RC_NCOLS; i++)
        colpos[i] = -1;

    int k = csv_next(r);
    if (k != CSV_RECORD) {
        if (k == CSV_IOERR)
            fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
        else if (k == CSV_BAD)
            fprintf(stderr, "%s:%ld: the header line is not valid CSV: %s\n", path, csv_line(r),
                    csv_error(r));
        else
            fprintf(stderr, "%s: the file is empty (the first line must name the columns)\n", path);
        rc = k == CSV_IOERR ? CLI_EX_IO : CLI_EX_DATA;
        goto out;
    }
    size_t ncells = csv_count(r);
    for (size_t i = 0; i < ncells; i++) {
        int col = roster_column(csv_field(r, i));
        if (col < 0) {
            char cols[512];
            roster_column_list(cols, sizeof cols);
            fprintf(stderr, "%s:%ld: column %zu: unknown column '%s' (misspelt? known: %s)\n", path,
                    csv_line(r), i + 1, cli_show(csv_field(r, i)), cols);
            rc = CLI_EX_DATA;
            goto out;
        }
        if (colpos[col] >= 0) {
            fprintf(stderr, "%s:%ld: column %zu: %s appears twice\n", path, csv_line(r), i + 1,
                    ROSTER_COLS[col]);
            rc = CLI_EX_DATA;
            goto out;
        }
        colpos[col] = (int)i;
    }
    for (int i = 0; i < RC_NCOLS; i++) {
        if ((ROSTER_REQUIRED[i] || (i == RC_VILLAGE && !village)) && colpos[i] < 0) {
            fprintf(stderr, "%s:%ld: the header has no %s column (required: child_id, name, "
                            "category, and village unless --village is given)\n",
                    path, csv_line(r), ROSTER_COLS[i]);
            rc = CLI_EX_DATA;
            goto out;
        }
    }

    for (;;) {
        k = csv_next(r);
        if (k == CSV_EOF)
            break;
        if (k == CSV_IOERR) {
            fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
            rc = CLI_EX_IO;
            goto out;
        }
        long line = csv_line(r);
        if (k == CSV_BAD) {
            bad_row(d, path, line, csv_error(r));
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
        d->rows++;
        if (n != ncells) {
            util_fmt(why, sizeof why, "the row has %zu fields, the header %zu", n, ncells);
            bad_row(d, path, line, why);
            continue;
        }
        int utf8 = 1;
        for (size_t i = 0; i < n && utf8; i++)
            utf8 = util_utf8_valid(csv_field(r, i), csv_field_len(r, i));
        if (!utf8) {
            bad_row(d, path, line, "the row is not valid UTF-8 (convert the roster, e.g. iconv -f "
                                   "GBK -t UTF-8)");
            continue;
        }
        char *cells[RC_NCOLS];
        for (int i = 0; i < RC_NCOLS; i++)
            cells[i] = cli_trim(xstrdup(colpos[i] >= 0 ? csv_field(r, (size_t)colpos[i]) : ""));
        json_t *body = roster_body(cells, village, why, sizeof why);
        long prev;
        if (body && cli_map_get(children, cells[RC_CHILD_ID], &prev)) {
            util_fmt(why, sizeof why, "child %s is already enrolled at %s:%ld (one file per child)",
                     cli_show(cells[RC_CHILD_ID]), d->items[prev].file, d->items[prev].line);
            json_decref(body);
            body = NULL;
        }
        if (!body) {
            bad_row(d, path, line, why);
            for (int i = 0; i < RC_NCOLS; i++)
                free(cells[i]);
            continue;
        }
        char key[CAREHUB_ID_MAX + 1] = "-", tag[1400];
        if (d->roster)
            roster_enrolment_id(d->roster, cells[RC_CHILD_ID], body, key);
        cli_map_put(children, cells[RC_CHILD_ID], (long)d->n);
        item_t *it = add_item(d, path, line, key, cells[RC_CHILD_ID]);
        for (int i = 0; i < RC_NCOLS; i++)
            free(cells[i]);
        if (!d->c) { /* --check */
            json_decref(body);
            continue;
        }
        item_tag(it, tag, sizeof tag);
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        int err = text ? carehub_submit_tagged(d->c, "enrolment", 0, text, key, tag, NULL) : CAREHUB_EJSON;
        free(text);
        if (err != CAREHUB_OK) {
            fprintf(stderr, "%s:%ld: cannot put the enrolment in the spool: %s\n", path, line,
                    carehub_last_error(d->c));
            rc = cli_exit_for(err) == CLI_EX_IO ? CLI_EX_IO : CLI_EX_DATA;
            goto out;
        }
        if (d->n % 64 == 0)
            (void)carehub_poll(d->c, 0);   /* let acks in; errors show in the wait below */
    }
out:
    csv_destroy(&r);
    return rc;
}

/* ---- waiting -------------------------------------------------------------------------------- */

static size_t answer_count(carehub_t *c, void *ud)
{
    (void)c;
    const director_t *d = ud;
    return (size_t)(d->acked_new + d->acked_dup + d->refused);
}

/* Wait for the broker to answer everything spooled; CLI_EX_UNREACHABLE when it did not. */
static int wait_acks(director_t *d, const cli_common_t *co)
{
    int wait_ms = cli_wait(co, DEFAULT_WAIT_MS);
    cli_until_t u = {cli_nothing_pending, answer_count, d, 0};
    int rc = cli_poll_until(d->c, wait_ms, &u);
    size_t pending = carehub_pending(d->c);
    if (rc == CLI_EX_OK && pending > 0) {
        cli_err("%zu event(s) not acknowledged (no answer for %d s; %s): they stay in the spool %s "
                "and go out on the next run", pending, wait_ms / 1000,
                carehub_connected(d->c) ? "the broker is slow" : "the broker did not answer",
                co->spool_dir);
        rc = CLI_EX_UNREACHABLE;
    }
    (void)carehub_poll(d->c, 0);   /* the last `received` goes out */
    return rc;
}

/* ---- visit ------------------------------------------------------------------------------------ */

static int send_visit(director_t *d, const cli_common_t *co, visit_t *v)
{
    char why[512], key[CAREHUB_ID_MAX + 1], tag[256];
    json_t *body = visit_body(v, why, sizeof why);
    if (!body) {
        cli_err("%s", why);
        return CLI_EX_USAGE;
    }
    char *canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    const char *parts[] = {"visit", canon ? canon : ""};
    idkey_id(d->idkey, "vis:", parts, 2, key);
    free(canon);
    item_t *it = add_item(d, NULL, 0, key, v->val[VF_CHILD]);
    item_tag(it, tag, sizeof tag);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    int err = text ? carehub_submit_tagged(d->c, "visit", visit_at(v->val[VF_DATE]), text, key, tag, NULL)
                   : CAREHUB_EJSON;
    free(text);
    if (err != CAREHUB_OK) {
        cli_err("the visit cannot be put in the spool: %s", carehub_last_error(d->c));
        return cli_exit_for(err);
    }
    return wait_acks(d, co);
}

/* ---- due ------------------------------------------------------------------------------------- */

static int due_list(director_t *d, const cli_common_t *co, int64_t within)
{
    json_t *q = json_pack("{s:s, s:s, s:I}", "op", "query", "what", "register_due", "within",
                          (json_int_t)within);
    char *text = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    int err = text ? carehub_request(d->c, text, d->query_id) : CAREHUB_ENOMEM;
    free(text);
    if (err != CAREHUB_OK) {
        cli_err("cannot send the query: %s", carehub_last_error(d->c));
        return cli_exit_for(err);
    }
    int wait_ms = cli_wait(co, DEFAULT_WAIT_MS);
    cli_until_t u = {cli_flag_set, NULL, &d->answered, 0};
    int rc = cli_poll_until(d->c, wait_ms, &u);
    if (rc)
        return rc;
    if (d->answered < 0)
        return cli_nack_report(&d->nack, "the query");
    if (d->answered == 0) {
        cli_err("the broker at %s did not answer within %d s", co->endpoint, wait_ms / 1000);
        return CLI_EX_UNREACHABLE;
    }
    json_t *rows = json_object_get(d->result, "rows");
    if (!json_is_array(rows)) {
        cli_err("the broker's answer has no rows (a broker without the register?)");
        return CLI_EX_DATA;
    }
    show_due(rows, d->json, within);
    return CLI_EX_OK;
}

/* ---- main ---------------------------------------------------------------------------------------- */

enum {
    OPT_JSON = CLI_OPT_FIRST_PROGRAM, OPT_ID_KEY, OPT_VILLAGE, OPT_WITHIN, OPT_LOCAL, OPT_INTERACTIVE,
    OPT_CHECK,
    OPT_FIELD = 0x300
};

static const char *const COMMANDS[] = {"enrol", "visit", "interactive", "due", "reminders", "flush", NULL};

int main(int argc, char **argv)
{
    static const struct option common[] = {CLI_COMMON_LONGOPTS};
    struct option longopts[UTIL_ARRAY_LEN(common) + 7 + VF_N + 1];
    size_t nl = 0;
    for (size_t i = 0; i < UTIL_ARRAY_LEN(common); i++)
        longopts[nl++] = common[i];
    longopts[nl++] = (struct option){"json", no_argument, NULL, OPT_JSON};
    longopts[nl++] = (struct option){"id-key", required_argument, NULL, OPT_ID_KEY};
    longopts[nl++] = (struct option){"village", required_argument, NULL, OPT_VILLAGE};
    longopts[nl++] = (struct option){"within", required_argument, NULL, OPT_WITHIN};
    longopts[nl++] = (struct option){"local", no_argument, NULL, OPT_LOCAL};
    longopts[nl++] = (struct option){"interactive", no_argument, NULL, OPT_INTERACTIVE};
    longopts[nl++] = (struct option){"check", no_argument, NULL, OPT_CHECK};
    for (int i = 1; i < VF_N; i++)   /* VF_CHILD is the argument */
        longopts[nl++] = (struct option){VISIT_FIELDS[i].flag,
                                         VISIT_FIELDS[i].kind == VK_BOOL ? optional_argument
                                                                         : required_argument,
                                         NULL, OPT_FIELD + i};
    longopts[nl] = (struct option){NULL, 0, NULL, 0};

    cli_common_t co;
    director_t d;
    visit_t v;
    int opt, rc = CLI_EX_OK, local = 0, interactive = 0, nfields = 0, check = 0;
    const char *id_key = NULL, *village = NULL;
    int64_t within = DEFAULT_WITHIN_MS;
    char why[4400];

    cli_init(argv[0]);
    cli_common_init(&co);
    memset(&d, 0, sizeof d);
    memset(&v, 0, sizeof v);
    while ((opt = cli_getopt(&co, argc, argv, longopts)) > 0) {
        if (opt > OPT_FIELD && opt < OPT_FIELD + VF_N) {
            int f = opt - OPT_FIELD;
            const char *val = optarg ? optarg : (VISIT_FIELDS[f].kind == VK_BOOL ? "yes" : "");
            if (visit_set(&v, f, val, why, sizeof why) < 0) {
                cli_err("--%s: %s", VISIT_FIELDS[f].flag, why);
                rc = CLI_EX_USAGE;
                goto out;
            }
            nfields++;
            continue;
        }
        switch (opt) {
        case OPT_JSON:
            d.json = 1;
            break;
        case OPT_ID_KEY:
            id_key = optarg;
            break;
        case OPT_VILLAGE:
            if (!*optarg || !cli_utf8_valid(optarg) ||
                cli_utf8_len(optarg) > SCHEMA_ENROLMENT_VILLAGE_MAX_LENGTH) {
                cli_err("--village: 1 to %d characters of UTF-8", SCHEMA_ENROLMENT_VILLAGE_MAX_LENGTH);
                rc = CLI_EX_USAGE;
                goto out;
            }
            village = optarg;
            break;
        case OPT_WITHIN:
            if (cli_parse_span_ms(optarg, &within) < 0) {
                cli_err("--within %s: give a duration such as 7d, 2w, 36h (at most 366 days)", optarg);
                rc = CLI_EX_USAGE;
                goto out;
            }
            break;
        case OPT_LOCAL:
            local = 1;
            break;
        case OPT_INTERACTIVE:
            interactive = 1;
            break;
        case OPT_CHECK:
            check = 1;
            break;
        default:
            fprintf(stderr, "Try '%s --help'.\n", cli_prog());
            rc = CLI_EX_USAGE;
            goto out;
        }
    }
    if (opt < 0) {
        rc = CLI_EX_USAGE;
        goto out;
    }
    if (co.help) {
        show_usage(stdout);
        goto out;
    }
    const char *cmd = optind < argc ? argv[optind++] : (interactive ? "interactive" : NULL);
    if (!cmd || cli_enum_index(cmd, COMMANDS) < 0) {
        cli_err("%s%s: the commands are enrol, visit, interactive, due, reminders and flush",
                cmd ? "unknown command " : "no command", cmd ? cli_show(cmd) : "");
        rc = CLI_EX_USAGE;
        goto out;
    }
    if (!strcmp(cmd, "interactive"))
        interactive = 1;
    int is_enrol = !strcmp(cmd, "enrol"), is_visit = !strcmp(cmd, "visit") || interactive;
    if ((nfields && !is_visit) || (village && !is_enrol) || (local && strcmp(cmd, "reminders")) ||
        (check && !is_enrol) ||
        (within != DEFAULT_WITHIN_MS && strcmp(cmd, "due"))) {
        cli_err("an option given does not go with %s (see --help)", cmd);
        rc = CLI_EX_USAGE;
        goto out;
    }
    if (is_enrol && optind >= argc) {
        cli_err("enrol: give the roster file(s) (CSV)");
        rc = CLI_EX_USAGE;
        goto out;
    }
    if (is_visit && !interactive) {
        if (optind >= argc) {
            cli_err("visit: give the child id (or use --interactive for a form)");
            rc = CLI_EX_USAGE;
            goto out;
        }
        if (visit_set(&v, VF_CHILD, argv[optind++], why, sizeof why) < 0) {
            cli_err("visit: %s", why);
            rc = CLI_EX_USAGE;
            goto out;
        }
        if (!v.val[VF_KIND]) {
            cli_err("visit: --kind %s is required", SCHEMA_VISIT_KIND_ENUM_TEXT);
            rc = CLI_EX_USAGE;
            goto out;
        }
    }
    if (!is_enrol && optind < argc) {
        cli_err("%s: unexpected '%s'", cmd, cli_show(argv[optind]));
        rc = CLI_EX_USAGE;
        goto out;
    }
    int local_only = !strcmp(cmd, "reminders") && local;
    if (!check && (rc = cli_common_check(&co, !local_only)) != 0)
        goto out;
    char rpath[4200];
    util_fmt(rpath, sizeof rpath, "%s/%s", check ? "." : co.spool_dir, REMINDERS_FILE);
    if (local_only) {
        rc = show_reminders(rpath, d.json);
        goto out;
    }

    /* Open every roster first: nothing is sent when one cannot be read. */
    int nfiles = is_enrol ? argc - optind : 0;
    FILE **files = xcalloc((size_t)(nfiles ? nfiles : 1), sizeof *files);
    for (int i = 0; i < nfiles && rc == CLI_EX_OK; i++) {
        if (!(files[i] = fopen(argv[optind + i], "rb"))) {
            cli_err("cannot open %s: %s", argv[optind + i], strerror(errno));
            rc = CLI_EX_NOINPUT;
        }
    }
    if (rc == CLI_EX_OK && interactive && visit_form(&v) < 0) {
        cli_err("the visit was not sent");
        rc = CLI_EX_USAGE;
    }
    if (rc == CLI_EX_OK && sodium_init() < 0) {
        cli_err("libsodium cannot start");
        rc = CLI_EX_IO;
    }

    d.by_key = cli_map_new();
    d.reminders_seen = cli_map_new();
    if (rc == CLI_EX_OK && !check) {
        carehub_callbacks_t cb = {on_ack, on_nack, on_push, on_reply, &d};
        d.outcomes = cli_outcomes_open(co.spool_dir);
        d.reminders = cli_pushlog_open(co.spool_dir, REMINDERS_FILE);
        d.c = cli_open(&co, SOFTWARE, &cb, &rc);
        if (d.c)
            (void)carehub_on_reminder(d.c, on_reminder, &d);
    }
    if (rc == CLI_EX_OK && (is_enrol || is_visit) && !check) { /* after cli_open: the spool exists */
        char path[4200];
        int created = 0;
        util_fmt(path, sizeof path, "%s/%s", co.spool_dir, IDKEY_FILE);
        if (idkey_load(id_key ? id_key : path, !id_key, d.idkey, &created, why, sizeof why)) {
            cli_err("the director's id key %s %s", id_key ? id_key : path, why);
            rc = CLI_EX_NOINPUT;
        } else if (created) {
            fprintf(stderr, "%s: made the director's id key %s: keep it with the spool (without "
                    "it, rows enrolled again become new events)\n", cli_prog(), path);
        }
    }
    if (rc == CLI_EX_OK && is_enrol && !check && !(d.roster = roster_state_load(co.spool_dir, d.idkey, why, sizeof why))) {
        cli_err("%s", why);
        rc = CLI_EX_IO;
    }
    cli_catch_signals();

    if (rc == CLI_EX_OK && is_enrol) {
        cli_map_t *children = cli_map_new();
        int file_rc = 0;
        for (int i = 0; rc == CLI_EX_OK && i < nfiles && !cli_stop; i++) {
            int k = enrol_file(&d, argv[optind + i], files[i], village, children);
            if (k == CLI_EX_IO)
                rc = CLI_EX_IO;
            else if (k && !file_rc)
                file_rc = k;
        }
        cli_map_destroy(&children);
        if (d.roster && roster_state_save(d.roster, why, sizeof why) < 0) {
            cli_err("%s (the rows are spooled; a row changed back later may not be sent again)", why);
            if (rc == CLI_EX_OK)
                rc = CLI_EX_IO;
        }
        if (rc == CLI_EX_OK && !check)
            rc = wait_acks(&d, &co);
        FILE *sum = d.json ? stderr : stdout;
        if (check)
            fprintf(sum, "%ld row(s) read, %ld bad (checked only; nothing sent)\n", d.rows, d.bad);
        else
            fprintf(sum, "%ld row(s) read, %ld bad; acknowledged: %ld new, %ld already sent; "
                    "refused: %ld\n", d.rows, d.bad, d.acked_new, d.acked_dup, d.refused);
        if ((rc == CLI_EX_OK || rc == CLI_EX_UNREACHABLE) && (d.bad || d.refused || file_rc))
            rc = CLI_EX_DATA;
    } else if (rc == CLI_EX_OK && is_visit) {
        rc = send_visit(&d, &co, &v);
        if (rc == CLI_EX_OK && d.refused)
            rc = CLI_EX_DATA;
        if (rc == CLI_EX_OK && d.n && !d.json && d.items[0].done)
            fprintf(stderr, "%s: visit to child %s recorded\n", cli_prog(), d.items[0].child);
    } else if (rc == CLI_EX_OK && !strcmp(cmd, "due")) {
        rc = due_list(&d, &co, within);
    } else if (rc == CLI_EX_OK && !strcmp(cmd, "reminders")) {
        rc = cli_collect_quiet(d.c, cli_wait(&co, DEFAULT_QUIET_MS), d.reminders_seen,
                               "`reminders --local` lists the ones kept before");
        (void)carehub_poll(d.c, 0);   /* the last `received` goes out */
        if (rc == CLI_EX_OK || rc == CLI_EX_UNREACHABLE) {
            int k = show_reminders(rpath, d.json);
            if (k)
                rc = k;
        }
    } else if (rc == CLI_EX_OK) { /* flush */
        rc = wait_acks(&d, &co);
        fprintf(stderr, "%ld event(s) acknowledged, %ld refused, %zu still in the spool\n",
                d.acked_new + d.acked_dup, d.refused, carehub_pending(d.c));
        if (rc == CLI_EX_OK && d.refused)
            rc = CLI_EX_DATA;
    }

    carehub_destroy(&d.c);
    for (int i = 0; i < nfiles; i++)
        if (files[i])
            fclose(files[i]);
    free(files);
out:
    visit_free(&v);
    free(d.items);
    cli_map_destroy(&d.by_key);
    cli_map_destroy(&d.reminders_seen);
    cli_outcomes_close(&d.outcomes);
    cli_outcomes_close(&d.reminders);
    roster_state_free(&d.roster);
    json_decref(d.result);
    sodium_memzero(d.idkey, sizeof d.idkey);
    return rc;
}
