/* broker.c — the zmq_poll event loop; see broker.h. */
#include "broker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <zmq.h>

#include "clock.h"
#include "assign.h"
#include "case.h"
#include "deliver.h"
#include "hook.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "phone.h"
#include "proto.h"
#include "register.h"
#include "schema.h"
#include "service.h"
#include "session.h"
#include "store.h"
#include "trail.h"
#include "turn.h"
#include "util.h"
#include "zap.h"

/* Turns committed and waiting for their sync at most: the next commit overlaps the
 * last one's sync (two fdatasyncs in flight), and no more, so that a polite agent's
 * event waits behind at most about two turns of a flood (tests/e2e/test_faults.py). */
#define TURNS_UNSYNCED_MAX 2

/* Sessions not heard from for this long are forgotten (they say hello again). */
#define SESSION_IDLE_DROP_MS (24LL * 3600 * 1000)

struct broker {
    const config_t *cfg;
    void *ctx;
    void *router;
    void *zap;               /* CURVE only */
    schema_set_t *schemas;
    store_t *store;
    turn_t *turn;            /* the turn's one write transaction (turn.h) */
    job_set_t *jobs;         /* long reads off the loop (job.h) */
    session_table_t *sessions;
    proto_t *proto;
    deliver_t *deliver;
    hook_t *hook;
    metrics_t *metrics;      /* broker.metrics; NULL when not configured */
    phone_t *phone;          /* broker.http (PROTOCOL §11); NULL when not configured */
    char **endpoints;        /* as bound (ports resolved) */
    size_t n_endpoints;
    int64_t next_heartbeat;  /* monotonic ms */
    int64_t next_redeliver;  /* monotonic ms */
    int drained;             /* this turn's messages are read: the next read follows its commit */
};

static volatile sig_atomic_t stop_requested;
/* Self-pipe: a signal that lands between the stop check and zmq_poll still
 * wakes the poll at once (its read end is in the poll set). */
static int wake_pipe[2] = {-1, -1};

void broker_request_stop(void)
{
    stop_requested = 1;
    if (wake_pipe[1] >= 0) {
        ssize_t w = write(wake_pipe[1], "x", 1); /* async-signal-safe; full pipe is fine */
        (void)w;
    }
}

/* proto's send callback: [routing id][frame] on the ROUTER, never blocking. */
static int router_send(void *ud, const unsigned char *rid, size_t rid_len, const void *data,
                       size_t len)
{
    broker_t *b = ud;
    if (zmq_send(b->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1; /* EHOSTUNREACH (gone; ROUTER_MANDATORY) or EAGAIN (peer not reading) */
    if (zmq_send(b->router, data, len, ZMQ_DONTWAIT) < 0)
        return -1;
    return 0;
}

typedef struct {
    metrics_gauges_t *g;
} gauge_txn_t;

static int gauges_txn(store_txn_t *t, void *ud)
{
    gauge_txn_t *c = ud;
    c->g->pending_notices = store_txn_entries(t, STORE_DB_OUTBOX);
    return assign_gauges(t, clock_now_ms(), &c->g->open_assignments, &c->g->overdue_assignments);
}

/* metrics: the gauges, computed at scrape time. */
static int broker_gauges(void *ud, metrics_gauges_t *g)
{
    broker_t *b = ud;
    gauge_txn_t c = {g};
    if (store_read(b->store, gauges_txn, &c) != STORE_OK)
        return -1;
    g->map_used_bytes = store_map_used(b->store);
    g->map_size_bytes = store_map_size(b->store);
    g->map_max_bytes = b->cfg->map_max;
    return 0;
}

/* After a turn's commit: pushes, notices, the next wake-up. */
static void turn_effects(void *ud, const assign_effects_t *fx)
{
    deliver_effects(ud, fx);
}

static int set_int(void *s, int opt, int v)
{
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

broker_t *broker_new(const config_t *cfg, const char *schemas_dir, char *err, size_t errlen)
{
    broker_t *b = xcalloc(1, sizeof *b);
    b->cfg = cfg;
    const char *sdir = cfg->schemas_dir ? cfg->schemas_dir : schemas_dir;
    b->schemas = schema_set_load(sdir, err, errlen);
    if (!b->schemas)
        goto fail;
    b->store = store_open(cfg->data_dir, cfg->map_size, cfg->map_max, err, errlen);
    if (!b->store)
        goto fail;
    if (store_set_privacy(b->store, cfg->privacy_off ? NULL : cfg->privacy_key, err, errlen) < 0)
        goto fail;
    if (assign_figures_rebuild(b->store) < 0) {
        util_fmt(err, errlen, "cannot build the assignment figures in %s (see the log)",
                 cfg->data_dir);
        goto fail;
    }
    if (case_refs_upgrade(b->store, !cfg->privacy_off) < 0) {
        util_fmt(err, errlen, "cannot key the stored refs in %s (see the log)", cfg->data_dir);
        goto fail;
    }
    if (trail_key_mark(b->store, !cfg->privacy_off) < 0) {
        util_fmt(err, errlen, "cannot mark the trail's key in %s (see the log)", cfg->data_dir);
        goto fail;
    }
    if (assign_deadlines_upgrade(b->store) < 0) {
        util_fmt(err, errlen, "cannot rewrite the deadline index in %s (see the log)", cfg->data_dir);
        goto fail;
    }
    size_t recomputed;
    if (register_rules_apply(b->store, cfg, clock_now_ms(), &recomputed) < 0) {
        util_fmt(err, errlen, "cannot recompute the register's rhythm in %s (see the log)",
                 cfg->data_dir);
        goto fail;
    }
    if (trail_index_rebuild(b->store) < 0) {
        util_fmt(err, errlen, "cannot build the per-case trail index in %s (see the log)",
                 cfg->data_dir);
        goto fail;
    }
    b->sessions = session_table_new();
    b->turn = turn_new(b->store);
    if (turn_start_syncer(b->turn) < 0)
        log_warn("broker: turns sync in the loop (no sync thread)");
    b->proto = proto_new(cfg, b->schemas, b->store, b->turn, router_send, b);
    if ((b->jobs = job_set_new()) != NULL)
        proto_set_jobs(b->proto, b->jobs);
    b->deliver = deliver_new(cfg, b->store, b->turn, b->sessions, router_send, b);
    turn_set_effects(b->turn, turn_effects, b->deliver);
    b->hook = hook_new(cfg, deliver_webhook_done, deliver_webhook_attempt, b->deliver);
    if (!b->hook) {
        util_fmt(err, errlen, "cannot start the webhook engine (libcurl)");
        goto fail;
    }
    deliver_set_hook(b->deliver, b->hook);
    proto_set_deliver(b->proto, b->deliver);
    if (cfg->metrics) {
        if (!(b->metrics = metrics_new(cfg->metrics, err, errlen)))
            goto fail;
        metrics_set_gauge_fn(b->metrics, broker_gauges, b);
        proto_set_metrics(b->proto, b->metrics);
        turn_set_metrics(b->turn, b->metrics);
        deliver_set_metrics(b->deliver, b->metrics);
        const char *colon = strrchr(cfg->metrics, ':');
        log_info("broker: metrics on http://%.*s:%d/metrics", (int)(colon - cfg->metrics),
                 cfg->metrics, metrics_port(b->metrics));
    }

    if (cfg->http_listen && !(b->phone = phone_new(cfg, b->store, b->turn, b->jobs, err, errlen)))
        goto fail;

    b->ctx = zmq_ctx_new();
    if (!b->ctx) {
        util_fmt(err, errlen, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    if (cfg->security == SECURITY_CURVE && !(b->zap = zap_open(b->ctx))) {
        util_fmt(err, errlen, "cannot start the ZAP handler: %s", zmq_strerror(errno));
        goto fail;
    }
    b->router = zmq_socket(b->ctx, ZMQ_ROUTER);
    if (!b->router) {
        util_fmt(err, errlen, "zmq_socket: %s", zmq_strerror(errno));
        goto fail;
    }
    /* Frames over 4x the limit are dropped with the connection (PROTOCOL §1);
     * those in between are read and answered too_large. */
    int64_t maxmsg = (int64_t)cfg->max_message_bytes * 4;
    if (set_int(b->router, ZMQ_ROUTER_MANDATORY, 1) < 0 || /* no silent drops */
        /* broker.peer_queue (default four turns of replies): a peer that reads never
         * loses a reply, even when the I/O thread falls a whole turn behind */
        set_int(b->router, ZMQ_SNDHWM, cfg->peer_queue) < 0 ||
        /* A second connection naming itself with a routing id in use is refused
         * by libzmq (no handover): libzmq's own ids are guessable (0x00 and a
         * counter), and a handover would give the newcomer the first one's
         * replies and pushes. Agents reconnect with new ids. */
        set_int(b->router, ZMQ_ROUTER_HANDOVER, 0) < 0 ||
        set_int(b->router, ZMQ_LINGER, 2000) < 0 ||        /* flush acks at shutdown */
        zmq_setsockopt(b->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0) {
        util_fmt(err, errlen, "zmq_setsockopt: %s", zmq_strerror(errno));
        goto fail;
    }
    if (cfg->security == SECURITY_CURVE) {
        if (set_int(b->router, ZMQ_CURVE_SERVER, 1) < 0 ||
            zmq_setsockopt(b->router, ZMQ_CURVE_SECRETKEY, cfg->secret_key, 40) < 0 ||
            zmq_setsockopt(b->router, ZMQ_ZAP_DOMAIN, "carehub", 7) < 0) {
            util_fmt(err, errlen, "cannot enable CURVE: %s", zmq_strerror(errno));
            goto fail;
        }
    }
    if (wake_pipe[0] < 0) {
        if (pipe(wake_pipe) < 0) {
            util_fmt(err, errlen, "pipe: %s", strerror(errno));
            goto fail;
        }
        for (int i = 0; i < 2; i++)
            (void)fcntl(wake_pipe[i], F_SETFL, fcntl(wake_pipe[i], F_GETFL) | O_NONBLOCK);
    }
    b->endpoints = xcalloc(cfg->n_listen, sizeof *b->endpoints);
    for (size_t i = 0; i < cfg->n_listen; i++) {
        if (zmq_bind(b->router, cfg->listen[i]) < 0) {
            util_fmt(err, errlen, "cannot listen on %s: %s", cfg->listen[i], zmq_strerror(errno));
            goto fail;
        }
        char ep[1024];
        size_t n = sizeof ep;
        if (zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, ep, &n) < 0)
            util_fmt(ep, sizeof ep, "%s", cfg->listen[i]);
        b->endpoints[b->n_endpoints++] = xstrdup(ep);
        log_info("broker: listening on %s (%s)", ep,
                 cfg->security == SECURITY_CURVE ? "curve" : "security none: loopback and tests only");
    }
    return b;
fail:
    broker_destroy(&b);
    return NULL;
}

int broker_write_ready(const broker_t *b, const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    util_fmt(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        util_fmt(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < b->n_endpoints; i++)
        fprintf(f, "%s\n", b->endpoints[i]);
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        util_fmt(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Receive one message ([routing id][frames…]) without blocking and hand it to
 * proto. Returns 1 when a message was handled, 0 when none was waiting, -1 on error. */
static int receive_one(broker_t *b, int64_t now)
{
    zmq_msg_t rid, data;
    zmq_msg_init(&rid);
    if (zmq_msg_recv(&rid, b->router, ZMQ_DONTWAIT) < 0) {
        int e = errno;
        zmq_msg_close(&rid);
        return e == EAGAIN || e == EINTR ? 0 : -1;
    }
    int frames = 0;
    zmq_msg_init(&data);
    const char *user_id = NULL;
    int more = zmq_msg_more(&rid);
    while (more) {
        zmq_msg_t extra;
        zmq_msg_t *m = frames == 0 ? &data : &extra;
        if (m == &extra)
            zmq_msg_init(&extra);
        if (zmq_msg_recv(m, b->router, 0) < 0) { /* the rest of a message is already here */
            if (m == &extra)
                zmq_msg_close(&extra);
            break;
        }
        more = zmq_msg_more(m);
        frames++;
        if (m == &extra)
            zmq_msg_close(&extra);
    }
    /* Under CURVE the agent is the ZAP User-Id of the connection: metadata of
     * the peer's own frame (the routing-id frame is made by the ROUTER). */
    if (b->cfg->security == SECURITY_CURVE && frames > 0) {
        user_id = zmq_msg_gets(&data, "User-Id");
        if (!user_id)
            user_id = ""; /* never fall back to a name in the message */
    }
    session_t *s = session_get(b->sessions, zmq_msg_data(&rid), zmq_msg_size(&rid), now);
    proto_on_message(b->proto, s, zmq_msg_data(&data), zmq_msg_size(&data), frames, user_id, now);
    zmq_msg_close(&data);
    zmq_msg_close(&rid);
    return 1;
}

typedef struct {
    broker_t *b;
    int64_t now;
} hb_ctx_t;

/* Ping an agent not heard from for a heartbeat interval; an agent silent for
 * three intervals is gone and gets no pushes (nor pings) until it speaks. */
static void heartbeat_visit(session_t *s, void *ud)
{
    hb_ctx_t *h = ud;
    int64_t hb = h->b->cfg->heartbeat_ms;
    if (!s->agent || h->now - s->last_heard < hb || h->now - s->last_heard >= 3 * hb)
        return;
    if (s->last_pinged && h->now - s->last_pinged < hb)
        return;
    s->last_pinged = h->now;
    if (proto_ping(h->b->proto, s) < 0)
        s->last_heard = h->now - 3 * hb; /* unreachable: treat as gone */
}

/* The poll timeout: the earliest of the heartbeat, re-delivery, the next
 * escalation and what libcurl asks for. */
static long poll_timeout(broker_t *b)
{
    if (turn_pending(b->turn) && !turn_writing(b->turn) && turn_unsynced(b->turn) < TURNS_UNSYNCED_MAX)
        return 0; /* ops queued (by the last turn's effects): the next turn at once */
    int64_t now = util_mono_ms();
    int64_t t = b->next_heartbeat - now;
    if (b->next_redeliver - now < t)
        t = b->next_redeliver - now;
    int64_t due = deliver_next_due(b->deliver), clk = clock_now_ms();
    /* while a slice of due steps waits for its commit, the writer's byte wakes the
     * loop: a due time already past must not make it spin meanwhile */
    if (due != INT64_MAX && !deliver_fire_pending(b->deliver) && due - clk < t)
        t = due - clk;
    long h = hook_timeout_ms(b->hook);
    if (h >= 0 && h < t)
        t = h;
    long mt = metrics_timeout_ms(b->metrics);
    if (mt >= 0 && mt < t)
        t = mt;
    long pt = phone_timeout_ms(b->phone);
    if (pt >= 0 && pt < t)
        t = pt;
    long wd = service_timeout_ms(now);
    if (wd >= 0 && wd < t)
        t = wd;
    return t < 0 ? 0 : (long)t;
}

/* Poll items besides libcurl's sockets: router, wake pipe, ZAP, the metrics listener. */
#define FIXED_POLL 64

int broker_run(broker_t *b)
{
    size_t cap = FIXED_POLL;
    zmq_pollitem_t *items = xcalloc(cap, sizeof *items);
    int64_t hb = b->cfg->heartbeat_ms;
    b->next_heartbeat = util_mono_ms() + hb;
    b->next_redeliver = util_mono_ms() + b->cfg->redeliver_every_ms;
    /* What was pending when the broker stopped: notices, then escalations that fell due. */
    deliver_resubmit_outbox(b->deliver);
    deliver_fire_due(b->deliver, clock_now_ms(), 0);
    turn_flush(b->turn);
    log_info("broker: ready (%zu agents configured)", b->cfg->n_agents);
    char status[512];
    util_fmt(status, sizeof status, "listening on %s%s", b->n_endpoints ? b->endpoints[0] : "-",
             b->n_endpoints > 1 ? " and more" : "");
    service_ready(status); /* systemd (Type=notify): the sockets are bound, the store open */
    while (!stop_requested) {
        service_watchdog(util_mono_ms()); /* a loop that turns is a live broker */
        size_t need = FIXED_POLL + hook_socket_count(b->hook);
        if (need > cap) { /* as many items as libcurl has sockets: no ceiling */
            cap = need * 2;
            items = xrealloc(items, cap * sizeof *items);
        }
        int n_items = 0;
        /* One drain per turn: while the last turn's sync runs, this turn's batch is read
         * and validated, and then the router waits for the commit (bounded, fair turns). */
        int writing = turn_writing(b->turn);
        int can_read = writing ? proto_pending(b->proto) < PROTO_BATCH_MAX : !b->drained;
        items[n_items++] = (zmq_pollitem_t){b->router, 0, can_read ? ZMQ_POLLIN : 0, 0};
        items[n_items++] = (zmq_pollitem_t){NULL, wake_pipe[0], ZMQ_POLLIN, 0};
        int synced_item = -1;
        if (turn_fd(b->turn) >= 0) {
            synced_item = n_items;
            items[n_items++] = (zmq_pollitem_t){NULL, turn_fd(b->turn), ZMQ_POLLIN, 0};
        }
        int jobs_item = -1;
        if (job_fd(b->jobs) >= 0) {
            jobs_item = n_items;
            items[n_items++] = (zmq_pollitem_t){NULL, job_fd(b->jobs), ZMQ_POLLIN, 0};
        }
        int zap_item = n_items;
        if (b->zap)
            items[n_items++] = (zmq_pollitem_t){b->zap, 0, ZMQ_POLLIN, 0};
        n_items += metrics_pollitems(b->metrics, items + n_items, FIXED_POLL - n_items);
        n_items += phone_pollitems(b->phone, items + n_items, FIXED_POLL - n_items);
        int hook_first = n_items;
        n_items += hook_pollitems(b->hook, items + n_items, (int)cap - n_items);
        int rc = zmq_poll(items, n_items, poll_timeout(b));
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            log_error("broker: zmq_poll: %s", zmq_strerror(errno));
            free(items);
            return -1;
        }
        if (synced_item >= 0 && (items[synced_item].revents & ZMQ_POLLIN))
            turn_on_synced(b->turn); /* the last turn is durable: its replies and effects */
        if (jobs_item >= 0 && (items[jobs_item].revents & ZMQ_POLLIN))
            job_collect(b->jobs); /* a verify finished: its answer */
        if (b->zap && (items[zap_item].revents & ZMQ_POLLIN))
            zap_handle(b->zap, b->cfg);
        if (items[1].revents & ZMQ_POLLIN) {
            char buf[64];
            while (read(wake_pipe[0], buf, sizeof buf) > 0)
                ; /* drained; stop_requested says why */
        }
        /* libcurl's ready sockets; the ends of deliveries are queued in the turn */
        hook_perform_items(b->hook, items + hook_first, n_items - hook_first);
        metrics_perform(b->metrics);
        phone_perform(b->phone); /* links and replies: acknowledgements go into this turn */
        int64_t now;
        if (can_read && (items[0].revents & ZMQ_POLLIN)) {
            b->drained = 1;
            /* Drain what has arrived, up to one batch, then commit it at once. */
            now = util_mono_ms();
            for (int i = 0; i < PROTO_BATCH_MAX && proto_pending(b->proto) < PROTO_BATCH_MAX; i++) {
                int r = receive_one(b, now);
                if (r < 0) {
                    log_error("broker: receive: %s", zmq_strerror(errno));
                    break;
                }
                if (r == 0)
                    break;
            }
            if (!writing) /* else staged on while the writer writes: the next turn's batch */
                proto_flush(b->proto);
        }
        deliver_fire_due(b->deliver, clock_now_ms(), 0);
        /* The turn's one write transaction: everything above. Its replies and effects
         * follow its sync (turn_on_synced); at most TURNS_UNSYNCED_MAX turns are
         * committed and not yet durable, so one commit overlaps the last one's sync. */
        if (!turn_writing(b->turn) && turn_unsynced(b->turn) < TURNS_UNSYNCED_MAX) {
            proto_flush(b->proto); /* what was staged while the writer wrote */
            (void)turn_commit(b->turn); /* handed to the writer thread */
            b->drained = 0;
        }
        now = util_mono_ms();
        if (now >= b->next_heartbeat) {
            hb_ctx_t h = {b, now};
            session_table_sweep(b->sessions, now, SESSION_IDLE_DROP_MS, heartbeat_visit, &h);
            metrics_stale_readers(b->metrics, store_reader_check(b->store));
            b->next_heartbeat = now + hb;
        }
        if (now >= b->next_redeliver) {
            deliver_redeliver_all(b->deliver);
            b->next_redeliver = now + b->cfg->redeliver_every_ms;
        }
    }
    service_stopping();
    /* What the last turns left: written, synced and answered before we go. */
    proto_flush(b->proto);
    turn_flush(b->turn);
    turn_flush(b->turn); /* what those answers' effects queued (first deliveries) */
    free(items);
    log_info("broker: stopping");
    return 0;
}

void broker_destroy(broker_t **pb)
{
    if (!pb || !*pb)
        return;
    broker_t *b = *pb;
    job_set_destroy(&b->jobs); /* waits for a verify still reading */
    turn_destroy(&b->turn); /* empty after broker_run; else its ops are told STORE_IO */
    if (b->router)
        zmq_close(b->router);
    if (b->zap)
        zmq_close(b->zap);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    metrics_destroy(&b->metrics); /* before the store: its gauges read it */
    phone_destroy(&b->phone);     /* after the turn: its ops' `done` resume its requests */
    hook_destroy(&b->hook);
    deliver_destroy(&b->deliver);
    proto_destroy(&b->proto);
    session_table_destroy(&b->sessions);
    store_close(&b->store);
    schema_set_destroy(&b->schemas);
    for (size_t i = 0; i < b->n_endpoints; i++)
        free(b->endpoints[i]);
    free(b->endpoints);
    free(b);
    *pb = NULL;
}
