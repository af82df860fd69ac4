/*
 * idkey.h — carehub-school's id key: the school's own secret behind its event ids.
 *
 * An absence's event id (its idempotency key) is "abs:" + a BLAKE2b hash of
 * school, student id and date, keyed with 32 random bytes that only this school
 * holds. Without the key, no one who sees an id (in the broker's store, its
 * trail, a log) can find the student by trying every student id; with the key,
 * the same export sent twice still gives the same ids.
 *
 * The key lives in SPOOL/school-id.key (or --id-key FILE), mode 0600, created
 * on the first run. Losing it changes every id from then on: rows sent again
 * after that (a day already sent) become new events, not duplicates. Keep it
 * with the spool; copy it when the program moves to another machine.
 */
#ifndef CAREHUB_SCHOOL_IDKEY_H
#define CAREHUB_SCHOOL_IDKEY_H

#include <stddef.h>

#define IDKEY_BYTES 32
#define IDKEY_FILE "school-id.key"

/* The key at path into key: read (a secret file: not a link, the owner's only,
 * exactly 32 bytes), or, when it does not exist and create is set, made from
 * random bytes and written 0600 (*created = 1). 0, or -1 with the reason in why
 * (a predicate following the file's name). */
int idkey_load(const char *path, int create, unsigned char key[IDKEY_BYTES], int *created,
               char *why, size_t whylen);

/* "abs:" + 60 hex digits of BLAKE2b-240(school NUL student NUL date), keyed. */
void idkey_absence_id(const unsigned char key[IDKEY_BYTES], const char *school,
                      const char *student, const char *date, char out[65]);

#endif
