/*
 * query_register.c — the register's reads (PROTOCOL §9 and docs/protocol.md):
 * what:"register", the supervisors' figures per (village, director), no names
 * and no child ids; what:"register_due", a director's own children whose
 * contact or home visit is due soon or overdue (with names: the director's
 * own file); what:"register_sample", the yearly spot check (每年开展一次抽查),
 * each drawn entry recorded in the trail. Every read is in the trail.
 */
#include "query_int.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "register.h"
#include "clock.h"
#include "trail.h"
#include "util.h"

#define DUE_WITHIN_DEFAULT (7 * 86400000LL)
#define DUE_WITHIN_MAX (366 * 86400000LL)
#define SAMPLE_DEFAULT 10
#define SAMPLE_MAX 100

/* An optional integer of the request in [lo, hi]: *out = def when absent; -1
 * (refused invalid, at `field`: a literal, "/" + key, which outlives the call) otherwise. */
static int opt_int(q_t *q, const char *key, const char *field, int64_t def, int64_t lo, int64_t hi,
                   int64_t *out)
{
    const msgpack_object *o = frame_map_get(q->map, key);
    *out = def;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (!frame_int(o, out) || *out < lo || *out > hi) {
        char range[64];
        util_fmt(range, sizeof range, "`%s` must be an integer from %lld to %lld", key, (long long)lo,
                 (long long)hi);
        query_refuse(q, QUERY_INVALID, field, "%s", range);
        return -1;
    }
    return 0;
}

/* village and director filters. -1 when refused. */
static int opt_filters(q_t *q, char *village, char *director)
{
    if (query_opt_str(q, "village", village, REGISTER_TEXT_MAX) < 0) {
        query_refuse(q, QUERY_INVALID, "/village", "`village` must be a string (a village's name as "
                     "enrolled)%s", "");
        return -1;
    }
    if (query_opt_str(q, "director", director, CAREHUB_ID_MAX + 1) < 0) {
        query_refuse(q, QUERY_INVALID, "/director", "`director` must be a director's agent id%s", "");
        return -1;
    }
    return 0;
}

static void pack_u(msgpack_packer *pk, const char *k, uint64_t v)
{
    frame_pack_cstr(pk, k);
    msgpack_pack_uint64(pk, v);
}

static int figures(q_t *q, store_txn_t *t)
{
    char village[REGISTER_TEXT_MAX], director[CAREHUB_ID_MAX + 1];
    if (opt_filters(q, village, director) < 0)
        return 0;
    int64_t now = clock_now_ms();
    register_row_t *rows = NULL;
    size_t n = 0;
    int rc = register_figures(t, q->cfg, now, village, director, &rows, &n);
    if (!rc)
        rc = trail_append(t, "", "read", q->agent->id, -1, NULL, NULL, 0, query_ref(q));
    if (rc) {
        free(rows);
        return rc;
    }
    frame_out_message(q->out, "result", q->id, 3);
    frame_out_str(q->out, "what", "register");
    frame_out_int(q->out, "now", now);
    frame_out_key(q->out, "rows");
    msgpack_packer *pk = &q->out->pk;
    msgpack_pack_array(pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        const register_row_t *r = &rows[i];
        msgpack_pack_map(pk, 8);
        frame_pack_cstr(pk, "village");
        frame_pack_cstr(pk, r->village);
        frame_pack_cstr(pk, "director");
        frame_pack_cstr(pk, r->director);
        pack_u(pk, "children", r->children);
        pack_u(pk, "contacted", r->contacted);
        pack_u(pk, "visited", r->visited);
        pack_u(pk, "contact_overdue", r->contact_overdue);
        pack_u(pk, "visit_overdue", r->visit_overdue);
        pack_u(pk, "elevated", r->elevated);
    }
    free(rows);
    return 0;
}

static int due_list(q_t *q, store_txn_t *t)
{
    int64_t within;
    if (opt_int(q, "within", "/within", DUE_WITHIN_DEFAULT, 0, DUE_WITHIN_MAX, &within) < 0)
        return 0;
    int64_t now = clock_now_ms();
    register_due_t *rows = NULL;
    size_t n = 0;
    int rc = register_due_list(t, q->cfg, q->agent->id, now, within, &rows, &n);
    if (!rc)
        rc = trail_append(t, "", "read", q->agent->id, -1, NULL, NULL, 0, query_ref(q));
    if (rc) {
        free(rows);
        return rc;
    }
    /* the answer holds names: at most as many rows as fit one message */
    size_t budget = q->cfg->max_message_bytes > 256 ? q->cfg->max_message_bytes - 256 : 0, used = 0;
    size_t keep = 0;
    for (; keep < n; keep++) {
        size_t one = 120 + strlen(rows[keep].child) + strlen(rows[keep].name) +
                     strlen(rows[keep].village);
        if (used + one > budget)
            break;
        used += one;
    }
    frame_out_message(q->out, "result", q->id, 4);
    frame_out_str(q->out, "what", "register_due");
    frame_out_int(q->out, "now", now);
    frame_out_int(q->out, "total", (int64_t)n);
    frame_out_key(q->out, "rows");
    msgpack_packer *pk = &q->out->pk;
    msgpack_pack_array(pk, (uint32_t)keep);
    for (size_t i = 0; i < keep; i++) {
        const register_due_t *r = &rows[i];
        msgpack_pack_map(pk, r->last ? 7 : 6);
        frame_pack_cstr(pk, "child");
        frame_pack_cstr(pk, r->child);
        frame_pack_cstr(pk, "name");
        frame_pack_cstr(pk, r->name);
        frame_pack_cstr(pk, "village");
        frame_pack_cstr(pk, r->village);
        frame_pack_cstr(pk, "kind");
        frame_pack_cstr(pk, register_kind_name(r->kind));
        frame_pack_cstr(pk, "due");
        msgpack_pack_int64(pk, r->due);
        if (r->last) {
            frame_pack_cstr(pk, "last");
            msgpack_pack_int64(pk, r->last);
        }
        frame_pack_cstr(pk, "overdue");
        if (r->due <= now)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    }
    if (rows)
        sodium_memzero(rows, n * sizeof *rows);
    free(rows);
    return 0;
}

static void pack_time(msgpack_packer *pk, const char *k, int64_t v)
{
    frame_pack_cstr(pk, k);
    msgpack_pack_int64(pk, v);
}

static int sample(q_t *q, store_txn_t *t)
{
    char village[REGISTER_TEXT_MAX], director[CAREHUB_ID_MAX + 1], seed[129];
    int64_t n;
    if (opt_filters(q, village, director) < 0 ||
        opt_int(q, "n", "/n", SAMPLE_DEFAULT, 1, SAMPLE_MAX, &n) < 0)
        return 0;
    if (query_opt_str(q, "seed", seed, sizeof seed) < 0) {
        query_refuse(q, QUERY_INVALID, "/seed", "`seed` must be a string of at most 128 bytes (the "
                     "same seed draws the same sample)%s", "");
        return 0;
    }
    int64_t now = clock_now_ms();
    if (!seed[0]) { /* the year, as `carehub sample` draws cases */
        time_t secs = (time_t)(now / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        util_fmt(seed, sizeof seed, "%d", tm.tm_year + 1900);
    }
    register_sample_t *rows = NULL;
    size_t count = 0, population = 0;
    int rc = register_sample(t, seed, (size_t)n, village, director, &rows, &count, &population);
    if (!rc) /* the draw itself, even of none */
        rc = trail_append(t, "", "read", q->agent->id, -1, NULL, NULL, 0, query_ref(q));
    for (size_t i = 0; !rc && i < count; i++) /* each drawn file is read: on its enrolment case */
        rc = trail_append(t, rows[i].enrol_case, "register_read", q->agent->id, -1, NULL, NULL, 0,
                          rows[i].entry);
    if (rc) {
        free(rows);
        return rc;
    }
    frame_out_message(q->out, "result", q->id, 5);
    frame_out_str(q->out, "what", "register_sample");
    frame_out_int(q->out, "now", now);
    frame_out_str(q->out, "seed", seed);
    frame_out_int(q->out, "population", (int64_t)population);
    frame_out_key(q->out, "rows");
    msgpack_packer *pk = &q->out->pk;
    msgpack_pack_array(pk, (uint32_t)count);
    for (size_t i = 0; i < count; i++) {
        const register_sample_t *r = &rows[i];
        uint32_t fields = 8 + !!r->contact + !!r->visit + !!r->c_due + !!r->v_due;
        msgpack_pack_map(pk, fields);
        frame_pack_cstr(pk, "entry");
        frame_pack_cstr(pk, r->entry);
        frame_pack_cstr(pk, "village");
        frame_pack_cstr(pk, r->village);
        frame_pack_cstr(pk, "director");
        frame_pack_cstr(pk, r->director);
        frame_pack_cstr(pk, "risk");
        frame_pack_cstr(pk, r->risk);
        frame_pack_cstr(pk, "category");
        {
            /* space-separated in the row: a list on the wire */
            char cats[sizeof r->category];
            util_fmt(cats, sizeof cats, "%s", r->category);
            uint32_t nc = 0;
            for (char *p = cats; *p; p++)
                nc += (p == cats || p[-1] == ' ') && *p != ' ';
            msgpack_pack_array(pk, nc);
            for (char *save = NULL, *tok = strtok_r(cats, " ", &save); tok;
                 tok = strtok_r(NULL, " ", &save))
                frame_pack_cstr(pk, tok);
        }
        frame_pack_cstr(pk, "active");
        if (r->active)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        pack_time(pk, "enrolled", r->enrolled);
        if (r->contact)
            pack_time(pk, "last_contact", r->contact);
        if (r->visit)
            pack_time(pk, "last_visit", r->visit);
        if (r->c_due)
            pack_time(pk, "contact_due", r->c_due);
        if (r->v_due)
            pack_time(pk, "visit_due", r->v_due);
        frame_pack_cstr(pk, "cases");
        msgpack_pack_array(pk, (uint32_t)(!!r->enrol_case[0] + !!r->visit_case[0]));
        if (r->enrol_case[0])
            frame_pack_cstr(pk, r->enrol_case);
        if (r->visit_case[0])
            frame_pack_cstr(pk, r->visit_case);
    }
    free(rows);
    return 0;
}

int query_register(q_t *q, store_txn_t *t)
{
    static const struct {
        const char *what;
        config_role_t role;
        const char *who;
        int (*fn)(q_t *q, store_txn_t *t);
    } WHATS[] = {
        {"register", ROLE_SUPERVISOR, "supervisors read the register's figures", figures},
        {"register_due", ROLE_DIRECTOR, "a director reads the due list of its own children", due_list},
        {"register_sample", ROLE_SUPERVISOR, "supervisors draw the register's spot check", sample},
    };
    for (size_t i = 0; i < UTIL_ARRAY_LEN(WHATS); i++) {
        if (strcmp(q->what, WHATS[i].what) != 0)
            continue;
        if (q->agent->role != WHATS[i].role) {
            query_refuse(q, QUERY_FORBIDDEN, NULL, "only %s", WHATS[i].who);
            return query_record_refusal(q, t, "");
        }
        return WHATS[i].fn(q, t);
    }
    query_refuse(q, QUERY_INVALID, "/what", "unknown register read %s", q->what);
    return 0;
}
