/*
 * silence.c — `carehub silence` (PROTOCOL §10, docs/protocol.md "Silences";
 * supervisors): add a silence, list them, expire one.
 *
 *   silence add --type T[,T...] [--match KEY=V[,V...] ...] [--starts TIME]
 *               (--ends TIME | --for DURATION) --reason TEXT [--json]
 *   silence list [--json]
 *   silence expire ID [--json]
 *
 * The broker checks everything (and refuses a silence that could hold a child
 * in danger); this builds the request and prints the answer. A value with
 * commas is a list of values; a comparison (">=3") is sent as written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "carehub_cli.h"
#include "cli.h"
#include "util.h"

/* "a" → "a"; "a,b" → ["a","b"] (empty items refused). NULL when s is not valid. */
static json_t *values(const char *s)
{
    if (!*s || !cli_utf8_valid(s))
        return NULL;
    if (!strchr(s, ','))
        return json_string(s);
    json_t *list = json_array();
    const char *p = s;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        if (n == 0) {
            json_decref(list);
            return NULL;
        }
        json_array_append_new(list, json_stringn(p, n));
        if (!c)
            break;
        p = c + 1;
    }
    return list;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cmd_add(sess_t *s, const opts_t *o)
{
    json_t *match = json_object();
    json_t *t = values(o->type);
    if (!t) {
        cli_err("--type %s: give an event type, or types separated by commas", cli_show(o->type));
        json_decref(match);
        return CLI_EX_USAGE;
    }
    json_object_set_new(match, "type", t);
    for (int i = 0; i < o->n_match; i++) {
        const char *eq = strchr(o->match[i], '=');
        char key[256];
        json_t *v = eq ? values(eq + 1) : NULL;
        size_t kn = eq ? (size_t)(eq - o->match[i]) : 0;
        if (!v || kn == 0 || kn >= sizeof key) {
            json_decref(v);
            cli_err("--match %s: give KEY=VALUE (severity=low, body.reason=sick,unexplained, "
                    "body.consecutive_days=<3)", cli_show(o->match[i]));
            json_decref(match);
            return CLI_EX_USAGE;
        }
        memcpy(key, o->match[i], kn);
        key[kn] = '\0';
        if (!strcmp(key, "type") || json_object_get(match, key)) {
            json_decref(v);
            cli_err("--match %s: each key once (the type goes with --type)", cli_show(key));
            json_decref(match);
            return CLI_EX_USAGE;
        }
        json_object_set_new(match, key, v);
    }
    json_t *req = json_pack("{s:s, s:o, s:s}", "op", "silence", "match", match, "reason", o->reason);
    int64_t from = o->starts >= 0 ? o->starts : now_ms();
    if (o->starts >= 0)
        json_object_set_new(req, "starts", json_integer(o->starts));
    json_object_set_new(req, "ends", json_integer(o->ends >= 0 ? o->ends : from + o->span));
    json_t *r = NULL;
    int rc = sess_request(s, req, &r);
    json_decref(req);
    if (rc)
        return rc;
    if (o->json)
        show_json_line(r);
    else
        printf("%s\n", cli_json_str(r, "silence", "?"));
    json_decref(r);
    return CLI_EX_OK;
}

/* active, pending (starts later), ended, or expired, at the broker's now. */
static const char *state(const json_t *sil, int64_t now)
{
    if (json_object_get(sil, "expired"))
        return "expired";
    if (now < json_integer_value(json_object_get(sil, "starts")))
        return "pending";
    if (now >= json_integer_value(json_object_get(sil, "ends")))
        return "ended";
    return "active";
}

static int cmd_list(sess_t *s, const opts_t *o)
{
    json_t *r = NULL, *list = json_array();
    int rc = sess_query_pages(s, "silences", NULL, "silences", 1, list, &r, NULL);
    if (rc) {
        json_decref(r);
        json_decref(list);
        return rc;
    }
    int64_t now = json_integer_value(json_object_get(r, "now"));
    size_t i;
    json_t *sil;
    if (!o->json) {
        static const char *const en[] = {"ID", "STATE", "STARTS", "ENDS", "AUTHOR", "MATCH / REASON"};
        static const char *const zh[] = {"编号", "状态", "开始", "结束", "设置人", "匹配 / 原因"};
        static const int width[] = {12, 8, 26, 26, 16, 0};
        show_header(en, zh, width, UTIL_ARRAY_LEN(en));
    }
    json_array_foreach(list, i, sil) {
        if (o->json) {
            show_json_line(sil);
            continue;
        }
        char st[64], en[64];
        cli_format_time(json_integer_value(json_object_get(sil, "starts")), st, sizeof st);
        cli_format_time(json_integer_value(json_object_get(sil, "ends")), en, sizeof en);
        char *m = json_dumps(json_object_get(sil, "match"), JSON_COMPACT | JSON_ENSURE_ASCII);
        printf("%-12s %-8s %-26s %-26s ", cli_json_str(sil, "id", "?"), state(sil, now), st, en);
        show_padded(stdout, cli_json_str(sil, "author", "?"), 16, 0);
        fputc(' ', stdout);
        cli_put_safe(stdout, m ? m : "{}");
        fputs(" / ", stdout);
        cli_put_safe(stdout, cli_json_str(sil, "reason", ""));
        fputc('\n', stdout);
        free(m);
    }
    json_decref(list);
    json_decref(r);
    return CLI_EX_OK;
}

static int cmd_expire(sess_t *s, const opts_t *o, const char *id)
{
    json_t *req = json_pack("{s:s, s:s}", "op", "silence_expire", "silence", id);
    json_t *r = NULL;
    int rc = sess_request(s, req, &r);
    json_decref(req);
    if (rc)
        return rc;
    if (o->json)
        show_json_line(r);
    else
        printf("%s expired\n", cli_json_str(r, "silence", id));
    json_decref(r);
    return CLI_EX_OK;
}

int silence_usage(const opts_t *o, int nargs, char **args)
{
    const char *sub = nargs > 0 ? args[0] : "";
    int add = !strcmp(sub, "add"), list = !strcmp(sub, "list"), exp = !strcmp(sub, "expire");
    if ((!add && !list && !exp) || nargs != (exp ? 2 : 1)) {
        cli_err("usage: %s silence add ... | silence list | silence expire ID (--help)", cli_prog());
        return CLI_EX_USAGE;
    }
    if (!add && (o->type || o->n_match || o->starts >= 0 || o->ends >= 0 || o->span >= 0 || o->reason)) {
        cli_err("--type, --match, --starts, --ends, --for and --reason go with silence add");
        return CLI_EX_USAGE;
    }
    if (add && (!o->type || !o->reason || (o->ends < 0) == (o->span < 0))) {
        cli_err("silence add needs --type, --reason, and one of --ends TIME and --for DURATION");
        return CLI_EX_USAGE;
    }
    if (add && (!*o->reason || !cli_utf8_valid(o->reason))) {
        cli_err("--reason: give the reason as text (it is kept with the silence and in the trail)");
        return CLI_EX_USAGE;
    }
    if (exp && !util_valid_id(args[1], strlen(args[1]))) {
        cli_err("'%s' is not a silence id (as `silence list` shows, e.g. sil-000001)",
                cli_show(args[1]));
        return CLI_EX_USAGE;
    }
    return 0;
}

int silence_command(sess_t *s, const opts_t *o, int nargs, char **args)
{
    (void)nargs; /* silence_usage() checked them */
    if (!strcmp(args[0], "add"))
        return cmd_add(s, o);
    return !strcmp(args[0], "list") ? cmd_list(s, o) : cmd_expire(s, o, args[1]);
}
