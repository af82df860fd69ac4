/*
 * silence.c — silences (PROTOCOL §10): the request's checks, the record and
 * its trail records, the set a batch matches against; see silence.h.
 */
#include "silence.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "frame.h"
#include "route.h"
#include "trail.h"
#include "util.h"

#define SEQ_COUNTER "silence.seq"
#define VALUE_MAX 256 /* bytes of one match value */

/* The risks of an online_risk that are a child in danger: never silenced. */
static const char *const DANGER_RISKS[] = {"self_harm", "suicide", "grooming", "sexual_content"};

static const char *const SEVERITIES[] = {"critical", "high", "normal", "low"};

/* ---- the match: the wire's map, checked and normalised ---------------------------- */

static void free_match(config_match_t *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].key);
        for (size_t j = 0; j < m[i].n_values; j++)
            free(m[i].values[j]);
        free(m[i].values);
    }
    free(m);
}

/* "body." then segments of [A-Za-z0-9_-] separated by single dots (as a workflow's). */
static int valid_body_path(const char *p, size_t n)
{
    if (n < 6 || n > 200 || memcmp(p, "body.", 5) != 0)
        return 0;
    size_t seg = 0;
    for (size_t i = 5; i < n; i++) {
        char c = p[i];
        if (c == '.') {
            if (seg == 0)
                return 0;
            seg = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '-') {
            seg++;
        } else {
            return 0;
        }
    }
    return seg > 0;
}

/* ">=3" and the like, as a workflow's match has them: 0 not a comparison, 1 one
 * (op, number set), -1 an operator without a valid number. */
static int parse_cmp(const char *s, config_match_op_t *op, double *num)
{
    static const struct {
        const char *text;
        config_match_op_t op;
    } ops[] = {
        {">=", MATCH_GE}, {"<=", MATCH_LE}, {"==", MATCH_EQ_NUM}, {"!=", MATCH_NE_NUM},
        {">", MATCH_GT}, {"<", MATCH_LT},
    };
    size_t i;
    for (i = 0; i < UTIL_ARRAY_LEN(ops); i++)
        if (!strncmp(s, ops[i].text, strlen(ops[i].text)))
            break;
    if (i == UTIL_ARRAY_LEN(ops))
        return 0;
    const char *p = s + strlen(ops[i].text);
    while (*p == ' ')
        p++;
    if (!((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.'))
        return -1;
    char *end;
    double d = strtod(p, &end);
    while (*end == ' ')
        end++;
    if (end == p || *end || !isfinite(d))
        return -1;
    *op = ops[i].op;
    *num = d;
    return 1;
}

/* A scalar of the wire as match text (route.c compares text): strings as they
 * are, integers in decimal, reals with %g, booleans true/false. 0, or -1. */
static int scalar_text(const msgpack_object *o, char *buf, size_t size)
{
    const char *s;
    size_t n;
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        frame_str(o, &s, &n);
        if (n == 0 || n >= size || memchr(s, '\0', n))
            return -1;
        memcpy(buf, s, n);
        buf[n] = '\0';
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: util_fmt(buf, size, "%" PRIu64, o->via.u64); return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: util_fmt(buf, size, "%" PRId64, o->via.i64); return 0;
    case MSGPACK_OBJECT_BOOLEAN: util_fmt(buf, size, "%s", o->via.boolean ? "true" : "false"); return 0;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64))
            return -1;
        util_fmt(buf, size, "%g", o->via.f64);
        return 0;
    default: return -1;
    }
}

/* One value of a condition (or the only one) checked for its key. */
static int value_ok(const char *key, const char *v, char *why, size_t ws)
{
    if (!strcmp(key, "severity")) {
        for (size_t i = 0; i < UTIL_ARRAY_LEN(SEVERITIES); i++)
            if (!strcmp(v, SEVERITIES[i]))
                return 0;
        util_fmt(why, ws, "match.severity: \"%s\" is not a severity; use critical, high, normal or low", v);
        return -1;
    }
    if (!strcmp(key, "type") && !util_valid_id(v, strlen(v))) {
        util_fmt(why, ws, "match.type: \"%s\" is not an event type name (e.g. absence)", v);
        return -1;
    }
    return 0;
}

/*
 * Parse a match map into conditions (*out, *n; free_match), as a workflow's
 * match: keys type, severity, body.PATH; a value, a list of values, or (body
 * fields only) a number comparison. With norm, the normalised map is packed
 * there. 0, or -1 with why.
 */
static int parse_match(const msgpack_object *o, config_match_t **out, size_t *n, msgpack_packer *norm,
                       char *why, size_t ws)
{
    *out = NULL;
    *n = 0;
    if (!o || o->type != MSGPACK_OBJECT_MAP || o->via.map.size == 0) {
        util_fmt(why, ws, "`match` is required: a map of conditions as a workflow's match "
                 "(type, severity, body.FIELD), with `type`");
        return -1;
    }
    if (o->via.map.size > SILENCE_CONDITIONS_MAX) {
        util_fmt(why, ws, "`match` has more than %d conditions", SILENCE_CONDITIONS_MAX);
        return -1;
    }
    config_match_t *m = xcalloc(o->via.map.size, sizeof *m);
    size_t k = 0;
    if (norm)
        msgpack_pack_map(norm, o->via.map.size);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *ko = &o->via.map.ptr[i].key, *vo = &o->via.map.ptr[i].val;
        const char *ks;
        size_t kn;
        char key[208];
        if (!frame_str(ko, &ks, &kn) || kn >= sizeof key ||
            !((kn == 4 && !memcmp(ks, "type", 4)) || (kn == 8 && !memcmp(ks, "severity", 8)) ||
              valid_body_path(ks, kn))) {
            util_fmt(why, ws, "keys of `match` are type, severity, and body.FIELD or "
                     "body.FIELD.SUBFIELD for body fields");
            goto bad;
        }
        memcpy(key, ks, kn);
        key[kn] = '\0';
        for (size_t j = 0; j < k; j++)
            if (!strcmp(m[j].key, key)) {
                util_fmt(why, ws, "match.%s appears twice; keep one", key);
                goto bad;
            }
        config_match_t *c = &m[k++];
        c->key = xstrdup(key);
        c->op = MATCH_EQ;
        int body = !strncmp(key, "body.", 5);
        char text[VALUE_MAX];
        if (norm)
            frame_pack_cstr(norm, key);
        if (vo->type == MSGPACK_OBJECT_ARRAY) {
            uint32_t nv = vo->via.array.size;
            if (nv == 0 || nv > SILENCE_VALUES_MAX) {
                util_fmt(why, ws, "match.%s: a list holds 1 to %d values", key, SILENCE_VALUES_MAX);
                goto bad;
            }
            c->values = xcalloc(nv, sizeof *c->values);
            if (norm)
                msgpack_pack_array(norm, nv);
            for (uint32_t j = 0; j < nv; j++) {
                config_match_op_t op;
                double d;
                if (scalar_text(&vo->via.array.ptr[j], text, sizeof text) < 0) {
                    util_fmt(why, ws, "match.%s[%u]: a value is a string (1-%d bytes), a number or "
                             "a boolean", key, j, VALUE_MAX - 1);
                    goto bad;
                }
                if (parse_cmp(text, &op, &d) != 0) {
                    util_fmt(why, ws, "match.%s[%u] \"%s\" looks like a comparison; a list holds "
                             "values matched exactly", key, j, text);
                    goto bad;
                }
                if (value_ok(key, text, why, ws) < 0)
                    goto bad;
                c->values[c->n_values++] = xstrdup(text);
                if (norm)
                    frame_pack_cstr(norm, text);
            }
            continue;
        }
        if (scalar_text(vo, text, sizeof text) < 0) {
            util_fmt(why, ws, "match.%s must be a value, a list of values, or a comparison like "
                     "\">=3\"", key);
            goto bad;
        }
        int cmp = vo->type == MSGPACK_OBJECT_STR ? parse_cmp(text, &c->op, &c->number) : 0;
        if (cmp < 0 || (cmp > 0 && !body)) {
            util_fmt(why, ws, cmp < 0 ? "match.%s \"%s\": a comparison needs a number after the "
                     "operator, like \">=3\"" : "match.%s \"%s\": number comparisons apply to body "
                     "fields only", key, text);
            goto bad;
        }
        if (cmp == 0) {
            if (value_ok(key, text, why, ws) < 0)
                goto bad;
            c->values = xcalloc(1, sizeof *c->values);
            c->values[c->n_values++] = xstrdup(text);
        }
        if (norm)
            frame_pack_cstr(norm, text);
    }
    *out = m;
    *n = k;
    return 0;
bad:
    free_match(m, k);
    return -1;
}

static const config_match_t *condition(const config_match_t *m, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(m[i].key, key))
            return &m[i];
    return NULL;
}

/* 1 when the conditions could hold for a mandatory_report, or an online_risk
 * whose risk is one of DANGER_RISKS; why says which. A missing `type` is
 * refused too (it would match every type). */
static int dangerous(const config_match_t *m, size_t n, char *why, size_t ws)
{
    const config_match_t *type = condition(m, n, "type");
    if (!type || type->op != MATCH_EQ) {
        util_fmt(why, ws, "match.type is required: the event type (or a list of types) the silence holds");
        return 1;
    }
    for (size_t i = 0; i < type->n_values; i++) {
        if (!strcmp(type->values[i], "mandatory_report")) {
            util_fmt(why, ws, "a silence may not match mandatory_report: a child in danger is never "
                     "silenced");
            return 1;
        }
        if (strcmp(type->values[i], "online_risk") != 0)
            continue;
        const config_match_t *risk = condition(m, n, "body.risk");
        if (!risk || risk->op != MATCH_EQ) {
            util_fmt(why, ws, "a silence of online_risk needs match body.risk: the risks it holds, "
                     "none of self_harm, suicide, grooming or sexual_content (without it, or with a "
                     "comparison, it could hold them): a child in danger is never silenced");
            return 1;
        }
        for (size_t j = 0; j < risk->n_values; j++)
            for (size_t d = 0; d < UTIL_ARRAY_LEN(DANGER_RISKS); d++)
                if (!strcmp(risk->values[j], DANGER_RISKS[d])) {
                    util_fmt(why, ws, "match body.risk holds %s: a child in danger is never silenced",
                             DANGER_RISKS[d]);
                    return 1;
                }
    }
    return 0;
}

int silence_match_is_dangerous(const msgpack_object *match, char *why, size_t whysize)
{
    config_match_t *m;
    size_t n;
    if (parse_match(match, &m, &n, NULL, why, whysize) < 0)
        return 1;
    int d = dangerous(m, n, why, whysize);
    free_match(m, n);
    return d;
}

/* ---- the request ---------------------------------------------------------------------- */

int silence_parse(const msgpack_object *map, const char *author, int64_t now, silence_new_t *req,
                  const char **field, char *why, size_t whysize)
{
    memset(req, 0, sizeof *req);
    msgpack_sbuffer_init(&req->match);
    util_fmt(req->author, sizeof req->author, "%s", author);
    req->created = now;
    *field = "/match";
    msgpack_packer pk;
    msgpack_packer_init(&pk, &req->match, msgpack_sbuffer_write);
    config_match_t *m;
    size_t n;
    if (parse_match(frame_map_get(map, "match"), &m, &n, &pk, why, whysize) < 0)
        goto refused;
    int d = dangerous(m, n, why, whysize);
    free_match(m, n);
    if (d)
        goto refused;
    const char *s;
    size_t sl;
    *field = "/reason";
    if (!frame_str(frame_map_get(map, "reason"), &s, &sl) || sl == 0 || sl > SILENCE_REASON_MAX ||
        memchr(s, '\0', sl) || !util_utf8_valid(s, sl)) {
        util_fmt(why, whysize, "`reason` is required: why, as text of 1-%d bytes", SILENCE_REASON_MAX);
        goto refused;
    }
    memcpy(req->reason, s, sl);
    req->reason[sl] = '\0';
    *field = "/starts";
    const msgpack_object *so = frame_map_get(map, "starts");
    req->starts = now;
    if (so && so->type != MSGPACK_OBJECT_NIL && (!frame_int(so, &req->starts) || req->starts < 0)) {
        util_fmt(why, whysize, "`starts` is a time in ms since the epoch (default: now)");
        goto refused;
    }
    *field = "/ends";
    if (!frame_int(frame_map_get(map, "ends"), &req->ends)) {
        util_fmt(why, whysize, "`ends` is required: a time in ms since the epoch, after `starts` and at "
                 "most 90 days after it");
        goto refused;
    }
    if (req->ends <= req->starts || req->ends <= now) {
        util_fmt(why, whysize, "`ends` must be after `starts` and after now");
        goto refused;
    }
    if (req->ends - req->starts > SILENCE_SPAN_MAX) {
        util_fmt(why, whysize, "`ends` is at most 90 days after `starts`");
        goto refused;
    }
    *field = NULL;
    return 0;
refused:
    silence_new_free(req);
    return -1;
}

void silence_new_free(silence_new_t *req)
{
    msgpack_sbuffer_destroy(&req->match);
    memset(&req->match, 0, sizeof req->match);
}

/* ---- the record ---------------------------------------------------------------------- */

static void pack_i(msgpack_packer *pk, const char *k, int64_t v)
{
    frame_pack_cstr(pk, k);
    msgpack_pack_int64(pk, v);
}

static int next_id(store_txn_t *t, char *out)
{
    const void *v;
    size_t vl;
    uint64_t seq = 0;
    int rc = store_get(t, STORE_DB_COUNTERS, SEQ_COUNTER, strlen(SEQ_COUNTER), &v, &vl);
    if (rc == 0 && vl == sizeof seq)
        memcpy(&seq, v, sizeof seq);
    else if (rc == 0 || rc != STORE_NOTFOUND)
        return rc ? rc : STORE_CORRUPTED;
    seq++;
    util_fmt(out, SILENCE_ID_MAX, "sil-%06" PRIu64, seq);
    return store_put(t, STORE_DB_COUNTERS, SEQ_COUNTER, strlen(SEQ_COUNTER), &seq, sizeof seq, 0);
}

int silence_create(store_txn_t *t, silence_new_t *req)
{
    int rc = next_id(t, req->id);
    if (rc)
        return rc;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    frame_pack_cstr(&pk, "id");
    frame_pack_cstr(&pk, req->id);
    frame_pack_cstr(&pk, "match");
    msgpack_sbuffer_write(&sb, req->match.data, req->match.size); /* already msgpack */
    pack_i(&pk, "starts", req->starts);
    pack_i(&pk, "ends", req->ends);
    frame_pack_cstr(&pk, "reason");
    frame_pack_cstr(&pk, req->reason);
    frame_pack_cstr(&pk, "author");
    frame_pack_cstr(&pk, req->author);
    pack_i(&pk, "created", req->created);
    rc = store_put(t, STORE_DB_SILENCES, req->id, strlen(req->id), sb.data, sb.size, 1);
    if (!rc)
        rc = trail_append(t, "", "silence_created", req->author, STORE_DB_SILENCES, req->id, sb.data,
                          sb.size, req->reason);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int silence_expire(store_txn_t *t, const char *id, const char *actor, int64_t now, int *found)
{
    const void *v;
    size_t vl;
    *found = 0;
    int rc = store_get(t, STORE_DB_SILENCES, id, strlen(id), &v, &vl);
    if (rc == STORE_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    *found = 1;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, v, vl, NULL) != MSGPACK_UNPACK_SUCCESS || u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy(&u);
        return STORE_CORRUPTED;
    }
    if (frame_map_get(&u.data, "expired")) { /* expired already: a retry */
        msgpack_unpacked_destroy(&u);
        return 0;
    }
    char reason[SILENCE_REASON_MAX + 1] = "";
    const char *s;
    size_t sl;
    if (frame_str(frame_map_get(&u.data, "reason"), &s, &sl) && sl < sizeof reason) {
        memcpy(reason, s, sl);
        reason[sl] = '\0';
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, u.data.via.map.size + 1);
    for (uint32_t i = 0; i < u.data.via.map.size; i++) {
        msgpack_pack_object(&pk, u.data.via.map.ptr[i].key);
        msgpack_pack_object(&pk, u.data.via.map.ptr[i].val);
    }
    pack_i(&pk, "expired", now);
    msgpack_unpacked_destroy(&u); /* v is not used after the put below */
    rc = store_put(t, STORE_DB_SILENCES, id, strlen(id), sb.data, sb.size, 0);
    if (!rc)
        rc = trail_append(t, "", "silence_expired", actor, STORE_DB_SILENCES, id, sb.data, sb.size,
                          reason);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* ---- matching ------------------------------------------------------------------------ */

typedef struct {
    char id[SILENCE_ID_MAX];
    int64_t starts, until;     /* until: ends, or expired when earlier */
    config_match_t *match;
    size_t n_match;
} active_t;

struct silence_set {
    active_t *list;
    size_t n, cap;
    int64_t from;
};

static int load_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    silence_set_t *s = ud;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int rc = STORE_CORRUPTED;
    int64_t starts, ends, expired = INT64_MAX;
    const char *id;
    size_t idn;
    if (msgpack_unpack_next(&u, v, vl, NULL) != MSGPACK_UNPACK_SUCCESS ||
        !frame_str(frame_map_get(&u.data, "id"), &id, &idn) || idn >= SILENCE_ID_MAX ||
        !frame_int(frame_map_get(&u.data, "starts"), &starts) ||
        !frame_int(frame_map_get(&u.data, "ends"), &ends))
        goto done;
    const msgpack_object *ex = frame_map_get(&u.data, "expired");
    if (ex && !frame_int(ex, &expired))
        goto done;
    int64_t until = expired < ends ? expired : ends;
    rc = 0;
    if (until <= s->from)
        goto done; /* over for every event of this batch */
    config_match_t *m;
    size_t n;
    char why[256];
    if (parse_match(frame_map_get(&u.data, "match"), &m, &n, NULL, why, sizeof why) < 0) {
        rc = STORE_CORRUPTED;
        goto done;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->list = xrealloc(s->list, s->cap * sizeof *s->list);
    }
    active_t *a = &s->list[s->n++];
    memcpy(a->id, id, idn);
    a->id[idn] = '\0';
    a->starts = starts;
    a->until = until;
    a->match = m;
    a->n_match = n;
done:
    msgpack_unpacked_destroy(&u);
    return rc;
}

int silence_load(store_txn_t *t, int64_t from, silence_set_t **out)
{
    silence_set_t *s = xcalloc(1, sizeof *s);
    s->from = from;
    int rc = store_each(t, STORE_DB_SILENCES, NULL, 0, 0, load_visit, s);
    if (rc) {
        silence_set_free(&s);
        return rc;
    }
    *out = s;
    return 0;
}

void silence_set_free(silence_set_t **ps)
{
    if (!ps || !*ps)
        return;
    silence_set_t *s = *ps;
    for (size_t i = 0; i < s->n; i++)
        free_match(s->list[i].match, s->list[i].n_match);
    free(s->list);
    free(s);
    *ps = NULL;
}

/* The event itself may concern a child in danger: never held, whatever a record says. */
static int event_in_danger(const char *type, const json_t *body)
{
    if (!strcmp(type, "mandatory_report"))
        return 1;
    if (strcmp(type, "online_risk") != 0)
        return 0;
    const json_t *risk = json_object_get(body, "risk");
    if (!json_is_string(risk))
        return 1;
    for (size_t d = 0; d < UTIL_ARRAY_LEN(DANGER_RISKS); d++)
        if (!strcmp(json_string_value(risk), DANGER_RISKS[d]))
            return 1;
    return 0;
}

const char *silence_find(const silence_set_t *s, const char *type, const json_t *body,
                         int64_t received)
{
    if (!s || s->n == 0 || !body || event_in_danger(type, body))
        return NULL;
    for (size_t i = 0; i < s->n; i++) {
        const active_t *a = &s->list[i];
        if (received < a->starts || received >= a->until)
            continue;
        size_t j = 0;
        while (j < a->n_match && route_condition(&a->match[j], type, body))
            j++;
        if (j == a->n_match)
            return a->id;
    }
    return NULL;
}

/* ---- the list ------------------------------------------------------------------------ */

typedef struct {
    msgpack_packer *pk;
    msgpack_sbuffer *sb;
    size_t budget;
    uint32_t n;
    int more;
    char last[SILENCE_ID_MAX];
} list_t;

static int list_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    list_t *l = ud;
    if (kl >= SILENCE_ID_MAX)
        return STORE_CORRUPTED;
    if (l->n > 0 && l->sb->size + vl > l->budget) {
        l->more = 1;
        return STORE_EACH_STOP;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int ok = msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
             u.data.type == MSGPACK_OBJECT_MAP;
    if (ok) {
        msgpack_pack_object(l->pk, u.data); /* the record is what the list shows */
        l->n++;
        memcpy(l->last, k, kl);
        l->last[kl] = '\0';
    }
    msgpack_unpacked_destroy(&u);
    return ok ? 0 : STORE_CORRUPTED;
}

int silence_pack_page(store_txn_t *t, const char *after, size_t budget, msgpack_sbuffer *sb,
                      uint32_t *n, char next[SILENCE_ID_MAX])
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    list_t l = {&pk, sb, budget, 0, 0, ""};
    /* keys sort in the order made: start at the first one after `after` */
    char from[SILENCE_ID_MAX + 1] = "";
    if (after && *after)
        util_fmt(from, sizeof from, "%s%c", after, 1); /* the key after `after` itself */
    int rc = store_each(t, STORE_DB_SILENCES, from, strlen(from), 0, list_visit, &l);
    *n = l.n;
    util_fmt(next, SILENCE_ID_MAX, "%s", l.more ? l.last : "");
    return rc;
}
