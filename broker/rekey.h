/*
 * rekey.h — `carehubd rekey --data DIR --old-key FILE --new-key FILE`: rotate
 * the data key (privacy.key_file) of a stopped broker's store
 * (docs/backup-and-keys.md).
 *
 * Everything the data key protects is redone under the new key: the sealed
 * values (events' bodies and refs, agencies' notes, outcomes and reminders,
 * register entries, the trail's earlier keys) are opened with the old key and
 * sealed with the new one; the keyed hashes (child keys in open_cases, cases'
 * join, register and its deadlines; clients' refs in events and idem) are
 * computed anew from the values they hash, opened from the sealed copies. The
 * idem and case_events indexes are rebuilt from the events.
 *
 * The trail is kept as it was: its records up to the rekey stay chained with
 * the old key's trail key, which the new store keeps sealed under the new key
 * (trail.h, key epochs), so `verify` with the new key checks the whole chain
 * and an anchor taken before still matches. A `rekey` record names both keys'
 * fingerprints (never the keys), and each re-sealed event, case and
 * assignment gets a `resealed` record with its new hash.
 *
 * Offline and atomic: refused while any process has the store open (the LMDB
 * lock file's lock); the new store is written beside the old one in DIR.rekey,
 * verified with the new key, synced, and swapped with DIR in one rename
 * (RENAME_EXCHANGE); the old store is then removed. A crash before the swap
 * leaves DIR untouched and DIR.rekey behind; after it, DIR is the new store and
 * DIR.rekey the old one. Either way DIR.rekey is a leftover, removed by the next
 * rekey or broker start (rekey_clean_leftover).
 *
 * Test hook: CAREHUB_REKEY_KILL_AFTER=N makes rekey kill itself (SIGKILL)
 * once N records were committed to DIR.rekey, saying so on stderr first.
 */
#ifndef CAREHUB_REKEY_H
#define CAREHUB_REKEY_H

#include <stddef.h>
#include <stdint.h>

/* Exit code: a process has the store open (EX_TEMPFAIL). */
#define REKEY_BUSY 75

/* Rekey the store in data_dir from old_key to new_key (32 bytes each). A
 * BACKUP_* code (backup.h) or REKEY_BUSY, with the reason in err; the result
 * (records, time, fingerprints) is printed on stdout. */
int rekey_run(const char *data_dir, const uint8_t *old_key, const uint8_t *new_key, char *err,
              size_t errlen);

/* Remove data_dir.rekey, left by a rekey that did not finish (logged). 0 when
 * there was none or it was removed, -1 when it could not be (logged). */
int rekey_clean_leftover(const char *data_dir);

#endif
