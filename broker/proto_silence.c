/*
 * proto_silence.c — the supervisors' silences on the wire (PROTOCOL §10):
 *
 *   {v, op:"silence", id, match, starts?, ends, reason} → {v, op:"ack", id, silence}
 *   {v, op:"silence_expire", id, silence}               → {v, op:"ack", id, silence}
 *
 * The op table (proto.c) lets only supervisors through. Each is checked here,
 * then written as an op of the loop's turn and answered after its commit.
 * The events staged before it are queued first, so that a silence holds only
 * what the broker receives after it.
 */
#include "proto_int.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "silence.h"
#include "util.h"

typedef struct {
    proto_t *p;
    unsigned char rid[SESSION_ROUTING_MAX];
    size_t rid_len;
    char id[CAREHUB_ID_MAX + 1];
    char actor[CAREHUB_ID_MAX + 1];
    int expire;             /* 0: create (req), 1: expire (silence) */
    silence_new_t req;
    char silence[SILENCE_ID_MAX];
    int64_t now;
    int found;
} silence_op_t;

static int silence_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    (void)fx;
    silence_op_t *c = ud;
    if (c->expire)
        return silence_expire(t, c->silence, c->actor, c->now, &c->found);
    return silence_create(t, &c->req);
}

static void silence_done(void *ud, store_rc_t rc)
{
    silence_op_t *c = ud;
    if (rc != STORE_OK) {
        proto_nack_to(c->p, c->rid, c->rid_len, c->id, CAREHUB_E_UNAVAILABLE, NULL,
                      "the broker cannot record this right now (%s); retry later", store_strerror(rc));
    } else if (c->expire && !c->found) {
        proto_nack_to(c->p, c->rid, c->rid_len, c->id, CAREHUB_E_NOT_FOUND, "/silence",
                      "no silence %s exists", c->silence);
    } else {
        const char *sid = c->expire ? c->silence : c->req.id;
        log_info("proto: silence %s %s by %s", sid, c->expire ? "expired" : "created", c->actor);
        frame_out_t o;
        frame_out_message(&o, "ack", c->id, 1);
        frame_out_str(&o, "silence", sid);
        proto_send_out(c->p, c->rid, c->rid_len, &o);
    }
    if (!c->expire)
        silence_new_free(&c->req);
    free(c);
}

static silence_op_t *op_new(proto_t *p, proto_msg_t *m, int expire)
{
    silence_op_t *c = xcalloc(1, sizeof *c);
    c->p = p;
    memcpy(c->rid, m->s->rid, m->s->rid_len);
    c->rid_len = m->s->rid_len;
    memcpy(c->id, m->id, sizeof c->id);
    util_fmt(c->actor, sizeof c->actor, "%s", m->s->agent->id);
    c->expire = expire;
    c->now = clock_now_ms();
    return c;
}

void proto_op_silence(proto_t *p, proto_msg_t *m)
{
    silence_op_t *c = op_new(p, m, 0);
    const char *field;
    char why[512];
    if (silence_parse(m->map, m->s->agent->id, c->now, &c->req, &field, why, sizeof why) < 0) {
        PROTO_NACK(p, m, CAREHUB_E_INVALID, field, "%s", why);
        free(c);
        return;
    }
    proto_flush(p); /* the events received before it are not held by it */
    turn_add(p->turn, silence_fn, silence_done, c);
}

void proto_op_silence_expire(proto_t *p, proto_msg_t *m)
{
    silence_op_t *c = op_new(p, m, 1);
    const char *s;
    size_t n;
    if (!frame_str(frame_map_get(m->map, "silence"), &s, &n) || n == 0 || n >= sizeof c->silence ||
        !util_valid_id(s, n)) {
        PROTO_NACK(p, m, CAREHUB_E_INVALID, "/silence",
                   "`silence` is required: the silence's id, as the silence op's ack gave it");
        free(c);
        return;
    }
    memcpy(c->silence, s, n);
    c->silence[n] = '\0';
    proto_flush(p); /* the events received before it are still held by it */
    turn_add(p->turn, silence_fn, silence_done, c);
}
