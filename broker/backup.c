/* backup.c — carehubd backup and restore: copies that verify; see backup.h. */
#include "backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "store.h"
#include "trail.h"
#include "util.h"

store_t *backup_open(const char *dir, const uint8_t *key, char *err, size_t errlen)
{
    store_t *st = store_open_readonly(dir, err, errlen);
    if (st && store_set_privacy(st, key, err, errlen) != 0)
        store_close(&st);
    return st;
}

int backup_verify(const char *dir, const uint8_t *key, char *msg, size_t msglen)
{
    store_t *st = backup_open(dir, key, msg, msglen);
    if (!st)
        return BACKUP_UNREADABLE;
    trail_report_t r;
    int rc = audit_verify(st, NULL, &r);
    store_close(&st);
    if (rc == 1) {
        util_fmt(msg, msglen, "BROKEN: %s (%llu trail records walked, %llu records checked before it)",
                 r.problem, r.records, r.objects);
        return BACKUP_BROKEN;
    }
    if (rc) {
        util_fmt(msg, msglen, "cannot read the store in %s", dir);
        return BACKUP_UNREADABLE;
    }
    char unchecked[200] = "";
    if (r.unchecked_from)
        util_fmt(unchecked, sizeof unchecked, "; NOT CHECKED: the keyed chain from record %llu on "
                 "(no data key given)", r.unchecked_from);
    util_fmt(msg, msglen, "intact: %llu trail records chained; %llu events, cases and assignments "
             "match their trail; %llu index entries match their records%s", r.records, r.objects,
             r.index_entries, unchecked);
    return BACKUP_OK;
}

int backup_dir_new_or_empty(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0700) == 0)
        return 0;
    if (errno != EEXIST) {
        util_fmt(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    DIR *d = opendir(path);
    if (!d) {
        util_fmt(err, errlen, "%s exists and is not a directory that can be read: %s", path,
                 strerror(errno));
        return -1;
    }
    const struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    if (!empty) {
        util_fmt(err, errlen, "%s is not empty; give a new or an empty directory (nothing in it "
                 "is overwritten)", path);
        return -1;
    }
    if (chmod(path, 0700) < 0) {
        util_fmt(err, errlen, "cannot make %s private (chmod 0700): %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void backup_sibling(char *out, size_t size, const char *dir, const char *suffix)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') /* "data/" + ".tmp" would be inside data */
        n--;
    util_fmt(out, size, "%.*s%s", (int)n, dir, suffix);
}

int backup_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* The directory a path is in ("." for a bare name), into buf. */
static const char *parent_of(const char *path, char *buf, size_t size)
{
    util_fmt(buf, size, "%s", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash)
        return ".";
    if (slash == buf)
        slash[1] = '\0';
    else
        *slash = '\0';
    return buf;
}

int backup_remove_store_dir(const char *path, char *err, size_t errlen)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    char p[4096];
    for (size_t i = 0; i < UTIL_ARRAY_LEN(files); i++) {
        util_fmt(p, sizeof p, "%s/%s", path, files[i]);
        if (unlink(p) < 0 && errno != ENOENT) {
            util_fmt(err, errlen, "cannot remove %s: %s", p, strerror(errno));
            return -1;
        }
    }
    if (rmdir(path) < 0 && errno != ENOENT) {
        util_fmt(err, errlen, "cannot remove %s: %s (only data.mdb and lock.mdb are removed "
                 "here; look at what else is in it)", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Size of a file, 0 when it cannot be read. */
static unsigned long long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (unsigned long long)sb.st_size : 0;
}

int backup_run(const char *data_dir, const uint8_t *key, const char *dest, char *err,
               size_t errlen)
{
    char why[1024], data[4096], lock[4096];
    store_t *st = backup_open(data_dir, key, err, errlen);
    if (!st)
        return BACKUP_UNREADABLE;
    if (backup_dir_new_or_empty(dest, err, errlen) < 0) {
        store_close(&st);
        return BACKUP_CANTCREATE;
    }
    int64_t t0 = util_mono_ms();
    int rc = store_copy(st, dest, err, errlen);
    store_close(&st);
    util_fmt(data, sizeof data, "%s/data.mdb", dest);
    util_fmt(lock, sizeof lock, "%s/lock.mdb", dest);
    if (rc < 0) {
        (void)unlink(data); /* half a copy (DEST was empty): nothing anyone should find */
        return BACKUP_CANTCREATE;
    }
    if (chmod(data, 0600) < 0 || backup_fsync_path(data) < 0 || backup_fsync_path(dest) < 0) {
        util_fmt(err, errlen, "cannot make %s private and durable: %s", data, strerror(errno));
        return BACKUP_CANTCREATE;
    }
    int64_t t1 = util_mono_ms();
    rc = backup_verify(dest, key, why, sizeof why);
    (void)unlink(lock); /* the verify's: a backup is its data.mdb */
    if (rc != BACKUP_OK) {
        util_fmt(err, errlen, "the copy in %s does not verify, do not rely on it: %s", dest, why);
        return rc;
    }
    printf("backup of %s in %s: data.mdb %llu bytes, copied in %lld ms, verified in %lld ms\n%s\n",
           data_dir, dest, file_size(data), (long long)(t1 - t0), (long long)(util_mono_ms() - t1),
           why);
    if (!key)
        printf("(no --key-file: the keyed chain was not checked; the copy opens only with the "
               "data key of the store it came from)\n");
    return BACKUP_OK;
}

/* Copy a file into a new one (0600), synced. 0, or -1 with the reason in err. */
static int copy_file(const char *from, const char *to, char *err, size_t errlen)
{
    int in = open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (in < 0) {
        util_fmt(err, errlen, "cannot read %s: %s", from, strerror(errno));
        return -1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
        util_fmt(err, errlen, "cannot create %s: %s", to, strerror(errno));
        close(in);
        return -1;
    }
    enum { CHUNK = 1 << 20 };
    char *buf = xmalloc(CHUNK);
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = read(in, buf, CHUNK)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        for (ssize_t off = 0; n > 0 && off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = -1;
                break;
            }
            off += w;
        }
        if (n < 0)
            rc = -1;
    }
    if (rc == 0 && fsync(out) < 0)
        rc = -1;
    if (rc < 0)
        util_fmt(err, errlen, "cannot copy %s to %s: %s", from, to, strerror(errno));
    free(buf);
    close(in);
    if (close(out) < 0 && rc == 0) {
        util_fmt(err, errlen, "cannot write %s: %s", to, strerror(errno));
        rc = -1;
    }
    return rc;
}

int backup_restore(const char *data_dir, const char *src, char *err, size_t errlen)
{
    char tmp[4096], from[4096], to[4096], why[1024], parent[4096];
    struct stat sb;
    util_fmt(from, sizeof from, "%s/data.mdb", src);
    if (stat(from, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        util_fmt(err, errlen, "%s is not a backup: it has no data.mdb (give the directory "
                 "`carehubd backup` wrote)", src);
        return BACKUP_UNREADABLE;
    }
    /* data_dir: new, or an empty directory (never a store written over) */
    if (stat(data_dir, &sb) == 0) {
        if (backup_dir_new_or_empty(data_dir, err, errlen) < 0)
            return BACKUP_CANTCREATE;
    } else if (errno != ENOENT) {
        util_fmt(err, errlen, "cannot look at %s: %s", data_dir, strerror(errno));
        return BACKUP_CANTCREATE;
    }
    backup_sibling(tmp, sizeof tmp, data_dir, ".tmp");
    if (stat(tmp, &sb) == 0 && backup_remove_store_dir(tmp, why, sizeof why) < 0) {
        util_fmt(err, errlen, "a restore that did not finish left %s: %s", tmp, why);
        return BACKUP_CANTCREATE;
    }
    if (mkdir(tmp, 0700) < 0) {
        util_fmt(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return BACKUP_CANTCREATE;
    }
    util_fmt(to, sizeof to, "%s/data.mdb", tmp);
    int64_t t0 = util_mono_ms();
    if (copy_file(from, to, err, errlen) < 0) {
        (void)backup_remove_store_dir(tmp, why, sizeof why);
        return BACKUP_CANTCREATE;
    }
    int rc = backup_verify(tmp, NULL, why, sizeof why);
    if (rc != BACKUP_OK) {
        util_fmt(err, errlen, "the backup in %s does not verify, nothing was restored: %s", src, why);
        char ignored[512];
        (void)backup_remove_store_dir(tmp, ignored, sizeof ignored);
        return rc;
    }
    if ((rmdir(data_dir) < 0 && errno != ENOENT) || rename(tmp, data_dir) < 0) {
        util_fmt(err, errlen, "cannot put %s in place of %s: %s (the verified copy stays in %s)",
                 tmp, data_dir, strerror(errno), tmp);
        return BACKUP_CANTCREATE;
    }
    (void)backup_fsync_path(parent_of(data_dir, parent, sizeof parent));
    printf("restored %s into %s (%llu bytes) in %lld ms, verified before it was put in place\n%s\n",
           src, data_dir, file_size(from), (long long)(util_mono_ms() - t0), why);
    if (strstr(why, "NOT CHECKED"))
        printf("(the keyed chain is checked with the data key: `carehubd verify --data %s "
               "--key-file KEY`; the broker refuses to start with another key)\n", data_dir);
    return BACKUP_OK;
}
