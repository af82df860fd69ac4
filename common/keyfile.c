/* keyfile.c — reading key files and secrets; see keyfile.h. */
#include "keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "util.h"

int keyfile_read(const char *path, int secret, size_t max, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | (secret ? O_NOFOLLOW : 0));
    if (fd < 0)
        return errno;
    struct stat st;
    int e = 0;
    if (fstat(fd, &st) != 0)
        e = errno;
    else if (!S_ISREG(st.st_mode))
        e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
    else if (secret && (st.st_mode & 077))
        e = EPERM;
    if (e) {
        close(fd);
        return e;
    }
    char *buf = xmalloc(max + 2);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 || (n += (size_t)(r > 0 ? r : 0)) > max) {
            e = r < 0 ? errno : EFBIG;
            keyfile_free(buf, n);
            close(fd);
            return e;
        }
        if (r == 0)
            break;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

void keyfile_free(char *buf, size_t len)
{
    if (!buf)
        return;
    sodium_memzero(buf, len);
    free(buf);
}

void keyfile_why(int e, const char *path, size_t max, char *why, size_t whylen)
{
    struct stat st;
    if (e == ELOOP && lstat(path, &st) == 0 && S_ISLNK(st.st_mode))
        util_fmt(why, whylen, "is a symbolic link; a secret is read only from the file itself: "
                 "name the file, not a link to it");
    else if (e == EPERM && stat(path, &st) == 0)
        util_fmt(why, whylen, "has mode %04o: group or others may read it, and it holds a secret; "
                 "make it the owner's only: chmod 600 %s", (unsigned)(st.st_mode & 07777), path);
    else if (e == EISDIR || e == EINVAL)
        util_fmt(why, whylen, "is not a regular file");
    else if (e == EFBIG)
        util_fmt(why, whylen, "is larger than %zu bytes", max);
    else
        util_fmt(why, whylen, "cannot be read: %s", strerror(e));
}

int keyfile_z85_valid(const char *s)
{
    uint8_t bin[32];
    return s && strlen(s) == 40 && zmq_z85_decode(bin, s) != NULL;
}

int keyfile_z85_line(char *buf, char out[41])
{
    size_t n = strcspn(buf, "\n");
    while (n && (buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    buf[n] = '\0';
    if (!keyfile_z85_valid(buf))
        return 0;
    memcpy(out, buf, 41);
    return 1;
}
