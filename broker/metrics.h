/*
 * metrics.h — the broker's figures over HTTP, in the Prometheus text format
 * (version 0.0.4), for `GET /metrics` on broker.metrics (e.g. 127.0.0.1:9570).
 * See docs/metrics.md for every metric and how to scrape it.
 *
 * The HTTP side is libmicrohttpd (MHD) with no thread of its own: it runs in
 * the broker's zmq_poll loop ("external polling"). MHD is started in its epoll
 * mode, so the whole server is ONE descriptor (MHD's epoll fd) in the poll
 * set, however many scrapers are connected, and no descriptor is ever limited
 * by FD_SETSIZE (MHD_get_fdset2()'s select sets are: a broker with a thousand
 * agent connections would get scrape sockets above 1023, which MHD in select
 * mode refuses).
 *
 * What is served, and what is refused:
 *   GET or HEAD /metrics   200, Content-Type text/plain; version=0.0.4
 *   another path           404
 *   /metrics, other method 405 with `Allow: GET, HEAD`
 *   request head > 8 KiB   refused by MHD (431), connection closed
 * A request body is never read: the answer is queued at once and the
 * connection closed after it. At most METRICS_MAX_CONNECTIONS connections at
 * once; an idle or slow one is dropped after METRICS_IDLE_TIMEOUT_S.
 *
 * Counters are plain integers bumped in place: the metrics_* recording calls
 * never allocate, never block and take a fixed label set (an unknown label
 * value counts as "other"), so the broker can call them on its hot path. A
 * NULL `m` makes every call a no-op, so call sites need no `if (metrics)`.
 * Gauges (open assignments, LMDB map use, …) are computed only when scraped,
 * by a callback the broker registers (metrics_set_gauge_fn).
 *
 * Threads: none. Every function here, and the gauge callback, runs on the
 * broker's loop thread.
 */
#ifndef CAREHUB_METRICS_H
#define CAREHUB_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

typedef struct metrics metrics_t;

#define METRICS_MAX_CONNECTIONS 8     /* scrapers at once; more wait in the listen backlog */
#define METRICS_IDLE_TIMEOUT_S 10     /* a connection silent this long is closed */
#define METRICS_REQUEST_MAX 8192      /* bytes of request line + headers (MHD's memory pool) */

/*
 * Start the HTTP server on `listen`: "HOST:PORT" with HOST a numeric IPv4
 * address ("127.0.0.1", "0.0.0.0" for every interface) or a bracketed IPv6
 * one ("[::1]:9570"); PORT 0–65535, 0 = an ephemeral port (see
 * metrics_port()). No name lookup is done (it could block).
 *
 * Returns the server, listening (nothing is served until metrics_perform()),
 * or NULL with a message in `err` (NUL-terminated, at most `errlen` bytes;
 * `err` may be NULL): a malformed address, or what bind/listen said, e.g.
 * "metrics: cannot listen on 127.0.0.1:9570: Failed to bind to port 9570:
 * Address already in use".
 */
metrics_t *metrics_new(const char *listen, char *err, size_t errlen);

/*
 * Check an address as metrics_new() will read it, without opening anything:
 * 0, or -1 with the reason in `why` (e.g. "the host must be a numeric IPv4
 * address …"). For the config loader, so --check-config refuses what
 * metrics_new() would refuse. `why` may be NULL.
 */
int metrics_check_address(const char *listen, char *why, size_t whylen);

/* Close the listening socket and every connection, free; nulls *pm. Safe on
 * NULL and on a nulled pointer. A scrape in progress is cut off. */
void metrics_destroy(metrics_t **pm);

/* The bound TCP port (the ephemeral one when started with port 0); 0 for NULL. */
int metrics_port(const metrics_t *m);

/* ---- recording: cheap, no allocation, fixed label sets ------------------- */

/* One event stored (acknowledged, not a duplicate): carehub_events_total{type}.
 * `type` is absence, mandatory_report or online_risk; anything else (or NULL)
 * counts as "other". The string is only compared, not kept. */
void metrics_event(metrics_t *m, const char *type);

/* One nack sent: carehub_nacks_total{code}. `code` is a PROTOCOL §4 code
 * (CAREHUB_E_* in carehub_wire.h); anything else (or NULL) counts as "other". */
void metrics_nack(metrics_t *m, const char *code);

/* One escalation step fired (an assignment.overdue round): carehub_escalations_total. */
void metrics_escalation(metrics_t *m);

/* One webhook/SMS delivery attempt ended: carehub_webhook_attempts_total{result},
 * result "ok" when `ok` is non-zero (a 2xx answer), "error" otherwise. */
void metrics_webhook_attempt(metrics_t *m, int ok);

/* One notice given up for good (max_age passed, or 410): carehub_webhook_failures_total. */
void metrics_webhook_failed(metrics_t *m);
/* A push (case, outcome) a peer's queue was too full to take (its high-water mark):
 * it stays pending and goes again at the next re-delivery or hello. */
void metrics_push_deferred(metrics_t *m);
/* A reply to a peer whose queue was full (it sends but does not read): dropped. */
void metrics_reply_dropped(metrics_t *m);
/* Stale LMDB reader slots (left by killed processes) cleared. */
void metrics_stale_readers(metrics_t *m, int n);

/* One LMDB write transaction committed, `seconds` from its begin to
 * mdb_txn_commit()'s return: the carehub_commit_seconds histogram. Negative
 * or NaN is counted as 0. */
void metrics_commit(metrics_t *m, double seconds);

/* ---- gauges: computed at scrape time ------------------------------------ */

/* What the broker reports on each scrape. */
typedef struct {
    uint64_t open_assignments;    /* assignments not final: open, acknowledged or in_progress */
    uint64_t overdue_assignments; /* of those, still `open` (unacknowledged) past their ack_by */
    uint64_t map_used_bytes;      /* LMDB pages in use × page size: (me_last_pgno + 1) × ms_psize */
    uint64_t map_size_bytes;      /* the current LMDB map size (me_mapsize; it grows, doubling) */
    uint64_t map_max_bytes;       /* broker.map_max, the most it may grow to; 0 = leave it out */
    uint64_t pending_notices;     /* notices in the outbox, not yet delivered or given up */
} metrics_gauges_t;

/*
 * Fill `*g` (zeroed before the call) for one scrape; return 0, or -1 when the
 * figures cannot be had right now (e.g. a read transaction failed): that
 * scrape then leaves the gauges out rather than report zeros. Runs inside
 * metrics_perform() on the loop thread, so it may read the store but should
 * be quick (a read transaction, no scans the size of the data if avoidable).
 */
typedef int (*metrics_gauge_fn)(void *ud, metrics_gauges_t *g);

/* Set (or, with fn NULL, clear) the gauge callback. Without one, the gauge
 * metrics are left out of the exposition. */
void metrics_set_gauge_fn(metrics_t *m, metrics_gauge_fn fn, void *ud);

/* ---- loop integration ---------------------------------------------------- */

/*
 * Fill up to `max` poll items with what the server waits on and return how
 * many (0 or 1: MHD's epoll descriptor, ZMQ_POLLIN; 0 for NULL m or max < 1).
 * Call before each zmq_poll(), like hook_pollitems().
 */
int metrics_pollitems(metrics_t *m, zmq_pollitem_t *items, int max);

/*
 * The longest the loop may sleep before metrics_perform() must run, in
 * milliseconds (MHD_get_timeout: connection timeouts, data MHD already has in
 * hand — then 0), or -1 for no limit. Never more than LONG_MAX.
 */
long metrics_timeout_ms(metrics_t *m);

/*
 * Do what is ready: accept, read requests, answer (calling the gauge
 * callback for a scrape), write, close timed-out connections. Never blocks.
 * MHD requires it after EVERY return of zmq_poll() (not only when the item
 * fired), as hook_perform() is called; it costs one epoll_wait(…, 0).
 */
void metrics_perform(metrics_t *m);

/*
 * The exposition itself, as served on /metrics: a heap string (free() it)
 * and its length in *len (may be NULL). Calls the gauge callback. For tests
 * and for a future `carehubd stats`; never NULL (aborts on out of memory, as xmalloc).
 */
char *metrics_render(metrics_t *m, size_t *len);

#endif
