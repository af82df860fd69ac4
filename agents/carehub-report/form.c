/*
 * form.c — carehub-report's form; see form.h.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "form.h"
#include "cli.h"
#include "schema_tables.h"
#include "util.h"

/* The values and limits are schemas/mandatory_report.json's (schema_tables.h, generated). */
#define MR(x) SCHEMA_MANDATORY_REPORT_##x
static const char *const HARMS[] = MR(HARM_ENUM);
static const char *const GENDERS[] = MR(CHILD_GENDER_ENUM);
static const char *const CATEGORIES[] = MR(CHILD_CATEGORY_ITEMS_ENUM);
static const char *const SEVERITIES[] = MR(SEVERITY_ENUM);

/* A K_LIST field's values, at most (set_field counts each one seen). */
#define LIST_VALUES_MAX 32
_Static_assert(MR(CHILD_CATEGORY_ITEMS_ENUM_COUNT) <= LIST_VALUES_MAX, "LIST_VALUES_MAX too small");

const field_t FIELDS[NFIELDS] = {
    [F_ORGANISATION] = {"organisation", "Your organisation (school, hospital, committee)", K_TEXT,
                        NULL, MR(REPORTER_ORGANISATION_MAX_LENGTH), MR(REPORTER_ORGANISATION_REQUIRED)},
    [F_REPORTER_NAME] = {"reporter-name", "Your name", K_TEXT, NULL, MR(REPORTER_NAME_MAX_LENGTH),
                         MR(REPORTER_NAME_REQUIRED)},
    [F_ROLE] = {"role", "Your role (teacher, doctor, child director...)", K_TEXT, NULL,
                MR(REPORTER_ROLE_MAX_LENGTH), MR(REPORTER_ROLE_REQUIRED)},
    [F_PHONE] = {"phone", "Your phone, for the agency to call back", K_TEXT, NULL,
                 MR(REPORTER_PHONE_MAX_LENGTH), MR(REPORTER_PHONE_REQUIRED)},
    [F_HARM] = {"harm", "What harm", K_ENUM, HARMS, 0, MR(HARM_REQUIRED)},
    [F_DESCRIPTION] = {"description", "What was seen or heard, by whom, when", K_TEXT, NULL,
                       MR(DESCRIPTION_MAX_LENGTH), MR(DESCRIPTION_REQUIRED)},
    [F_SUSPECTED] = {"suspected", "Only suspected, not established? (yes/no)", K_BOOL, NULL, 0,
                     MR(SUSPECTED_REQUIRED)},
    [F_IMMEDIATE_DANGER] = {"immediate-danger", "Is the child in danger now? (yes/no)", K_BOOL,
                            NULL, 0, MR(IMMEDIATE_DANGER_REQUIRED)},
    [F_LOCATION] = {"location", "Where the child is, or where it happened", K_TEXT, NULL,
                    MR(LOCATION_MAX_LENGTH), MR(LOCATION_REQUIRED)},
    [F_OCCURRED_AT] = {"occurred-at", "When it happened (YYYY-MM-DD HH:MM, local time)", K_TIME,
                       NULL, 0, MR(OCCURRED_AT_REQUIRED)},
    [F_CHILD_NAME] = {"child-name", "The child's full name", K_TEXT, NULL,
                      MR(CHILD_NAME_MAX_LENGTH), MR(CHILD_NAME_REQUIRED)},
    [F_CHILD_ID] = {"child-id", "The child's id number (student or civil-affairs number)", K_TEXT,
                    NULL, MR(CHILD_ID_MAX_LENGTH), MR(CHILD_ID_REQUIRED)},
    [F_GENDER] = {"gender", "The child's gender", K_ENUM, GENDERS, 0, MR(CHILD_GENDER_REQUIRED)},
    [F_BIRTH_DATE] = {"birth-date", "The child's birth date (YYYY-MM-DD)", K_DATE, NULL, 0,
                      MR(CHILD_BIRTH_DATE_REQUIRED)},
    [F_CATEGORY] = {"category", "The child's categories (several: separate with commas)", K_LIST,
                    CATEGORIES, 0, MR(CHILD_CATEGORY_REQUIRED)},
    [F_JURISDICTION] = {"jurisdiction", "The child's street or town (街镇)", K_TEXT, NULL,
                        MR(CHILD_JURISDICTION_MAX_LENGTH), MR(CHILD_JURISDICTION_REQUIRED)},
    [F_GUARDIAN_NAME] = {"guardian-name", "The guardian's name", K_TEXT, NULL,
                         MR(CHILD_GUARDIAN_NAME_MAX_LENGTH), MR(CHILD_GUARDIAN_NAME_REQUIRED)},
    [F_GUARDIAN_RELATION] = {"guardian-relation", "The guardian's relation to the child", K_TEXT,
                             NULL, MR(CHILD_GUARDIAN_RELATION_MAX_LENGTH),
                             MR(CHILD_GUARDIAN_RELATION_REQUIRED)},
    [F_GUARDIAN_PHONE] = {"guardian-phone", "The guardian's phone", K_TEXT, NULL,
                          MR(CHILD_GUARDIAN_PHONE_MAX_LENGTH), MR(CHILD_GUARDIAN_PHONE_REQUIRED)},
    [F_SEVERITY] = {"severity", "How urgent", K_ENUM, SEVERITIES, 0, MR(SEVERITY_REQUIRED)},
    [F_NOTE] = {"note", "A note for the agency", K_TEXT, NULL, MR(NOTE_MAX_LENGTH), MR(NOTE_REQUIRED)},
};

/* Each kind's check of a value v (trimmed, valid UTF-8) for field f: its
 * normalised form (malloc'd), or NULL with why. `prev` is what the field holds. */
typedef char *check_fn(const field_t *fd, const char *v, const char *prev, char *why,
                       size_t whylen);

/* NULL, with why formatted. */
static char *refuse(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static char *refuse(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return NULL;
}

static char *check_text(const field_t *fd, const char *v, const char *prev, char *why,
                        size_t whylen)
{
    (void)prev;
    size_t n = cli_utf8_len(v);
    if (!*v && fd->required)
        return refuse(why, whylen, "required; it cannot be empty");
    if (n > fd->max)
        return refuse(why, whylen, "at most %zu characters (this has %zu)", fd->max, n);
    return xstrdup(v);
}

static char *check_enum(const field_t *fd, const char *v, const char *prev, char *why,
                        size_t whylen)
{
    (void)prev;
    return cli_enum_check(v, fd->values, "|", why, whylen) < 0 ? NULL : xstrdup(v);
}

static char *check_bool(const field_t *fd, const char *v, const char *prev, char *why,
                        size_t whylen)
{
    (void)fd, (void)prev;
    int b;
    if (cli_parse_bool(v, &b) < 0)
        return refuse(why, whylen, "'%s' is not yes or no", cli_show(v));
    return xstrdup(b ? "true" : "false");
}

static char *check_date(const field_t *fd, const char *v, const char *prev, char *why,
                        size_t whylen)
{
    (void)fd, (void)prev;
    if (!cli_valid_date(v))
        return refuse(why, whylen, "'%s' is not a date written YYYY-MM-DD", cli_show(v));
    return xstrdup(v);
}

static char *check_time(const field_t *fd, const char *v, const char *prev, char *why,
                        size_t whylen)
{
    (void)fd, (void)prev;
    int64_t ms;
    char buf[32];
    if (cli_parse_time(v, &ms) < 0)
        return refuse(why, whylen, "'%s' is not a time: give YYYY-MM-DD, YYYY-MM-DD HH:MM "
                      "(local time), an ISO 8601 time with Z or +08:00, or ms since 1970",
                      cli_show(v));
    util_fmt(buf, sizeof buf, "%lld", (long long)ms);
    return xstrdup(buf);
}

/* The values of prev (when appending) and v, each once, joined with ','. */
static char *check_list(const field_t *fd, const char *v, const char *prev, char *why,
                        size_t whylen)
{
    int seen[LIST_VALUES_MAX] = {0};
    char joined[256] = "";
    size_t used = 0;
    char *all = xmalloc(strlen(prev) + strlen(v) + 2);
    sprintf(all, "%s,%s", prev, v);
    for (char *save = NULL, *tok = strtok_r(all, ",;| ", &save); tok;
         tok = strtok_r(NULL, ",;| ", &save)) {
        int k = cli_enum_check(tok, fd->values, ", ", why, whylen);
        if (k < 0) {
            free(all);
            return NULL;
        }
        if (seen[k]++)
            continue;
        int n = snprintf(joined + used, sizeof joined - used, "%s%s", used ? "," : "", tok);
        if (n > 0 && (size_t)n < sizeof joined - used)
            used += (size_t)n;
    }
    free(all);
    return xstrdup(joined);
}

static check_fn *const CHECKS[] = {
    [K_TEXT] = check_text, [K_ENUM] = check_enum, [K_BOOL] = check_bool,
    [K_DATE] = check_date, [K_TIME] = check_time, [K_LIST] = check_list,
};

int set_field(report_t *r, int f, const char *in, int append, char *why, size_t whylen)
{
    const field_t *fd = &FIELDS[f];
    char *v = cli_trim(xstrdup(in));
    char *out = NULL;

    if (!cli_utf8_valid(v))
        util_fmt(why, whylen, "not valid UTF-8");
    else
        out = CHECKS[fd->kind](fd, v, append && r->val[f] ? r->val[f] : "", why, whylen);
    free(v);
    if (!out)
        return -1;
    free(r->val[f]);
    if (!*out && !fd->required) {   /* an empty optional value: not given */
        free(out);
        out = NULL;
    }
    r->val[f] = out;
    return 0;
}

char *build_body(const report_t *r)
{
    json_t *body = json_object(), *rep = json_object(), *child = json_object(),
           *guardian = json_object();
    const char *const *v = (const char *const *)r->val;

    json_object_set_new(rep, "organisation", json_string(v[F_ORGANISATION]));
    if (v[F_REPORTER_NAME])
        json_object_set_new(rep, "name", json_string(v[F_REPORTER_NAME]));
    if (v[F_ROLE])
        json_object_set_new(rep, "role", json_string(v[F_ROLE]));
    if (v[F_PHONE])
        json_object_set_new(rep, "phone", json_string(v[F_PHONE]));
    json_object_set_new(body, "reporter", rep);
    json_object_set_new(body, "harm", json_string(v[F_HARM]));
    json_object_set_new(body, "description", json_string(v[F_DESCRIPTION]));
    if (v[F_SUSPECTED])
        json_object_set_new(body, "suspected", json_boolean(!strcmp(v[F_SUSPECTED], "true")));
    if (v[F_IMMEDIATE_DANGER])
        json_object_set_new(body, "immediate_danger",
                            json_boolean(!strcmp(v[F_IMMEDIATE_DANGER], "true")));
    if (v[F_LOCATION])
        json_object_set_new(body, "location", json_string(v[F_LOCATION]));
    if (v[F_OCCURRED_AT])
        json_object_set_new(body, "occurred_at", json_integer(strtoll(v[F_OCCURRED_AT], NULL, 10)));
    if (v[F_SEVERITY])
        json_object_set_new(body, "severity", json_string(v[F_SEVERITY]));
    if (v[F_NOTE])
        json_object_set_new(body, "note", json_string(v[F_NOTE]));

    if (v[F_CHILD_ID])
        json_object_set_new(child, "id", json_string(v[F_CHILD_ID]));
    json_object_set_new(child, "name", json_string(v[F_CHILD_NAME]));
    if (v[F_GENDER])
        json_object_set_new(child, "gender", json_string(v[F_GENDER]));
    if (v[F_BIRTH_DATE])
        json_object_set_new(child, "birth_date", json_string(v[F_BIRTH_DATE]));
    if (v[F_CATEGORY]) {
        json_t *arr = json_array();
        char *all = xstrdup(v[F_CATEGORY]);
        for (char *save = NULL, *tok = strtok_r(all, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save))
            json_array_append_new(arr, json_string(tok));
        free(all);
        json_object_set_new(child, "category", arr);
    }
    if (v[F_JURISDICTION])
        json_object_set_new(child, "jurisdiction", json_string(v[F_JURISDICTION]));
    if (v[F_GUARDIAN_NAME])
        json_object_set_new(guardian, "name", json_string(v[F_GUARDIAN_NAME]));
    if (v[F_GUARDIAN_RELATION])
        json_object_set_new(guardian, "relation", json_string(v[F_GUARDIAN_RELATION]));
    if (v[F_GUARDIAN_PHONE])
        json_object_set_new(guardian, "phone", json_string(v[F_GUARDIAN_PHONE]));
    if (json_object_size(guardian))
        json_object_set(child, "guardian", guardian);
    json_decref(guardian);
    json_object_set_new(body, "child", child);

    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

int missing_required(const report_t *r, char *buf, size_t len)
{
    size_t used = 0;
    int n = 0;
    buf[0] = '\0';
    for (int f = 0; f < NFIELDS; f++) {
        if (!FIELDS[f].required || r->val[f])
            continue;
        int k = snprintf(buf + used, len - used, "%s--%s", n ? ", " : "", FIELDS[f].flag);
        if (k > 0 && (size_t)k < len - used)
            used += (size_t)k;
        n++;
    }
    return n;
}
