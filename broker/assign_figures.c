/*
 * assign_figures.c — the figures metrics read without a scan: the count of
 * assignments not final and the ack_due index of the unacknowledged, kept as
 * states change, read by assign_gauges, built once for a store from before them.
 */
#include "assign.h"

#include <string.h>

#include "log.h"

#include "assign_int.h"

#define OPEN_COUNTER "assignments.open"

/* ack_due key: ack_by (8 bytes big-endian) + the assignment id, laid out as a
 * deadline key. */
int assign_ack_due_put(store_txn_t *t, const as_t *a, int del)
{
    unsigned char k[8 + ID_LEN];
    if (8 + strlen(a->id) > sizeof k)
        return STORE_BADVALUE;
    size_t kl = assign_deadline_key(k, a->ack_by, a->id);
    return del ? store_del(t, STORE_DB_ACK_DUE, k, kl, NULL, 0)
               : store_put(t, STORE_DB_ACK_DUE, k, kl, "", 0, 0);
}

/* Add d (+1, -1) to the count of assignments not final. */
int assign_open_count_add(store_txn_t *t, int d)
{
    const void *v;
    size_t vl;
    uint64_t n = 0;
    int rc = store_get(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &v, &vl);
    if (rc == 0 && vl == sizeof n)
        memcpy(&n, v, sizeof n);
    else if (rc == 0 || rc != STORE_NOTFOUND)
        return rc ? rc : STORE_CORRUPTED;
    n = d < 0 && n == 0 ? 0 : n + (uint64_t)(int64_t)d;
    return store_put(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &n, sizeof n, 0);
}

/* ---- gauges -------------------------------------------------------------- */

typedef struct {
    int64_t now;
    uint64_t overdue;
} gauge_ctx_t;

static int overdue_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    gauge_ctx_t *g = ud;
    if (kl < 8)
        return STORE_CORRUPTED;
    if (assign_deadline_due(k) >= g->now)
        return STORE_EACH_STOP; /* the rest fall due later */
    g->overdue++;
    return 0;
}

int assign_gauges(store_txn_t *t, int64_t now, uint64_t *open_, uint64_t *overdue)
{
    const void *v;
    size_t vl;
    *open_ = 0;
    int rc = store_get(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &v, &vl);
    if (rc == 0 && vl == sizeof *open_)
        memcpy(open_, v, sizeof *open_);
    else if (rc && rc != STORE_NOTFOUND)
        return rc;
    gauge_ctx_t g = {now, 0};
    rc = store_each(t, STORE_DB_ACK_DUE, NULL, 0, 0, overdue_visit, &g); /* the overdue only */
    *overdue = g.overdue;
    return rc;
}

/* ---- the figures for a store written before them ------------------------- */

typedef struct {
    store_txn_t *t;
    uint64_t open;
} figures_ctx_t;

static int figures_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    figures_ctx_t *c = ud;
    as_t a;
    int rc = assign_rec_decode(c->t, v, vl, &a);
    if (rc)
        return rc;
    if (!assign_is_final(a.state))
        c->open++;
    return a.state == AS_OPEN ? assign_ack_due_put(c->t, &a, 0) : 0;
}

static int figures_txn(store_txn_t *t, void *ud)
{
    int *built = ud;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &v, &vl);
    if (rc != STORE_NOTFOUND)
        return rc; /* there (or unreadable) */
    figures_ctx_t c = {t, 0};
    if ((rc = store_each(t, STORE_DB_ASSIGNMENTS, NULL, 0, 0, figures_visit, &c)))
        return rc;
    *built = 1;
    return store_put(t, STORE_DB_COUNTERS, OPEN_COUNTER, strlen(OPEN_COUNTER), &c.open,
                     sizeof c.open, 0);
}

int assign_figures_rebuild(store_t *st)
{
    int built = 0;
    if (store_write(st, figures_txn, &built) != STORE_OK)
        return -1;
    if (built)
        log_info("assign: open and overdue figures built from the assignments (a store from "
                 "before them)");
    return 0;
}
