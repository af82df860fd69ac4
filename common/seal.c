/* seal.c — sealing with a secret key; see seal.h. */
#include "seal.h"

#include <sodium.h>
#include <string.h>

_Static_assert(SEAL_KEYBYTES == crypto_aead_xchacha20poly1305_ietf_KEYBYTES, "key size");
_Static_assert(SEAL_NONCEBYTES == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES, "nonce size");
_Static_assert(SEAL_TAGBYTES == crypto_aead_xchacha20poly1305_ietf_ABYTES, "tag size");

size_t seal_box(unsigned char *box, const void *m, size_t mlen, const char *ad,
                const unsigned char key[SEAL_KEYBYTES])
{
    unsigned long long clen;
    randombytes_buf(box, SEAL_NONCEBYTES);
    crypto_aead_xchacha20poly1305_ietf_encrypt(box + SEAL_NONCEBYTES, &clen, m, mlen,
                                               (const unsigned char *)ad, strlen(ad), NULL, box, key);
    return SEAL_NONCEBYTES + (size_t)clen;
}

int seal_open(void *m, size_t *mlen, const unsigned char *box, size_t blen, const char *ad,
              const unsigned char key[SEAL_KEYBYTES])
{
    unsigned long long n = 0;
    *mlen = 0;
    if (blen < SEAL_OVERHEAD)
        return -1;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(m, &n, NULL, box + SEAL_NONCEBYTES,
                                                   blen - SEAL_NONCEBYTES, (const unsigned char *)ad,
                                                   strlen(ad), box, key) != 0) {
        sodium_memzero(m, blen - SEAL_OVERHEAD);
        return -1;
    }
    *mlen = (size_t)n;
    return 0;
}
