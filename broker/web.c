/*
 * web.c — the supervisors' web view: sessions, lock-out, routing, and the reads
 * (through query.h, in the loop's turn) whose results web_pages.c renders. See
 * web.h.
 *
 * A request's state is a wreq_t (MHD's *con_cls, held by phone.c's request).
 * MHD calls the handler first with the headers (pages that need nothing else
 * are answered then), then with the body in pieces, then once more; a request
 * that reads the store or checks a password is then suspended and resumed with
 * its answer (turn op's `done`, a job's `done`), and the handler queues it.
 */
#include "web.h"

#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "frame.h"
#include "httpd.h"
#include "log.h"
#include "query.h"
#include "util.h"
#include "web_int.h"

#define HASH_LEN 32
#define TOKEN_CHARS 44  /* base64url of 32 bytes, no padding, + NUL */
#define NAME_MAX_ 65
#define SESSION_COOKIE "carehub_session"
#define LOGIN_COOKIE "carehub_login"

typedef struct {
    unsigned char hash[HASH_LEN]; /* BLAKE2b of the cookie's value */
    int64_t last;                 /* 0: a free slot */
    const config_user_t *u;
    char csrf[TOKEN_CHARS];
} session_t;

typedef struct {
    int64_t since;  /* the window's start */
    int count;      /* failures in it */
} fail_t;

struct web {
    const config_t *cfg;
    store_t *st;
    turn_t *turn;
    job_set_t *jobs;
    session_t sess[WEB_SESSIONS_MAX];
    fail_t *fails;                /* one per configured user (cfg->http_users) */
    web_verify_t verify;
    unsigned long long seq;       /* query ids */
};

enum { W_HEAD, W_BODY, W_WAIT, W_ANSWER };

typedef struct {
    web_t *w;
    int state;
    char kind;                    /* page or action: see route() */
    struct MHD_Connection *c;
    char url[16];
    char *body;
    size_t len;
    int too_big;
    /* who */
    session_t *s;
    char user[NAME_MAX_], agent[NAME_MAX_], csrf[TOKEN_CHARS];
    /* a read */
    char qid[32], case_id[NAME_MAX_];
    web_filter_t flt;
    msgpack_sbuffer reqsb;
    msgpack_unpacked requ;
    query_t *q;
    /* a login */
    const config_user_t *u;
    const char *check_hash;
    char password[256];
    int ok;
    /* a verification */
    query_verify_t *v;
    /* the answer */
    char *answer;
    size_t alen;
    unsigned status;
    char location[160];
    char cookie[256];
} wreq_t;

static const char CSP[] = "default-src 'none'; style-src 'self'; img-src 'self'; "
                          "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/* ---- answers ------------------------------------------------------------------------ */

static enum MHD_Result send_html(struct MHD_Connection *c, unsigned status, char *html, size_t len,
                                 const char *location, const char *cookie)
{
    if (!html)
        return MHD_NO;
    const char *h[16];
    size_t n = 0;
    h[n++] = "Content-Security-Policy", h[n++] = CSP;
    h[n++] = "X-Content-Type-Options", h[n++] = "nosniff";
    h[n++] = "Referrer-Policy", h[n++] = "no-referrer";
    h[n++] = "X-Frame-Options", h[n++] = "DENY";
    if (location && *location)
        h[n++] = "Location", h[n++] = location;
    if (cookie && *cookie)
        h[n++] = "Set-Cookie", h[n++] = cookie;
    h[n] = NULL;
    return httpd_answer(c, status, "text/html; charset=utf-8", html, len, h);
}

/* A page from fn onto a memstream. */
typedef struct {
    char *buf;
    size_t len;
    FILE *f;
} mem_t;

static FILE *mem_open(mem_t *m)
{
    m->buf = NULL;
    m->len = 0;
    return m->f = open_memstream(&m->buf, &m->len);
}

static char *mem_close(mem_t *m, size_t *len)
{
    if (fclose(m->f) != 0) {
        free(m->buf);
        return NULL;
    }
    *len = m->len;
    return m->buf;
}

static void ctx_of(const wreq_t *r, web_ctx_t *x)
{
    x->cfg = r->w->cfg;
    x->user = r->user[0] ? r->user : NULL;
    x->agent = r->agent;
    x->csrf = r->csrf;
}

/* Set r's answer: a message page. */
static void answer_message(wreq_t *r, unsigned status, const char *title, const char *msg)
{
    mem_t m;
    web_ctx_t x;
    ctx_of(r, &x);
    if (!mem_open(&m))
        return;
    web_page_message(m.f, &x, title, msg);
    r->answer = mem_close(&m, &r->alen);
    r->status = status;
}

static void redirect(wreq_t *r, const char *to)
{
    util_fmt(r->location, sizeof r->location, "%s", to);
    r->answer = xstrdup("<!DOCTYPE html><title>→</title>\n");
    r->alen = strlen(r->answer);
    r->status = MHD_HTTP_SEE_OTHER;
}

static enum MHD_Result queue(wreq_t *r, struct MHD_Connection *c)
{
    char *a = r->answer;
    r->answer = NULL;
    return send_html(c, r->status, a, r->alen, r->location, r->cookie);
}

static void set_cookie(web_t *w, char *out, size_t size, const char *name, const char *value,
                       long max_age)
{
    int secure = w->cfg->http_public_url && strncmp(w->cfg->http_public_url, "https://", 8) == 0;
    util_fmt(out, size, "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%ld%s", name, value,
             max_age, secure ? "; Secure" : "");
}

static void random_token(char out[TOKEN_CHARS])
{
    unsigned char b[32];
    randombytes_buf(b, sizeof b);
    sodium_bin2base64(out, TOKEN_CHARS, b, sizeof b, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/* ---- sessions and lock-out ---------------------------------------------------------- */

static void hash_token(const char *tok, unsigned char h[HASH_LEN])
{
    crypto_generichash(h, HASH_LEN, (const unsigned char *)tok, strlen(tok), NULL, 0);
}

/* The live session of the request's cookie (its idle clock restarted), or NULL. */
static session_t *session_of(web_t *w, struct MHD_Connection *c, int64_t now)
{
    const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_COOKIE);
    char tok[TOKEN_CHARS];
    if (!hdr || web_cookie_get(hdr, SESSION_COOKIE, tok, sizeof tok) != 1 ||
        strlen(tok) != TOKEN_CHARS - 1)
        return NULL;
    unsigned char h[HASH_LEN];
    hash_token(tok, h);
    for (size_t i = 0; i < WEB_SESSIONS_MAX; i++) {
        session_t *s = &w->sess[i];
        if (!s->last || sodium_memcmp(s->hash, h, HASH_LEN) != 0)
            continue;
        if (now - s->last >= WEB_SESSION_IDLE_MS) { /* idle too long: gone */
            sodium_memzero(s, sizeof *s);
            return NULL;
        }
        s->last = now;
        return s;
    }
    return NULL;
}

/* A new session for u: its cookie's value into tok. The oldest gives way when full. */
static session_t *session_new(web_t *w, const config_user_t *u, int64_t now, char tok[TOKEN_CHARS])
{
    session_t *s = &w->sess[0];
    for (size_t i = 0; i < WEB_SESSIONS_MAX; i++) {
        session_t *t = &w->sess[i];
        if (!t->last || now - t->last >= WEB_SESSION_IDLE_MS) {
            s = t;
            break;
        }
        if (t->last < s->last)
            s = t;
    }
    random_token(tok);
    hash_token(tok, s->hash);
    s->last = now;
    s->u = u;
    random_token(s->csrf);
    return s;
}

/* The failure count of a configured user (unknown names are not counted: they
 * never log in, and counting them would let a stream of made-up names crowd out
 * a real user's count), its window restarted when over. NULL for an unknown name. */
static fail_t *fail_of(web_t *w, const config_user_t *u, int64_t now)
{
    if (!u)
        return NULL;
    fail_t *f = &w->fails[u - w->cfg->http_users];
    if (now - f->since >= WEB_FAIL_WINDOW_MS) { /* a new window */
        f->count = 0;
        f->since = now;
    }
    return f;
}

static int locked(web_t *w, const config_user_t *u, int64_t now)
{
    fail_t *f = fail_of(w, u, now);
    return f && f->count >= WEB_FAIL_MAX;
}

/* 1 when the form's csrf is the session's. */
static int csrf_ok(const wreq_t *r, const session_t *s)
{
    char got[TOKEN_CHARS];
    if (web_form_get(r->body ? r->body : "", r->len, "csrf", got, sizeof got) != 1)
        return 0;
    return strlen(got) == TOKEN_CHARS - 1 && sodium_memcmp(got, s->csrf, TOKEN_CHARS - 1) == 0;
}

/* ---- the login page and logging in ---------------------------------------------------- */

static void answer_login(wreq_t *r, unsigned status, const char *msg)
{
    char tok[TOKEN_CHARS];
    random_token(tok);
    set_cookie(r->w, r->cookie, sizeof r->cookie, LOGIN_COOKIE, tok, 3600);
    mem_t m;
    web_ctx_t x = {r->w->cfg, NULL, NULL, NULL};
    if (!mem_open(&m))
        return;
    web_page_login(m.f, &x, msg, tok);
    r->answer = mem_close(&m, &r->alen);
    r->status = status;
}

static void login_work(void *ud)
{
    wreq_t *r = ud;
    r->ok = crypto_pwhash_str_verify(r->check_hash, r->password, strlen(r->password)) == 0;
    sodium_memzero(r->password, sizeof r->password);
}

/* The answer to a login whose password check is over (r->ok). */
static void login_result(wreq_t *r)
{
    web_t *w = r->w;
    int64_t now = clock_now_ms();
    if (r->ok && r->u) {
        fail_of(w, r->u, now)->count = 0;
        char tok[TOKEN_CHARS];
        (void)session_new(w, r->u, now, tok);
        set_cookie(w, r->cookie, sizeof r->cookie, SESSION_COOKIE, tok,
                   (long)(WEB_SESSION_IDLE_MS / 1000));
        log_info("web: user %s (agent %s) logged in", r->u->name, r->u->agent);
        redirect(r, "/cases");
    } else {
        fail_t *f = fail_of(w, r->u, now);
        if (f && f->count++ == 0)
            f->since = now; /* the window starts at its first failure */
        log_warn("web: failed login for %suser %s (%d in this window)", f ? "" : "an unknown ",
                 r->user, f ? f->count : 1);
        r->user[0] = '\0';
        answer_login(r, MHD_HTTP_UNAUTHORIZED, "用户名或密码错误。");
    }
}

static void login_done(void *ud)
{
    wreq_t *r = ud;
    login_result(r);
    r->state = W_ANSWER;
    MHD_resume_connection(r->c);
}

static enum MHD_Result do_login(wreq_t *r, struct MHD_Connection *c)
{
    web_t *w = r->w;
    const char *body = r->body ? r->body : "";
    char form_tok[TOKEN_CHARS], cookie_tok[TOKEN_CHARS];
    const char *hdr = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_COOKIE);
    if (web_form_get(body, r->len, "csrf", form_tok, sizeof form_tok) != 1 || !hdr ||
        web_cookie_get(hdr, LOGIN_COOKIE, cookie_tok, sizeof cookie_tok) != 1 ||
        strlen(form_tok) != TOKEN_CHARS - 1 || strcmp(form_tok, cookie_tok) != 0) {
        answer_login(r, MHD_HTTP_FORBIDDEN, "登录表单已过期，请重新登录。");
        return queue(r, c);
    }
    if (web_form_get(body, r->len, "user", r->user, sizeof r->user) != 1 || !r->user[0] ||
        web_form_get(body, r->len, "password", r->password, sizeof r->password) != 1) {
        r->user[0] = '\0';
        answer_login(r, MHD_HTTP_BAD_REQUEST, "请输入用户名和密码。");
        return queue(r, c);
    }
    int64_t now = clock_now_ms();
    r->u = config_find_user(w->cfg, r->user);
    if (locked(w, r->u, now)) {
        log_warn("web: login for user %s refused: locked out", r->user);
        r->user[0] = '\0';
        sodium_memzero(r->password, sizeof r->password);
        answer_login(r, MHD_HTTP_TOO_MANY_REQUESTS, "登录失败次数过多，此账户已锁定 15 分钟。");
        return queue(r, c);
    }
    /* an unknown name costs the same hash check (against another user's hash,
     * and fails whatever it says), so timing does not tell names apart */
    r->check_hash = r->u ? r->u->password_hash
                         : w->cfg->n_http_users ? w->cfg->http_users[0].password_hash : NULL;
    if (!r->check_hash) { /* no users at all: nothing to check against */
        sodium_memzero(r->password, sizeof r->password);
        r->ok = 0;
        login_result(r);
        return queue(r, c);
    }
    if (!w->jobs) {
        sodium_memzero(r->password, sizeof r->password);
        r->user[0] = '\0';
        answer_login(r, MHD_HTTP_SERVICE_UNAVAILABLE, "系统暂时无法登录，请稍后再试。");
        return queue(r, c);
    }
    r->c = c;
    r->state = W_WAIT;
    if (job_start(w->jobs, login_work, login_done, r) != 0) {
        sodium_memzero(r->password, sizeof r->password);
        r->state = W_HEAD; /* answered now */
        r->user[0] = '\0';
        answer_login(r, MHD_HTTP_SERVICE_UNAVAILABLE, "系统繁忙，请稍后再试。");
        return queue(r, c);
    }
    MHD_suspend_connection(c);
    return MHD_YES;
}

/* ---- reads through query.h ------------------------------------------------------------ */

static int query_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    (void)fx;
    wreq_t *r = ud;
    return query_run(t, r->q);
}

static unsigned status_of(query_result_t res)
{
    switch (res) {
    case QUERY_FORBIDDEN: return MHD_HTTP_FORBIDDEN;
    case QUERY_NOT_FOUND: return MHD_HTTP_NOT_FOUND;
    case QUERY_INVALID: return MHD_HTTP_BAD_REQUEST;
    default: return MHD_HTTP_SERVICE_UNAVAILABLE;
    }
}

static void render(wreq_t *r, const msgpack_object *res)
{
    mem_t m;
    web_ctx_t x;
    ctx_of(r, &x);
    if (!mem_open(&m))
        return;
    switch (r->kind) {
    case 'C': web_page_cases(m.f, &x, res, &r->flt); break;
    case 'F': web_page_case(m.f, &x, res, 0); break;
    case 'P': web_page_case(m.f, &x, res, 1); break;
    case 'T': web_page_trail(m.f, &x, res, &r->w->verify); break;
    case 'R': web_page_report(m.f, &x, res); break;
    case 'G': web_page_register(m.f, &x, res); break;
    default: web_page_silences(m.f, &x, res); break;
    }
    r->answer = mem_close(&m, &r->alen);
    r->status = MHD_HTTP_OK;
}

static void query_done(void *ud, store_rc_t rc)
{
    wreq_t *r = ud;
    frame_out_t out;
    char why[512];
    const char *field;
    query_result_t res = query_end(r->q, rc, &out, why, sizeof why, &field);
    if (res == QUERY_OK) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, out.sb.data, out.sb.size, NULL) == MSGPACK_UNPACK_SUCCESS)
            render(r, &u.data);
        msgpack_unpacked_destroy(&u);
        if (r->kind == 'P')
            sodium_memzero(out.sb.data, out.sb.size); /* the child's data */
        frame_out_end(&out);
    } else {
        answer_message(r, status_of(res), "无法显示", why);
    }
    query_free(&r->q);
    r->state = W_ANSWER;
    MHD_resume_connection(r->c);
}

/* Read `what` for the page r->kind, as the user's agent; ref names page and user. */
static enum MHD_Result start_query(wreq_t *r, struct MHD_Connection *c, const char *what,
                                   const char *ref)
{
    web_t *w = r->w;
    msgpack_packer pk;
    msgpack_sbuffer_init(&r->reqsb);
    msgpack_packer_init(&pk, &r->reqsb, msgpack_sbuffer_write);
    int is_case = r->case_id[0] != '\0', is_list = r->kind == 'C';
    msgpack_pack_map(&pk, 1 + is_case + (is_list ? 5 : 0) + (r->kind == 'R'));
    frame_pack_cstr(&pk, "what");
    frame_pack_cstr(&pk, what);
    if (is_case) {
        frame_pack_cstr(&pk, "case");
        frame_pack_cstr(&pk, r->case_id);
    }
    if (is_list) {
        const char *k[] = {"status", "type", "agency", "after"};
        const char *v[] = {r->flt.status, r->flt.type, r->flt.agency, r->flt.after};
        for (size_t i = 0; i < 4; i++) {
            frame_pack_cstr(&pk, k[i]);
            if (v[i][0])
                frame_pack_cstr(&pk, v[i]);
            else
                msgpack_pack_nil(&pk);
        }
        frame_pack_cstr(&pk, "overdue");
        if (r->flt.overdue)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    if (r->kind == 'R') {
        frame_pack_cstr(&pk, "limit");
        msgpack_pack_int(&pk, 1000);
    }
    msgpack_unpacked_init(&r->requ);
    if (msgpack_unpack_next(&r->requ, r->reqsb.data, r->reqsb.size, NULL) != MSGPACK_UNPACK_SUCCESS) {
        answer_message(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "无法显示", "内部错误");
        return queue(r, c);
    }
    util_fmt(r->qid, sizeof r->qid, "web-%llu", ++w->seq);
    const config_agent_t *agent = config_find_agent(w->cfg, r->agent);
    char why[512];
    const char *field;
    frame_out_t unused = {0};
    query_result_t res = agent ? query_begin(w->cfg, w->st, NULL, agent, r->qid, &r->requ.data,
                                             &unused, why, sizeof why, &field, &r->q)
                               : QUERY_FORBIDDEN;
    if (!agent)
        util_fmt(why, sizeof why, "no agent");
    if (res != QUERY_OK) {
        answer_message(r, status_of(res), "无法显示", why);
        return queue(r, c);
    }
    char full[QUERY_REF_MAX];
    util_fmt(full, sizeof full, "%s web:%s", ref, r->user);
    query_set_ref(r->q, full);
    r->c = c;
    r->state = W_WAIT;
    MHD_suspend_connection(c);
    turn_add(w->turn, query_fn, query_done, r);
    return MHD_YES;
}

/* ---- verifying the whole trail --------------------------------------------------------- */

static void verify_done(void *ud)
{
    wreq_t *r = ud;
    web_verify_t *v = &r->w->verify;
    frame_out_t out;
    char why[256];
    v->running = 0;
    if (query_verify_answer(r->v, &out, why, sizeof why) == QUERY_OK) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, out.sb.data, out.sb.size, NULL) == MSGPACK_UNPACK_SUCCESS) {
            const msgpack_object *o = frame_map_get(&u.data, "intact");
            int64_t n = 0;
            const char *p;
            size_t pn;
            v->done = 1;
            v->intact = o && o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean;
            v->records = frame_int(frame_map_get(&u.data, "records"), &n) && n > 0 ? (uint64_t)n : 0;
            v->at = clock_now_ms();
            v->problem[0] = '\0';
            if (frame_str(frame_map_get(&u.data, "problem"), &p, &pn))
                util_fmt(v->problem, sizeof v->problem, "%.*s", (int)pn, p);
        }
        msgpack_unpacked_destroy(&u);
        frame_out_end(&out);
        log_info("web: trail verified for user %s: %s", r->user, v->intact ? "intact" : "CHANGED");
    }
    query_verify_free(&r->v);
    char to[160];
    util_fmt(to, sizeof to, "/trail?id=%s", r->case_id);
    redirect(r, to);
    r->state = W_ANSWER;
    MHD_resume_connection(r->c);
}

static void verify_work(void *ud)
{
    wreq_t *r = ud;
    query_verify_work(r->v);
}

static enum MHD_Result start_verify(wreq_t *r, struct MHD_Connection *c)
{
    web_t *w = r->w;
    char to[160];
    util_fmt(to, sizeof to, "/trail?id=%s", r->case_id);
    if (w->verify.running || !w->jobs) {
        redirect(r, to);
        return queue(r, c);
    }
    r->v = query_verify_new(w->st, r->qid);
    r->c = c;
    r->state = W_WAIT;
    if (job_start(w->jobs, verify_work, verify_done, r) != 0) {
        query_verify_free(&r->v);
        r->state = W_HEAD; /* answered now */
        answer_message(r, MHD_HTTP_SERVICE_UNAVAILABLE, "请稍后再试",
                       "另一项校验或登录正在进行，请稍后再试。");
        return queue(r, c);
    }
    w->verify.running = 1;
    MHD_suspend_connection(c);
    return MHD_YES;
}

/* ---- routing ---------------------------------------------------------------------------- */

static const struct {
    const char *path;
    char kind;
    int post;
} ROUTES[] = {
    {"/", 'L', 0}, {"/login", 'L', 0}, {"/web.css", 'S', 0}, {"/cases", 'C', 0},
    {"/case", 'F', 0}, {"/trail", 'T', 0}, {"/report", 'R', 0}, {"/register", 'G', 0},
    {"/silences", 'N', 0}, {"/login", 'I', 1}, {"/logout", 'O', 1}, {"/reveal", 'P', 1},
    {"/verify", 'V', 1},
};

int web_owns(const char *url)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(ROUTES); i++)
        if (strcmp(url, ROUTES[i].path) == 0)
            return 1;
    return 0;
}

/* The query string as a urlencoded string again (MHD hands it decoded). */
static enum MHD_Result arg_visit(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    FILE *f = cls;
    const char *parts[2] = {key, value ? value : ""};
    for (int p = 0; p < 2; p++) {
        for (const unsigned char *s = (const unsigned char *)parts[p]; *s; s++) {
            if ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
                *s == '-' || *s == '_' || *s == '.')
                fputc(*s, f);
            else
                fprintf(f, "%%%02X", *s);
        }
        fputc(p == 0 ? '=' : '&', f);
    }
    return MHD_YES;
}

/* A case id from the query string (GET) or form (POST) into r->case_id; 0 or -1. */
static int case_arg(wreq_t *r, struct MHD_Connection *c, int post)
{
    const char *v = NULL;
    if (post) {
        if (web_form_get(r->body ? r->body : "", r->len, "id", r->case_id, sizeof r->case_id) != 1)
            r->case_id[0] = '\0';
    } else if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "id")) != NULL) {
        util_fmt(r->case_id, sizeof r->case_id, "%s", strlen(v) < sizeof r->case_id ? v : "");
    }
    if (!r->case_id[0] || !util_valid_id(r->case_id, strlen(r->case_id))) {
        r->case_id[0] = '\0';
        answer_message(r, MHD_HTTP_BAD_REQUEST, "无法显示",
                       "缺少或无效的案件编号 id（例如 case-0000000001）。");
        return -1;
    }
    return 0;
}

/* The whole request is here: do what it asks. */
static enum MHD_Result dispatch(wreq_t *r, struct MHD_Connection *c)
{
    web_t *w = r->w;
    int64_t now = clock_now_ms();
    if (r->too_big) {
        answer_message(r, MHD_HTTP_CONTENT_TOO_LARGE, "请求过大", "表单超过 8 KiB。");
        return queue(r, c);
    }
    if (r->kind == 'I')
        return do_login(r, c);
    session_t *s = session_of(w, c, now);
    if (r->kind == 'L') {
        if (s) {
            redirect(r, "/cases");
        } else {
            answer_login(r, MHD_HTTP_OK, NULL);
        }
        return queue(r, c);
    }
    if (!s) { /* no session, or it expired: back to the login */
        redirect(r, "/");
        return queue(r, c);
    }
    r->s = s;
    util_fmt(r->user, sizeof r->user, "%s", s->u->name);
    util_fmt(r->agent, sizeof r->agent, "%s", s->u->agent);
    util_fmt(r->csrf, sizeof r->csrf, "%s", s->csrf);
    int post = r->kind == 'O' || r->kind == 'P' || r->kind == 'V';
    if (post && !csrf_ok(r, s)) {
        answer_message(r, MHD_HTTP_FORBIDDEN, "请求被拒绝",
                       "表单令牌无效（CSRF）：请从页面重新提交。");
        return queue(r, c);
    }
    switch (r->kind) {
    case 'O':
        log_info("web: user %s logged out", r->user);
        sodium_memzero(s, sizeof *s);
        set_cookie(w, r->cookie, sizeof r->cookie, SESSION_COOKIE, "", 0);
        r->user[0] = '\0';
        redirect(r, "/");
        return queue(r, c);
    case 'C': {
        mem_t m;
        if (!mem_open(&m))
            return MHD_NO;
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, arg_visit, m.f);
        size_t qn;
        char *qs = mem_close(&m, &qn), why[256] = "内部错误";
        int bad = !qs || web_filter_parse(qs, qn, &r->flt, why, sizeof why) < 0;
        free(qs);
        if (bad) {
            answer_message(r, MHD_HTTP_BAD_REQUEST, "筛选条件无效", why);
            return queue(r, c);
        }
        return start_query(r, c, "cases", "cases");
    }
    case 'F':
    case 'P':
    case 'T':
        if (case_arg(r, c, post) < 0)
            return queue(r, c);
        return start_query(r, c, r->kind == 'T' ? "trail" : "case",
                           r->kind == 'T' ? "trail" : r->kind == 'P' ? "personal_data" : "case_file");
    case 'V':
        if (case_arg(r, c, 1) < 0)
            return queue(r, c);
        return start_verify(r, c);
    case 'R': return start_query(r, c, "assignments", "report");
    case 'G': return start_query(r, c, "register", "register");
    default: return start_query(r, c, "silences", "silences");
    }
}

enum MHD_Result web_request(web_t *w, struct MHD_Connection *c, const char *url,
                            const char *method, const char *upload, size_t *upload_size,
                            void **req)
{
    wreq_t *r = *req;
    int is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!r) {
        char kind = 0;
        for (size_t i = 0; i < UTIL_ARRAY_LEN(ROUTES) && !kind; i++)
            if (strcmp(url, ROUTES[i].path) == 0 && (ROUTES[i].post ? is_post : is_get))
                kind = ROUTES[i].kind;
        if (!kind)
            return httpd_answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n",
                                     strcmp(url, "/login") == 0 ? "GET, POST"
                                     : (strcmp(url, "/logout") == 0 || strcmp(url, "/reveal") == 0 ||
                                        strcmp(url, "/verify") == 0) ? "POST" : "GET");
        if (kind == 'S') {
            const char *h[] = {"X-Content-Type-Options", "nosniff", NULL};
            return httpd_answer(c, MHD_HTTP_OK, "text/css; charset=utf-8", xstrdup(WEB_CSS),
                                strlen(WEB_CSS), h);
        }
        r = xcalloc(1, sizeof *r);
        r->w = w;
        r->kind = kind;
        r->state = W_BODY;
        *req = r;
        return MHD_YES;
    }
    if (r->state == W_BODY && *upload_size) {
        httpd_body_append(&r->body, &r->len, &r->too_big, WEB_BODY_MAX, upload, upload_size);
        return MHD_YES;
    }
    if (r->state == W_ANSWER)
        return queue(r, c);
    if (r->state != W_BODY)
        return MHD_YES;
    r->state = W_HEAD; /* dispatched once */
    return dispatch(r, c);
}

void web_request_free(void **req)
{
    wreq_t *r = req ? *req : NULL;
    if (!r)
        return;
    query_free(&r->q);
    query_verify_free(&r->v);
    if (r->reqsb.data) {
        msgpack_unpacked_destroy(&r->requ);
        msgpack_sbuffer_destroy(&r->reqsb);
    }
    if (r->body)
        sodium_memzero(r->body, r->len);
    free(r->body);
    free(r->answer);
    sodium_memzero(r->password, sizeof r->password);
    free(r);
    *req = NULL;
}

/* ---- life ------------------------------------------------------------------------------ */

web_t *web_new(const config_t *cfg, store_t *st, turn_t *turn, job_set_t *jobs)
{
    web_t *w = xcalloc(1, sizeof *w);
    w->cfg = cfg;
    w->st = st;
    w->turn = turn;
    w->jobs = jobs;
    w->fails = xcalloc(cfg->n_http_users ? cfg->n_http_users : 1, sizeof *w->fails);
    return w;
}

void web_destroy(web_t **pw)
{
    if (!pw || !*pw)
        return;
    sodium_memzero((*pw)->sess, sizeof (*pw)->sess);
    free((*pw)->fails);
    free(*pw);
    *pw = NULL;
}
