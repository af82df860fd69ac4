/*
 * csv.h — a small RFC 4180 reader for files people export from spreadsheets
 * and school systems (carehub-school reads attendance exports with it).
 *
 * What it accepts:
 *  - fields separated by one byte (',' by default; ';' and '\t' are common
 *    in exports), records ended by LF, CRLF or the end of the file;
 *  - quoted fields ("…") that may hold the separator, CR, LF and doubled
 *    quotes ("" for one ");
 *  - a UTF-8 byte order mark at the very start (Excel writes one); it is
 *    dropped;
 *  - blank lines, which are skipped.
 *
 * What it refuses, one record at a time (csv_next() returns CSV_BAD with a
 * sentence in csv_error(); the reader then continues with the next line):
 *  - a NUL byte anywhere in a record;
 *  - a quote inside an unquoted field, or anything but a separator or the end
 *    of the line after a closing quote;
 *  - a field longer than max_field bytes, a record with more than max_fields
 *    fields, or a record longer than max_record bytes in all;
 *  - a quoted field still open at the end of the file.
 * No input makes it crash or grow without bound: every buffer is capped.
 *
 * Bytes are passed through: checking that a field is valid UTF-8 is the
 * caller's business (util_utf8_valid() in common/util.h helps).
 */
#ifndef CAREHUB_CSV_H
#define CAREHUB_CSV_H

#include <stddef.h>
#include <stdio.h>

typedef struct csv_reader csv_reader_t;

enum {
    CSV_EOF = 0,     /* no more records */
    CSV_RECORD = 1,  /* a record was read: csv_count()/csv_field() */
    CSV_BAD = -1,    /* a malformed record was skipped: csv_error() says why */
    CSV_IOERR = -2,  /* reading the file failed (errno is set): stop */
};

typedef struct {
    char separator;     /* ',' when 0 */
    size_t max_field;   /* bytes per field; 65536 when 0 */
    size_t max_fields;  /* fields per record; 256 when 0 */
    size_t max_record;  /* bytes per record, all fields; 1 MiB when 0 */
} csv_limits_t;

/* A reader over `f` (not closed by the reader; read with getc). `limits` may
 * be NULL for the defaults. Never NULL (out of memory aborts). */
csv_reader_t *csv_new(FILE *f, const csv_limits_t *limits);

/* Free the reader; nulls *r; safe on NULL and twice. */
void csv_destroy(csv_reader_t **r);

/* Read the next record: CSV_RECORD, CSV_EOF, CSV_BAD or CSV_IOERR. */
int csv_next(csv_reader_t *r);

/* The fields of the last record read. Each is NUL-terminated (fields cannot
 * hold NUL bytes) and lives until the next csv_next(). csv_field() returns ""
 * for an index past the last field. */
size_t csv_count(const csv_reader_t *r);
const char *csv_field(const csv_reader_t *r, size_t i);
size_t csv_field_len(const csv_reader_t *r, size_t i);

/* The line (1-based) on which the last record, good or bad, started. */
long csv_line(const csv_reader_t *r);

/* Why the last CSV_BAD record was refused: a sentence without the line
 * number (prefix it with csv_line()). */
const char *csv_error(const csv_reader_t *r);

/* A header cell as a column name, into out: blanks around dropped, ASCII
 * letters lower-cased, blanks and '-' inside as '_' ("Student ID" and
 * "student-id" are student_id). 0, or -1 when it does not fit in out. */
int csv_header_name(const char *cell, char *out, size_t outlen);

#endif
