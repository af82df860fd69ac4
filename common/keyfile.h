/*
 * keyfile.h — reading key files and other small files that hold secrets: the
 * one reader of the broker (configuration, CURVE and privacy keys, channel
 * secrets) and of the agents and libcarehub (CURVE keys).
 *
 * A file is read only when it is a regular file (a FIFO in its place does not
 * hang the reader: O_NONBLOCK) of at most `max` bytes. A secret is read only
 * from the file named (O_NOFOLLOW: a symbolic link is refused) and only when
 * neither group nor others may read or write it (mode & 077 == 0).
 */
#ifndef CAREHUB_KEYFILE_H
#define CAREHUB_KEYFILE_H

#include <stddef.h>

/* Read path into *out (NUL-terminated, *len bytes). 0, or an errno value:
 * ELOOP (secret: a symbolic link), EPERM (secret: group or others may read or
 * write it), EISDIR or EINVAL (not a regular file), EFBIG (over max), or what
 * open/read said. Free *out with keyfile_free. */
int keyfile_read(const char *path, int secret, size_t max, char **out, size_t *len);

/* Wipe and free what keyfile_read gave. Safe on NULL. */
void keyfile_free(char *buf, size_t len);

/* The sentence for keyfile_read's error e on path, as a predicate that follows
 * the file's name: "is a symbolic link; …", "has mode 0644: … chmod 600 PATH",
 * "is not a regular file", "is larger than N bytes", "cannot be read: …". */
void keyfile_why(int e, const char *path, size_t max, char *why, size_t whylen);

/* 1 when s is a CURVE key as zmq_curve_keypair writes it: 40 Z85 characters. */
int keyfile_z85_valid(const char *s);

/* The key on the first line of buf (ends of line and trailing blanks cut, in
 * place) into out[41]: 1, or 0 when it is not a key. */
int keyfile_z85_line(char *buf, char out[41]);

#endif
