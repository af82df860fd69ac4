/*
 * exec.h — carehub-agency's `--exec CMD`: `/bin/sh -c CMD` for each new
 * assignment, the `case` message as JSON on its standard input and
 * CAREHUB_ASSIGNMENT, CAREHUB_CASE, CAREHUB_AGENCY, CAREHUB_SEVERITY and
 * CAREHUB_ACK_BY in its environment. Commands run beside the loop (fork,
 * reaped as they finish), at most MAX_CHILDREN at a time (more wait in a
 * queue), and get SIGTERM after timeout_ms, SIGKILL KILL_GRACE_MS later.
 */
#ifndef CAREHUB_AGENCY_EXEC_H
#define CAREHUB_AGENCY_EXEC_H

#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "carehub_wire.h"

#define MAX_CHILDREN 8                  /* --exec commands running at once */
#define KILL_GRACE_MS 5000              /* SIGTERM, then SIGKILL after this */

typedef struct job {
    struct job *next;
    char *json;             /* the case message */
    char assignment[CAREHUB_ID_MAX + 1], case_id[CAREHUB_ID_MAX + 1], agency[CAREHUB_ID_MAX + 1], severity[16];
    int64_t ack_by;
} job_t;

typedef struct {
    pid_t pid;              /* 0 = free slot */
    char assignment[CAREHUB_ID_MAX + 1];
    int64_t started;        /* mono ms */
    int64_t term_at;        /* when SIGTERM was sent, 0 = not yet */
} child_t;

typedef struct {
    const char *cmd;        /* --exec */
    int timeout_ms;         /* --exec-timeout */
    int stdout_to_stderr;   /* with --json, keep stdout for the JSON lines */
    child_t kids[MAX_CHILDREN];
    job_t *head, *tail;     /* waiting for a free slot */
} execer_t;

/* Queue the case message m (its JSON text json) for a command; starts it at
 * once when a slot is free. */
void exec_queue(execer_t *ex, const json_t *m, const char *json);
/* Reap the commands that ended, stop those past their time, start queued ones. */
void exec_reap(execer_t *ex);
/* Commands running or waiting. */
int exec_running(const execer_t *ex);
void job_free(job_t *j);

#endif
