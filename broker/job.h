/*
 * job.h — long reads off the loop: a job runs in a thread of its own and its
 * result comes back to the loop.
 *
 * A supervisor's `query what:"verify"` walks the whole trail and every
 * record; on a large store that takes seconds, which the loop cannot spend.
 * job_start() runs `work(ud)` in a new thread; when it returns, the thread
 * writes a byte to a pipe the loop polls (job_fd()), and job_collect() runs
 * `done(ud)` in the loop thread, where replies may be sent.
 *
 * What `work` may do: read the store through store_read() (a read-only LMDB
 * transaction; the store holds off growing its map while one is open, see
 * store.h) and nothing else of the loop's state. Jobs are few (JOB_MAX at
 * once); job_start() refuses more.
 */
#ifndef CAREHUB_JOB_H
#define CAREHUB_JOB_H

/* At most this many jobs at once. */
#define JOB_MAX 2

typedef struct job_set job_set_t;

job_set_t *job_set_new(void);
/* Waits for running jobs, runs their `done`, frees; nulls *js. */
void job_set_destroy(job_set_t **js);

/* Start work(ud) in a thread; done(ud) runs later from job_collect(). 0, or -1
 * when JOB_MAX jobs run already or no thread could be started (nothing runs). */
int job_start(job_set_t *js, void (*work)(void *ud), void (*done)(void *ud), void *ud);

/* Jobs running or waiting to be collected. */
int job_running(const job_set_t *js);

/* The descriptor to poll (readable when a job finished), and what to call then. */
int job_fd(const job_set_t *js);
void job_collect(job_set_t *js);

#endif
