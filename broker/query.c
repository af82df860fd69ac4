/* query.c — the `query` op: who may read what, case lists, figures, verify and the trail
 * head, under least privilege and per-agent budgets; one case's file and trail in
 * query_case.c. See query.h. */
#include "carehub_wire.h"
#include "query_int.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "assign.h"
#include "audit.h"
#include "budget.h"
#include "clock.h"
#include "silence.h"
#include "trail.h"
#include "util.h"

#define LIST_DEFAULT 100
#define LIST_MAX 1000

/* ---- who may read what ------------------------------------------------------------ */

typedef struct {
    store_txn_t *t;
    const char *agency;
    int holds;
} holds_t;

static int holds_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    holds_t *h = ud;
    char id[STORE_ID_MAX], agency[STORE_ID_MAX];
    assign_state_t state;
    if (store_copy_id(v, vl, id, sizeof id))
        return STORE_CORRUPTED;
    int rc = assign_agency_state(h->t, id, agency, &state);
    if (rc)
        return rc;
    if (strcmp(agency, h->agency) == 0 && !assign_is_final(state)) {
        h->holds = 1;
        return STORE_EACH_STOP;
    }
    return 0;
}

/* 1 when the agent may read this case (docs/protocol.md, "Who reads a case"): a
 * supervisor always; an agency while it holds an assignment in it that is not
 * final (open, acknowledged, in progress) — once its part has ended (resolved,
 * referred, declined) the case file is no longer its to read; nobody else. */
static int query_may_read(store_txn_t *t, const config_agent_t *a, const char *case_id, int *rc)
{
    *rc = 0;
    if (a->role == ROLE_SUPERVISOR)
        return 1;
    if (a->role != ROLE_AGENCY || !a->agency)
        return 0;
    holds_t h = {t, a->agency, 0};
    *rc = store_each(t, STORE_DB_CASE_ASSIGN, case_id, strlen(case_id), 1, holds_visit, &h);
    return h.holds;
}

const char *query_ref(const q_t *q)
{
    return q->ref[0] ? q->ref : q->what;
}

void query_refuse(q_t *q, query_result_t r, const char *field, const char *fmt, const char *arg)
{
    q->result = r;
    util_fmt(q->why, q->whysize, fmt, arg);
    *q->field = field;
}

/* ---- what:"cases" -------------------------------------------------------------------- */

typedef struct {
    q_t *q;
    store_txn_t *t;
    char status[32], type[CAREHUB_ID_MAX + 1], agency[CAREHUB_ID_MAX + 1], after[STORE_ID_MAX];
    int64_t since;
    int overdue;
    size_t limit;
    /* results */
    msgpack_sbuffer items;
    msgpack_packer pk;
    size_t n;
    char last[STORE_ID_MAX];
    int more;
} list_t;

typedef struct {
    list_t *l;
    store_txn_t *t;
    int agency_ok, overdue_ok;
    size_t n;
    msgpack_packer *pk; /* NULL: only check */
} alist_t;

static int alist_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    alist_t *a = ud;
    const void *rec;
    size_t rl;
    int rc = store_get(a->t, STORE_DB_ASSIGNMENTS, v, vl, &rec, &rl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, rec, rl, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const char *ag, *st;
        size_t agn, stn;
        int64_t ack_by = 0;
        (void)frame_int(frame_map_get(&u.data, "ack_by"), &ack_by);
        if (frame_str(frame_map_get(&u.data, "agency"), &ag, &agn) &&
            frame_str(frame_map_get(&u.data, "state"), &st, &stn)) {
            if (a->l->agency[0] && agn == strlen(a->l->agency) && memcmp(ag, a->l->agency, agn) == 0)
                a->agency_ok = 1;
            if (assign_state_parse(st, stn) == AS_OPEN && ack_by < clock_now_ms())
                a->overdue_ok = 1;
            if (a->pk) {
                msgpack_pack_map(a->pk, 4);
                frame_pack_cstr(a->pk, "id");     msgpack_pack_object(a->pk, *frame_map_get(&u.data, "id"));
                frame_pack_cstr(a->pk, "agency"); msgpack_pack_str(a->pk, agn); msgpack_pack_str_body(a->pk, ag, agn);
                frame_pack_cstr(a->pk, "state");  msgpack_pack_str(a->pk, stn); msgpack_pack_str_body(a->pk, st, stn);
                frame_pack_cstr(a->pk, "ack_by"); msgpack_pack_int64(a->pk, ack_by);
            }
            a->n++;
        }
    }
    msgpack_unpacked_destroy(&u);
    return 0;
}

static int list_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    list_t *l = ud;
    if (kl >= STORE_ID_MAX)
        return STORE_CORRUPTED;
    char id[STORE_ID_MAX];
    memcpy(id, k, kl);
    id[kl] = '\0';
    if (l->after[0] && strcmp(id, l->after) <= 0)
        return 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = 0, keep = 0;
    if (msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const char *s;
        size_t n;
        int64_t opened = 0;
        (void)frame_int(frame_map_get(&u.data, "opened"), &opened);
        keep = opened >= l->since;
        if (keep && l->status[0])
            keep = frame_str(frame_map_get(&u.data, "status"), &s, &n) && n == strlen(l->status) &&
                   memcmp(s, l->status, n) == 0;
        if (keep && l->type[0])
            keep = frame_str(frame_map_get(&u.data, "type"), &s, &n) && n == strlen(l->type) &&
                   memcmp(s, l->type, n) == 0;
        if (keep && (l->agency[0] || l->overdue)) {
            alist_t a = {l, l->t, 0, 0, 0, NULL};
            rc = store_each(l->t, STORE_DB_CASE_ASSIGN, id, kl, 1, alist_visit, &a);
            keep = !rc && (!l->agency[0] || a.agency_ok) && (!l->overdue || a.overdue_ok);
        }
        if (keep && !rc) {
            if (l->n == l->limit) {
                l->more = 1;
                msgpack_unpacked_destroy(&u);
                return STORE_EACH_STOP;
            }
            /* {id, type, status, opened, severity, assignments: [...]} */
            msgpack_pack_map(&l->pk, 6);
            static const char *keys[] = {"id", "type", "status", "opened", "severity"};
            for (size_t i = 0; i < 5; i++) {
                const msgpack_object *o = frame_map_get(&u.data, keys[i]);
                frame_pack_cstr(&l->pk, keys[i]);
                if (o)
                    msgpack_pack_object(&l->pk, *o);
                else
                    msgpack_pack_nil(&l->pk);
            }
            frame_pack_cstr(&l->pk, "assignments");
            alist_t cnt = {l, l->t, 0, 0, 0, NULL};
            rc = store_each(l->t, STORE_DB_CASE_ASSIGN, id, kl, 1, alist_visit, &cnt);
            msgpack_pack_array(&l->pk, cnt.n);
            alist_t a = {l, l->t, 0, 0, 0, &l->pk};
            if (!rc)
                rc = store_each(l->t, STORE_DB_CASE_ASSIGN, id, kl, 1, alist_visit, &a);
            l->n++;
            memcpy(l->last, id, kl + 1);
        }
    } else {
        rc = STORE_CORRUPTED;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

/* `limit`: *out = def when absent; -1 (refused invalid) when not 1 to LIST_MAX. */
static int opt_limit(q_t *q, size_t def, size_t *out)
{
    const msgpack_object *o = frame_map_get(q->map, "limit");
    int64_t v;
    *out = def;
    if (!o)
        return 0;
    if (!frame_int(o, &v) || v < 1 || v > LIST_MAX) {
        query_refuse(q, QUERY_INVALID, "/limit", "`limit` must be 1 to %s", "1000"); /* LIST_MAX */
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int query_opt_str(q_t *q, const char *key, char *out, size_t size)
{
    const msgpack_object *o = frame_map_get(q->map, key);
    const char *s;
    size_t n;
    out[0] = '\0';
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (!frame_str(o, &s, &n) || n >= size || memchr(s, '\0', n))
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static int case_list(q_t *q, store_txn_t *t)
{
    list_t l;
    memset(&l, 0, sizeof l);
    l.q = q;
    l.t = t;
    int64_t v;
    static char field[32];
    const char *bad = NULL;
    if (query_opt_str(q, "status", l.status, sizeof l.status) < 0)
        bad = "status";
    else if (query_opt_str(q, "type", l.type, sizeof l.type) < 0)
        bad = "type";
    else if (query_opt_str(q, "agency", l.agency, sizeof l.agency) < 0)
        bad = "agency";
    else if (query_opt_str(q, "after", l.after, sizeof l.after) < 0)
        bad = "after";
    if (bad) {
        util_fmt(field, sizeof field, "/%s", bad);
        query_refuse(q, QUERY_INVALID, field, "`%s` must be a string", bad);
        return 0;
    }
    const msgpack_object *o = frame_map_get(q->map, "since");
    if (o && !(frame_int(o, &v) && v >= 0)) {
        query_refuse(q, QUERY_INVALID, "/since", "`since` must be a time in ms since the epoch%s", "");
        return 0;
    }
    l.since = o ? v : 0;
    o = frame_map_get(q->map, "overdue");
    l.overdue = o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean;
    if (opt_limit(q, LIST_DEFAULT, &l.limit) < 0)
        return 0;
    /* An agency sees its own cases only, whatever it asks. */
    if (q->agent->role == ROLE_AGENCY)
        util_fmt(l.agency, sizeof l.agency, "%s", q->agent->agency);
    msgpack_sbuffer_init(&l.items);
    msgpack_packer_init(&l.pk, &l.items, msgpack_sbuffer_write);
    int rc = store_each(t, STORE_DB_CASES, l.after, strlen(l.after), 0, list_visit, &l);
    if (!rc) {
        frame_out_message(q->out, "result", q->id, 3);
        frame_out_str(q->out, "what", "cases");
        frame_out_key(q->out, "cases");
        msgpack_pack_array(&q->out->pk, l.n);
        q->out->pk.callback(q->out->pk.data, l.items.data, l.items.size);
        frame_out_key(q->out, "next"); /* pass as `after` for the next page */
        if (l.more)
            frame_pack_cstr(&q->out->pk, l.last);
        else
            msgpack_pack_nil(&q->out->pk);
    }
    msgpack_sbuffer_destroy(&l.items);
    return rc;
}

/* ---- what:"assignments" (figures per agency) and what:"verify" ------------------------- */

typedef struct {
    store_txn_t *t;
    const char *agency;     /* only this agency's, or NULL */
    char after[STORE_ID_MAX];
    size_t limit, n;
    int more;
    char last[STORE_ID_MAX];
    msgpack_packer pk;
    msgpack_sbuffer sb;
} as_list_t2;

static int as_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    as_list_t2 *l = ud;
    if (kl >= STORE_ID_MAX)
        return STORE_CORRUPTED;
    char id[STORE_ID_MAX], agency[STORE_ID_MAX];
    memcpy(id, k, kl);
    id[kl] = '\0';
    if (l->after[0] && strcmp(id, l->after) <= 0)
        return 0;
    int rc = assign_agency(l->t, id, agency);
    if (rc)
        return rc;
    if (l->agency && strcmp(agency, l->agency) != 0)
        return 0;
    if (l->n == l->limit) {
        l->more = 1;
        return STORE_EACH_STOP;
    }
    if ((rc = assign_pack_record(l->t, id, &l->pk, 0, NULL))) /* no free text in the figures */
        return rc;
    l->n++;
    memcpy(l->last, id, kl + 1);
    return 0;
}

static int assignment_list(q_t *q, store_txn_t *t)
{
    as_list_t2 l;
    memset(&l, 0, sizeof l);
    if (query_opt_str(q, "after", l.after, sizeof l.after) < 0) {
        query_refuse(q, QUERY_INVALID, "/after", "`after` must be an assignment id%s", "");
        return 0;
    }
    if (opt_limit(q, LIST_MAX, &l.limit) < 0)
        return 0;
    if (q->agent->role == ROLE_AGENCY)
        l.agency = q->agent->agency;
    l.t = t;
    msgpack_sbuffer_init(&l.sb);
    msgpack_packer_init(&l.pk, &l.sb, msgpack_sbuffer_write);
    int rc = store_each(t, STORE_DB_ASSIGNMENTS, l.after, strlen(l.after), 0, as_visit, &l);
    if (!rc) {
        frame_out_message(q->out, "result", q->id, 4);
        frame_out_str(q->out, "what", "assignments");
        frame_out_int(q->out, "now", clock_now_ms());
        frame_out_key(q->out, "assignments");
        msgpack_pack_array(&q->out->pk, l.n);
        q->out->pk.callback(q->out->pk.data, l.sb.data, l.sb.size);
        frame_out_key(q->out, "next");
        if (l.more)
            frame_pack_cstr(&q->out->pk, l.last);
        else
            msgpack_pack_nil(&q->out->pk);
    }
    msgpack_sbuffer_destroy(&l.sb);
    return rc;
}

/* ---- the op ------------------------------------------------------------------------------ */

/* what:"trail_head" (supervisors): the head to keep outside the store, as
 * `carehubd verify --head SEQ:HEX` takes it back. Read after the read's own
 * record, so the anchor includes it. */
/* The trail record of a refused read: at once, or counted and coalesced into the
 * agent's next one (budget.h: "case+41" = 41 more refused since). */
int query_record_refusal(q_t *q, store_txn_t *t, const char *case_id)
{
    uint64_t more;
    if (!budget_refusal(q->budget, q->agent->id, q->id, util_mono_ms(), &more))
        return 0;
    char ref[QUERY_REF_MAX + 24];
    if (more)
        util_fmt(ref, sizeof ref, "%s+%llu", query_ref(q), (unsigned long long)more);
    else
        util_fmt(ref, sizeof ref, "%s", query_ref(q));
    return trail_append(t, case_id, "read_refused", q->agent->id, -1, NULL, NULL, 0, ref);
}

static int trail_head_answer(q_t *q, store_txn_t *t)
{
    if (q->agent->role != ROLE_SUPERVISOR) {
        query_refuse(q, QUERY_FORBIDDEN, NULL, "only supervisors anchor the trail%s", "");
        return query_record_refusal(q, t, "");
    }
    int rc = trail_append(t, "", "read", q->agent->id, -1, NULL, NULL, 0, query_ref(q));
    trail_anchor_t head;
    if (rc || (rc = trail_txn_head(t, &head)))
        return rc;
    char hex[2 * sizeof head.hash + 1];
    sodium_bin2hex(hex, sizeof hex, head.hash, sizeof head.hash);
    frame_out_message(q->out, "result", q->id, 3);
    frame_out_str(q->out, "what", "trail_head");
    frame_out_int(q->out, "seq", (int64_t)head.seq);
    frame_out_str(q->out, "hash", hex);
    return 0;
}

/* what:"silences", after? (supervisors, PROTOCOL §10): the silences, oldest
 * first, as stored (silence.h), as many as fit in max_message_bytes; `next`
 * when more follow. The read in the trail. */
static int silences_answer(q_t *q, store_txn_t *t)
{
    if (q->agent->role != ROLE_SUPERVISOR) {
        query_refuse(q, QUERY_FORBIDDEN, NULL, "only supervisors read the silences%s", "");
        return query_record_refusal(q, t, "");
    }
    char after[SILENCE_ID_MAX];
    if (query_opt_str(q, "after", after, sizeof after) < 0) {
        query_refuse(q, QUERY_INVALID, "/after", "`after` is the `next` of the page before (a "
                     "silence id)%s", "");
        return 0;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint32_t n = 0;
    char next[SILENCE_ID_MAX];
    size_t max = q->cfg->max_message_bytes, budget = max > 2048 ? max - 1024 : max;
    int rc = silence_pack_page(t, after, budget, &sb, &n, next);
    if (!rc)
        rc = trail_append(t, "", "read", q->agent->id, -1, NULL, NULL, 0, query_ref(q));
    if (!rc) {
        frame_out_message(q->out, "result", q->id, 4);
        frame_out_str(q->out, "what", "silences");
        frame_out_int(q->out, "now", clock_now_ms());
        frame_out_key(q->out, "silences");
        msgpack_pack_array(&q->out->pk, n);
        if (sb.size)
            q->out->pk.callback(q->out->pk.data, sb.data, sb.size);
        frame_out_key(q->out, "next");
        if (next[0])
            frame_pack_cstr(&q->out->pk, next);
        else
            msgpack_pack_nil(&q->out->pk);
    }
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int query_txn(store_txn_t *t, void *ud)
{
    q_t *q = ud;
    if (q->out->sb.data) { /* run again after the map grew: start the reply afresh */
        frame_out_end(q->out);
        memset(q->out, 0, sizeof *q->out);
    }
    q->result = QUERY_OK;
    q->why[0] = '\0';
    if (strncmp(q->what, "register", 8) == 0)
        return query_register(q, t);
    if (strcmp(q->what, "silences") == 0)
        return silences_answer(q, t);
    if (q->agent->role != ROLE_SUPERVISOR && q->agent->role != ROLE_AGENCY) {
        query_refuse(q, QUERY_FORBIDDEN, NULL, "agents of role %s read no case file", config_role_name(q->agent->role));
        return query_record_refusal(q, t, q->case_id);
    }
    if (strcmp(q->what, "trail_head") == 0)
        return trail_head_answer(q, t);
    if (strcmp(q->what, "cases") == 0)
        return case_list(q, t);
    if (strcmp(q->what, "assignments") == 0)
        return assignment_list(q, t);
    int rc;
    if (!query_may_read(t, q->agent, q->case_id, &rc)) {
        if (rc)
            return rc;
        query_refuse(q, QUERY_FORBIDDEN, "/case", "your agency holds no open assignment in case %s (an "
               "agency reads a case while its part in it is open; a supervisor can show it)", q->case_id);
        return query_record_refusal(q, t, q->case_id);
    }
    rc = strcmp(q->what, "case") == 0 ? query_case_file(q, t) : query_case_trail(q, t);
    if (rc || q->result != QUERY_OK)
        return rc;
    /* the read itself is part of the record */
    return trail_append(t, q->case_id, "read", q->agent->id, -1, NULL, NULL, 0, query_ref(q));
}

struct query_verify {
    store_t *st;
    char id[CAREHUB_ID_MAX + 1];
    trail_report_t r;
    int rc; /* trail_verify's */
};

query_verify_t *query_verify_new(store_t *st, const char *id)
{
    query_verify_t *v = xcalloc(1, sizeof *v);
    v->st = st;
    util_fmt(v->id, sizeof v->id, "%s", id);
    return v;
}

void query_verify_work(void *ud)
{
    query_verify_t *v = ud;
    v->rc = audit_verify(v->st, NULL, &v->r); /* read transactions only */
}

query_result_t query_verify_answer(query_verify_t *v, frame_out_t *out, char *why, size_t whysize)
{
    if (v->rc != 0 && v->rc != 1) {
        util_fmt(why, whysize, "the store could not be read; retry later");
        return QUERY_UNAVAILABLE;
    }
    frame_out_message(out, "result", v->id, 6);
    frame_out_str(out, "what", "verify");
    frame_out_bool(out, "intact", v->rc == 0);
    frame_out_int(out, "records", (int64_t)v->r.records);
    frame_out_int(out, "objects", (int64_t)v->r.objects);
    frame_out_int(out, "index_entries", (int64_t)v->r.index_entries);
    frame_out_str(out, "problem", v->r.problem);
    return QUERY_OK;
}

void query_verify_free(query_verify_t **pv)
{
    if (!pv || !*pv)
        return;
    free(*pv);
    *pv = NULL;
}

struct query {
    q_t q;
    frame_out_t out;
    char why[512];
    const char *field;
};

query_result_t query_begin(const config_t *cfg, store_t *st, budget_t *budget,
                           const config_agent_t *agent, const char *id, const msgpack_object *map,
                           frame_out_t *out, char *why, size_t whysize, const char **field,
                           query_t **qp)
{
    q_t q = {cfg, agent, id, map, out, why, whysize, field, QUERY_OK, "", "", budget, ""};
    *field = NULL;
    *qp = NULL;
    int64_t retry_ms;
    if (budget && !budget_query(budget, agent->id, util_mono_ms(), &retry_ms)) {
        util_fmt(why, whysize, "agent %s asked more than %d queries at once or %d a second: retry "
                 "in %lld ms", agent->id, BUDGET_QUERY_BURST, BUDGET_QUERY_PER_S,
                 (long long)retry_ms);
        return QUERY_UNAVAILABLE;
    }
    if (query_opt_str(&q, "what", q.what, sizeof q.what) < 0 ||
        (strcmp(q.what, "case") != 0 && strcmp(q.what, "cases") != 0 && strcmp(q.what, "trail") != 0 &&
         strcmp(q.what, "assignments") != 0 && strcmp(q.what, "verify") != 0 &&
         strcmp(q.what, "trail_head") != 0 && strcmp(q.what, "register") != 0 &&
         strcmp(q.what, "register_due") != 0 && strcmp(q.what, "register_sample") != 0 &&
         strcmp(q.what, "silences") != 0)) {
        util_fmt(why, whysize, "`what` is required: case, cases, trail, assignments, verify, "
                 "trail_head, register, register_due, register_sample or silences");
        *field = "/what";
        return QUERY_INVALID;
    }
    if (strcmp(q.what, "verify") == 0) { /* supervisors: every chain, off the loop */
        if (agent->role != ROLE_SUPERVISOR) {
            util_fmt(why, whysize, "only supervisors verify the trail");
            return QUERY_FORBIDDEN;
        }
        (void)st;
        return QUERY_VERIFY;
    }
    if (strcmp(q.what, "cases") != 0 && strcmp(q.what, "assignments") != 0 &&
        strcmp(q.what, "trail_head") != 0 && strncmp(q.what, "register", 8) != 0 &&
        strcmp(q.what, "silences") != 0 && (query_opt_str(&q, "case", q.case_id, sizeof q.case_id) < 0 || !q.case_id[0] ||
         !util_valid_id(q.case_id, strlen(q.case_id)))) {
        util_fmt(why, whysize, "`case` is required: the case id, e.g. case-0000000001");
        *field = "/case";
        return QUERY_INVALID;
    }
    /* The rest runs in the turn's write transaction: the read is recorded in
     * the trail with it, and the answer leaves after its commit. */
    query_t *qq = xcalloc(1, sizeof *qq);
    qq->q = q;
    qq->q.id = id;
    qq->q.out = &qq->out;
    qq->q.why = qq->why;
    qq->q.whysize = sizeof qq->why;
    qq->q.field = &qq->field;
    *qp = qq;
    return QUERY_OK;
}

void query_set_ref(query_t *q, const char *ref)
{
    util_fmt(q->q.ref, sizeof q->q.ref, "%s", ref);
}

int query_run(store_txn_t *t, query_t *q)
{
    return query_txn(t, &q->q);
}

query_result_t query_end(query_t *q, store_rc_t rc, frame_out_t *out, char *why, size_t whysize,
                         const char **field)
{
    int begun = q->out.sb.data != NULL;
    *field = NULL;
    if (rc != STORE_OK) {
        if (begun)
            frame_out_end(&q->out);
        util_fmt(why, whysize, "the broker cannot read or record this now (%s); retry later",
                 store_strerror(rc));
        return QUERY_UNAVAILABLE;
    }
    if (q->q.result != QUERY_OK) {
        if (begun)
            frame_out_end(&q->out);
        util_fmt(why, whysize, "%s", q->why);
        *field = q->field;
        return q->q.result;
    }
    *out = q->out; /* the caller sends it and calls frame_out_end */
    memset(&q->out, 0, sizeof q->out);
    return QUERY_OK;
}

void query_free(query_t **pq)
{
    if (!pq || !*pq)
        return;
    if ((*pq)->out.sb.data)
        frame_out_end(&(*pq)->out);
    free(*pq);
    *pq = NULL;
}
