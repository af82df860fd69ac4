/*
 * report.c — `carehub report`: response times per agency (acknowledged within
 * the deadline, medians and percentiles) as a table, JSON, CSV or an HTML page.
 * See carehub_cli.h.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "carehub_cli.h"
#include "cli.h"
#include "util.h"

typedef struct {
    char agency[128];       /* the agency's id (--json, --csv, the order) */
    char label[256];        /* what people read: its name from welcome, else the id */
    long count, due, on_time, escalations, open_overdue;
    double *mins;           /* time to acknowledge, minutes */
    size_t nmins;
} agency_row_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values; NAN when there are none. */
static double percentile(const double *v, size_t n, double p)
{
    if (!n)
        return NAN;
    size_t r = (size_t)ceil(p * (double)n);
    return v[r ? r - 1 : 0];
}

static json_t *num_or_null(double x)
{
    return isnan(x) ? json_null() : json_real(round(x * 10) / 10);
}

static void fmt_num(char *buf, size_t len, double x, const char *suffix)
{
    if (isnan(x))
        util_fmt(buf, len, "-");
    else
        util_fmt(buf, len, "%.1f%s", x, suffix);
}

static int write_html(const char *file, agency_row_t *rows, size_t n, const double *pct,
                      const double *p50, const double *p90, int64_t now, int64_t since,
                      const cli_common_t *co)
{
    FILE *f = fopen(file, "w");
    if (!f) {
        cli_err("--html %s: cannot write: %s", file, strerror(errno));
        return CLI_EX_IO;
    }
    char t[64], t2[64], zone[CAREHUB_TZ_NAME_MAX + 8];
    cli_format_time(now, t, sizeof t);
    cli_zone_note(zone, sizeof zone);
    const char *title = cli_tr("Acknowledgement per agency", "各单位签收情况");
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"%s\">\n<head>\n<meta charset=\"utf-8\">\n<title>",
            cli_tr("en", "zh-CN"));
    fputs(cli_tr("carehub: ", "carehub：") , f);
    fputs(title, f);
    fputs("</title>\n<style>\n"
          "body{font-family:sans-serif;margin:2em;color:#1a1a1a;background:#ffffff}\n"
          "table{border-collapse:collapse;margin:1em 0}\n"
          "th,td{border:1px solid #888;padding:4px 10px;text-align:right}\n"
          "th:first-child,td:first-child{text-align:left}\n"
          "th{background:#e8eef4}\n.note{color:#555;font-size:90%}\n"
          "</style>\n</head>\n<body>\n<h1>", f);
    fputs(title, f);
    fputs("</h1>\n<p class=\"note\">", f);
    fputs(cli_tr("Figures at ", "统计时间："), f);
    show_html_escape(f, t);
    show_html_escape(f, zone);
    if (since > 0) {
        cli_format_time(since, t2, sizeof t2);
        fputs(cli_tr(", assignments created since ", "，统计范围：自 "), f);
        show_html_escape(f, t2);
        fputs(cli_tr("", " 起派发的任务"), f);
    }
    fputs(cli_tr("; broker ", "；服务端 "), f);
    show_html_escape(f, co->endpoint);
    fputs(cli_tr(", read as ", "，查询身份 "), f);
    show_html_escape(f, co->agent);
    fputs(cli_tr(".</p>\n", "。</p>\n"), f);
    static const char *const head_en[] = {"agency", "assignments", "due", "on time", "on time %",
                                          "ack p50 (min)", "ack p90 (min)", "escalations",
                                          "open overdue"};
    static const char *const head_zh[] = {"单位", "派发任务", "已到期", "按时签收", "按时签收率",
                                          "签收用时中位数（分钟）", "签收用时 P90（分钟）",
                                          "升级次数", "逾期未签收"};
    fputs("<table>\n<tr>", f);
    for (size_t k = 0; k < UTIL_ARRAY_LEN(head_en); k++)
        fprintf(f, "<th>%s</th>", cli_tr(head_en[k], head_zh[k]));
    fputs("</tr>\n", f);
    for (size_t i = 0; i < n; i++) {
        char a[32], b[32], c[32];
        fmt_num(a, sizeof a, pct[i], "%");
        fmt_num(b, sizeof b, p50[i], "");
        fmt_num(c, sizeof c, p90[i], "");
        fputs("<tr><td>", f);
        show_html_escape(f, rows[i].label);
        fprintf(f, "</td><td>%ld</td><td>%ld</td><td>%ld</td><td>", rows[i].count, rows[i].due,
                rows[i].on_time);
        show_html_escape(f, a);
        fputs("</td><td>", f);
        show_html_escape(f, b);
        fputs("</td><td>", f);
        show_html_escape(f, c);
        fprintf(f, "</td><td>%ld</td><td>%ld</td></tr>\n", rows[i].escalations,
                rows[i].open_overdue);
    }
    const char *chart = cli_tr("Acknowledged on time (%)", "按时签收率（%）");
    fprintf(f, "</table>\n<h2>%s</h2>\n", chart);
    const int label_w = 240, bar_w = 500, row_h = 28;
    int height = (int)n * row_h + 40;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">\n<title>%s</title>\n",
            label_w + bar_w + 80, height, label_w + bar_w + 80, height, chart, chart);
    for (size_t i = 0; i < n; i++) {
        int y = 10 + (int)i * row_h;
        double p = isnan(pct[i]) ? 0 : pct[i];
        char a[32];
        fmt_num(a, sizeof a, pct[i], "%");
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"14\" text-anchor=\"end\" "
                   "font-family=\"sans-serif\">", label_w - 8, y + 16);
        show_html_escape(f, rows[i].label);
        fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
                   "fill=\"%s\"><title>",
                label_w, y, p * bar_w / 100.0, row_h - 8, p >= 90 ? "#2e7d32" : p >= 60 ? "#f9a825" : "#c62828");
        show_html_escape(f, rows[i].label);
        fputs(cli_tr(": ", "："), f);
        show_html_escape(f, a);
        fprintf(f, "</title></rect>\n<text x=\"%.1f\" y=\"%d\" font-size=\"13\" "
                   "font-family=\"sans-serif\">", label_w + p * bar_w / 100.0 + 6, y + 16);
        show_html_escape(f, a);
        fputs("</text>\n", f);
    }
    fprintf(f, "<line x1=\"%d\" y1=\"5\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
               "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
               "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"end\" "
               "font-family=\"sans-serif\">100%%</text>\n</svg>\n",
            label_w, label_w, height - 20, label_w, height - 20, label_w + bar_w, height - 20,
            label_w + bar_w, height - 6);
    fputs(cli_tr("<p class=\"note\">On time: acknowledged no later than its deadline (ack_by), of "
                 "the assignments that are due (acknowledged, or past the deadline). Time to "
                 "acknowledge: from the assignment's creation, in minutes (nearest-rank "
                 "percentiles). Escalations: escalation steps fired.</p>\n</body>\n</html>\n",
                 "<p class=\"note\">按时签收：在签收期限（ack_by）之前签收；只计已到期的任务（已签收，"
                 "或已过期限）。签收用时：自任务派发起，以分钟计（最近秩百分位数）。升级次数：已触发的"
                 "升级步骤数。</p>\n</body>\n</html>\n"),
          f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        cli_err("--html %s: cannot write: %s", file, strerror(errno));
        return CLI_EX_IO;
    }
    return 0;
}

int report_command(sess_t *s, const opts_t *o)
{
    json_t *f = json_pack("{s:i}", "limit", PAGE_MAX), *items = json_array(), *last = NULL;
    int rc = sess_query_pages(s, "assignments", f, "assignments", 1, items, &last, NULL);
    json_decref(f);
    if (rc) {
        json_decref(items);
        json_decref(last);
        return rc;
    }
    json_t *jnow = json_object_get(last, "now");
    int64_t now = json_is_integer(jnow) ? json_integer_value(jnow) : util_now_ms();
    json_decref(last);

    agency_row_t *rows = NULL;
    size_t n = 0, i;
    json_t *a;
    json_array_foreach(items, i, a) {
        json_int_t created = json_integer_value(json_object_get(a, "created"));
        json_int_t ack_by = json_integer_value(json_object_get(a, "ack_by"));
        json_int_t acked = json_integer_value(json_object_get(a, "acked_at"));
        if (o->since >= 0 && created < o->since)
            continue;
        const char *ag = cli_json_str(a, "agency", "?");
        size_t r;
        for (r = 0; r < n && strcmp(rows[r].agency, ag); r++)
            ;
        if (r == n) {
            rows = xrealloc(rows, (n + 1) * sizeof *rows);
            memset(&rows[n], 0, sizeof rows[n]);
            util_fmt(rows[n].agency, sizeof rows[n].agency, "%s", ag);
            util_fmt(rows[n].label, sizeof rows[n].label, "%s", cli_agency_label(s->c, ag));
            n++;
        }
        agency_row_t *row = &rows[r];
        row->count++;
        if (acked > 0 || ack_by < now)
            row->due++;
        if (acked > 0 && acked <= ack_by)
            row->on_time++;
        if (acked > 0) {
            row->mins = xrealloc(row->mins, (row->nmins + 1) * sizeof *row->mins);
            row->mins[row->nmins++] = (double)(acked - created) / 60000.0;
        }
        row->escalations += (long)json_integer_value(json_object_get(a, "level"));
        if (!strcmp(cli_json_str(a, "state", ""), "open") && ack_by < now)
            row->open_overdue++;
    }
    json_decref(items);
    /* agencies in name order */
    for (size_t x = 1; x < n; x++)
        for (size_t y = x; y > 0 && strcmp(rows[y - 1].agency, rows[y].agency) > 0; y--) {
            agency_row_t tmp = rows[y];
            rows[y] = rows[y - 1];
            rows[y - 1] = tmp;
        }
    double *pct = xcalloc(n + 1, sizeof *pct), *p50 = xcalloc(n + 1, sizeof *p50),
           *p90 = xcalloc(n + 1, sizeof *p90);
    for (i = 0; i < n; i++) {
        if (rows[i].nmins)
            qsort(rows[i].mins, rows[i].nmins, sizeof *rows[i].mins, cmp_double);
        pct[i] = rows[i].due ? 100.0 * (double)rows[i].on_time / (double)rows[i].due : NAN;
        p50[i] = percentile(rows[i].mins, rows[i].nmins, 0.5);
        p90[i] = percentile(rows[i].mins, rows[i].nmins, 0.9);
    }

    if (o->html) {
        rc = write_html(o->html, rows, n, pct, p50, p90, now, o->since, s->co);
        if (!rc)
            fprintf(stderr, "%s: wrote %s (%zu agencies)\n", cli_prog(), o->html, n);
    } else if (o->json) {
        json_t *out = json_pack("{s:I, s:o, s:[]}", "now", (json_int_t)now, "since",
                                o->since >= 0 ? json_integer(o->since) : json_null(), "agencies");
        json_t *arr = json_object_get(out, "agencies");
        for (i = 0; i < n; i++)
            json_array_append_new(arr, json_pack(
                "{s:s, s:I, s:I, s:I, s:o, s:o, s:o, s:I, s:I}", "agency", rows[i].agency,
                "assignments", (json_int_t)rows[i].count, "due", (json_int_t)rows[i].due,
                "on_time", (json_int_t)rows[i].on_time, "on_time_pct", num_or_null(pct[i]),
                "ack_p50_min", num_or_null(p50[i]), "ack_p90_min", num_or_null(p90[i]),
                "escalations", (json_int_t)rows[i].escalations, "open_overdue",
                (json_int_t)rows[i].open_overdue));
        show_json_line(out);
        json_decref(out);
    } else if (o->csv) {
        puts("agency,assignments,due,on_time,on_time_pct,ack_p50_min,ack_p90_min,escalations,"
             "open_overdue");
        for (i = 0; i < n; i++) {
            char a1[32], a2[32], a3[32];
            fmt_num(a1, sizeof a1, pct[i], "");
            fmt_num(a2, sizeof a2, p50[i], "");
            fmt_num(a3, sizeof a3, p90[i], "");
            show_csv_field(stdout, rows[i].agency);
            printf(",%ld,%ld,%ld,%s,%s,%s,%ld,%ld\n", rows[i].count, rows[i].due,
                   rows[i].on_time, isnan(pct[i]) ? "" : a1, isnan(p50[i]) ? "" : a2,
                   isnan(p90[i]) ? "" : a3, rows[i].escalations, rows[i].open_overdue);
        }
    } else {
        char t[64], zone[CAREHUB_TZ_NAME_MAX + 8];
        cli_format_time(now, t, sizeof t);
        cli_zone_note(zone, sizeof zone);
        printf(cli_tr("acknowledgement per agency, at %s%s\n", "各单位签收情况，统计时间 %s%s\n"), t,
               zone);
        static const char *const head_en[] = {"AGENCY", "ASSIGNMENTS", "DUE", "ON TIME",
                                              "ON TIME %", "ACK p50", "ACK p90", "ESCALATIONS",
                                              "OPEN OVERDUE"};
        static const char *const head_zh[] = {"单位", "派发任务", "已到期", "按时签收", "按时率",
                                              "签收p50", "签收p90", "升级次数", "逾期未签收"};
        static const int width[] = {20, 11, 5, 8, 9, 9, 9, 11, 12};
        for (size_t k = 0; k < UTIL_ARRAY_LEN(width); k++) {
            if (k)
                fputc(' ', stdout);
            show_padded(stdout, cli_tr(head_en[k], head_zh[k]), width[k], k > 0);
        }
        fputc('\n', stdout);
        for (i = 0; i < n; i++) {
            char a1[32], a2[32], a3[32];
            fmt_num(a1, sizeof a1, pct[i], "%");
            fmt_num(a2, sizeof a2, p50[i], "m");
            fmt_num(a3, sizeof a3, p90[i], "m");
            show_padded(stdout, cli_show(rows[i].label), 21, 0);
            printf("%11ld %5ld %8ld %9s %9s %9s %11ld %12ld\n", rows[i].count, rows[i].due,
                   rows[i].on_time, a1, a2, a3, rows[i].escalations, rows[i].open_overdue);
        }
        if (!n)
            puts(cli_tr("(no assignments)", "（没有任务）"));
    }
    for (i = 0; i < n; i++)
        free(rows[i].mins);
    free(rows);
    free(pct);
    free(p50);
    free(p90);
    return rc;
}
