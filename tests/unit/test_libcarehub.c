/*
 * test_libcarehub.c — unit tests for the agent library (agents/lib): the spool
 * (LMDB outbox), the JSON-lines reader, ids and times of feed.c, and the parts
 * of the carehub.h API that need no broker (arguments, spooling, persistence).
 *
 * It links the agent programs' runtime (build/<variant>/libcarehub-agent.a's
 * objects) and uses only what the headers declare. What needs a broker (the
 * Lazy Pirate reconnects, a public key derived for CURVE) is tested end to end
 * in tests/e2e/test_agent_send.py, test_agent_monitor.py and test_curve.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "carehub.h"
#include "feed.h"
#include "jsonl.h"
#include "spool.h"
#include "util.h"

#include <sys/stat.h>

/* ---- helpers ------------------------------------------------------------------ */

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/test_libcarehub.XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return xstrdup(d);
}

static void rm_rf(const char *dir)
{
    char cmd[4200];
    util_fmt(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void write_file(const char *path, const char *mode, const char *text, size_t len)
{
    FILE *f = fopen(path, mode);
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* ---- spool ---------------------------------------------------------------------- */

static void test_spool_order_dedupe_remove_persist(void **state)
{
    (void)state;
    char *dir = tmpdir(), err[512], sub[4200];
    util_fmt(sub, sizeof sub, "%s/a/b/spool", dir);
    spool_t *s = spool_open(sub, err, sizeof err);
    assert_non_null(s);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    assert_int_equal(spool_add(s, "e1", "\x81\xa1x\x01", 4, "tag-1", err, sizeof err), 1);
    assert_int_equal(spool_add(s, "e2", "\x80", 1, NULL, err, sizeof err), 1);
    assert_int_equal(spool_add(s, "e1", "\x80", 1, NULL, err, sizeof err), 0); /* already there */
    assert_int_equal(spool_add(s, "e3", "\x80", 1, NULL, err, sizeof err), 1);
    assert_int_equal(spool_count(s), 3);

    /* a second open of the same spool (here: same process) is refused */
    spool_t *s2 = spool_open(sub, err, sizeof err);
    assert_null(s2);
    assert_non_null(strstr(err, "in use"));

    spool_rec_t r[8];
    uint64_t next;
    size_t damaged = 0;
    int n = spool_read(s, 0, r, 8, &next, &damaged, err, sizeof err);
    assert_int_equal(n, 3);
    assert_string_equal(r[0].id, "e1");
    assert_string_equal(r[1].id, "e2");
    assert_string_equal(r[2].id, "e3");
    assert_int_equal(r[0].frame_len, 4);
    assert_memory_equal(r[0].frame, "\x81\xa1x\x01", 4);
    assert_string_equal(r[0].tag, "tag-1");
    assert_null(r[1].tag);
    assert_true(r[0].seq < r[1].seq && r[1].seq < r[2].seq);
    assert_int_equal(next, r[2].seq + 1);

    uint64_t seqs[2] = {r[0].seq, r[2].seq};
    char ids[2][65] = {"e1", "e3"};
    assert_int_equal(spool_remove(s, seqs, ids, 2, err, sizeof err), 0);
    assert_int_equal(spool_count(s), 1);
    for (int i = 0; i < n; i++)
        spool_rec_clear(&r[i]);

    /* e1 may come again once it has left */
    assert_int_equal(spool_add(s, "e1", "\x80", 1, NULL, err, sizeof err), 1);
    spool_close(&s);
    spool_close(&s); /* twice is fine */
    assert_null(s);

    /* reopened: what was left is there, in order */
    s = spool_open(sub, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(spool_count(s), 2);
    n = spool_read(s, 0, r, 8, &next, &damaged, err, sizeof err);
    assert_int_equal(n, 2);
    assert_string_equal(r[0].id, "e2");
    assert_string_equal(r[1].id, "e1");
    /* reading from a position skips what is before it */
    spool_rec_t r2[1];
    assert_int_equal(spool_read(s, r[1].seq, r2, 1, &next, &damaged, err, sizeof err), 1);
    assert_string_equal(r2[0].id, "e1");
    spool_rec_clear(&r2[0]);
    for (int i = 0; i < n; i++)
        spool_rec_clear(&r[i]);
    assert_int_equal(damaged, 0);
    spool_close(&s);
    rm_rf(dir);
    free(dir);
}

static void test_spool_damaged_record_skipped(void **state)
{
    (void)state;
    char *dir = tmpdir(), err[512];
    spool_t *s = spool_open(dir, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(spool_add(s, "ok-1", "\x80", 1, NULL, err, sizeof err), 1);
    spool_close(&s);
    /* write garbage where the next record belongs, as another program could: the
     * spool's outbox keys are 8-byte big-endian sequence numbers, ok-1 got the first */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi outbox;
    unsigned char key[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    MDB_val k = {8, key}, v = {5, "\xdd\xff\xff\xff\xff"};
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "outbox", 0, &outbox), 0);
    MDB_cursor *cur;
    MDB_val lk, lv;
    assert_int_equal(mdb_cursor_open(txn, outbox, &cur), 0);
    assert_int_equal(mdb_cursor_get(cur, &lk, &lv, MDB_LAST), 0); /* ok-1's key */
    assert_int_equal(lk.mv_size, 8);
    memcpy(key, lk.mv_data, 8);
    mdb_cursor_close(cur);
    key[7]++;                                                       /* the one after it */
    assert_int_equal(mdb_put(txn, outbox, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    s = spool_open(dir, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(spool_add(s, "ok-2", "\x80", 1, NULL, err, sizeof err), 1);

    spool_rec_t r[8];
    uint64_t next;
    size_t damaged = 0;
    int n = spool_read(s, 0, r, 8, &next, &damaged, err, sizeof err);
    assert_int_equal(n, 2);
    assert_int_equal(damaged, 1);
    assert_string_equal(r[0].id, "ok-1");
    assert_string_equal(r[1].id, "ok-2");
    assert_int_equal(next, r[1].seq + 1);
    for (int i = 0; i < n; i++)
        spool_rec_clear(&r[i]);
    spool_close(&s);
    rm_rf(dir);
    free(dir);
}

static void test_spool_open_errors(void **state)
{
    (void)state;
    char *dir = tmpdir(), err[512], path[4200];
    util_fmt(path, sizeof path, "%s/file", dir);
    write_file(path, "w", "x", 1);
    assert_null(spool_open(path, err, sizeof err)); /* a file, not a directory */
    assert_true(strlen(err) > 10);
    util_fmt(path, sizeof path, "%s/file/below", dir);
    assert_null(spool_open(path, err, sizeof err));
    assert_non_null(strstr(err, "cannot create"));
    rm_rf(dir);
    free(dir);
}

/* The spool directory must be the agent's own: made 0700, refused when it is a
 * symbolic link, another user's, or writable by group or others; its lock file
 * is not opened through a link. */
static void test_spool_dir_checks(void **state)
{
    (void)state;
    char *dir = tmpdir(), err[512], real[4200], link[4200], path[4200], target[4200];
    struct stat st;
    mode_t old = umask(0);
    util_fmt(real, sizeof real, "%s/new/spool", dir);
    spool_t *s = spool_open(real, err, sizeof err);
    assert_non_null(s);
    spool_close(&s);
    assert_int_equal(stat(real, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    util_fmt(path, sizeof path, "%s/new", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    util_fmt(path, sizeof path, "%s/lock", real);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    umask(old);

    /* a link to a good spool */
    util_fmt(link, sizeof link, "%s/link", dir);
    assert_int_equal(symlink(real, link), 0);
    assert_null(spool_open(link, err, sizeof err));
    assert_non_null(strstr(err, "is a symbolic link"));
    util_fmt(path, sizeof path, "%s/", link);
    assert_null(spool_open(path, err, sizeof err));
    assert_non_null(strstr(err, "is a symbolic link"));
    util_fmt(path, sizeof path, "%s/", real); /* the directory itself, trailing slash: fine */
    assert_non_null(s = spool_open(path, err, sizeof err));
    spool_close(&s);

    /* others may write in it */
    assert_int_equal(chmod(real, 0777), 0);
    assert_null(spool_open(real, err, sizeof err));
    assert_non_null(strstr(err, "has mode 0777"));
    assert_non_null(strstr(err, "chmod 700"));
    assert_int_equal(chmod(real, 0750), 0); /* group may read: fine */
    assert_non_null(s = spool_open(real, err, sizeof err));
    spool_close(&s);
    assert_int_equal(chmod(real, 0700), 0);

    /* another user's */
    if (geteuid() == 0) {
        assert_int_equal(chown(real, 65534, 65534), 0);
        assert_null(spool_open(real, err, sizeof err));
        assert_non_null(strstr(err, "belongs to uid 65534, not to this process (uid 0)"));
        assert_int_equal(chown(real, 0, 0), 0);
    } else {
        print_message("not root: the test of another user's spool is skipped\n");
    }

    /* a lock file that is a link: not followed, its target not created */
    util_fmt(path, sizeof path, "%s/s2", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    util_fmt(target, sizeof target, "%s/target", dir);
    util_fmt(link, sizeof link, "%s/s2/lock", dir);
    assert_int_equal(symlink(target, link), 0);
    assert_null(spool_open(path, err, sizeof err));
    assert_non_null(strstr(err, "cannot open the spool lock"));
    assert_int_equal(access(target, F_OK), -1);
    rm_rf(dir);
    free(dir);
}

/* ---- jsonl ---------------------------------------------------------------------- */

static void expect_line(jsonl_t *r, const char *want, long want_no)
{
    const char *line = NULL;
    size_t len = 0;
    long no = 0;
    assert_int_equal(jsonl_next(r, &line, &len, &no), JSONL_LINE);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(line, want, len);
    assert_int_equal(no, want_no);
}

static void test_jsonl_lines(void **state)
{
    (void)state;
    char *dir = tmpdir(), path[4200], err[256];
    util_fmt(path, sizeof path, "%s/in.jsonl", dir);
    write_file(path, "w", "{\"a\":1}\n\n{\"b\":2}\r\nlast", 22);
    jsonl_t *r = jsonl_open(path, 0, err, sizeof err);
    assert_non_null(r);
    assert_string_equal(jsonl_name(r), path);
    expect_line(r, "{\"a\":1}", 1);
    expect_line(r, "", 2);
    expect_line(r, "{\"b\":2}", 3);
    expect_line(r, "last", 4); /* no final newline: still a line at the end */
    const char *line;
    size_t len;
    long no;
    assert_int_equal(jsonl_next(r, &line, &len, &no), JSONL_EOF);
    assert_int_equal(jsonl_next(r, &line, &len, &no), JSONL_EOF);
    jsonl_close(&r);
    jsonl_close(&r);

    util_fmt(path, sizeof path, "%s/missing", dir);
    assert_null(jsonl_open(path, 0, err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
    rm_rf(dir);
    free(dir);
}

static void test_jsonl_too_long(void **state)
{
    (void)state;
    char *dir = tmpdir(), path[4200], err[256];
    util_fmt(path, sizeof path, "%s/in.jsonl", dir);
    size_t big = JSONL_MAX_LINE * 2 + 10;
    char *text = xmalloc(big + 20);
    memcpy(text, "a\n", 2);
    memset(text + 2, 'x', big);
    memcpy(text + 2 + big, "\nb\n", 3);
    write_file(path, "w", text, big + 5);
    free(text);
    jsonl_t *r = jsonl_open(path, 0, err, sizeof err);
    const char *line;
    size_t len;
    long no;
    expect_line(r, "a", 1);
    assert_int_equal(jsonl_next(r, &line, &len, &no), JSONL_TOOLONG);
    assert_int_equal(no, 2);
    expect_line(r, "b", 3);
    assert_int_equal(jsonl_next(r, &line, &len, &no), JSONL_EOF);
    assert_true(jsonl_buffer_size(r) < JSONL_MAX_LINE * 2); /* the long line was never held whole */
    jsonl_close(&r);
    rm_rf(dir);
    free(dir);
}

static void test_jsonl_follow(void **state)
{
    (void)state;
    char *dir = tmpdir(), path[4200], moved[4200], err[256];
    util_fmt(path, sizeof path, "%s/feed.jsonl", dir);
    write_file(path, "w", "one\ntw", 6);
    jsonl_t *r = jsonl_open(path, 1, err, sizeof err);
    const char *line;
    size_t len;
    long no;
    expect_line(r, "one", 1);
    assert_int_equal(jsonl_next(r, &line, &len, &no), JSONL_AGAIN); /* "tw" is not complete */
    write_file(path, "a", "o\nthree\n", 8);
    expect_line(r, "two", 2);
    expect_line(r, "three", 3);
    assert_int_equal(jsonl_next(r, &line, &len, &no), JSONL_AGAIN);
    /* truncated and rewritten: from the top again */
    write_file(path, "w", "new\n", 4);
    expect_line(r, "new", 1);
    /* rotated: the old file is finished, then the new one is read */
    write_file(path, "a", "old-last\n", 9);
    util_fmt(moved, sizeof moved, "%s/feed.jsonl.1", dir);
    assert_int_equal(rename(path, moved), 0);
    write_file(path, "w", "fresh\n", 6);
    expect_line(r, "old-last", 2);
    expect_line(r, "fresh", 1);
    assert_int_equal(jsonl_next(r, &line, &len, &no), JSONL_AGAIN);
    jsonl_close(&r);
    rm_rf(dir);
    free(dir);
}

/* ---- feed: ids and times ----------------------------------------------------------- */

static void test_line_id(void **state)
{
    (void)state;
    char id[65], id2[65];
    /* the same vector as Python: "h-" + blake2b(b"absence\0-\0" b"1\0" b'{"a":1}', digest_size=16) */
    feed_line_id("absence", "-", 1, "{\"a\":1}", 7, id);
    assert_string_equal(id, "h-fe50ffe9df21bee25c26d6e31a8305c6");
    assert_true(util_valid_id(id, strlen(id)));
    feed_line_id("absence", "-", 2, "{\"a\":1}", 7, id2);
    assert_string_not_equal(id, id2);
    feed_line_id("online_risk", "-", 1, "{\"a\":1}", 7, id2);
    assert_string_not_equal(id, id2);
    feed_foreign_id("online_risk", "https://example.com/a/b?c=d", id2);
    assert_true(strncmp(id2, "d-", 2) == 0 && util_valid_id(id2, strlen(id2)));
}

static void test_parse_time(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(feed_parse_time("1970-01-01T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(feed_parse_time("2025-03-04T08:15:00.250+08:00", &ms), 0);
    assert_int_equal(ms, 1741047300250LL);
    assert_int_equal(feed_parse_time("2025-03-04T00:15:00.25Z", &ms), 0);
    assert_int_equal(ms, 1741047300250LL);
    assert_int_equal(feed_parse_time("2025-03-03t23:15:00.2501-01:00", &ms), 0);
    assert_int_equal(ms, 1741047300250LL);
    const char *bad[] = {"", "yesterday", "2025-03-04", "2025-03-04T08:15:00", "2025-13-01T00:00:00Z",
                         "2025-03-04T24:00:00Z", "2025-03-04T08:15:00.Z", "2025-03-04T08:15:00Zx",
                         "2025-03-04T08:15:00+0800", "1969-12-31T23:59:59Z"};
    for (size_t i = 0; i < UTIL_ARRAY_LEN(bad); i++)
        assert_int_equal(feed_parse_time(bad[i], &ms), -1);
}

/* ---- the API without a broker ---------------------------------------------------------- */

static carehub_t *open_lib(const char *spool, int *rc, char *err, size_t errlen)
{
    /* port 9 (discard): nothing answers; connecting never blocks */
    carehub_opts_t o = {.endpoint = "tcp://127.0.0.1:9", .agent = "school-0042", .spool_dir = spool,
                        .request_timeout_ms = 100, .max_backoff_ms = 200};
    return carehub_new(&o, NULL, rc, err, errlen);
}

static void test_api_arguments(void **state)
{
    (void)state;
    char *dir = tmpdir(), err[512], path[4200];
    int rc;
    carehub_opts_t o = {0};
    assert_null(carehub_new(&o, NULL, &rc, err, sizeof err));
    assert_int_equal(rc, CAREHUB_EINVAL);
    assert_non_null(strstr(err, "endpoint"));
    o.endpoint = "tcp://127.0.0.1:9";
    o.agent = "bad agent";
    assert_null(carehub_new(&o, NULL, &rc, err, sizeof err));
    assert_int_equal(rc, CAREHUB_EINVAL);
    o.agent = "a";
    o.spool_dir = dir;
    o.secret_key = "short";
    assert_null(carehub_new(&o, NULL, &rc, err, sizeof err));
    assert_int_equal(rc, CAREHUB_EINVAL);
    o.secret_key = NULL;
    o.endpoint = "nonsense://x";
    assert_null(carehub_new(&o, NULL, &rc, err, sizeof err));
    assert_int_equal(rc, CAREHUB_ENET);
    util_fmt(path, sizeof path, "%s/f", dir);
    write_file(path, "w", "x", 1);
    o.endpoint = "tcp://127.0.0.1:9";
    o.spool_dir = path;
    assert_null(carehub_new(&o, NULL, &rc, err, sizeof err));
    assert_int_equal(rc, CAREHUB_ESPOOL);

    /* CURVE keys: a pair from libzmq; the public key may be left out */
    char pub[41], sec[41], srv[41], srvsec[41];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    assert_int_equal(zmq_curve_keypair(srv, srvsec), 0);
    util_fmt(path, sizeof path, "%s/k", dir);
    o.spool_dir = path;
    o.secret_key = sec;
    o.server_key = srv;
    carehub_t *c = carehub_new(&o, NULL, &rc, err, sizeof err); /* the public key derived */
    assert_non_null(c);
    carehub_destroy(&c);
    o.public_key = "too short";
    assert_null(carehub_new(&o, NULL, &rc, err, sizeof err));
    assert_int_equal(rc, CAREHUB_EINVAL);
    o.public_key = NULL;

    assert_string_equal(carehub_last_error(NULL), "no carehub handle");
    rm_rf(dir);
    free(dir);
}

static void test_api_read_key(void **state)
{
    (void)state;
    char *dir = tmpdir(), path[4200], key[41], pub[41], sec[41], text[64];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    util_fmt(path, sizeof path, "%s/a.key", dir);
    util_fmt(text, sizeof text, "%s\r\n# more\n", sec);
    write_file(path, "w", text, strlen(text));
    assert_int_equal(carehub_read_key(path, key), CAREHUB_OK);
    assert_string_equal(key, sec);
    write_file(path, "w", "tooshort\n", 9);
    errno = 0;
    assert_int_equal(carehub_read_key(path, key), CAREHUB_EINVAL);
    assert_int_equal(errno, EINVAL);
    util_fmt(path, sizeof path, "%s/none.key", dir);
    assert_int_equal(carehub_read_key(path, key), CAREHUB_EINVAL);
    assert_int_equal(errno, ENOENT);
    rm_rf(dir);
    free(dir);
}

/* A secret key is read only from the file itself, private to its owner; the
 * programs' message gives the chmod. Public keys are read whatever their mode. */
static void test_api_read_secret_key(void **state)
{
    (void)state;
    char *dir = tmpdir(), path[4200], link[4200], key[41], pub[41], sec[41], text[64], why[4400];
    assert_int_equal(zmq_curve_keypair(pub, sec), 0);
    util_fmt(path, sizeof path, "%s/a.key", dir);
    util_fmt(text, sizeof text, "%s\n", sec);
    write_file(path, "w", text, strlen(text));
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(carehub_read_secret_key(path, key), CAREHUB_OK);
    assert_string_equal(key, sec);
    assert_int_equal(cli_read_secret_key(path, key, why, sizeof why), 0);
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(carehub_read_secret_key(path, key), CAREHUB_OK);

    static const mode_t loose[] = {0644, 0640, 0604, 0620, 0602, 0610, 0601};
    for (size_t i = 0; i < UTIL_ARRAY_LEN(loose); i++) {
        assert_int_equal(chmod(path, loose[i]), 0);
        errno = 0;
        assert_int_equal(carehub_read_secret_key(path, key), CAREHUB_EINVAL);
        assert_int_equal(errno, EPERM);
        assert_int_equal(carehub_read_key(path, key), CAREHUB_OK); /* a public key's reader */
    }
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(cli_read_secret_key(path, key, why, sizeof why), CLI_EX_NOINPUT);
    char want[4400];
    util_fmt(want, sizeof want, "has mode 0644: group or others may read it, and it holds a secret; "
             "make it the owner's only: chmod 600 %s", path);
    assert_string_equal(why, want);
    assert_int_equal(chmod(path, 0600), 0);

    util_fmt(link, sizeof link, "%s/link.key", dir);
    assert_int_equal(symlink(path, link), 0);
    errno = 0;
    assert_int_equal(carehub_read_secret_key(link, key), CAREHUB_EINVAL);
    assert_int_equal(errno, ELOOP);
    assert_int_equal(cli_read_secret_key(link, key, why, sizeof why), CLI_EX_NOINPUT);
    assert_non_null(strstr(why, "a symbolic link"));

    errno = 0;
    assert_int_equal(carehub_read_secret_key(dir, key), CAREHUB_EINVAL);
    assert_int_equal(errno, EISDIR);
    util_fmt(link, sizeof link, "%s/fifo", dir);
    assert_int_equal(mkfifo(link, 0600), 0);
    errno = 0;
    assert_int_equal(carehub_read_secret_key(link, key), CAREHUB_EINVAL); /* no hang */
    assert_int_equal(errno, EINVAL);
    assert_int_equal(cli_read_secret_key(link, key, why, sizeof why), CLI_EX_NOINPUT);
    assert_string_equal(why, "is not a regular file");

    write_file(path, "w", "tooshort\n", 9);
    assert_int_equal(cli_read_secret_key(path, key, why, sizeof why), CLI_EX_USAGE);
    assert_string_equal(why, "holds no key: its first line is not 40 Z85 characters");
    util_fmt(path, sizeof path, "%s/none.key", dir);
    assert_int_equal(cli_read_secret_key(path, key, why, sizeof why), CLI_EX_NOINPUT);
    char enoent[256];
    util_fmt(enoent, sizeof enoent, "cannot be read: %s", strerror(ENOENT));
    assert_string_equal(why, enoent);
    rm_rf(dir);
    free(dir);
}

/* The agent programs write children's data (refused lines, outcomes) 0600 and
 * never through a link, and set their umask to 077. */
static void test_cli_private_files(void **state)
{
    (void)state;
    char *dir = tmpdir(), path[4200], link[4200];
    struct stat st;
    mode_t old = umask(0);
    util_fmt(path, sizeof path, "%s/rejected.jsonl", dir);
    int fd = cli_open_append(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    util_fmt(link, sizeof link, "%s/link.jsonl", dir);
    assert_int_equal(symlink(path, link), 0);
    errno = 0;
    assert_int_equal(cli_open_append(link), -1);
    assert_int_equal(errno, ELOOP);
    assert_non_null(strstr(cli_open_errstr(ELOOP), "symbolic link"));

    cli_init("test");
    assert_int_equal(umask(old), 077);
    rm_rf(dir);
    free(dir);
}

/* Without a spool (spool_dir NULL) a handle sends requests only. */
static void test_api_no_spool(void **state)
{
    (void)state;
    char err[512], id[65];
    int rc;
    carehub_t *c = open_lib(NULL, &rc, err, sizeof err);
    assert_non_null(c);
    assert_int_equal(carehub_submit(c, "absence", 0, "{}", NULL, id), CAREHUB_EINVAL);
    assert_non_null(strstr(carehub_last_error(c), "without a spool"));
    assert_int_equal(carehub_pending(c), 0);
    assert_int_equal(carehub_request(c, "{\"op\":\"query\",\"what\":\"cases\"}", id), CAREHUB_OK);
    assert_int_equal(carehub_pending(c), 1);
    assert_int_equal(carehub_poll(c, 0), CAREHUB_OK);
    carehub_destroy(&c);
    /* an empty directory name is still an error, not "none" */
    assert_null(open_lib("", &rc, err, sizeof err));
    assert_int_equal(rc, CAREHUB_EINVAL);
}

static void test_api_submit_spools(void **state)
{
    (void)state;
    char *dir = tmpdir(), err[512], id[65];
    int rc;
    carehub_t *c = open_lib(dir, &rc, err, sizeof err);
    assert_non_null(c);
    assert_int_equal(carehub_connected(c), 0);
    assert_int_equal(carehub_pending(c), 0);

    assert_int_equal(carehub_submit(c, "absence", 0, "[1]", NULL, id), CAREHUB_EJSON);
    assert_int_equal(carehub_submit(c, "absence", 0, "{\"a\":", NULL, id), CAREHUB_EJSON);
    assert_non_null(strstr(carehub_last_error(c), "not valid JSON"));
    assert_int_equal(carehub_submit(c, "absence", 0, "{\"a\":1,\"a\":2}", NULL, id), CAREHUB_EJSON);
    assert_int_equal(carehub_submit(c, "absence", 0, "{}", "bad id", id), CAREHUB_EINVAL);
    assert_int_equal(carehub_submit(c, "", 0, "{}", NULL, id), CAREHUB_EINVAL);
    assert_int_equal(carehub_submit(c, "absence", -5, "{}", NULL, id), CAREHUB_EINVAL);
    assert_int_equal(carehub_pending(c), 0);

    assert_int_equal(carehub_submit(c, "absence", 0, "{\"x\":\"好\"}", NULL, id), CAREHUB_OK);
    assert_true(strncmp(id, "ev-", 3) == 0 && strlen(id) == 35);
    assert_int_equal(carehub_submit(c, "absence", 1741000000000, "{}", "mine-1", id), CAREHUB_OK);
    assert_string_equal(id, "mine-1");
    assert_int_equal(carehub_submit_tagged(c, "absence", 0, "{}", "mine-1", "t", id), CAREHUB_OK);
    assert_int_equal(carehub_pending(c), 2); /* the same id is not spooled twice */

    /* requests: validated, in memory */
    assert_int_equal(carehub_request(c, "{\"assignment\":\"as-1\"}", id), CAREHUB_EINVAL);
    assert_int_equal(carehub_request(c, "{\"op\":\"hello\"}", id), CAREHUB_EINVAL);
    assert_int_equal(carehub_request(c, "{\"op\":\"case_ack\",\"id\":\"no good\"}", id), CAREHUB_EINVAL);
    assert_int_equal(carehub_request(c, "{\"op\":\"case_ack\",\"assignment\":\"as-1\"}", id), CAREHUB_OK);
    assert_int_equal(carehub_request(c, "{\"op\":\"case_ack\",\"id\":\"r-1\"}", id), CAREHUB_OK);
    assert_string_equal(id, "r-1");
    assert_int_equal(carehub_request(c, "{\"op\":\"case_ack\",\"id\":\"r-1\"}", id), CAREHUB_EINVAL);
    assert_int_equal(carehub_pending(c), 4);

    /* no broker: polling times out and reconnects, nothing is lost */
    assert_int_equal(carehub_poll(c, 0), CAREHUB_OK);
    assert_int_equal(carehub_flush(c, 350), CAREHUB_ETIMEOUT);
    assert_false(carehub_connected(c)); /* nobody answered the hellos */
    assert_true(carehub_next_timeout_ms(c) >= 0 && carehub_next_timeout_ms(c) <= 200);
    assert_true(carehub_fd(c) >= 0);
    assert_int_equal(carehub_pending(c), 4);
    carehub_destroy(&c);
    carehub_destroy(&c);
    assert_null(c);

    /* the next run finds the events (not the requests) */
    c = open_lib(dir, &rc, err, sizeof err);
    assert_non_null(c);
    assert_int_equal(carehub_pending(c), 2);
    /* a second handle on the same spool is refused */
    carehub_t *c2 = open_lib(dir, &rc, err, sizeof err);
    assert_null(c2);
    assert_int_equal(rc, CAREHUB_ESPOOL);
    carehub_destroy(&c);
    rm_rf(dir);
    free(dir);
}

static void test_api_strerror(void **state)
{
    (void)state;
    for (int e = CAREHUB_EJSON; e <= 0; e++)
        assert_true(strlen(carehub_strerror(e)) > 3);
    assert_non_null(strstr(carehub_strerror(-99), "unknown"));
    assert_true(strlen(carehub_version()) >= 5);
    assert_int_equal(carehub_poll(NULL, 0), CAREHUB_EINVAL);
    assert_int_equal(carehub_pending(NULL), 0);
    carehub_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spool_order_dedupe_remove_persist),
        cmocka_unit_test(test_spool_damaged_record_skipped),
        cmocka_unit_test(test_spool_open_errors),
        cmocka_unit_test(test_spool_dir_checks),
        cmocka_unit_test(test_jsonl_lines),
        cmocka_unit_test(test_jsonl_too_long),
        cmocka_unit_test(test_jsonl_follow),
        cmocka_unit_test(test_line_id),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_api_arguments),
        cmocka_unit_test(test_api_read_key),
        cmocka_unit_test(test_api_read_secret_key),
        cmocka_unit_test(test_cli_private_files),
        cmocka_unit_test(test_api_no_spool),
        cmocka_unit_test(test_api_submit_spools),
        cmocka_unit_test(test_api_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
