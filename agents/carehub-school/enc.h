/*
 * enc.h — carehub-school's encodings: an attendance export is UTF-8 (with or
 * without a byte order mark) or GB18030/GBK, as Chinese spreadsheet programs
 * save it. The encoding is given (--encoding) or detected from the start of
 * the file; each field is converted to UTF-8 with iconv (glibc) after the CSV
 * reader split the record, so that an undecodable byte spoils only its row.
 *
 * The CSV reader works on the raw bytes: CR, LF, the quote and the separators
 * , ; and tab never occur inside a GB18030 character (its second and fourth
 * bytes are 0x30-0x39, 0x40-0x7E or 0x80-0xFE), so records split the same as
 * after a conversion. enc_separator_ok() refuses a separator that could.
 */
#ifndef CAREHUB_SCHOOL_ENC_H
#define CAREHUB_SCHOOL_ENC_H

#include <stddef.h>
#include <stdio.h>

typedef enum { ENC_AUTO = 0, ENC_UTF8, ENC_GB18030, ENC_GBK } enc_t;

/* How much of the start of a file the detection looks at. */
#define ENC_DETECT_BYTES (1024u * 1024u)

/* "utf-8", "utf8", "gb18030", "gbk" (any case) -> *out; 0, or -1 when unknown. */
int enc_parse(const char *name, enc_t *out);
/* "UTF-8", "GB18030", "GBK" ("auto" for ENC_AUTO). */
const char *enc_name(enc_t e);
/* The encoding of a file that starts with p[0..n) (the whole file when at_eof):
 * UTF-8 when it starts with a UTF-8 byte order mark, when it is all valid UTF-8,
 * or when its valid multi-byte UTF-8 characters are at least four times its
 * invalid bytes (a UTF-8 export with a stray bad row; GB18030 text has about one
 * valid-looking UTF-8 sequence in six characters); GB18030 otherwise. */
enc_t enc_detect(const unsigned char *p, size_t n, int at_eof);
/* Read up to ENC_DETECT_BYTES of f, detect its encoding into *enc and return a
 * stream that reads those bytes and then the rest of f (f is not closed by it).
 * NULL on a read error (errno set). */
FILE *enc_detect_stream(FILE *f, enc_t *enc);
/* 1 when sep cannot be a byte inside a character of e. */
int enc_separator_ok(enc_t e, char sep);

typedef struct enc_conv enc_conv_t;
/* A converter from e to UTF-8; NULL (errno set) when iconv cannot make one. */
enc_conv_t *enc_conv_new(enc_t e);
void enc_conv_free(enc_conv_t **c);
/* in[0..len) (no NUL inside) as a new UTF-8 string (free it); NULL with why[]
 * ("byte 0x80 at byte 3 is not GB18030") when it cannot be decoded. */
char *enc_to_utf8(enc_conv_t *c, const char *in, size_t len, char *why, size_t whylen);

#endif
