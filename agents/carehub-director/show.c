/*
 * show.c — what carehub-director prints: its help, the children due and the
 * reminders kept; see show.h.
 */
#include "show.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "roster.h"
#include "cli.h"
#include "schema_tables.h"
#include "util.h"

/* s, then spaces up to width columns (a Chinese character takes two). */
static void show_pad(const char *s, int width)
{
    fputs(s, stdout);
    for (int w = (int)cli_display_width(s); w < width; w++)
        fputc(' ', stdout);
}

static void print_json(json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(o);
    fflush(stdout);
}

/* ---- usage ------------------------------------------------------------------------------ */

void show_usage(FILE *f)
{
    char cols[512];
    roster_column_list(cols, sizeof cols);
    fprintf(f,
            "usage: %s [options] enrol FILE.csv... [--village V] [--check]\n"
            "       %s [options] visit CHILD_ID --kind KIND [--date YYYY-MM-DD] [--method M]\n"
            "                         [--findings TEXT] [--concern] [--needs a,b]\n"
            "       %s [options] --interactive   (or: interactive) a visit, asked on the terminal\n"
            "       %s [options] due [--within DURATION]\n"
            "       %s [options] reminders [--local]\n"
            "       %s [options] flush\n"
            "\n"
            "The child director's (儿童主任) program: enrol a village's children in carehub's\n"
            "register (one file per child, 一人一档), record contacts and home visits, list the\n"
            "children whose contact or visit is due, and keep the broker's reminders.\n"
            "\n"
            "Options:\n%s"
            "      --json             print JSON lines instead of text\n"
            "      --check            enrol: only check the roster(s), send nothing (no broker)\n"
            "      --id-key FILE      the director's id key (32 bytes, mode 0600); default\n"
            "                         SPOOL/%s, made on the first run: keep it with the spool\n"
            "\n"
            "enrol: the roster is CSV (UTF-8) whose first line names the columns (any order;\n"
            "case, spaces and '-' ignored): %s.\n"
            "Required: child_id, name, category (%s; several separated by ';' or '|'),\n"
            "and village unless --village V gives it for the file (a row naming another village\n"
            "is refused). Optional: gender (%s), birth_date (YYYY-MM-DD), jurisdiction,\n"
            "guardian_name, guardian_relation, guardian_phone, risk (%s), risk_reasons\n"
            "(%s; several separated by ';' or '|'), active (yes|no; no: the child leaves\n"
            "the register), note. A column not in this list is refused. A bad row is reported\n"
            "as FILE:LINE and skipped; the good rows are still sent. Enrolling the same roster\n"
            "again sends nothing new; a changed row is a new enrolment.\n"
            "\n"
            "visit: --kind %s; --date defaults to today (local); --method %s;\n"
            "--findings at most %d characters; --concern (a problem others must take up);\n"
            "--needs %s (several separated by ',').\n"
            "\n"
            "due: the director's children whose contact or home visit is due within DURATION\n"
            "(default 7d; also 12h, 2w) or overdue, soonest first, with their names (shown\n"
            "here only, never logged).\n"
            "\n"
            "reminders: connects, keeps the reminders the broker pushes (until --wait, default\n"
            "%d s, passes without one) and lists every reminder kept in SPOOL/%s;\n"
            "--local lists them without connecting.\n"
            "\n"
            "Exit: 0 done; 64 usage; 65 a bad row, a refused event or query; 66 a file cannot be\n"
            "opened (nothing is sent); 74 the spool or a local file cannot be written; 75 no\n"
            "answer within --wait (default %d s): events stay in the spool for the next run;\n"
            "77 the broker refused this agent (not configured).\n",
            cli_prog(), cli_prog(), cli_prog(), cli_prog(), cli_prog(), cli_prog(), cli_common_help,
            DIRECTOR_IDKEY_FILE, cols, SCHEMA_ENROLMENT_CHILD_CATEGORY_ITEMS_ENUM_TEXT,
            SCHEMA_ENROLMENT_CHILD_GENDER_ENUM_TEXT, SCHEMA_ENROLMENT_RISK_ENUM_TEXT,
            SCHEMA_ENROLMENT_RISK_REASONS_ITEMS_ENUM_TEXT, SCHEMA_VISIT_KIND_ENUM_TEXT,
            SCHEMA_VISIT_METHOD_ENUM_TEXT, SCHEMA_VISIT_FINDINGS_MAX_LENGTH,
            SCHEMA_VISIT_NEEDS_ITEMS_ENUM_TEXT, DIRECTOR_DEFAULT_QUIET_MS / 1000, DIRECTOR_REMINDERS_FILE,
            DIRECTOR_DEFAULT_WAIT_MS / 1000);
}

/* A due row's kind as people read it: the schema's value in English, its
 * Chinese name (联系, 入户走访) otherwise. */
static const char *kind_label(const char *kind)
{
    if (!strcmp(kind, "contact"))
        return cli_tr(kind, "联系");
    if (!strcmp(kind, "home_visit"))
        return cli_tr(kind, "入户走访");
    return kind;
}

static int by_due(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "due"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "due"));
    return x < y ? -1 : x > y;
}

void show_due(const json_t *rows, int json, int64_t within)
{
    size_t n = json_array_size(rows);
    json_t **sorted = xcalloc(n ? n : 1, sizeof *sorted);
    for (size_t i = 0; i < n; i++)
        sorted[i] = json_array_get(rows, i);
    qsort(sorted, n, sizeof *sorted, by_due);
    for (size_t i = 0; i < n; i++) {
        json_t *row = sorted[i];
        if (json) {
            print_json(json_incref(row));
            continue;
        }
        char due[64], last[64];
        json_t *jl = json_object_get(row, "last");
        cli_format_time(json_integer_value(json_object_get(row, "due")), due, sizeof due);
        if (json_is_integer(jl))
            cli_format_time(json_integer_value(jl), last, sizeof last);
        printf("%s  ", due);
        show_pad(json_is_true(json_object_get(row, "overdue")) ? cli_tr("OVERDUE", "已逾期")
                                                                : cli_tr("due", "待办"), 7);
        fputs("  ", stdout);
        show_pad(kind_label(cli_json_str(row, "kind", "?")), 10);
        fputs("  ", stdout);
        cli_put_safe(stdout, cli_json_str(row, "child", "?"));
        fputs("  ", stdout);
        cli_put_safe(stdout, cli_json_str(row, "name", ""));
        fputs("  ", stdout);
        cli_put_safe(stdout, cli_json_str(row, "village", ""));
        printf(cli_tr("  last %s\n", "  上次 %s\n"),
               json_is_integer(jl) ? last : cli_tr("none since enrolment", "登记以来无记录"));
    }
    free(sorted);
    fflush(stdout);
    if (!json)
        fprintf(stderr, cli_tr("%zu child(ren) due within %lld h or overdue\n",
                               "%zu 名儿童在 %lld 小时内到期或已逾期\n"),
                n, (long long)(within / 3600000));
}

/* ---- reminders --------------------------------------------------------------------------------- */

int show_reminders(const char *path, int json)
{
    FILE *f = fopen(path, "r");
    if (!f && errno != ENOENT) {
        cli_err("cannot read %s: %s", path, strerror(errno));
        return CLI_EX_IO;
    }
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (f && (n = getline(&line, &cap, f)) > 0) {
        json_t *o = json_loadb(line, (size_t)n, 0, NULL);
        if (json_is_object(o))
            json_array_append(all, o);
        json_decref(o);
    }
    free(line);
    if (f)
        fclose(f);
    size_t cnt = json_array_size(all);
    json_t **sorted = xcalloc(cnt ? cnt : 1, sizeof *sorted);
    for (size_t i = 0; i < cnt; i++)
        sorted[i] = json_array_get(all, i);
    qsort(sorted, cnt, sizeof *sorted, by_due);
    int64_t now = util_now_ms();
    for (size_t i = 0; i < cnt; i++) {
        json_t *o = sorted[i];
        if (json) {
            print_json(json_incref(o));
            continue;
        }
        char due[64], got[64];
        int64_t t = json_integer_value(json_object_get(o, "due"));
        cli_format_time(t, due, sizeof due);
        cli_format_time(json_integer_value(json_object_get(o, "received_at")), got, sizeof got);
        printf("%s  ", due);
        show_pad(t < now ? cli_tr("past", "已过") : cli_tr("due", "待办"), 4);
        fputs("  ", stdout);
        show_pad(kind_label(cli_json_str(o, "kind", "?")), 10);
        fputs("  ", stdout);
        cli_put_safe(stdout, cli_json_str(o, "child", "?"));
        printf(cli_tr("  received %s\n", "  收到于 %s\n"), got);
    }
    free(sorted);
    json_decref(all);
    fflush(stdout);
    if (!json)
        fprintf(stderr, cli_tr("%zu reminder(s) in %s\n", "%zu 条提醒，保存在 %s\n"), cnt, path);
    return CLI_EX_OK;
}

