/*
 * metrics.c — Prometheus text exposition over libmicrohttpd; see metrics.h.
 *
 * Counters live in fixed arrays indexed by small enums; the label tables
 * below are the only place label values are spelled. A scrape renders the
 * whole text into one growing buffer (bounded: the label sets are fixed, so
 * the text is a few KiB) and hands it to MHD, which frees it with free()
 * when sent.
 *
 * MHD runs with neither an internal thread nor select(): MHD_USE_EPOLL
 * without MHD_USE_INTERNAL_POLLING_THREAD, and the loop polls
 * MHD_DAEMON_INFO_EPOLL_FD. MHD makes every socket non-blocking in that mode
 * (edge-triggered epoll needs it), so MHD_run() never waits on a peer.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "carehub_wire.h"
#include "log.h"
#include "strbuf.h"
#include "util.h"

#define METRICS_PATH "/metrics"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define METRICS_ERR_LEN 256
#define METRICS_RENDER_START 4096

/* Label values. The last entry of each table is the catch-all. */
static const char *const event_types[] = {"absence",  "mandatory_report", "online_risk", "enrolment",
                                          "visit",    "visit_overdue",    "other"};
#define N_EVENT_TYPES UTIL_ARRAY_LEN(event_types)

static const char *const nack_codes[] = {
    CAREHUB_E_MALFORMED,    CAREHUB_E_VERSION,      CAREHUB_E_UNKNOWN_OP, CAREHUB_E_HELLO_REQUIRED,
    CAREHUB_E_UNAUTHORIZED, CAREHUB_E_FORBIDDEN,    CAREHUB_E_UNKNOWN_TYPE, CAREHUB_E_INVALID,
    CAREHUB_E_TOO_LARGE,    CAREHUB_E_UNAVAILABLE,  CAREHUB_E_CONFLICT,   CAREHUB_E_NOT_FOUND,
    "other",
};
#define N_NACK_CODES UTIL_ARRAY_LEN(nack_codes)

/* Upper bounds of the commit histogram, seconds: a commit is fsync-bound, so
 * sub-millisecond (tmpfs, nosync) up to seconds (a slow or busy disk). */
static const double commit_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                        0.05,   0.1,   0.25,   0.5,   1.0,  2.0};
#define N_COMMIT_BUCKETS UTIL_ARRAY_LEN(commit_buckets)

struct metrics {
    struct MHD_Daemon *daemon;
    int epoll_fd;                        /* MHD's; what the loop polls */
    int port;                            /* bound port */
    char *err;                           /* during metrics_new: where MHD's log goes */
    size_t errlen;

    uint64_t events[N_EVENT_TYPES];      /* carehub_events_total{type} */
    uint64_t nacks[N_NACK_CODES];        /* carehub_nacks_total{code} */
    uint64_t escalations;                /* carehub_escalations_total */
    uint64_t attempts_ok;                /* carehub_webhook_attempts_total{result="ok"} */
    uint64_t attempts_error;             /* …{result="error"} */
    uint64_t webhook_failures;           /* carehub_webhook_failures_total */
    uint64_t pushes_deferred;            /* carehub_pushes_deferred_total */
    uint64_t replies_dropped;            /* carehub_replies_dropped_total */
    uint64_t stale_readers;              /* carehub_lmdb_stale_readers_cleared_total */
    uint64_t commit_counts[N_COMMIT_BUCKETS + 1]; /* per bucket, NOT cumulative; last = +Inf */
    uint64_t commit_count;
    double commit_sum;

    metrics_gauge_fn gauge_fn;
    void *gauge_ud;
};

/* ---- recording ----------------------------------------------------------- */

/* Index of `s` in `table` of `n` labels; the catch-all (n - 1) when absent. */
static size_t label_index(const char *const *table, size_t n, const char *s)
{
    if (s)
        for (size_t i = 0; i + 1 < n; i++)
            if (strcmp(table[i], s) == 0)
                return i;
    return n - 1;
}

void metrics_event(metrics_t *m, const char *type)
{
    if (m)
        m->events[label_index(event_types, N_EVENT_TYPES, type)]++;
}

void metrics_nack(metrics_t *m, const char *code)
{
    if (m)
        m->nacks[label_index(nack_codes, N_NACK_CODES, code)]++;
}

void metrics_escalation(metrics_t *m)
{
    if (m)
        m->escalations++;
}

void metrics_webhook_attempt(metrics_t *m, int ok)
{
    if (!m)
        return;
    if (ok)
        m->attempts_ok++;
    else
        m->attempts_error++;
}

void metrics_webhook_failed(metrics_t *m)
{
    if (m)
        m->webhook_failures++;
}

void metrics_push_deferred(metrics_t *m)
{
    if (m)
        m->pushes_deferred++;
}

void metrics_reply_dropped(metrics_t *m)
{
    if (m)
        m->replies_dropped++;
}

void metrics_stale_readers(metrics_t *m, int n)
{
    if (m && n > 0)
        m->stale_readers += (uint64_t)n;
}

void metrics_commit(metrics_t *m, double seconds)
{
    if (!m)
        return;
    if (!(seconds > 0)) /* negative, zero or NaN */
        seconds = 0;
    size_t i = 0;
    while (i < N_COMMIT_BUCKETS && seconds > commit_buckets[i])
        i++;
    m->commit_counts[i]++; /* i == N_COMMIT_BUCKETS: only +Inf */
    m->commit_count++;
    if (isfinite(seconds))
        m->commit_sum += seconds;
}

void metrics_set_gauge_fn(metrics_t *m, metrics_gauge_fn fn, void *ud)
{
    if (!m)
        return;
    m->gauge_fn = fn;
    m->gauge_ud = fn ? ud : NULL;
}

/* ---- rendering ----------------------------------------------------------- */

static void family(strbuf_t *b, const char *name, const char *type, const char *help)
{
    strbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_counters(const metrics_t *m, strbuf_t *b)
{
    family(b, "carehub_events_total", "counter", "Events stored (acknowledged, not duplicates), by type.");
    for (size_t i = 0; i < N_EVENT_TYPES; i++)
        strbuf_printf(b, "carehub_events_total{type=\"%s\"} %" PRIu64 "\n", event_types[i], m->events[i]);

    family(b, "carehub_nacks_total", "counter", "Refusals (nack) sent to agents, by code.");
    for (size_t i = 0; i < N_NACK_CODES; i++)
        strbuf_printf(b, "carehub_nacks_total{code=\"%s\"} %" PRIu64 "\n", nack_codes[i], m->nacks[i]);

    family(b, "carehub_escalations_total", "counter", "Escalation steps fired for overdue assignments.");
    strbuf_printf(b, "carehub_escalations_total %" PRIu64 "\n", m->escalations);

    family(b, "carehub_webhook_attempts_total", "counter",
           "Webhook and SMS delivery attempts, by result (ok = a 2xx answer).");
    strbuf_printf(b, "carehub_webhook_attempts_total{result=\"ok\"} %" PRIu64 "\n", m->attempts_ok);
    strbuf_printf(b, "carehub_webhook_attempts_total{result=\"error\"} %" PRIu64 "\n", m->attempts_error);

    family(b, "carehub_webhook_failures_total", "counter",
           "Notices given up for good (max_age passed or 410 Gone).");
    strbuf_printf(b, "carehub_webhook_failures_total %" PRIu64 "\n", m->webhook_failures);

    family(b, "carehub_pushes_deferred_total", "counter",
           "Pushes to agents whose queue was full (high-water mark); they stay pending and are "
           "re-delivered.");
    strbuf_printf(b, "carehub_pushes_deferred_total %" PRIu64 "\n", m->pushes_deferred);

    family(b, "carehub_replies_dropped_total", "counter",
           "Replies (ack, nack) to agents that send without reading, dropped at their full queue; "
           "they re-send and are told duplicate:true.");
    strbuf_printf(b, "carehub_replies_dropped_total %" PRIu64 "\n", m->replies_dropped);

    family(b, "carehub_lmdb_stale_readers_cleared_total", "counter",
           "LMDB reader slots of dead processes cleared (mdb_reader_check).");
    strbuf_printf(b, "carehub_lmdb_stale_readers_cleared_total %" PRIu64 "\n", m->stale_readers);
}

/* The shortest of %.15g/%.16g/%.17g that reads back as `v` (3.0048, not
 * 3.0047999999999999). */
static void fmt_double(char *buf, size_t size, double v)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static void render_histogram(const metrics_t *m, strbuf_t *b)
{
    family(b, "carehub_commit_seconds", "histogram",
           "Duration of LMDB write transactions, begin to commit return, in seconds.");
    uint64_t cum = 0;
    for (size_t i = 0; i < N_COMMIT_BUCKETS; i++) {
        cum += m->commit_counts[i];
        strbuf_printf(b, "carehub_commit_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", commit_buckets[i], cum);
    }
    strbuf_printf(b, "carehub_commit_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", m->commit_count);
    char sum[32];
    fmt_double(sum, sizeof sum, m->commit_sum);
    strbuf_printf(b, "carehub_commit_seconds_sum %s\n", sum);
    strbuf_printf(b, "carehub_commit_seconds_count %" PRIu64 "\n", m->commit_count);
}

static void gauge(strbuf_t *b, const char *name, const char *help, uint64_t v)
{
    family(b, name, "gauge", help);
    strbuf_printf(b, "%s %" PRIu64 "\n", name, v);
}

static void render_gauges(metrics_t *m, strbuf_t *b)
{
    if (!m->gauge_fn)
        return;
    metrics_gauges_t g;
    memset(&g, 0, sizeof g);
    if (m->gauge_fn(m->gauge_ud, &g) != 0) {
        log_warn("metrics: the broker could not compute its gauges; left out of this scrape");
        return;
    }
    gauge(b, "carehub_assignments_open", "Assignments not yet final.", g.open_assignments);
    gauge(b, "carehub_assignments_overdue", "Open assignments unacknowledged past their deadline.",
          g.overdue_assignments);
    gauge(b, "carehub_lmdb_map_used_bytes", "Bytes of the LMDB map in use (pages in use times page size).",
          g.map_used_bytes);
    gauge(b, "carehub_lmdb_map_size_bytes", "Current size of the LMDB map in bytes (it grows up to map_max).",
          g.map_size_bytes);
    if (g.map_max_bytes > 0)
        gauge(b, "carehub_lmdb_map_max_bytes", "The most the LMDB map may grow to (broker.map_max), in bytes.",
              g.map_max_bytes);
    gauge(b, "carehub_notices_pending", "Notices in the outbox not yet delivered or given up.",
          g.pending_notices);
}

char *metrics_render(metrics_t *m, size_t *len)
{
    strbuf_t b = {0};
    strbuf_puts(&b, ""); /* never NULL, even when nothing follows */
    if (m) {
        render_counters(m, &b);
        render_histogram(m, &b);
        render_gauges(m, &b);
    }
    if (len)
        *len = b.len;
    return b.buf;
}

/* ---- HTTP ---------------------------------------------------------------- */

/* Queue a small fixed answer (static text, not copied). */
static enum MHD_Result answer_text(struct MHD_Connection *c, unsigned status, const char *text,
                                   const char *allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO; /* MHD closes the connection */
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (ok == MHD_YES && allow)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/*
 * MHD's access handler. It answers on the first call, before any body is
 * read: nothing here accepts a body, and an answer queued this early makes MHD
 * close the connection instead of reading one.
 */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    metrics_t *m = cls;
    (void)version;
    (void)upload_data;
    (void)con_cls;
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* not reached: the answer is queued on the first call */
        return MHD_YES;
    }
    if (strcmp(url, METRICS_PATH) != 0)
        return answer_text(c, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n", NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET\n", "GET, HEAD");

    size_t len;
    char *text = metrics_render(m, &len);
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, text, free);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
    if (ok == MHD_YES)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r); /* MHD holds its own reference while sending */
    return ok;
}

/* MHD's error log: into the caller's err buffer while starting (so "cannot
 * bind" reaches the caller), into the broker's log afterwards. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    metrics_t *m = cls;
    char line[METRICS_ERR_LEN];
    int n = vsnprintf(line, sizeof line, fmt, ap);
    if (n < 0)
        return;
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    if (m->err && m->errlen > 0) {
        if (m->err[0] == '\0') /* the first message is the cause; later ones are consequences */
            util_fmt(m->err, m->errlen, "%s", line);
        return;
    }
    log_warn("metrics: %s", line);
}

/* "HOST:PORT" → a socket address. 0, or -1 with a reason in why. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, int *ipv6,
                        char *why, size_t whylen)
{
    const char *colon = listen ? strrchr(listen, ':') : NULL;
    if (!colon || colon == listen) {
        util_fmt(why, whylen, "expected HOST:PORT, e.g. 127.0.0.1:9570");
        return -1;
    }
    const char *p = colon + 1;
    char *end;
    long port = *p >= '0' && *p <= '9' ? strtol(p, &end, 10) : -1;
    if (port < 0 || port > 65535 || *end != '\0') {
        util_fmt(why, whylen, "the port must be a number 0-65535 (0: any free port)");
        return -1;
    }
    char host[INET6_ADDRSTRLEN + 2];
    size_t hlen = (size_t)(colon - listen);
    int bracketed = listen[0] == '[' && hlen >= 2 && listen[hlen - 1] == ']';
    if (bracketed) {
        listen++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof host) {
        util_fmt(why, whylen, "the host must be a numeric IPv4 address or a bracketed IPv6 one");
        return -1;
    }
    memcpy(host, listen, hlen);
    host[hlen] = '\0';
    memset(ss, 0, sizeof *ss);
    if (!bracketed) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            util_fmt(why, whylen, "the host must be a numeric IPv4 address (e.g. 127.0.0.1) or "
                                  "a bracketed IPv6 one (e.g. [::1]); names are not looked up");
            return -1;
        }
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        *ipv6 = 0;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
            util_fmt(why, whylen, "'%s' is not an IPv6 address", host);
            return -1;
        }
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *ipv6 = 1;
    }
    return 0;
}

int metrics_check_address(const char *listen, char *why, size_t whylen)
{
    struct sockaddr_storage ss;
    int ipv6;
    char buf[METRICS_ERR_LEN];
    int rc = parse_listen(listen, &ss, &ipv6, buf, sizeof buf);
    if (rc < 0 && why && whylen)
        util_fmt(why, whylen, "%s", buf);
    return rc;
}

metrics_t *metrics_new(const char *listen, char *err, size_t errlen)
{
    char why[METRICS_ERR_LEN] = "";
    struct sockaddr_storage ss;
    int ipv6;
    if (err && errlen)
        err[0] = '\0';
    if (parse_listen(listen, &ss, &ipv6, why, sizeof why) < 0) {
        if (err)
            util_fmt(err, errlen, "metrics: bad address '%s': %s", listen ? listen : "(null)", why);
        return NULL;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) != MHD_YES) {
        if (err)
            util_fmt(err, errlen, "metrics: this libmicrohttpd was built without epoll support");
        return NULL;
    }

    metrics_t *m = xcalloc(1, sizeof *m);
    m->epoll_fd = -1;
    m->err = why; /* MHD's startup complaints land here */
    m->errlen = sizeof why;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);
    m->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, m,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, m, /* first, or MHD complains on stderr */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_REQUEST_MAX,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 16u,
        MHD_OPTION_END);
    m->err = NULL;
    m->errlen = 0;
    if (!m->daemon) {
        if (err)
            util_fmt(err, errlen, "metrics: cannot listen on %s: %s", listen,
                     why[0] ? why : "libmicrohttpd could not start");
        free(m);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    const union MHD_DaemonInfo *pinfo = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->epoll_fd < 0 || !pinfo) {
        if (err)
            util_fmt(err, errlen, "metrics: libmicrohttpd gave no epoll descriptor or port");
        MHD_stop_daemon(m->daemon);
        free(m);
        return NULL;
    }
    m->epoll_fd = info->epoll_fd;
    m->port = pinfo->port;
    log_info("metrics: listening on %s (port %d), GET %s", listen, m->port, METRICS_PATH);
    return m;
}

void metrics_destroy(metrics_t **pm)
{
    if (!pm || !*pm)
        return;
    metrics_t *m = *pm;
    if (m->daemon)
        MHD_stop_daemon(m->daemon);
    free(m);
    *pm = NULL;
}

int metrics_port(const metrics_t *m)
{
    return m ? m->port : 0;
}

int metrics_pollitems(metrics_t *m, zmq_pollitem_t *items, int max)
{
    if (!m || !items || max < 1)
        return 0;
    items[0] = (zmq_pollitem_t){NULL, m->epoll_fd, ZMQ_POLLIN, 0};
    return 1;
}

long metrics_timeout_ms(metrics_t *m)
{
    if (!m)
        return -1;
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(m->daemon, &t) != MHD_YES)
        return -1;
    return t > (MHD_UNSIGNED_LONG_LONG)LONG_MAX ? LONG_MAX : (long)t;
}

void metrics_perform(metrics_t *m)
{
    if (!m)
        return;
    if (MHD_run(m->daemon) != MHD_YES)
        log_warn("metrics: MHD_run failed; scrapes may stall until the next turn");
}
