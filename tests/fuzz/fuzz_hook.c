/*
 * fuzz_hook.c — libFuzzer target for webhook response handling: whatever a
 * webhook receiver answers must never crash the broker or make broker/hook.c
 * misbehave.
 *
 * The input is what an HTTP server sends back to the broker's POST, byte for
 * byte, after two control bytes:
 *
 *   data[0]  control bits:
 *            0x01  close with RST (SO_LINGER 0) instead of FIN
 *            0x02  short max_age (10 minutes) instead of 60 days, so a long
 *                  Retry-After makes the message fail for good
 *            0x04  write the response in two parts, split at data[1] bytes;
 *                  the hook reads the first part before the second is sent
 *            0x08  append 70000 bytes of 'x' (past hook.c's 64 KiB response cap)
 *            0x10  when a retry is scheduled within 10 minutes: move the test
 *                  clock to it and answer the second attempt 200, which must
 *                  deliver the message at attempt 2
 *   data[1]  the split point for 0x04
 *   data[2…] the response: status line, headers, body (possibly cut, garbage)
 *
 * Each input runs the real engine: hook_new(), hook_submit() of one message to
 * a channel whose url is a listening socket of this process on 127.0.0.1 (an
 * ephemeral port, set up once; webhook_allow is 127.0.0.0/8), then the
 * broker's loop — hook_pollitems() plus the server's own sockets in one
 * zmq_poll(), hook_timeout_ms(), hook_perform() — single-threaded: the loop
 * accepts the hook's connection, reads its whole request (checked: POST /hook,
 * a valid Standard Webhooks signature, the same webhook-id on every attempt),
 * writes the response and closes. It stops when the attempt callback has come,
 * runs hook_perform() once more (no second report may follow), checks the
 * invariants below, and hook_destroy() frees everything (leaks are checked).
 *
 * Invariants (a violation prints "fuzz_hook: invariant broken" and aborts):
 *  - one attempt callback per attempt, numbered 1, 2, with the submitted id;
 *    the request of every attempt is intact (above);
 *  - http_status is 0 or 100..999 (hook.h); when the response starts with a
 *    well-formed status line "HTTP/1.[01] NNN[ reason]\r?\n" (NNN 200..999,
 *    reason without CR, LF or NUL) it is NNN (after an RST, 0 or NNN: a peer's
 *    reset may discard unread data, though Linux keeps it);
 *  - the error is "" for 2xx, "HTTP NNN…" for other statuses, and neither ""
 *    nor curl's "No error" for 0;
 *  - 2xx: delivered at once (done callback, outcome DELIVERED, pending 0);
 *    410: failed at once with "HTTP 410"; any other answer: a retry is
 *    scheduled (no done callback, hook_pending() 1, hook_timeout_ms() in
 *    0..600000, and 750..1250 — the first backoff — when the response holds no
 *    "Retry-After" anywhere), except with the short max_age, where only a
 *    Retry-After beyond it may fail the message at once, with
 *    "(Retry-After beyond max_age)";
 *  - when the first header line is "Retry-After:" with 1..9 digits or an
 *    IMF-fixdate (expected_retry_after_ms()), the retry is exactly that far
 *    away (at least the first backoff, and hook_timeout_ms() says at most
 *    600000), or, beyond the short max_age, the message failed;
 *  - no attempt takes longer than the channel's timeout (1 s) plus 4 s.
 *
 * Retry times come from the test clock (clock_enable_test() at start), which
 * only moves forward: with 0x10 it moves by up to 10 minutes per input, so an
 * HTTP-date Retry-After is read against a clock that drifts over a run (only
 * the retry delay depends on it, and the oracle reads the same clock).
 *
 * libcurl is not instrumented, so coverage guides the fuzzer only through
 * hook.c and this file; the seeds (make_corpus.py) carry the HTTP shapes.
 * FUZZ_HOOK_VERBOSE=1 prints one line per input (status, error, outcome).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "config.h"
#include "hook.h"
#include "log.h"
#include "util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CTL_RST 0x01
#define CTL_SHORT_AGE 0x02
#define CTL_SPLIT 0x04
#define CTL_PAD 0x08
#define CTL_RETRY 0x10

#define CHANNEL_TIMEOUT_MS 1000
#define SHORT_MAX_AGE_MS (10LL * 60 * 1000)
#define LONG_MAX_AGE_MS (60LL * 24 * 3600 * 1000)
#define ATTEMPT_LIMIT_MS (CHANNEL_TIMEOUT_MS + 4000) /* curl must end it long before */
#define PAD_BYTES 70000
#define REQ_MAX 16384
#define MAX_CONNS 4
#define MSG_ID "fz-msg-1"
#define MSG_BODY "{\"case\":\"case-000001\",\"event\":\"escalation\",\"step\":1}"

static const char SECRET[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
static const char OK_RESPONSE[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static config_cidr_t loopback = {4, {127, 0, 0, 0}, 8};
static config_t cfg;
static char url[64];
static int lfd = -1;
static int verbose; /* FUZZ_HOOK_VERBOSE=1: one line per input on stderr */

#define FAIL(...)                                                                  \
    do {                                                                           \
        fprintf(stderr, "fuzz_hook: invariant broken (line %d): ", __LINE__);      \
        fprintf(stderr, __VA_ARGS__);                                              \
        fputc('\n', stderr);                                                       \
        abort();                                                                   \
    } while (0)
#define CHECK(cond, ...)                                                           \
    do {                                                                           \
        if (!(cond))                                                               \
            FAIL(__VA_ARGS__);                                                     \
    } while (0)

/* ---- what the hook reported ------------------------------------------------ */

typedef struct {
    hook_t *h;
    int n_att;
    int att_no[4];
    long att_status[4];
    char att_err[4][256];
    int n_done;
    hook_outcome_t outcome;
    int done_attempts;
    char done_err[256];
    size_t done_pending;
} rec_t;

static void on_attempt(void *ud, const char *id, int attempt, long http_status, const char *error)
{
    rec_t *r = ud;
    CHECK(strcmp(id, MSG_ID) == 0, "attempt for id %s", id);
    CHECK(error != NULL, "attempt error NULL");
    CHECK(r->n_att < 4, "more than 4 attempts");
    r->att_no[r->n_att] = attempt;
    r->att_status[r->n_att] = http_status;
    snprintf(r->att_err[r->n_att], sizeof r->att_err[0], "%s", error);
    r->n_att++;
}

static void on_done(void *ud, const char *id, hook_outcome_t outcome, int attempts,
                    const char *last_error)
{
    rec_t *r = ud;
    CHECK(strcmp(id, MSG_ID) == 0, "done for id %s", id);
    CHECK(last_error != NULL, "done error NULL");
    r->n_done++;
    r->outcome = outcome;
    r->done_attempts = attempts;
    snprintf(r->done_err, sizeof r->done_err, "%s", last_error);
    r->done_pending = hook_pending(r->h);
}

/* ---- the receiver: one listening socket, connections polled with the hook's -- */

typedef struct {
    int fd;
    char req[REQ_MAX + 1];
    size_t len;
    int complete;      /* the whole request (head and Content-Length body) is in */
} conn_t;

typedef struct {
    conn_t conns[MAX_CONNS];
    const uint8_t *out; /* the response to send on the first complete request */
    size_t out_len;
    size_t split;       /* write out[0..split) first, the rest on a later turn */
    int split_pending;  /* 1 between the two parts: one loop turn for the hook */
    int pad;            /* append PAD_BYTES of 'x' */
    int rst;
    int writer;         /* index of the connection being answered, -1 none */
    size_t sent;        /* bytes of out (then of the pad) sent */
    int answered;       /* the response went out and the connection is closed */
    char webhook_id[80];
} server_t;

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        FAIL("fcntl: %s", strerror(errno));
}

static void conn_close(conn_t *c, int rst)
{
    if (c->fd < 0)
        return;
    if (rst) {
        struct linger lg = {1, 0};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);
    c->fd = -1;
    c->len = 0;
    c->complete = 0;
}

/* A header's value in a request head (case-insensitive name); 0, or -1 if absent. */
static int req_header(const char *head, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t len = e ? (size_t)(e - v) : strlen(v);
            if (len >= n)
                return -1;
            memcpy(out, v, len);
            out[len] = '\0';
            return 0;
        }
    }
    return -1;
}

/* Check a complete request the way a receiver would; abort when it is wrong. */
static void check_request(server_t *s, conn_t *c, size_t head_len)
{
    char id[80], ts[32], sig[128], want[128];
    const char *head = c->req;
    CHECK(strncmp(head, "POST /hook HTTP/1.1\r\n", 21) == 0, "request line: %.40s", head);
    char saved = c->req[head_len];
    c->req[head_len] = '\0';
    CHECK(req_header(head, "webhook-id", id, sizeof id) == 0, "no webhook-id");
    CHECK(req_header(head, "webhook-timestamp", ts, sizeof ts) == 0, "no webhook-timestamp");
    CHECK(req_header(head, "webhook-signature", sig, sizeof sig) == 0, "no webhook-signature");
    c->req[head_len] = saved;
    CHECK(strcmp(id, MSG_ID) == 0, "webhook-id %s", id);
    if (s->webhook_id[0])
        CHECK(strcmp(s->webhook_id, id) == 0, "webhook-id changed across retries");
    snprintf(s->webhook_id, sizeof s->webhook_id, "%s", id);
    const char *body = c->req + head_len;
    size_t body_len = c->len - head_len;
    CHECK(body_len == strlen(MSG_BODY) && memcmp(body, MSG_BODY, body_len) == 0, "request body");
    CHECK(hook_sign(SECRET, id, strtoll(ts, NULL, 10), body, body_len, want, sizeof want) == 0,
          "hook_sign");
    CHECK(strcmp(sig, want) == 0, "signature %s, want %s", sig, want);
}

/* Read what connection c has; mark it complete when the request is all in. */
static void conn_read(server_t *s, conn_t *c)
{
    for (;;) {
        CHECK(c->len < REQ_MAX, "request larger than %d bytes", REQ_MAX);
        ssize_t r = recv(c->fd, c->req + c->len, REQ_MAX - c->len, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (r <= 0) { /* the hook gave up on this connection (e.g. a cached one) */
            conn_close(c, 0);
            return;
        }
        c->len += (size_t)r;
        c->req[c->len] = '\0';
        char *e = strstr(c->req, "\r\n\r\n");
        if (!e)
            continue;
        size_t head_len = (size_t)(e - c->req) + 4;
        char cl[32];
        char saved = c->req[head_len];
        c->req[head_len] = '\0';
        size_t want = req_header(c->req, "content-length", cl, sizeof cl) == 0
                          ? (size_t)strtoul(cl, NULL, 10)
                          : 0;
        c->req[head_len] = saved;
        if (c->len >= head_len + want) {
            CHECK(c->len == head_len + want, "bytes after the request");
            check_request(s, c, head_len);
            c->complete = 1;
            return;
        }
    }
}

/* Send what the writer still has to send; close it when all is out (or the hook hung up). */
static void conn_write(server_t *s)
{
    conn_t *c = &s->conns[s->writer];
    static char pad[PAD_BYTES];
    if (!pad[0])
        memset(pad, 'x', sizeof pad);
    size_t total = s->out_len + (s->pad ? PAD_BYTES : 0);
    while (s->sent < total) {
        size_t limit = s->split_pending ? s->split : total;
        if (s->sent >= limit) {
            s->split_pending = 0; /* the rest on the next turn, after hook_perform() */
            return;
        }
        const char *p;
        size_t n;
        if (s->sent < s->out_len) {
            p = (const char *)s->out + s->sent;
            n = (limit < s->out_len ? limit : s->out_len) - s->sent;
        } else {
            p = pad + (s->sent - s->out_len);
            n = limit - s->sent;
        }
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (w <= 0)
            break; /* the hook hung up (e.g. at its response cap) */
        s->sent += (size_t)w;
    }
    conn_close(c, s->rst);
    s->writer = -1;
    s->answered = 1;
}

static void server_step(server_t *s)
{
    for (;;) { /* accept whatever is pending */
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            break;
        set_nonblock(fd);
        int i = 0;
        while (i < MAX_CONNS && s->conns[i].fd >= 0)
            i++;
        CHECK(i < MAX_CONNS, "more than %d connections at once", MAX_CONNS);
        s->conns[i].fd = fd;
        s->conns[i].len = 0;
        s->conns[i].complete = 0;
    }
    for (int i = 0; i < MAX_CONNS; i++) {
        conn_t *c = &s->conns[i];
        if (c->fd >= 0 && !c->complete)
            conn_read(s, c);
        if (c->fd >= 0 && c->complete && s->writer < 0 && !s->answered)
            s->writer = i;
        else if (c->fd >= 0 && c->complete && s->writer != i)
            FAIL("a second request in one attempt");
    }
    if (s->writer >= 0)
        conn_write(s);
}

static void server_reset(server_t *s, const uint8_t *out, size_t out_len, size_t split, int pad,
                         int rst)
{
    for (int i = 0; i < MAX_CONNS; i++)
        conn_close(&s->conns[i], 0);
    s->out = out;
    s->out_len = out_len;
    s->pad = pad;
    s->rst = rst;
    size_t total = out_len + (pad ? PAD_BYTES : 0);
    s->split = split < total ? split : total;
    s->split_pending = split > 0 && split < total;
    s->writer = -1;
    s->sent = 0;
    s->answered = 0;
}

static void server_close_all(server_t *s)
{
    for (int i = 0; i < MAX_CONNS; i++)
        conn_close(&s->conns[i], 0);
    for (;;) { /* nothing may be left in the backlog for the next input */
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            break;
        close(fd);
    }
}

/* ---- the broker's loop ------------------------------------------------------ */

/* Run until `want` attempts were reported (abort past ATTEMPT_LIMIT_MS). */
static void drive(hook_t *h, rec_t *r, server_t *s, int want)
{
    int64_t end = util_mono_ms() + ATTEMPT_LIMIT_MS;
    while (r->n_att < want) {
        CHECK(util_mono_ms() < end, "attempt %d not reported within %d ms", want,
              ATTEMPT_LIMIT_MS);
        zmq_pollitem_t items[48];
        int n = hook_pollitems(h, items, 40);
        CHECK(n >= 0 && n <= 40, "hook_pollitems %d", n);
        items[n].socket = NULL;
        items[n].fd = lfd;
        items[n].events = ZMQ_POLLIN;
        items[n].revents = 0;
        n++;
        for (int i = 0; i < MAX_CONNS; i++) {
            if (s->conns[i].fd < 0)
                continue;
            items[n].socket = NULL;
            items[n].fd = s->conns[i].fd;
            items[n].events = (short)(i == s->writer ? ZMQ_POLLOUT : ZMQ_POLLIN);
            items[n].revents = 0;
            n++;
        }
        long t = hook_timeout_ms(h);
        if (t < 0 || t > 20)
            t = 20;
        if (zmq_poll(items, n, t) < 0 && zmq_errno() != EINTR)
            FAIL("zmq_poll: %s", zmq_strerror(zmq_errno()));
        server_step(s);
        hook_perform(h);
    }
    /* one more turn: nothing else may be reported for this attempt */
    hook_perform(h);
    CHECK(r->n_att == want, "attempt reported twice (%d reports, want %d)", r->n_att, want);
    CHECK(r->att_no[want - 1] == want, "attempt numbered %d, want %d", r->att_no[want - 1], want);
}

/* ---- oracles over the response bytes ------------------------------------------ */

/* The status of a well-formed first line "HTTP/1.[01] NNN[ reason]\r?\n", else 0;
 * *end is then the offset just past its line end. */
static long wellformed_status(const uint8_t *p, size_t n, size_t *end)
{
    if (n < 13 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return 0;
    if (p[9] < '1' || p[9] > '9' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
        return 0;
    long code = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    size_t i = 12;
    if (p[i] == ' ') {
        for (i++; i < n && p[i] != '\r' && p[i] != '\n'; i++)
            if (p[i] == '\0')
                return 0;
    }
    if (i < n && p[i] == '\r')
        i++;
    if (i >= n || p[i] != '\n')
        return 0;
    *end = i + 1;
    return code;
}

static int days_in_month(int year, int mon)
{
    static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return d[mon] + (mon == 1 && leap);
}

/* An IMF-fixdate "Sun, 06 Nov 2094 08:49:37 GMT" (years 1970..2999) as Unix seconds, else -1. */
static int64_t imf_fixdate(const char *v)
{
    static const char *const wd[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (strlen(v) != 29 || v[3] != ',' || v[4] != ' ' || v[7] != ' ' || v[11] != ' ' ||
        v[16] != ' ' || v[19] != ':' || v[22] != ':' || strcmp(v + 25, " GMT") != 0)
        return -1;
    int ok = 0;
    for (int i = 0; i < 7; i++)
        ok |= strncmp(v, wd[i], 3) == 0;
    int mon = -1;
    for (int i = 0; i < 12; i++)
        if (strncmp(v + 8, mo[i], 3) == 0)
            mon = i;
    static const int digits[] = {5, 6, 12, 13, 14, 15, 17, 18, 20, 21, 23, 24};
    for (size_t i = 0; i < sizeof digits / sizeof digits[0]; i++)
        ok &= v[digits[i]] >= '0' && v[digits[i]] <= '9';
    if (!ok || mon < 0)
        return -1;
#define NUM2(i) ((v[i] - '0') * 10 + (v[(i) + 1] - '0'))
    int day = NUM2(5), year = NUM2(12) * 100 + NUM2(14);
    int hh = NUM2(17), mm = NUM2(20), ss = NUM2(23);
#undef NUM2
    if (year < 1970 || year > 2999 || day < 1 || day > days_in_month(year, mon) || hh > 23 ||
        mm > 59 || ss > 59)
        return -1;
    int64_t days = 0; /* days since 1970-01-01 */
    for (int y = 1970; y < year; y++)
        days += 365 + ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0);
    for (int m = 0; m < mon; m++)
        days += days_in_month(year, m);
    days += day - 1;
    return days * 86400 + hh * 3600 + mm * 60 + ss;
}

#define RA_CAP_MS (30LL * 24 * 3600 * 1000) /* hook.c reads a longer Retry-After as this */

/*
 * When the first header line after the well-formed status line (which ends at
 * `at`) is "Retry-After:" with a value of 1..9 digits or an IMF-fixdate
 * (blanks around it allowed, no CR/LF/NUL/controls, not folded onto the next
 * line), what hook.c must make of it: milliseconds from now_ms, 0..30 days.
 * -1 when the response does not have that shape.
 */
static int64_t expected_retry_after_ms(const uint8_t *p, size_t n, size_t at, int64_t now_ms)
{
    if (n - at < 12 || strncasecmp((const char *)p + at, "retry-after:", 12) != 0)
        return -1;
    char v[64];
    size_t k = 0;
    size_t i = at + 12;
    for (; i < n && p[i] != '\r'; i++) {
        if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f || k + 1 >= sizeof v)
            return -1;
        v[k++] = (char)p[i];
    }
    v[k] = '\0';
    if (i + 1 >= n || p[i + 1] != '\n')
        return -1;
    if (i + 2 < n && (p[i + 2] == ' ' || p[i + 2] == '\t'))
        return -1; /* folded: the value goes on */
    char *b = v;
    while (*b == ' ' || *b == '\t')
        b++;
    size_t len = strlen(b);
    while (len > 0 && (b[len - 1] == ' ' || b[len - 1] == '\t'))
        b[--len] = '\0';
    if (len >= 1 && len <= 9 && strspn(b, "0123456789") == len) {
        int64_t ms = strtoll(b, NULL, 10) * 1000;
        return ms > RA_CAP_MS ? RA_CAP_MS : ms;
    }
    int64_t t = imf_fixdate(b);
    if (t < 0)
        return -1;
    int64_t ms = t * 1000 - now_ms;
    return ms < 0 ? 0 : ms > RA_CAP_MS ? RA_CAP_MS : ms;
}

static int contains_nocase(const uint8_t *p, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp((const char *)p + i, needle, k) == 0)
            return 1;
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ---- libFuzzer --------------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    verbose = getenv("FUZZ_HOOK_VERBOSE") && *getenv("FUZZ_HOOK_VERBOSE") == '1';
    clock_enable_test();
    /* one reference held for the whole run: hook_new()/hook_destroy() then do
     * not set curl (and its TLS library) up and tear it down for every input */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "fuzz_hook: curl_global_init failed\n");
        exit(2);
    }
    cfg.webhook_allow = &loopback;
    cfg.n_webhook_allow = 1;

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        fprintf(stderr, "fuzz_hook: cannot listen on 127.0.0.1: %s\n", strerror(errno));
        exit(2);
    }
    set_nonblock(lfd);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", ntohs(a.sin_port));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t ctl = size > 0 ? data[0] : 0;
    size_t split = size > 1 ? data[1] : 0;
    const uint8_t *resp = data + (size < 2 ? size : 2);
    size_t resp_len = size < 2 ? 0 : size - 2;
    int rst = (ctl & CTL_RST) != 0;
    int short_age = (ctl & CTL_SHORT_AGE) != 0;

    config_channel_t ch;
    memset(&ch, 0, sizeof ch);
    ch.id = (char *)"fuzz-hook";
    ch.kind = CHANNEL_WEBHOOK;
    ch.url = url;
    ch.secret = (char *)SECRET;
    ch.timeout_ms = CHANNEL_TIMEOUT_MS;
    ch.max_age_ms = short_age ? SHORT_MAX_AGE_MS : LONG_MAX_AGE_MS;

    static server_t srv;
    static int srv_init;
    if (!srv_init) {
        for (int i = 0; i < MAX_CONNS; i++)
            srv.conns[i].fd = -1;
        srv_init = 1;
    }
    server_reset(&srv, resp, resp_len, (ctl & CTL_SPLIT) ? split : 0, (ctl & CTL_PAD) != 0, rst);
    srv.webhook_id[0] = '\0';

    rec_t r;
    memset(&r, 0, sizeof r);
    hook_t *h = hook_new(&cfg, on_done, on_attempt, &r);
    CHECK(h != NULL, "hook_new");
    r.h = h;
    CHECK(hook_submit(h, &ch, MSG_ID, MSG_BODY, clock_now_ms()) == 0, "hook_submit");
    CHECK(hook_submit(h, &ch, MSG_ID, MSG_BODY, clock_now_ms()) == -1, "duplicate id accepted");
    CHECK(hook_pending(h) == 1, "pending %zu after submit", hook_pending(h));

    drive(h, &r, &srv, 1);

    /* ---- the first attempt ---- */
    long status = r.att_status[0];
    const char *err = r.att_err[0];
    CHECK(status == 0 || (status >= 100 && status <= 999), "http_status %ld, error \"%s\"", status,
          err);
    size_t line_end = 0;
    long want = wellformed_status(resp, resp_len, &line_end);
    /* computed now: the clock has not moved since the attempt ended */
    int64_t want_ra = want >= 200 && status == want
                          ? expected_retry_after_ms(resp, resp_len, line_end, clock_now_ms())
                          : -1;
    if (want >= 200 && srv.answered) {
        if (rst)
            CHECK(status == 0 || status == want, "http_status %ld, response says %ld (RST)",
                  status, want);
        else
            CHECK(status == want, "http_status %ld, response says %ld (error: %s)", status, want,
                  err);
    }
    if (status >= 200 && status <= 299) {
        CHECK(err[0] == '\0', "2xx with error \"%s\"", err);
        CHECK(r.n_done == 1 && r.outcome == HOOK_DELIVERED && r.done_attempts == 1,
              "2xx not delivered (done %d outcome %d)", r.n_done, (int)r.outcome);
        CHECK(r.done_err[0] == '\0' && r.done_pending == 0, "delivered: error or still pending");
        CHECK(hook_pending(h) == 0, "pending after delivery");
    } else {
        if (status > 0) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "HTTP %ld", status);
            CHECK(strncmp(err, prefix, strlen(prefix)) == 0, "status %ld, error \"%s\"", status,
                  err);
        } else {
            CHECK(err[0] != '\0' && strcmp(err, "No error") != 0, "no answer, error \"%s\"",
                  err);
        }
        if (status == 410) {
            CHECK(r.n_done == 1 && r.outcome == HOOK_FAILED && r.done_attempts == 1,
                  "410 not failed at once");
            CHECK(strcmp(r.done_err, "HTTP 410") == 0, "410: done error \"%s\"", r.done_err);
            CHECK(hook_pending(h) == 0 && r.done_pending == 0, "pending after 410");
        } else if (want_ra > SHORT_MAX_AGE_MS && short_age) {
            CHECK(r.n_done == 1 && r.outcome == HOOK_FAILED && r.done_pending == 0 &&
                      ends_with(r.done_err, "(Retry-After beyond max_age)"),
                  "Retry-After %" PRId64 " ms beyond max_age: not given up", want_ra);
        } else if (r.n_done == 1) {
            /* only a Retry-After beyond the short max_age gives up on a first attempt */
            CHECK(want_ra < 0, "gave up, but Retry-After says %" PRId64 " ms", want_ra);
            CHECK(short_age && status > 0 && r.outcome == HOOK_FAILED, "gave up after one attempt "
                  "(status %ld, error \"%s\")", status, r.done_err);
            CHECK(ends_with(r.done_err, "(Retry-After beyond max_age)"), "gave up: \"%s\"",
                  r.done_err);
            CHECK(contains_nocase(resp, resp_len, "retry-after"), "Retry-After out of nowhere");
            CHECK(hook_pending(h) == 0 && r.done_pending == 0, "pending after giving up");
        } else {
            CHECK(r.n_done == 0, "done %d times", r.n_done);
            CHECK(hook_pending(h) == 1, "no retry scheduled (pending %zu)", hook_pending(h));
            long t = hook_timeout_ms(h);
            CHECK(t >= 0 && t <= 600000, "retry in %ld ms", t);
            if (!contains_nocase(resp, resp_len, "retry-after"))
                CHECK(t >= 750 && t <= 1250, "first retry in %ld ms without Retry-After", t);
            if (want_ra >= 1250)
                CHECK(t == (want_ra < 600000 ? want_ra : 600000),
                      "retry in %ld ms, Retry-After says %" PRId64 " ms", t, want_ra);
            else if (want_ra >= 0)
                CHECK(t >= 750 && t <= 1250 && t >= want_ra,
                      "retry in %ld ms, Retry-After says %" PRId64 " ms", t, want_ra);

            /* ---- the second attempt, answered 200 ---- */
            if ((ctl & CTL_RETRY) && t < 600000) {
                CHECK(clock_advance_ms(t) == 0, "clock_advance_ms");
                server_reset(&srv, (const uint8_t *)OK_RESPONSE, strlen(OK_RESPONSE), 0, 0, 0);
                drive(h, &r, &srv, 2);
                CHECK(r.att_status[1] == 200 && r.att_err[1][0] == '\0',
                      "second attempt: status %ld error \"%s\"", r.att_status[1], r.att_err[1]);
                CHECK(r.n_done == 1 && r.outcome == HOOK_DELIVERED && r.done_attempts == 2,
                      "not delivered at attempt 2 (done %d, attempts %d)", r.n_done,
                      r.done_attempts);
                CHECK(hook_pending(h) == 0 && r.done_pending == 0, "pending after delivery");
            }
        }
    }

    if (verbose)
        fprintf(stderr,
                "fuzz_hook: ctl 0x%02x: %d attempt(s), first http_status %ld \"%s\" (Retry-After "
                "%" PRId64 " ms); %s\n",
                ctl, r.n_att, status, err, want_ra,
                r.n_done == 0 ? "retry scheduled"
                : r.outcome == HOOK_DELIVERED ? "delivered" : r.done_err);
    hook_destroy(&h);
    CHECK(h == NULL, "hook_destroy did not null the pointer");
    server_close_all(&srv);
    return 0;
}
