/* turn.c — one write transaction per loop turn; see turn.h. */
#include "turn.h"

#include <errno.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "util.h"

/* A turn whose ops keep failing one by one is given up after this many re-runs
 * (every op is then told STORE_IO); each re-run sets one failing op aside. */
#define TURN_MAX_RERUNS 16

typedef struct {
    turn_fn fn;
    turn_done_fn done;
    void *ud;
    int rc; /* an error of this op's own: it is set aside (not run again) */
} op_t;

struct turn {
    store_t *st;
    metrics_t *metrics;
    turn_effects_fn effects;
    void *effects_ud;
    op_t *ops;
    size_t n, cap;
    assign_effects_t fx;
};

/* What one run of the transaction sees and leaves. */
typedef struct {
    turn_t *t;
    op_t *ops;
    size_t n;
    long failed; /* index of the op whose fn returned an error, -1 when none */
    int failed_rc;
} run_t;

turn_t *turn_new(store_t *st)
{
    turn_t *t = xcalloc(1, sizeof *t);
    t->st = st;
    return t;
}

void turn_set_effects(turn_t *t, turn_effects_fn fn, void *ud)
{
    t->effects = fn;
    t->effects_ud = ud;
}

void turn_set_metrics(turn_t *t, metrics_t *m)
{
    t->metrics = m;
}

void turn_add(turn_t *t, turn_fn fn, turn_done_fn done, void *ud)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->ops = xrealloc(t->ops, t->cap * sizeof *t->ops);
    }
    t->ops[t->n++] = (op_t){fn, done, ud, 0};
}

size_t turn_pending(const turn_t *t)
{
    return t->n;
}

static int run_ops(store_txn_t *txn, void *ud)
{
    run_t *r = ud;
    assign_effects_clear(&r->t->fx); /* collected afresh on every run */
    r->failed = -1;
    for (size_t i = 0; i < r->n; i++) {
        op_t *o = &r->ops[i];
        if (!o->fn || o->rc)
            continue;
        int rc = o->fn(txn, &r->t->fx, o->ud);
        if (rc) {
            r->failed = (long)i;
            r->failed_rc = rc;
            return rc;
        }
    }
    return 0;
}

/* An error that belongs to the whole transaction (space, I/O), not to one op's
 * records: setting the op aside would not help the others. */
static int turn_wide(int rc)
{
    return rc == MDB_MAP_FULL || rc == ENOSPC || rc == EIO || rc == MDB_TXN_FULL ||
           rc == MDB_BAD_TXN || rc == ENOMEM;
}

store_rc_t turn_commit(turn_t *t)
{
    if (t->n == 0)
        return STORE_OK;
    /* Take this turn's ops: what done/effects queue belongs to the next turn. */
    run_t r = {t, t->ops, t->n, -1, 0};
    t->ops = NULL;
    t->n = t->cap = 0;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    store_rc_t rc;
    for (int rerun = 0;; rerun++) {
        rc = store_write(t->st, run_ops, &r);
        if (rc == STORE_OK || r.failed < 0 || turn_wide(r.failed_rc) || rerun >= TURN_MAX_RERUNS)
            break;
        /* One op's own error: set it aside and write the others. */
        op_t *bad = &r.ops[r.failed];
        bad->rc = r.failed_rc;
        log_warn("turn: one operation failed (%s) and was set aside; writing the other %zu again",
                 mdb_strerror(r.failed_rc), r.n - 1);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc == STORE_OK)
        metrics_commit(t->metrics,
                       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);

    for (size_t i = 0; i < r.n; i++) {
        op_t *o = &r.ops[i];
        store_rc_t orc = rc != STORE_OK ? rc : o->rc ? STORE_IO : STORE_OK;
        if (o->done)
            o->done(o->ud, orc);
    }
    free(r.ops);
    if (rc == STORE_OK && t->effects)
        t->effects(t->effects_ud, &t->fx);
    assign_effects_clear(&t->fx);
    return rc;
}

void turn_destroy(turn_t **pt)
{
    if (!pt || !*pt)
        return;
    turn_t *t = *pt;
    for (size_t i = 0; i < t->n; i++)
        if (t->ops[i].done)
            t->ops[i].done(t->ops[i].ud, STORE_IO);
    free(t->ops);
    assign_effects_free(&t->fx);
    free(t);
    *pt = NULL;
}
