/*
 * test_hook.c — webhook signing, backoff, and delivery through libcurl's
 * multi interface driven by a zmq_poll loop like the broker's, against tiny
 * HTTP servers run in threads of this process on 127.0.0.1 ephemeral ports.
 * The servers answer scripted statuses, record requests (head and body), and
 * can delay, hang or reset. The test clock moves retry delays and max_age on
 * instantly; curl's own timeouts are real time, so those tests use short ones.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"
#include "config.h"
#include "hook.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* The Standard Webhooks specification's published example. */
#define SPEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SPEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SPEC_TS 1614265330
#define SPEC_BODY "{\"test\": 2432232314}"
#define SPEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static char g_secret[] = SPEC_SECRET;

/* ---- a scripted HTTP server in a thread --------------------------------- */

typedef enum { ACT_STATUS = 0, ACT_HANG, ACT_RESET, ACT_RAW } act_kind_t;

typedef struct {
    act_kind_t kind;
    int status;
    int delay_ms;        /* wait this long before answering */
    char extra[256];     /* extra header lines, each ending in \r\n */
    size_t body_bytes;   /* response body of this many 'x' */
    const char *raw;     /* ACT_RAW: these bytes as the whole response, then close */
} action_t;

typedef struct {
    char head[8192];     /* request line and headers, NUL-terminated */
    char body[8192];
    size_t body_len;
    int64_t at_ms;       /* util_mono_ms() when it was read */
} request_t;

#define MAX_SCRIPT 16
#define MAX_REQS 128
#define MAX_CONN_THREADS 64

typedef struct server server_t;

/* A connection handled by a thread of its own (server.concurrent). */
typedef struct {
    server_t *s;
    int fd;
    request_t req;
} conn_t;

struct server {
    int lfd;
    int port;
    pthread_t thread;
    pthread_mutex_t mu;  /* guards everything below */
    action_t script[MAX_SCRIPT];
    int n_script, next;  /* after the script: dflt */
    action_t dflt;
    request_t reqs[MAX_REQS];
    int n_reqs;
    int accepted;        /* connections accepted */
    int stop;
    request_t scratch;   /* the server thread's own: the request being read */
    /* concurrent: each connection in a thread of its own (srv_start_concurrent) */
    int concurrent;
    pthread_t conn_threads[MAX_CONN_THREADS];
    int n_conn_threads;
    int answering;       /* requests read and not yet answered, now */
    int max_answering;   /* the most at once */
};

static int srv_stopping(server_t *s)
{
    pthread_mutex_lock(&s->mu);
    int v = s->stop;
    pthread_mutex_unlock(&s->mu);
    return v;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static size_t content_length(const char *head)
{
    for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, "content-length:", 15) == 0)
            return (size_t)strtoul(p + 17, NULL, 10);
    return 0;
}

/* A request was read, or is about to be answered (-1): the count of those
 * waiting for their answer, and its peak. Taken down before the answer's first
 * byte is sent, so a client that starts its next request only after an answer
 * can never be counted twice. */
static void srv_count(server_t *s, int d)
{
    pthread_mutex_lock(&s->mu);
    s->answering += d;
    if (s->answering > s->max_answering)
        s->max_answering = s->answering;
    pthread_mutex_unlock(&s->mu);
}

static void srv_handle(server_t *s, int c, request_t *req)
{
    char buf[sizeof req->head + sizeof req->body];
    size_t len = 0, head_len = 0, need = 0;
    int64_t until = util_mono_ms() + 3000;

    memset(req, 0, sizeof *req);
    while (util_mono_ms() < until && !srv_stopping(s)) {
        struct pollfd p = {c, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        ssize_t r = recv(c, buf + len, sizeof buf - 1 - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = '\0';
        if (!head_len) {
            char *e = strstr(buf, "\r\n\r\n");
            if (e) {
                head_len = (size_t)(e - buf) + 4;
                need = head_len + content_length(buf);
            }
        }
        if (head_len && len >= need)
            break;
        if (len == sizeof buf - 1)
            break;
    }
    if (!head_len || len < need || head_len > sizeof req->head - 1 ||
        need - head_len > sizeof req->body) {
        close(c);
        return;
    }
    memcpy(req->head, buf, head_len);
    req->body_len = need - head_len;
    memcpy(req->body, buf + head_len, req->body_len);
    req->at_ms = util_mono_ms();

    pthread_mutex_lock(&s->mu);
    action_t a = s->next < s->n_script ? s->script[s->next++] : s->dflt;
    if (s->n_reqs < MAX_REQS)
        s->reqs[s->n_reqs++] = *req;
    pthread_mutex_unlock(&s->mu);
    srv_count(s, 1);

    if (a.kind != ACT_STATUS)
        srv_count(s, -1);
    if (a.kind == ACT_RESET) {
        struct linger lg = {1, 0};
        setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c);
        return;
    }
    if (a.kind == ACT_RAW) {
        (void)send_all(c, a.raw, strlen(a.raw));
        close(c);
        return;
    }
    if (a.kind == ACT_HANG) { /* never answer; wait for the client to give up */
        while (!srv_stopping(s)) {
            struct pollfd p = {c, POLLIN, 0};
            if (poll(&p, 1, 20) > 0) {
                char tmp[256];
                if (recv(c, tmp, sizeof tmp, 0) <= 0)
                    break;
            }
        }
        close(c);
        return;
    }
    for (int waited = 0; waited < a.delay_ms && !srv_stopping(s); waited += 10)
        sleep_ms(10);
    srv_count(s, -1);
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "HTTP/1.1 %d Scripted\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n",
                      a.status, a.body_bytes, a.extra);
    if (send_all(c, head, (size_t)hn) == 0 && a.body_bytes) {
        static char xs[16384];
        memset(xs, 'x', sizeof xs);
        for (size_t sent = 0; sent < a.body_bytes;) {
            size_t n = a.body_bytes - sent < sizeof xs ? a.body_bytes - sent : sizeof xs;
            if (send_all(c, xs, n) != 0)
                break; /* the client hung up: expected past its cap */
            sent += n;
        }
    }
    close(c);
}

static void *conn_main(void *arg)
{
    conn_t *k = arg;
    srv_handle(k->s, k->fd, &k->req);
    free(k);
    return NULL;
}

static void *srv_main(void *arg)
{
    server_t *s = arg;
    while (!srv_stopping(s)) {
        struct pollfd p = {s->lfd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int c = accept(s->lfd, NULL, NULL);
        if (c < 0)
            continue;
        struct timeval tv = {2, 0};
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        pthread_mutex_lock(&s->mu);
        s->accepted++;
        int spawn = s->concurrent && s->n_conn_threads < MAX_CONN_THREADS;
        pthread_mutex_unlock(&s->mu);
        if (!spawn) {
            srv_handle(s, c, &s->scratch); /* one connection at a time */
            continue;
        }
        conn_t *k = calloc(1, sizeof *k);
        if (!k) {
            close(c);
            continue;
        }
        k->s = s;
        k->fd = c;
        pthread_t th;
        if (pthread_create(&th, NULL, conn_main, k) != 0) {
            free(k);
            close(c);
            continue;
        }
        pthread_mutex_lock(&s->mu);
        s->conn_threads[s->n_conn_threads++] = th;
        pthread_mutex_unlock(&s->mu);
    }
    /* the connection threads see stop too */
    for (int i = 0; i < s->n_conn_threads; i++)
        pthread_join(s->conn_threads[i], NULL);
    return NULL;
}

static server_t *srv_start_mode(int concurrent)
{
    server_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &sl), 0);
    s->port = ntohs(sa.sin_port);
    s->dflt.kind = ACT_STATUS;
    s->dflt.status = 200;
    s->concurrent = concurrent;
    pthread_mutex_init(&s->mu, NULL);
    assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
    return s;
}

/* A server that answers one connection at a time (the scripts stay in order). */
static server_t *srv_start(void)
{
    return srv_start_mode(0);
}

/* A server that reads and answers every connection in a thread of its own, so
 * that it can have many requests waiting for their answers at once. */
static server_t *srv_start_concurrent(void)
{
    return srv_start_mode(1);
}

static void srv_stop(server_t **ps)
{
    server_t *s = *ps;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *ps = NULL;
}

static void srv_push(server_t *s, action_t a)
{
    pthread_mutex_lock(&s->mu);
    assert_true(s->n_script < MAX_SCRIPT);
    s->script[s->n_script++] = a;
    pthread_mutex_unlock(&s->mu);
}

static void srv_default(server_t *s, action_t a)
{
    pthread_mutex_lock(&s->mu);
    s->dflt = a;
    pthread_mutex_unlock(&s->mu);
}

static action_t status(int code)
{
    action_t a;
    memset(&a, 0, sizeof a);
    a.kind = ACT_STATUS;
    a.status = code;
    return a;
}

static action_t act(act_kind_t kind)
{
    action_t a = status(0);
    a.kind = kind;
    return a;
}

static int srv_nreqs(server_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n_reqs;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int srv_accepted(server_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->accepted;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* The most requests that were waiting for their answers at once. */
static int srv_max_answering(server_t *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->max_answering;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Request i (recorded before; never changed afterwards). */
static const request_t *srv_req(server_t *s, int i)
{
    assert_true(i < srv_nreqs(s));
    return &s->reqs[i];
}

/* Header `name` of a recorded request into out; 0, or -1 when absent. */
static int req_header(const request_t *r, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    const char *line = strstr(r->head, "\r\n");
    while (line && strncmp(line + 2, "\r\n", 2) != 0) {
        line += 2;
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(eol - v);
            if (vl >= n)
                vl = n - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 0;
        }
        line = eol;
    }
    return -1;
}

/* ---- what the hook told us ---------------------------------------------- */

typedef struct {
    hook_t *h;
    const config_channel_t *fallback; /* on failure, submit "<id>.fb" here (re-entrancy) */
    int n_done;
    struct {
        char id[80];
        hook_outcome_t outcome;
        int attempts;
        char err[256];
        int64_t at_ms;
        size_t pending;  /* hook_pending() when told */
    } done[128];
    int n_att;
    struct {
        char id[80];
        int attempt;
        long status;
        char err[256];
    } att[128];
} rec_t;

static void on_done(void *ud, const char *id, hook_outcome_t outcome, int attempts,
                    const char *last_error)
{
    rec_t *r = ud;
    assert_true(r->n_done < 128);
    snprintf(r->done[r->n_done].id, sizeof r->done[0].id, "%s", id);
    r->done[r->n_done].outcome = outcome;
    r->done[r->n_done].attempts = attempts;
    snprintf(r->done[r->n_done].err, sizeof r->done[0].err, "%s", last_error);
    r->done[r->n_done].at_ms = util_mono_ms();
    r->done[r->n_done].pending = hook_pending(r->h);
    r->n_done++;
    if (outcome == HOOK_FAILED && r->fallback && !strstr(id, ".fb")) {
        char fid[80];
        snprintf(fid, sizeof fid, "%s.fb", id);
        assert_int_equal(hook_submit(r->h, r->fallback, fid, "{\"fallback\":true}", clock_now_ms()),
                         0);
    }
}

static void on_attempt(void *ud, const char *id, int attempt, long http_status, const char *error)
{
    rec_t *r = ud;
    assert_true(r->n_att < 128);
    snprintf(r->att[r->n_att].id, sizeof r->att[0].id, "%s", id);
    r->att[r->n_att].attempt = attempt;
    r->att[r->n_att].status = http_status;
    snprintf(r->att[r->n_att].err, sizeof r->att[0].err, "%s", error);
    r->n_att++;
}

/* ---- fixture ------------------------------------------------------------- */

static config_cidr_t g_loopback = {4, {127, 0, 0, 0}, 8};
static config_cidr_t g_tennet = {4, {10, 0, 0, 0}, 8};
static config_t g_cfg;      /* webhook_allow: [127.0.0.0/8] */
static config_t g_cfg_ten;  /* webhook_allow: [10.0.0.0/8] */

typedef struct {
    config_channel_t ch;
    char url[128];
    char id[32];
} chan_t;

static void make_chan(chan_t *c, const char *id, const server_t *s, int64_t timeout_ms,
                      int64_t max_age_ms)
{
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", id);
    snprintf(c->url, sizeof c->url, "http://127.0.0.1:%d/hook", s ? s->port : 9);
    c->ch.id = c->id;
    c->ch.kind = CHANNEL_WEBHOOK;
    c->ch.url = c->url;
    c->ch.secret = g_secret;
    c->ch.timeout_ms = timeout_ms;
    c->ch.max_age_ms = max_age_ms;
}

static hook_t *new_hook(const config_t *cfg, rec_t *r)
{
    memset(r, 0, sizeof *r);
    r->h = hook_new(cfg, on_done, on_attempt, r);
    assert_non_null(r->h);
    return r->h;
}

/*
 * The broker's loop: poll curl's fds for as long as hook_timeout_ms() allows
 * (capped so the test notices its limits), then hook_perform(). With
 * `advance`, when nothing is in flight and the hook only waits for a retry,
 * move the test clock to it instead of sleeping.
 * Runs until `want_done` messages finished and `want_att` attempts ended.
 */
static void drive(hook_t *h, rec_t *r, int want_done, int want_att, int advance, int64_t limit_ms)
{
    int64_t end = util_mono_ms() + limit_ms;
    while ((r->n_done < want_done || r->n_att < want_att) && util_mono_ms() < end) {
        zmq_pollitem_t items[64];
        int n = hook_pollitems(h, items, 64);
        long t = hook_timeout_ms(h);
        if (advance && n == 0 && t > 0) {
            assert_int_equal(clock_advance_ms(t), 0);
            t = 0;
        }
        if (t < 0 || t > 50)
            t = 50;
        assert_true(zmq_poll(items, n, t) >= 0);
        hook_perform(h);
    }
    assert_true(r->n_done >= want_done);
    assert_true(r->n_att >= want_att);
}

/* Verify a signature header the way a receiver would, without hook_sign(). */
static void assert_signature(const char *id, const char *ts, const char *body, size_t body_len,
                             const char *header)
{
    const char *b64 = &SPEC_SECRET[6];
    unsigned char key[64];
    size_t key_len = 0;
    assert_int_equal(sodium_base642bin(key, sizeof key, b64, strlen(b64), NULL, &key_len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_init(&st, key, key_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)id, strlen(id));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)ts, strlen(ts));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)".", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, body_len);
    crypto_auth_hmacsha256_final(&st, mac);
    char expect[64] = "v1,";
    sodium_bin2base64(expect + 3, sizeof expect - 3, mac, sizeof mac,
                      sodium_base64_VARIANT_ORIGINAL);
    assert_string_equal(header, expect);
}

/* ---- signing ------------------------------------------------------------ */

static void test_sign_spec_vector(void **state)
{
    (void)state;
    char sig[64];
    assert_int_equal(hook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), sig,
                               sizeof sig),
                     0);
    assert_string_equal(sig, SPEC_SIG);
    /* and the same by hand, as a receiver computes it */
    assert_signature(SPEC_ID, "1614265330", SPEC_BODY, strlen(SPEC_BODY), sig);

    /* a different timestamp, id or body gives a different signature */
    char other[64];
    assert_int_equal(hook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS + 1, SPEC_BODY, strlen(SPEC_BODY),
                               other, sizeof other),
                     0);
    assert_string_not_equal(other, SPEC_SIG);
    assert_int_equal(hook_sign(SPEC_SECRET, "msg_other", SPEC_TS, SPEC_BODY, strlen(SPEC_BODY),
                               other, sizeof other),
                     0);
    assert_string_not_equal(other, SPEC_SIG);

    /* exactly big enough: "v1," + 44 + NUL; one byte less is refused */
    assert_int_equal(hook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), sig, 48),
                     0);
    assert_string_equal(sig, SPEC_SIG);
    assert_int_equal(hook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), sig, 47),
                     -1);
    /* an empty body is signable */
    assert_int_equal(hook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, "", 0, sig, sizeof sig), 0);
    assert_signature(SPEC_ID, "1614265330", "", 0, sig);
}

static void test_sign_malformed_secret(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "whsec_",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",              /* no prefix */
        "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",        /* wrong prefix */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",         /* bad length */
        "whsec_MfKQ9r8GKYqrTwjU!D8ILPZIo2LaLaSw",        /* not base64 */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw trailing",
        "whsec_MfKQ9r8G-_qrTwjUPD8ILPZIo2LaLaSw",        /* URL-safe alphabet */
        "whsec_AAAA",                                    /* 3-byte key: too short */
    };
    char sig[64];
    for (size_t i = 0; i < UTIL_ARRAY_LEN(bad); i++) {
        strcpy(sig, "untouched");
        assert_int_equal(hook_sign(bad[i], SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), sig,
                                   sizeof sig),
                         -1);
    }
    assert_int_equal(hook_sign(NULL, SPEC_ID, SPEC_TS, SPEC_BODY, 1, sig, sizeof sig), -1);
    assert_int_equal(hook_sign(SPEC_SECRET, NULL, SPEC_TS, SPEC_BODY, 1, sig, sizeof sig), -1);
    assert_int_equal(hook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, NULL, 3, sig, sizeof sig), -1);
    assert_int_equal(hook_sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY, 1, NULL, 64), -1);
}

/* ---- backoff ------------------------------------------------------------ */

static void test_backoff_bounds(void **state)
{
    (void)state;
    const int samples = 2000;
    double prev_mean = 0;
    for (int attempt = 1; attempt <= 14; attempt++) {
        /* independent statement of the schedule: base 1 s doubling, cap 10 min,
         * jitter within ±25 % and never past the cap */
        double base = 1000.0 * (double)(1u << (attempt - 1));
        double lo = 0.75 * (base < 600000 ? base : 600000);
        double hi = 1.25 * base < 600000 ? 1.25 * base : 600000;
        int64_t mn = INT64_MAX, mx = 0;
        double sum = 0;
        for (int i = 0; i < samples; i++) {
            int64_t d = hook_backoff_ms(attempt, 0);
            assert_true(d >= (int64_t)lo && d <= (int64_t)hi);
            assert_true(d <= 600000);
            if (attempt == 1)
                assert_true(d <= 2000);
            mn = d < mn ? d : mn;
            mx = d > mx ? d : mx;
            sum += (double)d;
        }
        double mean = sum / samples;
        assert_true(mx - mn > (int64_t)(hi - lo) / 2); /* there is jitter, spread over the range */
        if (attempt > 1 && base <= 300000) /* doubling, until the cap flattens it */
            assert_true(mean > 1.8 * prev_mean && mean < 2.2 * prev_mean);
        prev_mean = mean;
    }
    /* far past the cap, and silly inputs */
    for (int i = 0; i < samples; i++) {
        int64_t d = hook_backoff_ms(1000, 0);
        assert_true(d >= 450000 && d <= 600000);
        d = hook_backoff_ms(0, 0);
        assert_true(d >= 750 && d <= 1250);
        d = hook_backoff_ms(-5, -1);
        assert_true(d >= 750 && d <= 1250);
    }
    /* Retry-After is a floor, also above the cap */
    for (int i = 0; i < 200; i++) {
        assert_int_equal(hook_backoff_ms(1, 5000), 5000);
        assert_int_equal(hook_backoff_ms(30, 900000), 900000);
        int64_t d = hook_backoff_ms(3, 100); /* smaller than the backoff: no effect */
        assert_true(d >= 3000 && d <= 5000);
    }
}

/* ---- delivery ----------------------------------------------------------- */

static void test_deliver_200(void **state)
{
    (void)state;
    server_t *s = srv_start();
    chan_t c;
    make_chan(&c, "police-hook", s, 3000, 60000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    const char *body = "{\"type\":\"case.assigned\",\"data\":{\"case\":\"c-1\"}}";

    assert_int_equal(hook_pending(h), 0);
    assert_int_equal(hook_submit(h, &c.ch, "wh-200", body, clock_now_ms()), 0);
    assert_int_equal(hook_pending(h), 1);
    assert_int_equal(hook_timeout_ms(h), 0); /* due now */
    drive(h, &r, 1, 1, 0, 5000);

    assert_string_equal(r.done[0].id, "wh-200");
    assert_int_equal(r.done[0].outcome, HOOK_DELIVERED);
    assert_int_equal(r.done[0].attempts, 1);
    assert_string_equal(r.done[0].err, "");
    assert_int_equal(r.n_att, 1);
    assert_int_equal(r.att[0].status, 200);
    assert_string_equal(r.att[0].err, "");
    assert_int_equal(hook_pending(h), 0);
    assert_int_equal(hook_timeout_ms(h), -1);

    assert_int_equal(srv_nreqs(s), 1);
    const request_t *q = srv_req(s, 0);
    assert_true(strncmp(q->head, "POST /hook HTTP/1.1\r\n", 21) == 0);
    char v[256], ts[32], sig[128];
    assert_int_equal(req_header(q, "content-type", v, sizeof v), 0);
    assert_string_equal(v, "application/json");
    assert_int_equal(req_header(q, "user-agent", v, sizeof v), 0);
    assert_string_equal(v, "carehubd");
    assert_int_equal(req_header(q, "webhook-id", v, sizeof v), 0);
    assert_string_equal(v, "wh-200");
    assert_int_equal(req_header(q, "webhook-timestamp", ts, sizeof ts), 0);
    /* wall time, which receivers check against their own clocks */
    assert_true(llabs(strtoll(ts, NULL, 10) - util_now_ms() / 1000) <= 1);
    assert_int_equal(req_header(q, "webhook-signature", sig, sizeof sig), 0);
    assert_int_equal(req_header(q, "expect", v, sizeof v), -1);
    assert_int_equal(q->body_len, strlen(body));
    assert_memory_equal(q->body, body, q->body_len);
    assert_signature("wh-200", ts, q->body, q->body_len, sig);

    hook_destroy(&h);
    assert_null(h);
    hook_destroy(&h); /* twice is fine */
    srv_stop(&s);
}

static void test_retry_500_500_200(void **state)
{
    (void)state;
    server_t *s = srv_start();
    srv_push(s, status(500));
    srv_push(s, status(500));
    srv_push(s, status(200));
    chan_t c;
    make_chan(&c, "police-hook", s, 3000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    const char *body = "{\"type\":\"assignment.overdue\"}";
    assert_int_equal(hook_submit(h, &c.ch, "wh-retry", body, clock_now_ms()), 0);
    /* webhook-timestamp is wall-clock seconds: wait a real second between
     * attempts so that each attempt's own timestamp is visibly different */
    for (int i = 1; i <= 3; i++) {
        drive(h, &r, 0, i, 1, 5000);
        if (i < 3)
            sleep_ms(1050);
    }
    drive(h, &r, 1, 3, 1, 5000);

    assert_int_equal(r.done[0].outcome, HOOK_DELIVERED);
    assert_int_equal(r.done[0].attempts, 3);
    assert_int_equal(r.n_att, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(r.att[i].id, "wh-retry");
        assert_int_equal(r.att[i].attempt, i + 1);
        assert_int_equal(r.att[i].status, i < 2 ? 500 : 200);
        assert_string_equal(r.att[i].err, i < 2 ? "HTTP 500" : "");
    }
    assert_int_equal(srv_nreqs(s), 3);
    long long prev_ts = 0;
    char prev_sig[128] = "";
    for (int i = 0; i < 3; i++) {
        const request_t *q = srv_req(s, i);
        char id[80], ts[32], sig[128];
        assert_int_equal(req_header(q, "webhook-id", id, sizeof id), 0);
        assert_string_equal(id, "wh-retry"); /* stable across retries */
        assert_int_equal(req_header(q, "webhook-timestamp", ts, sizeof ts), 0);
        assert_int_equal(req_header(q, "webhook-signature", sig, sizeof sig), 0);
        assert_signature(id, ts, q->body, q->body_len, sig);
        assert_true(strtoll(ts, NULL, 10) > prev_ts); /* its own timestamp... */
        assert_string_not_equal(sig, prev_sig);         /* ...and signature */
        prev_ts = strtoll(ts, NULL, 10);
        snprintf(prev_sig, sizeof prev_sig, "%s", sig);
    }
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_410_stops(void **state)
{
    (void)state;
    server_t *s = srv_start();
    srv_push(s, status(410));
    chan_t c;
    make_chan(&c, "police-hook", s, 3000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    assert_int_equal(hook_submit(h, &c.ch, "wh-gone", "{}", clock_now_ms()), 0);
    drive(h, &r, 1, 1, 1, 5000);
    assert_int_equal(r.done[0].outcome, HOOK_FAILED);
    assert_int_equal(r.done[0].attempts, 1);
    assert_string_equal(r.done[0].err, "HTTP 410");
    assert_int_equal(r.att[0].status, 410);
    assert_int_equal(hook_pending(h), 0);
    assert_int_equal(srv_nreqs(s), 1);
    hook_destroy(&h);
    srv_stop(&s);
}

/* curl 7.88 reads any integer after "HTTP/2 " and ends the transfer with CURLE_OK; such
 * a code is no answer, reported as status 0 with a reason (found by fuzz_hook:
 * tests/fuzz/crashes/fuzz_hook-http2-status-88.http). */
static void test_invalid_status_codes(void **state)
{
    (void)state;
    static const struct {
        const char *raw;
        const char *err;
    } cases[] = {
        {"HTTP/2 -5\r\n\r\n", "invalid HTTP status -5"},
        {"HTTP/2 88\r\nContent-Length: 0\r\n\r\n", "invalid HTTP status 88"},
        {"HTTP/2 0\r\n\r\n", "invalid HTTP status 0"},
        {"HTTP/2 1000\r\nRetry-After: 3600\r\n\r\n", "invalid HTTP status 1000"},
    };
    server_t *s = srv_start();
    for (size_t i = 0; i < UTIL_ARRAY_LEN(cases); i++) {
        action_t a = act(ACT_RAW);
        a.raw = cases[i].raw;
        srv_push(s, a);
    }
    srv_push(s, status(200));
    chan_t c;
    make_chan(&c, "police-hook", s, 3000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    assert_int_equal(hook_submit(h, &c.ch, "wh-badcode", "{}", clock_now_ms()), 0);
    size_t n = UTIL_ARRAY_LEN(cases);
    for (size_t i = 0; i < n; i++) {
        drive(h, &r, 0, (int)i + 1, 0, 5000);
        assert_int_equal(r.att[i].status, 0);
        assert_string_equal(r.att[i].err, cases[i].err);
        assert_int_equal(hook_pending(h), 1);
        /* no Retry-After is read from an invalid answer: the plain backoff */
        long t = hook_timeout_ms(h);
        assert_true(t >= (750L << i) && t <= (1250L << i));
        assert_int_equal(clock_advance_ms(t), 0);
    }
    drive(h, &r, 1, (int)n + 1, 0, 5000);
    assert_int_equal(r.done[0].outcome, HOOK_DELIVERED);
    assert_int_equal(r.done[0].attempts, (int)n + 1);
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_timeout_until_max_age(void **state)
{
    (void)state;
    server_t *s = srv_start();
    srv_default(s, act(ACT_HANG));
    chan_t c;
    make_chan(&c, "slow-hook", s, 300, 5000); /* 300 ms real per attempt, 5 s virtual max_age */
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    int64_t created = clock_now_ms();
    int64_t real0 = util_mono_ms();
    assert_int_equal(hook_submit(h, &c.ch, "wh-timeout", "{}", created), 0);
    drive(h, &r, 1, 0, 1, 8000);

    assert_int_equal(r.done[0].outcome, HOOK_FAILED);
    assert_string_equal(r.done[0].err, "timeout");
    /* attempts at ~0, ~1 s, ~3 s (jittered), and a last one right at max_age */
    assert_int_equal(r.done[0].attempts, 4);
    assert_int_equal(r.n_att, 4);
    for (int i = 0; i < r.n_att; i++) {
        assert_int_equal(r.att[i].status, 0);
        assert_string_equal(r.att[i].err, "timeout");
    }
    assert_int_equal(clock_now_ms() - created, 5000);
    assert_true(util_mono_ms() - real0 >= 4 * 300 - 50); /* curl's timeout is real time */
    for (int i = 0; i < 50 && srv_accepted(s) < 4; i++)
        sleep_ms(10);
    assert_int_equal(srv_accepted(s), 4); /* every attempt did reach the receiver */
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_redirect_not_followed(void **state)
{
    (void)state;
    server_t *s = srv_start();
    action_t a = status(302);
    snprintf(a.extra, sizeof a.extra, "Location: http://127.0.0.1:%d/elsewhere\r\n", s->port);
    srv_push(s, a);
    srv_push(s, status(200));
    chan_t c;
    make_chan(&c, "police-hook", s, 3000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    assert_int_equal(hook_submit(h, &c.ch, "wh-redirect", "{}", clock_now_ms()), 0);

    drive(h, &r, 0, 1, 0, 5000); /* the first attempt only */
    assert_int_equal(r.att[0].status, 302);
    assert_string_equal(r.att[0].err, "HTTP 302");
    assert_int_equal(r.n_done, 0);
    assert_int_equal(hook_pending(h), 1);
    assert_int_equal(srv_nreqs(s), 1); /* not followed */

    drive(h, &r, 1, 2, 1, 5000);
    assert_int_equal(r.done[0].outcome, HOOK_DELIVERED);
    assert_int_equal(r.done[0].attempts, 2);
    assert_int_equal(srv_nreqs(s), 2);
    for (int i = 0; i < 2; i++)
        assert_true(strncmp(srv_req(s, i)->head, "POST /hook ", 11) == 0);
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_retry_after(void **state)
{
    (void)state;
    server_t *s = srv_start();
    action_t a = status(503);
    snprintf(a.extra, sizeof a.extra, "Retry-After: 5\r\n");
    srv_push(s, a);
    srv_push(s, status(200));
    chan_t c;
    make_chan(&c, "police-hook", s, 3000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    assert_int_equal(hook_submit(h, &c.ch, "wh-ra", "{}", clock_now_ms()), 0);
    drive(h, &r, 0, 1, 0, 5000);
    assert_int_equal(r.att[0].status, 503);
    /* the test clock has not moved: the retry is exactly Retry-After away,
     * not the ~1 s the backoff alone would give */
    assert_int_equal(hook_timeout_ms(h), 5000);
    assert_int_equal(clock_advance_ms(4990), 0);
    hook_perform(h);
    assert_int_equal(r.n_att, 1);
    assert_int_equal(hook_timeout_ms(h), 10);
    assert_int_equal(clock_advance_ms(10), 0);
    drive(h, &r, 1, 2, 0, 5000);
    assert_int_equal(r.done[0].outcome, HOOK_DELIVERED);
    assert_int_equal(r.done[0].attempts, 2);
    assert_int_equal(srv_nreqs(s), 2);

    /* the HTTP-date form */
    memset(&r, 0, sizeof r);
    r.h = h;
    a = status(429);
    time_t when = (time_t)(clock_now_ms() / 1000 + 10);
    struct tm tm;
    gmtime_r(&when, &tm);
    char date[64];
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(a.extra, sizeof a.extra, "Retry-After: %s\r\n", date);
    srv_push(s, a);
    srv_push(s, status(204));
    assert_int_equal(hook_submit(h, &c.ch, "wh-ra-date", "{}", clock_now_ms()), 0);
    drive(h, &r, 0, 1, 0, 5000);
    assert_int_equal(r.att[0].status, 429);
    long t = hook_timeout_ms(h);
    assert_true(t > 9000 && t <= 10000);
    drive(h, &r, 1, 2, 1, 5000);
    assert_int_equal(r.done[0].outcome, HOOK_DELIVERED);
    assert_int_equal(r.att[1].status, 204);

    /* a Retry-After past max_age: stop now rather than come back too early */
    memset(&r, 0, sizeof r);
    r.h = h;
    a = status(503);
    snprintf(a.extra, sizeof a.extra, "Retry-After: 7200\r\n");
    srv_push(s, a);
    chan_t short_age;
    make_chan(&short_age, "police-hook", s, 3000, 60000);
    assert_int_equal(hook_submit(h, &short_age.ch, "wh-ra-long", "{}", clock_now_ms()), 0);
    drive(h, &r, 1, 1, 0, 5000);
    assert_int_equal(r.done[0].outcome, HOOK_FAILED);
    assert_int_equal(r.done[0].attempts, 1);
    assert_string_equal(r.done[0].err, "HTTP 503 (Retry-After beyond max_age)");
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_max_age_passed_before_attempt(void **state)
{
    (void)state;
    server_t *s = srv_start();
    chan_t c;
    make_chan(&c, "police-hook", s, 3000, 60000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    /* re-submitted after a restart, older than max_age: no attempt */
    assert_int_equal(hook_submit(h, &c.ch, "wh-old", "{}", clock_now_ms() - 60001), 0);
    /* exactly max_age old: one attempt still goes */
    assert_int_equal(hook_submit(h, &c.ch, "wh-edge", "{}", clock_now_ms() - 60000), 0);
    drive(h, &r, 2, 1, 0, 5000);
    assert_string_equal(r.done[0].id, "wh-old");
    assert_int_equal(r.done[0].outcome, HOOK_FAILED);
    assert_int_equal(r.done[0].attempts, 0);
    assert_string_equal(r.done[0].err, "max_age passed before an attempt");
    assert_string_equal(r.done[1].id, "wh-edge");
    assert_int_equal(r.done[1].outcome, HOOK_DELIVERED);
    assert_int_equal(srv_nreqs(s), 1);
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_ssrf_refused(void **state)
{
    (void)state;
    server_t *s = srv_start();
    chan_t c;
    make_chan(&c, "police-hook", s, 1000, 3000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg_ten, &r); /* 127.0.0.1 is outside 10.0.0.0/8 */
    assert_int_equal(hook_submit(h, &c.ch, "wh-ssrf", "{}", clock_now_ms()), 0);
    drive(h, &r, 1, 0, 1, 5000);
    assert_int_equal(r.done[0].outcome, HOOK_FAILED);
    assert_string_equal(r.done[0].err, "address 127.0.0.1 not in webhook_allow");
    assert_true(r.done[0].attempts >= 3);
    assert_int_equal(r.n_att, r.done[0].attempts);
    for (int i = 0; i < r.n_att; i++) {
        assert_int_equal(r.att[i].status, 0);
        assert_string_equal(r.att[i].err, "address 127.0.0.1 not in webhook_allow");
    }
    sleep_ms(100);
    assert_int_equal(srv_accepted(s), 0); /* no connection ever reached it */
    assert_int_equal(srv_nreqs(s), 0);
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_slow_receiver_does_not_delay_others(void **state)
{
    (void)state;
    server_t *slow = srv_start(), *fast = srv_start();
    action_t a = status(200);
    a.delay_ms = 2000;
    srv_default(slow, a);
    chan_t cs, cf;
    make_chan(&cs, "slow-hook", slow, 5000, 3600000);
    make_chan(&cf, "fast-hook", fast, 5000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    int64_t t0 = util_mono_ms();
    assert_int_equal(hook_submit(h, &cs.ch, "wh-slow", "{}", clock_now_ms()), 0);
    assert_int_equal(hook_submit(h, &cf.ch, "wh-fast", "{}", clock_now_ms()), 0);
    drive(h, &r, 2, 2, 0, 6000);
    assert_string_equal(r.done[0].id, "wh-fast");
    assert_string_equal(r.done[1].id, "wh-slow");
    assert_int_equal(r.done[0].outcome, HOOK_DELIVERED);
    assert_int_equal(r.done[1].outcome, HOOK_DELIVERED);
    assert_true(r.done[0].at_ms - t0 < 1000);
    assert_true(r.done[1].at_ms - t0 >= 1900);
    /* both were in flight at once: the slow request reached its server at once,
     * and the slow message was still pending when the fast one was delivered */
    assert_true(srv_req(slow, 0)->at_ms - t0 < 1000);
    assert_int_equal(r.done[0].pending, 1);
    assert_int_equal(r.done[1].pending, 0);
    hook_destroy(&h);
    srv_stop(&slow);
    srv_stop(&fast);
}

static void test_malformed_channel_fails_at_once(void **state)
{
    (void)state;
    server_t *s = srv_start();
    chan_t c;
    make_chan(&c, "bad-secret", s, 3000, 3600000);
    static char bad_secret[] = "whsec_not base64!";
    c.ch.secret = bad_secret;
    chan_t n;
    make_chan(&n, "no-secret", s, 3000, 3600000);
    n.ch.secret = NULL;
    chan_t f;
    make_chan(&f, "ftp-url", s, 3000, 3600000);
    snprintf(f.url, sizeof f.url, "ftp://127.0.0.1:%d/x", s->port);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);

    assert_int_equal(hook_submit(h, &c.ch, "wh-bad", "{}", clock_now_ms()), 0);
    assert_int_equal(hook_submit(h, &n.ch, "wh-null", "{}", clock_now_ms()), 0);
    assert_int_equal(hook_submit(h, &f.ch, "wh-ftp", "{}", clock_now_ms()), 0);
    assert_int_equal(hook_pending(h), 3);
    assert_int_equal(hook_timeout_ms(h), 0);
    hook_perform(h);
    assert_int_equal(r.n_done, 3);
    assert_int_equal(r.n_att, 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r.done[i].outcome, HOOK_FAILED);
        assert_int_equal(r.done[i].attempts, 0);
    }
    assert_non_null(strstr(r.done[0].err, "bad-secret: secret is malformed"));
    assert_non_null(strstr(r.done[1].err, "no-secret: secret is malformed"));
    assert_non_null(strstr(r.done[2].err, "url must start with http:// or https://"));
    assert_int_equal(hook_pending(h), 0);
    assert_int_equal(srv_accepted(s), 0);

    /* ids: invalid ones and duplicates are refused */
    chan_t g;
    make_chan(&g, "good", s, 3000, 3600000);
    assert_int_equal(hook_submit(h, &g.ch, "", "{}", 0), -1);
    assert_int_equal(hook_submit(h, &g.ch, "a b", "{}", 0), -1);
    assert_int_equal(hook_submit(h, &g.ch, "x\r\nInjected: 1", "{}", 0), -1);
    char long_id[80];
    memset(long_id, 'a', 65);
    long_id[65] = '\0';
    assert_int_equal(hook_submit(h, &g.ch, long_id, "{}", 0), -1);
    long_id[64] = '\0';
    assert_int_equal(hook_submit(h, &g.ch, long_id, "{}", clock_now_ms()), 0);
    assert_int_equal(hook_submit(h, &g.ch, long_id, "{}", clock_now_ms()), -1); /* duplicate */
    assert_int_equal(hook_submit(h, NULL, "x", "{}", 0), -1);
    assert_int_equal(hook_submit(h, &g.ch, "x", NULL, 0), -1);
    assert_int_equal(hook_submit(NULL, &g.ch, "x", "{}", 0), -1);
    assert_int_equal(hook_pending(h), 1);
    drive(h, &r, 4, 1, 0, 5000);
    assert_int_equal(r.done[3].outcome, HOOK_DELIVERED);
    /* once finished the id may be used again */
    assert_int_equal(hook_submit(h, &g.ch, long_id, "{}", clock_now_ms()), 0);
    drive(h, &r, 5, 2, 0, 5000);
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_reset_and_big_responses(void **state)
{
    (void)state;
    server_t *s = srv_start();
    srv_push(s, act(ACT_RESET));
    srv_push(s, status(200));
    action_t big = status(500);
    big.body_bytes = 1 << 20;
    srv_push(s, big);
    big.status = 200;
    srv_push(s, big);
    chan_t c;
    make_chan(&c, "police-hook", s, 3000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);

    assert_int_equal(hook_submit(h, &c.ch, "wh-reset", "{}", clock_now_ms()), 0);
    drive(h, &r, 1, 2, 1, 5000);
    assert_int_equal(r.done[0].outcome, HOOK_DELIVERED);
    assert_int_equal(r.done[0].attempts, 2);
    assert_int_equal(r.att[0].status, 0);
    assert_true(r.att[0].err[0] != '\0');
    assert_string_not_equal(r.att[0].err, "timeout");

    /* 1 MiB answers: read up to the cap, then hung up on; the status decides */
    assert_int_equal(hook_submit(h, &c.ch, "wh-big", "{}", clock_now_ms()), 0);
    drive(h, &r, 2, 4, 1, 5000);
    assert_int_equal(r.att[2].status, 500);
    assert_string_equal(r.att[2].err, "HTTP 500");
    assert_int_equal(r.done[1].outcome, HOOK_DELIVERED);
    assert_int_equal(r.done[1].attempts, 2);
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_done_may_submit(void **state)
{
    (void)state;
    server_t *gone = srv_start(), *ok = srv_start();
    srv_default(gone, status(410));
    chan_t cg, cf;
    make_chan(&cg, "police-hook", gone, 3000, 3600000);
    make_chan(&cf, "duty-sms", ok, 3000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    r.fallback = &cf.ch;
    assert_int_equal(hook_submit(h, &cg.ch, "wh-primary", "{}", clock_now_ms()), 0);
    drive(h, &r, 2, 2, 0, 5000);
    assert_string_equal(r.done[0].id, "wh-primary");
    assert_int_equal(r.done[0].outcome, HOOK_FAILED);
    assert_string_equal(r.done[1].id, "wh-primary.fb");
    assert_int_equal(r.done[1].outcome, HOOK_DELIVERED);
    assert_int_equal(srv_nreqs(ok), 1);
    assert_int_equal(srv_req(ok, 0)->body_len, strlen("{\"fallback\":true}"));
    hook_destroy(&h);
    srv_stop(&gone);
    srv_stop(&ok);
}

static void test_many_messages(void **state)
{
    (void)state;
    server_t *s = srv_start();
    chan_t c;
    make_chan(&c, "police-hook", s, 5000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    enum { N = 100 }; /* more than one channel's share of slots, and a hash that grows */
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "wh-many-%03d", i);
        assert_int_equal(hook_submit(h, &c.ch, id, "{\"n\":1}", clock_now_ms()), 0);
    }
    assert_int_equal(hook_pending(h), N);
    drive(h, &r, N, N, 0, 10000);
    assert_int_equal(hook_pending(h), 0);
    assert_int_equal(srv_nreqs(s), N);
    int seen[N];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r.done[i].outcome, HOOK_DELIVERED);
        assert_int_equal(r.done[i].attempts, 1);
        char id[80];
        assert_int_equal(req_header(srv_req(s, i), "webhook-id", id, sizeof id), 0);
        int k = atoi(id + 8);
        assert_true(k >= 0 && k < N);
        seen[k]++;
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    hook_destroy(&h);
    srv_stop(&s);
}

/* The broker's own loop: hook_socket_count() items, hook_pollitems(), poll,
 * hook_perform_items() with the poll results. Until `want_done` are done. */
static void drive_items(hook_t *h, rec_t *r, int want_done, int64_t limit_ms)
{
    int64_t end = util_mono_ms() + limit_ms;
    while (r->n_done < want_done && util_mono_ms() < end) {
        zmq_pollitem_t items[128];
        size_t want = hook_socket_count(h);
        assert_true(want <= 128);
        int n = hook_pollitems(h, items, 128);
        assert_true(n >= 0 && (size_t)n <= want);
        long t = hook_timeout_ms(h);
        if (t < 0 || t > 50)
            t = 50;
        assert_true(zmq_poll(items, n, t) >= 0);
        hook_perform_items(h, items, n);
    }
    assert_int_equal(r->n_done, want_done);
}

/* Submit n messages "wh-cc-<i>" to a channel of `limit` (0: unset) whose
 * receiver answers each after delay_ms; return the most requests the receiver
 * had waiting at once. Every message delivered once, on its first attempt;
 * and in order: the i-th request to arrive is at most message i + limit - 1
 * (a message starts only when one of those before it has ended). */
static int deliver_with_limit(int limit, int n, int delay_ms)
{
    server_t *s = srv_start_concurrent();
    action_t a = status(200);
    a.delay_ms = delay_ms;
    srv_default(s, a);
    chan_t c;
    make_chan(&c, "police-hook", s, 5000, 3600000);
    c.ch.concurrency = limit;
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "wh-cc-%02d", i);
        assert_int_equal(hook_submit(h, &c.ch, id, "{\"n\":1}", clock_now_ms()), 0);
    }
    drive_items(h, &r, n, 5000);
    assert_int_equal(hook_pending(h), 0);
    assert_int_equal(r.n_att, n);
    int seen[64];
    assert_true(n <= 64);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < n; i++) {
        assert_int_equal(r.done[i].outcome, HOOK_DELIVERED);
        assert_int_equal(r.done[i].attempts, 1);
    }
    sleep_ms(20); /* the server's threads record before they answer; nothing more comes */
    assert_int_equal(srv_nreqs(s), n);
    assert_int_equal(srv_accepted(s), n);
    int eff = limit > 0 ? limit : CONFIG_CHANNEL_CONCURRENCY;
    for (int i = 0; i < n; i++) {
        char id[80];
        assert_int_equal(req_header(srv_req(s, i), "webhook-id", id, sizeof id), 0);
        int k = atoi(id + 6);
        assert_true(k >= 0 && k < n);
        seen[k]++;
        if (k > i + eff - 1)
            fail_msg("request %d to arrive was message %d: past %d in flight", i, k, eff);
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(seen[i], 1);
    int max = srv_max_answering(s);
    hook_destroy(&h);
    srv_stop(&s);
    return max;
}

/* channels[].concurrency bounds the requests a receiver has in flight: with 2,
 * never more than 2 of 10 at once (and 2 are), with 5 it reaches 5: the limit,
 * not the receiver or the loop, is what bounds it. */
static void test_channel_concurrency_limit(void **state)
{
    (void)state;
    int max2 = deliver_with_limit(2, 10, 120);
    if (max2 != 2)
        fail_msg("concurrency 2: the receiver had %d requests in flight at once", max2);
    int max5 = deliver_with_limit(5, 10, 250);
    if (max5 != 5)
        fail_msg("concurrency 5: the receiver had %d requests in flight at once", max5);
}

/* A channel without `concurrency` (hand-built: 0) gets the default, 64: ten
 * messages are all in flight at once. */
static void test_channel_concurrency_default(void **state)
{
    (void)state;
    int max = deliver_with_limit(0, 10, 250);
    if (max != 10)
        fail_msg("default concurrency: the receiver had %d requests in flight at once", max);
}

/* A channel full (concurrency 1): B and C wait for A's slot. While A is in
 * flight B's max_age passes, so when A ends and B gets the slot, B fails
 * without an attempt; the slot is still free, and C must go next rather than
 * wait for traffic that may never come on this channel. */
static void test_concurrency_expired_waiter_frees_its_turn(void **state)
{
    (void)state;
    server_t *s = srv_start();
    action_t slow = status(200);
    slow.delay_ms = 300;
    srv_push(s, slow); /* A's answer takes a while; the rest at once */
    chan_t c;
    make_chan(&c, "police-hook", s, 5000, 3600000);
    c.ch.concurrency = 1;
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    int64_t now = clock_now_ms();
    assert_int_equal(hook_submit(h, &c.ch, "wh-a", "{}", now), 0);
    assert_int_equal(hook_submit(h, &c.ch, "wh-b", "{}", now - 3600000 + 100), 0); /* 100 ms left */
    assert_int_equal(hook_submit(h, &c.ch, "wh-c", "{}", now), 0);
    /* A starts; B and C wait for the one slot */
    int64_t end = util_mono_ms() + 2000;
    while (srv_nreqs(s) < 1 && util_mono_ms() < end) {
        zmq_pollitem_t items[8];
        int n = hook_pollitems(h, items, 8);
        assert_true(zmq_poll(items, n, 10) >= 0);
        hook_perform_items(h, items, n);
    }
    assert_int_equal(srv_nreqs(s), 1);
    assert_int_equal(r.n_done, 0);
    assert_int_equal(hook_pending(h), 3);
    /* B's max_age passes (and more than the grace of a late wake-up) */
    assert_int_equal(clock_advance_ms(5000), 0);

    drive_items(h, &r, 2, 2000); /* A delivered, B given up */
    assert_string_equal(r.done[0].id, "wh-a");
    assert_int_equal(r.done[0].outcome, HOOK_DELIVERED);
    assert_string_equal(r.done[1].id, "wh-b");
    assert_int_equal(r.done[1].outcome, HOOK_FAILED);
    assert_int_equal(r.done[1].attempts, 0);
    /* C: delivered soon, with no other message on the channel to wake it */
    end = util_mono_ms() + 1500;
    while (r.n_done < 3 && util_mono_ms() < end) {
        zmq_pollitem_t items[8];
        int n = hook_pollitems(h, items, 8);
        long t = hook_timeout_ms(h);
        assert_true(zmq_poll(items, n, t < 0 || t > 50 ? 50 : t) >= 0);
        hook_perform_items(h, items, n);
    }
    if (r.n_done < 3) {
        size_t pending = hook_pending(h);
        long t = hook_timeout_ms(h);
        int nreqs = srv_nreqs(s);
        hook_destroy(&h);
        srv_stop(&s);
        fail_msg("wh-c was never attempted: %zu pending, hook_timeout_ms %ld, %d request(s) at "
                 "the receiver (stranded behind a waiter whose max_age passed)",
                 pending, t, nreqs);
    }
    assert_string_equal(r.done[2].id, "wh-c");
    assert_int_equal(r.done[2].outcome, HOOK_DELIVERED);
    assert_int_equal(srv_nreqs(s), 2);
    hook_destroy(&h);
    srv_stop(&s);
}

static void test_destroy_in_flight(void **state)
{
    (void)state;
    server_t *s = srv_start();
    srv_default(s, act(ACT_HANG));
    chan_t c;
    make_chan(&c, "police-hook", s, 5000, 3600000);
    rec_t r;
    hook_t *h = new_hook(&g_cfg, &r);
    assert_int_equal(hook_submit(h, &c.ch, "wh-a", "{}", clock_now_ms()), 0);
    assert_int_equal(hook_submit(h, &c.ch, "wh-b", "{}", clock_now_ms() + 1), 0);
    int64_t end = util_mono_ms() + 2000;
    while (srv_nreqs(s) < 1 && util_mono_ms() < end) {
        zmq_pollitem_t items[8];
        int n = hook_pollitems(h, items, 8);
        assert_true(n <= 8);
        long t = hook_timeout_ms(h);
        assert_true(zmq_poll(items, n, t < 0 || t > 20 ? 20 : t) >= 0);
        hook_perform(h);
    }
    assert_int_equal(srv_nreqs(s), 1);
    assert_int_equal(hook_pending(h), 2);
    hook_destroy(&h); /* aborts both; no callbacks, nothing leaks (ASan) */
    assert_null(h);
    assert_int_equal(r.n_done, 0);
    srv_stop(&s);

    /* hook_pollitems/hook_timeout_ms/hook_perform on NULL or empty */
    assert_int_equal(hook_pollitems(NULL, NULL, 0), 0);
    assert_int_equal(hook_timeout_ms(NULL), -1);
    hook_perform(NULL);
    assert_int_equal(hook_pending(NULL), 0);
    assert_null(hook_new(NULL, NULL, NULL, NULL));
}

int main(void)
{
    if (!getenv("CAREHUB_LOG"))
        log_set_level(LOG_ERROR);
    else
        log_set_level(LOG_DEBUG);
    if (sodium_init() < 0)
        return 1;
    clock_enable_test();
    g_cfg.webhook_allow = &g_loopback;
    g_cfg.n_webhook_allow = 1;
    g_cfg_ten.webhook_allow = &g_tennet;
    g_cfg_ten.n_webhook_allow = 1;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_spec_vector),
        cmocka_unit_test(test_sign_malformed_secret),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_deliver_200),
        cmocka_unit_test(test_retry_500_500_200),
        cmocka_unit_test(test_410_stops),
        cmocka_unit_test(test_invalid_status_codes),
        cmocka_unit_test(test_timeout_until_max_age),
        cmocka_unit_test(test_redirect_not_followed),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_max_age_passed_before_attempt),
        cmocka_unit_test(test_ssrf_refused),
        cmocka_unit_test(test_slow_receiver_does_not_delay_others),
        cmocka_unit_test(test_malformed_channel_fails_at_once),
        cmocka_unit_test(test_reset_and_big_responses),
        cmocka_unit_test(test_done_may_submit),
        cmocka_unit_test(test_many_messages),
        cmocka_unit_test(test_channel_concurrency_limit),
        cmocka_unit_test(test_channel_concurrency_default),
        cmocka_unit_test(test_concurrency_expired_waiter_frees_its_turn),
        cmocka_unit_test(test_destroy_in_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
