/* job.c — long reads in threads of their own; see job.h. */
#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

typedef struct {
    job_set_t *js;
    pthread_t thread;
    int used;              /* loop: a job holds this slot (running or not yet collected) */
    atomic_int finished;   /* the thread: work returned */
    void (*work)(void *ud);
    void (*done)(void *ud);
    void *ud;
} slot_t;

struct job_set {
    int pipe[2];
    slot_t slots[JOB_MAX];
};

job_set_t *job_set_new(void)
{
    job_set_t *js = xcalloc(1, sizeof *js);
    if (pipe(js->pipe) < 0) {
        log_error("job: pipe: %s", strerror(errno));
        free(js);
        return NULL;
    }
    for (int i = 0; i < 2; i++)
        (void)fcntl(js->pipe[i], F_SETFL, fcntl(js->pipe[i], F_GETFL) | O_NONBLOCK);
    return js;
}

static void *job_main(void *arg)
{
    slot_t *s = arg;
    s->work(s->ud);
    atomic_store(&s->finished, 1);
    ssize_t w = write(s->js->pipe[1], "j", 1); /* a full pipe already wakes the loop */
    (void)w;
    return NULL;
}

int job_start(job_set_t *js, void (*work)(void *ud), void (*done)(void *ud), void *ud)
{
    slot_t *s = NULL;
    for (int i = 0; i < JOB_MAX && !s; i++)
        if (!js->slots[i].used)
            s = &js->slots[i];
    if (!s)
        return -1;
    s->js = js;
    s->work = work;
    s->done = done;
    s->ud = ud;
    atomic_store(&s->finished, 0);
    int rc = pthread_create(&s->thread, NULL, job_main, s);
    if (rc != 0) {
        log_error("job: cannot start a thread: %s", strerror(rc));
        return -1;
    }
    s->used = 1;
    return 0;
}

int job_running(const job_set_t *js)
{
    int n = 0;
    for (int i = 0; i < JOB_MAX; i++)
        n += js->slots[i].used;
    return n;
}

int job_fd(const job_set_t *js)
{
    return js ? js->pipe[0] : -1;
}

/* Join a finished (or, with wait, any) job and run its done. */
static void reap(slot_t *s, int wait)
{
    if (!s->used || (!wait && !atomic_load(&s->finished)))
        return;
    pthread_join(s->thread, NULL);
    s->used = 0;
    if (s->done)
        s->done(s->ud);
}

void job_collect(job_set_t *js)
{
    if (!js)
        return;
    char buf[64];
    while (read(js->pipe[0], buf, sizeof buf) > 0)
        ;
    for (int i = 0; i < JOB_MAX; i++)
        reap(&js->slots[i], 0);
}

void job_set_destroy(job_set_t **pjs)
{
    if (!pjs || !*pjs)
        return;
    job_set_t *js = *pjs;
    for (int i = 0; i < JOB_MAX; i++)
        reap(&js->slots[i], 1);
    close(js->pipe[0]);
    close(js->pipe[1]);
    free(js);
    *pjs = NULL;
}
