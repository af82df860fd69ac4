/*
 * idkey.h — an agent's id key: its own secret behind the event ids it derives
 * from what it sends (carehub-school, carehub-director).
 *
 * An event id (its idempotency key) derived from data about a child — a
 * school's absence from school + student + date, a director's enrolment from
 * the row's content — is PREFIX + a BLAKE2b hash of those parts, keyed with 32
 * random bytes that only this agent holds. Without the key, no one who sees an
 * id (in the broker's store, its trail, a log) can find the child by trying
 * every child id; with the key, the same input sent twice still gives the same
 * ids.
 *
 * The key lives in a file of the spool (each program names it: school-id.key,
 * director-id.key), or where --id-key says, mode 0600, created on the first
 * run. Losing it changes every id from then on: what is sent again after that
 * becomes new events, not duplicates. Keep it with the spool; copy it when the
 * program moves to another machine.
 */
#ifndef CAREHUB_IDKEY_H
#define CAREHUB_IDKEY_H

#include <stddef.h>

#define IDKEY_BYTES 32

/* The key at path into key: read (a secret file: not a link, the owner's only,
 * exactly 32 bytes), or, when it does not exist and create is set, made from
 * random bytes and written 0600 (*created = 1). 0, or -1 with the reason in why
 * (a predicate following the file's name). */
int idkey_load(const char *path, int create, unsigned char key[IDKEY_BYTES], int *created,
               char *why, size_t whylen);

/*
 * prefix + lowercase hex of BLAKE2b(parts[0] NUL parts[1] NUL … parts[n-1]),
 * keyed, of (64 - strlen(prefix)) / 2 bytes (at most 32): an id of at most 64
 * characters into out[65]. The prefix (e.g. "abs:") is 0 to 56 characters.
 */
void idkey_id(const unsigned char key[IDKEY_BYTES], const char *prefix, const char *const *parts,
              size_t n, char out[65]);

#endif
