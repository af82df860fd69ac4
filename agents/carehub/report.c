/*
 * report.c — `carehub report`: response times per agency as a table, JSON, CSV or an
 * HTML page. Per agency: acknowledged within the deadline (ack_by) and the time to
 * acknowledge (from creation); resolved within the second deadline (resolve_by,
 * PROTOCOL §10) and the time to resolve (from the acknowledgement to the final
 * status: resolved, referred or declined) — medians and 90th percentiles. The
 * figures themselves are common/figures.h's, as in the web view. See carehub_cli.h.
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
#include "figures.h"
#include "util.h"

/* An agency's figures and what people read for it: its name from welcome, else the id. */
typedef struct {
    const fig_agency_t *f;
    char label[256];
} agency_row_t;

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

/* The cells of one deadline's figures in a table row: due, on time, %, p50, p90. */
static void html_fig_cells(FILE *f, const fig_deadline_t *d)
{
    char a[32], b[32], c[32];
    fmt_num(a, sizeof a, d->pct, "%");
    fmt_num(b, sizeof b, d->p50, "");
    fmt_num(c, sizeof c, d->p90, "");
    fprintf(f, "<td>%ld</td><td>%ld</td><td>", d->due, d->on_time);
    show_html_escape(f, a);
    fputs("</td><td>", f);
    show_html_escape(f, b);
    fputs("</td><td>", f);
    show_html_escape(f, c);
    fputs("</td>", f);
}

/* The page's closing note: what each figure means. */
#define HTML_NOTE_EN \
    "<p class=\"note\">Acknowledgement on time: acknowledged no later than its deadline " \
    "(ack_by), of the assignments that are due (acknowledged, or past the deadline); time " \
    "to acknowledge from the assignment's creation. Resolution on time: a final status " \
    "(resolved, referred, declined) no later than the second deadline (resolve_by, set at " \
    "the acknowledgement where the workflow has resolve_within), of the assignments that " \
    "have one and are due (final, or past it); time to resolve from the acknowledgement " \
    "to the final status. Minutes, nearest-rank percentiles. Escalations: escalation " \
    "steps fired, both deadlines.</p>\n</body>\n</html>\n"
#define HTML_NOTE_ZH \
    "<p class=\"note\">按时签收：在签收期限（ack_by）之前签收；只计已到期的任务（已签收，或已过" \
    "期限）；签收用时自任务派发起算。按时办结：在办结期限（resolve_by，流程设有 resolve_within " \
    "时于签收时设定）之前给出最终状态（办结、转交、退回）；只计设有该期限且已到期的任务（已有最终" \
    "状态，或已过期限）；办结用时自签收起算至最终状态。以分钟计，最近秩百分位数。升级次数：两个" \
    "期限已触发的升级步骤数。</p>\n</body>\n</html>\n"

static int write_html(const char *file, const agency_row_t *rows, size_t n, int64_t now,
                      int64_t since, const cli_common_t *co)
{
    FILE *f = fopen(file, "w");
    if (!f) {
        cli_err("--html %s: cannot write: %s", file, strerror(errno));
        return CLI_EX_IO;
    }
    char t[64], t2[64], zone[CAREHUB_TZ_NAME_MAX + 8];
    cli_format_time(now, t, sizeof t);
    cli_zone_note(zone, sizeof zone);
    const char *title = cli_tr("Response per agency", "各单位响应情况");
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"%s\">\n<head>\n<meta charset=\"utf-8\">\n<title>%s%s",
            cli_tr("en", "zh-CN"), cli_tr("carehub: ", "carehub："), title);
    fputs("</title>\n<style>\n"
          "body{font-family:sans-serif;margin:2em;color:#1a1a1a;background:#ffffff}\n"
          "table{border-collapse:collapse;margin:1em 0}\n"
          "th,td{border:1px solid #888;padding:4px 10px;text-align:right}\n"
          "th:first-child,td:first-child{text-align:left}\n"
          "th{background:#e8eef4}\n.note{color:#555;font-size:90%}\n"
          "</style>\n</head>\n<body>\n", f);
    fprintf(f, "<h1>%s</h1>\n<p class=\"note\">%s", title, cli_tr("Figures at ", "统计时间："));
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
    fputs(cli_tr("<table>\n<tr><th rowspan=\"2\">agency</th><th rowspan=\"2\">assignments</th>"
                 "<th colspan=\"5\">acknowledgement</th><th colspan=\"5\">resolution</th>"
                 "<th rowspan=\"2\">escalations</th><th rowspan=\"2\">open overdue</th></tr>\n<tr>"
                 "<th>due</th><th>on time</th><th>on time %</th><th>ack p50 (min)</th>"
                 "<th>ack p90 (min)</th><th>due</th><th>on time</th><th>on time %</th>"
                 "<th>resolve p50 (min)</th><th>resolve p90 (min)</th></tr>\n",
                 "<table>\n<tr><th rowspan=\"2\">单位</th><th rowspan=\"2\">派发任务</th>"
                 "<th colspan=\"5\">签收</th><th colspan=\"5\">办结</th>"
                 "<th rowspan=\"2\">升级次数</th><th rowspan=\"2\">逾期未签收</th></tr>\n<tr>"
                 "<th>已到期</th><th>按时签收</th><th>按时签收率</th><th>签收用时中位数（分钟）</th>"
                 "<th>签收用时 P90（分钟）</th><th>已到期</th><th>按时办结</th><th>按时办结率</th>"
                 "<th>办结用时中位数（分钟）</th><th>办结用时 P90（分钟）</th></tr>\n"),
          f);
    for (size_t i = 0; i < n; i++) {
        fputs("<tr><td>", f);
        show_html_escape(f, rows[i].label);
        fprintf(f, "</td><td>%ld</td>", rows[i].f->count);
        html_fig_cells(f, &rows[i].f->ack);
        html_fig_cells(f, &rows[i].f->res);
        fprintf(f, "<td>%ld</td><td>%ld</td></tr>\n", rows[i].f->escalations,
                rows[i].f->open_overdue);
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
        double p = isnan(rows[i].f->ack.pct) ? 0 : rows[i].f->ack.pct;
        char a[32];
        fmt_num(a, sizeof a, rows[i].f->ack.pct, "%");
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
    fputs(cli_lang() == CLI_LANG_EN ? HTML_NOTE_EN : HTML_NOTE_ZH, f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        cli_err("--html %s: cannot write: %s", file, strerror(errno));
        return CLI_EX_IO;
    }
    return 0;
}

/* One assignment record of the `assignments` query, as the figures take it. */
static fig_assignment_t as_figures(const json_t *a)
{
    fig_assignment_t x = {
        .created = json_integer_value(json_object_get(a, "created")),
        .ack_by = json_integer_value(json_object_get(a, "ack_by")),
        .acked_at = json_integer_value(json_object_get(a, "acked_at")),
        .resolve_by = json_integer_value(json_object_get(a, "resolve_by")),
        .final_at = json_integer_value(json_object_get(a, "final_at")),
        .level = (long)json_integer_value(json_object_get(a, "level")),
        .resolve_level = (long)json_integer_value(json_object_get(a, "resolve_level")),
        .open = !strcmp(cli_json_str(a, "state", ""), "open"),
    };
    return x;
}

/* The JSON keys of each deadline's figures: the acknowledgement's kept their first names. */
static const char *const ACK_KEYS[5] = {"due", "on_time", "on_time_pct", "ack_p50_min",
                                        "ack_p90_min"};
static const char *const RES_KEYS[5] = {"resolve_due", "resolve_on_time", "resolve_on_time_pct",
                                        "resolve_p50_min", "resolve_p90_min"};

static void json_fig(json_t *row, const fig_deadline_t *d, const char *const keys[5])
{
    json_object_set_new(row, keys[0], json_integer(d->due));
    json_object_set_new(row, keys[1], json_integer(d->on_time));
    json_object_set_new(row, keys[2], num_or_null(d->pct));
    json_object_set_new(row, keys[3], num_or_null(d->p50));
    json_object_set_new(row, keys[4], num_or_null(d->p90));
}

static void csv_fig(const fig_deadline_t *d)
{
    char a1[32], a2[32], a3[32];
    fmt_num(a1, sizeof a1, d->pct, "");
    fmt_num(a2, sizeof a2, d->p50, "");
    fmt_num(a3, sizeof a3, d->p90, "");
    printf(",%ld,%ld,%s,%s,%s", d->due, d->on_time, isnan(d->pct) ? "" : a1,
           isnan(d->p50) ? "" : a2, isnan(d->p90) ? "" : a3);
}

static void text_fig(const fig_deadline_t *d)
{
    char a1[32], a2[32], a3[32];
    fmt_num(a1, sizeof a1, d->pct, "%");
    fmt_num(a2, sizeof a2, d->p50, "m");
    fmt_num(a3, sizeof a3, d->p90, "m");
    printf(" %5ld %8ld %9s %9s %9s", d->due, d->on_time, a1, a2, a3);
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

    fig_report_t fr = {0};
    size_t n, i;
    json_t *a;
    json_array_foreach(items, i, a) {
        if (o->since >= 0 && json_integer_value(json_object_get(a, "created")) < o->since)
            continue;
        const char *ag = cli_json_str(a, "agency", "?");
        fig_assignment_t x = as_figures(a);
        fig_report_add(&fr, ag, strlen(ag), &x, now);
    }
    json_decref(items);
    fig_report_finish(&fr); /* agencies in id order */
    n = fr.n;
    agency_row_t *rows = xcalloc(n + 1, sizeof *rows);
    for (i = 0; i < n; i++) {
        rows[i].f = &fr.rows[i];
        util_fmt(rows[i].label, sizeof rows[i].label, "%s", cli_agency_label(s->c, fr.rows[i].agency));
    }

    if (o->html) {
        rc = write_html(o->html, rows, n, now, o->since, s->co);
        if (!rc)
            fprintf(stderr, "%s: wrote %s (%zu agencies)\n", cli_prog(), o->html, n);
    } else if (o->json) {
        json_t *out = json_pack("{s:I, s:o, s:[]}", "now", (json_int_t)now, "since",
                                o->since >= 0 ? json_integer(o->since) : json_null(), "agencies");
        json_t *arr = json_object_get(out, "agencies");
        for (i = 0; i < n; i++) {
            json_t *row = json_pack("{s:s, s:I, s:I, s:I}", "agency", rows[i].f->agency,
                                    "assignments", (json_int_t)rows[i].f->count, "escalations",
                                    (json_int_t)rows[i].f->escalations, "open_overdue",
                                    (json_int_t)rows[i].f->open_overdue);
            json_fig(row, &rows[i].f->ack, ACK_KEYS);
            json_fig(row, &rows[i].f->res, RES_KEYS);
            json_array_append_new(arr, row);
        }
        show_json_line(out);
        json_decref(out);
    } else if (o->csv) {
        puts("agency,assignments,due,on_time,on_time_pct,ack_p50_min,ack_p90_min,escalations,"
             "open_overdue,resolve_due,resolve_on_time,resolve_on_time_pct,resolve_p50_min,"
             "resolve_p90_min");
        for (i = 0; i < n; i++) {
            show_csv_field(stdout, rows[i].f->agency);
            printf(",%ld", rows[i].f->count);
            csv_fig(&rows[i].f->ack);
            printf(",%ld,%ld", rows[i].f->escalations, rows[i].f->open_overdue);
            csv_fig(&rows[i].f->res);
            putchar('\n');
        }
    } else {
        char t[64], zone[CAREHUB_TZ_NAME_MAX + 8];
        cli_format_time(now, t, sizeof t);
        cli_zone_note(zone, sizeof zone);
        printf(cli_tr("response per agency, at %s%s (acknowledgement | resolution)\n",
                      "各单位响应情况，统计时间 %s%s（签收 | 办结）\n"),
               t, zone);
        static const char *const head_en[] = {"AGENCY", "ASSIGNMENTS", "DUE", "ON TIME",
                                              "ON TIME %", "ACK p50", "ACK p90", "DUE", "ON TIME",
                                              "ON TIME %", "RES p50", "RES p90", "ESCALATIONS",
                                              "OPEN OVERDUE"};
        static const char *const head_zh[] = {"单位", "派发任务", "已到期", "按时签收", "签收率",
                                              "签收p50", "签收p90", "已到期", "按时办结",
                                              "办结率", "办结p50", "办结p90", "升级次数",
                                              "逾期未签收"};
        static const int width[] = {20, 11, 5, 8, 9, 9, 9, 5, 8, 9, 9, 9, 11, 12};
        for (size_t k = 0; k < UTIL_ARRAY_LEN(width); k++) {
            if (k)
                fputc(' ', stdout);
            show_padded(stdout, cli_tr(head_en[k], head_zh[k]), width[k], k > 0);
        }
        fputc('\n', stdout);
        for (i = 0; i < n; i++) {
            show_padded(stdout, cli_show(rows[i].label), 21, 0);
            printf("%11ld", rows[i].f->count);
            text_fig(&rows[i].f->ack);
            text_fig(&rows[i].f->res);
            printf(" %11ld %12ld\n", rows[i].f->escalations, rows[i].f->open_overdue);
        }
        if (!n)
            puts(cli_tr("(no assignments)", "（没有任务）"));
    }
    free(rows);
    fig_report_free(&fr);
    return rc;
}
