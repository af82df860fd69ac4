/* spool.c — the durable outbox of libcarehub; see spool.h. */
#include "carehub_wire.h"
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frame.h"
#include "util.h"

/* The outbox holds what the broker has not answered; 1 GiB is months of
 * events for any agent. LMDB grows the file only as far as it is used. */
#define SPOOL_MAP_SIZE ((size_t)1 << 30)

struct spool {
    MDB_env *env;
    MDB_dbi outbox;
    MDB_dbi ids;
    int lock_fd;
    uint64_t next_seq;  /* the sequence number the next record gets */
    size_t count;       /* records in the outbox */
    char *dir;
};

static void seq_key(uint64_t seq, unsigned char out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(seq & 0xff);
        seq >>= 8;
    }
}

static uint64_t seq_of(const MDB_val *v)
{
    uint64_t x = 0;
    const unsigned char *b = v->mv_data;
    if (v->mv_size != 8)
        return UINT64_MAX;
    for (int i = 0; i < 8; i++)
        x = (x << 8) | b[i];
    return x;
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char *p = strdup(dir);
    if (!p) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == '\0') {
            char save = *s;
            *s = '\0';
            if (mkdir(p, 0700) < 0 && errno != EEXIST) {
                util_fmt(err, errlen, "cannot create the spool directory %s: %s", p, strerror(errno));
                rc = -1;
                break;
            }
            *s = save;
            if (save == '\0')
                break;
        }
    }
    free(p);
    return rc;
}

/*
 * The spool directory, made if missing, opened (O_NOFOLLOW, so that what is
 * checked is what is used) and checked to be the agent's own: a directory, not
 * a symbolic link, owned by the effective uid, and not writable by group or
 * others (who could otherwise put links in place of the files LMDB opens by
 * name). A descriptor of it, or -1 with a sentence in err.
 */
static int open_dir(const char *dir, char *err, size_t errlen)
{
    if (!dir[0]) {
        util_fmt(err, errlen, "the spool directory is an empty path");
        return -1;
    }
    if (make_dirs(dir, err, errlen) < 0)
        return -1;
    char *p = strdup(dir);
    if (!p) {
        util_fmt(err, errlen, "out of memory");
        return -1;
    }
    /* a trailing slash would make open() follow a link in the last place */
    for (size_t n = strlen(p); n > 1 && p[n - 1] == '/'; n--)
        p[n - 1] = '\0';
    struct stat st;
    int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (lstat(p, &st) == 0 && S_ISLNK(st.st_mode))
            util_fmt(err, errlen, "the spool %s is a symbolic link; give the directory itself "
                     "(a link could lead the outbox elsewhere)", dir);
        else if (e == ENOTDIR)
            util_fmt(err, errlen, "the spool %s is not a directory", dir);
        else
            util_fmt(err, errlen, "cannot open the spool directory %s: %s", dir, strerror(e));
        free(p);
        return -1;
    }
    free(p);
    if (fstat(fd, &st) < 0) {
        util_fmt(err, errlen, "cannot open the spool directory %s: %s", dir, strerror(errno));
    } else if (st.st_uid != geteuid()) {
        util_fmt(err, errlen, "the spool directory %s belongs to uid %u, not to this process "
                 "(uid %u): an outbox must be the agent's own; use a directory of its own, or "
                 "chown it", dir, (unsigned)st.st_uid, (unsigned)geteuid());
    } else if (st.st_mode & 022) {
        util_fmt(err, errlen, "the spool directory %s has mode %04o: group or others may write "
                 "in it; make it the owner's only: chmod 700 %s", dir,
                 (unsigned)(st.st_mode & 07777), dir);
    } else {
        return fd;
    }
    close(fd);
    return -1;
}

/* Whether the environment LMDB opened by name is the data.mdb of the directory
 * that was checked (a directory swapped for another in between is refused). */
static int same_data_file(MDB_env *env, int dir_fd)
{
    int mfd;
    struct stat a, b;
    return mdb_env_get_fd(env, &mfd) == 0 && fstat(mfd, &a) == 0 &&
           fstatat(dir_fd, "data.mdb", &b, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(b.st_mode) &&
           a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

spool_t *spool_open(const char *dir, char *err, size_t errlen)
{
    spool_t *s = calloc(1, sizeof *s);
    if (!s) {
        util_fmt(err, errlen, "out of memory");
        return NULL;
    }
    char path[4096];
    int rc;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;

    s->lock_fd = -1;
    int dir_fd = -1;
    if (!(s->dir = strdup(dir))) {
        util_fmt(err, errlen, "out of memory");
        goto fail;
    }
    if ((dir_fd = open_dir(dir, err, errlen)) < 0)
        goto fail;
    util_fmt(path, sizeof path, "%s/lock", dir);
    s->lock_fd = openat(dir_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        util_fmt(err, errlen, "cannot open the spool lock %s: %s", path, strerror(errno));
        goto fail;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            util_fmt(err, errlen, "the spool %s is in use by another process; run one agent per spool", dir);
        else
            util_fmt(err, errlen, "cannot lock the spool %s: %s", dir, strerror(errno));
        goto fail;
    }
    if ((rc = mdb_env_create(&s->env)) != 0 || (rc = mdb_env_set_maxdbs(s->env, 4)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, SPOOL_MAP_SIZE)) != 0) {
        util_fmt(err, errlen, "cannot set up the spool environment: %s", mdb_strerror(rc));
        goto fail;
    }
    /* Durable: no MDB_NOSYNC, no MDB_NOMETASYNC. */
    if ((rc = mdb_env_open(s->env, dir, 0, 0600)) != 0) {
        util_fmt(err, errlen, "cannot open the spool %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    if (!same_data_file(s->env, dir_fd)) {
        util_fmt(err, errlen, "the spool %s changed while it was opened (its data.mdb is not "
                 "the one in the directory checked)", dir);
        goto fail;
    }
    close(dir_fd);
    dir_fd = -1;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0 ||
        (rc = mdb_dbi_open(txn, "outbox", MDB_CREATE, &s->outbox)) != 0 ||
        (rc = mdb_dbi_open(txn, "ids", MDB_CREATE, &s->ids)) != 0) {
        util_fmt(err, errlen, "cannot open the spool databases in %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    MDB_stat st;
    if ((rc = mdb_stat(txn, s->outbox, &st)) != 0 || (rc = mdb_cursor_open(txn, s->outbox, &cur)) != 0) {
        util_fmt(err, errlen, "cannot read the spool %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    s->count = st.ms_entries;
    MDB_val k, v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0)
        s->next_seq = seq_of(&k) == UINT64_MAX ? 0 : seq_of(&k) + 1;
    else if (rc != MDB_NOTFOUND) {
        util_fmt(err, errlen, "cannot read the spool %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    mdb_cursor_close(cur);
    cur = NULL;
    if ((rc = mdb_txn_commit(txn)) != 0) {
        txn = NULL;
        util_fmt(err, errlen, "cannot commit to the spool %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    return s;

fail:
    if (cur)
        mdb_cursor_close(cur);
    if (txn)
        mdb_txn_abort(txn);
    if (dir_fd >= 0)
        close(dir_fd);
    spool_close(&s);
    return NULL;
}

void spool_close(spool_t **sp)
{
    if (!sp || !*sp)
        return;
    spool_t *s = *sp;
    if (s->env)
        mdb_env_close(s->env);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    free(s->dir);
    free(s);
    *sp = NULL;
}

size_t spool_count(const spool_t *s)
{
    return s ? s->count : 0;
}

void spool_rec_clear(spool_rec_t *r)
{
    free(r->frame);
    free(r->tag);
    memset(r, 0, sizeof *r);
}

int spool_add(spool_t *s, const char *id, const void *frame, size_t frame_len, const char *tag,
              char *err, size_t errlen)
{
    MDB_txn *txn = NULL;
    int rc;
    size_t idlen = strlen(id);
    unsigned char key[8];
    MDB_val k = {idlen, (void *)id}, v;

    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        goto fail;
    rc = mdb_get(txn, s->ids, &k, &v);
    if (rc == 0) {
        mdb_txn_abort(txn);
        return 0;
    }
    if (rc != MDB_NOTFOUND)
        goto fail;

    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, tag ? 3 : 2);
    frame_pack_cstr(&pk, "id");
    frame_pack_cstr(&pk, id);
    frame_pack_cstr(&pk, "frame");
    msgpack_pack_bin(&pk, frame_len);
    msgpack_pack_bin_body(&pk, frame, frame_len);
    if (tag) {
        frame_pack_cstr(&pk, "tag");
        frame_pack_cstr(&pk, tag);
    }
    seq_key(s->next_seq, key);
    MDB_val sk = {8, key}, rv = {sb.size, sb.data};
    rc = mdb_put(txn, s->outbox, &sk, &rv, MDB_APPEND);
    msgpack_sbuffer_destroy(&sb);
    if (rc != 0)
        goto fail;
    MDB_val kv = {8, key};
    if ((rc = mdb_put(txn, s->ids, &k, &kv, 0)) != 0)
        goto fail;
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0)
        goto fail;
    s->next_seq++;
    s->count++;
    return 1;

fail:
    if (txn)
        mdb_txn_abort(txn);
    if (rc == MDB_MAP_FULL)
        util_fmt(err, errlen, "the spool %s is full (%zu MiB of unacknowledged events); "
                 "let the agent reach the broker before adding more", s->dir, SPOOL_MAP_SIZE >> 20);
    else
        util_fmt(err, errlen, "cannot write to the spool %s: %s", s->dir, mdb_strerror(rc));
    return -1;
}

/* Decode a stored record into r (copies). 0, -1 when damaged, -2 out of memory
 * (the record is fine: the read stops, nothing is counted damaged). */
static int decode_rec(const MDB_val *v, spool_rec_t *r)
{
    if (frame_check(v->mv_data, v->mv_size) != FRAME_OK)
        return -1;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int ok = -1;
    if (msgpack_unpack_next(&u, v->mv_data, v->mv_size, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *id = frame_map_get(&u.data, "id");
        const msgpack_object *fr = frame_map_get(&u.data, "frame");
        const msgpack_object *tag = frame_map_get(&u.data, "tag");
        const char *s;
        size_t n;
        if (frame_str(id, &s, &n) && util_valid_id(s, n) && fr && fr->type == MSGPACK_OBJECT_BIN &&
            fr->via.bin.size > 0) {
            memcpy(r->id, s, n);
            r->id[n] = '\0';
            r->frame_len = fr->via.bin.size;
            r->frame = malloc(r->frame_len);
            int has_tag = frame_str(tag, &s, &n);
            r->tag = has_tag ? strndup(n ? s : "", n) : NULL;
            if (!r->frame || (has_tag && !r->tag)) {
                free(r->frame);
                free(r->tag);
                r->frame = r->tag = NULL;
                ok = -2;
            } else {
                memcpy(r->frame, fr->via.bin.ptr, r->frame_len);
                ok = 0;
            }
        }
    }
    msgpack_unpacked_destroy(&u);
    return ok;
}

int spool_read(spool_t *s, uint64_t from, spool_rec_t *recs, int max, uint64_t *next,
               size_t *damaged, char *err, size_t errlen)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    int rc, n = 0;
    unsigned char key[8];
    MDB_val k = {8, key}, v;

    seq_key(from, key);
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)) != 0 ||
        (rc = mdb_cursor_open(txn, s->outbox, &cur)) != 0)
        goto fail;
    *next = from;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && n < max) {
        memset(&recs[n], 0, sizeof recs[n]);
        recs[n].seq = seq_of(&k);
        if (recs[n].seq == UINT64_MAX) { /* not a key of ours: nothing after it is reachable */
            (*damaged)++;
            rc = MDB_NOTFOUND;
            break;
        }
        *next = recs[n].seq + 1;
        int d = decode_rec(&v, &recs[n]);
        if (d == -2) {
            rc = ENOMEM;
            break;
        }
        if (d == 0)
            n++;
        else
            (*damaged)++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        goto fail;
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return n;

fail:
    for (int i = 0; i < n; i++)
        spool_rec_clear(&recs[i]);
    if (cur)
        mdb_cursor_close(cur);
    if (txn)
        mdb_txn_abort(txn);
    util_fmt(err, errlen, "cannot read the spool %s: %s", s->dir, mdb_strerror(rc));
    return -1;
}

int spool_remove(spool_t *s, const uint64_t *seqs, char (*ids)[CAREHUB_ID_MAX + 1], size_t n, char *err,
                 size_t errlen)
{
    MDB_txn *txn = NULL;
    int rc;
    size_t removed = 0;
    if (n == 0)
        return 0;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        unsigned char key[8];
        seq_key(seqs[i], key);
        MDB_val k = {8, key};
        rc = mdb_del(txn, s->outbox, &k, NULL);
        if (rc == 0)
            removed++;
        else if (rc != MDB_NOTFOUND)
            goto fail;
        /* the id entry goes only when it still points at this record */
        MDB_val ik = {strlen(ids[i]), ids[i]}, iv;
        rc = mdb_get(txn, s->ids, &ik, &iv);
        if (rc == 0 && seq_of(&iv) == seqs[i])
            rc = mdb_del(txn, s->ids, &ik, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            goto fail;
    }
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0)
        goto fail;
    s->count = s->count >= removed ? s->count - removed : 0;
    return 0;

fail:
    if (txn)
        mdb_txn_abort(txn);
    util_fmt(err, errlen, "cannot remove acknowledged events from the spool %s: %s", s->dir,
             mdb_strerror(rc));
    return -1;
}
