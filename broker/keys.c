/* keys.c — CURVE key generation; see keys.h. */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "util.h"

static int write_new(const char *path, const char *line, mode_t mode, char *err, size_t errlen)
{
    /* O_EXCL: never over an existing file, nor through a link put in its place */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        util_fmt(err, errlen, "cannot create %s: %s%s", path, strerror(errno),
                 errno == EEXIST ? " (remove it first: keys are never overwritten)" : "");
        return -1;
    }
    size_t n = strlen(line);
    ssize_t w = write(fd, line, n);
    if (w != (ssize_t)n || fsync(fd) < 0) {
        util_fmt(err, errlen, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (close(fd) < 0) {
        util_fmt(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int keys_generate(const char *dir, const char *name, char *err, size_t errlen)
{
    if (!util_valid_id(name, strlen(name)) || strchr(name, '/')) {
        util_fmt(err, errlen, "key name \"%s\" must be 1-64 characters [A-Za-z0-9._:-]", name);
        return -1;
    }
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) < 0) {
        util_fmt(err, errlen, "zmq_curve_keypair: %s (is libzmq built with CURVE?)",
                 zmq_strerror(errno));
        return -1;
    }
    char path_key[4096], path_pub[4096], line[64];
    util_fmt(path_key, sizeof path_key, "%s/%s.key", dir, name);
    util_fmt(path_pub, sizeof path_pub, "%s/%s.pub", dir, name);
    util_fmt(line, sizeof line, "%s\n", sec);
    if (write_new(path_key, line, 0600, err, errlen) < 0)
        return -1;
    util_fmt(line, sizeof line, "%s\n", pub);
    if (write_new(path_pub, line, 0644, err, errlen) < 0) {
        (void)unlink(path_key); /* no half pair */
        return -1;
    }
    return 0;
}
