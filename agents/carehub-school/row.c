/*
 * row.c — carehub-school's rows; see row.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "row.h"
#include "cli.h"
#include "util.h"

#define MAX_CONSECUTIVE_DAYS 10000

const col_info_t COLS[NCOLS] = {
    [COL_STUDENT_ID] = {"student_id", 1},
    [COL_NAME] = {"name", 1},
    [COL_DATE] = {"date", 1},
    [COL_STATUS] = {"status", 1},
    [COL_REASON] = {"reason", 1},
    [COL_CONSECUTIVE_DAYS] = {"consecutive_days", 1},
    [COL_GENDER] = {"gender", 0},
    [COL_BIRTH_DATE] = {"birth_date", 0},
    [COL_GUARDIAN_CONTACTED] = {"guardian_contacted", 0},
    [COL_PERIOD] = {"period", 0},
    [COL_GUARDIAN_NAME] = {"guardian_name", 0},
    [COL_GUARDIAN_RELATION] = {"guardian_relation", 0},
    [COL_GUARDIAN_PHONE] = {"guardian_phone", 0},
    [COL_CATEGORY] = {"category", 0},
    [COL_JURISDICTION] = {"jurisdiction", 0},
    [COL_SEVERITY] = {"severity", 0},
    [COL_NOTE] = {"note", 0},
};

const char *const STATUS_SKIP[] = {"present", "late", NULL};
static const char *const REASONS[] = {"unexplained", "sick", "leave", "family", "unknown", NULL};
static const char *const GENDERS[] = {"male", "female", "unknown", NULL};
static const char *const PERIODS[] = {"full_day", "morning", "afternoon", NULL};
static const char *const CATEGORIES[] = {"left_behind", "in_difficulty", "orphan",
                                         "unattended", "disabled", "other", NULL};
static const char *const SEVERITIES[] = {"critical", "high", "normal", "low", NULL};

#define MAX_CONSECUTIVE_DAYS 10000

void row_cells_free(cells_t *c)
{
    for (int i = 0; i < NCOLS; i++)
        free(c->v[i]);
}

void row_lower_ascii(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/* Problems with a row go into why[]; the first one is reported. */
#define ROW_BAD(...)                           \
    do {                                       \
        util_fmt(why, whylen, __VA_ARGS__);    \
        goto bad;                              \
    } while (0)

int row_set_str(json_t *o, const char *k, const char *v)
{
    return json_object_set_new(o, k, json_string(v));
}

/*
 * Check one absent row and build its body. NULL with why[] on a bad row.
 */
json_t *row_absence_body(const char *school, cells_t *c, char *why, size_t whylen)
{
    char list[128];
    json_t *body = json_object();
    json_t *child = json_object();
    json_t *guardian = json_object();

    const char *sid = c->v[COL_STUDENT_ID];
    if (!*sid)
        ROW_BAD("student_id is empty");
    if (cli_utf8_len(sid) > 64)
        ROW_BAD("student_id is longer than 64 characters");
    const char *name = c->v[COL_NAME];
    if (!*name)
        ROW_BAD("name is empty (the broker needs the pupil's name)");
    if (cli_utf8_len(name) > 200)
        ROW_BAD("name is longer than 200 characters");
    const char *date = c->v[COL_DATE];
    if (!cli_valid_date(date))
        ROW_BAD("date '%s' is not a day written YYYY-MM-DD", cli_show(date));

    row_lower_ascii(c->v[COL_REASON]);
    const char *reason = *c->v[COL_REASON] ? c->v[COL_REASON] : "unknown";
    if (cli_enum_index(reason, REASONS) < 0) {
        cli_enum_list(REASONS, "|", list, sizeof list);
        ROW_BAD("reason '%s' is not one of %s", cli_show(reason), list);
    }
    const char *days = c->v[COL_CONSECUTIVE_DAYS];
    if (!*days)
        ROW_BAD("consecutive_days is empty (school days absent in a row, this day included)");
    char *end = NULL;
    errno = 0;
    long nd = strtol(days, &end, 10);
    if (errno || *end || end == days || nd < 1 || nd > MAX_CONSECUTIVE_DAYS)
        ROW_BAD("consecutive_days '%s' is not a whole number from 1 to %d", cli_show(days),
                MAX_CONSECUTIVE_DAYS);

    row_set_str(body, "school", school);
    row_set_str(body, "date", date);
    row_set_str(body, "reason", reason);
    json_object_set_new(body, "consecutive_days", json_integer(nd));

    char *period = c->v[COL_PERIOD];
    row_lower_ascii(period);
    if (*period) {
        if (cli_enum_index(period, PERIODS) < 0) {
            cli_enum_list(PERIODS, "|", list, sizeof list);
            ROW_BAD("period '%s' is not one of %s", cli_show(period), list);
        }
        row_set_str(body, "period", period);
    }
    const char *gc = c->v[COL_GUARDIAN_CONTACTED];
    if (*gc) {
        int yes;
        if (cli_parse_bool(gc, &yes) < 0)
            ROW_BAD("guardian_contacted '%s' is not yes, no, true or false", cli_show(gc));
        json_object_set_new(body, "guardian_contacted", json_boolean(yes));
    }
    char *sev = c->v[COL_SEVERITY];
    row_lower_ascii(sev);
    if (*sev) {
        if (cli_enum_index(sev, SEVERITIES) < 0) {
            cli_enum_list(SEVERITIES, "|", list, sizeof list);
            ROW_BAD("severity '%s' is not one of %s", cli_show(sev), list);
        }
        row_set_str(body, "severity", sev);
    }
    const char *note = c->v[COL_NOTE];
    if (*note) {
        if (cli_utf8_len(note) > 4000)
            ROW_BAD("note is longer than 4000 characters");
        row_set_str(body, "note", note);
    }

    row_set_str(child, "id", sid);
    row_set_str(child, "name", name);
    char *gender = c->v[COL_GENDER];
    row_lower_ascii(gender);
    if (*gender) {
        if (cli_enum_index(gender, GENDERS) < 0)
            ROW_BAD("gender '%s' is not male, female or unknown", cli_show(gender));
        row_set_str(child, "gender", gender);
    }
    const char *bd = c->v[COL_BIRTH_DATE];
    if (*bd) {
        if (!cli_valid_date(bd))
            ROW_BAD("birth_date '%s' is not a day written YYYY-MM-DD", cli_show(bd));
        row_set_str(child, "birth_date", bd);
    }
    char *cat = c->v[COL_CATEGORY];
    if (*cat) {
        json_t *arr = json_array();
        int seen[8] = {0};
        json_object_set_new(child, "category", arr);
        for (char *save = NULL, *tok = strtok_r(cat, ";|,", &save); tok;
             tok = strtok_r(NULL, ";|,", &save)) {
            cli_trim(tok);
            row_lower_ascii(tok);
            if (!*tok)
                continue;
            int k = cli_enum_index(tok, CATEGORIES);
            if (k < 0) {
                cli_enum_list(CATEGORIES, ", ", list, sizeof list);
                ROW_BAD("category '%s' is not one of %s", cli_show(tok), list);
            }
            if (!seen[k]++)
                json_array_append_new(arr, json_string(tok));
        }
    }
    const char *jur = c->v[COL_JURISDICTION];
    if (*jur) {
        if (cli_utf8_len(jur) > 200)
            ROW_BAD("jurisdiction is longer than 200 characters");
        row_set_str(child, "jurisdiction", jur);
    }
    static const struct {
        col_t col;
        const char *key;
        size_t max;
    } G[] = {{COL_GUARDIAN_NAME, "name", 200},
             {COL_GUARDIAN_RELATION, "relation", 100},
             {COL_GUARDIAN_PHONE, "phone", 32}};
    for (size_t i = 0; i < UTIL_ARRAY_LEN(G); i++) {
        const char *v = c->v[G[i].col];
        if (!*v)
            continue;
        if (cli_utf8_len(v) > G[i].max)
            ROW_BAD("%s is longer than %zu characters", COLS[G[i].col].name, G[i].max);
        row_set_str(guardian, G[i].key, v);
    }
    if (json_object_size(guardian) > 0)
        json_object_set(child, "guardian", guardian);
    json_decref(guardian);
    json_object_set_new(body, "child", child);
    return body;
bad:
    json_decref(guardian);
    json_decref(child);
    json_decref(body);
    return NULL;
}
