/*
 * metrics.c — Prometheus text exposition over libmicrohttpd; see metrics.h.
 *
 * Counters live in fixed arrays indexed by small enums; the label tables
 * below are the only place label values are spelled. A scrape renders the
 * whole text into one growing buffer (bounded: the label sets are fixed, so
 * the text is a few KiB) and hands it to MHD, which frees it with free()
 * when sent.
 *
 * The server is httpd.h's: libmicrohttpd in epoll mode inside the loop.
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
#include "httpd.h"
#include "log.h"
#include "strbuf.h"
#include "util.h"

#define METRICS_PATH "/metrics"
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
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
    httpd_t *http;                       /* the server (httpd.h) */

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
        return httpd_answer_text(c, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n", NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return httpd_answer_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET\n", "GET, HEAD");
    size_t len;
    char *text = metrics_render(m, &len);
    return httpd_answer(c, MHD_HTTP_OK, METRICS_CONTENT_TYPE, text, len, NULL);
}

int metrics_check_address(const char *listen, char *why, size_t whylen)
{
    return httpd_check_address(listen, why, whylen);
}

metrics_t *metrics_new(const char *listen, char *err, size_t errlen)
{
    metrics_t *m = xcalloc(1, sizeof *m);
    httpd_opts_t o = {.name = "metrics", .handler = on_request, .ud = m,
                      .max_connections = METRICS_MAX_CONNECTIONS,
                      .idle_timeout_s = METRICS_IDLE_TIMEOUT_S, .request_max = METRICS_REQUEST_MAX};
    if (!(m->http = httpd_new(listen, &o, err, errlen))) {
        free(m);
        return NULL;
    }
    return m;
}

void metrics_destroy(metrics_t **pm)
{
    if (!pm || !*pm)
        return;
    httpd_destroy(&(*pm)->http);
    free(*pm);
    *pm = NULL;
}

int metrics_port(const metrics_t *m)
{
    return m ? httpd_port(m->http) : 0;
}

int metrics_pollitems(metrics_t *m, zmq_pollitem_t *items, int max)
{
    return m ? httpd_pollitems(m->http, items, max) : 0;
}

long metrics_timeout_ms(metrics_t *m)
{
    return m ? httpd_timeout_ms(m->http) : -1;
}

void metrics_perform(metrics_t *m)
{
    if (m)
        httpd_perform(m->http);
}
