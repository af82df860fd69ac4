/*
 * assign_notice.c — notices to channels through the webhook outbox: queued in the
 * transaction that causes them (case.assigned, assignment.overdue, case.resolved,
 * webhook.failed), read and walked by the webhook engine, removed when a delivery
 * ends (a failure for good is recorded and told to the channel's fallback).
 */
#include "assign.h"

#include <errno.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "phone.h"
#include "trail.h"
#include "util.h"

#include "assign_int.h"

static void rfc3339(int64_t ms, char *buf, size_t size)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    util_fmt(buf, size, "%s.%03dZ", base, (int)(ms % 1000));
}

/* Queue one notice in the outbox: {type, timestamp, data} as JSON, for channel ch. */
static int outbox_put(store_txn_t *t, const config_channel_t *ch, const char *case_id,
                      const char *type, json_t *data, int64_t now, assign_effects_t *fx)
{
    unsigned char rnd[12];
    char hex[25], wid[ID_LEN], ts[40];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
    util_fmt(wid, sizeof wid, "msg_%s", hex);
    rfc3339(now, ts, sizeof ts);
    json_t *msg = json_pack("{s:s, s:s, s:O}", "type", type, "timestamp", ts, "data", data);
    char *body = msg ? json_dumps(msg, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(msg);
    if (!body)
        return STORE_IO; /* jansson out of memory: abort the transaction */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    frame_pack_cstr(&pk, "channel"); frame_pack_cstr(&pk, ch->id);
    frame_pack_cstr(&pk, "case");    frame_pack_cstr(&pk, case_id);
    frame_pack_cstr(&pk, "body");    frame_pack_cstr(&pk, body);
    frame_pack_cstr(&pk, "created"); msgpack_pack_int64(&pk, now);
    int rc = store_put(t, STORE_DB_OUTBOX, wid, strlen(wid), sb.data, sb.size, 1);
    msgpack_sbuffer_destroy(&sb);
    free(body);
    if (rc == 0)
        rc = trail_append(t, case_id, "notice_queued", "broker", -1, NULL, NULL, 0, wid);
    if (rc == 0) {
        assign_fx_webhook(fx, wid);
        log_debug("assign: %s queued for channel %s (%s, case %s)", wid, ch->id, type, case_id);
    }
    return rc;
}

/* Send `type` with `data` to a channel: one message for a webhook; one per
 * recipient, with `to` and `text` added, for an SMS gateway. */
int assign_notify_channel(store_txn_t *t, const config_channel_t *ch, const char *case_id,
                          const char *type, json_t *data, const char *text, int64_t now,
                          assign_effects_t *fx)
{
    if (ch->kind == CHANNEL_WEBHOOK)
        return outbox_put(t, ch, case_id, type, data, now, fx);
    /* PROTOCOL §11: a text about an assignment not yet acknowledged carries a link and
     * a reply code for its recipient, where the channel allows it */
    const char *stage = json_string_value(json_object_get(data, "stage"));
    const char *assignment = json_string_value(json_object_get(data, "assignment"));
    int ack_link = ch->can_acknowledge && assignment &&
                   (!strcmp(type, "case.assigned") ||
                    (!strcmp(type, "assignment.overdue") && stage && !strcmp(stage, "ack")));
    for (size_t i = 0; i < ch->n_to; i++) {
        json_t *d = json_deep_copy(data);
        json_object_set_new(d, "to", json_string(ch->to[i]));
        if (ack_link) {
            char suffix[256], full[1024];
            int rc = phone_issue(t, assignment, case_id,
                                 json_string_value(json_object_get(data, "agency")),
                                 json_integer_value(json_object_get(data, "ack_by")), ch->to[i], now,
                                 suffix, sizeof suffix);
            if (rc) {
                json_decref(d);
                return rc;
            }
            util_fmt(full, sizeof full, "%s%s", text, suffix);
            json_object_set_new(d, "text", json_string(full));
        } else {
            json_object_set_new(d, "text", json_string(text));
        }
        int rc = outbox_put(t, ch, case_id, type, d, now, fx);
        json_decref(d);
        if (rc)
            return rc;
    }
    return 0;
}

const char *assign_agency_name(const config_t *cfg, const char *id)
{
    const config_agency_t *ag = config_find_agency(cfg, id);
    return ag && ag->name ? ag->name : id;
}

/* ---- the outbox for the webhook engine ----------------------------------- */

int assign_outbox_get(store_txn_t *t, const char *webhook_id, char *channel, size_t chsize,
                      char **body, int64_t *created)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_OUTBOX, webhook_id, strlen(webhook_id), &v, &vl);
    if (rc)
        return rc;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    rc = STORE_CORRUPTED;
    const char *b;
    size_t bl;
    if (msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
        frame_str(frame_map_get(&u.data, "body"), &b, &bl)) {
        assign_copy_str(channel, chsize, frame_map_get(&u.data, "channel"));
        *created = assign_get_int(&u.data, "created");
        *body = xstrndup(b, bl);
        rc = 0;
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

typedef struct {
    int (*fn)(void *, const char *);
    void *ud;
} outbox_each_t;

static int visit_outbox(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    outbox_each_t *c = ud;
    char id[ID_LEN];
    if (store_copy_id(k, kl, id, sizeof id))
        return STORE_CORRUPTED;
    return c->fn(c->ud, id) < 0 ? STORE_ABORTED : 0;
}

int assign_outbox_each(store_txn_t *t, int (*fn)(void *ud, const char *webhook_id), void *ud)
{
    outbox_each_t c = {fn, ud};
    return store_each(t, STORE_DB_OUTBOX, NULL, 0, 0, visit_outbox, &c);
}

int assign_outbox_done(const config_t *cfg, store_txn_t *t, const char *webhook_id, int delivered,
                       int attempts, const char *error, int64_t now, assign_effects_t *fx)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_OUTBOX, webhook_id, strlen(webhook_id), &v, &vl);
    if (rc == STORE_NOTFOUND)
        return 0;
    if (rc)
        return rc;
    char channel[ID_LEN] = "", case_id[STORE_ID_MAX] = "";
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS) {
        assign_copy_str(channel, sizeof channel, frame_map_get(&u.data, "channel"));
        assign_copy_str(case_id, sizeof case_id, frame_map_get(&u.data, "case"));
    }
    msgpack_unpacked_destroy(&u);
    if ((rc = store_del(t, STORE_DB_OUTBOX, webhook_id, strlen(webhook_id), NULL, 0)) ||
        (rc = trail_append(t, case_id, delivered ? "notice_delivered" : "notice_failed", channel,
                           -1, NULL, NULL, 0, webhook_id)))
        return rc;
    if (delivered || !case_id[0])
        return 0;
    /* Failed for good: in the case's log, and the channel's fallback is told. */
    unsigned char rec[8];
    uint64_t at = (uint64_t)now;
    for (int i = 7; i >= 0; i--, at >>= 8)
        rec[i] = (unsigned char)(at & 0xff);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_write(&sb, (const char *)rec, sizeof rec); /* time first: dups sort by time */
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    frame_pack_cstr(&pk, "what");       frame_pack_cstr(&pk, "webhook_failed");
    frame_pack_cstr(&pk, "webhook_id"); frame_pack_cstr(&pk, webhook_id);
    frame_pack_cstr(&pk, "channel");    frame_pack_cstr(&pk, channel);
    frame_pack_cstr(&pk, "attempts");   msgpack_pack_int(&pk, attempts);
    frame_pack_cstr(&pk, "error");      frame_pack_cstr(&pk, error ? error : "");
    rc = store_put(t, STORE_DB_CASE_LOG, case_id, strlen(case_id), sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
    if (rc)
        return rc;
    log_warn("assign: %s to channel %s failed for good after %d attempts (%s); recorded in case %s",
             webhook_id, channel, attempts, error ? error : "", case_id);
    const config_channel_t *ch = config_find_channel(cfg, channel);
    const config_channel_t *fb = ch && ch->fallback ? config_find_channel(cfg, ch->fallback) : NULL;
    if (!fb)
        return 0;
    json_t *data = json_pack("{s:s, s:s, s:s, s:i, s:s}", "case", case_id, "channel", channel,
                             "webhook_id", webhook_id, "attempts", attempts, "error", error ? error : "");
    char text[256];
    util_fmt(text, sizeof text, "【carehub】案件 %s 的通知未能送达（渠道 %s）。", case_id, channel);
    rc = assign_notify_channel(t, fb, case_id, "webhook.failed", data, text, now, fx);
    json_decref(data);
    return rc;
}
