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

/* A field of the body at `key`, its limit and requiredness those of the schema's S. */
#define TEXT(flag, label, key, S) \
    {flag, label, K_TEXT, NULL, MR(S##_MAX_LENGTH), MR(S##_REQUIRED), key}
#define ONE_OF(flag, label, key, S, vals) {flag, label, K_ENUM, vals, 0, MR(S##_REQUIRED), key}
#define OTHER(flag, label, kind, key, S) {flag, label, kind, NULL, 0, MR(S##_REQUIRED), key}

const field_t FIELDS[NFIELDS] = {
    [F_ORGANISATION] = TEXT("organisation", "Your organisation (school, hospital, committee)",
                            "reporter.organisation", REPORTER_ORGANISATION),
    [F_REPORTER_NAME] = TEXT("reporter-name", "Your name", "reporter.name", REPORTER_NAME),
    [F_ROLE] = TEXT("role", "Your role (teacher, doctor, child director...)", "reporter.role",
                    REPORTER_ROLE),
    [F_PHONE] = TEXT("phone", "Your phone, for the agency to call back", "reporter.phone",
                     REPORTER_PHONE),
    [F_HARM] = ONE_OF("harm", "What harm", "harm", HARM, HARMS),
    [F_DESCRIPTION] = TEXT("description", "What was seen or heard, by whom, when", "description",
                           DESCRIPTION),
    [F_SUSPECTED] = OTHER("suspected", "Only suspected, not established? (yes/no)", K_BOOL,
                          "suspected", SUSPECTED),
    [F_IMMEDIATE_DANGER] = OTHER("immediate-danger", "Is the child in danger now? (yes/no)",
                                 K_BOOL, "immediate_danger", IMMEDIATE_DANGER),
    [F_LOCATION] = TEXT("location", "Where the child is, or where it happened", "location",
                        LOCATION),
    [F_OCCURRED_AT] = OTHER("occurred-at", "When it happened (YYYY-MM-DD HH:MM, local time)",
                            K_TIME, "occurred_at", OCCURRED_AT),
    [F_CHILD_NAME] = TEXT("child-name", "The child's full name", "child.name", CHILD_NAME),
    [F_CHILD_ID] = TEXT("child-id", "The child's id number (student or civil-affairs number)",
                        "child.id", CHILD_ID),
    [F_GENDER] = ONE_OF("gender", "The child's gender", "child.gender", CHILD_GENDER, GENDERS),
    [F_BIRTH_DATE] = OTHER("birth-date", "The child's birth date (YYYY-MM-DD)", K_DATE,
                           "child.birth_date", CHILD_BIRTH_DATE),
    [F_CATEGORY] = {"category", "The child's categories (several: separate with commas)", K_LIST,
                    CATEGORIES, 0, MR(CHILD_CATEGORY_REQUIRED), "child.category"},
    [F_JURISDICTION] = TEXT("jurisdiction", "The child's street or town (街镇)",
                            "child.jurisdiction", CHILD_JURISDICTION),
    [F_GUARDIAN_NAME] = TEXT("guardian-name", "The guardian's name", "child.guardian.name",
                             CHILD_GUARDIAN_NAME),
    [F_GUARDIAN_RELATION] = TEXT("guardian-relation", "The guardian's relation to the child",
                                 "child.guardian.relation", CHILD_GUARDIAN_RELATION),
    [F_GUARDIAN_PHONE] = TEXT("guardian-phone", "The guardian's phone", "child.guardian.phone",
                              CHILD_GUARDIAN_PHONE),
    [F_SEVERITY] = ONE_OF("severity", "How urgent", "severity", SEVERITY, SEVERITIES),
    [F_NOTE] = TEXT("note", "A note for the agency", "note", NOTE),
};
#undef TEXT
#undef ONE_OF
#undef OTHER


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

/* A field's value (normalised by set_field) as the body holds it. */
static json_t *field_json(const field_t *fd, const char *v)
{
    switch (fd->kind) {
    case K_BOOL:
        return json_boolean(!strcmp(v, "true"));
    case K_TIME:
        return json_integer(strtoll(v, NULL, 10));
    case K_LIST: {
        json_t *arr = json_array();
        char *all = xstrdup(v);
        for (char *save = NULL, *tok = strtok_r(all, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save))
            json_array_append_new(arr, json_string(tok));
        free(all);
        return arr;
    }
    default:
        return json_string(v);
    }
}

char *build_body(const report_t *r)
{
    json_t *body = json_object();
    for (int f = 0; f < NFIELDS; f++) {
        if (!r->val[f])
            continue;
        /* down the dotted key, making the objects on the way (only those with a value) */
        char path[64];
        util_fmt(path, sizeof path, "%s", FIELDS[f].key);
        json_t *o = body;
        char *save = NULL, *name = strtok_r(path, ".", &save);
        for (char *next; (next = strtok_r(NULL, ".", &save)) != NULL; name = next) {
            json_t *sub = json_object_get(o, name);
            if (!sub)
                json_object_set_new(o, name, sub = json_object());
            o = sub;
        }
        json_object_set_new(o, name, field_json(&FIELDS[f], r->val[f]));
    }
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
