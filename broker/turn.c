/* turn.c — one write transaction per loop turn; see turn.h. */
#include "turn.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* One turn's write: its ops, what they collect, and how the write went. The
 * loop fills it and hands it to the writer thread (or writes it itself). */
typedef struct {
    op_t *ops;
    size_t n;
    assign_effects_t fx; /* what the ops collected (afresh on every run) */
    long failed;         /* index of the op whose fn returned an error, -1 when none */
    int failed_rc;
    store_rc_t rc;       /* the commit's outcome */
    double seconds;      /* how long the write took (metrics) */
} run_t;

/* A committed turn waiting for the sync that makes it durable. */
typedef struct committed {
    struct committed *next;
    uint64_t no;           /* turn number (1, 2, …) */
    op_t *ops;
    size_t n;
    assign_effects_t fx;   /* what its ops collected */
} committed_t;

struct turn {
    store_t *st;
    metrics_t *metrics;
    turn_effects_fn effects;
    void *effects_ud;
    op_t *ops;
    size_t n, cap;
    /* committed, not yet synced: oldest first */
    committed_t *wait_head, *wait_tail;
    uint64_t committed_no;  /* the last committed turn's number */
    /* the syncer thread (turn_start_syncer); without it, turn_commit syncs inline */
    int threaded;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t sync_want;     /* under mu: sync every turn up to this number */
    uint64_t sync_done;     /* under mu: every turn up to this number is durable … */
    uint64_t failed_upto;   /* under mu: … unless its sync failed (turns up to this) */
    int stopping;           /* under mu */
    int pipe[2];            /* the threads write a byte after each write or sync; the loop polls [0] */
    /* the writer thread: it owns the write transaction while the loop reads on */
    pthread_t writer;
    pthread_cond_t wcv;     /* the writer waits on it for a run */
    pthread_cond_t dcv;     /* turn_flush waits on it for the writer's run to end */
    run_t *w_run;           /* under mu: handed to the writer; NULL while it is idle */
    int w_done;             /* under mu: w_run is written (its rc is set) */
    uint64_t written_no;    /* under mu: turns the writer committed */
    run_t *writing;         /* the loop's view: the run the writer has, until collected */
};


turn_t *turn_new(store_t *st)
{
    turn_t *t = xcalloc(1, sizeof *t);
    t->st = st;
    t->pipe[0] = t->pipe[1] = -1;
    return t;
}

static void write_run(turn_t *t, run_t *r);
static store_rc_t turn_commit_inline(turn_t *t);

static void *syncer_main(void *arg)
{
    turn_t *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->stopping && t->sync_want == t->sync_done)
            pthread_cond_wait(&t->cv, &t->mu);
        if (t->sync_want == t->sync_done) /* stopping, nothing left */
            break;
        uint64_t target = t->sync_want;
        pthread_mutex_unlock(&t->mu);
        int rc = store_sync(t->st); /* fdatasync: the loop writes the next turn meanwhile */
        pthread_mutex_lock(&t->mu);
        t->sync_done = target;
        if (rc != 0 && target > t->failed_upto)
            t->failed_upto = target;
        ssize_t w = write(t->pipe[1], "s", 1); /* a full pipe already wakes the loop */
        (void)w;
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* The writer: runs each turn's transaction the loop hands it, then asks the
 * syncer for the sync and tells the loop the write is over. */
static void *writer_main(void *arg)
{
    turn_t *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->stopping && (!t->w_run || t->w_done))
            pthread_cond_wait(&t->wcv, &t->mu);
        if (!t->w_run || t->w_done) /* stopping, nothing to write */
            break;
        run_t *r = t->w_run;
        pthread_mutex_unlock(&t->mu);
        write_run(t, r);
        pthread_mutex_lock(&t->mu);
        t->w_done = 1;
        if (r->rc == STORE_OK) {
            t->sync_want = ++t->written_no;
            pthread_cond_signal(&t->cv);
        }
        pthread_cond_broadcast(&t->dcv);
        ssize_t w = write(t->pipe[1], "w", 1); /* a full pipe already wakes the loop */
        (void)w;
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* The threads' lock, conditions and pipe, after the threads are joined (or
 * were never started). */
static void sync_free(turn_t *t)
{
    pthread_cond_destroy(&t->cv);
    pthread_cond_destroy(&t->wcv);
    pthread_cond_destroy(&t->dcv);
    pthread_mutex_destroy(&t->mu);
    close(t->pipe[0]);
    close(t->pipe[1]);
    t->pipe[0] = t->pipe[1] = -1;
}

int turn_start_syncer(turn_t *t)
{
    if (t->threaded)
        return 0;
    if (pipe(t->pipe) < 0) {
        log_error("turn: pipe: %s", strerror(errno));
        return -1;
    }
    for (int i = 0; i < 2; i++)
        (void)fcntl(t->pipe[i], F_SETFL, fcntl(t->pipe[i], F_GETFL) | O_NONBLOCK);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    pthread_cond_init(&t->wcv, NULL);
    pthread_cond_init(&t->dcv, NULL);
    int rc = pthread_create(&t->thread, NULL, syncer_main, t);
    if (rc == 0 && (rc = pthread_create(&t->writer, NULL, writer_main, t)) != 0) {
        pthread_mutex_lock(&t->mu);
        t->stopping = 1;
        pthread_cond_signal(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);
    }
    if (rc != 0) {
        log_error("turn: cannot start the writer and sync threads: %s", strerror(rc));
        sync_free(t);
        t->stopping = 0;
        return -1;
    }
    t->threaded = 1;
    return 0;
}

int turn_fd(const turn_t *t)
{
    return t->threaded ? t->pipe[0] : -1;
}

int turn_delivery_waits(const turn_t *t, const char *assignment)
{
    for (const committed_t *c = t->wait_head; c; c = c->next)
        for (size_t i = 0; i < c->fx.n_deliver; i++)
            if (strcmp(c->fx.deliver[i], assignment) == 0)
                return 1;
    return 0;
}

size_t turn_unsynced(const turn_t *t)
{
    size_t n = t->writing ? 1 : 0; /* being written counts: its sync is still to come */
    for (const committed_t *c = t->wait_head; c; c = c->next)
        n++;
    return n;
}

/* The dones and effects of one turn whose fate is known. */
static void complete(turn_t *t, op_t *ops, size_t n, assign_effects_t *fx, store_rc_t rc)
{
    for (size_t i = 0; i < n; i++) {
        op_t *o = &ops[i];
        store_rc_t orc = rc != STORE_OK ? rc : o->rc ? STORE_IO : STORE_OK;
        if (o->done)
            o->done(o->ud, orc);
    }
    free(ops);
    if (fx && t->effects) /* also after a failed sync: what is committed is in the store */
        t->effects(t->effects_ud, fx);
}

/* Complete the waiting turns up to `upto` (those up to `failed` with STORE_IO). */
static void complete_upto(turn_t *t, uint64_t upto, uint64_t failed)
{
    while (t->wait_head && t->wait_head->no <= upto) {
        committed_t *c = t->wait_head;
        t->wait_head = c->next;
        if (!t->wait_head)
            t->wait_tail = NULL;
        if (c->no <= failed)
            log_error("turn: turn %llu is committed but its sync failed: its operations are "
                      "answered unavailable (a retry finds what was stored)",
                      (unsigned long long)c->no);
        complete(t, c->ops, c->n, &c->fx, c->no <= failed ? STORE_IO : STORE_OK);
        assign_effects_free(&c->fx);
        free(c);
    }
}

/* A written run: committed, it waits for its sync; not, its ops are answered now. */
static void written(turn_t *t, run_t *r)
{
    if (r->rc != STORE_OK) { /* nothing of this turn exists: answer at once */
        complete(t, r->ops, r->n, NULL, r->rc);
        assign_effects_free(&r->fx);
        free(r);
        return;
    }
    metrics_commit(t->metrics, r->seconds);
    committed_t *c = xcalloc(1, sizeof *c);
    c->no = ++t->committed_no;
    c->ops = r->ops;
    c->n = r->n;
    c->fx = r->fx; /* moved */
    free(r);
    if (t->wait_tail)
        t->wait_tail->next = c;
    else
        t->wait_head = c;
    t->wait_tail = c;
}

/* The writer's run, once it is over: taken back by the loop. With `wait`, wait
 * for it to end. 1 when a run was collected. */
static int collect_written(turn_t *t, int wait)
{
    if (!t->writing)
        return 0;
    pthread_mutex_lock(&t->mu);
    while (wait && !t->w_done)
        pthread_cond_wait(&t->dcv, &t->mu);
    int done = t->w_done;
    if (done) {
        t->w_run = NULL;
        t->w_done = 0;
    }
    pthread_mutex_unlock(&t->mu);
    if (!done)
        return 0;
    run_t *r = t->writing;
    t->writing = NULL;
    written(t, r);
    return 1;
}

void turn_on_synced(turn_t *t)
{
    if (!t->threaded)
        return;
    char buf[64];
    while (read(t->pipe[0], buf, sizeof buf) > 0)
        ;
    (void)collect_written(t, 0); /* first: a run the syncer may have synced already */
    pthread_mutex_lock(&t->mu);
    uint64_t done = t->sync_done, failed = t->failed_upto;
    pthread_mutex_unlock(&t->mu);
    complete_upto(t, done, failed);
}

void turn_flush(turn_t *t)
{
    if (t->threaded)
        (void)collect_written(t, 1); /* the writer is idle from here on */
    (void)turn_commit_inline(t);
    if (!t->wait_head)
        return;
    /* Sync here (the thread may be syncing too: harmless) and complete them all. */
    uint64_t upto = t->committed_no;
    complete_upto(t, upto, store_sync(t->st) == 0 ? 0 : upto);
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
    assign_effects_clear(&r->fx); /* collected afresh on every run */
    r->failed = -1;
    for (size_t i = 0; i < r->n; i++) {
        op_t *o = &r->ops[i];
        if (!o->fn || o->rc)
            continue;
        int rc = o->fn(txn, &r->fx, o->ud);
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
    return rc == STORE_FULL || rc == STORE_MAPFULL || rc == STORE_IO;
}

/* Write one run's transaction and commit it (not synced): in the writer thread,
 * or in the loop's (turn_commit_inline). Touches only the store and the run. */
static void write_run(turn_t *t, run_t *r)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    store_rc_t rc;
    for (int rerun = 0;; rerun++) {
        rc = store_write_nosync(t->st, run_ops, r);
        if (rc == STORE_OK || r->failed < 0 || turn_wide(r->failed_rc) || rerun >= TURN_MAX_RERUNS)
            break;
        /* One op's own error: set it aside and write the others. */
        op_t *bad = &r->ops[r->failed];
        bad->rc = r->failed_rc;
        log_warn("turn: one operation failed (%s) and was set aside; writing the other %zu again",
                 store_strerror((store_rc_t)r->failed_rc), r->n - 1);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    r->rc = rc;
    r->seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

/* This turn's ops, taken: what `done`s and effects queue belongs to the next turn. */
static run_t *take_run(turn_t *t)
{
    run_t *r = xcalloc(1, sizeof *r);
    r->ops = t->ops;
    r->n = t->n;
    r->failed = -1;
    t->ops = NULL;
    t->n = t->cap = 0;
    return r;
}

/* Write and commit in this thread; sync and answer inline without the threads. */
static store_rc_t turn_commit_inline(turn_t *t)
{
    if (t->n == 0)
        return STORE_OK;
    run_t *r = take_run(t);
    write_run(t, r);
    store_rc_t rc = r->rc;
    written(t, r);
    if (rc != STORE_OK)
        return rc;
    if (!t->threaded) { /* inline: sync now, then answer */
        complete_upto(t, t->committed_no, store_sync(t->st) == 0 ? 0 : t->committed_no);
        return rc;
    }
    pthread_mutex_lock(&t->mu); /* the writer is idle: the syncer takes it from here */
    t->sync_want = ++t->written_no;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

int turn_writing(const turn_t *t)
{
    return t->writing != NULL;
}

store_rc_t turn_commit(turn_t *t)
{
    if (!t->threaded)
        return turn_commit_inline(t);
    if (t->n == 0 || t->writing)
        return STORE_OK; /* the writer is busy: these ops are its next run */
    run_t *r = take_run(t);
    t->writing = r;
    pthread_mutex_lock(&t->mu);
    t->w_run = r;
    t->w_done = 0;
    pthread_cond_signal(&t->wcv);
    pthread_mutex_unlock(&t->mu);
    return STORE_OK;
}

void turn_destroy(turn_t **pt)
{
    if (!pt || !*pt)
        return;
    turn_t *t = *pt;
    if (t->threaded) {
        (void)collect_written(t, 1);
        pthread_mutex_lock(&t->mu);
        t->stopping = 1;
        pthread_cond_signal(&t->cv);
        pthread_cond_signal(&t->wcv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->writer, NULL);
        pthread_join(t->thread, NULL);
        sync_free(t);
    }
    /* committed ones: durable once synced; queued ones: never written */
    if (t->wait_head)
        complete_upto(t, t->committed_no, store_sync(t->st) == 0 ? 0 : t->committed_no);
    for (size_t i = 0; i < t->n; i++)
        if (t->ops[i].done)
            t->ops[i].done(t->ops[i].ud, STORE_IO);
    free(t->ops);
    free(t);
    *pt = NULL;
}
