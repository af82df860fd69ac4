/*
 * exec.c — carehub-agency's `--exec`; see exec.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "exec.h"
#include "cli.h"
#include "util.h"

extern char **environ;

void job_free(job_t *j)
{
    free(j->json);
    free(j);
}

/* The environment of a command: ours plus the CAREHUB_* variables of the job. */
static char **job_env(const job_t *j)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **env = xcalloc(n + 6, sizeof *env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "CAREHUB_ASSIGNMENT=", 19) && strncmp(environ[i], "CAREHUB_CASE=", 13) &&
            strncmp(environ[i], "CAREHUB_AGENCY=", 15) && strncmp(environ[i], "CAREHUB_SEVERITY=", 17) &&
            strncmp(environ[i], "CAREHUB_ACK_BY=", 15))
            env[k++] = xstrdup(environ[i]);
    char buf[128];
    util_fmt(buf, sizeof buf, "CAREHUB_ASSIGNMENT=%s", j->assignment);
    env[k++] = xstrdup(buf);
    util_fmt(buf, sizeof buf, "CAREHUB_CASE=%s", j->case_id);
    env[k++] = xstrdup(buf);
    util_fmt(buf, sizeof buf, "CAREHUB_AGENCY=%s", j->agency);
    env[k++] = xstrdup(buf);
    util_fmt(buf, sizeof buf, "CAREHUB_SEVERITY=%s", j->severity);
    env[k++] = xstrdup(buf);
    util_fmt(buf, sizeof buf, "CAREHUB_ACK_BY=%lld", (long long)j->ack_by);
    env[k++] = xstrdup(buf);
    env[k] = NULL;
    return env;
}

static void env_free(char **env)
{
    for (size_t i = 0; env && env[i]; i++)
        free(env[i]);
    free(env);
}

/* Start the job in slot k: 0, or -1 (message printed; the job is dropped). */
static int job_start(execer_t *ex, child_t *slot, const job_t *j)
{
    /* The message goes through an unlinked temporary file, not a pipe: a
     * command that does not read its input can never block the loop. */
    FILE *tmp = tmpfile();
    if (!tmp) {
        cli_err("--exec: no temporary file for assignment %s: %s", j->assignment, strerror(errno));
        return -1;
    }
    if (fputs(j->json, tmp) < 0 || fputc('\n', tmp) < 0 || fflush(tmp) != 0 ||
        lseek(fileno(tmp), 0, SEEK_SET) < 0) {
        cli_err("--exec: cannot write the temporary file for assignment %s: %s", j->assignment,
                strerror(errno));
        fclose(tmp);
        return -1;
    }
    char **env = job_env(j);
    char *const argv[] = {"sh", "-c", (char *)ex->cmd, NULL};
    int tfd = fileno(tmp);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        /* only async-signal-safe calls from here to execve */
        signal(SIGPIPE, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        setpgid(0, 0);   /* its own group: a timeout stops the whole pipeline */
        if (dup2(tfd, STDIN_FILENO) < 0)
            _exit(126);
        if (ex->stdout_to_stderr && dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
            _exit(126);
        execve("/bin/sh", argv, env);
        _exit(127);
    }
    int e = errno;
    fclose(tmp);
    env_free(env);
    if (pid < 0) {
        cli_err("--exec: cannot start a process for assignment %s: %s", j->assignment, strerror(e));
        return -1;
    }
    (void)setpgid(pid, pid);   /* also from here, whoever runs first; EACCES after exec is fine */
    slot->pid = pid;
    slot->started = util_mono_ms();
    slot->term_at = 0;
    util_fmt(slot->assignment, sizeof slot->assignment, "%s", j->assignment);
    return 0;
}

/* Start queued jobs in free slots. */
static void exec_pump(execer_t *ex)
{
    for (int k = 0; k < MAX_CHILDREN && ex->head; k++) {
        if (ex->kids[k].pid)
            continue;
        job_t *j = ex->head;
        ex->head = j->next;
        if (!ex->head)
            ex->tail = NULL;
        (void)job_start(ex, &ex->kids[k], j);
        job_free(j);
    }
}

/* Reap finished commands, stop the ones over time. */
void exec_reap(execer_t *ex)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int k = 0; k < MAX_CHILDREN; k++) {
            child_t *ch = &ex->kids[k];
            if (ch->pid != pid)
                continue;
            if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
                cli_err("--exec for assignment %s exited with status %d", ch->assignment,
                        WEXITSTATUS(st));
            else if (WIFSIGNALED(st))
                cli_err("--exec for assignment %s was ended by signal %d%s", ch->assignment,
                        WTERMSIG(st), ch->term_at ? " (over --exec-timeout)" : "");
            ch->pid = 0;
        }
    }
    int64_t now = util_mono_ms();
    for (int k = 0; k < MAX_CHILDREN; k++) {
        child_t *ch = &ex->kids[k];
        if (!ch->pid)
            continue;
        if (!ch->term_at && now - ch->started >= ex->timeout_ms) {
            cli_err("--exec for assignment %s has run %d s: stopping it", ch->assignment,
                    ex->timeout_ms / 1000);
            (void)kill(-ch->pid, SIGTERM);
            (void)kill(ch->pid, SIGTERM);
            ch->term_at = now;
        } else if (ch->term_at && now - ch->term_at >= KILL_GRACE_MS) {
            (void)kill(-ch->pid, SIGKILL);
            (void)kill(ch->pid, SIGKILL);
        }
    }
    exec_pump(ex);
}

int exec_running(const execer_t *ex)
{
    int n = 0;
    for (int k = 0; k < MAX_CHILDREN; k++)
        n += ex->kids[k].pid != 0;
    return n;
}

void exec_queue(execer_t *ex, const json_t *m, const char *json)
{
    job_t *j = xcalloc(1, sizeof *j);
    j->json = xstrdup(json);
    util_fmt(j->assignment, sizeof j->assignment, "%s", cli_json_str(m, "id", ""));
    util_fmt(j->case_id, sizeof j->case_id, "%s", cli_json_str(m, "case", ""));
    util_fmt(j->agency, sizeof j->agency, "%s", cli_json_str(m, "agency", ""));
    util_fmt(j->severity, sizeof j->severity, "%s", cli_json_str(m, "severity", ""));
    json_t *ab = json_object_get(m, "ack_by");
    j->ack_by = json_is_integer(ab) ? json_integer_value(ab) : 0;
    if (ex->tail)
        ex->tail->next = j;
    else
        ex->head = j;
    ex->tail = j;
    exec_pump(ex);
}
