/*
 * receiver.c — a minimal HTTP/1.1 webhook receiver for benchmarks (bench/egress.py).
 *
 *   receiver [-n TARGET] [-i IDS_FILE] [-k BODY_KEY] [-s SAMPLE_FILE] [-e EVERY]
 *            [-t SECONDS]
 *
 * Listens on 127.0.0.1, port 0 (the kernel picks a free one), and prints that port as
 * one line on stdout ("41234\n", flushed). One thread, epoll (level-triggered),
 * non-blocking sockets, no FD_SETSIZE limit: as many connections as RLIMIT_NOFILE
 * allows (raised to its hard limit at start). HTTP/1.1 keep-alive and pipelining;
 * `Connection: close` and HTTP/1.0 without keep-alive are honoured; bodies with
 * Content-Length or chunked; `Expect: 100-continue` is answered.
 *
 * Every POST (any path) is answered at once, as soon as its body is complete, with
 *   HTTP/1.1 200 OK / Content-Length: 0
 * and counted, with its arrival time (CLOCK_REALTIME, ms): the first, the last, and
 * the TARGET-th (-n) POST's.
 *
 *   -i FILE  for every POST one line "<webhook-id>\t<body key value>\n" ("-" for a
 *            missing one), so that the caller can check that each notice arrived
 *            and count duplicates;
 *   -k KEY   the body key value above: the string after the first `"KEY":"` (or
 *            `"KEY": "`) in the body, up to the next `"`, at most 128 bytes (no JSON
 *            unescaping: meant for plain ids such as Alertmanager label values);
 *   -s FILE  every EVERY-th POST (-e, default 100; also the first) is kept whole for
 *            signature checks, as "S\t<n>\t<webhook-id>\t<webhook-timestamp>\t
 *            <webhook-signature>\t<body length>\n<body>\n" (tabs in header values
 *            become spaces; a chunked body is kept decoded);
 *   -t SECS  exit after this many seconds in any case (default 3600), and also when
 *            the parent process goes away: a receiver never outlives its bench.
 *
 * Status: `GET /stats` answers 200 with one JSON object (and first flushes the -i
 * and -s files, so that what it counts is on disk):
 *   {"posts", "first_ms", "last_ms", "target", "target_ms", "body_bytes",
 *    "accepted", "open", "max_open", "bad", "other", "ids_written", "samples"}
 * (times 0 when not yet seen; "bad": malformed requests, answered 400 and closed;
 * "other": requests that were neither POST nor GET /stats, answered 404/405).
 * Other GETs get 404. SIGTERM or SIGINT: flush the files, exit 0.
 *
 * Limits: request head 16 KiB (431 above it), body 8 MiB (413 above it).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX (16 * 1024)
#define BODY_MAX (8 * 1024 * 1024)
#define READ_CHUNK 65536
#define MAX_EVENTS 256
#define KEYVAL_MAX 128
#define HDRVAL_MAX 256
#define MAX_FDS (1 << 20)

typedef struct {
    int fd;
    char *in;             /* bytes read, not yet consumed */
    size_t in_len, in_cap;
    char *out;            /* bytes to write */
    size_t out_len, out_off, out_cap;
    int close_after;      /* close once out is written */
    int continue_sent;    /* "100 Continue" sent for the request at the head of in */
    uint32_t events;      /* what epoll watches for it now */
} conn_t;

typedef struct {
    uint64_t posts, body_bytes, accepted, open, max_open, bad, other, ids_written, samples;
    int64_t first_ms, last_ms, target_ms;
    uint64_t target;
} stats_t;

/* One parsed request head. */
typedef struct {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    int http10;
    int keep_alive;       /* HTTP/1.0 + Connection: keep-alive */
    int conn_close;
    int chunked;
    int expect_continue;
    long long content_length; /* -1: none */
    char wid[HDRVAL_MAX], wts[HDRVAL_MAX], wsig[HDRVAL_MAX];
} head_t;

static volatile sig_atomic_t g_stop;
static stats_t g_st;
static conn_t **g_conns;
static size_t g_nconns;
static int g_ep = -1;
static FILE *g_ids;
static FILE *g_sample;
static const char *g_key;
static uint64_t g_every = 100;
static int g_spare_fd = -1;
static char *g_scratch;   /* decoded chunked body */
static size_t g_scratch_cap;

static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die(const char *what)
{
    fprintf(stderr, "receiver: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    char *p = realloc(*buf, n);
    if (!p)
        return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* ---- connections --------------------------------------------------------- */

static void conn_close(conn_t *c)
{
    epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if ((size_t)c->fd < g_nconns)
        g_conns[c->fd] = NULL;
    free(c->in);
    free(c->out);
    free(c);
    g_st.open--;
}

static int out_append(conn_t *c, const char *data, size_t len)
{
    if (grow(&c->out, &c->out_cap, c->out_len + len) < 0)
        return -1;
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return 0;
}

/* Write what is queued: 0 all written (or more to wait for), -1 the connection is done. */
static int conn_flush(conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->out_off += (size_t)w;
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        if (c->close_after)
            return -1;
    }
    /* while output waits, watch for writability; after a final answer, only that */
    uint32_t want = (c->close_after ? 0u : (uint32_t)EPOLLIN) | (c->out_len > 0 ? (uint32_t)EPOLLOUT : 0u);
    if (want != c->events) {
        struct epoll_event ev = {.events = want, .data.fd = c->fd};
        if (epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
            return -1;
        c->events = want;
    }
    return 0;
}

static void respond(conn_t *c, int status, const char *reason, const char *body, size_t body_len)
{
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                     reason, body_len, body_len ? "Content-Type: application/json\r\n" : "",
                     c->close_after ? "Connection: close\r\n" : "");
    if (out_append(c, head, (size_t)n) < 0 || (body_len && out_append(c, body, body_len) < 0))
        c->close_after = 1; /* out of memory: give up on this connection */
}

/* ---- parsing --------------------------------------------------------------- */

/* Offset just past the blank line ending the head, or 0 when not all there yet. */
static size_t find_head_end(const char *p, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (p[i] != '\n')
            continue;
        if (p[i + 1] == '\n')
            return i + 2;
        if (p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static int token_eq(const char *p, size_t len, const char *lit)
{
    return strlen(lit) == len && strncasecmp(p, lit, len) == 0;
}

/* Does the comma-separated header value hold token lit? */
static int has_token(const char *v, size_t len, const char *lit)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < len && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (token_eq(v + s, e - s, lit))
            return 1;
    }
    return 0;
}

static void copy_val(char *dst, const char *v, size_t len)
{
    if (len >= HDRVAL_MAX)
        len = HDRVAL_MAX - 1;
    for (size_t i = 0; i < len; i++)
        dst[i] = v[i] == '\t' ? ' ' : v[i];
    dst[len] = '\0';
}

/* Parse the head in p[0..len) (len includes the blank line). 0 ok, -1 malformed. */
static int parse_head(const char *p, size_t len, head_t *h)
{
    memset(h, 0, sizeof *h);
    h->content_length = -1;
    size_t i = 0;
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    size_t eol = 0;
    while (eol < len && p[eol] != '\n')
        eol++;
    size_t le = eol > 0 && p[eol - 1] == '\r' ? eol - 1 : eol;
    const char *sp1 = memchr(p, ' ', le);
    if (!sp1)
        return -1;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(p + le - (sp1 + 1)));
    if (!sp2 || sp1 == p || sp2 == sp1 + 1)
        return -1;
    h->method = p;
    h->method_len = (size_t)(sp1 - p);
    h->target = sp1 + 1;
    h->target_len = (size_t)(sp2 - sp1 - 1);
    const char *ver = sp2 + 1;
    size_t ver_len = (size_t)(p + le - ver);
    if (token_eq(ver, ver_len, "HTTP/1.0"))
        h->http10 = 1;
    else if (!token_eq(ver, ver_len, "HTTP/1.1"))
        return -1;
    i = eol + 1;
    /* header fields */
    while (i < len) {
        eol = i;
        while (eol < len && p[eol] != '\n')
            eol++;
        le = eol > i && p[eol - 1] == '\r' ? eol - 1 : eol;
        if (le == i)
            break; /* the blank line */
        const char *colon = memchr(p + i, ':', le - i);
        if (!colon || colon == p + i)
            return -1;
        const char *name = p + i;
        size_t name_len = (size_t)(colon - name);
        const char *v = colon + 1;
        const char *ve = p + le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vlen = (size_t)(ve - v);
        if (token_eq(name, name_len, "content-length")) {
            long long n = 0;
            if (vlen == 0 || vlen > 18)
                return -1;
            for (size_t k = 0; k < vlen; k++) {
                if (v[k] < '0' || v[k] > '9')
                    return -1;
                n = n * 10 + (v[k] - '0');
            }
            if (h->content_length >= 0 && h->content_length != n)
                return -1;
            h->content_length = n;
        } else if (token_eq(name, name_len, "transfer-encoding")) {
            if (has_token(v, vlen, "chunked"))
                h->chunked = 1;
            else
                return -1;
        } else if (token_eq(name, name_len, "connection")) {
            if (has_token(v, vlen, "close"))
                h->conn_close = 1;
            if (has_token(v, vlen, "keep-alive"))
                h->keep_alive = 1;
        } else if (token_eq(name, name_len, "expect")) {
            if (token_eq(v, vlen, "100-continue"))
                h->expect_continue = 1;
        } else if (token_eq(name, name_len, "webhook-id")) {
            copy_val(h->wid, v, vlen);
        } else if (token_eq(name, name_len, "webhook-timestamp")) {
            copy_val(h->wts, v, vlen);
        } else if (token_eq(name, name_len, "webhook-signature")) {
            copy_val(h->wsig, v, vlen);
        }
        i = eol + 1;
    }
    if (h->chunked)
        h->content_length = -1; /* RFC 9112 6.3: chunked wins */
    return 0;
}

/* A chunked body at p[0..len): 1 complete (*consumed = its bytes on the wire, decoded
 * into g_scratch[0..*decoded) when decode), 0 not all there yet, -1 malformed/too big. */
static int parse_chunked(const char *p, size_t len, int decode, size_t *consumed, size_t *decoded)
{
    size_t i = 0, out = 0;
    for (;;) {
        size_t eol = i;
        while (eol < len && p[eol] != '\n')
            eol++;
        if (eol >= len)
            return eol - i > 64 ? -1 : 0;
        uint64_t size = 0;
        size_t k = i;
        int digits = 0;
        for (; k < eol; k++) {
            char ch = p[k];
            int d;
            if (ch >= '0' && ch <= '9')
                d = ch - '0';
            else if (ch >= 'a' && ch <= 'f')
                d = ch - 'a' + 10;
            else if (ch >= 'A' && ch <= 'F')
                d = ch - 'A' + 10;
            else
                break;
            size = size * 16 + (uint64_t)d;
            if (size > BODY_MAX)
                return -1;
            digits++;
        }
        if (!digits)
            return -1;
        i = eol + 1;
        if (size == 0) {
            /* trailer fields until a blank line */
            for (;;) {
                eol = i;
                while (eol < len && p[eol] != '\n')
                    eol++;
                if (eol >= len)
                    return 0;
                size_t le = eol > i && p[eol - 1] == '\r' ? eol - 1 : eol;
                int blank = le == i;
                i = eol + 1;
                if (blank) {
                    *consumed = i;
                    *decoded = out;
                    return 1;
                }
            }
        }
        if (out + size > BODY_MAX)
            return -1;
        if (len - i < size + 1)
            return 0;
        if (decode) {
            if (grow(&g_scratch, &g_scratch_cap, out + size) < 0)
                return -1;
            memcpy(g_scratch + out, p + i, size);
        }
        out += size;
        i += size;
        if (p[i] == '\r') {
            if (len - i < 2)
                return 0;
            i++;
        }
        if (p[i] != '\n')
            return -1;
        i++;
    }
}

/* The value after "KEY":"  (or "KEY": ") in body, into dst; 0 found, -1 not. */
static int body_key(const char *body, size_t len, char *dst, size_t cap)
{
    size_t klen = strlen(g_key);
    for (size_t i = 0; i + klen + 3 < len; i++) {
        if (body[i] != '"' || memcmp(body + i + 1, g_key, klen) != 0 || body[i + 1 + klen] != '"')
            continue;
        size_t j = i + klen + 2;
        while (j < len && (body[j] == ' ' || body[j] == '\t'))
            j++;
        if (j >= len || body[j] != ':')
            continue;
        j++;
        while (j < len && (body[j] == ' ' || body[j] == '\t'))
            j++;
        if (j >= len || body[j] != '"')
            continue;
        j++;
        size_t n = 0;
        while (j < len && body[j] != '"' && n + 1 < cap) {
            char ch = body[j++];
            dst[n++] = (ch == '\t' || ch == '\n' || ch == '\r') ? ' ' : ch;
        }
        dst[n] = '\0';
        return 0;
    }
    return -1;
}

/* ---- requests --------------------------------------------------------------- */

static void handle_post(const head_t *h, const char *body, size_t body_len)
{
    int64_t now = wall_ms();
    g_st.posts++;
    g_st.body_bytes += body_len;
    if (!g_st.first_ms)
        g_st.first_ms = now;
    g_st.last_ms = now;
    if (g_st.target && g_st.posts == g_st.target)
        g_st.target_ms = now;
    if (g_ids) {
        char kv[KEYVAL_MAX + 1];
        int have = g_key && body_key(body, body_len, kv, sizeof kv) == 0;
        fprintf(g_ids, "%s\t%s\n", h->wid[0] ? h->wid : "-", have && kv[0] ? kv : "-");
        g_st.ids_written++;
    }
    if (g_sample && (g_st.posts == 1 || g_st.posts % g_every == 0)) {
        fprintf(g_sample, "S\t%" PRIu64 "\t%s\t%s\t%s\t%zu\n", g_st.posts, h->wid[0] ? h->wid : "-",
                h->wts[0] ? h->wts : "-", h->wsig[0] ? h->wsig : "-", body_len);
        fwrite(body, 1, body_len, g_sample);
        fputc('\n', g_sample);
        g_st.samples++;
    }
}

static void handle_stats(conn_t *c)
{
    if (g_ids)
        fflush(g_ids);
    if (g_sample)
        fflush(g_sample);
    char body[768];
    int n = snprintf(body, sizeof body,
                     "{\"posts\":%" PRIu64 ",\"first_ms\":%" PRId64 ",\"last_ms\":%" PRId64
                     ",\"target\":%" PRIu64 ",\"target_ms\":%" PRId64 ",\"body_bytes\":%" PRIu64
                     ",\"accepted\":%" PRIu64 ",\"open\":%" PRIu64 ",\"max_open\":%" PRIu64
                     ",\"bad\":%" PRIu64 ",\"other\":%" PRIu64 ",\"ids_written\":%" PRIu64
                     ",\"samples\":%" PRIu64 "}\n",
                     g_st.posts, g_st.first_ms, g_st.last_ms, g_st.target, g_st.target_ms,
                     g_st.body_bytes, g_st.accepted, g_st.open, g_st.max_open, g_st.bad, g_st.other,
                     g_st.ids_written, g_st.samples);
    respond(c, 200, "OK", body, (size_t)n);
}

/* Serve every complete request at the head of c->in. 0 ok, -1 close now. */
static int serve(conn_t *c)
{
    size_t off = 0;
    while (!c->close_after && off < c->in_len) {
        const char *p = c->in + off;
        size_t avail = c->in_len - off;
        size_t head_len = find_head_end(p, avail);
        if (!head_len) {
            if (avail > HEAD_MAX) {
                g_st.bad++;
                c->close_after = 1;
                respond(c, 431, "Request Header Fields Too Large", NULL, 0);
            }
            break;
        }
        /* tolerate stray blank lines between requests (RFC 9112 2.2) */
        if (head_len <= 2 && (p[0] == '\n' || p[0] == '\r')) {
            off += head_len;
            continue;
        }
        if (head_len > HEAD_MAX) {
            g_st.bad++;
            c->close_after = 1;
            respond(c, 431, "Request Header Fields Too Large", NULL, 0);
            break;
        }
        head_t h;
        if (parse_head(p, head_len, &h) < 0) {
            g_st.bad++;
            c->close_after = 1;
            respond(c, 400, "Bad Request", NULL, 0);
            break;
        }
        if (h.content_length > BODY_MAX) {
            g_st.bad++;
            c->close_after = 1;
            respond(c, 413, "Content Too Large", NULL, 0);
            break;
        }
        int is_post = token_eq(h.method, h.method_len, "POST");
        const char *body = p + head_len;
        size_t body_len = 0, wire_len = 0;
        if (h.chunked) {
            int keep = is_post && (g_sample || g_key);
            int r = parse_chunked(body, avail - head_len, keep, &wire_len, &body_len);
            if (r < 0) {
                g_st.bad++;
                c->close_after = 1;
                respond(c, 400, "Bad Request", NULL, 0);
                break;
            }
            if (r == 0)
                goto incomplete;
            if (keep)
                body = g_scratch;
        } else if (h.content_length > 0) {
            if (avail - head_len < (size_t)h.content_length)
                goto incomplete;
            body_len = wire_len = (size_t)h.content_length;
        }
        if (h.conn_close || (h.http10 && !h.keep_alive))
            c->close_after = 1;
        if (is_post) {
            handle_post(&h, body, body_len);
            respond(c, 200, "OK", NULL, 0);
        } else if (token_eq(h.method, h.method_len, "GET") &&
                   (token_eq(h.target, h.target_len, "/stats") ||
                    (h.target_len > 7 && strncmp(h.target, "/stats?", 7) == 0))) {
            handle_stats(c);
        } else {
            g_st.other++;
            int is_get = token_eq(h.method, h.method_len, "GET") || token_eq(h.method, h.method_len, "HEAD");
            if (is_get)
                respond(c, 404, "Not Found", NULL, 0);
            else
                respond(c, 405, "Method Not Allowed", NULL, 0);
        }
        off += head_len + wire_len;
        c->continue_sent = 0;
        continue;
incomplete:
        if (h.expect_continue && !c->continue_sent && !h.http10) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            out_append(c, cont, sizeof cont - 1);
            c->continue_sent = 1;
        }
        break;
    }
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    return conn_flush(c);
}

static void on_readable(conn_t *c)
{
    for (int rounds = 0; rounds < 16; rounds++) {
        if (grow(&c->in, &c->in_cap, c->in_len + READ_CHUNK) < 0) {
            conn_close(c);
            return;
        }
        size_t room = c->in_cap - c->in_len;
        ssize_t r = recv(c->fd, c->in + c->in_len, room, 0);
        if (r == 0) {
            conn_close(c);
            return;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(c);
            return;
        }
        c->in_len += (size_t)r;
        if (serve(c) < 0) {
            conn_close(c);
            return;
        }
        if (c->close_after)
            break; /* the rest of the input is not read */
        if ((size_t)r < room)
            break; /* a short read: drained for now (level-triggered: more wakes us) */
    }
}

static void on_accept(int lfd)
{
    for (int k = 0; k < 256; k++) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && g_spare_fd >= 0) {
                /* out of descriptors: take the connection and drop it, so that the
                 * listener does not stay readable forever */
                close(g_spare_fd);
                int x = accept(lfd, NULL, NULL);
                if (x >= 0)
                    close(x);
                g_spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                fprintf(stderr, "receiver: out of file descriptors, a connection was dropped\n");
            }
            return;
        }
        if ((size_t)fd >= g_nconns || set_nonblock(fd) < 0) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        g_conns[fd] = c;
        g_st.accepted++;
        g_st.open++;
        if (g_st.open > g_st.max_open)
            g_st.max_open = g_st.open;
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: receiver [-n TARGET] [-i IDS_FILE] [-k BODY_KEY] [-s SAMPLE_FILE] [-e EVERY]\n"
                 "                [-t SECONDS]\n"
                 "  listens on 127.0.0.1:0, prints the port; answers every POST 200 at once;\n"
                 "  GET /stats gives the counts as JSON. See the header of bench/receiver.c.\n");
}

static int parse_u64(const char *s, uint64_t lo, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *ids_path = NULL, *sample_path = NULL;
    uint64_t life_s = 3600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v) {
            fprintf(stderr, "receiver: %s needs a value\n", a);
            return 2;
        }
        int bad = 0;
        if (!strcmp(a, "-n"))
            bad = parse_u64(v, 1, &g_st.target);
        else if (!strcmp(a, "-i"))
            ids_path = v;
        else if (!strcmp(a, "-k"))
            g_key = v;
        else if (!strcmp(a, "-s"))
            sample_path = v;
        else if (!strcmp(a, "-e"))
            bad = parse_u64(v, 1, &g_every);
        else if (!strcmp(a, "-t"))
            bad = parse_u64(v, 1, &life_s);
        else {
            fprintf(stderr, "receiver: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "receiver: %s wants a whole number >= 1, not '%s'\n", a, v);
            return 2;
        }
    }
    if (g_key && (!g_key[0] || strchr(g_key, '"'))) {
        fprintf(stderr, "receiver: -k wants a key name without quotes\n");
        return 2;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        g_nconns = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > MAX_FDS ? MAX_FDS : (size_t)rl.rlim_cur;
    } else {
        g_nconns = 1024;
    }
    g_conns = calloc(g_nconns, sizeof *g_conns);
    if (!g_conns)
        die("calloc");

    if (ids_path && !(g_ids = fopen(ids_path, "w")))
        die(ids_path);
    if (sample_path && !(g_sample = fopen(sample_path, "w")))
        die(sample_path);
    if (g_ids)
        setvbuf(g_ids, NULL, _IOFBF, 1 << 16);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    pid_t parent = getppid();

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind 127.0.0.1:0");
    if (listen(lfd, 4096) < 0)
        die("listen");
    if (set_nonblock(lfd) < 0)
        die("fcntl");
    socklen_t alen = sizeof addr;
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
        die("getsockname");
    g_spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("epoll_ctl");

    printf("%u\n", (unsigned)ntohs(addr.sin_port));
    fflush(stdout);

    int64_t deadline = mono_ms() + (int64_t)life_s * 1000;
    struct epoll_event evs[MAX_EVENTS];
    int rc = 0;
    while (!g_stop) {
        if (mono_ms() >= deadline) {
            fprintf(stderr, "receiver: lifetime of %" PRIu64 " s is over, exiting\n", life_s);
            break;
        }
        if (getppid() != parent) {
            fprintf(stderr, "receiver: the parent process went away, exiting\n");
            break;
        }
        int n = epoll_wait(g_ep, evs, MAX_EVENTS, 250);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "receiver: epoll_wait: %s\n", strerror(errno));
            rc = 1;
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                on_accept(lfd);
                continue;
            }
            conn_t *c = (size_t)fd < g_nconns ? g_conns[fd] : NULL;
            if (!c)
                continue;
            if (evs[i].events & EPOLLOUT) {
                if (conn_flush(c) < 0) {
                    conn_close(c);
                    continue;
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
        }
    }
    for (size_t fd = 0; fd < g_nconns; fd++)
        if (g_conns[fd])
            conn_close(g_conns[fd]);
    if (g_ids && fclose(g_ids) != 0)
        rc = 1;
    if (g_sample && fclose(g_sample) != 0)
        rc = 1;
    close(lfd);
    close(g_ep);
    free(g_conns);
    free(g_scratch);
    return rc;
}
