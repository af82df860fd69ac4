/*
 * form.c — carehub-report's form; see form.h.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "form.h"
#include "cli.h"
#include "util.h"

static const char *const HARMS[] = {"physical_abuse", "sexual_abuse", "neglect", "abandonment",
                                    "guardian_absent", "domestic_violence", "trafficking",
                                    "self_harm", "bullying", "other", NULL};
static const char *const GENDERS[] = {"male", "female", "unknown", NULL};
static const char *const CATEGORIES[] = {"left_behind", "in_difficulty", "orphan", "unattended",
                                         "disabled", "other", NULL};
static const char *const SEVERITIES[] = {"critical", "high", "normal", "low", NULL};



const field_t FIELDS[NFIELDS] = {
    [F_ORGANISATION] = {"organisation", "Your organisation (school, hospital, committee)", K_TEXT,
                        NULL, 200, 1},
    [F_REPORTER_NAME] = {"reporter-name", "Your name", K_TEXT, NULL, 200, 0},
    [F_ROLE] = {"role", "Your role (teacher, doctor, child director...)", K_TEXT, NULL, 100, 0},
    [F_PHONE] = {"phone", "Your phone, for the agency to call back", K_TEXT, NULL, 32, 0},
    [F_HARM] = {"harm", "What harm", K_ENUM, HARMS, 0, 1},
    [F_DESCRIPTION] = {"description", "What was seen or heard, by whom, when", K_TEXT, NULL, 4000, 1},
    [F_SUSPECTED] = {"suspected", "Only suspected, not established? (yes/no)", K_BOOL, NULL, 0, 0},
    [F_IMMEDIATE_DANGER] = {"immediate-danger", "Is the child in danger now? (yes/no)", K_BOOL,
                            NULL, 0, 0},
    [F_LOCATION] = {"location", "Where the child is, or where it happened", K_TEXT, NULL, 500, 0},
    [F_OCCURRED_AT] = {"occurred-at", "When it happened (YYYY-MM-DD HH:MM, local time)", K_TIME,
                       NULL, 0, 0},
    [F_CHILD_NAME] = {"child-name", "The child's full name", K_TEXT, NULL, 200, 1},
    [F_CHILD_ID] = {"child-id", "The child's id number (student or civil-affairs number)", K_TEXT,
                    NULL, 64, 0},
    [F_GENDER] = {"gender", "The child's gender", K_ENUM, GENDERS, 0, 0},
    [F_BIRTH_DATE] = {"birth-date", "The child's birth date (YYYY-MM-DD)", K_DATE, NULL, 0, 0},
    [F_CATEGORY] = {"category", "The child's categories (several: separate with commas)", K_LIST,
                    CATEGORIES, 0, 0},
    [F_JURISDICTION] = {"jurisdiction", "The child's street or town (街镇)", K_TEXT, NULL, 200, 0},
    [F_GUARDIAN_NAME] = {"guardian-name", "The guardian's name", K_TEXT, NULL, 200, 0},
    [F_GUARDIAN_RELATION] = {"guardian-relation", "The guardian's relation to the child", K_TEXT,
                             NULL, 100, 0},
    [F_GUARDIAN_PHONE] = {"guardian-phone", "The guardian's phone", K_TEXT, NULL, 32, 0},
    [F_SEVERITY] = {"severity", "How urgent", K_ENUM, SEVERITIES, 0, 0},
    [F_NOTE] = {"note", "A note for the agency", K_TEXT, NULL, 4000, 0},
};

int set_field(report_t *r, int f, const char *in, int append, char *why, size_t whylen)
{
    const field_t *fd = &FIELDS[f];
    char list[256];
    char *v = cli_trim(xstrdup(in));
    char *out = NULL;

    if (!cli_utf8_valid(v)) {
        util_fmt(why, whylen, "not valid UTF-8");
        goto bad;
    }
    switch (fd->kind) {
    case K_TEXT:
        if (!*v && fd->required) {
            util_fmt(why, whylen, "required; it cannot be empty");
            goto bad;
        }
        if (cli_utf8_len(v) > fd->max) {
            util_fmt(why, whylen, "at most %zu characters (this has %zu)", fd->max, cli_utf8_len(v));
            goto bad;
        }
        out = xstrdup(v);
        break;
    case K_ENUM:
        if (cli_enum_index(v, fd->values) < 0) {
            cli_enum_list(fd->values, "|", list, sizeof list);
            util_fmt(why, whylen, "'%s' is not one of %s", cli_show(v), list);
            goto bad;
        }
        out = xstrdup(v);
        break;
    case K_BOOL: {
        int b;
        if (cli_parse_bool(v, &b) < 0) {
            util_fmt(why, whylen, "'%s' is not yes or no", cli_show(v));
            goto bad;
        }
        out = xstrdup(b ? "true" : "false");
        break;
    }
    case K_DATE:
        if (!cli_valid_date(v)) {
            util_fmt(why, whylen, "'%s' is not a date written YYYY-MM-DD", cli_show(v));
            goto bad;
        }
        out = xstrdup(v);
        break;
    case K_TIME: {
        int64_t ms;
        if (cli_parse_time(v, &ms) < 0) {
            util_fmt(why, whylen, "'%s' is not a time: give YYYY-MM-DD, YYYY-MM-DD HH:MM "
                     "(local time), an ISO 8601 time with Z or +08:00, or ms since 1970", cli_show(v));
            goto bad;
        }
        char buf[32];
        util_fmt(buf, sizeof buf, "%lld", (long long)ms);
        out = xstrdup(buf);
        break;
    }
    case K_LIST: {
        int seen[8] = {0};
        char joined[256] = "";
        size_t used = 0;
        char *prev = append && r->val[f] ? xstrdup(r->val[f]) : xstrdup("");
        char *all = xmalloc(strlen(prev) + strlen(v) + 2);
        sprintf(all, "%s,%s", prev, v);
        free(prev);
        for (char *save = NULL, *tok = strtok_r(all, ",;| ", &save); tok;
             tok = strtok_r(NULL, ",;| ", &save)) {
            int k = cli_enum_index(tok, fd->values);
            if (k < 0) {
                cli_enum_list(fd->values, ", ", list, sizeof list);
                util_fmt(why, whylen, "'%s' is not one of %s", cli_show(tok), list);
                free(all);
                goto bad;
            }
            if (seen[k]++)
                continue;
            int n = snprintf(joined + used, sizeof joined - used, "%s%s", used ? "," : "", tok);
            if (n > 0 && (size_t)n < sizeof joined - used)
                used += (size_t)n;
        }
        free(all);
        out = xstrdup(joined);
        break;
    }
    }
    free(r->val[f]);
    if (!*out && !fd->required) {   /* an empty optional value: not given */
        free(out);
        out = NULL;
    }
    r->val[f] = out;
    free(v);
    return 0;
bad:
    free(v);
    return -1;
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
