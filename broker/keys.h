/*
 * keys.h — CURVE key files (CONFIG.md): one key as 40 Z85 characters on the
 * first line. `carehubd keygen NAME` writes NAME.key (secret, mode 0600) and
 * NAME.pub (public) with zmq_curve_keypair().
 */
#ifndef CAREHUB_KEYS_H
#define CAREHUB_KEYS_H

#include <stddef.h>

/* Write DIR/NAME.key and DIR/NAME.pub. Refuses to overwrite existing files.
 * Returns 0, or -1 with a message in err. */
int keys_generate(const char *dir, const char *name, char *err, size_t errlen);

#endif
