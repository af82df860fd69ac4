/*
 * test_turn.c — broker/turn.c against a real store in a temporary directory:
 * a turn's ops run in queue order inside ONE write transaction (one LMDB
 * txn id per turn_commit); `done`s run after the commit, in order; nothing is
 * visible to another reader before the commit; an op that fails on its own is
 * set aside (its writes and effects gone, it alone told STORE_IO); a map that
 * fills is grown and every op re-run exactly once more with effects collected
 * afresh; a map at its maximum and turn-wide errors fail every op; ops queued
 * by a done or by the effects callback belong to the next turn; turn_destroy
 * tells pending ops STORE_IO; an empty turn writes nothing. With the writer
 * and sync threads (as the broker runs it): the ops run in the writer thread
 * while the caller goes on; a turn_commit() while it writes leaves the new ops
 * queued for the next turn; the dones run in the caller, after the sync; a
 * reader in the caller never sees the case-events entries of the transaction
 * the writer has not committed.
 *
 * The LMDB txn id is read through a second, read-only, lock-free handle on the
 * same data file (mdb_env_info().me_last_txnid): the broker is not changed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <lmdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "assign.h"
#include "log.h"
#include "case.h"
#include "store.h"
#include "turn.h"

/* ---- fixture ---------------------------------------------------------------- */

typedef struct {
    char dir[64];
    store_t *st;
    turn_t *t;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/carehub-turn-XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    *state = fx;
    return 0;
}

static void gate_release(void);

static int teardown(void **state)
{
    fx_t *fx = *state;
    gate_release(); /* a failed assertion left the writer at the gate: let it finish */
    turn_destroy(&fx->t);
    store_close(&fx->st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    assert_int_equal(system(cmd), 0);
    free(fx);
    return 0;
}

static void open_store(fx_t *fx, uint64_t map_size, uint64_t map_max)
{
    char err[256] = "";
    fx->st = store_open(fx->dir, map_size, map_max, err, sizeof err);
    if (!fx->st)
        fail_msg("store_open: %s", err);
    fx->t = turn_new(fx->st);
    assert_non_null(fx->t);
}

/* The id of the last committed write transaction, read from the data file's
 * meta pages through a separate read-only handle without a lock file. */
static size_t last_txnid(const fx_t *fx)
{
    MDB_env *env = NULL;
    assert_int_equal(mdb_env_create(&env), 0);
    int rc = mdb_env_open(env, fx->dir, MDB_RDONLY | MDB_NOLOCK, 0600);
    if (rc)
        fail_msg("mdb_env_open (read-only): %s", mdb_strerror(rc));
    MDB_envinfo info;
    assert_int_equal(mdb_env_info(env, &info), 0);
    mdb_env_close(env);
    return info.me_last_txnid;
}

/* ---- reading keys (the QUIET database: plain keys, not dupsort) ---------------- */

#define DB STORE_DB_QUIET

typedef struct {
    const char *key;
    char val[64];
    size_t len; /* the whole value's length */
} get_t;

static int get_fn(store_txn_t *t, void *ud)
{
    get_t *g = ud;
    const void *v;
    size_t vl;
    int rc = store_get(t, DB, g->key, strlen(g->key), &v, &vl);
    if (rc)
        return rc;
    g->len = vl;
    size_t n = vl < sizeof g->val - 1 ? vl : sizeof g->val - 1;
    memcpy(g->val, v, n);
    g->val[n] = '\0';
    return 0;
}

/* The value of key as a C string (first 63 bytes) in a fresh read transaction;
 * NULL when absent. *len gets the whole length. */
static const char *read_key(fx_t *fx, const char *key, size_t *len)
{
    static get_t g;
    memset(&g, 0, sizeof g);
    g.key = key;
    store_rc_t rc = store_read(fx->st, get_fn, &g);
    if (rc == STORE_NOTFOUND)
        return NULL;
    assert_int_equal(rc, STORE_OK);
    if (len)
        *len = g.len;
    return g.val;
}

/* ---- the ops ------------------------------------------------------------------ */

#define MAX_OPS 32

typedef struct op op_t;

typedef struct {
    fx_t *fx;
    int order[MAX_OPS]; /* indexes of the ops whose done ran, in that order */
    int n_order;
    int n_effects;      /* effects callback calls */
    int dones_at_effects; /* dones that had run when the effects callback ran */
    unsigned escalations;
    size_t n_webhooks;
    char webhook0[65];
    op_t *queue_from_effects; /* the effects callback queues this op (once) */
} log_t;

struct op {
    int idx;
    log_t *log;
    const char *key;      /* written by fn (NULL: nothing) */
    const char *val;
    size_t big;           /* >0: write a value of this many bytes instead of val */
    const char *see;      /* fn checks: this key is visible inside the transaction ... */
    const char *see_val;  /* ... with this value ... */
    int see_saw;          /* (1 when it was, on the last run) */
    int reader_saw;       /* ... and whether a separate reader sees it (on the last run) */
    int counter;          /* fn increments the value of `key` (an 8-byte counter) */
    int fail_rc;          /* fn writes, then returns this */
    unsigned fx_esc;      /* fn adds this to fx->escalations */
    const char *fx_hook;  /* fn appends this id to fx->webhooks (no dedupe: a double shows) */
    const char **after_commit; /* keys the done checks are visible (NULL-terminated) */
    int after_ok;
    op_t *queue_from_done; /* done queues this op */
    int runs;             /* fn calls */
    int dones;            /* done calls */
    store_rc_t done_rc;
};

static int reader_fn(store_txn_t *t, void *ud)
{
    const void *v;
    size_t vl;
    return store_get(t, DB, ud, strlen(ud), &v, &vl);
}

static void fx_add_hook(assign_effects_t *fx, const char *id)
{
    if (fx->n_webhooks == fx->cap_webhooks) {
        fx->cap_webhooks = fx->cap_webhooks ? fx->cap_webhooks * 2 : 4;
        fx->webhooks = realloc(fx->webhooks, fx->cap_webhooks * sizeof *fx->webhooks);
        assert_non_null(fx->webhooks);
    }
    snprintf(fx->webhooks[fx->n_webhooks++], sizeof fx->webhooks[0], "%s", id);
}

static int op_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    op_t *o = ud;
    o->runs++;
    int rc;
    if (o->see) {
        const void *v;
        size_t vl;
        rc = store_get(t, DB, o->see, strlen(o->see), &v, &vl);
        o->see_saw = rc == 0 && vl == strlen(o->see_val) && memcmp(v, o->see_val, vl) == 0;
        /* another transaction (a reader) must not see it yet */
        store_rc_t r = store_read(o->log->fx->st, reader_fn, (void *)o->see);
        o->reader_saw = r == STORE_OK;
    }
    if (o->counter) {
        const void *v;
        size_t vl;
        uint64_t n = 0;
        rc = store_get(t, DB, o->key, strlen(o->key), &v, &vl);
        if (rc == 0) {
            assert_int_equal(vl, sizeof n);
            memcpy(&n, v, sizeof n);
        } else if (rc != STORE_NOTFOUND) {
            return rc;
        }
        n++;
        if ((rc = store_put(t, DB, o->key, strlen(o->key), &n, sizeof n, 0)))
            return rc;
    } else if (o->key && o->big) {
        char *b = malloc(o->big);
        assert_non_null(b);
        memset(b, 'B', o->big);
        rc = store_put(t, DB, o->key, strlen(o->key), b, o->big, 0);
        free(b);
        if (rc)
            return rc;
    } else if (o->key) {
        if ((rc = store_put(t, DB, o->key, strlen(o->key), o->val, strlen(o->val), 0)))
            return rc;
    }
    fx->escalations += o->fx_esc;
    if (o->fx_hook)
        fx_add_hook(fx, o->fx_hook);
    return o->fail_rc;
}

static void op_done(void *ud, store_rc_t rc)
{
    op_t *o = ud;
    o->dones++;
    o->done_rc = rc;
    log_t *l = o->log;
    assert_true(l->n_order < MAX_OPS);
    l->order[l->n_order++] = o->idx;
    if (o->after_commit) {
        o->after_ok = 1;
        for (const char **k = o->after_commit; *k; k++)
            if (!read_key(l->fx, *k, NULL))
                o->after_ok = 0;
    }
    if (o->queue_from_done)
        turn_add(l->fx->t, op_fn, op_done, o->queue_from_done);
}

static void on_effects(void *ud, const assign_effects_t *fx)
{
    log_t *l = ud;
    l->n_effects++;
    l->dones_at_effects = l->n_order;
    l->escalations = fx->escalations;
    l->n_webhooks = fx->n_webhooks;
    if (fx->n_webhooks)
        snprintf(l->webhook0, sizeof l->webhook0, "%s", fx->webhooks[0]);
    if (l->queue_from_effects) {
        op_t *o = l->queue_from_effects;
        l->queue_from_effects = NULL;
        turn_add(l->fx->t, op_fn, op_done, o);
    }
}

static void init_ops(log_t *l, fx_t *fx, op_t *ops, int n)
{
    memset(l, 0, sizeof *l);
    l->fx = fx;
    memset(ops, 0, (size_t)n * sizeof *ops);
    for (int i = 0; i < n; i++) {
        ops[i].idx = i;
        ops[i].log = l;
        ops[i].done_rc = (store_rc_t)-1;
    }
    turn_set_effects(fx->t, on_effects, l);
}

static void add(fx_t *fx, op_t *o)
{
    turn_add(fx->t, op_fn, op_done, o);
}

/* An absence event from school-1 with message id `ref` about child `child`. */
static void event_of(case_event_t *e, const char *ref, const char *child)
{
    static char body[] = "\x81\xa1n\x01"; /* {"n": 1} */
    memset(e, 0, sizeof *e);
    e->agent = "school-1";
    e->ref = ref;
    e->type = "absence";
    e->at = 1000;
    e->received = 2000;
    e->child_id = child;
    e->severity = 1;
    e->body = body;
    e->body_len = sizeof body - 1;
}

/* ---- tests ---------------------------------------------------------------------- */

/* Three ops (two writing, one reply-only with fn NULL) run in order in one
 * transaction: the second sees the first's write inside it while a separate
 * reader does not; one txn id for the turn; the dones run after the commit
 * (every write visible to a reader) in queue order with STORE_OK; then the
 * effects callback, once, with what the ops collected. */
static void test_one_transaction_in_order(void **state)
{
    fx_t *fx = *state;
    open_store(fx, 1 << 20, 1 << 24);
    log_t l;
    op_t o[3];
    init_ops(&l, fx, o, 3);
    static const char *both[] = {"k-a", "k-b", NULL};
    o[0].key = "k-a";
    o[0].val = "one";
    o[0].after_commit = both;
    o[0].fx_esc = 1;
    o[1].key = "k-b";
    o[1].val = "two";
    o[1].see = "k-a";
    o[1].see_val = "one";
    o[1].after_commit = both;
    o[1].fx_esc = 10;
    o[1].fx_hook = "wh-1";
    add(fx, &o[0]);
    add(fx, &o[1]);
    turn_add(fx->t, NULL, op_done, &o[2]); /* waits for the commit only */
    o[2].after_commit = both;

    assert_int_equal(turn_pending(fx->t), 3);
    size_t id0 = last_txnid(fx);
    /* queued is not run: nothing happened yet */
    assert_int_equal(o[0].runs + o[1].runs, 0);
    assert_null(read_key(fx, "k-a", NULL));
    assert_int_equal(l.n_order, 0);

    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(last_txnid(fx), id0 + 1); /* one commit for the whole turn */
    assert_int_equal(turn_pending(fx->t), 0);

    assert_int_equal(o[0].runs, 1);
    assert_int_equal(o[1].runs, 1);
    assert_true(o[1].see_saw);     /* the first op's write, in the same transaction */
    assert_false(o[1].reader_saw); /* not yet committed */

    assert_int_equal(l.n_order, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(l.order[i], i);
        assert_int_equal(o[i].dones, 1);
        assert_int_equal(o[i].done_rc, STORE_OK);
        assert_true(o[i].after_ok); /* every write of the turn was on disk before any done */
    }
    assert_int_equal(l.n_effects, 1);
    assert_int_equal(l.dones_at_effects, 3); /* the effects after every done */
    assert_int_equal(l.escalations, 11);
    assert_int_equal(l.n_webhooks, 1);
    assert_string_equal(l.webhook0, "wh-1");
    assert_string_equal(read_key(fx, "k-a", NULL), "one");
    assert_string_equal(read_key(fx, "k-b", NULL), "two");

    /* a second turn is a second transaction, and its effects are its own */
    init_ops(&l, fx, o, 1);
    o[0].key = "k-c";
    o[0].val = "three";
    add(fx, &o[0]);
    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(last_txnid(fx), id0 + 2);
    assert_int_equal(l.n_effects, 1);
    assert_int_equal(l.escalations, 0);
    assert_int_equal(l.n_webhooks, 0);
}

/* An op whose fn fails with an error of its own (STORE_CORRUPTED, STORE_ABORTED) is set
 * aside: its writes and its effects are not in the turn, it alone is told
 * STORE_IO, the others commit (one txn id) and are told STORE_OK in order. */
static void test_failing_op_set_aside(void **state)
{
    fx_t *fx = *state;
    open_store(fx, 1 << 20, 1 << 24);
    log_t l;
    op_t o[5];
    init_ops(&l, fx, o, 5);
    const char *keys[] = {"k-0", "k-1", "k-2", "k-3", "k-4"};
    for (int i = 0; i < 5; i++) {
        o[i].key = keys[i];
        o[i].val = "v";
        o[i].fx_esc = 1;
        add(fx, &o[i]);
    }
    o[1].fail_rc = STORE_CORRUPTED;
    o[1].fx_esc = 100;
    o[1].fx_hook = "wh-bad";
    o[3].fail_rc = STORE_ABORTED;
    o[3].fx_esc = 1000;
    size_t id0 = last_txnid(fx);

    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(last_txnid(fx), id0 + 1);

    assert_int_equal(l.n_order, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(l.order[i], i);
        assert_int_equal(o[i].dones, 1);
    }
    assert_int_equal(o[0].done_rc, STORE_OK);
    assert_int_equal(o[1].done_rc, STORE_IO);
    assert_int_equal(o[2].done_rc, STORE_OK);
    assert_int_equal(o[3].done_rc, STORE_IO);
    assert_int_equal(o[4].done_rc, STORE_OK);
    /* set aside: not run again once it failed */
    assert_int_equal(o[1].runs, 1);
    assert_int_equal(o[3].runs, 1);

    assert_non_null(read_key(fx, "k-0", NULL));
    assert_null(read_key(fx, "k-1", NULL));
    assert_non_null(read_key(fx, "k-2", NULL));
    assert_null(read_key(fx, "k-3", NULL));
    assert_non_null(read_key(fx, "k-4", NULL));

    /* effects: only those of the ops that committed, each once */
    assert_int_equal(l.n_effects, 1);
    assert_int_equal(l.escalations, 3);
    assert_int_equal(l.n_webhooks, 0);
}

/* The map fills mid-turn: it is grown and every op run again; each op's writes
 * are in the store exactly once (a counter goes up by one, not two) and the
 * effects are those of one run. */
static void test_map_full_grows_and_reruns(void **state)
{
    fx_t *fx = *state;
    open_store(fx, 128 << 10, 8 << 20);
    uint64_t start = store_map_size(fx->st);
    assert_true(store_map_used(fx->st) < start);
    log_t l;
    op_t o[3];

    /* the counter starts at 1 (a turn of its own) */
    init_ops(&l, fx, o, 1);
    o[0].key = "ctr";
    o[0].counter = 1;
    add(fx, &o[0]);
    assert_int_equal(turn_commit(fx->t), STORE_OK);
    size_t id0 = last_txnid(fx);

    init_ops(&l, fx, o, 3);
    o[0].key = "ctr";
    o[0].counter = 1;
    o[0].fx_esc = 1;
    o[0].fx_hook = "wh-ctr";
    o[1].key = "big";
    o[1].big = 512 << 10; /* four times the map */
    o[2].key = "small";
    o[2].val = "s";
    o[2].fx_esc = 10;
    for (int i = 0; i < 3; i++)
        add(fx, &o[i]);
    assert_int_equal(turn_commit(fx->t), STORE_OK);

    assert_true(store_map_size(fx->st) > start); /* it grew ... */
    assert_true(o[1].runs >= 2);                 /* ... and ran the ops again */
    assert_int_equal(o[0].runs, o[1].runs);      /* every op, each time */
    assert_true(o[2].runs >= 1);
    assert_int_equal(last_txnid(fx), id0 + 1);   /* one commit */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o[i].dones, 1);
        assert_int_equal(o[i].done_rc, STORE_OK);
        assert_int_equal(l.order[i], i);
    }

    get_t g = {.key = "ctr"};
    assert_int_equal(store_read(fx->st, get_fn, &g), STORE_OK);
    uint64_t n;
    assert_int_equal(g.len, sizeof n);
    memcpy(&n, g.val, sizeof n);
    assert_int_equal(n, 2); /* +1, not +runs */
    size_t len = 0;
    assert_non_null(read_key(fx, "big", &len));
    assert_int_equal(len, 512 << 10);
    assert_string_equal(read_key(fx, "small", NULL), "s");

    assert_int_equal(l.n_effects, 1);
    assert_int_equal(l.escalations, 11); /* one run's worth */
    assert_int_equal(l.n_webhooks, 1);
    assert_string_equal(l.webhook0, "wh-ctr");
}

/* The map at its maximum: every op (also a reply-only one) is told STORE_FULL,
 * nothing of the turn is written, no effects; the next turn works. */
static void test_map_at_max_fails_every_op(void **state)
{
    fx_t *fx = *state;
    open_store(fx, 128 << 10, 128 << 10);
    log_t l;
    op_t o[4];
    init_ops(&l, fx, o, 4);
    o[0].key = "a";
    o[0].val = "1";
    o[0].fx_esc = 1;
    o[1].key = "big";
    o[1].big = 512 << 10;
    o[3].key = "c";
    o[3].val = "3";
    add(fx, &o[0]);
    add(fx, &o[1]);
    turn_add(fx->t, NULL, op_done, &o[2]);
    add(fx, &o[3]);
    size_t id0 = last_txnid(fx);

    assert_int_equal(turn_commit(fx->t), STORE_FULL);
    assert_int_equal(last_txnid(fx), id0);
    assert_int_equal(store_map_size(fx->st), 128 << 10);
    assert_int_equal(l.n_order, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(l.order[i], i);
        assert_int_equal(o[i].dones, 1);
        assert_int_equal(o[i].done_rc, STORE_FULL);
    }
    assert_null(read_key(fx, "a", NULL));
    assert_null(read_key(fx, "big", NULL));
    assert_null(read_key(fx, "c", NULL));
    assert_int_equal(l.n_effects, 0);

    /* a small turn after it commits, with only its own effects */
    init_ops(&l, fx, o, 1);
    o[0].key = "a";
    o[0].val = "1";
    add(fx, &o[0]);
    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(last_txnid(fx), id0 + 1);
    assert_int_equal(o[0].done_rc, STORE_OK);
    assert_int_equal(l.n_effects, 1);
    assert_int_equal(l.escalations, 0);
}

/* Turn-wide errors returned by an op (STORE_IO, STORE_FULL) are not set aside: every op
 * is told, nothing is written, and the good ops are not run again alone. */
static void test_turn_wide_errors_fail_every_op(void **state)
{
    fx_t *fx = *state;
    open_store(fx, 1 << 20, 1 << 24);
    static const struct {
        int rc;
        store_rc_t told;
    } cases[] = {{STORE_IO, STORE_IO}, {STORE_FULL, STORE_FULL}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        log_t l;
        op_t o[3];
        init_ops(&l, fx, o, 3);
        o[0].key = "a";
        o[0].val = "1";
        o[1].key = "b";
        o[1].val = "2";
        o[1].fail_rc = cases[c].rc;
        o[2].key = "c";
        o[2].val = "3";
        for (int i = 0; i < 3; i++)
            add(fx, &o[i]);
        size_t id0 = last_txnid(fx);
        assert_int_equal(turn_commit(fx->t), cases[c].told);
        assert_int_equal(last_txnid(fx), id0);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(o[i].dones, 1);
            assert_int_equal(o[i].done_rc, cases[c].told);
            assert_int_equal(l.order[i], i);
        }
        assert_int_equal(o[0].runs, 1);
        assert_int_equal(o[1].runs, 1);
        assert_int_equal(o[2].runs, 0);
        assert_null(read_key(fx, "a", NULL));
        assert_null(read_key(fx, "b", NULL));
        assert_null(read_key(fx, "c", NULL));
        assert_int_equal(l.n_effects, 0);
        assert_int_equal(turn_pending(fx->t), 0);
    }
}

/* Ops queued by a done, or by the effects callback, belong to the next turn:
 * after the commit they are pending, unrun, and the next commit runs them. */
static void test_ops_queued_after_commit_go_to_next_turn(void **state)
{
    fx_t *fx = *state;
    open_store(fx, 1 << 20, 1 << 24);
    log_t l;
    op_t o[4];
    init_ops(&l, fx, o, 4);
    o[0].key = "first";
    o[0].val = "1";
    o[0].queue_from_done = &o[1];
    o[1].key = "from-done";
    o[1].val = "2";
    o[1].fx_esc = 5;
    o[2].key = "from-effects";
    o[2].val = "3";
    l.queue_from_effects = &o[2];
    add(fx, &o[0]);
    size_t id0 = last_txnid(fx);

    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(last_txnid(fx), id0 + 1);
    assert_int_equal(turn_pending(fx->t), 2);
    assert_int_equal(o[1].runs + o[2].runs, 0);
    assert_int_equal(o[1].dones + o[2].dones, 0);
    assert_non_null(read_key(fx, "first", NULL));
    assert_null(read_key(fx, "from-done", NULL));
    assert_null(read_key(fx, "from-effects", NULL));
    assert_int_equal(l.n_effects, 1);
    assert_int_equal(l.escalations, 0);

    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(last_txnid(fx), id0 + 2);
    assert_int_equal(turn_pending(fx->t), 0);
    assert_int_equal(o[1].runs, 1);
    assert_int_equal(o[2].runs, 1);
    assert_int_equal(o[1].done_rc, STORE_OK);
    assert_int_equal(o[2].done_rc, STORE_OK);
    assert_int_equal(l.n_order, 3);
    assert_int_equal(l.order[1], 1); /* queue order: the done's op before the effects' one */
    assert_int_equal(l.order[2], 2);
    assert_string_equal(read_key(fx, "from-done", NULL), "2");
    assert_string_equal(read_key(fx, "from-effects", NULL), "3");
    assert_int_equal(l.n_effects, 2);
    assert_int_equal(l.escalations, 5);
}

/* turn_destroy tells every op still queued STORE_IO (in order) and runs none;
 * a done owns its ud (here: freed by it; ASan checks the leak). */
typedef struct {
    int *order;
    int *n;
    int idx;
    store_rc_t *rc;
} owned_t;

static void owned_done(void *ud, store_rc_t rc)
{
    owned_t *w = ud;
    w->order[(*w->n)++] = w->idx;
    w->rc[w->idx] = rc;
    free(w);
}

static int never_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    (void)t;
    (void)fx;
    (void)ud;
    fail_msg("an op ran at turn_destroy");
    return 0;
}

static void test_destroy_tells_pending_ops(void **state)
{
    fx_t *fx = *state;
    open_store(fx, 1 << 20, 1 << 24);
    int order[3], n = 0;
    store_rc_t rc[3] = {(store_rc_t)-1, (store_rc_t)-1, (store_rc_t)-1};
    for (int i = 0; i < 3; i++) {
        owned_t *w = malloc(sizeof *w);
        assert_non_null(w);
        *w = (owned_t){order, &n, i, rc};
        turn_add(fx->t, i == 1 ? NULL : never_fn, owned_done, w);
    }
    turn_add(fx->t, never_fn, NULL, NULL); /* done NULL is allowed */
    assert_int_equal(turn_pending(fx->t), 4);
    size_t id0 = last_txnid(fx);
    turn_destroy(&fx->t);
    assert_null(fx->t);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(order[i], i);
        assert_int_equal(rc[i], STORE_IO);
    }
    assert_int_equal(last_txnid(fx), id0);
    turn_destroy(&fx->t); /* twice: harmless */
    turn_destroy(NULL);
}

/* turn_commit with nothing queued: STORE_OK, and no write transaction. An
 * event just stored leaves a case-index entry that the next write transaction
 * writes (store.c's sweep), so even an empty transaction would show as a new
 * txn id here; the last part checks that it does. */
static void test_empty_commit_writes_nothing(void **state)
{
    fx_t *fx = *state;
    open_store(fx, 1 << 20, 1 << 24);
    case_event_t e;
    event_of(&e, "m-1", "k-1");
    assert_int_equal(case_put_events(fx->st, &e, 1, NULL, NULL), STORE_OK);
    assert_int_equal(e.status, CASE_ITEM_STORED);

    size_t id0 = last_txnid(fx);
    assert_int_equal(turn_pending(fx->t), 0);
    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(last_txnid(fx), id0);

    /* a turn with one op that writes nothing itself still commits a transaction
     * (with the pending index entry): the probe would have seen one above */
    log_t l;
    op_t o[1];
    init_ops(&l, fx, o, 1);
    turn_add(fx->t, NULL, op_done, &o[0]);
    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(o[0].done_rc, STORE_OK);
    assert_int_equal(last_txnid(fx), id0 + 1);
}


/* ---- with the writer and sync threads ------------------------------------------------ */

/* A gate the writer's op waits at, so that the test sees the writer busy. The op
 * comes first: op_done() takes the same pointer. */
typedef struct {
    op_t op;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open;
    pthread_t ran_on;
    fx_t *fx;
    int reader_listed;   /* case-events entries a read in another thread listed meanwhile */
} gate_t;

static gate_t *the_gate; /* the gate of the running test, for teardown */

static void gate_open(gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_release(void)
{
    if (the_gate)
        gate_open(the_gate);
    the_gate = NULL;
}

static int gated_fn(store_txn_t *t, assign_effects_t *fx, void *ud)
{
    (void)fx;
    gate_t *g = ud;
    g->ran_on = pthread_self();
    /* an event of a new case: its case_events entry waits in memory (pend) */
    case_event_t e;
    event_of(&e, "gated-1", "k-gated");
    int rc = case_txn_put_events(t, &e, 1, NULL, NULL);
    if (rc)
        return rc;
    pthread_mutex_lock(&g->mu);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static int count_event(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    (void)v;
    (void)vl;
    (*(int *)ud)++;
    return 0;
}

static int list_case_fn(store_txn_t *t, void *ud)
{
    return store_each_case_event(t, "case-0000000001", count_event, ud);
}

/* Poll the turn's descriptor until `done` is set (the dones run in this thread). */
static void wait_done(fx_t *fx, const int *done)
{
    for (int i = 0; i < 500 && !*done; i++) {
        struct pollfd p = {turn_fd(fx->t), POLLIN, 0};
        (void)poll(&p, 1, 10);
        turn_on_synced(fx->t);
    }
    assert_true(*done);
}

static void test_writer_thread_overlaps(void **state)
{
    fx_t *fx = *state;
    open_store(fx, 1 << 20, 1 << 24);
    assert_int_equal(turn_start_syncer(fx->t), 0);
    assert_true(turn_fd(fx->t) >= 0);
    static log_t l; /* static like the gate: teardown's dones may still use them */
    static op_t o[2];
    init_ops(&l, fx, o, 2);
    static gate_t g; /* static: a failed assertion leaves this frame, teardown opens it */
    g = (gate_t){o[0], PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, fx, 0};
    the_gate = &g;
    turn_add(fx->t, gated_fn, op_done, &g);
    size_t id0 = last_txnid(fx);
    assert_int_equal(turn_commit(fx->t), STORE_OK); /* handed over: returns at once */

    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    /* The writer is inside the transaction; this thread goes on. */
    assert_true(turn_writing(fx->t));
    assert_false(pthread_equal(g.ran_on, pthread_self()));
    assert_int_equal(turn_unsynced(fx->t), 1);
    /* a reader here does not list the uncommitted event of the writer's transaction */
    int listed = 0;
    assert_int_equal(store_read(fx->st, list_case_fn, &listed), STORE_OK);
    assert_int_equal(listed, 0);
    /* ops queued now wait for the next turn, also through turn_commit() */
    o[1].key = "next";
    o[1].val = "2";
    add(fx, &o[1]);
    assert_int_equal(turn_commit(fx->t), STORE_OK);
    assert_int_equal(turn_pending(fx->t), 1);
    assert_int_equal(o[1].runs, 0);
    assert_int_equal(g.op.dones, 0);

    gate_open(&g);
    wait_done(fx, &g.op.dones);
    assert_int_equal(g.op.done_rc, STORE_OK);
    assert_false(turn_writing(fx->t));
    assert_int_equal(last_txnid(fx), id0 + 1);
    /* committed: a reader lists the event (its entry still waits in memory) */
    listed = 0;
    assert_int_equal(store_read(fx->st, list_case_fn, &listed), STORE_OK);
    assert_int_equal(listed, 1);

    assert_int_equal(turn_commit(fx->t), STORE_OK);
    wait_done(fx, &o[1].dones);
    assert_int_equal(o[1].runs, 1);
    assert_int_equal(o[1].done_rc, STORE_OK);
    assert_string_equal(read_key(fx, "next", NULL), "2");
    assert_int_equal(last_txnid(fx), id0 + 2);
    /* turn_flush writes the index entry in this thread; the reader lists it once */
    listed = 0;
    turn_flush(fx->t);
    assert_int_equal(store_flush_index(fx->st), STORE_OK);
    assert_int_equal(store_read(fx->st, list_case_fn, &listed), STORE_OK);
    assert_int_equal(listed, 1);
    the_gate = NULL;
}

int main(void)
{
    if (!getenv("CAREHUB_LOG"))
        log_set_level(LOG_ERROR); /* the failure tests log their expected errors */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_transaction_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_op_set_aside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full_grows_and_reruns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_at_max_fails_every_op, setup, teardown),
        cmocka_unit_test_setup_teardown(test_turn_wide_errors_fail_every_op, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ops_queued_after_commit_go_to_next_turn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_destroy_tells_pending_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_commit_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_thread_overlaps, setup, teardown),
    };
    return cmocka_run_group_tests_name("turn", tests, NULL, NULL);
}
