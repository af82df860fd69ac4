/*
 * httpd.c — an HTTP server inside the loop (libmicrohttpd, epoll mode, no
 * thread); see httpd.h.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "util.h"

#define HTTPD_ERR_LEN 256

struct httpd {
    struct MHD_Daemon *daemon;
    int epoll_fd;                        /* MHD's; what the loop polls */
    int port;                            /* bound port */
    const char *name;
    char *err;                           /* during httpd_new: where MHD's log goes */
    size_t errlen;
};

enum MHD_Result httpd_answer_text(struct MHD_Connection *c, unsigned status, const char *text,
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

void httpd_body_append(char **body, size_t *len, int *too_big, size_t max, const char *upload,
                       size_t *upload_size)
{
    if (*too_big || *len + *upload_size > max) {
        *too_big = 1;
    } else {
        *body = xrealloc(*body, *len + *upload_size + 1);
        memcpy(*body + *len, upload, *upload_size);
        *len += *upload_size;
        (*body)[*len] = '\0';
    }
    *upload_size = 0;
}

enum MHD_Result httpd_answer(struct MHD_Connection *c, unsigned status, const char *type, char *body,
                             size_t len, const char *const *extra)
{
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (ok == MHD_YES)
        ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (size_t i = 0; extra && extra[i] && ok == MHD_YES; i += 2)
        ok = MHD_add_response_header(r, extra[i], extra[i + 1]);
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r); /* MHD holds its own reference while sending */
    return ok;
}

/* MHD's error log: into the caller's err buffer while starting (so "cannot
 * bind" reaches the caller), into the broker's log afterwards. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    httpd_t *m = cls;
    char line[HTTPD_ERR_LEN];
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
    log_warn("%s: %s", m->name, line);
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

int httpd_check_address(const char *listen, char *why, size_t whylen)
{
    struct sockaddr_storage ss;
    int ipv6;
    char buf[HTTPD_ERR_LEN];
    int rc = parse_listen(listen, &ss, &ipv6, buf, sizeof buf);
    if (rc < 0 && why && whylen)
        util_fmt(why, whylen, "%s", buf);
    return rc;
}

httpd_t *httpd_new(const char *listen, const httpd_opts_t *o, char *err, size_t errlen)
{
    char why[HTTPD_ERR_LEN] = "";
    struct sockaddr_storage ss;
    int ipv6;
    if (err && errlen)
        err[0] = '\0';
    if (parse_listen(listen, &ss, &ipv6, why, sizeof why) < 0) {
        if (err)
            util_fmt(err, errlen, "%s: bad address '%s': %s", o->name, listen ? listen : "(null)", why);
        return NULL;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) != MHD_YES) {
        if (err)
            util_fmt(err, errlen, "%s: this libmicrohttpd was built without epoll support", o->name);
        return NULL;
    }

    httpd_t *m = xcalloc(1, sizeof *m);
    m->name = o->name;
    m->epoll_fd = -1;
    m->err = why; /* MHD's startup complaints land here */
    m->errlen = sizeof why;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0) |
                     (o->suspend ? MHD_ALLOW_SUSPEND_RESUME : 0);
    m->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, o->handler, o->ud,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, m, /* first, or MHD complains on stderr */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, o->completed, o->ud,
        MHD_OPTION_CONNECTION_LIMIT, o->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->request_max,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, o->backlog ? o->backlog : 16u,
        MHD_OPTION_END);
    m->err = NULL;
    m->errlen = 0;
    if (!m->daemon) {
        if (err)
            util_fmt(err, errlen, "%s: cannot listen on %s: %s", o->name, listen,
                     why[0] ? why : "libmicrohttpd could not start");
        free(m);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_EPOLL_FD);
    const union MHD_DaemonInfo *pinfo = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->epoll_fd < 0 || !pinfo) {
        if (err)
            util_fmt(err, errlen, "%s: libmicrohttpd gave no epoll descriptor or port", o->name);
        MHD_stop_daemon(m->daemon);
        free(m);
        return NULL;
    }
    m->epoll_fd = info->epoll_fd;
    m->port = pinfo->port;
    log_info("%s: listening on %s (port %d)", o->name, listen, m->port);
    return m;
}

void httpd_destroy(httpd_t **pm)
{
    if (!pm || !*pm)
        return;
    httpd_t *m = *pm;
    if (m->daemon)
        MHD_stop_daemon(m->daemon);
    free(m);
    *pm = NULL;
}

int httpd_port(const httpd_t *m)
{
    return m ? m->port : 0;
}

int httpd_pollitems(httpd_t *m, zmq_pollitem_t *items, int max)
{
    if (!m || !items || max < 1)
        return 0;
    items[0] = (zmq_pollitem_t){NULL, m->epoll_fd, ZMQ_POLLIN, 0};
    return 1;
}

long httpd_timeout_ms(httpd_t *m)
{
    if (!m)
        return -1;
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(m->daemon, &t) != MHD_YES)
        return -1;
    return t > (MHD_UNSIGNED_LONG_LONG)LONG_MAX ? LONG_MAX : (long)t;
}

void httpd_perform(httpd_t *m)
{
    if (!m)
        return;
    if (MHD_run(m->daemon) != MHD_YES)
        log_warn("%s: MHD_run failed; requests may stall until the next turn", m->name);
}
