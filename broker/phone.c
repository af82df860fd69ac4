/*
 * phone.c — acknowledging from a phone (PROTOCOL §11); see phone.h.
 *
 * Records, in the named database `phone` (docs/data-model.md), by key prefix:
 *   'T' BLAKE2b-256(token)            → {a, c, g, to, exp, ack_by, used}: a link
 *   'A' assignment NUL number         → the 6 digits: that recipient's code
 *   'C' number NUL code               → {a, c}: whose code it is (live while a is open)
 *
 * Each HTTP request has a req_t (MHD's *con_cls). A request that writes (a link's
 * POST, an inbound reply) is suspended, queued as a turn op, and resumed by the
 * op's `done` with its answer; MHD then calls the handler again, which queues it.
 */
#include "phone.h"

#include <jansson.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assign.h"
#include "clock.h"
#include "frame.h"
#include "hmap.h"
#include "hook.h"
#include "httpd.h"
#include "log.h"
#include "trail.h"
#include "util.h"
#include "web.h"

#define TOKEN_CHARS 44            /* base64url of 32 bytes, no padding: 43 + NUL */
#define HASH_LEN 32
#define NUMBER_MAX 65             /* a recipient: at most 64 bytes (config) */
#define WRONG_WINDOW_MS (3600LL * 1000)
#define ID_MAX 64

/* Where links point: broker.http.public_url, or http://HOST:PORT as bound. Set by
 * phone_new() before the loop runs (and so before any turn), read-only after. */
static char base_url[512];

struct phone {
    const config_t *cfg;
    store_t *st;
    turn_t *turn;
    httpd_t *http;
    web_t *web;                   /* the supervisors' web view (web.h): its paths go there */
    hmap_t wrong;                 /* number → index+1 into wrong_v */
    struct wrong {
        char number[NUMBER_MAX];
        int64_t since;            /* start of the hour counted */
        int count;
    } *wrong_v;
    size_t n_wrong;
    size_t waiting;               /* requests suspended for a turn */
};

/* ---- the records ----------------------------------------------------------- */

typedef struct {
    char a[ID_MAX], c[ID_MAX], g[ID_MAX], to[NUMBER_MAX];
    int64_t exp, ack_by, used;
} link_t;

static void copy_obj(char *out, size_t size, const msgpack_object *o)
{
    const char *s;
    size_t n;
    out[0] = '\0';
    if (o && frame_str(o, &s, &n) && n < size) {
        memcpy(out, s, n);
        out[n] = '\0';
    }
}

/* An integer member of a record, 0 when absent. */
static int64_t int_obj(const msgpack_object *o)
{
    int64_t v = 0;
    return o && frame_int(o, &v) ? v : 0;
}

static int link_get(store_txn_t *t, const unsigned char *hash, link_t *l)
{
    unsigned char key[1 + HASH_LEN];
    key[0] = 'T';
    memcpy(key + 1, hash, HASH_LEN);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_PHONE, key, sizeof key, &v, &vl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    rc = STORE_CORRUPTED;
    if (msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        copy_obj(l->a, sizeof l->a, frame_map_get(&u.data, "a"));
        copy_obj(l->c, sizeof l->c, frame_map_get(&u.data, "c"));
        copy_obj(l->g, sizeof l->g, frame_map_get(&u.data, "g"));
        copy_obj(l->to, sizeof l->to, frame_map_get(&u.data, "to"));
        l->exp = int_obj(frame_map_get(&u.data, "exp"));
        l->ack_by = int_obj(frame_map_get(&u.data, "ack_by"));
        l->used = int_obj(frame_map_get(&u.data, "used"));
        rc = l->a[0] && l->to[0] ? 0 : STORE_CORRUPTED;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int link_put(store_txn_t *t, const unsigned char *hash, const link_t *l, int only_new)
{
    unsigned char key[1 + HASH_LEN];
    key[0] = 'T';
    memcpy(key + 1, hash, HASH_LEN);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    frame_pack_cstr(&pk, "a");      frame_pack_cstr(&pk, l->a);
    frame_pack_cstr(&pk, "c");      frame_pack_cstr(&pk, l->c);
    frame_pack_cstr(&pk, "g");      frame_pack_cstr(&pk, l->g);
    frame_pack_cstr(&pk, "to");     frame_pack_cstr(&pk, l->to);
    frame_pack_cstr(&pk, "exp");    msgpack_pack_int64(&pk, l->exp);
    frame_pack_cstr(&pk, "ack_by"); msgpack_pack_int64(&pk, l->ack_by);
    frame_pack_cstr(&pk, "used");   msgpack_pack_int64(&pk, l->used);
    int rc = store_put(t, STORE_DB_PHONE, key, sizeof key, sb.data, sb.size, only_new);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static void token_hash(const char *token, size_t len, unsigned char *hash)
{
    crypto_generichash(hash, HASH_LEN, (const unsigned char *)token, len, NULL, 0);
}

/* 1 when the assignment exists and is still open (not acknowledged), 0 when not,
 * or a store_rc_t (< 0). */
static int is_open(store_txn_t *t, const char *assignment, char *agency)
{
    assign_state_t st;
    char ag[ID_MAX];
    int rc = assign_agency_state(t, assignment, agency ? agency : ag, &st);
    if (rc == STORE_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    return st == AS_OPEN;
}

/* A code record's value, "assignment NUL case", into a and c (ID_MAX each): 0, or -1
 * when it does not fit (a damaged record: treated as no owner). */
static int code_owner(const void *v, size_t vl, char *a, char *c)
{
    size_t an = strnlen(v, vl);
    size_t cn = an < vl ? vl - an - 1 : 0;
    if (an >= ID_MAX || cn >= ID_MAX)
        return -1;
    memcpy(a, v, an);
    a[an] = '\0';
    memcpy(c, (const char *)v + an + (an < vl), cn);
    c[cn] = '\0';
    return 0;
}

/* The code key 'C' number NUL code into buf; its length. */
static size_t code_key(char *buf, size_t size, const char *number, const char *code)
{
    int n = snprintf(buf, size, "C%s%c%s", number, '\0', code);
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

/* The recipient's code for the assignment: the one it has, or a new one unique
 * among the number's live codes. */
static int code_for(store_txn_t *t, const char *assignment, const char *case_id, const char *to,
                    char code[7])
{
    char akey[1 + ID_MAX + NUMBER_MAX + 1];
    int al = snprintf(akey, sizeof akey, "A%s%c%s", assignment, '\0', to);
    if (al <= 0 || (size_t)al >= sizeof akey)
        return STORE_BADVALUE;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_PHONE, akey, (size_t)al, &v, &vl);
    if (rc == 0 && vl == 6) {
        memcpy(code, v, 6);
        code[6] = '\0';
        return 0;
    }
    if (rc && rc != STORE_NOTFOUND)
        return rc;
    char ckey[2 + NUMBER_MAX + 8];
    for (int tries = 0; tries < 64; tries++) {
        util_fmt(code, 7, "%06u", (unsigned)randombytes_uniform(1000000));
        size_t cl = code_key(ckey, sizeof ckey, to, code);
        if (!cl)
            return STORE_BADVALUE;
        rc = store_get(t, STORE_DB_PHONE, ckey, cl, &v, &vl);
        if (rc && rc != STORE_NOTFOUND)
            return rc;
        char other[ID_MAX], other_case[ID_MAX];
        if (rc == 0 && code_owner(v, vl, other, other_case) == 0) {
            /* taken: by a live assignment, or free to reuse */
            int live = is_open(t, other, NULL);
            if (live < 0)
                return live;
            if (live)
                continue;
        }
        /* value: assignment NUL case */
        char val[2 * ID_MAX + 2];
        int vn = snprintf(val, sizeof val, "%s%c%s", assignment, '\0', case_id);
        if (vn <= 0 || (size_t)vn >= sizeof val)
            return STORE_BADVALUE;
        if ((rc = store_put(t, STORE_DB_PHONE, ckey, cl, val, (size_t)vn, 0)) ||
            (rc = store_put(t, STORE_DB_PHONE, akey, (size_t)al, code, 6, 0)))
            return rc;
        return 0;
    }
    /* a million codes, 64 tries: only a number with most codes live gets here */
    log_warn("phone: no free reply code for a recipient of assignment %s; the text carries the link only",
             assignment);
    code[0] = '\0';
    return 0;
}

int phone_issue(store_txn_t *t, const char *assignment, const char *case_id,
                const char *agency, int64_t ack_by, const char *to, int64_t now, char *suffix,
                size_t size)
{
    char code[7];
    int rc = code_for(t, assignment, case_id, to, code);
    if (rc)
        return rc;
    unsigned char rnd[PHONE_TOKEN_BYTES], hash[HASH_LEN];
    char token[TOKEN_CHARS];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2base64(token, sizeof token, rnd, sizeof rnd, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(rnd, sizeof rnd);
    token_hash(token, strlen(token), hash);
    link_t l = {.exp = now + PHONE_LINK_TTL_MS, .ack_by = ack_by};
    util_fmt(l.a, sizeof l.a, "%s", assignment);
    util_fmt(l.c, sizeof l.c, "%s", case_id);
    util_fmt(l.g, sizeof l.g, "%s", agency ? agency : "");
    util_fmt(l.to, sizeof l.to, "%s", to);
    if ((rc = link_put(t, hash, &l, 1)))
        return rc;
    if (code[0])
        util_fmt(suffix, size, " 回复 %s 确认，或打开 %s/a/%s", code, base_url, token);
    else
        util_fmt(suffix, size, " 确认请打开 %s/a/%s", base_url, token);
    sodium_memzero(token, sizeof token);
    return 0;
}

/* ---- inbound bodies ---------------------------------------------------------- */

int phone_parse_inbound(const char *body, size_t len, char *from, size_t fromsize,
                        char codes[][7], size_t *ncodes)
{
    *ncodes = 0;
    json_error_t e;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    const char *f = j ? json_string_value(json_object_get(j, "from")) : NULL;
    json_t *jt = j ? json_object_get(j, "text") : NULL;
    const char *text = json_string_value(jt);
    size_t flen = f ? strlen(f) : 0;
    if (!f || !text || flen == 0 || flen >= fromsize ||
        flen != json_string_length(json_object_get(j, "from"))) { /* no NUL inside */
        json_decref(j);
        return -1;
    }
    memcpy(from, f, flen + 1);
    size_t tl = json_string_length(jt);
    for (size_t i = 0; i < tl && *ncodes < PHONE_CODES_MAX;) {
        if (text[i] < '0' || text[i] > '9') {
            i++;
            continue;
        }
        size_t k = i;
        while (k < tl && text[k] >= '0' && text[k] <= '9')
            k++;
        if (k - i == 6) {
            memcpy(codes[*ncodes], text + i, 6);
            codes[(*ncodes)++][6] = '\0';
        }
        i = k;
    }
    json_decref(j);
    return 0;
}

/* ---- acknowledging: the turn ops ----------------------------------------------- */

typedef enum {
    PR_NONE = 0,
    PR_OK,          /* acknowledged now */
    PR_UNKNOWN,     /* no such link / no live code of this number */
    PR_USED,        /* the link was used */
    PR_EXPIRED,     /* the link is older than 24 h */
    PR_DONE,        /* the assignment is acknowledged already */
    PR_LIMITED,     /* too many wrong codes from this number this hour */
    PR_NOCODE,      /* a reply without a code */
    PR_STORE,       /* the store failed: nothing written */
} result_t;

typedef enum { REQ_NEW = 0, REQ_BODY, REQ_WAITING, REQ_ANSWER } req_state_t;

typedef struct req {
    phone_t *p;
    struct MHD_Connection *conn;
    req_state_t state;
    int kind;                     /* 'L' link POST, 'R' inbound reply, 'W' the web view's */
    void *web;                    /* W: web.h's request state */
    char *body;
    size_t len;
    int too_big;
    /* the op */
    unsigned char hash[HASH_LEN]; /* L */
    char from[NUMBER_MAX];        /* R */
    char codes[PHONE_CODES_MAX][7];
    size_t ncodes;
    int limited;
    int64_t now;
    result_t result;
    char case_id[ID_MAX], assignment[ID_MAX], by[NUMBER_MAX + 4];
    /* the answer, once resumed */
    unsigned status;
    char *answer;
    const char *type;
} req_t;

/* Acknowledge the open assignment a for number `to`; trail phone_ack. */
static int ack_now(const config_t *cfg, store_txn_t *t, req_t *r, const char *a, const char *case_id,
                   const char *to, assign_effects_t *fx)
{
    char agency[ID_MAX];
    assign_state_t st;
    int rc = assign_agency_state(t, a, agency, &st);
    if (rc)
        return rc;
    util_fmt(r->by, sizeof r->by, "sms:%s", to);
    assign_request_t q = {.agency = agency, .assignment = a, .by = r->by, .now = r->now};
    if ((rc = assign_request(cfg, t, &q, fx)))
        return rc;
    if (q.result != ASSIGN_OK)
        return STORE_ABORTED;
    util_fmt(r->assignment, sizeof r->assignment, "%s", a);
    util_fmt(r->case_id, sizeof r->case_id, "%s", case_id);
    r->result = PR_OK;
    return trail_append(t, case_id, "phone_ack", r->by, -1, NULL, NULL, 0, a);
}

static int refuse(store_txn_t *t, req_t *r, const char *case_id, const char *actor, result_t why,
                  const char *ref)
{
    r->result = why;
    return trail_append(t, case_id, "phone_refused", actor, -1, NULL, NULL, 0, ref);
}

static int link_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    req_t *r = ud;
    const config_t *cfg = r->p->cfg;
    r->result = PR_NONE;
    link_t l;
    int rc = link_get(t, r->hash, &l);
    if (rc == STORE_NOTFOUND)
        return refuse(t, r, NULL, "link", PR_UNKNOWN, "unknown link");
    if (rc)
        return rc;
    char actor[NUMBER_MAX + 4];
    util_fmt(actor, sizeof actor, "sms:%s", l.to);
    if (l.used)
        return refuse(t, r, l.c, actor, PR_USED, l.a);
    if (l.exp <= r->now)
        return refuse(t, r, l.c, actor, PR_EXPIRED, l.a);
    int open_ = is_open(t, l.a, NULL);
    if (open_ < 0)
        return open_;
    l.used = r->now;
    if ((rc = link_put(t, r->hash, &l, 0)))
        return rc;
    if (!open_)
        return refuse(t, r, l.c, actor, PR_DONE, l.a);
    return ack_now(cfg, t, r, l.a, l.c, l.to, fx);
}

static int reply_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    req_t *r = ud;
    r->result = PR_NONE;
    char actor[NUMBER_MAX + 4];
    util_fmt(actor, sizeof actor, "sms:%s", r->from);
    if (r->limited)
        return refuse(t, r, NULL, actor, PR_LIMITED, "too many wrong codes this hour");
    if (!r->ncodes)
        return refuse(t, r, NULL, actor, PR_NOCODE, "a reply without a code");
    char ckey[2 + NUMBER_MAX + 8];
    char seen_case[ID_MAX] = "", seen_a[ID_MAX] = "";
    for (size_t i = 0; i < r->ncodes; i++) {
        size_t cl = code_key(ckey, sizeof ckey, r->from, r->codes[i]);
        const void *v;
        size_t vl;
        int rc = cl ? store_get(t, STORE_DB_PHONE, ckey, cl, &v, &vl) : STORE_NOTFOUND;
        if (rc == STORE_NOTFOUND)
            continue;
        if (rc)
            return rc;
        char a[ID_MAX], c[ID_MAX];
        if (code_owner(v, vl, a, c) < 0)
            continue;
        int open_ = is_open(t, a, NULL);
        if (open_ < 0)
            return open_;
        if (open_)
            return ack_now(r->p->cfg, t, r, a, c, r->from, fx);
        memcpy(seen_case, c, sizeof c);
        memcpy(seen_a, a, sizeof a);
    }
    if (seen_a[0]) /* the code is this number's, but no longer live */
        return refuse(t, r, seen_case, actor, PR_DONE, seen_a);
    return refuse(t, r, NULL, actor, PR_UNKNOWN, "no live code of this number");
}

/* ---- the pages ------------------------------------------------------------------ */

static const char *const HTML_HEADERS[] = {
    "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options", "nosniff", "Referrer-Policy", "no-referrer", NULL};

/* A page: title, then body_fn's HTML. Returns a malloc'd string and its length. */
static char *page(const char *title, const char *msg, const link_t *l, const config_t *cfg,
                  const char *form_action, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return NULL;
    fputs("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>", f);
    web_esc(f, title);
    fputs("</title><style>body{font-family:sans-serif;margin:1.5em;max-width:36em}"
          "button{font-size:1.2em;padding:.5em 1.5em}</style></head><body><h1>", f);
    web_esc(f, title);
    fputs("</h1>", f);
    if (msg) {
        fputs("<p>", f);
        web_esc(f, msg);
        fputs("</p>", f);
    }
    if (l) {
        char when[64];
        config_local_time(cfg, l->ack_by, when, sizeof when);
        const config_agency_t *ag = config_find_agency(cfg, l->g);
        fputs("<dl><dt>案件</dt><dd>", f);
        web_esc(f, l->c);
        fputs("</dd><dt>单位</dt><dd>", f);
        web_esc(f, ag && ag->name ? ag->name : l->g);
        fputs("</dd><dt>受理时限</dt><dd>", f);
        web_esc(f, l->ack_by > 0 ? when : "-");
        fputs("</dd></dl>", f);
    }
    if (form_action) {
        fputs("<form method=\"post\" action=\"", f);
        web_esc(f, form_action);
        fputs("\"><button type=\"submit\">确认受理</button></form>", f);
    }
    fputs("</body></html>\n", f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static enum MHD_Result answer_page(struct MHD_Connection *c, unsigned status, char *html, size_t len)
{
    if (!html)
        return MHD_NO;
    return httpd_answer(c, status, "text/html; charset=utf-8", html, len, HTML_HEADERS);
}

/* GET /a/<token>: read only, answered at once. */
typedef struct {
    unsigned char hash[HASH_LEN];
    link_t l;
    int open_;
} link_read_t;

static int link_read_fn(store_txn_t *t, void *ud)
{
    link_read_t *rd = ud;
    int rc = link_get(t, rd->hash, &rd->l);
    if (rc)
        return rc;
    rd->open_ = is_open(t, rd->l.a, NULL);
    return rd->open_ < 0 ? rd->open_ : 0;
}

static enum MHD_Result link_page(phone_t *p, struct MHD_Connection *c, const char *token,
                                 const char *url)
{
    link_read_t rd;
    memset(&rd, 0, sizeof rd);
    token_hash(token, strlen(token), rd.hash);
    store_rc_t rc = store_read(p->st, link_read_fn, &rd);
    size_t len = 0;
    char *html;
    if (rc == STORE_NOTFOUND || (rc == STORE_OK && (rd.l.used || rd.l.exp <= clock_now_ms())))
        return answer_page(c, MHD_HTTP_NOT_FOUND,
                           page("链接无效", "此链接不存在、已使用或已过期（24 小时）。", NULL, p->cfg,
                                NULL, &len), len);
    if (rc != STORE_OK)
        return httpd_answer_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                                 "the hub cannot read this right now; retry in a minute\n", NULL);
    if (!rd.open_) {
        html = page("已受理", "此任务已被受理，无需再次确认。", &rd.l, p->cfg, NULL, &len);
        return answer_page(c, MHD_HTTP_OK, html, len);
    }
    html = page("确认受理", "确认后，本单位即受理此案件（记入审计日志）。", &rd.l, p->cfg, url, &len);
    return answer_page(c, MHD_HTTP_OK, html, len);
}

/* ---- verifying the gateway's signature (Standard Webhooks, as §7 signs) ---------- */

/* 1 when one of the `webhook-signature` entries is v1,HMAC(secret of a
 * can_acknowledge channel, id.ts.body) and ts is within the tolerance of now. */
static int signed_ok(const config_t *cfg, struct MHD_Connection *c, const char *body, size_t len,
                     int64_t now_ms)
{
    const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-id");
    const char *ts = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-timestamp");
    const char *sigs = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "webhook-signature");
    if (!id || !ts || !sigs || !*id || strlen(id) > 256)
        return 0;
    char *end;
    long long t = strtoll(ts, &end, 10);
    if (end == ts || *end || t <= 0)
        return 0;
    long long skew = t - now_ms / 1000;
    if (skew > PHONE_SIG_TOLERANCE_S || skew < -PHONE_SIG_TOLERANCE_S)
        return 0;
    for (size_t i = 0; i < cfg->n_channels; i++) {
        const config_channel_t *ch = &cfg->channels[i];
        if (!ch->can_acknowledge)
            continue;
        char want[64];
        if (hook_sign(ch->secret, id, t, body, len, want, sizeof want) != 0)
            continue;
        size_t wl = strlen(want);
        for (const char *s = sigs; *s;) { /* space-separated "v1,<base64>" entries */
            while (*s == ' ')
                s++;
            size_t n = strcspn(s, " ");
            if (n == wl && sodium_memcmp(s, want, wl) == 0)
                return 1;
            s += n;
        }
    }
    return 0;
}

/* ---- wrong codes per number ----------------------------------------------------- */

static int wrong_eq(void *ctx, uintptr_t val, const void *key, size_t len)
{
    const phone_t *p = ctx;
    const char *n = p->wrong_v[val - 1].number;
    return strlen(n) == len && memcmp(n, key, len) == 0;
}

static struct wrong *wrong_of(phone_t *p, const char *number, int64_t now, int create)
{
    uintptr_t at = hmap_get(&p->wrong, number, strlen(number));
    struct wrong *w = at ? &p->wrong_v[at - 1] : NULL;
    if (!w && create) {
        p->wrong_v = xrealloc(p->wrong_v, (p->n_wrong + 1) * sizeof *p->wrong_v);
        w = &p->wrong_v[p->n_wrong++];
        memset(w, 0, sizeof *w);
        util_fmt(w->number, sizeof w->number, "%s", number);
        w->since = now;
        hmap_put(&p->wrong, w->number, strlen(w->number), p->n_wrong);
    }
    if (w && now - w->since >= WRONG_WINDOW_MS) { /* a new hour */
        w->since = now;
        w->count = 0;
    }
    return w;
}

/* ---- requests ---------------------------------------------------------------------- */

static const char *result_text(result_t r)
{
    switch (r) {
    case PR_OK: return "已确认受理，谢谢。";
    case PR_UNKNOWN: return "此链接或回复码无效。";
    case PR_USED: return "此链接已使用。";
    case PR_EXPIRED: return "此链接已过期（24 小时）。";
    case PR_DONE: return "此任务已被受理，无需再次确认。";
    case PR_LIMITED: return "错误次数过多，请一小时后再试。";
    case PR_NOCODE: return "回复中没有 6 位回复码。";
    case PR_STORE: return "系统暂时无法记录，请稍后再试。";
    case PR_NONE: break;
    }
    return "";
}

static void op_done(void *ud, store_rc_t rc)
{
    req_t *r = ud;
    phone_t *p = r->p;
    if (rc != STORE_OK)
        r->result = PR_STORE;
    if (r->kind == 'R' && (r->result == PR_UNKNOWN || r->result == PR_NOCODE) && r->from[0]) {
        struct wrong *w = wrong_of(p, r->from, r->now, 1);
        w->count++;
    }
    if (r->result == PR_OK)
        log_info("phone: assignment %s (case %s) acknowledged by %s", r->assignment, r->case_id,
                 r->kind == 'R' ? "an SMS reply" : "a link");
    if (r->kind == 'L') {
        size_t len = 0;
        unsigned status = r->result == PR_OK || r->result == PR_DONE ? MHD_HTTP_OK
                          : r->result == PR_STORE                  ? MHD_HTTP_SERVICE_UNAVAILABLE
                                                                  : MHD_HTTP_NOT_FOUND;
        r->answer = page(r->result == PR_OK ? "已确认" : "未确认", result_text(r->result), NULL,
                         p->cfg, NULL, &len);
        r->len = len;
        r->status = status;
        r->type = "text/html; charset=utf-8";
    } else {
        json_t *j = json_pack("{s:b, s:s}", "acknowledged", r->result == PR_OK, "result",
                              result_text(r->result));
        r->answer = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        r->len = r->answer ? strlen(r->answer) : 0;
        /* a refused reply is still 200: gateways retry anything else (§11) */
        r->status = r->result == PR_STORE ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK;
        r->type = "application/json";
    }
    r->state = REQ_ANSWER;
    p->waiting--;
    MHD_resume_connection(r->conn);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    req_t *r = *con_cls;
    if (!r)
        return;
    web_request_free(&r->web);
    free(r->body);
    free(r->answer);
    free(r);
    *con_cls = NULL;
}

/* The token of /a/<token>, or NULL. */
static const char *link_token(const char *url)
{
    if (strncmp(url, "/a/", 3) != 0)
        return NULL;
    const char *tok = url + 3;
    size_t n = strlen(tok);
    if (n == 0 || n >= TOKEN_CHARS + 8)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!((tok[i] >= 'A' && tok[i] <= 'Z') || (tok[i] >= 'a' && tok[i] <= 'z') ||
              (tok[i] >= '0' && tok[i] <= '9') || tok[i] == '-' || tok[i] == '_'))
            return NULL;
    return tok;
}

static enum MHD_Result start_op(phone_t *p, req_t *r, struct MHD_Connection *c, turn_fn fn)
{
    r->conn = c;
    r->now = clock_now_ms();
    r->state = REQ_WAITING;
    p->waiting++;
    MHD_suspend_connection(c);
    turn_add(p->turn, fn, op_done, r); /* done: resumed with the answer after the commit */
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    phone_t *p = cls;
    (void)version;
    req_t *r = *con_cls;
    int is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    const char *token = link_token(url);
    int inbound = strcmp(url, "/sms/inbound") == 0;

    if ((r && r->kind == 'W') || (!r && web_owns(url))) { /* the supervisors' web view */
        if (!r) {
            r = xcalloc(1, sizeof *r);
            r->p = p;
            r->kind = 'W';
            *con_cls = r;
        }
        return web_request(p->web, c, url, method, upload, upload_size, &r->web);
    }
    if (!r) { /* the head: decide at once what needs no body */
        if (inbound && !is_post)
            return httpd_answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: POST\n", "POST");
        if (token && !is_post && !is_get)
            return httpd_answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n", "GET, POST");
        if (token && is_get)
            return link_page(p, c, token, url);
        if (!token && !inbound)
            return httpd_answer_text(c, MHD_HTTP_NOT_FOUND, "not found\n", NULL);
        r = xcalloc(1, sizeof *r);
        r->p = p;
        r->kind = token ? 'L' : 'R';
        r->state = REQ_BODY;
        *con_cls = r;
        return MHD_YES;
    }
    if (r->state == REQ_BODY && *upload_size) { /* a piece of the body */
        httpd_body_append(&r->body, &r->len, &r->too_big, PHONE_INBOUND_MAX, upload, upload_size);
        return MHD_YES;
    }
    if (r->state == REQ_ANSWER) { /* resumed: the op is done */
        char *a = r->answer;
        r->answer = NULL;
        if (!a)
            return MHD_NO;
        return httpd_answer(c, r->status, r->type, a, r->len, r->kind == 'L' ? HTML_HEADERS : NULL);
    }
    if (r->state != REQ_BODY)
        return MHD_YES; /* waiting: not called while suspended */

    /* the whole body is here */
    if (r->too_big)
        return httpd_answer_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "request body over 64 KiB\n", NULL);
    if (r->kind == 'L') {
        token_hash(token, strlen(token), r->hash);
        return start_op(p, r, c, link_fn);
    }
    int64_t now = clock_now_ms();
    if (!signed_ok(p->cfg, c, r->body ? r->body : "", r->len, now))
        return httpd_answer_text(c, MHD_HTTP_UNAUTHORIZED,
                                 "unsigned or badly signed: sign as PROTOCOL §7 with the channel's "
                                 "secret (webhook-id, webhook-timestamp, webhook-signature)\n",
                                 NULL);
    if (phone_parse_inbound(r->body ? r->body : "", r->len, r->from, sizeof r->from, r->codes,
                            &r->ncodes) < 0)
        return httpd_answer_text(c, MHD_HTTP_OK, "ignored: expected {\"from\": ..., \"text\": ...}\n",
                                 NULL);
    struct wrong *w = wrong_of(p, r->from, now, 0);
    r->limited = w && w->count >= PHONE_WRONG_MAX;
    return start_op(p, r, c, reply_fn);
}

/* ---- life ------------------------------------------------------------------------ */

phone_t *phone_new(const config_t *cfg, store_t *st, turn_t *turn, job_set_t *jobs, char *err,
                   size_t errlen)
{
    phone_t *p = xcalloc(1, sizeof *p);
    p->cfg = cfg;
    p->st = st;
    p->turn = turn;
    hmap_init(&p->wrong, wrong_eq, p);
    httpd_opts_t o = {.name = "http", .handler = on_request, .ud = p, .completed = on_completed,
                      .max_connections = PHONE_MAX_CONNECTIONS, .idle_timeout_s = 30,
                      .request_max = 16384, .suspend = 1, .backlog = PHONE_BACKLOG};
    p->web = web_new(cfg, st, turn, jobs);
    if (!(p->http = httpd_new(cfg->http_listen, &o, err, errlen))) {
        web_destroy(&p->web);
        hmap_free(&p->wrong);
        free(p);
        return NULL;
    }
    if (cfg->http_public_url) {
        util_fmt(base_url, sizeof base_url, "%s", cfg->http_public_url);
    } else {
        const char *colon = strrchr(cfg->http_listen, ':');
        util_fmt(base_url, sizeof base_url, "http://%.*s:%d", (int)(colon - cfg->http_listen),
                 cfg->http_listen, httpd_port(p->http));
    }
    log_info("broker: http on %s (phone links %s/a/…, SMS replies POST /sms/inbound, the "
             "supervisors' web view %s/ for %zu user(s))", base_url, base_url, base_url,
             cfg->n_http_users);
    return p;
}

void phone_destroy(phone_t **pp)
{
    if (!pp || !*pp)
        return;
    phone_t *p = *pp;
    if (p->waiting)
        log_warn("http: %zu phone request(s) still waiting at stop", p->waiting);
    httpd_destroy(&p->http);
    web_destroy(&p->web);
    hmap_free(&p->wrong);
    free(p->wrong_v);
    free(p);
    *pp = NULL;
}

int phone_port(const phone_t *p)
{
    return p ? httpd_port(p->http) : 0;
}

int phone_pollitems(phone_t *p, zmq_pollitem_t *items, int max)
{
    return p ? httpd_pollitems(p->http, items, max) : 0;
}

long phone_timeout_ms(phone_t *p)
{
    return p ? httpd_timeout_ms(p->http) : -1;
}

void phone_perform(phone_t *p)
{
    if (p)
        httpd_perform(p->http);
}
