/*
 * fuzz_jsonl.c — libFuzzer target for agents/lib/jsonl.c, the line reader of
 * carehub-send and carehub-monitor.
 *
 * jsonl_open() takes a path, so each input goes to one temporary file
 * (created once) and is read without follow until JSONL_EOF. The first input
 * byte may put a long unterminated run in front of the rest, of a length
 * around JSONL_MAX_LINE, so the too-long path and its boundary are reached
 * although fuzz inputs are small. Each line is checked against jsonl.h: no
 * newline inside, at most JSONL_MAX_LINE bytes, line numbers
 * rising.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jsonl.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char path[128];
static char *filler;

static void cleanup(void)
{
    (void)unlink(path);
    (void)rmdir(dir);
    free(filler);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/carehub-fuzz-jsonl-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    snprintf(path, sizeof path, "%s/in.jsonl", dir);
    filler = malloc(JSONL_MAX_LINE + 2);
    if (!filler)
        exit(2);
    memset(filler, 'x', JSONL_MAX_LINE + 2);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* ctl & 7 == 7 → a long run first; (ctl >> 3) & 3 picks its length */
    uint8_t ctl = data[0];
    size_t run = 0;
    if ((ctl & 7) == 7) {
        static const size_t lens[4] = {JSONL_MAX_LINE - 1, JSONL_MAX_LINE, JSONL_MAX_LINE + 1,
                                       JSONL_MAX_LINE + 2};
        run = lens[(ctl >> 3) & 3];
    }
    data++;
    size--;

    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (run && fwrite(filler, 1, run, f) != run)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    if (fclose(f) != 0)
        abort();

    char err[256];
    jsonl_t *r = jsonl_open(path, 0, err, sizeof err);
    if (!r)
        abort();
    (void)jsonl_name(r);
    long last = 0;
    size_t total = run + size;
    for (size_t calls = 0;; calls++) {
        if (calls > total + 2)
            abort(); /* every line consumes at least its newline */
        const char *line = NULL;
        size_t len = 0;
        long lineno = 0;
        jsonl_rc_t rc = jsonl_next(r, &line, &len, &lineno);
        if (rc == JSONL_EOF)
            break;
        if (rc == JSONL_ERROR) {
            (void)jsonl_error(r);
            break;
        }
        if (rc == JSONL_AGAIN)
            abort(); /* never without follow on a regular file */
        if (lineno <= last)
            abort();
        last = lineno;
        if (rc == JSONL_TOOLONG)
            continue;
        if (rc != JSONL_LINE || len > JSONL_MAX_LINE || (len && !line))
            abort();
        if (len && memchr(line, '\n', len))
            abort();
    }
    jsonl_close(&r);
    jsonl_close(&r);
    return 0;
}
