/*
 * show.c — how bin/carehub prints answers: values (times as local dates),
 * trees, JSON lines, the cases table. See carehub_cli.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "carehub_cli.h"
#include "cli.h"
#include "util.h"

int show_is_time_key(const char *k)
{
    static const char *const keys[] = {"opened", "at", "received", "created", "ack_by", "acked_at",
                                       "next_due", "closed", "updated", "occurred_at", "resolved_at",
                                       "last_event", "now", "resolve_by", "final_at",
                                       /* the register (PROTOCOL §9) and visit_overdue */
                                       "enrolled", "last_contact", "last_visit", "contact_due",
                                       "visit_due", "due", "last", NULL};
    return cli_enum_index(k, keys) >= 0;
}

/* A value for a table or a key=value line. */
void show_val(FILE *f, const char *key, const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        cli_put_safe(f, *s ? s : "-");
    } else if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (key && show_is_time_key(key)) {
            char t[64];
            if (n <= 0)
                fputc('-', f);
            else {
                cli_format_time(n, t, sizeof t);
                fputs(t, f);
            }
        } else {
            fprintf(f, "%lld", (long long)n);
        }
    } else if (json_is_real(v)) {
        fprintf(f, "%g", json_real_value(v));
    } else if (json_is_boolean(v)) {
        fputs(json_is_true(v) ? "yes" : "no", f);
    } else if (json_is_null(v) || !v) {
        fputc('-', f);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (i)
                fputc(',', f);
            show_val(f, NULL, x);
        }
    } else {
        fputs("{…}", f);
    }
}

/* Every leaf of o as "  prefix.key: value" lines (nested objects flattened). */
void show_tree(FILE *f, const char *indent, const char *prefix, const json_t *o)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v) {
        char path[512];
        util_fmt(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", k);
        if (json_is_object(v)) {
            show_tree(f, indent, path, v);
            continue;
        }
        fputs(indent, f);
        cli_put_safe(f, path);
        fputs(": ", f);
        show_val(f, k, v);
        fputc('\n', f);
    }
}

void show_json_line(const json_t *j)
{
    char *t = json_dumps(j, JSON_COMPACT);
    if (t) {
        fputs(t, stdout);
        fputc('\n', stdout);
    }
    free(t);
}

void show_cell(const char *key, const json_t *v, int width)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m)
        return;
    show_val(m, key, v);
    fclose(m);
    fputs(buf, stdout);
    /* pad by characters, not bytes (names may be Chinese) */
    int n = (int)cli_utf8_len(buf);
    for (; n < width; n++)
        fputc(' ', stdout);
    fputc(' ', stdout);
    free(buf);
}

void show_case_row(const json_t *c)
{
    show_cell("id", json_object_get(c, "id"), 20);
    show_cell("type", json_object_get(c, "type"), 16);
    show_cell("status", json_object_get(c, "status"), 11);
    show_cell("severity", json_object_get(c, "severity"), 8);
    show_cell("opened", json_object_get(c, "opened"), 26);
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(c, "assignments"), i, a) {
        if (i)
            fputs(", ", stdout);
        cli_put_safe(stdout, cli_json_str(a, "agency", "?"));
        fputc(':', stdout);
        cli_put_safe(stdout, cli_json_str(a, "state", "?"));
    }
    fputc('\n', stdout);
}

void show_header(const char *const *en, const char *const *zh, const int *width, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const char *t = cli_tr(en[k], zh[k]);
        if (k + 1 < n) {
            show_padded(stdout, t, width[k], 0);
            fputc(' ', stdout);
        } else {
            fputs(t, stdout);
        }
    }
    fputc('\n', stdout);
}

void show_case_header(void)
{
    static const char *const en[] = {"CASE", "TYPE", "STATUS", "SEVERITY", "OPENED", "ASSIGNMENTS"};
    static const char *const zh[] = {"案件", "类型", "状态", "严重程度", "立案时间", "任务（单位:状态）"};
    static const int width[] = {20, 16, 11, 8, 26, 0};
    show_header(en, zh, width, UTIL_ARRAY_LEN(en));
}

void show_fields(FILE *f, const json_t *o, const char *const *keys)
{
    for (int k = 0; keys[k]; k++) {
        json_t *v = json_object_get(o, keys[k]);
        if (!v)
            continue;
        fprintf(f, " %s=", keys[k]);
        show_val(f, keys[k], v);
    }
}

void show_html_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        default:
            if ((unsigned char)*s < 0x20 && *s != '\n' && *s != '\t')
                fputc('?', f);
            else
                fputc(*s, f);
        }
    }
}

void show_csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

size_t show_width(const char *s)
{
    return cli_display_width(s);
}

void show_padded(FILE *f, const char *s, int width, int right)
{
    /* cli_put_safe() writes a control character as '?': the same one column */
    int pad = width - (int)show_width(s);
    if (right)
        for (; pad > 0; pad--)
            fputc(' ', f);
    cli_put_safe(f, s);
    if (!right)
        for (; pad > 0; pad--)
            fputc(' ', f);
}
