/*
 * visit.c — carehub-director's visits; see visit.h.
 */
#include "visit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli.h"
#include "schema_tables.h"
#include "util.h"

/* The values and limits are schemas/visit.json's (schema_tables.h, generated). */
#define VI(x) SCHEMA_VISIT_##x

static const char *const KINDS[] = VI(KIND_ENUM);
static const char *const METHODS[] = VI(METHOD_ENUM);
static const char *const NEEDS[] = VI(NEEDS_ITEMS_ENUM);

const visit_info_t VISIT_FIELDS[VF_N] = {
    [VF_CHILD] = {"child", "Child id", VK_TEXT, 1, NULL, VI(CHILD_ID_MAX_LENGTH)},
    [VF_KIND] = {"kind", "Kind (home_visit: 入户走访, also a contact)", VK_ENUM, 1, KINDS, 0},
    [VF_DATE] = {"date", "Date (YYYY-MM-DD)", VK_DATE, 1, NULL, 0},
    [VF_METHOD] = {"method", "Method", VK_ENUM, 0, METHODS, 0},
    [VF_FINDINGS] = {"findings", "Findings (what you found and did)", VK_TEXT, 0, NULL,
                     VI(FINDINGS_MAX_LENGTH)},
    [VF_CONCERN] = {"concern", "A problem others must take up (发现问题)", VK_BOOL, 0, NULL, 0},
    [VF_NEEDS] = {"needs", "Needs", VK_LIST, 0, NEEDS, 0},
};

#define MAX_ANSWER 16384

void visit_free(visit_t *v)
{
    for (int i = 0; i < VF_N; i++) {
        free(v->val[i]);
        v->val[i] = NULL;
    }
}

static void keep(visit_t *v, int f, const char *s)
{
    free(v->val[f]);
    v->val[f] = xstrdup(s);
}

void visit_today(char out[11])
{
    time_t t = time(NULL);
    struct tm tm;
    if (!localtime_r(&t, &tm) || strftime(out, 11, "%Y-%m-%d", &tm) != 10)
        util_fmt(out, 11, "1970-01-01");
}

int visit_set(visit_t *v, int f, const char *value, char *why, size_t whylen)
{
    const visit_info_t *fi = &VISIT_FIELDS[f];
    char sub[512];
    if (!cli_utf8_valid(value)) {
        util_fmt(why, whylen, "not valid UTF-8");
        return -1;
    }
    switch (fi->kind) {
    case VK_TEXT:
        if (f == VF_CHILD && !util_valid_id(value, strlen(value))) {
            util_fmt(why, whylen, "'%s' is not a child id (1-%zu characters of A-Z a-z 0-9 . _ : -)",
                     cli_show(value), fi->max);
            return -1;
        }
        if (cli_utf8_len(value) > fi->max) {
            util_fmt(why, whylen, "at most %zu characters", fi->max);
            return -1;
        }
        keep(v, f, value);
        return 0;
    case VK_ENUM:
        if (cli_enum_check(value, fi->values, "|", sub, sizeof sub) < 0) {
            util_fmt(why, whylen, "%s", sub);
            return -1;
        }
        keep(v, f, value);
        return 0;
    case VK_BOOL: {
        int yes;
        if (cli_parse_bool(value, &yes) < 0) {
            util_fmt(why, whylen, "'%s' is not yes or no", cli_show(value));
            return -1;
        }
        keep(v, f, yes ? "true" : "false");
        return 0;
    }
    case VK_DATE: {
        char today[11];
        visit_today(today);
        if (!cli_valid_date(value)) {
            util_fmt(why, whylen, "'%s' is not a day written YYYY-MM-DD", cli_show(value));
            return -1;
        }
        if (strcmp(value, today) > 0) {
            util_fmt(why, whylen, "%s is after today (%s): a visit is recorded once made", value, today);
            return -1;
        }
        keep(v, f, value);
        return 0;
    }
    case VK_LIST: {
        /* "a,b" or "a;b": each one of the values, at most once, kept as "a,b" */
        char *copy = xstrdup(value), out[512] = "";
        size_t used = 0;
        int rc = 0;
        for (char *save = NULL, *tok = strtok_r(copy, ",;| ", &save); tok;
             tok = strtok_r(NULL, ",;| ", &save)) {
            if (cli_enum_check(tok, fi->values, ", ", sub, sizeof sub) < 0) {
                util_fmt(why, whylen, "%s", sub);
                rc = -1;
                break;
            }
            char pat[80];
            util_fmt(pat, sizeof pat, ",%s,", tok);
            char have[520];
            util_fmt(have, sizeof have, ",%s,", out);
            if (strstr(have, pat))
                continue;
            int n = snprintf(out + used, sizeof out - used, "%s%s", used ? "," : "", tok);
            if (n > 0 && (size_t)n < sizeof out - used)
                used += (size_t)n;
        }
        free(copy);
        if (rc == 0)
            keep(v, f, out);
        return rc;
    }
    }
    return -1;
}

json_t *visit_body(visit_t *v, char *why, size_t whylen)
{
    char today[11];
    if (!v->val[VF_DATE]) {
        visit_today(today);
        keep(v, VF_DATE, today);
    }
    for (int f = 0; f < VF_N; f++)
        if (VISIT_FIELDS[f].required && !v->val[f]) {
            util_fmt(why, whylen, "%s%s is required", f == VF_CHILD ? "the " : "--",
                     f == VF_CHILD ? "child id" : VISIT_FIELDS[f].flag);
            return NULL;
        }
    json_t *body = json_pack("{s:{s:s}, s:s, s:s}", "child", "id", v->val[VF_CHILD], "kind",
                             v->val[VF_KIND], "date", v->val[VF_DATE]);
    if (!body) {
        util_fmt(why, whylen, "out of memory");
        return NULL;
    }
    if (v->val[VF_METHOD])
        json_object_set_new(body, "method", json_string(v->val[VF_METHOD]));
    if (v->val[VF_FINDINGS] && *v->val[VF_FINDINGS])
        json_object_set_new(body, "findings", json_string(v->val[VF_FINDINGS]));
    if (v->val[VF_CONCERN])
        json_object_set_new(body, "concern", json_boolean(!strcmp(v->val[VF_CONCERN], "true")));
    if (v->val[VF_NEEDS] && *v->val[VF_NEEDS]) {
        json_t *arr = json_array();
        char *copy = xstrdup(v->val[VF_NEEDS]);
        for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
            json_array_append_new(arr, json_string(tok));
        free(copy);
        json_object_set_new(body, "needs", arr);
    }
    return body;
}

int64_t visit_at(const char *date)
{
    char today[11];
    int64_t ms;
    visit_today(today);
    if (!strcmp(date, today) || cli_parse_time(date, &ms) < 0)
        return util_now_ms();
    return ms + 12 * 3600 * 1000LL;
}

/* ---- the form ---------------------------------------------------------------------------- */

/* One line from stdin without its newline: 0, or -1 at the end of input. */
static int read_answer(char **line, size_t *cap)
{
    ssize_t n = getline(line, cap, stdin);
    if (n < 0)
        return -1;
    if ((size_t)n > MAX_ANSWER) {
        (*line)[0] = '\0';
        fprintf(stderr, "  (that answer is longer than %d bytes; it was not taken)\n", MAX_ANSWER);
        return 0;
    }
    while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r'))
        (*line)[--n] = '\0';
    return 0;
}

/* Numbers for values: "2" or "1,3" -> the values, into out. 0, or -1. */
static int by_number(const char *ans, const char *const *vals, char *out, size_t len)
{
    int count = 0;
    size_t used = 0;
    while (vals[count])
        count++;
    out[0] = '\0';
    char *copy = xstrdup(ans);
    int ok = 1;
    for (char *save = NULL, *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        long k = strtol(tok, NULL, 10);
        if (k < 1 || k > count) {
            ok = 0;
            break;
        }
        int n = snprintf(out + used, len - used, "%s%s", used ? "," : "", vals[k - 1]);
        if (n > 0 && (size_t)n < len - used)
            used += (size_t)n;
    }
    free(copy);
    return ok ? 0 : -1;
}

int visit_form(visit_t *v)
{
    char *line = NULL, why[512], mapped[512], today[11];
    size_t cap = 0;
    int rc = 0;
    visit_today(today);
    if (!v->val[VF_DATE])
        keep(v, VF_DATE, today);
    fprintf(stderr, "A contact or home visit (走访) to record. Fields marked * are required.\n"
                    "Enter keeps the value in [brackets]; '-' clears an optional one; lists may\n"
                    "be answered by number.\n\n");
    for (int f = 0; f < VF_N; f++) {
        const visit_info_t *fi = &VISIT_FIELDS[f];
        for (;;) {
            const char *shown = v->val[f] ? v->val[f] : "";
            if (fi->kind == VK_BOOL && v->val[f])
                shown = strcmp(v->val[f], "true") ? "no" : "yes";
            fprintf(stderr, "%s %s", fi->required ? "*" : " ", fi->label);
            if (fi->values) {
                fprintf(stderr, ":\n");
                for (int i = 0; fi->values[i]; i++)
                    fprintf(stderr, "      %d. %s\n", i + 1, fi->values[i]);
                fprintf(stderr, "   ");
            }
            if (fi->kind == VK_BOOL)
                fprintf(stderr, " (y/n)");
            fprintf(stderr, "%s", *shown ? " [" : "");
            if (*shown)
                cli_put_safe(stderr, cli_show(shown));
            fprintf(stderr, "%s: ", *shown ? "]" : "");
            fflush(stderr);
            if (read_answer(&line, &cap) < 0) {
                fprintf(stderr, "\n");
                rc = -1;
                goto out;
            }
            char *ans = cli_trim(line);
            if (!*ans) {
                if (v->val[f] || !fi->required)
                    break;
                fprintf(stderr, "  (required)\n");
                continue;
            }
            if (!strcmp(ans, "-") && !fi->required) {
                free(v->val[f]);
                v->val[f] = NULL;
                break;
            }
            if (fi->values && strspn(ans, "0123456789, ") == strlen(ans)) {
                if (by_number(ans, fi->values, mapped, sizeof mapped) < 0) {
                    fprintf(stderr, "  (answer with the value or its number)\n");
                    continue;
                }
                ans = mapped;
            }
            if (visit_set(v, f, ans, why, sizeof why) == 0)
                break;
            fprintf(stderr, "  (%s)\n", why);
        }
    }
    fprintf(stderr, "\nThe visit:\n");
    for (int f = 0; f < VF_N; f++) {
        if (!v->val[f])
            continue;
        fprintf(stderr, "  %-9s ", VISIT_FIELDS[f].flag);
        cli_put_safe(stderr, v->val[f]);
        fputc('\n', stderr);
    }
    fprintf(stderr, "\nSend it now? [y/N]: ");
    fflush(stderr);
    int yes = 0;
    if (read_answer(&line, &cap) < 0 || cli_parse_bool(line, &yes) < 0 || !yes)
        rc = -1;
out:
    free(line);
    return rc;
}
