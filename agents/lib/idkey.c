/* idkey.c — an agent's id key; see idkey.h. */
#include "idkey.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <unistd.h>

#include "keyfile.h"
#include "util.h"

/* A new key at path (O_EXCL: never over another), synced before it is used. */
static int create_key(const char *path, unsigned char key[IDKEY_BYTES])
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    randombytes_buf(key, IDKEY_BYTES);
    int e = 0;
    if (write(fd, key, IDKEY_BYTES) != IDKEY_BYTES || fsync(fd) != 0)
        e = errno ? errno : EIO;
    if (close(fd) != 0 && !e)
        e = errno;
    if (e)
        (void)unlink(path);
    return e;
}

int idkey_load(const char *path, int create, unsigned char key[IDKEY_BYTES], int *created,
               char *why, size_t whylen)
{
    *created = 0;
    char *buf;
    size_t len;
    int e = keyfile_read(path, 1, IDKEY_BYTES, &buf, &len);
    if (e == ENOENT && create) {
        if ((e = create_key(path, key)) == 0) {
            *created = 1;
            return 0;
        }
    }
    if (e) {
        if (e == ENOENT)
            util_fmt(why, whylen, "does not exist: it is made on the first run that sends "
                     "(or give the agent's key with --id-key)");
        else
            keyfile_why(e, path, IDKEY_BYTES, why, whylen);
        return -1;
    }
    int ok = len == IDKEY_BYTES;
    if (ok)
        memcpy(key, buf, IDKEY_BYTES);
    else
        util_fmt(why, whylen, "holds %zu bytes, not the %d of an id key", len, IDKEY_BYTES);
    keyfile_free(buf, len);
    return ok ? 0 : -1;
}

void idkey_id(const unsigned char key[IDKEY_BYTES], const char *prefix, const char *const *parts,
              size_t n, char out[65])
{
    crypto_generichash_state st;
    unsigned char h[32];
    static const unsigned char nul = 0;
    size_t plen = strlen(prefix);
    if (plen > 56)
        plen = 56;
    size_t hlen = (64 - plen) / 2;
    if (hlen > sizeof h)
        hlen = sizeof h;
    crypto_generichash_init(&st, key, IDKEY_BYTES, hlen);
    for (size_t i = 0; i < n; i++) {
        if (i)
            crypto_generichash_update(&st, &nul, 1);
        crypto_generichash_update(&st, (const unsigned char *)parts[i], strlen(parts[i]));
    }
    crypto_generichash_final(&st, h, hlen);
    memcpy(out, prefix, plen);
    sodium_bin2hex(out + plen, 65 - plen, h, hlen);
}
