/* jsonl.c — line reader for JSON-lines input; see jsonl.h. */
#include "jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define CHUNK 65536

struct jsonl {
    char *path;        /* NULL for standard input */
    int fd;
    int follow;
    int nonblock;
    int regular;       /* fd is a regular file */
    int eof;           /* read() gave 0 (for follow: for now) */
    int skipping;      /* inside a line over the limit: drop bytes until its newline */
    char *buf;
    size_t start, end, cap;  /* unread bytes are buf[start..end) */
    off_t offset;      /* bytes of the file consumed by read() */
    long lineno;
    char err[256];
};

static int open_fd(jsonl_t *r)
{
    struct stat st;
    if (!r->path) {
        r->fd = STDIN_FILENO;
    } else {
        r->fd = open(r->path, O_RDONLY | O_CLOEXEC);
        if (r->fd < 0) {
            util_fmt(r->err, sizeof r->err, "cannot open %s: %s", r->path, strerror(errno));
            return -1;
        }
    }
    r->regular = fstat(r->fd, &st) == 0 && S_ISREG(st.st_mode);
    r->offset = 0;
    return 0;
}

jsonl_t *jsonl_open(const char *path, int follow, char *err, size_t errlen)
{
    jsonl_t *r = xcalloc(1, sizeof *r);
    r->path = path && strcmp(path, "-") != 0 ? xstrdup(path) : NULL;
    r->follow = follow;
    r->cap = CHUNK * 2;
    r->buf = xmalloc(r->cap);
    if (open_fd(r) < 0) {
        util_fmt(err, errlen, "%s", r->err);
        jsonl_close(&r);
        return NULL;
    }
    return r;
}

void jsonl_close(jsonl_t **rp)
{
    if (!rp || !*rp)
        return;
    jsonl_t *r = *rp;
    if (r->path && r->fd >= 0)
        close(r->fd);
    free(r->path);
    free(r->buf);
    free(r);
    *rp = NULL;
}

const char *jsonl_name(const jsonl_t *r)
{
    return r->path ? r->path : "-";
}

size_t jsonl_buffer_size(const jsonl_t *r)
{
    return r ? r->cap : 0;
}

const char *jsonl_error(const jsonl_t *r)
{
    return r->err;
}

void jsonl_set_nonblock(jsonl_t *r, int on)
{
    r->nonblock = on;
}

/* With follow at the end of a regular file: truncated, or replaced (rotated)?
 * Returns 1 when the reader now reads something new. */
static int follow_check(jsonl_t *r)
{
    struct stat cur, named;
    if (!r->follow || !r->regular || !r->path)
        return 0;
    if (fstat(r->fd, &cur) == 0 && cur.st_size < r->offset) {
        /* truncated: start again at the top */
        if (lseek(r->fd, 0, SEEK_SET) == 0) {
            r->offset = 0;
            r->start = r->end = 0;
            r->lineno = 0;
            r->skipping = 0;
            return 1;
        }
    }
    if (stat(r->path, &named) == 0 && (named.st_ino != cur.st_ino || named.st_dev != cur.st_dev)) {
        /* rotated: the old file is read to its end (we are at EOF); open the new one */
        int fd = open(r->path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            close(r->fd);
            r->fd = fd;
            r->offset = 0;
            r->start = r->end = 0; /* an unterminated last line of the old file is dropped */
            r->lineno = 0;
            r->skipping = 0;
            return 1;
        }
    }
    return 0;
}

/* Read more bytes: 1 got some, 0 none now (EOF for now or would block), -1 error. */
static int fill(jsonl_t *r)
{
    if (r->start > 0 && r->start == r->end)
        r->start = r->end = 0;
    if (r->start > 0 && r->end + CHUNK > r->cap) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    if (r->end + CHUNK > r->cap) {
        r->cap = r->end + CHUNK;
        r->buf = xrealloc(r->buf, r->cap);
    }
    if ((r->nonblock || r->follow) && !r->regular) {
        struct pollfd p = {r->fd, POLLIN, 0};
        int n = poll(&p, 1, 0);
        if (n == 0)
            return 0;
    }
    for (;;) {
        ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (n > 0) {
            r->end += (size_t)n;
            r->offset += n;
            r->eof = 0;
            return 1;
        }
        if (n == 0) {
            r->eof = 1;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return 0;
        util_fmt(r->err, sizeof r->err, "cannot read %s: %s", jsonl_name(r), strerror(errno));
        return -1;
    }
}

jsonl_rc_t jsonl_next(jsonl_t *r, const char **line, size_t *len, long *lineno)
{
    for (;;) {
        char *nl = r->end > r->start ? memchr(r->buf + r->start, '\n', r->end - r->start) : NULL;
        if (r->skipping) {
            if (nl) {
                r->start = (size_t)(nl - r->buf) + 1;
                r->skipping = 0;
                *lineno = r->lineno;
                return JSONL_TOOLONG;
            }
            r->start = r->end = 0;
        } else if (nl && (size_t)(nl - (r->buf + r->start)) > JSONL_MAX_LINE) {
            /* the rest of a long line arrived with its newline: still too long */
            r->start = (size_t)(nl - r->buf) + 1;
            *lineno = ++r->lineno;
            return JSONL_TOOLONG;
        } else if (nl) {
            size_t n = (size_t)(nl - (r->buf + r->start));
            *line = r->buf + r->start;
            r->start += n + 1;
            if (n && (*line)[n - 1] == '\r')
                n--;
            *len = n;
            *lineno = ++r->lineno;
            return JSONL_LINE;
        } else if (r->end - r->start > JSONL_MAX_LINE) {
            r->skipping = 1;
            r->lineno++;
            r->start = r->end = 0;
        }
        int f = fill(r);
        if (f < 0)
            return JSONL_ERROR;
        if (f > 0)
            continue;
        if (!r->eof)
            return JSONL_AGAIN; /* nothing readable yet (pipe) */
        if (r->follow && r->regular) {
            if (follow_check(r))
                continue;
            return JSONL_AGAIN;
        }
        /* the real end: a last line without a newline still counts */
        if (r->skipping) {
            r->skipping = 0;
            *lineno = r->lineno;
            return JSONL_TOOLONG;
        }
        if (r->end - r->start > JSONL_MAX_LINE) { /* a last line, unterminated and too long */
            r->start = r->end;
            *lineno = ++r->lineno;
            return JSONL_TOOLONG;
        }
        if (r->end > r->start) {
            size_t n = r->end - r->start;
            *line = r->buf + r->start;
            r->start = r->end;
            if (n && (*line)[n - 1] == '\r')
                n--;
            *len = n;
            *lineno = ++r->lineno;
            return JSONL_LINE;
        }
        return JSONL_EOF;
    }
}
