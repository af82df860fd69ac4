/*
 * csv.c — RFC 4180 reader with hard caps (see csv.h).
 *
 * One record is parsed by a four-state machine over getc(); the fields are
 * packed one after the other, NUL-terminated, into one buffer that grows up
 * to max_record bytes. A malformed record is skipped up to the end of its
 * physical line so that one bad row never hides the rows after it.
 */
#include "csv.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CSV_DEFAULT_MAX_FIELD  65536u
#define CSV_DEFAULT_MAX_FIELDS 256u
#define CSV_DEFAULT_MAX_RECORD (1024u * 1024u)

struct csv_reader {
    FILE *f;            /* the input; not ours */
    csv_limits_t lim;   /* caps, defaults filled in */
    char *buf;          /* the record's fields, each NUL-terminated */
    size_t len;         /* bytes used in buf */
    size_t cap;         /* bytes allocated in buf (<= max_record + 1) */
    size_t *start;      /* offset of each field in buf (max_fields entries) */
    size_t *flen;       /* length of each field */
    size_t nfields;     /* fields of the current record */
    long line;          /* the physical line being read, 1-based */
    long rec_line;      /* the line the current record started on */
    int bom_checked;    /* the start of the file was looked at for a BOM */
    int push[4];        /* bytes pushed back (read again before the file) */
    int npush;
    char err[256];      /* why the last record was refused */
};

enum { ST_FIELD_START, ST_UNQUOTED, ST_QUOTED, ST_QUOTE_SEEN };

csv_reader_t *csv_new(FILE *f, const csv_limits_t *limits)
{
    csv_reader_t *r = xcalloc(1, sizeof *r);
    r->f = f;
    if (limits)
        r->lim = *limits;
    if (!r->lim.separator)
        r->lim.separator = ',';
    if (!r->lim.max_field)
        r->lim.max_field = CSV_DEFAULT_MAX_FIELD;
    if (!r->lim.max_fields)
        r->lim.max_fields = CSV_DEFAULT_MAX_FIELDS;
    if (!r->lim.max_record)
        r->lim.max_record = CSV_DEFAULT_MAX_RECORD;
    r->start = xcalloc(r->lim.max_fields, sizeof *r->start);
    r->flen = xcalloc(r->lim.max_fields, sizeof *r->flen);
    r->cap = 256;
    r->buf = xmalloc(r->cap);
    r->line = 1;
    return r;
}

void csv_destroy(csv_reader_t **rp)
{
    if (!rp || !*rp)
        return;
    csv_reader_t *r = *rp;
    free(r->buf);
    free(r->start);
    free(r->flen);
    free(r);
    *rp = NULL;
}

static int rd(csv_reader_t *r)
{
    if (r->npush > 0)
        return r->push[--r->npush];
    return getc(r->f);
}

static void unrd(csv_reader_t *r, int c)
{
    if (c != EOF && r->npush < (int)(sizeof r->push / sizeof r->push[0]))
        r->push[r->npush++] = c;
}

/* Drop a UTF-8 byte order mark at the very start of the file. */
static void skip_bom(csv_reader_t *r)
{
    r->bom_checked = 1;
    int a = rd(r);
    if (a != 0xEF) {
        unrd(r, a);
        return;
    }
    int b = rd(r);
    if (b != 0xBB) {
        unrd(r, b);
        unrd(r, a);
        return;
    }
    int c = rd(r);
    if (c != 0xBF) {
        unrd(r, c);
        unrd(r, b);
        unrd(r, a);
    }
}

static void set_err(csv_reader_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(csv_reader_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
}

/* Consume the rest of a line ended by `c` (CR, LF or EOF): a CR may be
 * followed by its LF. */
static void end_line(csv_reader_t *r, int c)
{
    if (c == '\r') {
        int n = rd(r);
        if (n != '\n')
            unrd(r, n);
        r->line++;
    } else if (c == '\n') {
        r->line++;
    }
}

/* Skip to the end of the physical line after a malformed record; `last` is
 * the byte that was being looked at when the error was found. */
static void skip_line(csv_reader_t *r, int last)
{
    int c = last;
    while (c != EOF && c != '\n' && c != '\r')
        c = rd(r);
    end_line(r, c);
}

static int start_field(csv_reader_t *r)
{
    if (r->nfields >= r->lim.max_fields) {
        set_err(r, "the record has more than %zu fields", r->lim.max_fields);
        return -1;
    }
    r->start[r->nfields] = r->len;
    r->flen[r->nfields] = 0;
    return 0;
}

static int put(csv_reader_t *r, int c)
{
    if (r->flen[r->nfields] >= r->lim.max_field) {
        set_err(r, "field %zu is longer than %zu bytes", r->nfields + 1, r->lim.max_field);
        return -1;
    }
    if (r->len + 2 > r->lim.max_record + 1) {
        set_err(r, "the record is longer than %zu bytes", r->lim.max_record);
        return -1;
    }
    if (r->len + 2 > r->cap) {
        size_t ncap = r->cap * 2;
        if (ncap > r->lim.max_record + 1)
            ncap = r->lim.max_record + 1;
        r->buf = xrealloc(r->buf, ncap);
        r->cap = ncap;
    }
    r->buf[r->len++] = (char)c;
    r->flen[r->nfields]++;
    return 0;
}

static int end_field(csv_reader_t *r)
{
    if (r->len + 1 > r->cap) {
        r->buf = xrealloc(r->buf, r->cap + 1);
        r->cap++;
    }
    r->buf[r->len++] = '\0';
    r->nfields++;
    return 0;
}

/* Where a field may end (in unquoted text, after a closing quote): a line end
 * or EOF ends the record (CSV_RECORD, or CSV_IOERR on a read error), a
 * separator the field (FIELD_NEXT: the next one is started, or FIELD_FULL:
 * one field too many); anything else does not end it (FIELD_GOES_ON). */
enum { FIELD_GOES_ON = 2, FIELD_NEXT, FIELD_FULL };

static int field_end(csv_reader_t *r, int c, int sep)
{
    if (c == EOF || c == '\n' || c == '\r') {
        if (c == EOF && ferror(r->f))
            return CSV_IOERR;
        end_line(r, c);
        end_field(r);
        return CSV_RECORD;
    }
    if (c != sep)
        return FIELD_GOES_ON;
    end_field(r);
    return start_field(r) < 0 ? FIELD_FULL : FIELD_NEXT;
}

static int parse_record(csv_reader_t *r)
{
    const int sep = (unsigned char)r->lim.separator;
    int state = ST_FIELD_START;
    long quote_line = r->line;
    int c = 0;

    if (start_field(r) < 0)
        goto bad;
    for (;;) {
        c = rd(r);
        if (state == ST_FIELD_START) {
            if (c == '"') {
                state = ST_QUOTED;
                quote_line = r->line;
                continue;
            }
            state = ST_UNQUOTED;
        }
        if (state == ST_UNQUOTED || (state == ST_QUOTE_SEEN && c != '"')) {
            int k = field_end(r, c, sep);
            if (k == FIELD_FULL)
                goto bad;
            if (k == FIELD_NEXT) {
                state = ST_FIELD_START;
                continue;
            }
            if (k != FIELD_GOES_ON)
                return k;
        }
        switch (state) {
        case ST_UNQUOTED:
            if (c == '"') {
                set_err(r, "field %zu holds a quote but does not start with one: quote the "
                           "whole field and double the quote inside (\"\")", r->nfields + 1);
                goto bad;
            }
            if (c == 0) {
                set_err(r, "field %zu holds a NUL byte (is the file UTF-16? save it as UTF-8)",
                        r->nfields + 1);
                goto bad;
            }
            if (put(r, c) < 0)
                goto bad;
            break;
        case ST_QUOTED:
            if (c == EOF) {
                if (ferror(r->f))
                    return CSV_IOERR;
                set_err(r, "the quoted field %zu opened on line %ld is not closed before the end "
                           "of the file", r->nfields + 1, quote_line);
                return CSV_BAD;
            }
            if (c == '"') {
                state = ST_QUOTE_SEEN;
                break;
            }
            if (c == 0) {
                set_err(r, "field %zu holds a NUL byte (is the file UTF-16? save it as UTF-8)",
                        r->nfields + 1);
                goto bad;
            }
            if (c == '\n')
                r->line++;
            if (put(r, c) < 0) {
                if (c == '\n')
                    return CSV_BAD;   /* that line end is consumed already */
                goto bad;
            }
            break;
        case ST_QUOTE_SEEN:   /* a doubled quote; what ends the field is taken above */
            if (c == '"') {
                if (put(r, '"') < 0)
                    goto bad;
                state = ST_QUOTED;
                break;
            }
            set_err(r, "field %zu has text after its closing quote: a quoted field ends at the "
                       "separator or the end of the line", r->nfields + 1);
            goto bad;
        }
    }
bad:
    skip_line(r, c);
    if (c == EOF && ferror(r->f))
        return CSV_IOERR;
    return CSV_BAD;
}

int csv_next(csv_reader_t *r)
{
    if (!r->bom_checked)
        skip_bom(r);
    for (;;) {
        r->len = 0;
        r->nfields = 0;
        r->err[0] = '\0';
        r->rec_line = r->line;
        int c = rd(r);
        if (c == EOF)
            return ferror(r->f) ? CSV_IOERR : CSV_EOF;
        if (c == '\n' || c == '\r') {   /* a blank line */
            end_line(r, c);
            continue;
        }
        unrd(r, c);
        int rc = parse_record(r);
        if (rc != CSV_RECORD)
            r->nfields = 0;
        return rc;
    }
}

size_t csv_count(const csv_reader_t *r)
{
    return r->nfields;
}

const char *csv_field(const csv_reader_t *r, size_t i)
{
    return i < r->nfields ? r->buf + r->start[i] : "";
}

size_t csv_field_len(const csv_reader_t *r, size_t i)
{
    return i < r->nfields ? r->flen[i] : 0;
}

long csv_line(const csv_reader_t *r)
{
    return r->rec_line;
}

const char *csv_error(const csv_reader_t *r)
{
    return r->err[0] ? r->err : "no error";
}

int csv_header_name(const char *cell, char *out, size_t outlen)
{
    size_t n = 0;
    const char *s = cell;
    if (outlen == 0)
        return -1;
    while (*s == ' ' || *s == '\t')
        s++;
    for (; *s && n + 1 < outlen; s++) {
        char c = *s;
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        else if (c == ' ' || c == '-' || c == '\t')
            c = '_';
        out[n++] = c;
    }
    if (*s) {
        out[0] = '\0';
        return -1;
    }
    while (n > 0 && out[n - 1] == '_')
        n--;   /* trailing blanks became '_' */
    out[n] = '\0';
    return 0;
}
