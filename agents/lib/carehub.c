/*
 * carehub.c — libcarehub: store-and-forward agent side of the carehub wire
 * protocol; the manual is include/carehub.h.
 *
 * The connection is a small state machine (set_state() is the only place it
 * changes):
 *
 *   HELLO    hello sent (or due), waiting for welcome; nothing else is sent
 *   READY    welcomed: events go out from the spool, oldest first, at most
 *            WINDOW at a time; requests and pings go out too
 *   REFUSED  hello was refused (unauthorized…); hello is tried again after
 *            max_backoff_ms
 *
 * Lazy Pirate: while something is outstanding (sent, not answered) and the
 * broker has said nothing for the current timeout, the DEALER socket is
 * closed (linger 0: what it queued is dropped) and reopened, hello is said
 * again and everything unanswered is resent in spool order. The timeout
 * doubles on each such reconnect up to max_backoff_ms and is back to
 * request_timeout_ms as soon as the broker says anything.
 *
 * Every frame from the broker passes frame_check() before msgpack-c sees it.
 */
#include "carehub.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "carehub_wire.h"
#include "frame.h"
#include "spool.h"
#include "util.h"

#define CAREHUB_VERSION_STR "1.0.0"

/* Events in flight at once. The broker commits in groups, so a window keeps
 * it busy; it stays far below ZeroMQ's default send high-water mark (1000). */
#define WINDOW 64
/* Largest frame accepted from the broker (ZMQ_MAXMSGSIZE): a `case` fits in
 * the broker's max_message_bytes, 256 KiB by default. */
#define MAX_IN_FRAME (8 * 1024 * 1024)
/* Largest event or request accepted for sending (the broker's own limit, from
 * welcome, is checked before each send). */
#define MAX_OUT_FRAME (16 * 1024 * 1024)
/* Messages read in one carehub_poll() before the spool removals are committed. */
#define DRAIN_MAX 4096

typedef enum { ST_HELLO, ST_READY, ST_REFUSED } state_t;

static const char *state_name(state_t s)
{
    switch (s) {
    case ST_HELLO: return "hello";
    case ST_READY: return "ready";
    case ST_REFUSED: return "refused";
    }
    return "?";
}

/* An event of the spool that is in the window. */
typedef struct {
    uint64_t seq;
    char id[65];
    char *frame;
    size_t len;
    char *tag;
    int sent;          /* 1: sent on this connection, unanswered */
    int64_t retry_at;  /* when unsent: not before this (mono ms) */
} slot_t;

/* A request (carehub_request): in memory only. */
typedef struct {
    char id[65];
    char *frame;
    size_t len;
    int sent;
    int64_t retry_at;
} req_t;

struct carehub {
    char *endpoint, *agent, *software;
    int curve;
    char secret_key[41], public_key[41], server_key[41];
    int request_timeout_ms, max_backoff_ms;
    carehub_callbacks_t cb;

    void *zctx;
    void *sock;
    spool_t *spool;

    state_t state;
    char hello_id[65];
    int hello_out;           /* hello sent, unanswered */
    int64_t hello_retry_at;  /* HELLO/REFUSED without hello_out: send hello then */
    int heartbeat_ms;
    size_t max_message_bytes;

    int64_t progress_at;     /* last frame heard, or first send with nothing outstanding */
    int64_t last_heard;
    int cur_timeout;         /* Lazy Pirate: doubles per reconnect */
    int unavail_delay;       /* backoff after `unavailable` */
    unsigned reconnects;

    char ping_id[65];
    int ping_out;

    slot_t win[WINDOW];
    int nwin;
    uint64_t next_seq;       /* spool position after the last record loaded */
    size_t damaged;          /* spool records that could not be read (skipped) */
    char *spool_dir;

    req_t *reqs;
    size_t nreqs, capreqs;

    uint64_t *rm_seq;        /* answered events, removed from the spool at the end of a poll */
    char (*rm_id)[65];
    size_t nrm, caprm;

    char msg_prefix[24];
    uint64_t msg_n;
    const char *cb_tag;      /* carehub_event_tag() */
    int in_cb;
    char last_error[512];
};

/* ---- small things -------------------------------------------------------------- */

const char *carehub_strerror(int err)
{
    switch (err) {
    case CAREHUB_OK: return "success";
    case CAREHUB_EINVAL: return "invalid argument";
    case CAREHUB_ESPOOL: return "the spool cannot be opened or written";
    case CAREHUB_ENET: return "ZeroMQ error (endpoint or key)";
    case CAREHUB_ETIMEOUT: return "timed out with events unacknowledged";
    case CAREHUB_EREFUSED: return "the broker refused this agent";
    case CAREHUB_EJSON: return "not a JSON object";
    case CAREHUB_ENOMEM: return "out of memory";
    }
    return "unknown libcarehub error";
}

const char *carehub_version(void)
{
    return CAREHUB_VERSION_STR;
}

const char *carehub_last_error(const carehub_t *c)
{
    return c ? c->last_error : "no carehub handle";
}

const char *carehub_event_tag(const carehub_t *c)
{
    return c ? c->cb_tag : NULL;
}

static int set_err(carehub_t *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_err(carehub_t *c, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(c->last_error, sizeof c->last_error, fmt, ap); /* truncation is fine */
    va_end(ap);
    return rc;
}

static void set_state(carehub_t *c, state_t s)
{
    if (c->state == s)
        return;
    if (getenv("CAREHUB_DEBUG"))
        fprintf(stderr, "libcarehub: %s: %s -> %s\n", c->agent, state_name(c->state), state_name(s));
    c->state = s;
}

static int64_t now_ms(void)
{
    return util_mono_ms();
}

static void new_msg_id(carehub_t *c, char out[65])
{
    util_fmt(out, 65, "%s-%llu", c->msg_prefix, (unsigned long long)++c->msg_n);
}

/* A random id: prefix + 32 hex digits (libsodium's CSPRNG). */
static void random_id(const char *prefix, char out[65])
{
    unsigned char r[16];
    char hex[33];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    util_fmt(out, 65, "%s%s", prefix, hex);
}

/* A bounded, NUL-free C copy of a msgpack string (or "" when o is not one). */
static void copy_str(const msgpack_object *o, char *out, size_t size)
{
    const char *s;
    size_t n;
    if (!frame_str(o, &s, &n)) {
        out[0] = '\0';
        return;
    }
    if (n >= size)
        n = size - 1;
    memcpy(out, n ? s : "", n);
    out[n] = '\0';
    out[strnlen(out, n)] = '\0';
    frame_text_clean(out);
}

static int valid_z85_key(const char *k)
{
    uint8_t bin[32];
    return k && strlen(k) == 40 && zmq_z85_decode(bin, k) != NULL;
}

/* The key on the first line of f (closed here) into out[41]. */
static int key_from_stream(FILE *f, char out[41])
{
    char line[256];
    char *got = fgets(line, sizeof line, f);
    fclose(f);
    if (!got) {
        sodium_memzero(line, sizeof line);
        errno = EINVAL;
        return CAREHUB_EINVAL;
    }
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
        line[--n] = '\0';
    int ok = valid_z85_key(line);
    if (ok)
        memcpy(out, line, 41);
    sodium_memzero(line, sizeof line);
    if (!ok) {
        errno = EINVAL;
        return CAREHUB_EINVAL;
    }
    return CAREHUB_OK;
}

int carehub_read_key(const char *path, char out[41])
{
    if (!path || !out) {
        errno = EINVAL;
        return CAREHUB_EINVAL;
    }
    FILE *f = fopen(path, "r");
    if (!f)
        return CAREHUB_EINVAL; /* errno says why */
    return key_from_stream(f, out);
}

int carehub_read_secret_key(const char *path, char out[41])
{
    if (!path || !out) {
        errno = EINVAL;
        return CAREHUB_EINVAL;
    }
    /* O_NOFOLLOW: a symbolic link fails with ELOOP; O_NONBLOCK: a FIFO does not hang */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return CAREHUB_EINVAL; /* errno says why */
    struct stat st;
    int e = 0;
    if (fstat(fd, &st) < 0)
        e = errno;
    else if (!S_ISREG(st.st_mode))
        e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    else if (st.st_mode & 077)
        e = EPERM; /* group or others may read or write it */
    FILE *f = e ? NULL : fdopen(fd, "r");
    if (!f) {
        if (!e)
            e = errno;
        close(fd);
        errno = e;
        return CAREHUB_EINVAL;
    }
    setvbuf(f, NULL, _IONBF, 0); /* no copy of the key left in a stdio buffer */
    return key_from_stream(f, out);
}

/* ---- the window and the requests -------------------------------------------------- */

static void slot_free(slot_t *s)
{
    free(s->frame);
    free(s->tag);
    memset(s, 0, sizeof *s);
}

static int outstanding(const carehub_t *c)
{
    if (c->hello_out || c->ping_out)
        return 1;
    for (int i = 0; i < c->nwin; i++)
        if (c->win[i].sent)
            return 1;
    for (size_t i = 0; i < c->nreqs; i++)
        if (c->reqs[i].sent)
            return 1;
    return 0;
}

/* Everything sent on this connection is unanswered for good: send it again. */
static void mark_all_unsent(carehub_t *c)
{
    for (int i = 0; i < c->nwin; i++) {
        c->win[i].sent = 0;
        c->win[i].retry_at = 0;
    }
    for (size_t i = 0; i < c->nreqs; i++) {
        c->reqs[i].sent = 0;
        c->reqs[i].retry_at = 0;
    }
    c->ping_out = 0;
}

static int find_slot(const carehub_t *c, const char *id)
{
    for (int i = 0; i < c->nwin; i++)
        if (strcmp(c->win[i].id, id) == 0)
            return i;
    return -1;
}

static long find_req(const carehub_t *c, const char *id)
{
    for (size_t i = 0; i < c->nreqs; i++)
        if (strcmp(c->reqs[i].id, id) == 0)
            return (long)i;
    return -1;
}

/* Take slot i out of the window (keeping spool order) and queue its removal
 * from the spool; the caller gets the slot's contents in *out to free. */
static void slot_done(carehub_t *c, int i, slot_t *out)
{
    *out = c->win[i];
    memmove(&c->win[i], &c->win[i + 1], (size_t)(c->nwin - i - 1) * sizeof c->win[0]);
    c->nwin--;
    memset(&c->win[c->nwin], 0, sizeof c->win[0]);
    if (c->nrm == c->caprm) {
        /* Out of memory: the event is not queued for removal and stays in the
         * spool; it is resent later and the broker answers duplicate:true. */
        size_t cap = c->caprm ? c->caprm * 2 : 64;
        uint64_t *seq = realloc(c->rm_seq, cap * sizeof *seq);
        if (!seq)
            return;
        c->rm_seq = seq;
        char(*ids)[65] = realloc(c->rm_id, cap * sizeof *ids);
        if (!ids)
            return;
        c->rm_id = ids;
        c->caprm = cap;
    }
    c->rm_seq[c->nrm] = out->seq;
    memcpy(c->rm_id[c->nrm], out->id, 65);
    c->nrm++;
}

static void req_remove(carehub_t *c, size_t i)
{
    free(c->reqs[i].frame);
    memmove(&c->reqs[i], &c->reqs[i + 1], (c->nreqs - i - 1) * sizeof c->reqs[0]);
    c->nreqs--;
}

/* Commit the queued removals. */
static int commit_removals(carehub_t *c)
{
    char err[512];
    if (c->nrm == 0)
        return CAREHUB_OK;
    if (spool_remove(c->spool, c->rm_seq, c->rm_id, c->nrm, err, sizeof err) < 0)
        return set_err(c, CAREHUB_ESPOOL, "%s", err);
    c->nrm = 0;
    return CAREHUB_OK;
}

/* Records in the spool not yet in the window (nor answered, nor unreadable). */
static int more_in_spool(const carehub_t *c)
{
    return c->nwin < WINDOW && spool_count(c->spool) > (size_t)c->nwin + c->nrm + c->damaged;
}

/* Load spool records after the window's last one, up to WINDOW in all. */
static int refill(carehub_t *c)
{
    char err[512];
    spool_rec_t recs[WINDOW];
    size_t damaged = 0;
    if (!more_in_spool(c))
        return CAREHUB_OK;
    uint64_t next = c->next_seq;
    int n = spool_read(c->spool, c->next_seq, recs, WINDOW - c->nwin, &next, &damaged, err, sizeof err);
    if (n < 0)
        return set_err(c, CAREHUB_ESPOOL, "%s", err);
    c->next_seq = next;
    if (damaged) {
        c->damaged += damaged;
        set_err(c, CAREHUB_ESPOOL, "%zu damaged record(s) in the spool %s cannot be sent; they stay "
                "there (counted as pending) for inspection", c->damaged, c->spool_dir);
    }
    for (int i = 0; i < n; i++) {
        slot_t *s = &c->win[c->nwin++];
        memset(s, 0, sizeof *s);
        s->seq = recs[i].seq;
        memcpy(s->id, recs[i].id, 65);
        s->frame = recs[i].frame;
        s->len = recs[i].frame_len;
        s->tag = recs[i].tag;
    }
    return CAREHUB_OK;
}

/* ---- the socket ------------------------------------------------------------------ */

/* Send one frame without blocking: 0 sent, 1 would block, -1 error. */
static int send_frame(carehub_t *c, const void *data, size_t len)
{
    if (!c->sock)
        return 1;
    if (!outstanding(c))
        c->progress_at = now_ms(); /* the answer timeout starts now */
    if (zmq_send(c->sock, data, len, ZMQ_DONTWAIT) >= 0)
        return 0;
    if (errno == EAGAIN || errno == EINTR)
        return 1;
    set_err(c, CAREHUB_ENET, "cannot send to %s: %s", c->endpoint, zmq_strerror(errno));
    return -1;
}

/* A message of only v, op, id. */
static void send_simple(carehub_t *c, const char *op, const char *id)
{
    frame_out_t o;
    frame_out_message(&o, op, id, 0);
    (void)send_frame(c, o.sb.data, o.sb.size); /* pong/received: lost ones are re-asked */
    frame_out_end(&o);
}

static void send_hello(carehub_t *c)
{
    frame_out_t o;
    new_msg_id(c, c->hello_id);
    frame_out_message(&o, "hello", c->hello_id, 2);
    frame_out_str(&o, "agent", c->agent);
    frame_out_str(&o, "software", c->software);
    int rc = send_frame(c, o.sb.data, o.sb.size);
    frame_out_end(&o);
    if (rc == 0) {
        c->hello_out = 1;
    } else {
        c->hello_out = 0;
        c->hello_retry_at = now_ms() + 100;
    }
}

static int open_socket(carehub_t *c)
{
    int zero = 0;
    int64_t maxmsg = MAX_IN_FRAME;
    c->sock = zmq_socket(c->zctx, ZMQ_DEALER);
    if (!c->sock)
        return set_err(c, CAREHUB_ENET, "cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
    (void)zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    (void)zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (c->curve) {
        if (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, c->server_key, 41) < 0 ||
            zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, c->public_key, 41) < 0 ||
            zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, c->secret_key, 41) < 0) {
            int e = errno;
            zmq_close(c->sock);
            c->sock = NULL;
            return set_err(c, CAREHUB_ENET, "cannot set the CURVE keys: %s", zmq_strerror(e));
        }
    }
    if (zmq_connect(c->sock, c->endpoint) < 0) {
        int e = errno;
        zmq_close(c->sock);
        c->sock = NULL;
        return set_err(c, CAREHUB_ENET, "cannot connect to %s: %s", c->endpoint, zmq_strerror(e));
    }
    return CAREHUB_OK;
}

/* Lazy Pirate: drop the socket with whatever it queued, open a new one, say hello. */
static int reconnect(carehub_t *c)
{
    if (c->sock) {
        zmq_close(c->sock);
        c->sock = NULL;
    }
    mark_all_unsent(c);
    c->hello_out = 0;
    set_state(c, ST_HELLO);
    c->reconnects++;
    int rc = open_socket(c);
    if (rc != CAREHUB_OK) {
        c->hello_retry_at = now_ms() + c->cur_timeout;
        return rc;
    }
    send_hello(c);
    c->progress_at = now_ms();
    return CAREHUB_OK;
}

/* Say hello again on this connection (the broker forgot us): whatever was sent
 * is resent after the welcome. */
static void rehello(carehub_t *c)
{
    if (c->state != ST_READY)
        return;
    set_state(c, ST_HELLO);
    mark_all_unsent(c);
    send_hello(c);
}

/* ---- what the broker sends ---------------------------------------------------------- */

/* The message as JSON text (malloc'd), or NULL when it cannot be (bin…). */
static char *msg_json(carehub_t *c, const msgpack_object *map, const char *op)
{
    char path[256], why[256];
    json_t *j = frame_to_json(map, path, sizeof path, why, sizeof why);
    if (!j) {
        set_err(c, CAREHUB_OK, "the broker sent a `%s` that is not JSON-compatible at %s (%s); ignored",
                op, path[0] ? path : "/", why);
        return NULL;
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static void on_welcome(carehub_t *c, const msgpack_object *map, const char *id)
{
    int64_t v;
    if (strcmp(id, c->hello_id) != 0 || !c->hello_out)
        return; /* a welcome to an old hello */
    c->hello_out = 0;
    if (frame_int(frame_map_get(map, "heartbeat_ms"), &v) && v > 0 && v < 86400000)
        c->heartbeat_ms = (int)v;
    if (frame_int(frame_map_get(map, "max_message_bytes"), &v) && v > 0)
        c->max_message_bytes = (size_t)v;
    set_state(c, ST_READY);
}

static void event_answered(carehub_t *c, int i, const char *event, const char *case_id, int dup,
                           const char *code, const char *error, const char *field)
{
    slot_t s;
    slot_done(c, i, &s);
    c->cb_tag = s.tag;
    c->in_cb = 1;
    if (code) {
        if (c->cb.on_nack)
            c->cb.on_nack(c->cb.ud, s.id, code, error, field);
    } else if (c->cb.on_ack) {
        c->cb.on_ack(c->cb.ud, s.id, event, case_id, dup);
    }
    c->in_cb = 0;
    c->cb_tag = NULL;
    slot_free(&s);
}

static void on_ack(carehub_t *c, const msgpack_object *map, const char *id)
{
    int i = find_slot(c, id);
    if (i >= 0) {
        char event[65], case_id[65];
        const msgpack_object *d = frame_map_get(map, "duplicate");
        copy_str(frame_map_get(map, "event"), event, sizeof event);
        copy_str(frame_map_get(map, "case"), case_id, sizeof case_id);
        c->unavail_delay = c->request_timeout_ms;
        event_answered(c, i, event, case_id, d && d->type == MSGPACK_OBJECT_BOOLEAN && d->via.boolean,
                       NULL, NULL, NULL);
    }
    /* a request's ack is a reply: handled by the caller */
}

static void on_nack(carehub_t *c, const msgpack_object *map, const char *id)
{
    char code[64], error[1024], field[256];
    copy_str(frame_map_get(map, "code"), code, sizeof code);
    copy_str(frame_map_get(map, "error"), error, sizeof error);
    copy_str(frame_map_get(map, "field"), field, sizeof field);
    const char *fld = frame_map_get(map, "field") ? field : NULL;

    if (id && c->hello_out && strcmp(id, c->hello_id) == 0) {
        c->hello_out = 0;
        if (strcmp(code, CAREHUB_E_UNAVAILABLE) == 0) {
            c->hello_retry_at = now_ms() + c->cur_timeout;
            set_err(c, CAREHUB_OK, "the broker cannot take agents now (%s); trying again", error);
            return;
        }
        set_state(c, ST_REFUSED);
        c->hello_retry_at = now_ms() + c->max_backoff_ms;
        set_err(c, CAREHUB_EREFUSED, "the broker at %s refused hello as %s: %s: %s", c->endpoint,
                c->agent, code[0] ? code : "?", error[0] ? error : "no reason given");
        return;
    }
    if (strcmp(code, CAREHUB_E_HELLO_REQUIRED) == 0) {
        rehello(c); /* the broker lost our session (restart): hello, then resend */
        return;
    }
    if (!id) {
        set_err(c, CAREHUB_OK, "the broker refused a message it could not read: %s: %s", code, error);
        return;
    }
    int retry = strcmp(code, CAREHUB_E_UNAVAILABLE) == 0;
    int i = find_slot(c, id);
    if (i >= 0) {
        if (retry) {
            c->win[i].sent = 0;
            c->win[i].retry_at = now_ms() + c->unavail_delay;
            c->unavail_delay = c->unavail_delay * 2 > c->max_backoff_ms ? c->max_backoff_ms
                                                                       : c->unavail_delay * 2;
            set_err(c, CAREHUB_OK, "the broker cannot store now (%s); the event stays spooled", error);
            return;
        }
        event_answered(c, i, NULL, NULL, 0, code[0] ? code : "unknown", error, fld);
        return;
    }
    long r = find_req(c, id);
    if (r >= 0) {
        if (retry) {
            c->reqs[r].sent = 0;
            c->reqs[r].retry_at = now_ms() + c->unavail_delay;
            return;
        }
        char rid[65];
        memcpy(rid, c->reqs[r].id, 65);
        req_remove(c, (size_t)r);
        c->in_cb = 1;
        if (c->cb.on_nack)
            c->cb.on_nack(c->cb.ud, rid, code[0] ? code : "unknown", error, fld);
        c->in_cb = 0;
        return;
    }
    if (strcmp(id, c->ping_id) == 0) {
        c->ping_out = 0;
        return;
    }
    /* an answer to something answered before (a resend): nothing to do */
}

static void on_push(carehub_t *c, const msgpack_object *map, const char *op, const char *id)
{
    if (!c->cb.on_push)
        return;
    char *json = msg_json(c, map, op);
    if (!json)
        return;
    c->in_cb = 1;
    c->cb.on_push(c->cb.ud, op, json);
    c->in_cb = 0;
    free(json);
    /* Without on_push nobody has seen the outcome: leave it with the broker (it re-sends
     * it after each hello) for an agent program that shows it. */
    if (strcmp(op, "outcome") == 0 && id && c->cb.on_push)
        send_simple(c, "received", id);
}

static void on_frame(carehub_t *c, const char *buf, size_t len)
{
    frame_rc_t frc = frame_check(buf, len);
    if (frc != FRAME_OK) {
        set_err(c, CAREHUB_OK, "the broker sent a frame that was ignored: %s", frame_strerror(frc));
        return;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, buf, len, NULL) != MSGPACK_UNPACK_SUCCESS) {
        set_err(c, CAREHUB_OK, "the broker sent a frame msgpack-c could not read; ignored");
        goto out;
    }
    const msgpack_object *map = &u.data;
    int64_t v;
    const char *s;
    size_t n;
    char op[32], idbuf[65];
    const char *id = NULL;
    if (!frame_int(frame_map_get(map, "v"), &v) || v != CAREHUB_WIRE_VERSION) {
        set_err(c, CAREHUB_OK, "the broker sent a message without v:1; ignored");
        goto out;
    }
    if (!frame_str(frame_map_get(map, "op"), &s, &n) || n == 0 || n >= sizeof op) {
        set_err(c, CAREHUB_OK, "the broker sent a message without a readable op; ignored");
        goto out;
    }
    memcpy(op, s, n);
    op[n] = '\0';
    if (strlen(op) != n)
        goto out;
    if (frame_str(frame_map_get(map, "id"), &s, &n) && util_valid_id(s, n)) {
        memcpy(idbuf, s, n);
        idbuf[n] = '\0';
        id = idbuf;
    }

    if (strcmp(op, "ping") == 0) {
        if (id)
            send_simple(c, "pong", id);
    } else if (strcmp(op, "pong") == 0) {
        if (id && strcmp(id, c->ping_id) == 0)
            c->ping_out = 0;
    } else if (strcmp(op, "welcome") == 0) {
        if (id)
            on_welcome(c, map, id);
    } else if (strcmp(op, "nack") == 0) {
        on_nack(c, map, id);
    } else if (strcmp(op, "case") == 0 || strcmp(op, "outcome") == 0) {
        on_push(c, map, op, id);
    } else if (id) {
        if (strcmp(op, "ack") == 0)
            on_ack(c, map, id);
        long r = find_req(c, id);
        if (r >= 0) { /* ack or any other answer (e.g. `clock`) to a request */
            char *json = msg_json(c, map, op);
            char rid[65];
            memcpy(rid, id, 65);
            req_remove(c, (size_t)r);
            if (json) {
                c->in_cb = 1;
                if (c->cb.on_reply)
                    c->cb.on_reply(c->cb.ud, rid, json);
                c->in_cb = 0;
                free(json);
            }
        }
    }
out:
    msgpack_unpacked_destroy(&u);
}

/* Read everything waiting on the socket. */
static int drain(carehub_t *c)
{
    int got = 0;
    for (int k = 0; k < DRAIN_MAX && c->sock; k++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, c->sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(&msg);
            if (e == EINTR)
                continue;
            if (e != EAGAIN)
                set_err(c, CAREHUB_ENET, "cannot receive from %s: %s", c->endpoint, zmq_strerror(e));
            break;
        }
        got++;
        c->last_heard = c->progress_at = now_ms();
        c->cur_timeout = c->request_timeout_ms;
        if (zmq_msg_more(&msg)) {
            /* the contract is one frame per message: drop the whole message */
            set_err(c, CAREHUB_OK, "the broker sent a message of several frames; ignored");
            while (zmq_msg_more(&msg)) {
                zmq_msg_close(&msg);
                zmq_msg_init(&msg);
                if (zmq_msg_recv(&msg, c->sock, ZMQ_DONTWAIT) < 0)
                    break;
            }
        } else {
            void *sock = c->sock;
            on_frame(c, zmq_msg_data(&msg), zmq_msg_size(&msg));
            if (c->sock != sock) { /* cannot happen today; be safe if a handler reconnects */
                zmq_msg_close(&msg);
                break;
            }
        }
        zmq_msg_close(&msg);
    }
    return got;
}

/* ---- timers and sending ---------------------------------------------------------------- */

static int timers(carehub_t *c)
{
    int64_t now = now_ms();
    int rc = CAREHUB_OK;
    if (outstanding(c) && now - c->progress_at >= c->cur_timeout) {
        int waited = c->cur_timeout;
        c->cur_timeout = c->cur_timeout * 2 > c->max_backoff_ms ? c->max_backoff_ms : c->cur_timeout * 2;
        set_err(c, CAREHUB_OK, "no answer from the broker at %s within %d ms; reconnecting", c->endpoint,
                waited);
        rc = reconnect(c);
        if (rc != CAREHUB_OK)
            return rc;
    }
    if (c->state != ST_READY && !c->hello_out && now >= c->hello_retry_at) {
        if (c->state == ST_REFUSED)
            rc = reconnect(c); /* perhaps the operator has configured us since */
        else if (c->sock)
            send_hello(c);
        else
            rc = reconnect(c);
    }
    if (c->state == ST_READY && !outstanding(c) && now - c->last_heard >= c->heartbeat_ms) {
        /* quiet for a heartbeat: make sure the broker (and our session) is still there */
        new_msg_id(c, c->ping_id);
        frame_out_t o;
        frame_out_message(&o, "ping", c->ping_id, 0);
        if (send_frame(c, o.sb.data, o.sb.size) == 0)
            c->ping_out = 1;
        frame_out_end(&o);
    }
    return rc;
}

/* Send what is due: spool order for events, then requests. */
static int pump(carehub_t *c)
{
    int rc = CAREHUB_OK;
    if (c->state != ST_READY)
        return rc;
    if ((rc = refill(c)) != CAREHUB_OK)
        return rc;
    int64_t now = now_ms();
again:
    for (int i = 0; i < c->nwin; i++) {
        slot_t *s = &c->win[i];
        if (s->sent || s->retry_at > now)
            continue;
        if (s->len > c->max_message_bytes) {
            char error[200];
            util_fmt(error, sizeof error,
                     "the event is %zu bytes, over the broker's max_message_bytes (%zu); it was not sent",
                     s->len, c->max_message_bytes);
            event_answered(c, i, NULL, NULL, 0, CAREHUB_E_TOO_LARGE, error, NULL);
            if ((rc = refill(c)) != CAREHUB_OK)
                return rc;
            goto again;
        }
        int r = send_frame(c, s->frame, s->len);
        if (r != 0)
            return r < 0 ? CAREHUB_ENET : CAREHUB_OK;
        s->sent = 1;
    }
    for (size_t i = 0; i < c->nreqs; i++) {
        req_t *q = &c->reqs[i];
        if (q->sent || q->retry_at > now)
            continue;
        int r = send_frame(c, q->frame, q->len);
        if (r != 0)
            return r < 0 ? CAREHUB_ENET : CAREHUB_OK;
        q->sent = 1;
    }
    return rc;
}

int carehub_next_timeout_ms(const carehub_t *c)
{
    if (!c)
        return -1;
    int64_t now = now_ms(), due = INT64_MAX;
    if (outstanding(c))
        due = c->progress_at + c->cur_timeout;
    if (c->state != ST_READY && !c->hello_out && c->hello_retry_at < due)
        due = c->hello_retry_at;
    if (c->state == ST_READY) {
        if (!outstanding(c) && c->last_heard + c->heartbeat_ms < due)
            due = c->last_heard + c->heartbeat_ms;
        for (int i = 0; i < c->nwin; i++)
            if (!c->win[i].sent && c->win[i].retry_at < due)
                due = c->win[i].retry_at;
        for (size_t i = 0; i < c->nreqs; i++)
            if (!c->reqs[i].sent && c->reqs[i].retry_at < due)
                due = c->reqs[i].retry_at;
        if (more_in_spool(c))
            due = now; /* more in the spool to send */
    }
    if (due == INT64_MAX)
        return -1;
    if (due <= now)
        return 0;
    return due - now > INT32_MAX ? INT32_MAX : (int)(due - now);
}

/* ---- life cycle ---------------------------------------------------------------------- */

carehub_t *carehub_new(const carehub_opts_t *o, const carehub_callbacks_t *cb, int *err,
                       char *errbuf, size_t errlen)
{
    int rc = CAREHUB_EINVAL;
    char e[512] = "";
    carehub_t *c = NULL;

    if (sodium_init() < 0) {
        util_fmt(e, sizeof e, "libsodium could not be initialised");
        goto fail;
    }
    if (!o || !o->endpoint || !o->endpoint[0]) {
        util_fmt(e, sizeof e, "an endpoint is required (e.g. tcp://127.0.0.1:5570)");
        goto fail;
    }
    if (!o->agent || !util_valid_id(o->agent, strlen(o->agent))) {
        util_fmt(e, sizeof e, "the agent id must be 1-64 characters of [A-Za-z0-9._:-], as configured "
                 "on the broker");
        goto fail;
    }
    if (!o->spool_dir || !o->spool_dir[0]) {
        util_fmt(e, sizeof e, "a spool directory is required");
        goto fail;
    }
    if (o->secret_key || o->public_key || o->server_key) {
        if (!valid_z85_key(o->secret_key) || !valid_z85_key(o->server_key) ||
            (o->public_key && !valid_z85_key(o->public_key))) {
            util_fmt(e, sizeof e, "CURVE needs the agent's secret key and the broker's public key "
                     "(40 Z85 characters each)");
            goto fail;
        }
    }
    c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    c->endpoint = strdup(o->endpoint);
    c->agent = strdup(o->agent);
    if (o->software && o->software[0]) {
        c->software = strdup(o->software);
    } else if ((c->software = malloc(64))) {
        util_fmt(c->software, 64, "libcarehub/%s", CAREHUB_VERSION_STR);
    }
    if (!c->endpoint || !c->agent || !c->software)
        goto oom;
    if (o->secret_key) {
        c->curve = 1;
        memcpy(c->secret_key, o->secret_key, 41);
        memcpy(c->server_key, o->server_key, 41);
        if (o->public_key)
            memcpy(c->public_key, o->public_key, 41);
        else if (zmq_curve_public(c->public_key, c->secret_key) < 0) {
            util_fmt(e, sizeof e, "cannot derive the public key: %s", zmq_strerror(errno));
            goto fail;
        }
    }
    c->request_timeout_ms = o->request_timeout_ms > 0 ? o->request_timeout_ms : 3000;
    c->max_backoff_ms = o->max_backoff_ms > 0 ? o->max_backoff_ms : 30000;
    if (c->max_backoff_ms < c->request_timeout_ms)
        c->max_backoff_ms = c->request_timeout_ms;
    c->cur_timeout = c->unavail_delay = c->request_timeout_ms;
    c->heartbeat_ms = 5000;
    c->max_message_bytes = CAREHUB_MAX_MESSAGE_BYTES;
    if (cb)
        c->cb = *cb;
    {
        char r[65];
        random_id("m", r);
        util_fmt(c->msg_prefix, sizeof c->msg_prefix, "%.13s", r); /* "m" + 12 hex digits */
    }

    if (!(c->spool_dir = strdup(o->spool_dir)))
        goto oom;
    c->spool = spool_open(o->spool_dir, e, sizeof e);
    if (!c->spool) {
        rc = CAREHUB_ESPOOL;
        goto fail;
    }
    c->zctx = zmq_ctx_new();
    if (!c->zctx) {
        rc = CAREHUB_ENET;
        util_fmt(e, sizeof e, "cannot create a ZeroMQ context: %s", zmq_strerror(errno));
        goto fail;
    }
    c->last_heard = c->progress_at = now_ms();
    if ((rc = open_socket(c)) != CAREHUB_OK) {
        util_fmt(e, sizeof e, "%s", c->last_error);
        goto fail;
    }
    set_state(c, ST_HELLO);
    send_hello(c);
    if (err)
        *err = CAREHUB_OK;
    return c;

oom:
    rc = CAREHUB_ENOMEM;
    util_fmt(e, sizeof e, "out of memory");
fail:
    if (err)
        *err = rc;
    if (errbuf && errlen)
        util_fmt(errbuf, errlen, "%s", e);
    carehub_destroy(&c);
    return NULL;
}

void carehub_destroy(carehub_t **cp)
{
    if (!cp || !*cp)
        return;
    carehub_t *c = *cp;
    if (c->spool)
        (void)commit_removals(c); /* what fails stays spooled and is resent next time */
    if (c->sock) {
        /* Connected: give what is queued (received, pong) a moment to leave. */
        int linger = c->state == ST_READY ? 500 : 0;
        (void)zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(c->sock);
    }
    if (c->zctx)
        zmq_ctx_term(c->zctx);
    spool_close(&c->spool);
    for (int i = 0; i < c->nwin; i++)
        slot_free(&c->win[i]);
    for (size_t i = 0; i < c->nreqs; i++)
        free(c->reqs[i].frame);
    free(c->reqs);
    free(c->rm_seq);
    free(c->rm_id);
    free(c->endpoint);
    free(c->agent);
    free(c->software);
    free(c->spool_dir);
    sodium_memzero(c->secret_key, sizeof c->secret_key);
    free(c);
    *cp = NULL;
}

/* ---- sending --------------------------------------------------------------------------- */

static int valid_type(const char *t)
{
    return t && util_valid_id(t, strlen(t));
}

/* Parse a JSON object text (duplicate keys refused: the broker would refuse them). */
static json_t *parse_object(carehub_t *c, const char *text, const char *what)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        set_err(c, CAREHUB_EJSON, "%s is not valid JSON: %s (line %d, column %d)", what, je.text,
                je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        set_err(c, CAREHUB_EJSON, "%s must be a JSON object ({...})", what);
        return NULL;
    }
    return j;
}

int carehub_submit_tagged(carehub_t *c, const char *type, int64_t at, const char *body_json,
                          const char *id, const char *tag, char id_out[65])
{
    char eid[65], err[512];
    if (!c)
        return CAREHUB_EINVAL;
    if (!valid_type(type))
        return set_err(c, CAREHUB_EINVAL, "the event type must be a name such as \"absence\"");
    if (at < 0)
        return set_err(c, CAREHUB_EINVAL, "`at` must be milliseconds since the epoch (0 for now)");
    if (id && !util_valid_id(id, strlen(id)))
        return set_err(c, CAREHUB_EINVAL, "the event id must be 1-64 characters of [A-Za-z0-9._:-]");
    if (!body_json)
        return set_err(c, CAREHUB_EJSON, "the body must be a JSON object ({...})");
    json_t *body = parse_object(c, body_json, "the body");
    if (!body)
        return CAREHUB_EJSON;
    if (id)
        util_fmt(eid, sizeof eid, "%s", id);
    else
        random_id("ev-", eid);

    frame_out_t o;
    frame_out_message(&o, "event", eid, 3);
    frame_out_str(&o, "type", type);
    frame_out_int(&o, "at", at ? at : util_now_ms());
    frame_out_key(&o, "body");
    frame_pack_json(&o.pk, body);
    json_decref(body);
    int rc = CAREHUB_OK;
    if (o.sb.size > MAX_OUT_FRAME) {
        rc = set_err(c, CAREHUB_EINVAL, "the event is %zu bytes; the limit is %d", o.sb.size,
                     MAX_OUT_FRAME);
    } else if (spool_add(c->spool, eid, o.sb.data, o.sb.size, tag, err, sizeof err) < 0) {
        rc = set_err(c, CAREHUB_ESPOOL, "%s", err);
    }
    frame_out_end(&o);
    if (rc == CAREHUB_OK && id_out)
        memcpy(id_out, eid, strlen(eid) + 1);
    return rc;
}

int carehub_submit(carehub_t *c, const char *type, int64_t at, const char *body_json,
                   const char *id, char id_out[65])
{
    return carehub_submit_tagged(c, type, at, body_json, id, NULL, id_out);
}

int carehub_request(carehub_t *c, const char *json, char id_out[65])
{
    if (!c)
        return CAREHUB_EINVAL;
    if (!json)
        return set_err(c, CAREHUB_EJSON, "the request must be a JSON object with an op");
    json_t *j = parse_object(c, json, "the request");
    if (!j)
        return CAREHUB_EJSON;
    json_t *op = json_object_get(j, "op");
    json_t *jid = json_object_get(j, "id");
    int rc = CAREHUB_OK;
    char rid[65];
    if (!json_is_string(op) || json_string_length(op) == 0 || json_string_length(op) > 32 ||
        strcmp(json_string_value(op), "hello") == 0) {
        json_decref(j);
        return set_err(c, CAREHUB_EINVAL, "the request needs an op (a string such as \"case_ack\")");
    }
    if (jid) {
        if (!json_is_string(jid) || !util_valid_id(json_string_value(jid), json_string_length(jid))) {
            json_decref(j);
            return set_err(c, CAREHUB_EINVAL, "the request's id must be 1-64 characters of [A-Za-z0-9._:-]");
        }
        util_fmt(rid, sizeof rid, "%s", json_string_value(jid));
        if (find_req(c, rid) >= 0) {
            json_decref(j);
            return set_err(c, CAREHUB_EINVAL, "a request with id %s is already in flight", rid);
        }
    } else {
        new_msg_id(c, rid);
    }
    (void)json_object_del(j, "v");
    (void)json_object_del(j, "id");
    (void)json_object_set_new(j, "id", json_string(rid));
    (void)json_object_set_new(j, "v", json_integer(CAREHUB_WIRE_VERSION));

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    frame_pack_json(&pk, j);
    json_decref(j);
    if (sb.size > MAX_OUT_FRAME || sb.size > c->max_message_bytes) {
        rc = set_err(c, CAREHUB_EINVAL, "the request is %zu bytes, over the broker's limit of %zu",
                     sb.size, c->max_message_bytes);
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    if (c->nreqs == c->capreqs) {
        size_t cap = c->capreqs ? c->capreqs * 2 : 8;
        req_t *reqs = realloc(c->reqs, cap * sizeof *reqs);
        if (!reqs) {
            msgpack_sbuffer_destroy(&sb);
            return set_err(c, CAREHUB_ENOMEM, "out of memory queueing the request");
        }
        c->reqs = reqs;
        c->capreqs = cap;
    }
    void *frame = malloc(sb.size);
    if (!frame) {
        msgpack_sbuffer_destroy(&sb);
        return set_err(c, CAREHUB_ENOMEM, "out of memory queueing the request");
    }
    req_t *q = &c->reqs[c->nreqs++];
    memset(q, 0, sizeof *q);
    memcpy(q->id, rid, sizeof rid);
    q->frame = frame;
    memcpy(q->frame, sb.data, sb.size);
    q->len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    if (id_out)
        memcpy(id_out, rid, strlen(rid) + 1);
    return CAREHUB_OK;
}

size_t carehub_pending(const carehub_t *c)
{
    return c ? spool_count(c->spool) + c->nreqs : 0;
}

int carehub_connected(const carehub_t *c)
{
    return c && c->state == ST_READY;
}

int carehub_fd(const carehub_t *c)
{
    int fd = -1;
    size_t sz = sizeof fd;
    if (!c || !c->sock || zmq_getsockopt(c->sock, ZMQ_FD, &fd, &sz) < 0)
        return -1;
    return fd;
}

/* ---- driving it -------------------------------------------------------------------------- */

int carehub_poll(carehub_t *c, int timeout_ms)
{
    if (!c)
        return CAREHUB_EINVAL;
    if (c->in_cb)
        return set_err(c, CAREHUB_EINVAL, "carehub_poll() must not be called from a callback");
    /* What arrived while the caller was busy counts before any timeout does. */
    (void)drain(c);
    int rc = commit_removals(c);
    int rc2 = timers(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    rc2 = pump(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    int wait = carehub_next_timeout_ms(c);
    if (timeout_ms >= 0 && (wait < 0 || wait > timeout_ms))
        wait = timeout_ms;
    if (c->sock) {
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, wait) < 0 && errno != EINTR && errno != ETERM)
            rc = set_err(c, CAREHUB_ENET, "zmq_poll failed: %s", zmq_strerror(errno));
    } else if (wait != 0) {
        zmq_pollitem_t none[1];
        (void)zmq_poll(none, 0, wait < 0 ? 100 : wait); /* no socket (cannot reconnect yet) */
    }
    (void)drain(c);
    rc2 = commit_removals(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    rc2 = timers(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    rc2 = pump(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    rc2 = commit_removals(c); /* local refusals (too_large) made in pump */
    if (rc == CAREHUB_OK)
        rc = rc2;
    if (c->state == ST_REFUSED)
        return CAREHUB_EREFUSED;
    return rc;
}

int carehub_flush(carehub_t *c, int timeout_ms)
{
    if (!c)
        return CAREHUB_EINVAL;
    int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    for (;;) {
        if (carehub_pending(c) == 0)
            return CAREHUB_OK;
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return set_err(c, CAREHUB_ETIMEOUT, "%zu event(s) or request(s) still unacknowledged",
                           carehub_pending(c));
        int rc = carehub_poll(c, left > 1000 ? 1000 : (int)left);
        if (rc == CAREHUB_EREFUSED || rc == CAREHUB_ESPOOL || rc == CAREHUB_EINVAL)
            return rc;
    }
}
