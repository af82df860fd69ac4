/*
 * carehub — the operator's and supervisor's command line: read cases, case
 * files and the trail, verify the trail, draw the yearly spot-check sample,
 * and report response times per agency (docs/protocol.md, Extensions: the
 * `query` op).
 *
 *   carehub -b EP -a AGENT cases [--status S] [--agency A] [--type T] [--overdue]
 *                                [--since DATE|ms] [--limit N] [--after ID] [--all] [--json]
 *   carehub -b EP -a AGENT case ID [--json]
 *   carehub -b EP -a AGENT trail ID [--json]
 *   carehub -b EP -a AGENT verify [--json]         (online, supervisors)
 *   carehub verify --data DIR [--data-key F] [--head SEQ:HEX]  (offline: carehubd verify)
 *   carehub -b EP -a AGENT trail-head              (the head to keep outside)
 *   carehub -b EP -a AGENT sample [--n N] [--seed S] [--json]
 *   carehub -b EP -a AGENT sample --register [--n N] [--seed S] [--village V] [--director D] [--json]
 *   carehub -b EP -a AGENT register [--village V] [--director D] [--json|--csv|--html FILE]
 *   carehub -b EP -a AGENT report [--since DATE] [--json|--csv|--html FILE]
 *   carehub -b EP -a AGENT stats [--json]
 *   carehub -b EP -a AGENT silence add --type T [--match KEY=V ...] [--starts TIME]
 *                                      (--ends TIME | --for DURATION) --reason TEXT
 *   carehub -b EP -a AGENT silence list [--json] | silence expire ID
 *
 * The broker decides what the agent may read (least privilege) and writes
 * every read and every refusal to the trail; a refusal is printed and the
 * exit code is 65.
 *
 * It speaks to the broker through libcarehub (agents/carehub/session.c: a
 * handle without a spool, one request at a time); the trail's hashes, msgpack
 * bin values, arrive as lowercase hex. It sends no events and keeps no spool.
 * The common options (-b, -a, --key-file, --server-key, --wait) are those of
 * agents/lib/cli.h.
 *
 * This file: the options, the commands but `report`, `register` and `silence`,
 * main. agents/carehub/: session.c (the broker), show.c (printing), report.c
 * (`report`), register.c (`register`, `sample --register`), silence.c
 * (`silence`); carehub_cli.h is
 * what they share.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "carehub/carehub_cli.h"
#include "cli.h"
#include "util.h"

#define DEFAULT_SAMPLE_N 20
#define EX_BROKEN 1               /* verify: the trail is broken */
#define EX_UNAVAILABLE 69         /* verify --data: carehubd not found */

/* ---- options -------------------------------------------------------------------------------- */

enum {
    OPT_JSON = CLI_OPT_FIRST_PROGRAM,
    OPT_CSV,
    OPT_HTML,
    OPT_STATUS,
    OPT_AGENCY,
    OPT_TYPE,
    OPT_OVERDUE,
    OPT_SINCE,
    OPT_LIMIT,
    OPT_AFTER,
    OPT_ALL,
    OPT_DATA,
    OPT_N,
    OPT_SEED,
    OPT_DATA_KEY,
    OPT_HEAD,
    OPT_REGISTER,
    OPT_VILLAGE,
    OPT_DIRECTOR,
    OPT_MATCH,
    OPT_STARTS,
    OPT_ENDS,
    OPT_FOR,
    OPT_REASON,
    OPT_END
};
#define BIT(o) (1u << ((o) - CLI_OPT_FIRST_PROGRAM))


/* ---- cases, case, trail ----------------------------------------------------------------------- */

static int cmd_cases(sess_t *s, const opts_t *o)
{
    json_t *f = json_object();
    if (o->status)
        json_object_set_new(f, "status", json_string(o->status));
    if (o->agency)
        json_object_set_new(f, "agency", json_string(o->agency));
    if (o->type)
        json_object_set_new(f, "type", json_string(o->type));
    if (o->overdue)
        json_object_set_new(f, "overdue", json_true());
    if (o->since >= 0)
        json_object_set_new(f, "since", json_integer(o->since));
    if (o->after)
        json_object_set_new(f, "after", json_string(o->after));
    json_object_set_new(f, "limit", json_integer(o->limit > 0 ? o->limit : (o->all ? PAGE_MAX : 100)));
    json_t *items = json_array(), *last = NULL;
    const char *next = NULL;
    int rc = sess_query_pages(s, "cases", f, "cases", o->all, items, &last, &next);
    if (!rc) {
        size_t i;
        json_t *c;
        if (!o->json && json_array_size(items))
            show_case_header();
        json_array_foreach(items, i, c) {
            if (o->json)
                show_json_line(c);
            else
                show_case_row(c);
        }
        if (!o->json)
            fprintf(stderr, "%zu case(s)\n", json_array_size(items));
        if (!o->all && next && *next)
            fprintf(stderr, "%s: more cases: --after %s for the next page, or --all\n", cli_prog(),
                    next);
    }
    json_decref(last);
    json_decref(items);
    json_decref(f);
    return rc;
}

static int cmd_case(sess_t *s, const opts_t *o, const char *id)
{
    /* a large case comes in pages of events (after: the page's `next`): read them all */
    json_t *f = json_pack("{s:s}", "case", id), *evs_all = json_array(), *r = NULL;
    int rc = sess_query_pages(s, "case", f, "events", 1, evs_all, &r, NULL);
    json_decref(f);
    if (!rc && (size_t)json_integer_value(json_object_get(r, "events_total")) != json_array_size(evs_all)) {
        cli_err("case %s: %zu of its %lld events read (it changed while read?); run again",
                cli_show(id), json_array_size(evs_all),
                (long long)json_integer_value(json_object_get(r, "events_total")));
        rc = CLI_EX_DATA;
    }
    if (rc) {
        json_decref(evs_all);
        json_decref(r);
        return rc;
    }
    json_object_set_new(r, "events", evs_all);
    json_object_del(r, "next");
    if (o->json) {
        show_json_line(r);
        json_decref(r);
        return 0;
    }
    json_t *c = json_deep_copy(json_object_get(r, "case"));
    printf(cli_tr("case %s\n", "案件 %s\n"), cli_show(cli_json_str(c, "id", id)));
    json_object_del(c, "join"); /* the broker's internal joining key */
    show_tree(stdout, "  ", "", c);
    json_decref(c);
    json_t *evs = json_object_get(r, "events"), *as = json_object_get(r, "assignments"), *x;
    size_t i;
    printf(cli_tr("events (%zu):\n", "事件（%zu）：\n"), json_array_size(evs));
    json_array_foreach(evs, i, x) {
        printf("  %zu. ", i + 1);
        cli_put_safe(stdout, cli_json_str(x, "type", "?"));
        static const char *const keys[] = {"id", "at", "received", "severity", "agent", "ref",
                                           "silenced", NULL};
        show_fields(stdout, x, keys);
        fputc('\n', stdout);
        json_t *body = json_object_get(x, "body");
        if (json_is_object(body))
            show_tree(stdout, "       ", "", body);
    }
    printf(cli_tr("assignments (%zu):\n", "任务（%zu）：\n"), json_array_size(as));
    json_array_foreach(as, i, x) {
        printf("  ");
        const char *ag = cli_json_str(x, "agency", "?"), *name = carehub_agency_name(s->c, ag);
        if (name) { /* the name people know, and the id the other commands take */
            cli_put_safe(stdout, name);
            fputs(" (", stdout);
            cli_put_safe(stdout, ag);
            fputc(')', stdout);
        } else {
            cli_put_safe(stdout, ag);
        }
        static const char *const keys[] = {"id", "state", "created", "ack_by", "acked_at", "by",
                                           "level", "to", "resolve_by", "final_at",
                                           "resolve_level", NULL};
        show_fields(stdout, x, keys);
        fputc('\n', stdout);
        const char *note = cli_json_str(x, "note", "");
        if (*note) {
            fputs(cli_tr("     note: ", "     备注："), stdout);
            cli_put_safe(stdout, note);
            fputc('\n', stdout);
        }
    }
    json_decref(r);
    return 0;
}

static int cmd_trail(sess_t *s, const opts_t *o, const char *id)
{
    json_t *r = NULL;
    int rc = sess_query_case(s, "trail", id, &r);
    if (rc)
        return rc;
    json_t *recs = json_object_get(r, "records"), *x;
    size_t i;
    if (!o->json) {
        static const char *const en[] = {"SEQ", "TIME", "KIND", "ACTOR", "OBJECT", "REF", "HASH"};
        static const char *const zh[] = {"序号", "时间", "类别", "操作者", "对象", "关联", "哈希"};
        static const int width[] = {6, 26, 12, 16, 26, 8, 0};
        show_header(en, zh, width, UTIL_ARRAY_LEN(en));
    }
    json_array_foreach(recs, i, x) {
        if (o->json) {
            show_json_line(x);
            continue;
        }
        show_cell("seq", json_object_get(x, "seq"), 6);
        show_cell("at", json_object_get(x, "at"), 26);
        show_cell("kind", json_object_get(x, "kind"), 12);
        show_cell("actor", json_object_get(x, "actor"), 16);
        show_cell("obj", json_object_get(x, "obj"), 26);
        show_cell("ref", json_object_get(x, "ref"), 8);
        const char *hh = cli_json_str(x, "hash", "");
        printf("%.16s\n", *hh ? hh : "-");
    }
    if (!o->json)
        fprintf(stderr, "%zu trail record(s) of case %s\n", json_array_size(recs), cli_show(id));
    json_decref(r);
    return 0;
}

/* ---- verify -------------------------------------------------------------------------------- */

static int cmd_verify_online(sess_t *s, const opts_t *o)
{
    json_t *r = NULL;
    int rc = sess_query(s, "verify", NULL, &r);
    if (rc)
        return rc;
    int intact = json_is_true(json_object_get(r, "intact"));
    json_int_t recs = json_integer_value(json_object_get(r, "records"));
    json_int_t objs = json_integer_value(json_object_get(r, "objects"));
    if (o->json) {
        show_json_line(r);
    } else if (intact) {
        printf(cli_tr("intact: %lld trail records chained; %lld events, cases and assignments match "
                      "their trail\n",
                      "完整：%lld 条审计记录环环相扣；%lld 个事件、案件和任务与审计记录一致\n"),
               (long long)recs, (long long)objs);
    } else {
        fputs(cli_tr("BROKEN: ", "已被改动（BROKEN）："), stdout);
        cli_put_safe(stdout, cli_json_str(r, "problem", "(no problem named)"));
        printf(cli_tr("\n(%lld trail records walked, %lld records checked before it)\n",
                      "\n（已查 %lld 条审计记录，此前已核对 %lld 条记录）\n"),
               (long long)recs, (long long)objs);
    }
    json_decref(r);
    return intact ? CLI_EX_OK : EX_BROKEN;
}

/* verify --data DIR [--data-key F] [--head H]: run carehubd verify (next to this
 * program, else on $PATH); its output and exit code are ours. Returns only when
 * it cannot be run. */
static int cmd_verify_offline(const opts_t *o)
{
    char self[4096], path[4200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char *argv[10];
    int a = 0;
    argv[a++] = (char *)"carehubd";
    argv[a++] = (char *)"verify";
    argv[a++] = (char *)"--data";
    argv[a++] = (char *)o->data;
    if (o->data_key) {
        argv[a++] = (char *)"--key-file";
        argv[a++] = (char *)o->data_key;
    }
    if (o->head) {
        argv[a++] = (char *)"--head";
        argv[a++] = (char *)o->head;
    }
    argv[a] = NULL;
    fflush(NULL);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            util_fmt(path, sizeof path, "%s/carehubd", self);
            if (access(path, X_OK) == 0) {
                execv(path, argv);
                cli_err("cannot run %s: %s", path, strerror(errno));
                return EX_UNAVAILABLE;
            }
        }
    }
    execvp("carehubd", argv);
    cli_err("cannot run carehubd (not next to %s nor on $PATH): %s", cli_prog(), strerror(errno));
    return EX_UNAVAILABLE;
}

/* trail-head: the head to keep outside the store, as SEQ:HEX (verify --head takes it). */
static int cmd_trail_head(sess_t *s, const opts_t *o)
{
    json_t *r = NULL;
    int rc = sess_query(s, "trail_head", NULL, &r);
    if (rc)
        return rc;
    if (o->json)
        show_json_line(r);
    else
        printf("%lld:%s\n", (long long)json_integer_value(json_object_get(r, "seq")),
               cli_json_str(r, "hash", ""));
    json_decref(r);
    return CLI_EX_OK;
}

/* ---- sample --------------------------------------------------------------------------------- */

static const char *const CHECK_ABSENCE[] = {
    "contact with the guardian recorded", "the reason for the absence found",
    "follow-up recorded (back at school, or referred)", NULL};
static const char *const CHECK_REPORT[] = {
    "every agency acknowledged in time (before ack_by)", "the reporter told the outcome",
    "the harm reported acted on (visit, protection measure, referral)", NULL};
static const char *const CHECK_ONLINE[] = {
    "the content removed (or the platform asked to)", "the child contacted",
    "the guardian informed where appropriate", NULL};
static const char *const CHECK_OTHER[] = {
    "the case file complete", "every agency acknowledged in time", "the outcome recorded", NULL};

/* The same checklists as people read them in Chinese (the text table; --json keeps the
 * English ones above, as before). */
static const char *const CHECK_ABSENCE_ZH[] = {
    "已记录与监护人的联系", "已查明缺勤原因", "已记录后续情况（返校或转介）", NULL};
static const char *const CHECK_REPORT_ZH[] = {
    "各单位均在时限内确认（ack_by 之前）", "已向报告人反馈结果",
    "已对所报伤害采取行动（走访、保护措施、转介）", NULL};
static const char *const CHECK_ONLINE_ZH[] = {
    "已删除内容（或已要求平台删除）", "已联系儿童", "已视情况告知监护人", NULL};
static const char *const CHECK_OTHER_ZH[] = {"案卷完整", "各单位均在时限内确认", "已记录结果",
                                             NULL};

/* The checklist of a case type: in English (zh 0), or in Chinese (zh 1). */
static const char *const *checklist_in(const char *type, int zh)
{
    if (!strcmp(type, "absence"))
        return zh ? CHECK_ABSENCE_ZH : CHECK_ABSENCE;
    if (!strcmp(type, "mandatory_report"))
        return zh ? CHECK_REPORT_ZH : CHECK_REPORT;
    if (!strcmp(type, "online_risk"))
        return zh ? CHECK_ONLINE_ZH : CHECK_ONLINE;
    return zh ? CHECK_OTHER_ZH : CHECK_OTHER;
}

static const char *const *checklist(const char *type)
{
    return checklist_in(type, 0);
}

static int by_id(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    return strcmp(cli_json_str(x, "id", ""), cli_json_str(y, "id", ""));
}

static int cmd_sample(sess_t *s, const opts_t *o)
{
    if (o->reg)
        return register_sample_command(s, o);
    char year[16];
    const char *seed = o->seed;
    if (!seed) {
        time_t t = time(NULL);
        struct tm tm;
        localtime_r(&t, &tm);
        util_fmt(year, sizeof year, "%d", tm.tm_year + 1900);
        seed = year;
    }
    long want = o->n > 0 ? o->n : DEFAULT_SAMPLE_N;
    json_t *f = json_pack("{s:i}", "limit", PAGE_MAX), *items = json_array(), *last = NULL;
    int rc = sess_query_pages(s, "cases", f, "cases", 1, items, &last, NULL);
    json_decref(f);
    json_decref(last);
    if (rc) {
        json_decref(items);
        return rc;
    }
    size_t n = json_array_size(items);
    json_t **v = xcalloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(items, i);
    if (n)
        qsort(v, n, sizeof *v, by_id); /* the same population gives the same order */

    /* seed text -> 32 bytes -> a deterministic stream -> Fisher-Yates */
    unsigned char key[randombytes_SEEDBYTES];
    crypto_generichash(key, sizeof key, (const unsigned char *)seed, strlen(seed), NULL, 0);
    unsigned char *rnd = xmalloc(8 * (n ? n : 1));
    randombytes_buf_deterministic(rnd, 8 * (n ? n : 1), key);
    for (size_t i = n; i > 1; i--) {
        uint64_t r = 0;
        for (int b = 0; b < 8; b++)
            r = (r << 8) | rnd[8 * (i - 1) + (size_t)b];
        size_t j = (size_t)(r % i); /* bias below 2^-40 for any real case count */
        json_t *tmp = v[i - 1];
        v[i - 1] = v[j];
        v[j] = tmp;
    }
    size_t k = (size_t)want < n ? (size_t)want : n;
    if (o->json) {
        json_t *out = json_pack("{s:s, s:I, s:I, s:[]}", "seed", seed, "population", (json_int_t)n,
                                "n", (json_int_t)k, "cases");
        json_t *arr = json_object_get(out, "cases");
        for (size_t i = 0; i < k; i++) {
            json_t *c = json_deep_copy(v[i]), *chk = json_array();
            for (const char *const *q = checklist(cli_json_str(c, "type", "")); *q; q++)
                json_array_append_new(chk, json_string(*q));
            json_object_set_new(c, "check", chk);
            json_array_append_new(arr, c);
        }
        show_json_line(out);
        json_decref(out);
    } else {
        printf(cli_tr("spot check: %zu of %zu case(s), seed ", "抽查：共 %2$zu 个案件，抽取 %1$zu 个，种子 "),
               k, n);
        cli_put_safe(stdout, seed);
        printf(cli_tr(" (redraw the same sample: %s sample --n %ld --seed ",
                      "（重新抽取同一样本：%s sample --n %ld --seed "), cli_prog(), want);
        cli_put_safe(stdout, seed);
        fputs(cli_tr(")\n", "）\n"), stdout);
        if (n < (size_t)want)
            fputs(cli_tr("(fewer cases than --n: all of them are in the sample)\n",
                         "（案件少于 --n：全部纳入样本）\n"), stdout);
        for (size_t i = 0; i < k; i++) {
            printf("\n%zu. ", i + 1);
            show_case_row(v[i]);
            for (const char *const *q = checklist_in(cli_json_str(v[i], "type", ""),
                                                     cli_lang() == CLI_LANG_ZH);
                 *q; q++)
                printf("   [ ] %s\n", *q);
        }
    }
    sodium_memzero(key, sizeof key);
    free(rnd);
    free(v);
    json_decref(items);
    return 0;
}

/* ---- stats ---------------------------------------------------------------------------------- */

static void count_by(json_t *counts, const json_t *items, const char *key)
{
    size_t i;
    json_t *x;
    json_array_foreach(items, i, x) {
        const char *k = cli_json_str(x, key, "?");
        json_t *c = json_object_get(counts, k);
        json_object_set_new(counts, k, json_integer(c ? json_integer_value(c) + 1 : 1));
    }
}

static void put_counts(const char *label, const json_t *counts)
{
    const char *k;
    json_t *v;
    printf("  %s:", label);
    if (!json_object_size(counts))
        fputs(" -", stdout);
    json_object_foreach((json_t *)counts, k, v) {
        fputc(' ', stdout);
        cli_put_safe(stdout, k);
        printf(" %lld", (long long)json_integer_value(v));
    }
    fputc('\n', stdout);
}

static int cmd_stats(sess_t *s, const opts_t *o)
{
    json_t *f = json_pack("{s:i}", "limit", PAGE_MAX), *cases = json_array(),
           *as = json_array(), *last = NULL;
    int rc = sess_query_pages(s, "cases", f, "cases", 1, cases, &last, NULL);
    json_decref(last);
    last = NULL;
    if (!rc)
        rc = sess_query_pages(s, "assignments", f, "assignments", 1, as, &last, NULL);
    json_decref(last);
    json_decref(f);
    if (!rc) {
        json_t *out = json_pack("{s:I, s:{}, s:{}, s:I, s:{}}", "cases",
                                (json_int_t)json_array_size(cases), "cases_by_status",
                                "cases_by_type", "assignments", (json_int_t)json_array_size(as),
                                "assignments_by_state");
        count_by(json_object_get(out, "cases_by_status"), cases, "status");
        count_by(json_object_get(out, "cases_by_type"), cases, "type");
        count_by(json_object_get(out, "assignments_by_state"), as, "state");
        if (o->json) {
            show_json_line(out);
        } else {
            printf(cli_tr("cases: %zu\n", "案件：%zu\n"), json_array_size(cases));
            put_counts(cli_tr("by status", "按状态"), json_object_get(out, "cases_by_status"));
            put_counts(cli_tr("by type", "按类型"), json_object_get(out, "cases_by_type"));
            printf(cli_tr("assignments: %zu\n", "任务：%zu\n"), json_array_size(as));
            put_counts(cli_tr("by state", "按状态"), json_object_get(out, "assignments_by_state"));
        }
        json_decref(out);
    }
    json_decref(cases);
    json_decref(as);
    return rc;
}

/* ---- main ----------------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    int nargs;              /* positional arguments */
    unsigned allowed;       /* BIT(OPT_*) */
    const char *synopsis;
    const char *help;
} command_t;

static const command_t COMMANDS[] = {
    {"cases", 0,
     BIT(OPT_JSON) | BIT(OPT_STATUS) | BIT(OPT_AGENCY) | BIT(OPT_TYPE) | BIT(OPT_OVERDUE) |
         BIT(OPT_SINCE) | BIT(OPT_LIMIT) | BIT(OPT_AFTER) | BIT(OPT_ALL),
     "cases [--status S] [--agency A] [--type T] [--overdue] [--since DATE|ms]\n"
     "             [--limit N] [--after CASE] [--all] [--json]",
     "The cases this agent may read (no personal data), oldest first: one page of --limit\n"
     "(default 100) after --after, or every page with --all (--limit is then the page size).\n"
     "--overdue: with an open assignment past its deadline. --since: opened at or after.\n"
     "--json: one JSON object per case.\n"},
    {"case", 1, BIT(OPT_JSON), "case CASE [--json]",
     "The case file: the case, its events with their bodies opened (the child's name,\n"
     "the reporter...: personal data; the read is recorded in the trail) and its\n"
     "assignments. --json: the broker's answer as one JSON object.\n"},
    {"trail", 1, BIT(OPT_JSON), "trail CASE [--json]",
     "The case's trail records, one per line: seq, time, kind, actor, object, ref and the\n"
     "first 16 hex digits of the object's hash. --json: one JSON object per record.\n"},
    {"verify", 0, BIT(OPT_JSON) | BIT(OPT_DATA) | BIT(OPT_DATA_KEY) | BIT(OPT_HEAD),
     "verify [--json] | verify --data DIR [--data-key FILE] [--head SEQ:HEX]",
     "Check the trail's hash chain and every event, case and assignment against it.\n"
     "Online (supervisors): the broker walks its store. --data DIR: offline, on a stopped\n"
     "broker's data directory or an mdb_copy: runs `carehubd verify --data DIR` (carehubd\n"
     "next to this program, else on $PATH) and passes its output and exit code through;\n"
     "--data-key: the broker's privacy.key_file, without which a sealed store's keyed\n"
     "chain is not checked (it says so); --head: a head taken with trail-head and kept\n"
     "outside the store, which the trail must still pass through.\n"
     "Exit 0 intact, 1 broken (the problem is printed), 74 the store cannot be read.\n"},
    {"trail-head", 0, BIT(OPT_JSON), "trail-head [--json]",
     "The trail's head (supervisors): its record number and chain hash as SEQ:HEX. Keep it\n"
     "outside the broker's machine (print it, mail it to the civil-affairs office): a\n"
     "later `verify --data DIR --head SEQ:HEX` shows that nothing up to it was rewritten,\n"
     "even by someone who holds the data key. The read is recorded in the trail.\n"},
    {"sample", 0,
     BIT(OPT_JSON) | BIT(OPT_N) | BIT(OPT_SEED) | BIT(OPT_REGISTER) | BIT(OPT_VILLAGE) |
         BIT(OPT_DIRECTOR),
     "sample [--n N] [--seed S] [--json]\n"
     "  sample --register [--n N] [--seed S] [--village V] [--director D] [--json]",
     "The yearly spot check: N cases (default 20) drawn at random from every case this\n"
     "agent may read, with what to check in each. The draw is reproducible: the same\n"
     "seed (any text; default the current year) and the same cases give the same sample.\n"
     "--register (supervisors; 每年开展一次抽查): N register entries (1-100, default 10)\n"
     "drawn by the broker, of the village and director if given: each entry's opaque id,\n"
     "village, director, risk, categories, enrolment, last contact and home visit, due\n"
     "times and the cases to read with `case`. No names, no child ids. The same seed and\n"
     "the same register give the same entries; each drawn entry is recorded in the trail.\n"},
    {"register", 0, BIT(OPT_JSON) | BIT(OPT_CSV) | BIT(OPT_HTML) | BIT(OPT_VILLAGE) |
         BIT(OPT_DIRECTOR),
     "register [--village V] [--director D] [--json | --csv | --html FILE]",
     "The child register per village and child director (supervisors; docs/register.md):\n"
     "在册儿童 active children; 本期已联系 / 本期已走访 those with a contact / home visit\n"
     "within the last period of their rhythm; 联系逾期 / 走访逾期 those past due; the\n"
     "coverage (已联系, 已走访 of 在册儿童) and 高风险 (risk elevated); a totals line.\n"
     "No names, no child ids. --json: the broker's answer as one JSON object. --csv: UTF-8\n"
     "with a byte order mark, a Chinese header row, one row per village and director.\n"
     "--html FILE: a self-contained page with the table and a coverage chart per village.\n"},
    {"report", 0, BIT(OPT_JSON) | BIT(OPT_CSV) | BIT(OPT_HTML) | BIT(OPT_SINCE),
     "report [--since DATE|ms] [--json | --csv | --html FILE]",
     "Response per agency, from every assignment (created since --since):\n"
     "assignments; due (acknowledged, or past the deadline); on time (acked_at <= ack_by)\n"
     "and its % of due; time to acknowledge p50/p90 in minutes from creation; the same for\n"
     "the second deadline where a workflow sets resolve_within: due (final, or past\n"
     "resolve_by), on time (final_at <= resolve_by), its %, time to resolve p50/p90 from\n"
     "the acknowledgement to the final status; escalations (steps fired, both deadlines);\n"
     "open overdue (open and past ack_by at the broker's now).\n"
     "--html FILE writes a self-contained page with the table and a bar chart.\n"},
    {"stats", 0, BIT(OPT_JSON), "stats [--json]",
     "Counts of cases by status and type, and of assignments by state.\n"},
    {"silence", -1,
     BIT(OPT_JSON) | BIT(OPT_TYPE) | BIT(OPT_MATCH) | BIT(OPT_STARTS) | BIT(OPT_ENDS) |
         BIT(OPT_FOR) | BIT(OPT_REASON),
     "silence add --type T[,T...] [--match KEY=V[,V...] ...] [--starts TIME]\n"
     "             (--ends TIME | --for DURATION) --reason TEXT [--json]\n"
     "  silence list [--json]\n"
     "  silence expire ID [--json]",
     "Silences (supervisors; PROTOCOL §10): while one is active, the events the broker\n"
     "receives that match it are stored and joined to their cases but make no assignment\n"
     "and send no notice; their case files mark them `silenced`. --type and --match are a\n"
     "workflow's match (KEY: severity or body.FIELD; V1,V2: any of these values; \">=3\": a\n"
     "comparison on a body field). The broker refuses any silence that could hold a\n"
     "mandatory_report, or an online_risk whose body.risk could be self_harm, suicide,\n"
     "grooming or sexual_content: a child in danger is never silenced. --starts TIME\n"
     "(default: now); --ends TIME, or --for DURATION (e.g. 3d, 12h, 2w) from --starts or\n"
     "from now on this machine's clock; at most 90 days. `add` prints the silence's id;\n"
     "`list` every silence with its state at the broker's now (active, pending, ended,\n"
     "expired); `expire ID` ends one now. Creating and expiring are in the trail.\n"},
};

static const command_t *find_command(const char *name)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(COMMANDS); i++)
        if (!strcmp(COMMANDS[i].name, name))
            return &COMMANDS[i];
    return NULL;
}

static const char EXIT_HELP[] =
    "Exit: 0 done (verify: intact); 1 verify: the trail is broken; 64 usage; 65 the broker\n"
    "refused the request (forbidden: this agent may not read it; not_found; invalid); 66 a\n"
    "key file cannot be read; 69 verify --data: carehubd not found; 74 a file cannot be\n"
    "written (--html) or the store cannot be read (verify --data); 75 no answer from the\n"
    "broker within --wait (default 10 s per answer); 77 the broker refused this agent.\n";

static void usage(FILE *f, const command_t *cmd)
{
    if (cmd) {
        fprintf(f, "usage: %s [-b ENDPOINT] -a AGENT %s\n\n%s\nOptions:\n%s\n%s", cli_prog(),
                cmd->synopsis, cmd->help, cli_common_help, EXIT_HELP);
        return;
    }
    fprintf(f, "usage: %s [-b ENDPOINT] -a AGENT [--key-file F --server-key K] [--wait S] "
               "COMMAND ...\n\n"
               "Read carehub's cases as a supervisor or an agency desk: the broker allows only\n"
               "what the agent may read, and records every read and refusal in the trail.\n\n"
               "Commands:\n", cli_prog());
    for (size_t i = 0; i < UTIL_ARRAY_LEN(COMMANDS); i++)
        fprintf(f, "  %s\n", COMMANDS[i].synopsis);
    fprintf(f, "\n`%s COMMAND --help` describes a command.\n\nOptions:\n%s\n%s", cli_prog(),
            cli_common_help, EXIT_HELP);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        {"json", no_argument, NULL, OPT_JSON},
        {"csv", no_argument, NULL, OPT_CSV},
        {"html", required_argument, NULL, OPT_HTML},
        {"status", required_argument, NULL, OPT_STATUS},
        {"agency", required_argument, NULL, OPT_AGENCY},
        {"type", required_argument, NULL, OPT_TYPE},
        {"overdue", no_argument, NULL, OPT_OVERDUE},
        {"since", required_argument, NULL, OPT_SINCE},
        {"limit", required_argument, NULL, OPT_LIMIT},
        {"after", required_argument, NULL, OPT_AFTER},
        {"all", no_argument, NULL, OPT_ALL},
        {"data", required_argument, NULL, OPT_DATA},
        {"n", required_argument, NULL, OPT_N},
        {"seed", required_argument, NULL, OPT_SEED},
        {"data-key", required_argument, NULL, OPT_DATA_KEY},
        {"head", required_argument, NULL, OPT_HEAD},
        {"register", no_argument, NULL, OPT_REGISTER},
        {"village", required_argument, NULL, OPT_VILLAGE},
        {"director", required_argument, NULL, OPT_DIRECTOR},
        {"match", required_argument, NULL, OPT_MATCH},
        {"starts", required_argument, NULL, OPT_STARTS},
        {"ends", required_argument, NULL, OPT_ENDS},
        {"for", required_argument, NULL, OPT_FOR},
        {"reason", required_argument, NULL, OPT_REASON},
        {NULL, 0, NULL, 0},
    };
    static const char *const optnames[] = {"--json", "--csv", "--html", "--status", "--agency",
                                           "--type", "--overdue", "--since", "--limit", "--after",
                                           "--all", "--data", "--n", "--seed", "--data-key",
                                           "--head", "--register", "--village", "--director",
                                           "--match", "--starts", "--ends", "--for", "--reason"};
    cli_common_t co;
    opts_t o;
    int opt;

    cli_init(argv[0]);
    cli_common_init(&co);
    memset(&o, 0, sizeof o);
    o.since = -1;
    o.starts = o.ends = o.span = -1;
    if (sodium_init() < 0) {
        cli_err("libsodium cannot start");
        return CLI_EX_IO;
    }
    while ((opt = cli_getopt(&co, argc, argv, longopts)) > 0) {
        if (opt < CLI_OPT_FIRST_PROGRAM || opt >= OPT_END) {
            fprintf(stderr, "Try '%s --help'.\n", cli_prog());
            return CLI_EX_USAGE;
        }
        o.given |= BIT(opt);
        char *end;
        switch (opt) {
        case OPT_JSON: o.json = 1; break;
        case OPT_CSV: o.csv = 1; break;
        case OPT_HTML: o.html = optarg; break;
        case OPT_STATUS: o.status = optarg; break;
        case OPT_AGENCY: o.agency = optarg; break;
        case OPT_TYPE: o.type = optarg; break;
        case OPT_OVERDUE: o.overdue = 1; break;
        case OPT_ALL: o.all = 1; break;
        case OPT_AFTER: o.after = optarg; break;
        case OPT_DATA: o.data = optarg; break;
        case OPT_DATA_KEY: o.data_key = optarg; break;
        case OPT_HEAD: o.head = optarg; break;
        case OPT_REGISTER: o.reg = 1; break;
        case OPT_VILLAGE:
            /* the enrolment schema's village: 1-200 characters */
            if (!*optarg || !cli_utf8_valid(optarg) || cli_utf8_len(optarg) > 200) {
                cli_err("--village: give the village or community as registered (1-200 characters)");
                return CLI_EX_USAGE;
            }
            o.village = optarg;
            break;
        case OPT_DIRECTOR:
            if (!util_valid_id(optarg, strlen(optarg))) {
                cli_err("--director %s: give the child director's agent id (1-64 characters of "
                        "A-Z a-z 0-9 . _ : -)", cli_show(optarg));
                return CLI_EX_USAGE;
            }
            o.director = optarg;
            break;
        case OPT_SEED:
            if (!*optarg || strlen(optarg) > 256) {
                cli_err("--seed: give 1-256 characters (e.g. 2025)");
                return CLI_EX_USAGE;
            }
            o.seed = optarg;
            break;
        case OPT_MATCH:
            if (o.n_match == SILENCE_MATCH_MAX) {
                cli_err("--match: at most %d conditions", SILENCE_MATCH_MAX);
                return CLI_EX_USAGE;
            }
            o.match[o.n_match++] = optarg;
            break;
        case OPT_REASON: o.reason = optarg; break;
        case OPT_STARTS:
        case OPT_ENDS: {
            int64_t *t = opt == OPT_STARTS ? &o.starts : &o.ends;
            if (cli_parse_time(optarg, t) < 0 || *t < 0) {
                cli_err("%s %s: give a date (2025-03-01), a date and time (2025-03-01T08:00) or "
                        "ms since the epoch", optnames[opt - OPT_JSON], cli_show(optarg));
                return CLI_EX_USAGE;
            }
            break;
        }
        case OPT_FOR:
            if (cli_parse_span_ms(optarg, &o.span) < 0 || o.span <= 0) {
                cli_err("--for %s: give a duration such as 90m, 12h, 3d or 2w", cli_show(optarg));
                return CLI_EX_USAGE;
            }
            break;
        case OPT_SINCE:
            if (cli_parse_time(optarg, &o.since) < 0 || o.since < 0) {
                cli_err("--since %s: give a date (2025-03-01), a date and time "
                        "(2025-03-01T08:00) or ms since the epoch", cli_show(optarg));
                return CLI_EX_USAGE;
            }
            break;
        case OPT_LIMIT:
        case OPT_N: {
            errno = 0;
            long v = strtol(optarg, &end, 10);
            long max = opt == OPT_LIMIT ? PAGE_MAX : 100000;
            if (errno || end == optarg || *end || v < 1 || v > max) {
                cli_err("%s %s: give a whole number from 1 to %ld", optnames[opt - OPT_JSON],
                        cli_show(optarg), max);
                return CLI_EX_USAGE;
            }
            if (opt == OPT_LIMIT)
                o.limit = v;
            else
                o.n = v;
            break;
        }
        default:
            break;
        }
    }
    if (opt < 0)
        return CLI_EX_USAGE;
    const command_t *cmd = optind < argc ? find_command(argv[optind]) : NULL;
    if (co.help) {
        usage(stdout, cmd);
        return CLI_EX_OK;
    }
    if (optind >= argc) {
        cli_err("no command: cases, case, trail, verify, trail-head, sample, report, register, "
                "stats or silence (--help)");
        return CLI_EX_USAGE;
    }
    if (!cmd) {
        cli_err("unknown command '%s': cases, case, trail, verify, trail-head, sample, report, "
                "register, stats or silence",
                cli_show(argv[optind]));
        return CLI_EX_USAGE;
    }
    optind++;
    int nargs = argc - optind;
    char **args = argv + optind;
    if (cmd->nargs >= 0 && nargs != cmd->nargs) {
        cli_err("usage: %s %s", cli_prog(), cmd->synopsis);
        return CLI_EX_USAGE;
    }
    for (int b = 0; b < OPT_END - OPT_JSON; b++)
        if ((o.given & (1u << b)) && !(cmd->allowed & (1u << b))) {
            cli_err("%s does not go with %s (%s %s --help)", optnames[b], cmd->name, cli_prog(),
                    cmd->name);
            return CLI_EX_USAGE;
        }
    if (o.json + o.csv + (o.html != NULL) > 1) {
        cli_err("give one of --json, --csv and --html");
        return CLI_EX_USAGE;
    }
    if (cmd->nargs == 1 && !util_valid_id(args[0], strlen(args[0]))) {
        cli_err("'%s' is not a case id (1-64 characters of A-Z a-z 0-9 . _ : -)", cli_show(args[0]));
        return CLI_EX_USAGE;
    }
    if (o.after && !util_valid_id(o.after, strlen(o.after))) {
        cli_err("--after %s: not a case id", cli_show(o.after));
        return CLI_EX_USAGE;
    }
    if (!strcmp(cmd->name, "verify") && o.data) {
        if (o.json) {
            cli_err("verify --data prints carehubd's own lines; --json goes with online verify");
            return CLI_EX_USAGE;
        }
        return cmd_verify_offline(&o);
    }
    if ((o.village || o.director) && !strcmp(cmd->name, "sample") && !o.reg) {
        cli_err("--village and --director go with sample --register (cases have no village)");
        return CLI_EX_USAGE;
    }
    if (o.reg && o.seed && strlen(o.seed) > REGISTER_SEED_MAX) {
        cli_err("sample --register --seed: give at most %d bytes", REGISTER_SEED_MAX);
        return CLI_EX_USAGE;
    }
    if (o.reg && o.n > REGISTER_SAMPLE_MAX) {
        cli_err("sample --register --n %ld: give a whole number from 1 to %d", o.n,
                REGISTER_SAMPLE_MAX);
        return CLI_EX_USAGE;
    }
    if (!strcmp(cmd->name, "silence")) {
        int urc = silence_usage(&o, nargs, args);
        if (urc)
            return urc;
    }
    if (o.data_key || o.head) {
        cli_err("--data-key and --head go with verify --data DIR");
        return CLI_EX_USAGE;
    }

    co.no_spool = 1; /* it sends requests only: no spool, even with --spool */
    co.spool_dir = NULL;
    int rc = cli_common_check(&co, 1);
    if (rc)
        return rc;
    cli_catch_signals();
    sess_t s;
    rc = sess_open(&s, &co);
    if (!rc) {
        if (!strcmp(cmd->name, "cases"))
            rc = cmd_cases(&s, &o);
        else if (!strcmp(cmd->name, "case"))
            rc = cmd_case(&s, &o, args[0]);
        else if (!strcmp(cmd->name, "trail"))
            rc = cmd_trail(&s, &o, args[0]);
        else if (!strcmp(cmd->name, "verify"))
            rc = cmd_verify_online(&s, &o);
        else if (!strcmp(cmd->name, "trail-head"))
            rc = cmd_trail_head(&s, &o);
        else if (!strcmp(cmd->name, "sample"))
            rc = cmd_sample(&s, &o);
        else if (!strcmp(cmd->name, "report"))
            rc = report_command(&s, &o);
        else if (!strcmp(cmd->name, "register"))
            rc = register_command(&s, &o);
        else if (!strcmp(cmd->name, "silence"))
            rc = silence_command(&s, &o, nargs, args);
        else
            rc = cmd_stats(&s, &o);
    }
    sess_close(&s);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_err("cannot write the output: %s", strerror(errno));
        if (rc == 0)
            rc = CLI_EX_IO;
    }
    return rc;
}
