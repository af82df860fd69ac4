/*
 * backup.h — `carehubd backup` and `carehubd restore`: a copy of a store that
 * proves itself before anyone relies on it (docs/backup-and-keys.md).
 *
 * backup: a consistent hot copy of a store, running broker or not (store_copy:
 * LMDB's compacting copy in one read transaction, the store opened read-only,
 * the broker undisturbed), written into a new or empty directory (0700, its
 * data.mdb 0600), then verified as `carehubd verify` does (the trail chain, the
 * keyed part with the data key when it is given, every object against its
 * trail record, every index): it succeeds only when the copy verifies.
 *
 * restore: a backup into a new (or empty) data directory: copied to DIR.tmp,
 * verified there, and only then renamed to DIR, so a broker never starts on a
 * copy that did not verify, nor on half a copy.
 *
 * A sealed store's copy is sealed with the same data key (privacy.key_file):
 * without that key the copy cannot be read, by design; keep the key apart
 * from the backups.
 */
#ifndef CAREHUB_BACKUP_H
#define CAREHUB_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Exit codes shared by backup, restore and rekey (main.c returns them). */
enum { BACKUP_OK = 0, BACKUP_BROKEN = 1, BACKUP_UNREADABLE = 74, BACKUP_CANTCREATE = 73 };

/* The store in dir opened read-only with its key (NULL: none; a sealed store
 * then opens for what can be checked without it): NULL with the reason in err
 * (another key: "… sealed with another privacy key …"). */
store_t *backup_open(const char *dir, const uint8_t *key, char *err, size_t errlen);

/* Verify the store in dir as `carehubd verify` does, key (32 bytes) or NULL.
 * BACKUP_OK with a one-line summary in msg, BACKUP_BROKEN with the first
 * problem, BACKUP_UNREADABLE when it cannot be opened (wrong key included). */
int backup_verify(const char *dir, const uint8_t *key, char *msg, size_t msglen);

/* The directory must not exist (it is made, 0700) or be empty: 0, or -1 with a
 * message in err. */
int backup_dir_new_or_empty(const char *path, char *err, size_t errlen);

/* Copy the store in data_dir into dest and verify the copy. Progress and the
 * result (size, time) are printed on stdout; BACKUP_OK only when the copy
 * verifies, else a BACKUP_* code with the reason in err. */
int backup_run(const char *data_dir, const uint8_t *key, const char *dest, char *err,
               size_t errlen);

/* Put the backup in src into data_dir (new or empty) by way of data_dir.tmp,
 * verified there first (without the key: what it cannot check it says). */
int backup_restore(const char *data_dir, const char *src, char *err, size_t errlen);

/* Remove a directory this module or rekey.c made: its data.mdb and lock.mdb,
 * then the directory. 0, or -1 (anything else in it is left, and said). */
int backup_remove_store_dir(const char *path, char *err, size_t errlen);

/* The path beside dir with suffix appended ("DIR.tmp", "DIR.rekey"), trailing
 * slashes of dir left out, into out. */
void backup_sibling(char *out, size_t size, const char *dir, const char *suffix);

/* fsync a directory (after a rename or a new file in it). 0 or -1 (errno). */
int backup_fsync_path(const char *path);

#endif
