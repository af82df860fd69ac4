/*
 * fuzz_csv.c — libFuzzer target for agents/lib/csv.c, the reader of
 * spreadsheet and school-system exports (carehub-school).
 *
 * The first input byte picks the separator and small limits, so the caps
 * (max_field, max_fields, max_record) are reached by short inputs; the rest
 * is read through fmemopen() until CSV_EOF. Every record's fields are checked
 * against what csv.h promises: NUL-terminated, csv_field_len() == strlen(),
 * no more than max_fields, none longer than max_field.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char seps[4] = {0, ',', ';', '\t'};
    csv_limits_t lim;
    memset(&lim, 0, sizeof lim);
    uint8_t ctl = data[0];
    lim.separator = seps[ctl & 3];
    if (ctl & 4) {
        lim.max_field = 1 + ((ctl >> 3) & 7) * 4;  /* 1..29 */
        lim.max_fields = 1 + ((ctl >> 6) & 3) * 2; /* 1..7 */
        lim.max_record = 64;
    }
    data++;
    size--;

    /* fmemopen refuses a zero-length buffer on some libcs: copy with a spare byte. */
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    FILE *f = size ? fmemopen(buf, size, "rb") : fopen("/dev/null", "rb");
    if (!f) {
        free(buf);
        return 0;
    }
    size_t max_fields = lim.max_fields ? lim.max_fields : 256;
    size_t max_field = lim.max_field ? lim.max_field : 65536;

    csv_reader_t *r = csv_new(f, (ctl & 4) ? &lim : NULL);
    long last_line = 0;
    /* every record, good or bad, consumes at least one byte: size + 1 calls reach CSV_EOF */
    for (size_t calls = 0;; calls++) {
        if (calls > size + 1)
            abort();
        int rc = csv_next(r);
        if (rc == CSV_EOF || rc == CSV_IOERR)
            break;
        long line = csv_line(r);
        if (line < 1 || line < last_line)
            abort();
        last_line = line;
        if (rc == CSV_BAD) {
            const char *e = csv_error(r);
            if (!e || !*e)
                abort();
            continue;
        }
        if (rc != CSV_RECORD)
            abort();
        size_t n = csv_count(r);
        if (n > max_fields)
            abort();
        for (size_t i = 0; i <= n; i++) {
            const char *fld = csv_field(r, i);
            size_t fl = csv_field_len(r, i);
            if (!fld || strlen(fld) != fl)
                abort();
            if (i == n && fl != 0)
                abort(); /* past the last field: "" */
            if (fl > max_field)
                abort();
            (void)util_utf8_valid(fld, fl);
        }
    }
    csv_destroy(&r);
    csv_destroy(&r);
    fclose(f);
    free(buf);
    return 0;
}
