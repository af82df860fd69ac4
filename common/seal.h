/*
 * seal.h — sealing with a secret key: XChaCha20-Poly1305 (libsodium's IETF AEAD
 * construction), a random 24-byte nonce per box, associated data bound in.
 *
 * A box is nonce ‖ ciphertext ‖ tag, SEAL_OVERHEAD bytes longer than what it
 * seals. The associated data (e.g. the record's id) is not stored: opening a box
 * under another id fails, so a sealed value cannot be moved to another record.
 * This is the one place the broker's stored children's data is sealed and
 * opened (event bodies, notes, outcomes: store.c's store_txn_seal and
 * store_txn_event_body; the record formats are in docs/data-model.md).
 */
#ifndef CAREHUB_SEAL_H
#define CAREHUB_SEAL_H

#include <stddef.h>

#define SEAL_KEYBYTES 32
#define SEAL_NONCEBYTES 24
#define SEAL_TAGBYTES 16
#define SEAL_OVERHEAD (SEAL_NONCEBYTES + SEAL_TAGBYTES)

/* Seal the mlen bytes at m into box (room for mlen + SEAL_OVERHEAD bytes) under
 * key, binding ad (a C string; may be ""). Returns the box's length. */
size_t seal_box(unsigned char *box, const void *m, size_t mlen, const char *ad,
                const unsigned char key[SEAL_KEYBYTES]);

/* Open a box of blen bytes into m (room for blen - SEAL_OVERHEAD bytes); *mlen
 * gets the length. 0 when it opens; -1 when it is too short, was sealed with
 * another key or other ad, or was changed (m is then wiped). */
int seal_open(void *m, size_t *mlen, const unsigned char *box, size_t blen, const char *ad,
              const unsigned char key[SEAL_KEYBYTES]);

#endif
