/*
 * httpd.h — an HTTP server inside the broker's zmq_poll loop (libmicrohttpd, no
 * thread of its own). Two servers use it, kept apart on purpose: the metrics
 * endpoint (metrics.h; for the operators' Prometheus, on an internal address) and
 * the phone/web listener (phone.h; broker.http, reached by phones and browsers
 * through a reverse proxy). Different audiences, different exposure: one address
 * for both would put the metrics where the public proxy points, or the phones'
 * links where only the monitoring network should reach.
 *
 * MHD runs in its epoll mode without an internal thread: the whole server is ONE
 * descriptor (MHD's epoll fd) in the poll set however many clients are connected,
 * every socket is non-blocking, and httpd_perform() never waits on a peer. With
 * `suspend`, a handler may MHD_suspend_connection() while the loop works for it
 * (a turn's commit) and MHD_resume_connection() later; the server is then
 * started with MHD_ALLOW_SUSPEND_RESUME.
 *
 * Errors: httpd_new() returns NULL with a sentence in err; the rest cannot fail
 * (MHD's later complaints go to the broker's log, prefixed with `name`).
 * Threads: none; everything runs on the loop thread.
 */
#ifndef CAREHUB_HTTPD_H
#define CAREHUB_HTTPD_H

#include <microhttpd.h>
#include <stddef.h>
#include <zmq.h>

typedef struct httpd httpd_t;

typedef struct {
    const char *name;                   /* for the log: "metrics", "http" */
    MHD_AccessHandlerCallback handler;  /* MHD's access handler, called with cls = ud */
    void *ud;
    MHD_RequestCompletedCallback completed; /* may be NULL: frees a request's *con_cls */
    unsigned max_connections;           /* more wait in the listen backlog */
    unsigned idle_timeout_s;            /* a connection silent this long is closed */
    size_t request_max;                 /* bytes of request line + headers (MHD's pool) */
    unsigned backlog;                   /* the listen backlog (0: 16) */
    int suspend;                        /* handlers suspend/resume connections */
} httpd_opts_t;

/*
 * Listen on "HOST:PORT": HOST a numeric IPv4 address or a bracketed IPv6 one,
 * PORT 0–65535 (0: any free port, see httpd_port()). No name lookup (it could
 * block). NULL with "NAME: cannot listen on …: why" in err on failure.
 */
httpd_t *httpd_new(const char *listen, const httpd_opts_t *o, char *err, size_t errlen);
void httpd_destroy(httpd_t **h);

/* 0 when `listen` is a HOST:PORT httpd_new() accepts; else -1 and why. */
int httpd_check_address(const char *listen, char *why, size_t whylen);

int httpd_port(const httpd_t *h);

/* Loop integration, like hook_pollitems(): up to max items (0 or 1: the epoll fd). */
int httpd_pollitems(httpd_t *h, zmq_pollitem_t *items, int max);
/* The longest the loop may sleep before httpd_perform(), ms; -1: no limit. */
long httpd_timeout_ms(httpd_t *h);
/* Do what is ready; after EVERY return of zmq_poll(). Never blocks. NULL: no-op. */
void httpd_perform(httpd_t *h);

/* A piece of a request body (MHD's upload_data) onto *body (malloc'd, NUL-terminated,
 * *len bytes before the NUL); past `max` bytes nothing more is kept and *too_big is set.
 * Marks the piece taken (*upload_size = 0), as MHD wants. */
void httpd_body_append(char **body, size_t *len, int *too_big, size_t max, const char *upload,
                       size_t *upload_size);

/* Queue a fixed answer (static text, not copied), text/plain, with an Allow
 * header when allow is not NULL. MHD_NO when MHD could not (it closes). */
enum MHD_Result httpd_answer_text(struct MHD_Connection *c, unsigned status, const char *text,
                                  const char *allow);
/* Queue an answer that takes ownership of `body` (malloc'd; freed by MHD), with
 * Content-Type `type`, Cache-Control: no-store, and the headers of `extra`
 * (NULL-terminated name, value pairs; may be NULL). */
enum MHD_Result httpd_answer(struct MHD_Connection *c, unsigned status, const char *type, char *body,
                             size_t len, const char *const *extra);

#endif
