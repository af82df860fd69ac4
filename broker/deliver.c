/* deliver.c — pushes, notices and timers after commits; see deliver.h. */
#include "carehub_wire.h"
#include "deliver.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "frame.h"
#include "log.h"
#include "trail.h"
#include "util.h"

/* Escalation steps fired per turn: bounds one turn of the loop (a storm is
 * taken in slices of this many, one per turn, never holding intake longer). */
#define FIRE_BATCH 1024
/* With the test clock moved, "all" that fell due: up to this many in one turn. */
#define FIRE_ALL_MAX 65536

struct deliver {
    const config_t *cfg;
    store_t *store;
    turn_t *turn;          /* the loop's write transaction: every write goes there */
    session_table_t *sessions;
    hook_t *hook;
    metrics_t *metrics;    /* NULL: not counted */
    deliver_send_fn send;
    void *send_ud;
    int64_t next_due;      /* cached first key of the deadline index */
    int next_due_known;
    int fire_queued;       /* a firing op is in this turn: do not queue another */
};

deliver_t *deliver_new(const config_t *cfg, store_t *store, turn_t *turn,
                       session_table_t *sessions, deliver_send_fn send, void *send_ud)
{
    deliver_t *d = xcalloc(1, sizeof *d);
    d->cfg = cfg;
    d->store = store;
    d->turn = turn;
    d->sessions = sessions;
    d->send = send;
    d->send_ud = send_ud;
    return d;
}

void deliver_destroy(deliver_t **pd)
{
    if (!pd || !*pd)
        return;
    free(*pd);
    *pd = NULL;
}

void deliver_set_metrics(deliver_t *d, metrics_t *m)
{
    d->metrics = m;
}

void deliver_set_hook(deliver_t *d, hook_t *hook)
{
    d->hook = hook;
}

/* Heard from within three heartbeat intervals. */
static int connected(const deliver_t *d, const session_t *s)
{
    return s->agent && util_mono_ms() - s->last_heard < 3 * d->cfg->heartbeat_ms;
}

/* ---- case pushes ---------------------------------------------------------------- */

#define MAX_RECIPIENTS 32

typedef struct {
    deliver_t *d;
    const char *agency;   /* push to agents of this agency… */
    const session_t *only; /* …or to this one session */
    const void *data;
    size_t len;
    int sent;
    const char *to[MAX_RECIPIENTS]; /* agent ids it went to (config strings) */
} push_ctx_t;

/* One push to one session, never blocking. A peer whose queue is full (it
 * stopped reading: ZeroMQ's high-water mark, refused because the ROUTER is
 * ROUTER_MANDATORY) is not dropped silently: the push is counted, the first
 * refusal of a run is logged, and the item stays pending for the next
 * re-delivery round or hello. 0 when sent. */
static int push_to(deliver_t *d, session_t *s, const void *data, size_t len)
{
    if (d->send(d->send_ud, s->rid, s->rid_len, data, len) == 0) {
        if (s->pushes_deferred) {
            log_info("deliver: agent %s takes pushes again (%" PRIu64 " were deferred; they are "
                     "re-sent at the next re-delivery)",
                     s->agent ? s->agent->id : "?", s->pushes_deferred);
            s->pushes_deferred = 0;
        }
        return 0;
    }
    if (errno == EAGAIN) {
        if (s->pushes_deferred++ == 0)
            log_warn("deliver: agent %s is not reading (its queue is full): pushes wait as pending "
                     "until it reads; re-sent every broker.redeliver_every and at its next hello",
                     s->agent ? s->agent->id : "?");
        metrics_push_deferred(d->metrics);
    }
    return -1;
}

static void push_visit(session_t *s, void *ud)
{
    push_ctx_t *c = ud;
    if (!connected(c->d, s) || s->agent->role != ROLE_AGENCY || !s->agent->agency ||
        strcmp(s->agent->agency, c->agency) != 0 || (c->only && c->only != s))
        return;
    if (push_to(c->d, s, c->data, c->len) == 0 && c->sent < MAX_RECIPIENTS)
        c->to[c->sent++] = s->agent->id;
}

typedef struct {
    deliver_t *d;
    const session_t *only;
} case_push_t;

typedef struct {
    deliver_t *d;
    const char *assignment;
    const session_t *only;
    const char *to[MAX_RECIPIENTS]; /* who received it */
    int sent;
} build_ctx_t;

static int build_and_push(store_txn_t *t, void *ud)
{
    build_ctx_t *b = ud;
    frame_out_t o;
    char agency[STORE_ID_MAX];
    int open_;
    int rc = assign_case_message(t, b->assignment, b->d->cfg->max_message_bytes, &o, agency, &open_);
    if (rc)
        return rc;
    if (open_) {
        push_ctx_t c = {b->d, agency, b->only, o.sb.data, o.sb.size, 0, {0}};
        session_each(b->d->sessions, push_visit, &c);
        if (c.sent)
            log_debug("deliver: %s pushed to %d agent(s) of %s", b->assignment, c.sent, agency);
        memcpy(b->to, c.to, sizeof b->to);
        b->sent = c.sent;
    }
    frame_out_end(&o);
    return 0;
}

typedef struct {
    deliver_t *d;
    const char *agency;
    const session_t *only;
    int any;
} any_ctx_t;

static void any_visit(session_t *s, void *ud)
{
    any_ctx_t *c = ud;
    if (connected(c->d, s) && s->agent->role == ROLE_AGENCY && s->agent->agency &&
        strcmp(s->agent->agency, c->agency) == 0 && (!c->only || c->only == s))
        c->any = 1;
}

/* The agency of an assignment from its id, without building the message. */
static int agency_of_txn(store_txn_t *t, void *ud)
{
    char **out = ud;
    return assign_agency(t, out[0], out[1]);
}

/* The first delivery of an assignment to each agent is a read of the child's
 * data: it goes into the trail once (re-deliveries are not recorded again). An
 * op of the next turn: the push has left already (it carries no promise). */
typedef struct {
    char assignment[STORE_ID_MAX];
    const char *to[MAX_RECIPIENTS]; /* agent ids (config strings) */
    int sent;
} delivered_op_t;

static int record_delivered(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    (void)fx;
    delivered_op_t *b = ud;
    char case_id[STORE_ID_MAX];
    int rc = assign_case_of(t, b->assignment, case_id);
    if (rc)
        return rc == STORE_NOTFOUND ? 0 : rc;
    for (int i = 0; i < b->sent; i++) {
        char key[2 * STORE_ID_MAX + 70];
        size_t kl = store_pair_key(key, sizeof key, b->to[i], b->assignment);
        if (kl == 0)
            continue;
        const void *v;
        size_t vl;
        rc = store_get(t, STORE_DB_DELIVERED, key, kl, &v, &vl);
        if (rc == 0)
            continue;
        if (rc != STORE_NOTFOUND ||
            (rc = store_put(t, STORE_DB_DELIVERED, key, kl, "", 0, 0)) ||
            (rc = trail_append(t, case_id, "delivered", b->to[i], -1, NULL, NULL, 0, b->assignment)))
            return rc;
    }
    return 0;
}

static void delivered_done(void *ud, store_rc_t rc)
{
    delivered_op_t *b = ud;
    if (rc != STORE_OK)
        log_error("deliver: the first delivery of %s could not be recorded in the trail (%s)",
                  b->assignment, store_strerror(rc));
    free(b);
}

static int push_assignment(void *ud, const char *assignment)
{
    case_push_t *cp = ud;
    /* Build the message only when an agent of that agency is there to take it. */
    char agency[STORE_ID_MAX];
    char *args[2] = {(char *)assignment, agency};
    if (store_read(cp->d->store, agency_of_txn, args) != STORE_OK)
        return 0;
    any_ctx_t any = {cp->d, agency, cp->only, 0};
    session_each(cp->d->sessions, any_visit, &any);
    if (!any.any)
        return 0;
    build_ctx_t b = {cp->d, assignment, cp->only, {0}, 0};
    if (store_read(cp->d->store, build_and_push, &b) == STORE_IO)
        return -1;
    if (b.sent) {
        delivered_op_t *op = xcalloc(1, sizeof *op);
        util_fmt(op->assignment, sizeof op->assignment, "%s", assignment);
        memcpy(op->to, b.to, sizeof op->to);
        op->sent = b.sent;
        turn_add(cp->d->turn, record_delivered, delivered_done, op);
    }
    return 0;
}

/* ---- outcome pushes --------------------------------------------------------------- */

typedef struct {
    deliver_t *d;
    const char *agent;
    const session_t *only;
} outcome_ctx_t;

typedef struct {
    deliver_t *d;
    const char *agent;
    const session_t *only;
    const void *data;
    size_t len;
} outcome_push_t;

static void outcome_visit(session_t *s, void *ud)
{
    outcome_push_t *c = ud;
    if (!connected(c->d, s) || strcmp(s->agent->id, c->agent) != 0 || (c->only && c->only != s))
        return;
    (void)push_to(c->d, s, c->data, c->len); /* re-sent after hello */
}

static int push_one_outcome(void *ud, const void *msg, size_t len)
{
    outcome_ctx_t *c = ud;
    outcome_push_t p = {c->d, c->agent, c->only, msg, len};
    session_each(c->d->sessions, outcome_visit, &p);
    return 0;
}

static int push_outcomes_txn(store_txn_t *t, void *ud)
{
    outcome_ctx_t *c = ud;
    return assign_each_outcome(t, c->agent, push_one_outcome, c);
}

static void push_outcomes(deliver_t *d, const char *agent, const session_t *only)
{
    outcome_ctx_t c = {d, agent, only};
    (void)store_read(d->store, push_outcomes_txn, &c); /* a failed read is logged there */
}

/* ---- webhooks ------------------------------------------------------------------------ */

typedef struct {
    deliver_t *d;
    const char *id;
} submit_ctx_t;

static int submit_txn(store_txn_t *t, void *ud)
{
    submit_ctx_t *c = ud;
    char channel[CAREHUB_ID_MAX + 1];
    char *body = NULL;
    int64_t created;
    int rc = assign_outbox_get(t, c->id, channel, sizeof channel, &body, &created);
    if (rc)
        return rc == STORE_NOTFOUND ? 0 : rc; /* gone: delivered, or rolled back */
    const config_channel_t *ch = config_find_channel(c->d->cfg, channel);
    if (!ch)
        log_warn("deliver: %s is for channel %s, which is no longer configured; kept in the outbox",
                 c->id, channel);
    else if (hook_submit(c->d->hook, ch, c->id, body, created) < 0)
        log_debug("deliver: %s already queued", c->id);
    free(body);
    return 0;
}

static void submit_webhook(deliver_t *d, const char *id)
{
    if (!d->hook)
        return;
    submit_ctx_t c = {d, id};
    (void)store_read(d->store, submit_txn, &c);
}

typedef struct {
    char (*ids)[CAREHUB_ID_MAX + 1];
    size_t n, cap;
} id_list_t;

static int collect_outbox(void *ud, const char *webhook_id)
{
    id_list_t *l = ud;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->ids = xrealloc(l->ids, l->cap * sizeof *l->ids);
    }
    util_fmt(l->ids[l->n++], 65, "%s", webhook_id);
    return 0;
}

static int collect_outbox_txn(store_txn_t *t, void *ud)
{
    return assign_outbox_each(t, collect_outbox, ud);
}

void deliver_resubmit_outbox(deliver_t *d)
{
    id_list_t l = {0};
    if (store_read(d->store, collect_outbox_txn, &l) == STORE_OK && l.n)
        log_info("deliver: %zu notice(s) from the outbox resubmitted", l.n);
    for (size_t i = 0; i < l.n; i++)
        submit_webhook(d, l.ids[i]);
    free(l.ids);
}

/* ---- effects ----------------------------------------------------------------------------- */

static void any_agency_visit(session_t *s, void *ud)
{
    any_ctx_t *c = ud;
    if (connected(c->d, s) && s->agent->role == ROLE_AGENCY)
        c->any = 1;
}

void deliver_effects(deliver_t *d, const assign_effects_t *fx)
{
    case_push_t cp = {d, NULL};
    any_ctx_t any = {d, NULL, NULL, 0};
    if (fx->n_deliver)
        session_each(d->sessions, any_agency_visit, &any); /* no desk connected: nothing to push */
    for (size_t i = 0; any.any && i < fx->n_deliver; i++)
        (void)push_assignment(&cp, fx->deliver[i]);
    for (size_t i = 0; i < fx->n_outcome_to; i++)
        push_outcomes(d, fx->outcome_to[i], NULL);
    for (size_t i = 0; i < fx->n_webhooks; i++)
        submit_webhook(d, fx->webhooks[i]);
    if (fx->deadlines_changed)
        d->next_due_known = 0;
    for (unsigned i = 0; i < fx->overdue_events; i++) /* committed: counted once */
        metrics_event(d->metrics, "visit_overdue");
    for (unsigned i = 0; i < fx->escalations; i++)
        metrics_escalation(d->metrics);
}

typedef struct {
    const char *agency;
    id_list_t ids;
} pend_list_t;

static int collect_pending(void *ud, const char *assignment)
{
    pend_list_t *l = ud;
    return collect_outbox(&l->ids, assignment);
}

static int collect_pending_txn(store_txn_t *t, void *ud)
{
    pend_list_t *l = ud;
    return assign_each_pending(t, l->agency, collect_pending, l);
}

static void push_pending(deliver_t *d, const char *agency, const session_t *only)
{
    pend_list_t l = {agency, {0}};
    (void)store_read(d->store, collect_pending_txn, &l);
    case_push_t cp = {d, only};
    for (size_t i = 0; i < l.ids.n; i++)
        if (!turn_unsynced(d->turn) || !turn_delivery_waits(d->turn, l.ids.ids[i]))
            (void)push_assignment(&cp, l.ids.ids[i]); /* else its turn's effects push it */
    free(l.ids.ids);
}

void deliver_on_hello(deliver_t *d, session_t *s)
{
    if (!s->agent)
        return;
    if (s->agent->role == ROLE_AGENCY && s->agent->agency)
        push_pending(d, s->agent->agency, s);
    push_outcomes(d, s->agent->id, s);
}

void deliver_on_hello_of(deliver_t *d, const unsigned char *rid, size_t rid_len)
{
    session_t *s = session_find(d->sessions, rid, rid_len);
    if (s)
        deliver_on_hello(d, s);
}

static void redeliver_outcomes(session_t *s, void *ud)
{
    deliver_t *d = ud;
    if (connected(d, s))
        push_outcomes(d, s->agent->id, s);
}

void deliver_redeliver_all(deliver_t *d)
{
    for (size_t i = 0; i < d->cfg->n_agencies; i++)
        push_pending(d, d->cfg->agencies[i].id, NULL);
    session_each(d->sessions, redeliver_outcomes, d); /* outcomes not yet `received` */
}

/* ---- deadlines ---------------------------------------------------------------------------- */

static int next_due_txn(store_txn_t *t, void *ud)
{
    return assign_next_due(t, ud);
}

int64_t deliver_next_due(deliver_t *d)
{
    if (!d->next_due_known) {
        int64_t due = INT64_MAX;
        if (store_read(d->store, next_due_txn, &due) == STORE_OK) {
            d->next_due = due;
            d->next_due_known = 1;
        } else {
            return clock_now_ms() + 1000; /* try again in a second */
        }
    }
    return d->next_due;
}

typedef struct {
    deliver_t *d;
    int64_t now;
    size_t max;   /* steps to fire in this turn at most */
    size_t fired;
} fire_op_t;

static int fire_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    fire_op_t *c = ud;
    c->fired = 0;
    return assign_fire_due(c->d->cfg, t, c->now, c->max, &c->fired, fx);
}

static void fire_done(void *ud, store_rc_t rc)
{
    fire_op_t *c = ud;
    deliver_t *d = c->d;
    d->fire_queued = 0;
    d->next_due_known = 0;
    if (rc != STORE_OK) {
        log_error("deliver: escalations could not be recorded (%s); retrying in a second",
                  store_strerror(rc));
        d->next_due = c->now + 1000;
        d->next_due_known = 1;
    } else if (c->fired) { /* one line a turn, not one a step (each is in the trail) */
        log_info("deliver: %zu deadline step%s fired (escalations, quiet closes, purges)",
                 c->fired, c->fired == 1 ? "" : "s");
    }
    free(c);
}

void deliver_fire_due(deliver_t *d, int64_t now, int all)
{
    if (deliver_next_due(d) > now || (d->fire_queued && !all))
        return;
    fire_op_t *c = xcalloc(1, sizeof *c);
    c->d = d;
    c->now = now;
    c->max = all ? FIRE_ALL_MAX : FIRE_BATCH;
    d->fire_queued = 1;
    turn_add(d->turn, fire_fn, fire_done, c);
}

int deliver_fire_pending(const deliver_t *d)
{
    return d->fire_queued;
}

/* ---- webhook engine callbacks -------------------------------------------------------------- */

typedef struct {
    deliver_t *d;
    char id[CAREHUB_ID_MAX + 1];
    int delivered, attempts;
    char *error;
} done_op_t;

static int done_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    done_op_t *c = ud;
    return assign_outbox_done(c->d->cfg, t, c->id, c->delivered, c->attempts, c->error,
                              clock_now_ms(), fx);
}

static void done_done(void *ud, store_rc_t rc)
{
    done_op_t *c = ud;
    if (rc != STORE_OK)
        log_error("deliver: could not record the end of %s (%s); it stays in the outbox", c->id,
                  store_strerror(rc));
    free(c->error);
    free(c);
}

/* The engine is done with a notice: its end is written in this turn. */
void deliver_webhook_done(void *ud, const char *webhook_id, hook_outcome_t outcome, int attempts,
                          const char *last_error)
{
    deliver_t *d = ud;
    if (outcome == HOOK_FAILED)
        metrics_webhook_failed(d->metrics);
    done_op_t *c = xcalloc(1, sizeof *c);
    c->d = d;
    util_fmt(c->id, sizeof c->id, "%s", webhook_id);
    c->delivered = outcome == HOOK_DELIVERED;
    c->attempts = attempts;
    c->error = last_error ? xstrdup(last_error) : NULL;
    turn_add(d->turn, done_fn, done_done, c);
}

void deliver_webhook_attempt(void *ud, const char *webhook_id, int attempt, long http_status,
                             const char *error)
{
    deliver_t *d = ud;
    metrics_webhook_attempt(d->metrics, http_status >= 200 && http_status < 300);
    log_debug("deliver: %s attempt %d: %s%s%ld", webhook_id, attempt, error && *error ? error : "",
             error && *error ? ", HTTP " : "HTTP ", http_status);
}
