/*
 * web_pages.c — the web view's HTML (zh-CN): one function per page, writing
 * onto a memstream from a query's result (see web_int.h). Every value from the
 * store or the request goes through web_esc(); times are shown in
 * broker.timezone (config_local_time). No JavaScript, no external assets.
 */
#include "web_int.h"
#include "web.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "figures.h"
#include "frame.h"

#define DEPTH_MAX 8

const char WEB_CSS[] =
    "body{font-family:\"Noto Sans CJK SC\",\"Microsoft YaHei\",sans-serif;margin:0;color:#222}"
    "header{background:#234;color:#fff;padding:.5em 1em;display:flex;flex-wrap:wrap;gap:1em;"
    "align-items:center}header a{color:#fff}header form{margin-left:auto}"
    "main{padding:1em;max-width:72em}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top}"
    "th{background:#eef}.bad{color:#a00;font-weight:bold}.ok{color:#070}"
    "dl.v{margin:0}dl.v dt{font-weight:bold}dl.v dd{margin:0 0 .25em 1.5em}"
    "form.filter label{margin-right:1em}.note{color:#555}svg text{font-size:12px}\n";

void web_escn(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        case '\0': fputs("\xEF\xBF\xBD", f); break; /* U+FFFD */
        default: fputc(s[i], f);
        }
    }
}

void web_esc(FILE *f, const char *s)
{
    web_escn(f, s, strlen(s));
}

/* A string field of a map, escaped; `dflt` when absent or not a string. */
static void field_str(FILE *f, const msgpack_object *m, const char *key, const char *dflt)
{
    const char *s;
    size_t n;
    if (frame_str(frame_map_get(m, key), &s, &n))
        web_escn(f, s, n);
    else
        web_esc(f, dflt);
}

static int64_t field_int(const msgpack_object *m, const char *key)
{
    int64_t v = 0;
    return frame_int(frame_map_get(m, key), &v) ? v : 0;
}

static void local_time(FILE *f, const web_ctx_t *x, int64_t ms)
{
    if (ms <= 0) {
        fputs("-", f);
        return;
    }
    char buf[64];
    config_local_time(x->cfg, ms, buf, sizeof buf);
    web_esc(f, buf);
}

/* Any msgpack value as readable HTML: maps as <dl>, arrays as <ol>. */
static void value(FILE *f, const msgpack_object *o, int depth)
{
    if (depth > DEPTH_MAX) {
        fputs("…", f);
        return;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: fputs("-", f); break;
    case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "是" : "否", f); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: fprintf(f, "%" PRIu64, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: fprintf(f, "%" PRId64, o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: fprintf(f, "%g", o->via.f64); break;
    case MSGPACK_OBJECT_STR: web_escn(f, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN:
        for (uint32_t i = 0; i < o->via.bin.size && i < 8; i++)
            fprintf(f, "%02x", (unsigned char)o->via.bin.ptr[i]);
        if (o->via.bin.size > 8)
            fputs("…", f);
        break;
    case MSGPACK_OBJECT_ARRAY:
        fputs("<ol>", f);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            fputs("<li>", f);
            value(f, &o->via.array.ptr[i], depth + 1);
            fputs("</li>", f);
        }
        fputs("</ol>", f);
        break;
    case MSGPACK_OBJECT_MAP:
        fputs("<dl class=\"v\">", f);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            fputs("<dt>", f);
            value(f, &o->via.map.ptr[i].key, depth + 1);
            fputs("</dt><dd>", f);
            value(f, &o->via.map.ptr[i].val, depth + 1);
            fputs("</dd>", f);
        }
        fputs("</dl>", f);
        break;
    default: fputs("?", f);
    }
}

static void csrf_field(FILE *f, const web_ctx_t *x)
{
    fputs("<input type=\"hidden\" name=\"csrf\" value=\"", f);
    web_esc(f, x->csrf ? x->csrf : "");
    fputs("\">", f);
}

void web_head(FILE *f, const web_ctx_t *x, const char *title)
{
    fputs("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
          "<link rel=\"stylesheet\" href=\"/web.css\"><title>", f);
    web_esc(f, title);
    fputs(" · carehub</title></head><body><header><strong>carehub 督导</strong>", f);
    if (x->user) {
        fputs("<nav><a href=\"/cases\">案件</a> · <a href=\"/report\">响应时间</a> · "
              "<a href=\"/register\">登记覆盖</a> · <a href=\"/silences\">静默</a></nav>"
              "<form method=\"post\" action=\"/logout\"><span id=\"who\">", f);
        web_esc(f, x->user);
        fputs("（", f);
        web_esc(f, x->agent ? x->agent : "");
        fputs("）</span> ", f);
        csrf_field(f, x);
        fputs("<button type=\"submit\" id=\"logout\">退出</button></form>", f);
    }
    fputs("</header><main><h1>", f);
    web_esc(f, title);
    fputs("</h1>", f);
}

void web_foot(FILE *f)
{
    fputs("</main></body></html>\n", f);
}

void web_page_login(FILE *f, const web_ctx_t *x, const char *msg, const char *login_csrf)
{
    web_ctx_t anon = {x->cfg, NULL, NULL, NULL};
    web_head(f, &anon, "督导登录");
    if (msg) {
        fputs("<p class=\"bad\" id=\"msg\">", f);
        web_esc(f, msg);
        fputs("</p>", f);
    }
    fputs("<form method=\"post\" action=\"/login\"><p><label>用户名 <input name=\"user\" "
          "id=\"user\" autocomplete=\"username\" required></label></p><p><label>密码 <input "
          "type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\" "
          "required></label></p><input type=\"hidden\" name=\"csrf\" value=\"", f);
    web_esc(f, login_csrf);
    fputs("\"><p><button type=\"submit\" id=\"login\">登录</button></p></form>", f);
    web_foot(f);
}

void web_page_message(FILE *f, const web_ctx_t *x, const char *title, const char *msg)
{
    web_head(f, x, title);
    fputs("<p class=\"bad\" id=\"msg\">", f);
    web_esc(f, msg);
    fputs("</p>", f);
    web_foot(f);
}

static void option(FILE *f, const char *v, const char *label, const char *cur)
{
    fputs("<option value=\"", f);
    web_esc(f, v);
    fputs(strcmp(v, cur) == 0 ? "\" selected>" : "\">", f);
    web_esc(f, label);
    fputs("</option>", f);
}

static const char *agency_name(const config_t *cfg, const char *id, size_t n, char *buf, size_t size)
{
    snprintf(buf, size, "%.*s", (int)n, id);
    const config_agency_t *ag = config_find_agency(cfg, buf);
    return ag && ag->name ? ag->name : buf;
}

void web_page_cases(FILE *f, const web_ctx_t *x, const msgpack_object *res, const web_filter_t *flt)
{
    web_head(f, x, "案件列表");
    fputs("<form class=\"filter\" method=\"get\" action=\"/cases\"><label>状态 <select name=\"status\" "
          "id=\"f-status\">", f);
    option(f, "", "全部", flt->status);
    option(f, "open", "处理中", flt->status);
    option(f, "resolved", "已解决", flt->status);
    option(f, "closed", "已结案", flt->status);
    fputs("</select></label><label>类型 <input name=\"type\" id=\"f-type\" value=\"", f);
    web_esc(f, flt->type);
    fputs("\"></label><label>单位 <select name=\"agency\" id=\"f-agency\">", f);
    option(f, "", "全部", flt->agency);
    for (size_t i = 0; i < x->cfg->n_agencies; i++)
        option(f, x->cfg->agencies[i].id,
               x->cfg->agencies[i].name ? x->cfg->agencies[i].name : x->cfg->agencies[i].id,
               flt->agency);
    fputs("</select></label><label><input type=\"checkbox\" name=\"overdue\" value=\"1\" "
          "id=\"f-overdue\"", f);
    fputs(flt->overdue ? " checked" : "", f);
    fputs("> 仅超时未受理</label><button type=\"submit\" id=\"f-go\">筛选</button></form>", f);
    const msgpack_object *cs = frame_map_get(res, "cases");
    uint32_t n = cs && cs->type == MSGPACK_OBJECT_ARRAY ? cs->via.array.size : 0;
    fprintf(f, "<p id=\"count\">共 %u 件</p>", n);
    fputs("<table id=\"cases\"><tr><th>案件</th><th>类型</th><th>状态</th><th>严重程度</th>"
          "<th>立案时间</th><th>任务（单位：状态）</th></tr>", f);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *c = &cs->via.array.ptr[i];
        fputs("<tr><td><a class=\"case\" href=\"/case?id=", f);
        field_str(f, c, "id", "");
        fputs("\">", f);
        field_str(f, c, "id", "-");
        fputs("</a></td><td>", f);
        field_str(f, c, "type", "-");
        fputs("</td><td>", f);
        field_str(f, c, "status", "-");
        fputs("</td><td>", f);
        field_str(f, c, "severity", "-");
        fputs("</td><td>", f);
        local_time(f, x, field_int(c, "opened"));
        fputs("</td><td>", f);
        const msgpack_object *as = frame_map_get(c, "assignments");
        for (uint32_t j = 0; as && as->type == MSGPACK_OBJECT_ARRAY && j < as->via.array.size; j++) {
            const msgpack_object *a = &as->via.array.ptr[j];
            const char *ag, *st;
            size_t agn, stn;
            char nb[80];
            if (!frame_str(frame_map_get(a, "agency"), &ag, &agn) ||
                !frame_str(frame_map_get(a, "state"), &st, &stn))
                continue;
            web_esc(f, agency_name(x->cfg, ag, agn, nb, sizeof nb));
            fputs("：", f);
            web_escn(f, st, stn);
            int64_t by = field_int(a, "ack_by");
            if (stn == 4 && memcmp(st, "open", 4) == 0 && by > 0 && by < clock_now_ms())
                fputs(" <span class=\"bad\">超时</span>", f);
            fputs("<br>", f);
        }
        fputs("</td></tr>", f);
    }
    fputs("</table>", f);
    const char *next;
    size_t nn;
    if (frame_str(frame_map_get(res, "next"), &next, &nn)) {
        fputs("<p><a id=\"next\" href=\"/cases?status=", f);
        web_esc(f, flt->status);
        fputs("&amp;type=", f);
        web_esc(f, flt->type);
        fputs("&amp;agency=", f);
        web_esc(f, flt->agency);
        fputs(flt->overdue ? "&amp;overdue=1" : "", f);
        fputs("&amp;after=", f);
        web_escn(f, next, nn);
        fputs("\">下一页</a></p>", f);
    }
    web_foot(f);
}

void web_page_case(FILE *f, const web_ctx_t *x, const msgpack_object *res, int reveal)
{
    const msgpack_object *c = frame_map_get(res, "case");
    char id[80] = "";
    const char *s;
    size_t n;
    if (c && frame_str(frame_map_get(c, "id"), &s, &n))
        snprintf(id, sizeof id, "%.*s", (int)n, s);
    web_head(f, x, "案件档案");
    fputs("<dl class=\"v\" id=\"case\"><dt>案件</dt><dd>", f);
    web_esc(f, id);
    fputs("</dd><dt>类型</dt><dd>", f);
    field_str(f, c, "type", "-");
    fputs("</dd><dt>状态</dt><dd>", f);
    field_str(f, c, "status", "-");
    fputs("</dd><dt>严重程度</dt><dd>", f);
    field_str(f, c, "severity", "-");
    fputs("</dd><dt>立案时间</dt><dd>", f);
    local_time(f, x, c ? field_int(c, "opened") : 0);
    fputs("</dd></dl><p><a id=\"trail-link\" href=\"/trail?id=", f);
    web_esc(f, id);
    fputs("\">审计记录</a></p><h2>任务</h2><table id=\"assignments\"><tr><th>任务</th><th>单位"
          "</th><th>状态</th><th>受理时限</th><th>受理时间</th><th>受理人</th></tr>", f);
    const msgpack_object *as = frame_map_get(res, "assignments");
    for (uint32_t i = 0; as && as->type == MSGPACK_OBJECT_ARRAY && i < as->via.array.size; i++) {
        const msgpack_object *a = &as->via.array.ptr[i];
        const char *ag;
        size_t agn;
        char nb[80];
        fputs("<tr><td>", f);
        field_str(f, a, "id", "-");
        fputs("</td><td>", f);
        if (frame_str(frame_map_get(a, "agency"), &ag, &agn))
            web_esc(f, agency_name(x->cfg, ag, agn, nb, sizeof nb));
        fputs("</td><td>", f);
        field_str(f, a, "state", "-");
        fputs("</td><td>", f);
        local_time(f, x, field_int(a, "ack_by"));
        fputs("</td><td>", f);
        local_time(f, x, field_int(a, "acked_at"));
        fputs("</td><td>", f);
        field_str(f, a, "by", "-");
        fputs("</td></tr>", f);
    }
    fputs("</table><h2>事件</h2>", f);
    if (!reveal) {
        fputs("<p class=\"note\">儿童个人资料已隐藏；显示即记入审计日志。</p>"
              "<form method=\"post\" action=\"/reveal\"><input type=\"hidden\" name=\"id\" value=\"", f);
        web_esc(f, id);
        fputs("\">", f);
        csrf_field(f, x);
        fputs("<button type=\"submit\" id=\"reveal\">显示个人资料</button></form>", f);
    }
    fputs("<table id=\"events\"><tr><th>事件</th><th>类型</th><th>发送方</th><th>时间</th>", f);
    fputs(reveal ? "<th>内容（个人资料）</th></tr>" : "</tr>", f);
    const msgpack_object *evs = frame_map_get(res, "events");
    for (uint32_t i = 0; evs && evs->type == MSGPACK_OBJECT_ARRAY && i < evs->via.array.size; i++) {
        const msgpack_object *e = &evs->via.array.ptr[i];
        fputs("<tr><td>", f);
        field_str(f, e, "id", "-");
        fputs("</td><td>", f);
        field_str(f, e, "type", "-");
        fputs("</td><td>", f);
        field_str(f, e, "agent", "-");
        fputs("</td><td>", f);
        local_time(f, x, field_int(e, "at"));
        fputs("</td>", f);
        if (reveal) {
            const msgpack_object *b = frame_map_get(e, "body");
            fputs("<td class=\"body\">", f);
            if (b)
                value(f, b, 0);
            else
                fputs("-", f);
            fputs("</td>", f);
        }
        fputs("</tr>", f);
    }
    fputs("</table>", f);
    int64_t total = field_int(res, "events_total");
    if (evs && evs->type == MSGPACK_OBJECT_ARRAY && total > (int64_t)evs->via.array.size)
        fprintf(f, "<p class=\"note\">仅显示前 %u 个事件（共 %" PRId64 " 个）；其余请用 carehub show。</p>",
                evs->via.array.size, total);
    web_foot(f);
}

void web_page_trail(FILE *f, const web_ctx_t *x, const msgpack_object *res, const web_verify_t *v)
{
    char id[80] = "";
    const char *s;
    size_t n;
    if (frame_str(frame_map_get(res, "case"), &s, &n))
        snprintf(id, sizeof id, "%.*s", (int)n, s);
    web_head(f, x, "审计记录");
    fputs("<p>案件 <a href=\"/case?id=", f);
    web_esc(f, id);
    fputs("\">", f);
    web_esc(f, id);
    fputs("</a></p><h2>完整性校验</h2><p id=\"verify\">", f);
    if (v->running)
        fputs("校验进行中……", f);
    else if (!v->done)
        fputs("尚未校验。", f);
    else {
        fputs(v->intact ? "<span class=\"ok\">完好</span>" : "<span class=\"bad\">已被改动</span>", f);
        fprintf(f, "（%" PRIu64 " 条记录，", v->records);
        local_time(f, x, v->at);
        fputs("）", f);
        if (!v->intact) {
            fputs(" ", f);
            web_esc(f, v->problem);
        }
    }
    fputs("</p><form method=\"post\" action=\"/verify\"><input type=\"hidden\" name=\"id\" value=\"", f);
    web_esc(f, id);
    fputs("\">", f);
    csrf_field(f, x);
    fputs("<button type=\"submit\" id=\"run-verify\">校验整个审计链</button></form>"
          "<table id=\"trail\"><tr><th>序号</th><th>时间</th><th>类别</th><th>执行者</th>"
          "<th>对象</th><th>说明</th></tr>", f);
    const msgpack_object *rs = frame_map_get(res, "records");
    for (uint32_t i = 0; rs && rs->type == MSGPACK_OBJECT_ARRAY && i < rs->via.array.size; i++) {
        const msgpack_object *r = &rs->via.array.ptr[i];
        fprintf(f, "<tr><td>%" PRId64 "</td><td>", field_int(r, "seq"));
        local_time(f, x, field_int(r, "at"));
        fputs("</td><td class=\"kind\">", f);
        field_str(f, r, "kind", "-");
        fputs("</td><td class=\"actor\">", f);
        field_str(f, r, "actor", "-");
        fputs("</td><td>", f);
        field_str(f, r, "obj", "");
        fputs("</td><td class=\"ref\">", f);
        field_str(f, r, "ref", "");
        fputs("</td></tr>", f);
    }
    fputs("</table>", f);
    web_foot(f);
}

/* A figure in minutes or a percentage, "-" when there is nothing to count. */
static void fig_cell(FILE *f, double x, const char *suffix)
{
    if (isnan(x))
        fputs("<td>-</td>", f);
    else
        fprintf(f, "<td>%.1f%s</td>", x, suffix);
}

static void fig_cells(FILE *f, const fig_deadline_t *d)
{
    fprintf(f, "<td>%ld</td><td>%ld</td>", d->due, d->on_time);
    fig_cell(f, d->pct, "%");
    fig_cell(f, d->p50, "");
    fig_cell(f, d->p90, "");
}

/* The response-time report: common/figures.h's figures, as `carehub report` shows them. */
void web_page_report(FILE *f, const web_ctx_t *x, const msgpack_object *res)
{
    web_head(f, x, "响应时间报告");
    const msgpack_object *as = frame_map_get(res, "assignments");
    uint32_t n = as && as->type == MSGPACK_OBJECT_ARRAY ? as->via.array.size : 0;
    int64_t now = field_int(res, "now");
    fig_report_t fr = {0};
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *a = &as->via.array.ptr[i];
        const char *ag, *st;
        size_t agn, stn;
        if (!frame_str(frame_map_get(a, "agency"), &ag, &agn) ||
            !frame_str(frame_map_get(a, "state"), &st, &stn))
            continue;
        fig_assignment_t fa = {
            .created = field_int(a, "created"), .ack_by = field_int(a, "ack_by"),
            .acked_at = field_int(a, "acked_at"), .resolve_by = field_int(a, "resolve_by"),
            .final_at = field_int(a, "final_at"), .level = (long)field_int(a, "level"),
            .resolve_level = (long)field_int(a, "resolve_level"),
            .open = stn == 4 && memcmp(st, "open", 4) == 0,
        };
        fig_report_add(&fr, ag, agn, &fa, now);
    }
    fig_report_finish(&fr);
    fputs("<table id=\"report\"><tr><th>单位</th><th>派发任务</th><th>签收已到期</th><th>按时签收</th>"
          "<th>按时签收率</th><th>签收用时中位数（分钟）</th><th>签收用时 P90（分钟）</th>"
          "<th>办结已到期</th><th>按时办结</th><th>按时办结率</th><th>办结用时中位数（分钟）</th>"
          "<th>办结用时 P90（分钟）</th><th>升级次数</th><th>逾期未签收</th></tr>", f);
    for (size_t k = 0; k < fr.n; k++) {
        const fig_agency_t *r = &fr.rows[k];
        char nb[80];
        fputs("<tr><td>", f);
        web_esc(f, agency_name(x->cfg, r->agency, strlen(r->agency), nb, sizeof nb));
        fprintf(f, "</td><td>%ld</td>", r->count);
        fig_cells(f, &r->ack);
        fig_cells(f, &r->res);
        fprintf(f, "<td>%ld</td><td>%ld</td></tr>", r->escalations, r->open_overdue);
    }
    fputs("</table><h2>按时签收率</h2>", f);
    /* the chart: one bar per agency, its on-time share of the acknowledgements due */
    fprintf(f, "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"560\" height=\"%zu\" "
            "role=\"img\" aria-label=\"按时签收率\">", fr.n * 24 + 8);
    for (size_t k = 0; k < fr.n; k++) {
        const fig_agency_t *r = &fr.rows[k];
        double pct = isnan(r->ack.pct) ? 0 : r->ack.pct;
        char nb[80];
        fprintf(f, "<text x=\"0\" y=\"%zu\">", k * 24 + 18);
        web_esc(f, agency_name(x->cfg, r->agency, strlen(r->agency), nb, sizeof nb));
        fprintf(f, "</text><rect x=\"160\" y=\"%zu\" width=\"300\" height=\"16\" fill=\"#eee\"/>"
                "<rect x=\"160\" y=\"%zu\" width=\"%.0f\" height=\"16\" fill=\"#4a7\"/>",
                k * 24 + 6, k * 24 + 6, pct * 3);
        if (isnan(r->ack.pct))
            fprintf(f, "<text x=\"470\" y=\"%zu\">-</text>", k * 24 + 18);
        else
            fprintf(f, "<text x=\"470\" y=\"%zu\">%.1f%%</text>", k * 24 + 18, r->ack.pct);
    }
    fputs("</svg><p class=\"note\">按时签收：在签收期限之前签收，只计已到期的任务（已签收或已过期限）；"
          "按时办结：在办结期限（resolve_within）之前给出最终状态，只计设有该期限且已到期的任务；"
          "用时以分钟计，最近秩百分位数；与 carehub report 的统计口径相同。</p>", f);
    const msgpack_object *next = frame_map_get(res, "next");
    if (next && next->type == MSGPACK_OBJECT_STR)
        fputs("<p class=\"note\">仅统计前 1000 个任务；完整报告请用 carehub report。</p>", f);
    fig_report_free(&fr);
    web_foot(f);
}

/* An array of maps as a table, the columns those of the first row. */
static void table_of(FILE *f, const char *id, const msgpack_object *rows)
{
    fputs("<table id=\"", f);
    web_esc(f, id);
    fputs("\">", f);
    if (rows && rows->type == MSGPACK_OBJECT_ARRAY && rows->via.array.size &&
        rows->via.array.ptr[0].type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *first = &rows->via.array.ptr[0];
        fputs("<tr>", f);
        for (uint32_t k = 0; k < first->via.map.size; k++) {
            fputs("<th>", f);
            value(f, &first->via.map.ptr[k].key, 1);
            fputs("</th>", f);
        }
        fputs("</tr>", f);
        for (uint32_t i = 0; i < rows->via.array.size; i++) {
            const msgpack_object *r = &rows->via.array.ptr[i];
            if (r->type != MSGPACK_OBJECT_MAP)
                continue;
            fputs("<tr>", f);
            for (uint32_t k = 0; k < first->via.map.size; k++) {
                const char *key;
                size_t kn;
                const msgpack_object *v = NULL;
                if (frame_str(&first->via.map.ptr[k].key, &key, &kn))
                    for (uint32_t j = 0; j < r->via.map.size && !v; j++) {
                        const char *rk;
                        size_t rn;
                        if (frame_str(&r->via.map.ptr[j].key, &rk, &rn) && rn == kn &&
                            memcmp(rk, key, kn) == 0)
                            v = &r->via.map.ptr[j].val;
                    }
                fputs("<td>", f);
                if (v)
                    value(f, v, 1);
                fputs("</td>", f);
            }
            fputs("</tr>", f);
        }
    } else {
        fputs("<tr><td>（无）</td></tr>", f);
    }
    fputs("</table>", f);
}

void web_page_register(FILE *f, const web_ctx_t *x, const msgpack_object *res)
{
    web_head(f, x, "登记覆盖");
    fputs("<p>截至 ", f);
    local_time(f, x, field_int(res, "now"));
    fputs("</p>", f);
    table_of(f, "register", frame_map_get(res, "rows"));
    web_foot(f);
}

void web_page_silences(FILE *f, const web_ctx_t *x, const msgpack_object *res)
{
    web_head(f, x, "静默");
    table_of(f, "silences", frame_map_get(res, "silences"));
    if (frame_map_get(res, "next") && frame_map_get(res, "next")->type == MSGPACK_OBJECT_STR)
        fputs("<p class=\"note\">仅显示第一页；全部请用 carehub silences。</p>", f);
    web_foot(f);
}
