/*
 * carehub_conn.c — libcarehub's connection: the window of spooled events and
 * the requests in flight, the DEALER socket, what the broker sends, and the
 * timers (hello, pings, Lazy Pirate). The state machine and the manual are in
 * carehub.c and include/carehub.h; carehub_int.h is what the two share.
 */
#include <errno.h>
#include <jansson.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "carehub_int.h"
#include "frame.h"
#include "spool.h"
#include "util.h"

/* ---- the window and the requests -------------------------------------------------- */

void conn_slot_free(slot_t *s)
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

long conn_find_req(const carehub_t *c, const char *id)
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
        char(*ids)[CAREHUB_ID_MAX + 1] = realloc(c->rm_id, cap * sizeof *ids);
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
int conn_commit_removals(carehub_t *c)
{
    char err[512];
    if (c->nrm == 0)
        return CAREHUB_OK;
    if (spool_remove(c->spool, c->rm_seq, c->rm_id, c->nrm, err, sizeof err) < 0)
        return carehub__set_err(c, CAREHUB_ESPOOL, "%s", err);
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
        return carehub__set_err(c, CAREHUB_ESPOOL, "%s", err);
    c->next_seq = next;
    if (damaged) {
        c->damaged += damaged;
        carehub__set_err(c, CAREHUB_ESPOOL, "%zu damaged record(s) in the spool %s cannot be sent; they stay "
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
        c->progress_at = carehub__now_ms(); /* the answer timeout starts now */
    if (zmq_send(c->sock, data, len, ZMQ_DONTWAIT) >= 0)
        return 0;
    if (errno == EAGAIN || errno == EINTR)
        return 1;
    carehub__set_err(c, CAREHUB_ENET, "cannot send to %s: %s", c->endpoint, zmq_strerror(errno));
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

void conn_send_hello(carehub_t *c)
{
    frame_out_t o;
    carehub__new_msg_id(c, c->hello_id);
    frame_out_message(&o, "hello", c->hello_id, 2);
    frame_out_str(&o, "agent", c->agent);
    frame_out_str(&o, "software", c->software);
    int rc = send_frame(c, o.sb.data, o.sb.size);
    frame_out_end(&o);
    if (rc == 0) {
        c->hello_out = 1;
    } else {
        c->hello_out = 0;
        c->hello_retry_at = carehub__now_ms() + 100;
    }
}

int conn_open_socket(carehub_t *c)
{
    int zero = 0;
    int64_t maxmsg = MAX_IN_FRAME;
    c->sock = zmq_socket(c->zctx, ZMQ_DEALER);
    if (!c->sock)
        return carehub__set_err(c, CAREHUB_ENET, "cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
    (void)zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    (void)zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (c->curve) {
        if (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, c->server_key, 41) < 0 ||
            zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, c->public_key, 41) < 0 ||
            zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, c->secret_key, 41) < 0) {
            int e = errno;
            zmq_close(c->sock);
            c->sock = NULL;
            return carehub__set_err(c, CAREHUB_ENET, "cannot set the CURVE keys: %s", zmq_strerror(e));
        }
    }
    if (zmq_connect(c->sock, c->endpoint) < 0) {
        int e = errno;
        zmq_close(c->sock);
        c->sock = NULL;
        return carehub__set_err(c, CAREHUB_ENET, "cannot connect to %s: %s", c->endpoint, zmq_strerror(e));
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
    carehub__set_state(c, ST_HELLO);
    c->reconnects++;
    int rc = conn_open_socket(c);
    if (rc != CAREHUB_OK) {
        c->hello_retry_at = carehub__now_ms() + c->cur_timeout;
        return rc;
    }
    conn_send_hello(c);
    c->progress_at = carehub__now_ms();
    return CAREHUB_OK;
}

/* Say hello again on this connection (the broker forgot us): whatever was sent
 * is resent after the welcome. */
static void rehello(carehub_t *c)
{
    if (c->state != ST_READY)
        return;
    carehub__set_state(c, ST_HELLO);
    mark_all_unsent(c);
    conn_send_hello(c);
}

/* ---- what the broker sends ---------------------------------------------------------- */

/* The message as JSON text (malloc'd; bin values as lowercase hex), or NULL
 * when it cannot be (an ext value, keys that are not strings…). */
static char *msg_json(carehub_t *c, const msgpack_object *map, const char *op)
{
    char path[256], why[256];
    json_t *j = frame_to_json_flags(map, FRAME_JSON_BIN_HEX, path, sizeof path, why, sizeof why);
    if (!j) {
        carehub__set_err(c, CAREHUB_OK, "the broker sent a `%s` that is not JSON-compatible at %s (%s); ignored",
                op, path[0] ? path : "/", why);
        return NULL;
    }
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/* welcome's `timezone` (an IANA name) into c->timezone; "" when absent or not a
 * name as the broker's loader accepts it (letters, digits, / _ + -, no leading
 * '/'), so that a program never hands TZ a path of the broker's choosing. */
static void welcome_timezone(carehub_t *c, const msgpack_object *map)
{
    const char *s;
    size_t n;
    c->timezone[0] = '\0';
    if (!frame_str(frame_map_get(map, "timezone"), &s, &n) || n == 0 || n > CAREHUB_TZ_MAX ||
        s[0] == '/')
        return;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '/' || ch == '_' || ch == '+' || ch == '-'))
            return;
    }
    memcpy(c->timezone, s, n);
    c->timezone[n] = '\0';
}

/* welcome's `agencies` ({id: name}) into c->agency_names as "id\0name\0" pairs;
 * entries that are not two strings without NUL bytes are skipped. Out of
 * memory keeps no names (ids are shown then): never an abort. */
static void welcome_agencies(carehub_t *c, const msgpack_object *map)
{
    free(c->agency_names);
    c->agency_names = NULL;
    c->agency_names_len = 0;
    const msgpack_object *m = frame_map_get(map, "agencies");
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return;
    size_t total = 0;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const char *k, *v;
        size_t kn, vn;
        if (frame_str(&m->via.map.ptr[i].key, &k, &kn) && frame_str(&m->via.map.ptr[i].val, &v, &vn) &&
            kn && vn && !memchr(k, 0, kn) && !memchr(v, 0, vn))
            total += kn + vn + 2;
    }
    if (total == 0 || total > CAREHUB_AGENCY_NAMES_MAX || !(c->agency_names = malloc(total)))
        return;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const char *k, *v;
        size_t kn, vn;
        if (!frame_str(&m->via.map.ptr[i].key, &k, &kn) || !frame_str(&m->via.map.ptr[i].val, &v, &vn) ||
            !kn || !vn || memchr(k, 0, kn) || memchr(v, 0, vn))
            continue;
        char *p = c->agency_names + c->agency_names_len;
        memcpy(p, k, kn);
        p[kn] = '\0';
        memcpy(p + kn + 1, v, vn);
        p[kn + 1 + vn] = '\0';
        c->agency_names_len += kn + vn + 2;
    }
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
    welcome_timezone(c, map);
    welcome_agencies(c, map);
    carehub__set_state(c, ST_READY);
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
    conn_slot_free(&s);
}

static void on_ack(carehub_t *c, const msgpack_object *map, const char *id)
{
    int i = find_slot(c, id);
    if (i >= 0) {
        char event[CAREHUB_ID_MAX + 1], case_id[CAREHUB_ID_MAX + 1];
        const msgpack_object *d = frame_map_get(map, "duplicate");
        carehub__copy_str(frame_map_get(map, "event"), event, sizeof event);
        carehub__copy_str(frame_map_get(map, "case"), case_id, sizeof case_id);
        c->unavail_delay = c->request_timeout_ms;
        event_answered(c, i, event, case_id, d && d->type == MSGPACK_OBJECT_BOOLEAN && d->via.boolean,
                       NULL, NULL, NULL);
    }
    /* a request's ack is a reply: handled by the caller */
}

static void on_nack(carehub_t *c, const msgpack_object *map, const char *id)
{
    char code[64], error[1024], field[256];
    carehub__copy_str(frame_map_get(map, "code"), code, sizeof code);
    carehub__copy_str(frame_map_get(map, "error"), error, sizeof error);
    carehub__copy_str(frame_map_get(map, "field"), field, sizeof field);
    const char *fld = frame_map_get(map, "field") ? field : NULL;

    if (id && c->hello_out && strcmp(id, c->hello_id) == 0) {
        c->hello_out = 0;
        if (strcmp(code, CAREHUB_E_UNAVAILABLE) == 0) {
            c->hello_retry_at = carehub__now_ms() + c->cur_timeout;
            carehub__set_err(c, CAREHUB_OK, "the broker cannot take agents now (%s); trying again", error);
            return;
        }
        carehub__set_state(c, ST_REFUSED);
        c->hello_retry_at = carehub__now_ms() + c->max_backoff_ms;
        carehub__set_err(c, CAREHUB_EREFUSED, "the broker at %s refused hello as %s: %s: %s", c->endpoint,
                c->agent, code[0] ? code : "?", error[0] ? error : "no reason given");
        return;
    }
    if (strcmp(code, CAREHUB_E_HELLO_REQUIRED) == 0) {
        rehello(c); /* the broker lost our session (restart): hello, then resend */
        return;
    }
    if (!id) {
        carehub__set_err(c, CAREHUB_OK, "the broker refused a message it could not read: %s: %s", code, error);
        return;
    }
    int retry = strcmp(code, CAREHUB_E_UNAVAILABLE) == 0;
    int i = find_slot(c, id);
    if (i >= 0) {
        if (retry) {
            c->win[i].sent = 0;
            c->win[i].retry_at = carehub__now_ms() + c->unavail_delay;
            c->unavail_delay = c->unavail_delay * 2 > c->max_backoff_ms ? c->max_backoff_ms
                                                                       : c->unavail_delay * 2;
            carehub__set_err(c, CAREHUB_OK, "the broker cannot store now (%s); the event stays spooled", error);
            return;
        }
        event_answered(c, i, NULL, NULL, 0, code[0] ? code : "unknown", error, fld);
        return;
    }
    long r = conn_find_req(c, id);
    if (r >= 0) {
        if (retry) {
            c->reqs[r].sent = 0;
            c->reqs[r].retry_at = carehub__now_ms() + c->unavail_delay;
            return;
        }
        char rid[CAREHUB_ID_MAX + 1];
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

/* A reminder (PROTOCOL §9): to the reminder handler, which says whether it is
 * kept (then `received`), or else, unconfirmed, to on_push. */
static void on_reminder(carehub_t *c, const msgpack_object *map, const char *id)
{
    char child[CAREHUB_ID_MAX + 1], kind[33];
    const char *s;
    size_t n;
    int64_t due;
    if (!id) {
        carehub__set_err(c, CAREHUB_OK, "the broker sent a reminder without an id; ignored");
        return;
    }
    if (!frame_str(frame_map_get(map, "child"), &s, &n) || !util_valid_id(s, n) ||
        !frame_str(frame_map_get(map, "kind"), &s, &n) || n == 0 || n >= sizeof kind ||
        !frame_int(frame_map_get(map, "due"), &due)) {
        carehub__set_err(c, CAREHUB_OK, "the broker sent a reminder %s without a child id, a kind "
                         "or a due time; ignored", id);
        return;
    }
    carehub__copy_str(frame_map_get(map, "child"), child, sizeof child);
    carehub__copy_str(frame_map_get(map, "kind"), kind, sizeof kind);
    if (!c->on_reminder) {
        on_push(c, map, "reminder", id); /* not confirmed: nobody said it is kept */
        return;
    }
    char *json = msg_json(c, map, "reminder");
    if (!json)
        return;
    c->in_cb = 1;
    int kept = c->on_reminder(c->reminder_ud, id, child, kind, due, json) == 0;
    c->in_cb = 0;
    free(json);
    if (kept)
        send_simple(c, "received", id);
}

static void on_frame(carehub_t *c, const char *buf, size_t len)
{
    frame_rc_t frc = frame_check(buf, len);
    if (frc != FRAME_OK) {
        carehub__set_err(c, CAREHUB_OK, "the broker sent a frame that was ignored: %s", frame_strerror(frc));
        return;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, buf, len, NULL) != MSGPACK_UNPACK_SUCCESS) {
        carehub__set_err(c, CAREHUB_OK, "the broker sent a frame msgpack-c could not read; ignored");
        goto out;
    }
    const msgpack_object *map = &u.data;
    int64_t v;
    const char *s;
    size_t n;
    char op[32], idbuf[CAREHUB_ID_MAX + 1];
    const char *id = NULL;
    if (!frame_int(frame_map_get(map, "v"), &v) || v != CAREHUB_WIRE_VERSION) {
        carehub__set_err(c, CAREHUB_OK, "the broker sent a message without v:1; ignored");
        goto out;
    }
    if (!frame_str(frame_map_get(map, "op"), &s, &n) || n == 0 || n >= sizeof op) {
        carehub__set_err(c, CAREHUB_OK, "the broker sent a message without a readable op; ignored");
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
    } else if (strcmp(op, "reminder") == 0) {
        on_reminder(c, map, id);
    } else if (id) {
        if (strcmp(op, "ack") == 0)
            on_ack(c, map, id);
        long r = conn_find_req(c, id);
        if (r >= 0) { /* ack or any other answer (e.g. `clock`) to a request */
            char *json = msg_json(c, map, op);
            char rid[CAREHUB_ID_MAX + 1];
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
int conn_drain(carehub_t *c)
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
                carehub__set_err(c, CAREHUB_ENET, "cannot receive from %s: %s", c->endpoint, zmq_strerror(e));
            break;
        }
        got++;
        c->last_heard = c->progress_at = carehub__now_ms();
        c->cur_timeout = c->request_timeout_ms;
        if (zmq_msg_more(&msg)) {
            /* the contract is one frame per message: drop the whole message */
            carehub__set_err(c, CAREHUB_OK, "the broker sent a message of several frames; ignored");
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

/* ---- conn_timers and sending ---------------------------------------------------------------- */

int conn_timers(carehub_t *c)
{
    int64_t now = carehub__now_ms();
    int rc = CAREHUB_OK;
    if (outstanding(c) && now - c->progress_at >= c->cur_timeout) {
        int waited = c->cur_timeout;
        c->cur_timeout = c->cur_timeout * 2 > c->max_backoff_ms ? c->max_backoff_ms : c->cur_timeout * 2;
        carehub__set_err(c, CAREHUB_OK, "no answer from the broker at %s within %d ms; reconnecting", c->endpoint,
                waited);
        rc = reconnect(c);
        if (rc != CAREHUB_OK)
            return rc;
    }
    if (c->state != ST_READY && !c->hello_out && now >= c->hello_retry_at) {
        if (c->state == ST_REFUSED)
            rc = reconnect(c); /* perhaps the operator has configured us since */
        else if (c->sock)
            conn_send_hello(c);
        else
            rc = reconnect(c);
    }
    if (c->state == ST_READY && !outstanding(c) && now - c->last_heard >= c->heartbeat_ms) {
        /* quiet for a heartbeat: make sure the broker (and our session) is still there */
        carehub__new_msg_id(c, c->ping_id);
        frame_out_t o;
        frame_out_message(&o, "ping", c->ping_id, 0);
        if (send_frame(c, o.sb.data, o.sb.size) == 0)
            c->ping_out = 1;
        frame_out_end(&o);
    }
    return rc;
}

/* Send what is due: spool order for events, then requests. */
int conn_pump(carehub_t *c)
{
    int rc = CAREHUB_OK;
    if (c->state != ST_READY)
        return rc;
    if ((rc = refill(c)) != CAREHUB_OK)
        return rc;
    int64_t now = carehub__now_ms();
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
    int64_t now = carehub__now_ms(), due = INT64_MAX;
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
