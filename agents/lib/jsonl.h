/*
 * jsonl.h — reading JSON-lines input line by line, with line numbers, for the
 * agent programs (carehub-send, carehub-monitor).
 *
 * A reader never blocks when `follow` or `nonblock` is set: it returns
 * JSONL_AGAIN when no complete line is there yet, so the caller can drive
 * libcarehub (carehub_poll) in between. With follow, a regular file is read
 * like `tail -F`: at its end the reader waits for more; when the file is
 * truncated it starts again from the top, and when another file appears under
 * the name (log rotation) it finishes the old one and opens the new one
 * (line numbers start again at 1).
 *
 * Lines longer than JSONL_MAX_LINE are skipped (JSONL_TOOLONG) without
 * holding them in memory.
 */
#ifndef CAREHUB_JSONL_H
#define CAREHUB_JSONL_H

#include <stddef.h>

#define JSONL_MAX_LINE (1024 * 1024)

typedef struct jsonl jsonl_t;

typedef enum {
    JSONL_LINE = 1,    /* a line (without its newline, and without a final \r) */
    JSONL_AGAIN = 0,   /* no complete line yet: try again later */
    JSONL_EOF = -1,    /* the end (never with follow on a regular file) */
    JSONL_TOOLONG = -2,/* a line over JSONL_MAX_LINE was skipped; *lineno says which */
    JSONL_ERROR = -3,  /* a read error; jsonl_error() says which */
} jsonl_rc_t;

/* Open path ("-" or NULL: standard input). NULL with a sentence in err. */
jsonl_t *jsonl_open(const char *path, int follow, char *err, size_t errlen);

/* Close (not standard input itself); nulls *r; safe on NULL. */
void jsonl_close(jsonl_t **r);

/* The next line: *line (not NUL-terminated; valid until the next call) and
 * *len, and its 1-based number in *lineno. */
jsonl_rc_t jsonl_next(jsonl_t *r, const char **line, size_t *len, long *lineno);

/* The name to report lines under: the path as given, or "-" for standard input. */
const char *jsonl_name(const jsonl_t *r);

const char *jsonl_error(const jsonl_t *r);

/* The bytes of input the reader holds (its buffer): a line over JSONL_MAX_LINE
 * is skipped, never held whole, so this stays below twice the limit. */
size_t jsonl_buffer_size(const jsonl_t *r);

/* Never block on a pipe or terminal: JSONL_AGAIN when nothing is readable. */
void jsonl_set_nonblock(jsonl_t *r, int on);

#endif
