/*
 * register.c — `carehub register`: the child register per village and child
 * director (PROTOCOL §9: children, contacted and visited within the period of
 * their rhythm, contacts and home visits past due) as a table a civil-affairs
 * officer reads (Chinese headings and a totals line), the broker's rows as
 * JSON, CSV for a spreadsheet, or an HTML page with a coverage chart; and
 * `carehub sample --register`: the yearly spot check (每年开展一次抽查) of
 * register entries drawn by the broker. The broker sends no names and no child
 * ids; neither does anything here. See carehub_cli.h and docs/register.md.
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

#define REGISTER_SAMPLE_N 10      /* the broker's default n */

/* The figures of a row, in the columns' order after the two names. */
enum { F_CHILDREN, F_CONTACTED, F_VISITED, F_CONTACT_OVERDUE, F_VISIT_OVERDUE, F_N };

/* One row of the broker's answer: a (village, director) pair. The strings
 * live as long as the answer. */
typedef struct {
    const char *village, *director;
    long n[F_N];            /* children, contacted, visited, contact_overdue, visit_overdue */
    long elevated;          /* -1: the broker did not send it */
} reg_row_t;

/* The broker's names of the figures (PROTOCOL §9). */
static const char *const FIELD_KEYS[F_N] = {"children", "contacted", "visited",
                                            "contact_overdue", "visit_overdue"};

/* The headings, as a civil-affairs officer reads them (English with --lang en). */
#define H_VILLAGE cli_tr("village", "村/社区")
#define H_DIRECTOR cli_tr("director", "儿童主任")
#define H_TOTAL cli_tr("total", "合计")
#define H_CONTACT_PCT cli_tr("contact coverage", "联系覆盖率")
#define H_VISIT_PCT cli_tr("visit coverage", "走访覆盖率")
#define H_ELEVATED cli_tr("elevated", "高风险")
#define TITLE cli_tr("Child directors' contacts and home visits", "儿童主任走访覆盖情况")
#define H_NONE cli_tr("(no children in the register)", "（无在册儿童）")
static const char *const H_FIELDS_ZH[F_N] = {"在册儿童", "本期已联系", "本期已走访", "联系逾期",
                                             "走访逾期"};
static const char *const H_FIELDS_EN[F_N] = {"children", "contacted", "visited",
                                             "contact overdue", "visit overdue"};
#define H_FIELD(f) cli_tr(H_FIELDS_EN[f], H_FIELDS_ZH[f])
/* "（" "：" "；" "）" of the filter note and the chart's labels */
#define P_OPEN cli_tr(" (", "（")
#define P_COLON cli_tr(": ", "：")
#define P_SEMI cli_tr("; ", "；")
#define P_CLOSE cli_tr(")", "）")

/* The HTML page's closing notes: what each figure means. */
#define HTML_NOTES_ZH \
    "<h2>说明</h2>\n<dl class=\"note\">\n" \
    "<dt>在册儿童</dt><dd>在册（未注销）的儿童人数；已离开台账（迁出、成年）的不计。</dd>\n" \
    "<dt>本期已联系</dt><dd>在其适用的联系周期内（自最近一个周期起算）有联系记录的儿童" \
    "人数；入户走访也算一次联系。</dd>\n" \
    "<dt>本期已走访</dt><dd>在其适用的走访周期内有入户走访记录的儿童人数。</dd>\n" \
    "<dt>联系逾期 / 走访逾期</dt><dd>联系 / 入户走访已过应办时间仍无记录的儿童人数" \
    "（从未有记录的，自建档起算）。刚建档的儿童两者都不计。</dd>\n" \
    "<dt>联系覆盖率 / 走访覆盖率</dt><dd>本期已联系 / 本期已走访 占在册儿童的百分比。</dd>\n" \
    "<dt>高风险</dt><dd>风险等级为 elevated（加大走访频次）的在册儿童人数。</dd>\n" \
    "</dl>\n</body>\n</html>\n"
#define HTML_NOTES_EN \
    "<h2>Notes</h2>\n<dl class=\"note\">\n" \
    "<dt>children</dt><dd>Children in the register (not removed); those who left it (moved " \
    "away, came of age) are not counted.</dd>\n" \
    "<dt>contacted</dt><dd>Children with a contact recorded within their current contact " \
    "period; a home visit counts as a contact.</dd>\n" \
    "<dt>visited</dt><dd>Children with a home visit recorded within their current visit " \
    "period.</dd>\n" \
    "<dt>contact overdue / visit overdue</dt><dd>Children whose contact / home visit is past " \
    "its due time with nothing recorded (counted from enrolment when there never was one). " \
    "A child just enrolled is in neither.</dd>\n" \
    "<dt>contact coverage / visit coverage</dt><dd>contacted / visited as a share of the " \
    "children in the register.</dd>\n" \
    "<dt>elevated</dt><dd>Children in the register at risk level elevated (visited more " \
    "often).</dd>\n" \
    "</dl>\n</body>\n</html>\n"

/* part of whole in %, NAN when whole is 0 */
static double pct(long part, long whole)
{
    return whole > 0 ? 100.0 * (double)part / (double)whole : NAN;
}

static void fmt_pct(char *buf, size_t len, double x, const char *suffix)
{
    if (isnan(x))
        util_fmt(buf, len, "-");
    else
        util_fmt(buf, len, "%.1f%s", x, suffix);
}

/* A count of the answer: a whole number >= 0. */
static int count_of(const json_t *row, const char *key, long *out)
{
    json_t *v = json_object_get(row, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000)
        return -1;
    *out = (long)json_integer_value(v);
    return 0;
}

/* The rows of a register answer into *rows (*n of them): 0, or CLI_EX_DATA with
 * the message printed when the answer is not what PROTOCOL §9 says. */
static int parse_rows(const json_t *answer, reg_row_t **rows, size_t *n)
{
    json_t *arr = json_object_get(answer, "rows"), *x;
    size_t i;
    *rows = NULL;
    *n = 0;
    if (!json_is_array(arr)) {
        cli_err("the broker's register answer has no list `rows`");
        return CLI_EX_DATA;
    }
    reg_row_t *v = xcalloc(json_array_size(arr) + 1, sizeof *v);
    json_array_foreach(arr, i, x) {
        reg_row_t *r = &v[i];
        r->village = cli_json_str(x, "village", NULL);
        r->director = cli_json_str(x, "director", NULL);
        int bad = !r->village || !r->director;
        for (int f = 0; f < F_N && !bad; f++)
            bad = count_of(x, FIELD_KEYS[f], &r->n[f]) < 0;
        r->elevated = -1;
        if (!bad && json_object_get(x, "elevated"))
            bad = count_of(x, "elevated", &r->elevated) < 0;
        if (bad) {
            cli_err("row %zu of the broker's register answer is not {village, director, children, "
                    "contacted, visited, contact_overdue, visit_overdue}", i + 1);
            free(v);
            return CLI_EX_DATA;
        }
    }
    *rows = v;
    *n = json_array_size(arr);
    return 0;
}

/* The sum of every row: the totals line (elevated -1 when no row has it). */
static reg_row_t totals(const reg_row_t *rows, size_t n)
{
    reg_row_t t;
    memset(&t, 0, sizeof t);
    t.village = H_TOTAL;
    t.director = "";
    t.elevated = -1;
    for (size_t i = 0; i < n; i++) {
        for (int f = 0; f < F_N; f++)
            t.n[f] += rows[i].n[f];
        if (rows[i].elevated >= 0)
            t.elevated = (t.elevated < 0 ? 0 : t.elevated) + rows[i].elevated;
    }
    return t;
}

/* How many distinct directors the rows name. */
static size_t directors(const reg_row_t *rows, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j;
        for (j = 0; j < i && strcmp(rows[j].director, rows[i].director); j++)
            ;
        k += j == i;
    }
    return k;
}

/* The local date of ms ("YYYY-MM-DD"). */
static void local_date(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!localtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%d", &tm))
        util_fmt(buf, len, "-");
}

/* "（村/社区：V；儿童主任：D）" for the filters given, or "". */
static void filter_note(const opts_t *o, char *buf, size_t len)
{
    if (o->village && o->director)
        util_fmt(buf, len, "%s%s%s%s%s%s%s%s%s", P_OPEN, H_VILLAGE, P_COLON, o->village, P_SEMI,
                 H_DIRECTOR, P_COLON, o->director, P_CLOSE);
    else if (o->village)
        util_fmt(buf, len, "%s%s%s%s%s", P_OPEN, H_VILLAGE, P_COLON, o->village, P_CLOSE);
    else if (o->director)
        util_fmt(buf, len, "%s%s%s%s%s", P_OPEN, H_DIRECTOR, P_COLON, o->director, P_CLOSE);
    else
        *buf = '\0';
}

/* ---- the table ------------------------------------------------------------------------------ */

static void put_row(const reg_row_t *r, int wv, int wd, const int *wf)
{
    char num[32];
    show_padded(stdout, r->village, wv, 0);
    fputs("  ", stdout);
    show_padded(stdout, r->director, wd, 0);
    for (int f = 0; f < F_N; f++) {
        util_fmt(num, sizeof num, "%ld", r->n[f]);
        fputs("  ", stdout);
        show_padded(stdout, num, wf[f], 1);
    }
    fmt_pct(num, sizeof num, pct(r->n[F_CONTACTED], r->n[F_CHILDREN]), "%");
    fputs("  ", stdout);
    show_padded(stdout, num, (int)show_width(H_CONTACT_PCT), 1);
    fmt_pct(num, sizeof num, pct(r->n[F_VISITED], r->n[F_CHILDREN]), "%");
    fputs("  ", stdout);
    show_padded(stdout, num, (int)show_width(H_VISIT_PCT), 1);
    if (r->elevated >= 0)
        util_fmt(num, sizeof num, "%ld", r->elevated);
    else
        util_fmt(num, sizeof num, "-");
    fputs("  ", stdout);
    show_padded(stdout, num, (int)show_width(H_ELEVATED), 1);
    fputc('\n', stdout);
}

static void write_table(const reg_row_t *rows, size_t n, int64_t now, const opts_t *o)
{
    char t[64], filt[1024];
    cli_format_time(now, t, sizeof t);
    filter_note(o, filt, sizeof filt);
    char zone[CAREHUB_TZ_NAME_MAX + 8];
    cli_zone_note(zone, sizeof zone);
    fputs(TITLE, stdout);
    cli_put_safe(stdout, filt);
    printf(cli_tr("  at %s%s\n", "  截至 %s%s\n"), t, zone);
    reg_row_t tot = totals(rows, n);
    char dirs[64];
    util_fmt(dirs, sizeof dirs, cli_tr("%zu", "%zu 人"), directors(rows, n));
    tot.director = dirs;
    int wv = (int)show_width(H_VILLAGE), wd = (int)show_width(H_DIRECTOR), wf[F_N];
    for (size_t i = 0; i <= n; i++) {
        const reg_row_t *r = i < n ? &rows[i] : &tot;
        int a = (int)show_width(r->village), b = (int)show_width(r->director);
        wv = a > wv ? a : wv;
        wd = b > wd ? b : wd;
    }
    for (int f = 0; f < F_N; f++) {
        char num[32];
        util_fmt(num, sizeof num, "%ld", tot.n[f]);
        wf[f] = (int)show_width(H_FIELD(f));
        if ((int)strlen(num) > wf[f])
            wf[f] = (int)strlen(num);
    }
    show_padded(stdout, H_VILLAGE, wv, 0);
    fputs("  ", stdout);
    show_padded(stdout, H_DIRECTOR, wd, 0);
    for (int f = 0; f < F_N; f++) {
        fputs("  ", stdout);
        show_padded(stdout, H_FIELD(f), wf[f], 1);
    }
    printf("  %s  %s  %s\n", H_CONTACT_PCT, H_VISIT_PCT, H_ELEVATED);
    for (size_t i = 0; i < n; i++)
        put_row(&rows[i], wv, wd, wf);
    if (!n)
        puts(H_NONE);
    else
        put_row(&tot, wv, wd, wf);
}

/* ---- CSV -------------------------------------------------------------------------------------- */

/* A text cell: a leading = + - @ would make a spreadsheet read a formula, so it
 * gets a ' in front (OWASP, CSV injection). */
static void csv_text(FILE *f, const char *s)
{
    if (*s && strchr("=+-@\t\r", *s)) {
        char *q = xmalloc(strlen(s) + 2);
        q[0] = '\'';
        memcpy(q + 1, s, strlen(s) + 1);
        show_csv_field(f, q);
        free(q);
    } else {
        show_csv_field(f, s);
    }
}

static void write_csv(const reg_row_t *rows, size_t n)
{
    /* a byte order mark: Excel reads UTF-8 without one as the local code page */
    fputs("\xEF\xBB\xBF", stdout);
    printf("%s,%s", H_VILLAGE, H_DIRECTOR);
    for (int f = 0; f < F_N; f++)
        printf(",%s", H_FIELD(f));
    printf(",%s(%%),%s(%%),%s\r\n", H_CONTACT_PCT, H_VISIT_PCT, H_ELEVATED);
    for (size_t i = 0; i < n; i++) {
        const reg_row_t *r = &rows[i];
        char a[32], b[32];
        csv_text(stdout, r->village);
        fputc(',', stdout);
        csv_text(stdout, r->director);
        for (int f = 0; f < F_N; f++)
            printf(",%ld", r->n[f]);
        double c = pct(r->n[F_CONTACTED], r->n[F_CHILDREN]), v = pct(r->n[F_VISITED], r->n[F_CHILDREN]);
        fmt_pct(a, sizeof a, c, "");
        fmt_pct(b, sizeof b, v, "");
        printf(",%s,%s,", isnan(c) ? "" : a, isnan(v) ? "" : b);
        if (r->elevated >= 0)
            printf("%ld", r->elevated);
        fputs("\r\n", stdout);
    }
}

/* ---- HTML ------------------------------------------------------------------------------------ */

/* The rows summed per village, in the rows' order (the chart's bars). */
static reg_row_t *per_village(const reg_row_t *rows, size_t n, size_t *nv)
{
    reg_row_t *v = xcalloc(n + 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j;
        for (j = 0; j < k && strcmp(v[j].village, rows[i].village); j++)
            ;
        if (j == k) {
            v[k].village = rows[i].village;
            v[k].director = "";
            k++;
        }
        for (int f = 0; f < F_N; f++)
            v[j].n[f] += rows[i].n[f];
    }
    *nv = k;
    return v;
}

static void html_row(FILE *f, const reg_row_t *r, const char *cell)
{
    char a[32];
    fprintf(f, "<tr><%s class=\"t\">", cell);
    show_html_escape(f, r->village);
    fprintf(f, "</%s><td class=\"t\">", cell);
    show_html_escape(f, r->director);
    fputs("</td>", f);
    for (int k = 0; k < F_N; k++)
        fprintf(f, "<td>%ld</td>", r->n[k]);
    fmt_pct(a, sizeof a, pct(r->n[F_CONTACTED], r->n[F_CHILDREN]), "%");
    fprintf(f, "<td>%s</td>", a);
    fmt_pct(a, sizeof a, pct(r->n[F_VISITED], r->n[F_CHILDREN]), "%");
    fprintf(f, "<td>%s</td>", a);
    if (r->elevated >= 0)
        fprintf(f, "<td>%ld</td>", r->elevated);
    else
        fputs("<td>-</td>", f);
    fputs("</tr>\n", f);
}

/* One bar of the chart: part of whole at (x, y), with its figure after it. */
static void svg_bar(FILE *f, int x, int y, int h, int bar_w, const char *what, const char *village,
                    long part, long whole, const char *fill)
{
    double p = pct(part, whole);
    double w = isnan(p) ? 0 : p * bar_w / 100.0;
    char a[32];
    fmt_pct(a, sizeof a, p, "%");
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"><title>", x, y, w, h,
            fill);
    show_html_escape(f, village);
    fprintf(f, " %s%s%s%s%ld/%ld%s</title></rect>\n", what, P_COLON, a, P_OPEN, part, whole,
            P_CLOSE);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"12\">%s%s%ld/%ld%s</text>\n", x + w + 6,
            y + h - 2, a, P_OPEN, part, whole, P_CLOSE);
}

static int write_html(const char *file, const reg_row_t *rows, size_t n, int64_t now,
                      const opts_t *o, const cli_common_t *co)
{
    FILE *f = fopen(file, "w");
    if (!f) {
        cli_err("--html %s: cannot write: %s", file, strerror(errno));
        return CLI_EX_IO;
    }
    char date[32], t[64], filt[1024];
    local_date(now, date, sizeof date);
    cli_format_time(now, t, sizeof t);
    filter_note(o, filt, sizeof filt);
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"%s\">\n<head>\n<meta charset=\"utf-8\">\n<title>",
            cli_tr("en", "zh-CN"));
    fprintf(f, "%s %s", TITLE, date);
    fputs("</title>\n<style>\n"
          "body{font-family:\"Noto Sans CJK SC\",\"Microsoft YaHei\",\"PingFang SC\",sans-serif;"
          "margin:2em;color:#1a1a1a;background:#ffffff}\n"
          "table{border-collapse:collapse;margin:1em 0}\n"
          "th,td{border:1px solid #888;padding:4px 10px;text-align:right}\n"
          ".t{text-align:left}\nthead th{background:#e8eef4}\n"
          "tfoot th,tfoot td{background:#f4f4f4;font-weight:bold}\n"
          ".note{color:#555;font-size:90%}\ndt{font-weight:bold;margin-top:.4em}\n"
          "svg text{font-family:\"Noto Sans CJK SC\",\"Microsoft YaHei\",sans-serif}\n"
          "</style>\n</head>\n<body>\n<h1>", f);
    char zone[CAREHUB_TZ_NAME_MAX + 8];
    cli_zone_note(zone, sizeof zone);
    fprintf(f, "%s</h1>\n<p class=\"note\">%s", TITLE, cli_tr("At ", "截至 "));
    show_html_escape(f, t);
    show_html_escape(f, zone);
    show_html_escape(f, filt);
    fputs(cli_tr("; from ", "；数据来自 "), f);
    show_html_escape(f, co->endpoint);
    fputs(cli_tr(", read as ", "，读取者 "), f);
    show_html_escape(f, co->agent);
    fputs(cli_tr(". Counts only: no child's name or id.</p>\n<table>\n<thead><tr>",
                 "。表中只有人数，不含儿童姓名或编号。</p>\n<table>\n<thead><tr>"), f);
    fprintf(f, "<th class=\"t\">%s</th><th class=\"t\">%s</th>", H_VILLAGE, H_DIRECTOR);
    for (int k = 0; k < F_N; k++)
        fprintf(f, "<th>%s</th>", H_FIELD(k));
    fprintf(f, "<th>%s</th><th>%s</th><th>%s</th></tr></thead>\n<tbody>\n", H_CONTACT_PCT,
            H_VISIT_PCT, H_ELEVATED);
    for (size_t i = 0; i < n; i++)
        html_row(f, &rows[i], "td");
    if (!n)
        fprintf(f, "<tr><td class=\"t\" colspan=\"10\">%s</td></tr>\n", H_NONE);
    fputs("</tbody>\n", f);
    if (n) {
        reg_row_t tot = totals(rows, n);
        char dirs[64];
        util_fmt(dirs, sizeof dirs, cli_tr("%zu", "%zu 人"), directors(rows, n));
        tot.director = dirs;
        fputs("<tfoot>\n", f);
        html_row(f, &tot, "th");
        fputs("</tfoot>\n", f);
    }
    fputs("</table>\n", f);

    size_t nv;
    reg_row_t *vs = per_village(rows, n, &nv);
    const int label_w = 200, bar_w = 460, bar_h = 14, gap = 12, top = 34;
    int height = top + (int)nv * (2 * bar_h + 4 + gap) + 24, width = label_w + bar_w + 140;
    fprintf(f, "<h2>%s</h2>\n", cli_tr("Coverage per village", "各村/社区覆盖率"));
    const char *chart = cli_tr("Contact and visit coverage per village", "各村/社区联系覆盖率和走访覆盖率");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"%s\">\n"
               "<title>%s</title>\n"
               "<rect x=\"%d\" y=\"4\" width=\"12\" height=\"12\" fill=\"#1565c0\"/>"
               "<text x=\"%d\" y=\"15\" font-size=\"13\">%s%s%s/%s%s</text>\n"
               "<rect x=\"%d\" y=\"4\" width=\"12\" height=\"12\" fill=\"#2e7d32\"/>"
               "<text x=\"%d\" y=\"15\" font-size=\"13\">%s%s%s/%s%s</text>\n",
            width, height, width, height, chart, chart, label_w, label_w + 16, H_CONTACT_PCT,
            P_OPEN, H_FIELD(F_CONTACTED), H_FIELD(F_CHILDREN), P_CLOSE, label_w + 250,
            label_w + 266, H_VISIT_PCT, P_OPEN, H_FIELD(F_VISITED), H_FIELD(F_CHILDREN), P_CLOSE);
    for (size_t i = 0; i < nv; i++) {
        int y = top + (int)i * (2 * bar_h + 4 + gap);
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"14\" text-anchor=\"end\">", label_w - 8,
                y + bar_h + 6);
        show_html_escape(f, vs[i].village);
        fputs("</text>\n", f);
        svg_bar(f, label_w, y, bar_h, bar_w, H_CONTACT_PCT, vs[i].village, vs[i].n[F_CONTACTED],
                vs[i].n[F_CHILDREN], "#1565c0");
        svg_bar(f, label_w, y + bar_h + 4, bar_h, bar_w, H_VISIT_PCT, vs[i].village, vs[i].n[F_VISITED],
                vs[i].n[F_CHILDREN], "#2e7d32");
    }
    int axis_y = height - 20;
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
               "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#333\"/>\n"
               "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#999\" "
               "stroke-dasharray=\"4 3\"/>\n"
               "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">0%%</text>\n"
               "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">50%%</text>\n"
               "<text x=\"%d\" y=\"%d\" font-size=\"12\" text-anchor=\"middle\">100%%</text>\n"
               "</svg>\n",
            label_w, top - 6, label_w, axis_y, label_w, axis_y, label_w + bar_w, axis_y,
            label_w + bar_w, top - 6, label_w + bar_w, axis_y, label_w, height - 4,
            label_w + bar_w / 2, height - 4, label_w + bar_w, height - 4);
    if (!nv)
        fprintf(f, "<p class=\"note\">%s</p>\n", H_NONE);
    free(vs);
    fputs(cli_lang() == CLI_LANG_EN ? HTML_NOTES_EN : HTML_NOTES_ZH, f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        cli_err("--html %s: cannot write: %s", file, strerror(errno));
        return CLI_EX_IO;
    }
    return 0;
}

/* ---- register ---------------------------------------------------------------------------------- */

static json_t *filters(const opts_t *o)
{
    json_t *f = json_object();
    if (o->village)
        json_object_set_new(f, "village", json_string(o->village));
    if (o->director)
        json_object_set_new(f, "director", json_string(o->director));
    return f;
}

int register_command(sess_t *s, const opts_t *o)
{
    json_t *f = filters(o), *r = NULL;
    int rc = sess_query(s, "register", f, &r);
    json_decref(f);
    if (rc)
        return rc;
    reg_row_t *rows = NULL;
    size_t n = 0;
    if ((rc = parse_rows(r, &rows, &n))) {
        json_decref(r);
        return rc;
    }
    json_t *jnow = json_object_get(r, "now");
    int64_t now = json_is_integer(jnow) ? json_integer_value(jnow) : util_now_ms();
    if (o->json) {
        json_t *out = json_deep_copy(r);
        json_object_del(out, "v");
        json_object_del(out, "op");
        json_object_del(out, "id");
        show_json_line(out);
        json_decref(out);
    } else if (o->csv) {
        write_csv(rows, n);
    } else if (o->html) {
        rc = write_html(o->html, rows, n, now, o, s->co);
        if (!rc)
            fprintf(stderr, "%s: wrote %s (%zu row(s))\n", cli_prog(), o->html, n);
    } else {
        write_table(rows, n, now, o);
    }
    free(rows);
    json_decref(r);
    return rc;
}

/* ---- sample --register --------------------------------------------------------------------------- */

static const char *const CHECK_ENTRY[] = {
    "the entry matches the child's file (一人一档): categories, risk and its reasons, village",
    "a contact recorded in every period of the rhythm, with its method",
    "a home visit recorded in every period of the rhythm, with what was found",
    "each concern or need found on a visit followed up (a case, a referral)", NULL};

/* ' around s for a shell when it holds more than letters, digits and . _ : - / */
static void put_shell_word(FILE *f, const char *s)
{
    if (*s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-/") ==
                  strlen(s)) {
        fputs(s, f);
        return;
    }
    fputc('\'', f);
    for (const char *p = s; *p; p++) {
        if (*p == '\'')
            fputs("'\\''", f);
        else if ((unsigned char)*p < 0x20 || *p == 0x7f)
            fputc('?', f);
        else
            fputc(*p, f);
    }
    fputc('\'', f);
}

/* "label value" of key when e has it, a time as local time; due times past now marked. */
static void put_field(const json_t *e, const char *key, const char *label, int64_t now, int due)
{
    json_t *v = json_object_get(e, key);
    printf("   %s ", label);
    if (!v) {
        fputs(!due ? "- (none recorded)"
                   : json_is_false(json_object_get(e, "active")) ? "- (left the register)"
                                                                 : "- (no rhythm matches)",
              stdout);
    } else {
        show_val(stdout, key, v);
        if (due && json_is_integer(v) && json_integer_value(v) <= now &&
            json_is_true(json_object_get(e, "active")))
            fputs("  OVERDUE", stdout);
    }
    fputc('\n', stdout);
}

int register_sample_command(sess_t *s, const opts_t *o)
{
    char year[16];
    const char *seed = o->seed;
    if (!seed) {
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        util_fmt(year, sizeof year, "%d", tm.tm_year + 1900);
        seed = year;
    }
    long want = o->n > 0 ? o->n : REGISTER_SAMPLE_N;
    json_t *f = filters(o), *r = NULL;
    json_object_set_new(f, "n", json_integer(want));
    json_object_set_new(f, "seed", json_string(seed));
    int rc = sess_query(s, "register_sample", f, &r);
    json_decref(f);
    if (rc)
        return rc;
    json_t *rows = json_object_get(r, "rows"), *e;
    if (!json_is_array(rows)) {
        cli_err("the broker's register_sample answer has no list `rows`");
        json_decref(r);
        return CLI_EX_DATA;
    }
    json_int_t population = json_integer_value(json_object_get(r, "population"));
    json_t *jnow = json_object_get(r, "now");
    int64_t now = json_is_integer(jnow) ? json_integer_value(jnow) : util_now_ms();
    size_t k = json_array_size(rows), i;
    if (o->json) {
        json_t *out = json_pack("{s:s, s:I, s:I, s:I, s:[]}", "seed", seed, "now", (json_int_t)now,
                                "population", population, "n", (json_int_t)k, "entries");
        json_t *arr = json_object_get(out, "entries");
        json_array_foreach(rows, i, e) {
            json_t *c = json_deep_copy(e), *chk = json_array();
            for (const char *const *q = CHECK_ENTRY; *q; q++)
                json_array_append_new(chk, json_string(*q));
            json_object_set_new(c, "check", chk);
            json_array_append_new(arr, c);
        }
        show_json_line(out);
        json_decref(out);
        json_decref(r);
        return 0;
    }
    printf("register spot check: %zu of %lld entr%s, seed ", k, (long long)population,
           population == 1 ? "y" : "ies");
    cli_put_safe(stdout, seed);
    printf(" (redraw the same sample: %s sample --register --n %ld --seed ", cli_prog(), want);
    put_shell_word(stdout, seed);
    if (o->village) {
        fputs(" --village ", stdout);
        put_shell_word(stdout, o->village);
    }
    if (o->director) {
        fputs(" --director ", stdout);
        put_shell_word(stdout, o->director);
    }
    printf(")\n");
    if (population < want)
        printf("(fewer entries than --n: all of them are in the sample)\n");
    json_array_foreach(rows, i, e) {
        printf("\n%zu. ", i + 1);
        show_val(stdout, NULL, json_object_get(e, "entry"));
        fputs("  ", stdout);
        show_val(stdout, NULL, json_object_get(e, "village"));
        fputs("  director ", stdout);
        show_val(stdout, NULL, json_object_get(e, "director"));
        fputs("  risk ", stdout);
        show_val(stdout, NULL, json_object_get(e, "risk"));
        fputs("  ", stdout);
        show_val(stdout, NULL, json_object_get(e, "category"));
        fputs(json_is_false(json_object_get(e, "active")) ? "  (left the register)\n" : "\n",
              stdout);
        put_field(e, "enrolled", "enrolled:       ", now, 0);
        put_field(e, "last_contact", "last contact:   ", now, 0);
        put_field(e, "last_visit", "last home visit:", now, 0);
        put_field(e, "contact_due", "contact due:    ", now, 1);
        put_field(e, "visit_due", "home visit due: ", now, 1);
        json_t *cases = json_object_get(e, "cases");
        fputs("   cases:           ", stdout);
        if (json_array_size(cases)) {
            show_val(stdout, NULL, cases);
            printf("  (read them: %s case CASE)", cli_prog());
        } else {
            fputc('-', stdout);
        }
        fputc('\n', stdout);
        for (const char *const *q = CHECK_ENTRY; *q; q++)
            printf("   [ ] %s\n", *q);
    }
    json_decref(r);
    return 0;
}
