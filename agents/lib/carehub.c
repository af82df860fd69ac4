/*
 * carehub.c — libcarehub: store-and-forward agent side of the carehub wire
 * protocol; the manual is include/carehub.h.
 *
 * The connection is a small state machine (carehub__set_state() is the only place it
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

#include "carehub_int.h"
#include "carehub_wire.h"
#include "frame.h"
#include "keyfile.h"
#include "spool.h"
#include "util.h"

#define CAREHUB_VERSION_STR "1.2.0"

/* ---- small things -------------------------------------------------------------- */

static const char *state_name(state_t s)
{
    switch (s) {
    case ST_HELLO: return "hello";
    case ST_READY: return "ready";
    case ST_REFUSED: return "refused";
    }
    return "?";
}

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

int carehub__set_err(carehub_t *c, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(c->last_error, sizeof c->last_error, fmt, ap); /* truncation is fine */
    va_end(ap);
    return rc;
}

void carehub__set_state(carehub_t *c, state_t s)
{
    if (c->state == s)
        return;
    if (getenv("CAREHUB_DEBUG"))
        fprintf(stderr, "libcarehub: %s: %s -> %s\n", c->agent, state_name(c->state), state_name(s));
    c->state = s;
}

int64_t carehub__now_ms(void)
{
    return util_mono_ms();
}

void carehub__new_msg_id(carehub_t *c, char out[CAREHUB_ID_MAX + 1])
{
    util_fmt(out, 65, "%s-%llu", c->msg_prefix, (unsigned long long)++c->msg_n);
}

/* A random id: prefix + 32 hex digits (libsodium's CSPRNG). */
static void random_id(const char *prefix, char out[CAREHUB_ID_MAX + 1])
{
    unsigned char r[16];
    char hex[33];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    util_fmt(out, 65, "%s%s", prefix, hex);
}

/* A bounded, NUL-free C copy of a msgpack string (or "" when o is not one). */
void carehub__copy_str(const msgpack_object *o, char *out, size_t size)
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

/* A key file is one line; anything this long is not one. */
#define CAREHUB_KEY_FILE_MAX 4096

/* The key file at path (a secret one: not a link, the owner's only) into out[41]. */
static int read_key(const char *path, int secret, char out[41])
{
    if (!path || !out) {
        errno = EINVAL;
        return CAREHUB_EINVAL;
    }
    char *buf;
    size_t len;
    int e = keyfile_read(path, secret, CAREHUB_KEY_FILE_MAX, &buf, &len);
    if (e) {
        errno = e;
        return CAREHUB_EINVAL;
    }
    int ok = keyfile_z85_line(buf, out);
    keyfile_free(buf, len);
    if (!ok) {
        errno = EINVAL;
        return CAREHUB_EINVAL;
    }
    return CAREHUB_OK;
}

int carehub_read_key(const char *path, char out[41])
{
    return read_key(path, 0, out);
}

int carehub_read_secret_key(const char *path, char out[41])
{
    return read_key(path, 1, out);
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
    if (o->spool_dir && !o->spool_dir[0]) {
        util_fmt(e, sizeof e, "the spool directory is empty: give a directory, or NULL for none");
        goto fail;
    }
    if (o->secret_key || o->public_key || o->server_key) {
        if (!keyfile_z85_valid(o->secret_key) || !keyfile_z85_valid(o->server_key) ||
            (o->public_key && !keyfile_z85_valid(o->public_key))) {
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
        char r[CAREHUB_ID_MAX + 1];
        random_id("m", r);
        util_fmt(c->msg_prefix, sizeof c->msg_prefix, "%.13s", r); /* "m" + 12 hex digits */
    }

    if (o->spool_dir) { /* else a handle for requests only (carehub_submit refuses) */
        if (!(c->spool_dir = strdup(o->spool_dir)))
            goto oom;
        c->spool = spool_open(o->spool_dir, e, sizeof e);
        if (!c->spool) {
            rc = CAREHUB_ESPOOL;
            goto fail;
        }
    }
    c->zctx = zmq_ctx_new();
    if (!c->zctx) {
        rc = CAREHUB_ENET;
        util_fmt(e, sizeof e, "cannot create a ZeroMQ context: %s", zmq_strerror(errno));
        goto fail;
    }
    c->last_heard = c->progress_at = carehub__now_ms();
    if ((rc = conn_open_socket(c)) != CAREHUB_OK) {
        util_fmt(e, sizeof e, "%s", c->last_error);
        goto fail;
    }
    carehub__set_state(c, ST_HELLO);
    conn_send_hello(c);
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
        (void)conn_commit_removals(c); /* what fails stays spooled and is resent next time */
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
        conn_slot_free(&c->win[i]);
    for (size_t i = 0; i < c->nreqs; i++)
        free(c->reqs[i].frame);
    free(c->reqs);
    free(c->rm_seq);
    free(c->rm_id);
    free(c->endpoint);
    free(c->agent);
    free(c->software);
    free(c->spool_dir);
    free(c->agency_names);
    sodium_memzero(c->secret_key, sizeof c->secret_key);
    free(c);
    *cp = NULL;
}

const char *carehub_timezone(const carehub_t *c)
{
    return c && c->timezone[0] ? c->timezone : NULL;
}

const char *carehub_agency_name(const carehub_t *c, const char *agency)
{
    if (!c || !agency || !c->agency_names)
        return NULL;
    for (size_t i = 0; i < c->agency_names_len;) {
        const char *id = c->agency_names + i;
        const char *name = id + strlen(id) + 1;
        if (strcmp(id, agency) == 0)
            return name;
        i = (size_t)(name + strlen(name) + 1 - c->agency_names);
    }
    return NULL;
}

int carehub_on_reminder(carehub_t *c, carehub_reminder_fn fn, void *ud)
{
    if (!c)
        return CAREHUB_EINVAL;
    if (c->in_cb)
        return carehub__set_err(c, CAREHUB_EINVAL, "carehub_on_reminder() must not be called from a callback");
    c->on_reminder = fn;
    c->reminder_ud = fn ? ud : NULL;
    return CAREHUB_OK;
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
        carehub__set_err(c, CAREHUB_EJSON, "%s is not valid JSON: %s (line %d, column %d)", what, je.text,
                je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        carehub__set_err(c, CAREHUB_EJSON, "%s must be a JSON object ({...})", what);
        return NULL;
    }
    return j;
}

int carehub_submit_tagged(carehub_t *c, const char *type, int64_t at, const char *body_json,
                          const char *id, const char *tag, char id_out[CAREHUB_ID_MAX + 1])
{
    char eid[CAREHUB_ID_MAX + 1], err[512];
    if (!c)
        return CAREHUB_EINVAL;
    if (!c->spool)
        return carehub__set_err(c, CAREHUB_EINVAL, "this handle was opened without a spool "
                                "(spool_dir NULL): it sends requests, not events");
    if (!valid_type(type))
        return carehub__set_err(c, CAREHUB_EINVAL, "the event type must be a name such as \"absence\"");
    if (at < 0)
        return carehub__set_err(c, CAREHUB_EINVAL, "`at` must be milliseconds since the epoch (0 for now)");
    if (id && !util_valid_id(id, strlen(id)))
        return carehub__set_err(c, CAREHUB_EINVAL, "the event id must be 1-64 characters of [A-Za-z0-9._:-]");
    if (!body_json)
        return carehub__set_err(c, CAREHUB_EJSON, "the body must be a JSON object ({...})");
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
        rc = carehub__set_err(c, CAREHUB_EINVAL, "the event is %zu bytes; the limit is %d", o.sb.size,
                     MAX_OUT_FRAME);
    } else if (spool_add(c->spool, eid, o.sb.data, o.sb.size, tag, err, sizeof err) < 0) {
        rc = carehub__set_err(c, CAREHUB_ESPOOL, "%s", err);
    }
    frame_out_end(&o);
    if (rc == CAREHUB_OK && id_out)
        memcpy(id_out, eid, strlen(eid) + 1);
    return rc;
}

int carehub_submit(carehub_t *c, const char *type, int64_t at, const char *body_json,
                   const char *id, char id_out[CAREHUB_ID_MAX + 1])
{
    return carehub_submit_tagged(c, type, at, body_json, id, NULL, id_out);
}

int carehub_request(carehub_t *c, const char *json, char id_out[CAREHUB_ID_MAX + 1])
{
    if (!c)
        return CAREHUB_EINVAL;
    if (!json)
        return carehub__set_err(c, CAREHUB_EJSON, "the request must be a JSON object with an op");
    json_t *j = parse_object(c, json, "the request");
    if (!j)
        return CAREHUB_EJSON;
    json_t *op = json_object_get(j, "op");
    json_t *jid = json_object_get(j, "id");
    int rc = CAREHUB_OK;
    char rid[CAREHUB_ID_MAX + 1];
    if (!json_is_string(op) || json_string_length(op) == 0 || json_string_length(op) > 32 ||
        strcmp(json_string_value(op), "hello") == 0) {
        json_decref(j);
        return carehub__set_err(c, CAREHUB_EINVAL, "the request needs an op (a string such as \"case_ack\")");
    }
    if (jid) {
        if (!json_is_string(jid) || !util_valid_id(json_string_value(jid), json_string_length(jid))) {
            json_decref(j);
            return carehub__set_err(c, CAREHUB_EINVAL, "the request's id must be 1-64 characters of [A-Za-z0-9._:-]");
        }
        util_fmt(rid, sizeof rid, "%s", json_string_value(jid));
        if (conn_find_req(c, rid) >= 0) {
            json_decref(j);
            return carehub__set_err(c, CAREHUB_EINVAL, "a request with id %s is already in flight", rid);
        }
    } else {
        carehub__new_msg_id(c, rid);
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
        rc = carehub__set_err(c, CAREHUB_EINVAL, "the request is %zu bytes, over the broker's limit of %zu",
                     sb.size, c->max_message_bytes);
        msgpack_sbuffer_destroy(&sb);
        return rc;
    }
    if (c->nreqs == c->capreqs) {
        size_t cap = c->capreqs ? c->capreqs * 2 : 8;
        req_t *reqs = realloc(c->reqs, cap * sizeof *reqs);
        if (!reqs) {
            msgpack_sbuffer_destroy(&sb);
            return carehub__set_err(c, CAREHUB_ENOMEM, "out of memory queueing the request");
        }
        c->reqs = reqs;
        c->capreqs = cap;
    }
    void *frame = malloc(sb.size);
    if (!frame) {
        msgpack_sbuffer_destroy(&sb);
        return carehub__set_err(c, CAREHUB_ENOMEM, "out of memory queueing the request");
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
        return carehub__set_err(c, CAREHUB_EINVAL, "carehub_poll() must not be called from a callback");
    /* What arrived while the caller was busy counts before any timeout does. */
    (void)conn_drain(c);
    int rc = conn_commit_removals(c);
    int rc2 = conn_timers(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    rc2 = conn_pump(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    int wait = carehub_next_timeout_ms(c);
    if (timeout_ms >= 0 && (wait < 0 || wait > timeout_ms))
        wait = timeout_ms;
    if (c->sock) {
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, wait) < 0 && errno != EINTR && errno != ETERM)
            rc = carehub__set_err(c, CAREHUB_ENET, "zmq_poll failed: %s", zmq_strerror(errno));
    } else if (wait != 0) {
        zmq_pollitem_t none[1];
        (void)zmq_poll(none, 0, wait < 0 ? 100 : wait); /* no socket (cannot reconnect yet) */
    }
    (void)conn_drain(c);
    rc2 = conn_commit_removals(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    rc2 = conn_timers(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    rc2 = conn_pump(c);
    if (rc == CAREHUB_OK)
        rc = rc2;
    rc2 = conn_commit_removals(c); /* local refusals (too_large) made in conn_pump */
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
    int64_t deadline = carehub__now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    for (;;) {
        if (carehub_pending(c) == 0)
            return CAREHUB_OK;
        int64_t left = deadline - carehub__now_ms();
        if (left <= 0)
            return carehub__set_err(c, CAREHUB_ETIMEOUT, "%zu event(s) or request(s) still unacknowledged",
                           carehub_pending(c));
        int rc = carehub_poll(c, left > 1000 ? 1000 : (int)left);
        if (rc == CAREHUB_EREFUSED || rc == CAREHUB_ESPOOL || rc == CAREHUB_EINVAL)
            return rc;
    }
}
