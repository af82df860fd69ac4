/*
 * carehub-agency — an agency's case desk (PROTOCOL §5).
 *
 *   carehub-agency -b EP -a DESK [run] [--json] [--exec CMD] [--show-names]
 *   carehub-agency -b EP -a DESK ack ASSIGNMENT --by NAME
 *   carehub-agency -b EP -a DESK update ASSIGNMENT STATUS [--note TEXT] [--to AGENCY]
 *   carehub-agency -b EP -a DESK list [--json]
 *
 * `run` stays connected and shows each assignment the broker delivers, once
 * per run (a repeat of the same assignment id is not shown again; when a new
 * event has joined the case since, a short update line is). The broker
 * re-delivers every unacknowledged assignment after each hello, so a desk
 * restarted mid-day sees again everything still waiting for it.
 *
 * Privacy (DOMAIN.md: personal data kept out of logs): the readable output
 * never shows the child's name or id, the guardian, or the free texts that
 * may name the child (description, note, location, url, account, evidence)
 * unless --show-names is given. --json prints the whole `case` message: that
 * is the desk's own data feed, meant for a program, not a log.
 *
 * `--exec CMD` runs `/bin/sh -c CMD` for each new assignment, the `case`
 * message as JSON on its standard input and CAREHUB_* variables in its
 * environment. Commands run beside the loop (fork, reaped as they finish),
 * at most MAX_CHILDREN at a time (more wait in a queue) and are stopped after
 * --exec-timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "carehub.h"
#include "carehub_wire.h"
#include "carehub-agency/exec.h"
#include "cli.h"
#include "util.h"

#define SOFTWARE "carehub-agency/1.0"
#define DEFAULT_REQUEST_WAIT_MS 10000   /* ack, update: wait this long for the answer */
#define DEFAULT_LIST_QUIET_MS 3000      /* list: stop after this long without a new assignment */
#define DEFAULT_EXEC_TIMEOUT_MS 60000


static const char *const STATUSES[] = {"in_progress", "resolved", "referred", "declined", NULL};

/* ---- state ------------------------------------------------------------------------------ */

typedef struct {
    int json;               /* --json */
    int show_names;         /* --show-names */
    int printing;           /* run/list: case pushes are shown */
    int out_failed;         /* standard output cannot be written (a closed pipe) */
    cli_map_t *seen;        /* assignment id -> events_total shown */
    cli_map_t *resolving;   /* assignment ids whose resolve_by was shown (PROTOCOL §10) */
    execer_t ex;
    /* ack/update: the one request of this run */
    char req_id[CAREHUB_ID_MAX + 1];
    int answered;           /* 1 reply, -1 nack */
    char *reply;            /* the reply (JSON) */
    cli_nack_t nack;        /* the refusal, when answered is -1 */
    const carehub_t *c;     /* the connection: agency names and the zone from welcome */
} desk_t;

/* ---- printing ------------------------------------------------------------------------------ */

static void fmt_span(int64_t ms, char *buf, size_t len)
{
    int64_t s = (ms < 0 ? -ms : ms) / 1000;
    if (s >= 86400)
        util_fmt(buf, len, "%lldd %lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
    else if (s >= 3600)
        util_fmt(buf, len, "%lldh %lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else if (s >= 60)
        util_fmt(buf, len, "%lldm %llds", (long long)(s / 60), (long long)(s % 60));
    else
        util_fmt(buf, len, "%llds", (long long)s);
}

/* " key=value" for a member of o that is a string, number or boolean. */
static void put_field(FILE *f, const json_t *o, const char *key, const char *label)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return;
    fprintf(f, " %s=", label ? label : key);
    if (json_is_string(v))
        cli_put_safe(f, json_string_value(v));
    else if (json_is_integer(v))
        fprintf(f, "%lld", (long long)json_integer_value(v));
    else if (json_is_boolean(v))
        fputs(json_is_true(v) ? "yes" : "no", f);
    else
        fputs("…", f);
}

static void put_time_field(FILE *f, const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return;
    char t[64];
    cli_format_time(json_integer_value(v), t, sizeof t);
    fprintf(f, " %s=%s", key, t);
}

/* The key fields of an event's body; personal ones only with show_names. */
static void put_event(FILE *f, const json_t *ev, int show_names)
{
    const char *type = cli_json_str(ev, "type", "?");
    const json_t *body = json_object_get(ev, "body");
    const json_t *child = json_object_get(body, "child");
    char t[64];
    json_t *at = json_object_get(ev, "at");

    fputs(cli_tr("  latest: ", "  最新事件："), f);
    cli_put_safe(f, type);
    if (json_is_integer(at)) {
        cli_format_time(json_integer_value(at), t, sizeof t);
        fprintf(f, cli_tr(" at %s", "，时间 %s"), t);
    }
    fputs(cli_tr(" (event ", "（事件 "), f);
    cli_put_safe(f, cli_json_str(ev, "event", "?"));
    fputs(cli_tr(")\n   ", "）\n   "), f);
    put_field(f, body, "severity", NULL);
    if (!strcmp(type, "absence")) {
        put_field(f, body, "school", NULL);
        put_field(f, body, "date", NULL);
        put_field(f, body, "reason", NULL);
        put_field(f, body, "consecutive_days", NULL);
        put_field(f, body, "period", NULL);
        put_field(f, body, "guardian_contacted", NULL);
    } else if (!strcmp(type, "mandatory_report")) {
        put_field(f, body, "harm", NULL);
        put_field(f, body, "suspected", NULL);
        put_field(f, body, "immediate_danger", NULL);
        put_time_field(f, body, "occurred_at");
        const json_t *rep = json_object_get(body, "reporter");
        put_field(f, rep, "organisation", "reporter");
        put_field(f, rep, "role", "reporter_role");
        put_field(f, rep, "phone", "reporter_phone");
    } else if (!strcmp(type, "online_risk")) {
        put_field(f, body, "risk", NULL);
        put_field(f, body, "platform", NULL);
    }
    if (child) {
        json_t *cat = json_object_get(child, "category");
        if (json_is_array(cat) && json_array_size(cat)) {
            size_t i;
            json_t *x;
            fputs(" category=", f);
            json_array_foreach(cat, i, x) {
                if (i)
                    fputc(',', f);
                cli_put_safe(f, json_is_string(x) ? json_string_value(x) : "?");
            }
        }
        put_field(f, child, "jurisdiction", NULL);
    }
    fputc('\n', f);
    if (!show_names) {
        fputs(cli_tr("   (child's name and id, guardian and free texts hidden: --show-names or "
                     "--json)\n",
                     "   （儿童姓名和编号、监护人及自由文本已隐藏：--show-names 或 --json 可显示）\n"),
              f);
        return;
    }
    if (child) {
        fputs("   child:", f);
        put_field(f, child, "name", NULL);
        put_field(f, child, "id", NULL);
        put_field(f, child, "gender", NULL);
        put_field(f, child, "birth_date", NULL);
        const json_t *g = json_object_get(child, "guardian");
        put_field(f, g, "name", "guardian");
        put_field(f, g, "relation", "guardian_relation");
        put_field(f, g, "phone", "guardian_phone");
        fputc('\n', f);
    }
    static const char *const texts[] = {"location", "url", "account", "evidence", "description",
                                        "note", NULL};
    for (int i = 0; texts[i]; i++) {
        const char *v = cli_json_str(body, texts[i], NULL);
        if (!v)
            continue;
        fprintf(f, "   %s: ", texts[i]);
        cli_put_safe(f, v);
        fputc('\n', f);
    }
}

static void print_case_to(const desk_t *d, const json_t *m, const char *json, int update);

/* Show an assignment; a desk whose output is gone (the reader of a pipe died)
 * stops instead of showing cases to no one. */
static void print_case(desk_t *d, const json_t *m, const char *json, int update)
{
    print_case_to(d, m, json, update);
    if (ferror(stdout) && !d->out_failed) {
        cli_err("cannot write to standard output (%s): stopping; the assignments not yet "
                "acknowledged are delivered again at the next start", strerror(errno));
        d->out_failed = 1;
        cli_stop = 1;
    }
}

static void print_case_to(const desk_t *d, const json_t *m, const char *json, int update)
{
    if (d->json) {
        printf("%s\n", json);
        fflush(stdout);
        return;
    }
    FILE *f = stdout;
    json_t *events = json_object_get(m, "events");
    size_t nev = json_array_size(events);
    json_t *total = json_object_get(m, "events_total");
    long long ntotal = json_is_integer(total) ? json_integer_value(total) : (long long)nev;

    /* a push may come in the same poll as the welcome that names the zone */
    cli_follow_broker_zone(d->c);
    fputs(update ? cli_tr("assignment ", "任务 ") : cli_tr("NEW assignment ", "新任务 "), f);
    cli_put_safe(f, cli_json_str(m, "id", "?"));
    if (update)
        fprintf(f, cli_tr(": a new event joined the case (%lld events)", "：案件有新事件（共 %lld 个）"),
                ntotal);
    fputs(cli_tr("\n  case ", "\n  案件 "), f);
    cli_put_safe(f, cli_json_str(m, "case", "?"));
    const char *ag = cli_json_str(m, "agency", "?"), *name = carehub_agency_name(d->c, ag);
    fputs(cli_tr("  agency ", "  单位 "), f);
    cli_put_safe(f, name ? name : ag);
    if (name) {
        fputs(" (", f);
        cli_put_safe(f, ag);
        fputc(')', f);
    }
    fputs(cli_tr("  type ", "  类型 "), f);
    cli_put_safe(f, cli_json_str(m, "type", "?"));
    fputs(cli_tr("  severity ", "  严重程度 "), f);
    cli_put_safe(f, cli_json_str(m, "severity", "?"));
    if (!update)
        fprintf(f, cli_tr("  events %lld", "  事件 %lld 个"), ntotal);
    fputc('\n', f);
    /* the deadline that runs: resolve_by once acknowledged (PROTOCOL §10), else ack_by */
    json_t *resolve_by = json_object_get(m, "resolve_by"), *ack_by = json_object_get(m, "ack_by");
    json_t *by = json_is_integer(resolve_by) ? resolve_by : ack_by;
    if (json_is_integer(by)) {
        char t[64], span[32];
        int64_t left = json_integer_value(by) - util_now_ms();
        cli_format_time(json_integer_value(by), t, sizeof t);
        fmt_span(left, span, sizeof span);
        int res = by == resolve_by;
        if (left >= 0)
            fprintf(f, res ? cli_tr("  resolve by %s (in %s)\n", "  办结期限 %s（剩余 %s）\n")
                           : cli_tr("  acknowledge by %s (in %s)\n", "  签收期限 %s（剩余 %s）\n"),
                    t, span);
        else
            fprintf(f, res ? cli_tr("  resolve by %s (overdue by %s)\n", "  办结期限 %s（已逾期 %s）\n")
                           : cli_tr("  acknowledge by %s (overdue by %s)\n",
                                    "  签收期限 %s（已逾期 %s）\n"),
                    t, span);
    }
    if (nev)
        put_event(f, json_array_get(events, nev - 1), d->show_names);
    fflush(f);
}

/* ---- callbacks ------------------------------------------------------------------------------ */

static void on_push(void *ud, const char *op, const char *json)
{
    desk_t *d = ud;
    if (strcmp(op, "case") != 0 || !d->printing)
        return;
    json_t *m = json_loads(json, 0, NULL);
    const char *id = cli_json_str(m, "id", NULL);
    if (!id) {
        json_decref(m);
        return;
    }
    json_t *tot = json_object_get(m, "events_total");
    long total = json_is_integer(tot) ? (long)json_integer_value(tot)
                                      : (long)json_array_size(json_object_get(m, "events"));
    long before;
    if (!cli_map_get(d->seen, id, &before)) {
        cli_map_put(d->seen, id, total);
        print_case(d, m, json, 0);
        if (d->ex.cmd)
            exec_queue(&d->ex, m, json);
    } else if (total > before) {
        cli_map_put(d->seen, id, total);
        print_case(d, m, json, 1);
    } else if (json_is_integer(json_object_get(m, "resolve_by")) &&
               !cli_map_get(d->resolving, id, NULL)) {
        /* pushed again once acknowledged: the second deadline now runs */
        cli_map_put(d->resolving, id, 1);
        print_case(d, m, json, 1);
    }
    json_decref(m);
}

static void on_reply(void *ud, const char *id, const char *json)
{
    desk_t *d = ud;
    if (d->answered || strcmp(id, d->req_id) != 0)
        return;
    d->answered = 1;
    d->reply = xstrdup(json);
}

static void on_nack(void *ud, const char *ref, const char *code, const char *error,
                    const char *field)
{
    desk_t *d = ud;
    if (d->answered || !ref || strcmp(ref, d->req_id) != 0)
        return;
    d->answered = -1;
    cli_nack_set(&d->nack, code, error, field);
}

/* ---- the commands ------------------------------------------------------------------------------ */

static int cmd_run(desk_t *d, carehub_t *c, const cli_common_t *co)
{
    int was = -1, rc = CLI_EX_OK;
    int64_t since = util_mono_ms();
    int warned = 0;

    fprintf(stderr, "%s: desk %s, broker %s; Ctrl-C stops\n", cli_prog(), co->agent, co->endpoint);
    while (!cli_stop) {
        int k = carehub_poll(c, 200);
        if (k == CAREHUB_EREFUSED) {
            cli_err("%s", carehub_last_error(c));
            rc = CLI_EX_NOPERM;
            break;
        }
        if (k != CAREHUB_OK && k != CAREHUB_ENET) {
            cli_err("%s", carehub_last_error(c));
            rc = cli_exit_for(k);
            break;
        }
        int now = carehub_connected(c);
        if (now != was) {
            if (now)
                fprintf(stderr, "%s: connected; assignments not yet acknowledged are delivered "
                                "again now\n", cli_prog());
            else if (was == 1)
                fprintf(stderr, "%s: the connection was lost; reconnecting\n", cli_prog());
            was = now;
            since = util_mono_ms();
            warned = 0;
        } else if (!now && !warned && util_mono_ms() - since > 10000) {
            fprintf(stderr, "%s: no answer from %s yet; still trying\n", cli_prog(), co->endpoint);
            warned = 1;
        }
        exec_reap(&d->ex);
    }
    if (d->out_failed)
        rc = CLI_EX_IO;
    /* let running commands finish for a moment; they are not killed */
    int64_t until = util_mono_ms() + 2000;
    while (exec_running(&d->ex) && util_mono_ms() < until) {
        exec_reap(&d->ex);
        if (exec_running(&d->ex))
            usleep(50000);
    }
    return rc;
}

static int cmd_list(desk_t *d, carehub_t *c, int quiet_ms)
{
    /* until quiet_ms without a new assignment */
    int rc = cli_collect_quiet(c, quiet_ms, d->seen, NULL);
    if (rc)
        return rc;
    size_t seen = cli_map_size(d->seen);
    if (!d->json)
        fprintf(stderr, "%zu assignment(s) awaiting acknowledgement\n", seen);
    return d->out_failed ? CLI_EX_IO : CLI_EX_OK;
}

/* Send one request (case_ack or case_update) and print the answer. */
static int cmd_request(desk_t *d, carehub_t *c, const cli_common_t *co, json_t *req,
                       int wait_ms)
{
    char *text = json_dumps(req, JSON_COMPACT);
    int err = text ? carehub_request(c, text, d->req_id) : CAREHUB_EJSON;
    free(text);
    if (err != CAREHUB_OK) {
        cli_err("%s", carehub_last_error(c));
        return cli_exit_for(err);
    }
    cli_until_t u = {cli_flag_set, NULL, &d->answered, 1};
    int k = cli_poll_until(c, wait_ms, &u);
    if (k)
        return k;
    const char *op = cli_json_str(req, "op", "");
    const char *as = cli_json_str(req, "assignment", "?");
    if (d->answered > 0) {
        json_t *r = json_loads(d->reply, 0, NULL);
        if (d->json) {
            printf("%s\n", d->reply);
        } else if (!strcmp(op, "case_ack")) {
            printf(cli_tr("assignment %s acknowledged by %s (case %s)\n", "任务 %s 已由 %s 签收（案件 %s）\n"), as,
                   cli_json_str(req, "by", "?"), cli_json_str(r, "case", "?"));
        } else {
            printf("assignment %s: %s", as, cli_json_str(req, "status", "?"));
            if (json_object_get(req, "to"))
                printf(" to %s", cli_json_str(req, "to", "?"));
            printf(" (case %s)\n", cli_json_str(r, "case", "?"));
        }
        json_decref(r);
        return CLI_EX_OK;
    }
    if (d->answered < 0) {
        if (d->json) {
            json_t *n = json_pack("{s:i, s:s, s:s, s:s, s:s}", "v", CAREHUB_WIRE_VERSION, "op", "nack", "id",
                                  d->req_id, "code", d->nack.code, "error", d->nack.error);
            if (n && d->nack.field[0])
                json_object_set_new(n, "field", json_string(d->nack.field));
            char *t = n ? json_dumps(n, JSON_COMPACT) : NULL;
            if (t)
                printf("%s\n", t);
            free(t);
            json_decref(n);
        }
        return cli_nack_report(&d->nack, "");
    }
    cli_err("no answer from the broker at %s within %d s (%s); run the command again: "
            "acknowledging or sending the same final status twice is not an error",
            co->endpoint, wait_ms / 1000,
            carehub_connected(c) ? "connected, no answer" : "no connection");
    return CLI_EX_UNREACHABLE;
}

/* ---- main ------------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [-b ENDPOINT] -a DESK [run] [--json] [--exec CMD] [--show-names]\n"
            "       %s [-b ENDPOINT] -a DESK ack ASSIGNMENT --by NAME\n"
            "       %s [-b ENDPOINT] -a DESK update ASSIGNMENT STATUS [--note TEXT] [--to AGENCY]\n"
            "       %s [-b ENDPOINT] -a DESK list [--json] [--show-names]\n"
            "\n"
            "An agency's case desk. `run` (the default) stays connected and shows each\n"
            "assignment once; `list` shows the assignments still waiting for acknowledgement\n"
            "and exits after --wait seconds (default %d) without a new one; `ack` accepts\n"
            "responsibility; `update` reports progress: STATUS is in_progress, resolved,\n"
            "referred (with --to AGENCY) or declined.\n"
            "\n"
            "Options:\n%s"
            "      --json             run/list: one JSON line per `case` message (everything,\n"
            "                         the child's name included); ack/update: the broker's answer\n"
            "      --show-names       readable output: also the child's name and id, the guardian\n"
            "                         and free texts (description, note, location, ...)\n"
            "      --exec CMD         run: `/bin/sh -c CMD` per new assignment, the case JSON on\n"
            "                         stdin, CAREHUB_ASSIGNMENT, CAREHUB_CASE, CAREHUB_AGENCY,\n"
            "                         CAREHUB_SEVERITY, CAREHUB_ACK_BY (ms) in the environment\n"
            "      --exec-timeout S   stop a command after S seconds (default %d)\n"
            "      --by NAME          ack: the officer who accepts the case (required)\n"
            "      --note TEXT        update: what was done (at most 4096 bytes)\n"
            "      --to AGENCY        update referred: the agency that takes the case over\n"
            "\n"
            "ack, update and list keep no spool unless --spool is given, so they work beside\n"
            "a running desk.\n"
            "\n"
            "Exit: 0 done (ack/update: the broker acknowledged); 64 usage; 65 the broker refused\n"
            "the request (conflict, not_found, forbidden, invalid...); 74 the spool cannot be\n"
            "opened, or standard output is gone; 75 no answer from the broker within --wait\n"
            "(ack/update: default %d s); 77 the broker refused this desk (not configured).\n",
            cli_prog(), cli_prog(), cli_prog(), cli_prog(), DEFAULT_LIST_QUIET_MS / 1000,
            cli_common_help, DEFAULT_EXEC_TIMEOUT_MS / 1000, DEFAULT_REQUEST_WAIT_MS / 1000);
}

/* ---- the command table -------------------------------------------------------------------------- */

/* What the command line gave besides the command. */
typedef struct {
    char **args;
    int nargs;
    const char *by, *note, *to;
    int exec;               /* --exec given */
} given_t;

/* Each command's checks: 0 and *req (ack, update), or CLI_EX_USAGE with the message printed. */
static int check_run(const given_t *g, json_t **req)
{
    (void)req;
    if (g->by || g->note || g->to) {
        cli_err("--by, --note and --to go with ack and update");
        return CLI_EX_USAGE;
    }
    return 0;
}

static int check_list(const given_t *g, json_t **req)
{
    if (g->exec) {
        cli_err("--exec goes with run");
        return CLI_EX_USAGE;
    }
    return check_run(g, req);
}

static int check_ack(const given_t *g, json_t **req)
{
    if (!g->by || !*g->by || strlen(g->by) > 128 || !cli_utf8_valid(g->by)) {
        cli_err("ack needs --by NAME: the officer who accepts the case (at most 128 bytes)");
        return CLI_EX_USAGE;
    }
    if (g->note || g->to) {
        cli_err("--note and --to go with update");
        return CLI_EX_USAGE;
    }
    *req = json_pack("{s:s, s:s, s:s}", "op", "case_ack", "assignment", g->args[0], "by", g->by);
    return 0;
}

static int check_update(const given_t *g, json_t **req)
{
    char list[128];
    cli_enum_list(STATUSES, "|", list, sizeof list);
    if (cli_enum_index(g->args[1], STATUSES) < 0) {
        cli_err("status '%s' is not one of %s", g->args[1], list);
        return CLI_EX_USAGE;
    }
    int referred = !strcmp(g->args[1], "referred");
    if (referred && (!g->to || !*g->to)) {
        cli_err("referred needs --to AGENCY: the agency that takes the case over");
        return CLI_EX_USAGE;
    }
    if (!referred && g->to) {
        cli_err("--to goes with the status referred only");
        return CLI_EX_USAGE;
    }
    if (g->by) {
        cli_err("--by goes with ack");
        return CLI_EX_USAGE;
    }
    if (g->note && (strlen(g->note) > 4096 || !cli_utf8_valid(g->note))) {
        cli_err("--note: at most 4096 bytes of UTF-8");
        return CLI_EX_USAGE;
    }
    *req = json_pack("{s:s, s:s, s:s, s:s}", "op", "case_update", "assignment", g->args[0],
                     "status", g->args[1], "note", g->note ? g->note : "");
    if (*req && referred)
        json_object_set_new(*req, "to", json_string(g->to));
    return 0;
}

static int run_run(desk_t *d, carehub_t *c, const cli_common_t *co, json_t *req)
{
    (void)req;
    return cmd_run(d, c, co);
}

static int run_list(desk_t *d, carehub_t *c, const cli_common_t *co, json_t *req)
{
    (void)req;
    return cmd_list(d, c, cli_wait(co, DEFAULT_LIST_QUIET_MS));
}

static int run_request(desk_t *d, carehub_t *c, const cli_common_t *co, json_t *req)
{
    return cmd_request(d, c, co, req, cli_wait(co, DEFAULT_REQUEST_WAIT_MS));
}

/* run keeps a spool (the default one, unless --spool) like the other agents; the
 * others send requests only and open libcarehub without one. */
static const struct {
    const char *name;
    int nargs;              /* arguments after the command; the first of ack/update an assignment id */
    const char *usage;      /* when nargs is not met */
    const char *const *usage_list; /* values appended to usage, or NULL */
    int spool;
    int printing;           /* case pushes are shown */
    int (*check)(const given_t *g, json_t **req);
    int (*run)(desk_t *d, carehub_t *c, const cli_common_t *co, json_t *req);
} COMMANDS[] = {
    {"run", 0, "run takes no arguments", NULL, 1, 1, check_run, run_run},
    {"list", 0, "list takes no arguments", NULL, 0, 1, check_list, run_list},
    {"ack", 1, "usage: ack ASSIGNMENT --by NAME", NULL, 0, 0, check_ack, run_request},
    {"update", 2, "usage: update ASSIGNMENT STATUS [--note TEXT] [--to AGENCY]; STATUS: ", STATUSES,
     0, 0, check_update, run_request},
};

enum {
    OPT_JSON = CLI_OPT_FIRST_PROGRAM,
    OPT_EXEC,
    OPT_EXEC_TIMEOUT,
    OPT_SHOW_NAMES,
    OPT_BY,
    OPT_NOTE,
    OPT_TO
};

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"json", no_argument, NULL, OPT_JSON},
        {"exec", required_argument, NULL, OPT_EXEC},
        {"exec-timeout", required_argument, NULL, OPT_EXEC_TIMEOUT},
        {"show-names", no_argument, NULL, OPT_SHOW_NAMES},
        {"by", required_argument, NULL, OPT_BY},
        {"note", required_argument, NULL, OPT_NOTE},
        {"to", required_argument, NULL, OPT_TO},
        {NULL, 0, NULL, 0},
    };
    cli_common_t co;
    desk_t d;
    const char *by = NULL, *note = NULL, *to = NULL;
    int opt, rc;

    cli_init(argv[0]);
    cli_common_init(&co);
    memset(&d, 0, sizeof d);
    d.ex.timeout_ms = DEFAULT_EXEC_TIMEOUT_MS;
    while ((opt = cli_getopt(&co, argc, argv, longopts)) > 0) {
        switch (opt) {
        case OPT_JSON:
            d.json = 1;
            break;
        case OPT_EXEC:
            d.ex.cmd = optarg;
            break;
        case OPT_EXEC_TIMEOUT:
            if (cli_parse_duration_ms(optarg, &d.ex.timeout_ms) < 0 || d.ex.timeout_ms <= 0) {
                cli_err("--exec-timeout %s: give seconds (e.g. 60, 500ms, 5m)", optarg);
                return CLI_EX_USAGE;
            }
            break;
        case OPT_SHOW_NAMES:
            d.show_names = 1;
            break;
        case OPT_BY:
            by = optarg;
            break;
        case OPT_NOTE:
            note = optarg;
            break;
        case OPT_TO:
            to = optarg;
            break;
        default:
            fprintf(stderr, "Try '%s --help'.\n", cli_prog());
            return CLI_EX_USAGE;
        }
    }
    if (opt < 0)
        return CLI_EX_USAGE;
    if (co.help) {
        usage(stdout);
        return CLI_EX_OK;
    }
    const char *cmd = optind < argc ? argv[optind++] : "run";
    size_t k = 0;
    while (k < UTIL_ARRAY_LEN(COMMANDS) && strcmp(COMMANDS[k].name, cmd) != 0)
        k++;
    if (k == UTIL_ARRAY_LEN(COMMANDS)) {
        cli_err("unknown command '%s': run, list, ack or update", cmd);
        return CLI_EX_USAGE;
    }
    given_t g = {argv + optind, argc - optind, by, note, to, d.ex.cmd != NULL};
    if (g.nargs != COMMANDS[k].nargs) {
        char list[128] = "";
        if (COMMANDS[k].usage_list)
            cli_enum_list(COMMANDS[k].usage_list, "|", list, sizeof list);
        cli_err("%s%s%s%s%s", COMMANDS[k].usage, list, g.nargs > COMMANDS[k].nargs ? " ('" : "",
                g.nargs > COMMANDS[k].nargs ? g.args[COMMANDS[k].nargs] : "",
                g.nargs > COMMANDS[k].nargs ? "'?)" : "");
        return CLI_EX_USAGE;
    }
    json_t *req = NULL;
    if ((rc = COMMANDS[k].check(&g, &req)))
        return rc;
    if (COMMANDS[k].nargs > 0) {
        if (!util_valid_id(g.args[0], strlen(g.args[0]))) {
            json_decref(req);
            cli_err("'%s' is not an assignment id (1-64 characters of A-Z a-z 0-9 . _ : -)",
                    g.args[0]);
            return CLI_EX_USAGE;
        }
        if (!req) {
            cli_err("cannot build the request (is the text UTF-8?)");
            return CLI_EX_USAGE;
        }
    }
    co.no_spool = !COMMANDS[k].spool;
    if ((rc = cli_common_check(&co, 1)) != 0) {
        json_decref(req);
        return rc;
    }

    cli_catch_signals();
    d.seen = cli_map_new();
    d.resolving = cli_map_new();
    d.printing = COMMANDS[k].printing;
    d.ex.stdout_to_stderr = d.json;
    carehub_callbacks_t cb = {NULL, on_nack, on_push, on_reply, &d};
    carehub_t *c = cli_open(&co, SOFTWARE, &cb, &rc);
    d.c = c;
    if (c)
        rc = COMMANDS[k].run(&d, c, &co, req);
    carehub_destroy(&c);
    json_decref(req);
    free(d.reply);
    cli_map_destroy(&d.seen);
    cli_map_destroy(&d.resolving);
    while (d.ex.head) {
        job_t *j = d.ex.head;
        d.ex.head = j->next;
        job_free(j);
    }
    return rc;
}
