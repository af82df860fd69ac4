/*
 * test_metrics.c — the metrics endpoint: counters, histogram and gauges as
 * text; the HTTP server driven by a zmq_poll loop like the broker's (only
 * metrics_pollitems / metrics_timeout_ms / metrics_perform), scraped by
 * libcurl from a thread and by raw sockets from the loop itself; the
 * exposition checked by `promtool check metrics` (Debian package prometheus).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "carehub_wire.h"
#include "metrics.h"
#include "util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define LOOP_LIMIT_MS 5000
#define RESP_CAP (256 * 1024)

/* ---- helpers ------------------------------------------------------------ */

static metrics_t *start(void)
{
    char err[256];
    metrics_t *m = metrics_new("127.0.0.1:0", err, sizeof err);
    if (!m)
        fail_msg("metrics_new: %s", err);
    assert_true(metrics_port(m) > 0);
    return m;
}

static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

#define assert_line(text, line)                                                        \
    do {                                                                               \
        if (!has_line((text), (line)))                                                 \
            fail_msg("missing line: %s\n--- exposition ---\n%s", (line), (text));      \
    } while (0)

/* One turn of a broker-like loop: poll the metrics item (plus `extra`, an fd
 * to watch, or -1), at most `cap_ms`, then metrics_perform(). Returns the
 * revents of `extra`. */
static short loop_turn(metrics_t *m, int extra, short extra_events, long cap_ms)
{
    zmq_pollitem_t items[4];
    int n = metrics_pollitems(m, items, 3);
    assert_true(n == 1);
    int xi = -1;
    if (extra >= 0) {
        xi = n;
        items[n++] = (zmq_pollitem_t){NULL, extra, extra_events, 0};
    }
    long t = metrics_timeout_ms(m);
    if (t < 0 || t > cap_ms)
        t = cap_ms;
    int rc = zmq_poll(items, n, t);
    assert_true(rc >= 0 || errno == EINTR);
    metrics_perform(m);
    return xi >= 0 && rc > 0 ? items[xi].revents : 0;
}

/* A raw HTTP exchange over a non-blocking socket, served by the same loop:
 * send `req`, read until the server closes (or LOOP_LIMIT_MS). Returns the
 * bytes read into resp (NUL-terminated). */
static size_t raw_http(metrics_t *m, const char *req, size_t reqlen, char *resp, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)metrics_port(m))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0); /* the backlog takes it */
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    size_t sent = 0, got = 0;
    int64_t until = util_mono_ms() + LOOP_LIMIT_MS;
    while (util_mono_ms() < until) {
        short want = ZMQ_POLLIN | (sent < reqlen ? ZMQ_POLLOUT : 0);
        short rev = loop_turn(m, fd, want, 50);
        if ((rev & ZMQ_POLLOUT) && sent < reqlen) {
            ssize_t w = send(fd, req + sent, reqlen - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN)
                break; /* the server hung up on us (e.g. a request too large) */
        }
        if (rev & (ZMQ_POLLIN | ZMQ_POLLERR)) {
            ssize_t r = recv(fd, resp + got, cap - 1 - got, 0);
            if (r > 0)
                got += (size_t)r;
            else if (r == 0 || errno != EAGAIN)
                break;
        }
    }
    close(fd);
    resp[got] = '\0';
    return got;
}

static int promtool_present(void)
{
    return system("command -v promtool >/dev/null 2>&1") == 0;
}

/* `promtool check metrics < text`; its exit status (output to stderr of the test). */
static int promtool_check(const char *text)
{
    char path[] = "/tmp/carehub-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[256];
    util_fmt(cmd, sizeof cmd, "promtool check metrics < %s 1>&2", path);
    int rc = system(cmd);
    unlink(path);
    assert_true(rc != -1 && WIFEXITED(rc));
    return WEXITSTATUS(rc);
}

static uint64_t g_open = 7, g_overdue = 2;
static int g_gauge_fail;
static int g_gauge_calls;

static int gauges(void *ud, metrics_gauges_t *g)
{
    assert_ptr_equal(ud, &g_open);
    g_gauge_calls++;
    if (g_gauge_fail)
        return -1;
    g->open_assignments = g_open;
    g->overdue_assignments = g_overdue;
    g->map_used_bytes = 1048576;
    g->map_size_bytes = 67108864;
    g->map_max_bytes = 1073741824;
    g->pending_notices = 3;
    return 0;
}

static void record_some(metrics_t *m)
{
    metrics_event(m, "absence");
    metrics_event(m, "absence");
    metrics_event(m, "online_risk");
    metrics_event(m, "no_such_type");
    metrics_event(m, NULL);
    metrics_nack(m, CAREHUB_E_INVALID);
    metrics_nack(m, CAREHUB_E_HELLO_REQUIRED);
    metrics_nack(m, "made_up");
    metrics_escalation(m);
    metrics_webhook_attempt(m, 1);
    metrics_webhook_attempt(m, 0);
    metrics_webhook_attempt(m, 0);
    metrics_webhook_failed(m);
    metrics_commit(m, 0.0003);  /* le 0.0005 */
    metrics_commit(m, 0.0005);  /* on the bound: still le 0.0005 */
    metrics_commit(m, 0.004);   /* le 0.005 */
    metrics_commit(m, 3.0);     /* only +Inf */
    metrics_commit(m, -1.0);    /* counted as 0 */
}

/* ---- tests --------------------------------------------------------------- */

static void test_render(void **state)
{
    (void)state;
    metrics_t *m = start();
    record_some(m);
    size_t len;
    char *t = metrics_render(m, &len);
    assert_int_equal(strlen(t), len);
    assert_line(t, "# HELP carehub_events_total Events stored (acknowledged, not duplicates), by type.");
    assert_line(t, "# TYPE carehub_events_total counter");
    assert_line(t, "carehub_events_total{type=\"absence\"} 2");
    assert_line(t, "carehub_events_total{type=\"mandatory_report\"} 0");
    assert_line(t, "carehub_events_total{type=\"online_risk\"} 1");
    assert_line(t, "carehub_events_total{type=\"other\"} 2");
    assert_line(t, "carehub_nacks_total{code=\"invalid\"} 1");
    assert_line(t, "carehub_nacks_total{code=\"hello_required\"} 1");
    assert_line(t, "carehub_nacks_total{code=\"not_found\"} 0");
    assert_line(t, "carehub_nacks_total{code=\"other\"} 1");
    assert_line(t, "carehub_escalations_total 1");
    assert_line(t, "carehub_webhook_attempts_total{result=\"ok\"} 1");
    assert_line(t, "carehub_webhook_attempts_total{result=\"error\"} 2");
    assert_line(t, "carehub_webhook_failures_total 1");
    assert_line(t, "# TYPE carehub_commit_seconds histogram");
    assert_line(t, "carehub_commit_seconds_bucket{le=\"0.0005\"} 3");
    assert_line(t, "carehub_commit_seconds_bucket{le=\"0.001\"} 3");
    assert_line(t, "carehub_commit_seconds_bucket{le=\"0.005\"} 4");
    assert_line(t, "carehub_commit_seconds_bucket{le=\"2\"} 4");
    assert_line(t, "carehub_commit_seconds_bucket{le=\"+Inf\"} 5");
    assert_line(t, "carehub_commit_seconds_count 5");
    assert_non_null(strstr(t, "carehub_commit_seconds_sum 3.0048"));
    /* No gauge callback: no gauges (not zeros). */
    assert_null(strstr(t, "carehub_assignments_open"));
    free(t);

    metrics_set_gauge_fn(m, gauges, &g_open);
    t = metrics_render(m, NULL);
    assert_line(t, "# TYPE carehub_assignments_open gauge");
    assert_line(t, "carehub_assignments_open 7");
    assert_line(t, "carehub_assignments_overdue 2");
    assert_line(t, "carehub_lmdb_map_used_bytes 1048576");
    assert_line(t, "carehub_lmdb_map_size_bytes 67108864");
    assert_line(t, "carehub_notices_pending 3");
    assert_line(t, "carehub_lmdb_map_max_bytes 1073741824");
    free(t);

    g_gauge_fail = 1; /* the broker cannot tell: the gauges are left out */
    t = metrics_render(m, NULL);
    assert_null(strstr(t, "carehub_assignments_open"));
    assert_line(t, "carehub_escalations_total 1");
    free(t);
    g_gauge_fail = 0;

    metrics_set_gauge_fn(m, NULL, NULL);
    t = metrics_render(m, NULL);
    assert_null(strstr(t, "carehub_notices_pending"));
    free(t);
    metrics_destroy(&m);
    assert_null(m);
    metrics_destroy(&m); /* twice is fine */
}

static void test_null_is_noop(void **state)
{
    (void)state;
    metrics_t *m = NULL;
    metrics_event(m, "absence");
    metrics_nack(m, "invalid");
    metrics_escalation(m);
    metrics_webhook_attempt(m, 1);
    metrics_webhook_failed(m);
    metrics_commit(m, 0.1);
    metrics_set_gauge_fn(m, gauges, &g_open);
    zmq_pollitem_t it[1];
    assert_int_equal(metrics_pollitems(m, it, 1), 0);
    assert_int_equal(metrics_timeout_ms(m), -1);
    metrics_perform(m);
    assert_int_equal(metrics_port(m), 0);
    metrics_destroy(&m);
    metrics_destroy(NULL);
}

static void test_bad_listen(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "9570", ":9570", "127.0.0.1", "127.0.0.1:", "127.0.0.1:70000",
                                      "127.0.0.1:-1", "127.0.0.1:95x", "localhost:9570", "[::1:9570",
                                      "[nope]:9570", "1.2.3.4.5:1"};
    char err[256];
    for (size_t i = 0; i < UTIL_ARRAY_LEN(bad); i++) {
        err[0] = '\0';
        metrics_t *m = metrics_new(bad[i], err, sizeof err);
        if (m)
            fail_msg("'%s' was accepted", bad[i]);
        assert_non_null(strstr(err, "bad address"));
        assert_int_equal(metrics_check_address(bad[i], err, sizeof err), -1);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(metrics_check_address("127.0.0.1:9570", err, sizeof err), 0);
    assert_int_equal(metrics_check_address("0.0.0.0:0", NULL, 0), 0);
    assert_int_equal(metrics_check_address("[::]:9570", NULL, 0), 0);
    assert_int_equal(metrics_check_address("localhost:9570", NULL, 0), -1);
    assert_null(metrics_new(NULL, err, sizeof err));
    assert_null(metrics_new("nope", NULL, 0)); /* err may be NULL */

    /* A port in use: the bind error reaches the caller. */
    metrics_t *a = start();
    char addr[64];
    util_fmt(addr, sizeof addr, "127.0.0.1:%d", metrics_port(a));
    metrics_t *b = metrics_new(addr, err, sizeof err);
    assert_null(b);
    if (!strstr(err, "cannot listen on") || !strstr(err, "in use"))
        fail_msg("unexpected error: %s", err);
    metrics_destroy(&a);

    /* IPv6 loopback, when the machine has it. */
    metrics_t *v6 = metrics_new("[::1]:0", err, sizeof err);
    if (v6) {
        assert_true(metrics_port(v6) > 0);
        metrics_destroy(&v6);
    } else {
        print_message("no IPv6 loopback here (%s); [::1] not tested\n", err);
    }
}

/* ---- a real client: libcurl in a thread ---------------------------------- */

typedef struct {
    char url[128];
    const char *method;      /* NULL: GET */
    char body[RESP_CAP];
    size_t len;
    long status;
    char ctype[128];
    CURLcode rc;
    atomic_int done;
} fetch_t;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    fetch_t *f = ud;
    size_t k = size * n;
    if (k > sizeof f->body - 1 - f->len)
        return 0; /* too much: curl reports a write error */
    memcpy(f->body + f->len, p, k);
    f->len += k;
    f->body[f->len] = '\0';
    return k;
}

static void *fetch_thread(void *arg)
{
    fetch_t *f = arg;
    CURL *c = curl_easy_init();
    if (c) {
        curl_easy_setopt(c, CURLOPT_URL, f->url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)LOOP_LIMIT_MS);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        if (f->method)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, f->method);
        f->rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &f->status);
        char *ct = NULL;
        if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
            util_fmt(f->ctype, sizeof f->ctype, "%s", ct);
        curl_easy_cleanup(c);
    } else {
        f->rc = CURLE_FAILED_INIT;
    }
    atomic_store(&f->done, 1);
    return NULL;
}

/* GET (or `method`) http://127.0.0.1:PORT`path` from a thread while this
 * thread runs the loop. Returns the heap fetch_t (free it). */
static fetch_t *fetch(metrics_t *m, const char *path, const char *method)
{
    fetch_t *f = xcalloc(1, sizeof *f);
    util_fmt(f->url, sizeof f->url, "http://127.0.0.1:%d%s", metrics_port(m), path);
    f->method = method;
    atomic_init(&f->done, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fetch_thread, f), 0);
    int64_t until = util_mono_ms() + LOOP_LIMIT_MS + 1000;
    while (!atomic_load(&f->done) && util_mono_ms() < until)
        (void)loop_turn(m, -1, 0, 20); /* 20 ms cap: the only way to notice `done` */
    while (!atomic_load(&f->done)) /* the loop gave up; curl's own timeout ends the thread */
        usleep(10000);
    pthread_join(th, NULL);
    return f;
}

static void test_scrape(void **state)
{
    (void)state;
    metrics_t *m = start();
    record_some(m);
    metrics_set_gauge_fn(m, gauges, &g_open);
    g_gauge_calls = 0;

    fetch_t *f = fetch(m, "/metrics", NULL);
    assert_int_equal(f->rc, CURLE_OK);
    assert_int_equal(f->status, 200);
    assert_string_equal(f->ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert_line(f->body, "carehub_events_total{type=\"absence\"} 2");
    assert_line(f->body, "carehub_nacks_total{code=\"invalid\"} 1");
    assert_line(f->body, "carehub_assignments_open 7");
    assert_line(f->body, "carehub_commit_seconds_count 5");
    assert_int_equal(g_gauge_calls, 1); /* gauges computed once per scrape, not before */

    /* The next scrape sees what changed since. */
    metrics_event(m, "mandatory_report");
    g_open = 8;
    fetch_t *g = fetch(m, "/metrics?x=1", NULL); /* a query string does not matter */
    assert_int_equal(g->status, 200);
    assert_line(g->body, "carehub_events_total{type=\"mandatory_report\"} 1");
    assert_line(g->body, "carehub_assignments_open 8");
    g_open = 7;

    if (promtool_present()) {
        assert_int_equal(promtool_check(f->body), 0);
        assert_int_equal(promtool_check(g->body), 0);
        /* and promtool is not a rubber stamp: */
        assert_int_not_equal(promtool_check("# TYPE x counter\nx{a=\"1\" 1\n"), 0);
    } else {
        print_message("promtool not installed (Debian package prometheus): format check skipped\n");
    }
    free(f);
    free(g);
    metrics_destroy(&m);
}

static void test_not_found_and_method(void **state)
{
    (void)state;
    metrics_t *m = start();
    fetch_t *f = fetch(m, "/other", NULL);
    assert_int_equal(f->rc, CURLE_OK);
    assert_int_equal(f->status, 404);
    assert_null(strstr(f->body, "carehub_"));
    free(f);
    f = fetch(m, "/", NULL);
    assert_int_equal(f->status, 404);
    free(f);
    f = fetch(m, "/metrics/", NULL);
    assert_int_equal(f->status, 404);
    free(f);
    f = fetch(m, "/metrics", "DELETE");
    assert_int_equal(f->status, 405);
    free(f);

    /* POST with a body: refused without reading it; Allow says what works. */
    char resp[4096];
    static const char post[] = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                               "Connection: close\r\n\r\nhello";
    raw_http(m, post, sizeof post - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 405"));
    assert_non_null(strstr(resp, "Allow: GET, HEAD"));

    /* HEAD: the head of a scrape, no body. */
    static const char head[] = "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    raw_http(m, head, sizeof head - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    assert_null(strstr(resp, "carehub_"));
    metrics_destroy(&m);
}

/* A request head over the cap is refused; the server keeps serving. */
static void test_request_cap(void **state)
{
    (void)state;
    metrics_t *m = start();
    size_t n = 64 * 1024;
    char *req = xmalloc(n + 128);
    int k = snprintf(req, 128, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    memset(req + k, 'a', n);
    memcpy(req + k + n, "\r\n\r\n", 5);
    char resp[4096];
    raw_http(m, req, strlen(req), resp, sizeof resp);
    free(req);
    assert_null(strstr(resp, "carehub_"));
    if (resp[0]) /* an answer, if MHD got to send one before hanging up, is a 4xx */
        assert_non_null(strstr(resp, "HTTP/1.1 4"));

    static const char ok[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    raw_http(m, ok, sizeof ok - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    metrics_destroy(&m);
}

/* A client that sends half a request and waits never stalls the loop, and
 * other scrapes are served meanwhile. */
static void test_never_blocks(void **state)
{
    (void)state;
    metrics_t *m = start();
    int slow = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)metrics_port(m))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(slow, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(send(slow, "GET /metr", 9, 0), 9);
    for (int i = 0; i < 20; i++) {
        int64_t t0 = util_mono_ms();
        metrics_perform(m);
        assert_true(util_mono_ms() - t0 < 100);
    }
    long t = metrics_timeout_ms(m); /* an open connection: MHD wants to time it out */
    assert_true(t >= 0 && t <= METRICS_IDLE_TIMEOUT_S * 1000L);

    char resp[RESP_CAP];
    static const char ok[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    raw_http(m, ok, sizeof ok - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    assert_non_null(strstr(resp, "carehub_escalations_total 0"));
    close(slow);
    metrics_destroy(&m);
}

/* With more than FD_SETSIZE descriptors open, scrapes still work (the reason
 * for MHD's epoll mode: select()-based fd sets stop at FD_SETSIZE - 1). */
static void test_high_descriptors(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    const rlim_t need = FD_SETSIZE + 64;
    if (rl.rlim_cur < need) {
        if (rl.rlim_max < need) {
            print_message("RLIMIT_NOFILE hard limit %lu < %lu: test skipped\n", (unsigned long)rl.rlim_max,
                          (unsigned long)need);
            skip();
        }
        struct rlimit up = {need, rl.rlim_max};
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &up), 0);
    }
    metrics_t *m = start();
    int *fds = xmalloc(sizeof(int) * (FD_SETSIZE + 16));
    int n = 0;
    int fd;
    while ((fd = dup(0)) >= 0 && fd < FD_SETSIZE + 8)
        fds[n++] = fd;
    assert_true(fd >= FD_SETSIZE); /* the next sockets will be numbered above FD_SETSIZE */
    close(fd);

    char resp[RESP_CAP];
    static const char ok[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    raw_http(m, ok, sizeof ok - 1, resp, sizeof resp);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    metrics_destroy(&m);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
}

int main(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_null_is_noop),
        cmocka_unit_test(test_bad_listen),
        cmocka_unit_test(test_scrape),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_request_cap),
        cmocka_unit_test(test_never_blocks),
        cmocka_unit_test(test_high_descriptors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
