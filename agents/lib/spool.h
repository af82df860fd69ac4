/*
 * spool.h — libcarehub's outbox: events waiting for the broker's answer, in an
 * LMDB environment in the spool directory (store-and-forward).
 *
 * Named databases:
 *   outbox  8-byte big-endian sequence number → record (msgpack map:
 *           {"id": str, "frame": bin (the wire message, sent as is), "tag": str?})
 *   ids     event id → 8-byte sequence number (an id is spooled at most once)
 *
 * Every write is a durable commit (the environment is opened without
 * MDB_NOSYNC/MDB_NOMETASYNC): spool_add() returns after the record is on disk.
 * The directory is locked (flock on DIR/lock) so that one process at a time
 * sends from it. Records are copied out of LMDB before a transaction ends.
 */
#ifndef CAREHUB_SPOOL_H
#define CAREHUB_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "carehub_wire.h"

typedef struct spool spool_t;

/* One record, copied out of the spool; free with spool_rec_clear(). */
typedef struct {
    uint64_t seq;      /* position in the outbox (spool order) */
    char id[CAREHUB_ID_MAX + 1];       /* the event id */
    char *frame;       /* the wire message (one msgpack map) */
    size_t frame_len;
    char *tag;         /* what the submitter stored with it, or NULL */
} spool_rec_t;

/* Open (creating DIR 0700 and the environment if missing) and lock the spool.
 * NULL on failure with a sentence in err. */
spool_t *spool_open(const char *dir, char *err, size_t errlen);

/* Close and unlock; nulls *s; safe on NULL. */
void spool_close(spool_t **s);

/* Add a record at the end of the outbox, committed durably. Returns 1 when
 * added, 0 when the id is already spooled (nothing changes), -1 on error
 * (sentence in err). */
int spool_add(spool_t *s, const char *id, const void *frame, size_t frame_len, const char *tag,
              char *err, size_t errlen);

/* Read up to max records with seq >= from, in spool order, into recs[].
 * Returns how many (0 = none left), or -1 on error. *next gets the sequence
 * number after the last record visited. A record that cannot be read
 * (damaged) is skipped, left in place and counted in *damaged. */
int spool_read(spool_t *s, uint64_t from, spool_rec_t *recs, int max, uint64_t *next,
               size_t *damaged, char *err, size_t errlen);

/* Remove the records (seq, id) given, in one durable commit. 0 or -1. */
int spool_remove(spool_t *s, const uint64_t *seqs, char (*ids)[CAREHUB_ID_MAX + 1], size_t n, char *err,
                 size_t errlen);

/* Records in the outbox. */
size_t spool_count(const spool_t *s);

void spool_rec_clear(spool_rec_t *r);

#endif
