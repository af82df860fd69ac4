/*
 * test_store.c — unit tests for broker/store.c: group commit, idempotency, case
 * joining, persistence, map growth and a map that cannot grow.
 *
 * Each test opens a fresh LMDB environment under a mkdtemp() directory and
 * removes it afterwards. Records are read back with case_get_event() /
 * case_get() and decoded with msgpack-c, as the broker's readers will.
 */
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <lmdb.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "case.h"
#include "store.h"

/* ---- fixture ------------------------------------------------------------------ */

typedef struct {
    char base[64];  /* the mkdtemp() directory */
    char dir[96];   /* the data dir inside it (created by store_open) */
    store_t *st;
} fx_t;

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_rf(sub);
        }
        closedir(d);
        (void)rmdir(path);
    } else {
        (void)unlink(path);
    }
}

static store_t *open_store(fx_t *fx, uint64_t map_size, uint64_t map_max)
{
    char err[512] = "";
    store_t *st = store_open(fx->dir, map_size, map_max, err, sizeof err);
    if (!st)
        fail_msg("store_open(%s): %s", fx->dir, err);
    return st;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    snprintf(fx->base, sizeof fx->base, "/tmp/carehub-test-store-XXXXXX");
    if (!mkdtemp(fx->base)) {
        free(fx);
        return -1;
    }
    snprintf(fx->dir, sizeof fx->dir, "%s/data", fx->base);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    store_close(&fx->st);
    rm_rf(fx->base);
    free(fx);
    return 0;
}

/* A packed body: {"child": {"id": child}, "n": n} plus `pad` bytes of note. */
typedef struct {
    char *data;
    size_t len;
} body_t;

static body_t make_body(const char *child, int n, size_t pad)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, pad ? 3 : 2);
    msgpack_pack_str(&pk, 5);
    msgpack_pack_str_body(&pk, "child", 5);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str(&pk, 2);
    msgpack_pack_str_body(&pk, "id", 2);
    if (child) {
        msgpack_pack_str(&pk, strlen(child));
        msgpack_pack_str_body(&pk, child, strlen(child));
    } else {
        msgpack_pack_nil(&pk);
    }
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "n", 1);
    msgpack_pack_int(&pk, n);
    if (pad) {
        msgpack_pack_str(&pk, 4);
        msgpack_pack_str_body(&pk, "note", 4);
        char *note = malloc(pad);
        assert_non_null(note);
        for (size_t i = 0; i < pad; i++)
            note[i] = (char)('a' + (i + (size_t)n) % 26);
        msgpack_pack_str(&pk, pad);
        msgpack_pack_str_body(&pk, note, pad);
        free(note);
    }
    body_t b = {sb.data, sb.size}; /* owned by the caller: free(b.data) */
    return b;
}

/* Fill one item. Strings must outlive the case_put_events() call. */
static case_event_t ev(const char *agent, const char *ref, const char *type, const char *child,
                        int severity, const body_t *b)
{
    case_event_t e;
    memset(&e, 0, sizeof e);
    e.agent = agent;
    e.ref = ref;
    e.type = type;
    e.at = 1764000000000LL;
    e.received = 1764000000500LL;
    e.child_id = child;
    e.severity = severity;
    e.body = b->data;
    e.body_len = b->len;
    e.status = CASE_ITEM_PENDING;
    return e;
}

/* The number in "ev-000000000042" / "case-0000000007". */
static unsigned long long id_num(const char *id)
{
    const char *dash = strchr(id, '-');
    assert_non_null(dash);
    char *end;
    unsigned long long n = strtoull(dash + 1, &end, 10);
    assert_true(*end == '\0' && end > dash + 1);
    return n;
}

/* A decoded record. */
typedef struct {
    char *raw;
    size_t len;
    msgpack_unpacked u;
} rec_t;

static void rec_get(store_t *st, int is_case, const char *id, rec_t *r)
{
    store_rc_t rc = is_case ? case_get(st, id, &r->raw, &r->len)
                            : case_get_event(st, id, &r->raw, &r->len);
    if (rc != STORE_OK)
        fail_msg("reading %s: %s", id, store_strerror(rc));
    size_t off = 0;
    msgpack_unpacked_init(&r->u);
    assert_int_equal(msgpack_unpack_next(&r->u, r->raw, r->len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, r->len);
    assert_int_equal(r->u.data.type, MSGPACK_OBJECT_MAP);
}

static void rec_free(rec_t *r)
{
    msgpack_unpacked_destroy(&r->u);
    free(r->raw);
}

static const msgpack_object *rec_field(const rec_t *r, const char *key)
{
    const msgpack_object_map *m = &r->u.data.via.map;
    for (uint32_t i = 0; i < m->size; i++)
        if (m->ptr[i].key.type == MSGPACK_OBJECT_STR && m->ptr[i].key.via.str.size == strlen(key) &&
            memcmp(m->ptr[i].key.via.str.ptr, key, strlen(key)) == 0)
            return &m->ptr[i].val;
    fail_msg("record has no field %s", key);
    return NULL;
}

static void assert_field_str(const rec_t *r, const char *key, const char *want)
{
    const msgpack_object *o = rec_field(r, key);
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    if (o->via.str.size != strlen(want) || memcmp(o->via.str.ptr, want, strlen(want)) != 0)
        fail_msg("field %s is \"%.*s\", want \"%s\"", key, (int)o->via.str.size, o->via.str.ptr, want);
}

static int64_t field_int(const rec_t *r, const char *key)
{
    const msgpack_object *o = rec_field(r, key);
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    assert_int_equal(o->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    return o->via.i64;
}

/* Case record: severity name and event count. */
static void assert_case(store_t *st, const char *case_id, const char *severity, int64_t events)
{
    rec_t r;
    rec_get(st, 1, case_id, &r);
    assert_field_str(&r, "id", case_id);
    assert_field_str(&r, "severity", severity);
    assert_field_str(&r, "status", "open");
    if (field_int(&r, "events") != events)
        fail_msg("case %s has %lld events, want %lld", case_id, (long long)field_int(&r, "events"),
                 (long long)events);
    rec_free(&r);
}

static uint64_t data_file_size(const fx_t *fx)
{
    char f[160];
    struct stat sb;
    snprintf(f, sizeof f, "%s/data.mdb", fx->dir);
    assert_int_equal(stat(f, &sb), 0);
    return (uint64_t)sb.st_size;
}

static store_rc_t put1(store_t *st, case_event_t *e) { return case_put_events(st, e, 1, NULL, NULL); }

/* ---- tests ---------------------------------------------------------------------- */

static void test_put_batch_ids(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c-1", 1, 0);
    case_event_t e[3] = {
        ev("school-1", "m-1", "absence", NULL, 1, &b),
        ev("school-1", "m-2", "absence", NULL, 1, &b),
        ev("school-2", "m-1", "absence", NULL, 1, &b),
    };
    assert_int_equal(case_put_events(fx->st, e, 3, NULL, NULL), STORE_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(e[i].status, CASE_ITEM_STORED);
        assert_true(strlen(e[i].event_id) > 0 && strlen(e[i].event_id) < STORE_ID_MAX);
        assert_true(strlen(e[i].case_id) > 0 && strlen(e[i].case_id) < STORE_ID_MAX);
        /* ids are unique and in arrival order, without gaps */
        assert_int_equal(id_num(e[i].event_id), (unsigned long long)i + 1);
        for (int j = 0; j < i; j++) {
            assert_string_not_equal(e[i].event_id, e[j].event_id);
            assert_string_not_equal(e[i].case_id, e[j].case_id); /* no child: one case each */
        }
    }
    /* LMDB sorts keys bytewise: the zero-padded ids must sort in arrival order. */
    assert_true(strcmp(e[0].event_id, e[1].event_id) < 0);
    assert_true(strcmp(e[1].event_id, e[2].event_id) < 0);
    free(b.data);
}

static void test_empty_batch(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    assert_int_equal(case_put_events(fx->st, NULL, 0, NULL, NULL), STORE_OK);
    body_t b = make_body("c", 1, 0);
    case_event_t e = ev("a", "r", "absence", NULL, 1, &b);
    assert_int_equal(put1(fx->st, &e), STORE_OK);
    assert_int_equal(id_num(e.event_id), 1);
    free(b.data);
}

static void test_duplicate(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c-1", 1, 0), b2 = make_body("c-other", 2, 10);
    case_event_t first = ev("school-1", "m-1", "absence", "c-1", 1, &b);
    assert_int_equal(put1(fx->st, &first), STORE_OK);
    assert_int_equal(first.status, CASE_ITEM_STORED);

    /* the same (agent, ref), even with other content: the first answer */
    case_event_t again = ev("school-1", "m-1", "mandatory_report", "c-other", 3, &b2);
    assert_int_equal(put1(fx->st, &again), STORE_OK);
    assert_int_equal(again.status, CASE_ITEM_DUPLICATE);
    assert_string_equal(again.event_id, first.event_id);
    assert_string_equal(again.case_id, first.case_id);
    /* nothing changed: the case still has one event, the event its first body */
    assert_case(fx->st, first.case_id, "normal", 1);
    rec_t r;
    rec_get(fx->st, 0, first.event_id, &r);
    assert_field_str(&r, "type", "absence");
    rec_free(&r);

    /* the same ref from another agent is another event */
    case_event_t other = ev("school-2", "m-1", "absence", "c-9", 1, &b);
    assert_int_equal(put1(fx->st, &other), STORE_OK);
    assert_int_equal(other.status, CASE_ITEM_STORED);
    assert_string_not_equal(other.event_id, first.event_id);
    /* the duplicate consumed no id */
    assert_int_equal(id_num(other.event_id), id_num(first.event_id) + 1);

    /* agent/ref splitting is exact: ("ab","c") is not ("a","bc") */
    case_event_t s1 = ev("ab", "c", "absence", NULL, 1, &b);
    case_event_t s2 = ev("a", "bc", "absence", NULL, 1, &b);
    assert_int_equal(put1(fx->st, &s1), STORE_OK);
    assert_int_equal(put1(fx->st, &s2), STORE_OK);
    assert_int_equal(s1.status, CASE_ITEM_STORED);
    assert_int_equal(s2.status, CASE_ITEM_STORED);
    free(b.data);
    free(b2.data);
}

static void test_duplicate_within_batch(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c-1", 1, 0);
    case_event_t e[4] = {
        ev("school-1", "m-1", "absence", "c-1", 1, &b),
        ev("school-1", "m-1", "absence", "c-1", 1, &b), /* retry in the same batch */
        ev("school-1", "m-2", "absence", "c-1", 1, &b),
        ev("school-1", "m-1", "absence", "c-1", 3, &b), /* and again */
    };
    assert_int_equal(case_put_events(fx->st, e, 4, NULL, NULL), STORE_OK);
    assert_int_equal(e[0].status, CASE_ITEM_STORED);
    assert_int_equal(e[1].status, CASE_ITEM_DUPLICATE);
    assert_int_equal(e[2].status, CASE_ITEM_STORED);
    assert_int_equal(e[3].status, CASE_ITEM_DUPLICATE);
    assert_string_equal(e[1].event_id, e[0].event_id);
    assert_string_equal(e[1].case_id, e[0].case_id);
    assert_string_equal(e[3].event_id, e[0].event_id);
    assert_int_equal(id_num(e[2].event_id), id_num(e[0].event_id) + 1);
    /* one case with the two stored events; the duplicate's severity did not count */
    assert_string_equal(e[2].case_id, e[0].case_id);
    assert_case(fx->st, e[0].case_id, "normal", 2);
    free(b.data);
}

/* Whether (agent, ref) has an idempotency entry in LMDB itself (not one still
 * waiting in memory): read through the store's own read transaction. */
typedef struct {
    const char *agent, *ref;
    int found;
} idem_probe_t;

static int idem_probe(store_txn_t *t, void *ud)
{
    idem_probe_t *p = ud;
    char key[160];
    size_t kl = store_pair_key(key, sizeof key, p->agent, p->ref);
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_IDEM, key, kl, &v, &vl);
    p->found = rc == 0;
    return rc == STORE_NOTFOUND ? 0 : rc;
}

static int idem_on_disk(store_t *st, const char *agent, const char *ref)
{
    idem_probe_t p = {agent, ref, -1};
    assert_int_equal(store_read(st, idem_probe, &p), STORE_OK);
    return p.found;
}

/* The idempotency entry waits in memory with the case index and is written in
 * bulk: a retry finds it either way, with the first answer. */
static void test_duplicate_in_memory_then_on_disk(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c-1", 1, 0);
    case_event_t first = ev("school-1", "m-1", "absence", "c-1", 1, &b);
    assert_int_equal(put1(fx->st, &first), STORE_OK);
    assert_int_equal(first.status, CASE_ITEM_STORED);
    /* the precondition: not written yet (else the next put tests the disk path) */
    assert_int_equal(idem_on_disk(fx->st, "school-1", "m-1"), 0);
    case_event_t again = ev("school-1", "m-1", "absence", "c-1", 1, &b);
    assert_int_equal(put1(fx->st, &again), STORE_OK);
    assert_int_equal(again.status, CASE_ITEM_DUPLICATE);
    assert_string_equal(again.event_id, first.event_id);
    assert_string_equal(again.case_id, first.case_id);

    assert_int_equal(store_flush_index(fx->st), STORE_OK);
    assert_int_equal(idem_on_disk(fx->st, "school-1", "m-1"), 1);
    case_event_t third = ev("school-1", "m-1", "absence", "c-1", 1, &b);
    assert_int_equal(put1(fx->st, &third), STORE_OK);
    assert_int_equal(third.status, CASE_ITEM_DUPLICATE);
    assert_string_equal(third.event_id, first.event_id);
    assert_string_equal(third.case_id, first.case_id);
    /* many at once: the in-memory table grows (past its first 2048 slots) and
     * still finds every one */
    enum { MANY = 3000 };
    static case_event_t es[MANY];
    static char refs[MANY][16];
    for (int i = 0; i < MANY; i++) {
        snprintf(refs[i], sizeof refs[i], "n-%d", i);
        es[i] = ev("school-2", refs[i], "absence", "c-2", 1, &b);
    }
    assert_int_equal(case_put_events(fx->st, es, MANY, NULL, NULL), STORE_OK);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(es[i].status, CASE_ITEM_STORED);
    char want[STORE_ID_MAX];
    memcpy(want, es[MANY / 2].event_id, sizeof want);
    for (int i = 0; i < MANY; i++)
        es[i] = ev("school-2", refs[i], "absence", "c-2", 1, &b);
    assert_int_equal(case_put_events(fx->st, es, MANY, NULL, NULL), STORE_OK);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(es[i].status, CASE_ITEM_DUPLICATE);
    assert_string_equal(es[MANY / 2].event_id, want);
    free(b.data);
}

/* A write transaction that fails after storing an event: the event never was,
 * so its ref is not a duplicate afterwards (the waiting entry went with it). */
static int put_then_fail(store_txn_t *t, void *ud)
{
    case_event_t *e = ud;
    int rc = case_txn_put_events(t, e, 1, NULL, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(e->status, CASE_ITEM_STORED); /* the precondition */
    return EIO;
}

static void test_aborted_event_is_no_duplicate(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c-1", 1, 0);
    case_event_t lost = ev("school-1", "m-9", "absence", "c-1", 1, &b);
    assert_int_not_equal(store_write(fx->st, put_then_fail, &lost), STORE_OK);
    case_event_t e = ev("school-1", "m-9", "absence", "c-1", 1, &b);
    assert_int_equal(put1(fx->st, &e), STORE_OK);
    assert_int_equal(e.status, CASE_ITEM_STORED);
    free(b.data);
}

/* Deleting a case's case_events (store_del_case_events: a purge, which deletes its events' idempotency
 * entries too) drops its entries still waiting in memory: its refs are new
 * again, and nothing is written for it later. Stored and purged in one write
 * transaction, so that its entries certainly wait (a sweep runs only at the
 * start of one). */
typedef struct {
    case_event_t *e;
    int listed_before; /* the case's events the transaction saw before the purge */
} purge_run_t;

static int count_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k, (void)kl, (void)v, (void)vl;
    ++*(int *)ud;
    return 0;
}

static int put_then_purge(store_txn_t *t, void *ud)
{
    purge_run_t *p = ud;
    int rc = case_txn_put_events(t, p->e, 1, NULL, NULL);
    if (rc || (rc = store_each_case_event(t, p->e->case_id, count_visit, &p->listed_before)))
        return rc;
    char key[160];
    size_t kl = store_pair_key(key, sizeof key, p->e->agent, p->e->ref);
    if ((rc = store_del(t, STORE_DB_IDEM, key, kl, NULL, 0)))
        return rc;
    return store_del_case_events(t, p->e->case_id);
}

typedef struct {
    const char *case_id;
    int n;
} case_count_t;

static int count_case_events(store_txn_t *t, void *ud)
{
    case_count_t *c = ud;
    return store_each_case_event(t, c->case_id, count_visit, &c->n);
}

static void test_purge_drops_waiting_entries(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c-1", 1, 0);
    case_event_t e = ev("school-1", "p-1", "absence", "c-p", 1, &b);
    purge_run_t p = {&e, 0};
    assert_int_equal(store_write(fx->st, put_then_purge, &p), STORE_OK);
    assert_int_equal(e.status, CASE_ITEM_STORED);
    assert_int_equal(p.listed_before, 1); /* the precondition: it waited, and was listed */
    case_count_t c = {e.case_id, 0};
    assert_int_equal(store_read(fx->st, count_case_events, &c), STORE_OK);
    assert_int_equal(c.n, 0);
    case_event_t again = ev("school-1", "p-1", "absence", "c-q", 1, &b);
    assert_int_equal(put1(fx->st, &again), STORE_OK);
    assert_int_equal(again.status, CASE_ITEM_STORED);
    assert_string_not_equal(again.event_id, e.event_id);
    assert_int_equal(store_flush_index(fx->st), STORE_OK);
    c.n = 0;
    assert_int_equal(store_read(fx->st, count_case_events, &c), STORE_OK);
    assert_int_equal(c.n, 0); /* nothing written for the purged case */
    /* the ref's one entry on disk is the new event's */
    case_event_t third = ev("school-1", "p-1", "absence", "c-q", 1, &b);
    assert_int_equal(put1(fx->st, &third), STORE_OK);
    assert_int_equal(third.status, CASE_ITEM_DUPLICATE);
    assert_string_equal(third.event_id, again.event_id);
    free(b.data);
}

static void test_case_joining(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("x", 1, 0);
    case_event_t e[7] = {
        ev("s", "1", "absence", "child-A", 1, &b),
        ev("s", "2", "absence", "child-A", 1, &b),          /* same type, same child: join */
        ev("s", "3", "absence", "child-B", 1, &b),          /* other child: other case */
        ev("r", "4", "mandatory_report", "child-A", 1, &b), /* same child, other type */
        ev("s", "5", "absence", NULL, 1, &b),               /* no child: own case */
        ev("s", "6", "absence", NULL, 1, &b),               /* ... each */
        ev("t", "7", "absence", "child-A", 1, &b),          /* another agent, same child: join */
    };
    assert_int_equal(case_put_events(fx->st, e, 7, NULL, NULL), STORE_OK);
    for (int i = 0; i < 7; i++)
        assert_int_equal(e[i].status, CASE_ITEM_STORED);
    assert_string_equal(e[1].case_id, e[0].case_id);
    assert_string_equal(e[6].case_id, e[0].case_id);
    assert_string_not_equal(e[2].case_id, e[0].case_id);
    assert_string_not_equal(e[3].case_id, e[0].case_id);
    assert_string_not_equal(e[3].case_id, e[2].case_id);
    assert_string_not_equal(e[4].case_id, e[5].case_id);
    for (int i = 0; i < 4; i++) {
        assert_string_not_equal(e[4].case_id, e[i].case_id);
        assert_string_not_equal(e[5].case_id, e[i].case_id);
    }
    assert_case(fx->st, e[0].case_id, "normal", 3);
    assert_case(fx->st, e[2].case_id, "normal", 1);
    assert_case(fx->st, e[3].case_id, "normal", 1);
    assert_case(fx->st, e[4].case_id, "normal", 1);

    /* A type\0child key must not be confused with another split of the same bytes. */
    case_event_t f[2] = {
        ev("s", "8", "ab", "c", 1, &b),
        ev("s", "9", "a", "bc", 1, &b),
    };
    assert_int_equal(case_put_events(fx->st, f, 2, NULL, NULL), STORE_OK);
    assert_string_not_equal(f[0].case_id, f[1].case_id);

    /* Joining also works across batches. */
    case_event_t later = ev("s", "10", "absence", "child-B", 1, &b);
    assert_int_equal(put1(fx->st, &later), STORE_OK);
    assert_string_equal(later.case_id, e[2].case_id);
    assert_case(fx->st, e[2].case_id, "normal", 2);
    free(b.data);
}

static void test_case_record(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("k", 1, 0);
    static const int sev[] = {1, 3, 0, 2};
    static const char *refs[] = {"a", "b", "c", "d"};
    char first_case[STORE_ID_MAX] = "";
    for (int i = 0; i < 4; i++) {
        case_event_t e = ev("s", refs[i], "absence", "k", sev[i], &b);
        e.received = 1000 + i;
        assert_int_equal(put1(fx->st, &e), STORE_OK);
        if (i == 0)
            strcpy(first_case, e.case_id);
        assert_string_equal(e.case_id, first_case);
    }
    /* critical (3) stays the case's severity after a later low one */
    rec_t r;
    rec_get(fx->st, 1, first_case, &r);
    assert_field_str(&r, "severity", "critical");
    assert_field_str(&r, "type", "absence");
    assert_field_str(&r, "status", "open");
    assert_int_equal(field_int(&r, "events"), 4);
    assert_int_equal(field_int(&r, "opened"), 1000);
    assert_int_equal(field_int(&r, "updated"), 1003);
    rec_free(&r);

    /* Severity rises with a later event. */
    case_event_t lo = ev("s", "e", "absence", "k2", 0, &b);
    case_event_t hi = ev("s", "f", "absence", "k2", 2, &b);
    assert_int_equal(put1(fx->st, &lo), STORE_OK);
    assert_case(fx->st, lo.case_id, "low", 1);
    assert_int_equal(put1(fx->st, &hi), STORE_OK);
    assert_case(fx->st, lo.case_id, "high", 2);

    char *raw = NULL;
    size_t len = 0;
    assert_int_equal(case_get(fx->st, "case-9999999999", &raw, &len), STORE_NOTFOUND);
    free(b.data);
}

/* No record has an empty id or one longer than any key: such a lookup is
 * "not found" (store.h: the record asked for does not exist), not STORE_IO
 * ("LMDB or the file system failed"), which callers answer as an outage. */
static void test_get_impossible_id_notfound(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    char *raw = NULL;
    size_t len = 0;
    char long_id[600];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_int_equal(case_get_event(fx->st, "", &raw, &len), STORE_NOTFOUND);
    assert_int_equal(case_get(fx->st, "", &raw, &len), STORE_NOTFOUND);
    assert_int_equal(case_get_event(fx->st, long_id, &raw, &len), STORE_NOTFOUND);
    assert_int_equal(case_get(fx->st, long_id, &raw, &len), STORE_NOTFOUND);
}

static void test_refuse(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c-1", 1, 0);
    case_event_t first = ev("s", "m-1", "absence", "c-1", 1, &b);
    assert_int_equal(put1(fx->st, &first), STORE_OK);

    /* refused and new: nothing stored, no id used */
    case_event_t bad = ev("s", "m-2", "absence", "c-1", 3, &b);
    bad.refuse = 1;
    assert_int_equal(put1(fx->st, &bad), STORE_OK);
    assert_int_equal(bad.status, CASE_ITEM_REFUSED);
    assert_case(fx->st, first.case_id, "normal", 1); /* not joined, severity untouched */

    case_event_t next = ev("s", "m-3", "absence", "c-1", 1, &b);
    assert_int_equal(put1(fx->st, &next), STORE_OK);
    assert_int_equal(next.status, CASE_ITEM_STORED);
    assert_int_equal(id_num(next.event_id), id_num(first.event_id) + 1); /* no gap */
    char *raw = NULL;
    size_t len = 0;
    char skipped[STORE_ID_MAX];
    snprintf(skipped, sizeof skipped, "ev-%012llu", id_num(next.event_id) + 1);
    assert_int_equal(case_get_event(fx->st, skipped, &raw, &len), STORE_NOTFOUND);

    /* the refused ref was not remembered: a valid resend is stored */
    case_event_t resend = ev("s", "m-2", "absence", "c-1", 1, &b);
    assert_int_equal(put1(fx->st, &resend), STORE_OK);
    assert_int_equal(resend.status, CASE_ITEM_STORED);
    assert_int_equal(id_num(resend.event_id), id_num(next.event_id) + 1);

    /* refused but a duplicate: the first answer (the idempotency key wins) */
    case_event_t retry = ev("s", "m-1", "absence", "c-1", 1, &b);
    retry.refuse = 1;
    assert_int_equal(put1(fx->st, &retry), STORE_OK);
    assert_int_equal(retry.status, CASE_ITEM_DUPLICATE);
    assert_string_equal(retry.event_id, first.event_id);
    assert_string_equal(retry.case_id, first.case_id);

    /* ... also when the first one is in the same batch */
    case_event_t pair[3] = {
        ev("s", "m-7", "absence", "c-1", 1, &b),
        ev("s", "m-7", "absence", "c-1", 1, &b),
        ev("s", "m-8", "absence", "c-1", 1, &b),
    };
    pair[1].refuse = 1;
    pair[2].refuse = 1;
    assert_int_equal(case_put_events(fx->st, pair, 3, NULL, NULL), STORE_OK);
    assert_int_equal(pair[0].status, CASE_ITEM_STORED);
    assert_int_equal(pair[1].status, CASE_ITEM_DUPLICATE);
    assert_string_equal(pair[1].event_id, pair[0].event_id);
    assert_int_equal(pair[2].status, CASE_ITEM_REFUSED);
    assert_case(fx->st, first.case_id, "normal", 4);
    free(b.data);
}

static void test_get_event(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c-42", 7, 300);
    case_event_t e = ev("school-0042", "msg:1.a_b-c", "absence", "c-42", 2, &b);
    e.at = 1700000000123LL;
    e.received = 1700000000456LL;
    assert_int_equal(put1(fx->st, &e), STORE_OK);

    rec_t r;
    rec_get(fx->st, 0, e.event_id, &r);
    assert_field_str(&r, "id", e.event_id);
    assert_field_str(&r, "agent", "school-0042");
    assert_field_str(&r, "ref", "msg:1.a_b-c");
    assert_field_str(&r, "type", "absence");
    assert_field_str(&r, "case", e.case_id);
    assert_field_str(&r, "severity", "high");
    assert_true(field_int(&r, "at") == 1700000000123LL);
    assert_true(field_int(&r, "received") == 1700000000456LL);
    /* the body is the caller's msgpack, byte for byte: find it in the record */
    const msgpack_object *body = rec_field(&r, "body");
    assert_int_equal(body->type, MSGPACK_OBJECT_MAP);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *body);
    assert_int_equal(sb.size, b.len);
    assert_memory_equal(sb.data, b.data, b.len);
    msgpack_sbuffer_destroy(&sb);
    int found = 0;
    for (size_t off = 0; off + b.len <= r.len; off++)
        if (memcmp(r.raw + off, b.data, b.len) == 0)
            found = 1;
    assert_true(found);
    rec_free(&r);

    char *raw = (char *)0x1;
    size_t len = 99;
    assert_int_equal(case_get_event(fx->st, "ev-999999999999", &raw, &len), STORE_NOTFOUND);
    assert_int_equal(case_get_event(fx->st, e.case_id, &raw, &len), STORE_NOTFOUND);
    free(b.data);
}

/* The caller may reuse or free its input after the call: the store copied it. */
static void test_inputs_copied(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c", 1, 50);
    char agent[16] = "agent-x", ref[16] = "ref-1", type[16] = "absence", child[16] = "kid";
    case_event_t e = ev(agent, ref, type, child, 1, &b);
    assert_int_equal(put1(fx->st, &e), STORE_OK);
    body_t keep = {malloc(b.len), b.len};
    memcpy(keep.data, b.data, b.len);
    memset(b.data, 0xc1, b.len);
    memset(agent, 'Z', sizeof agent - 1);
    memset(child, 'Z', sizeof child - 1);
    rec_t r;
    rec_get(fx->st, 0, e.event_id, &r);
    assert_field_str(&r, "agent", "agent-x");
    assert_true(r.len >= keep.len && memcmp(r.raw + r.len - keep.len, keep.data, keep.len) == 0);
    rec_free(&r);
    /* and the join key too */
    case_event_t f = ev("agent-y", "ref-2", "absence", "kid", 1, &keep);
    assert_int_equal(put1(fx->st, &f), STORE_OK);
    assert_string_equal(f.case_id, e.case_id);
    free(b.data);
    free(keep.data);
}

/* Entries in one named database, read with LMDB directly (no store_open,
 * which would start rebuilding what waits). */
static uint64_t count_entries(const char *dir, const char *db)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_stat ms;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    assert_int_equal(mdb_stat(txn, dbi, &ms), 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return ms.ms_entries;
}

/* The case index lags the events: a process killed before writing it loses
 * nothing, because the next open rebuilds the missing entries from the events. */
static void test_case_index_rebuilt_after_crash(void **state)
{
    fx_t *fx = *state;
    body_t b = make_body("c", 1, 0);
    char case_id[STORE_ID_MAX] = "";
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* the "broker": store events of one case, then die without closing */
        store_t *st = open_store(fx, 1 << 20, 1 << 24);
        for (int i = 0; i < 5; i++) {
            char ref[16];
            snprintf(ref, sizeof ref, "k-%d", i);
            case_event_t e = ev("s", ref, "absence", "child-k", 1, &b);
            if (put1(st, &e) != STORE_OK || e.status != CASE_ITEM_STORED)
                _exit(2);
        }
        _exit(0); /* no store_close: the index entries were never written */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* the precondition: some idempotency entries died with the process */
    uint64_t written = count_entries(fx->dir, "idem");
    if (written >= 5)
        fail_msg("all 5 idempotency entries were written before the crash: nothing to rebuild");
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    for (int i = 0; i < 5; i++) { /* a retry after the crash gets the first answer */
        char ref[16], want[STORE_ID_MAX];
        snprintf(ref, sizeof ref, "k-%d", i);
        snprintf(want, sizeof want, "ev-%012d", i + 1);
        case_event_t r = ev("s", ref, "absence", "child-k", 1, &b);
        assert_int_equal(put1(fx->st, &r), STORE_OK);
        assert_int_equal(r.status, CASE_ITEM_DUPLICATE);
        assert_string_equal(r.event_id, want);
    }
    case_event_t j = ev("s", "k-5", "absence", "child-k", 1, &b);
    assert_int_equal(put1(fx->st, &j), STORE_OK);
    memcpy(case_id, j.case_id, sizeof case_id);
    assert_case(fx->st, case_id, "normal", 6); /* 5 rebuilt + 1 new */
    /* written now, and still 6 after another reopen */
    assert_int_equal(store_flush_index(fx->st), STORE_OK);
    store_close(&fx->st);
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    assert_case(fx->st, case_id, "normal", 6);
    free(b.data);
}

/* The state of the case_events index on disk, read with LMDB directly (no
 * store_open, which would start rebuilding it): meta "case_events.upto", how
 * many entries name an event after it (written out of order, ahead of upto)
 * and how many events after it have no entry yet. Every event has exactly one
 * entry once written, so missing = (last event - upto) - ahead. */
typedef struct {
    uint64_t upto, last, ahead, missing;
} index_state_t;

static uint64_t ev_number(const MDB_val *v)
{
    uint64_t n = 0;
    for (size_t i = 0; i < v->mv_size; i++) {
        char c = ((const char *)v->mv_data)[i];
        if (c >= '0' && c <= '9')
            n = n * 10 + (uint64_t)(c - '0');
    }
    return n;
}

static index_state_t read_index_state(const char *dir)
{
    index_state_t s = {0, 0, 0, 0};
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, events, idx;
    MDB_cursor *cur;
    MDB_val k = {16, (void *)"case_events.upto"}, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_dbi_open(txn, "events", 0, &events), 0);
    assert_int_equal(mdb_dbi_open(txn, "case_events", 0, &idx), 0);
    if (mdb_get(txn, meta, &k, &v) == 0) {
        assert_int_equal(v.mv_size, sizeof s.upto);
        memcpy(&s.upto, v.mv_data, sizeof s.upto);
    }
    assert_int_equal(mdb_cursor_open(txn, events, &cur), 0);
    if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0)
        s.last = ev_number(&k);
    mdb_cursor_close(cur);
    assert_int_equal(mdb_cursor_open(txn, idx, &cur), 0);
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        if (ev_number(&v) > s.upto)
            s.ahead++;
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    assert_true(s.last >= s.upto + s.ahead);
    s.missing = s.last - s.upto - s.ahead;
    return s;
}

/* The sweep writes the index one slice of cases at a time, so the index holds
 * entries past meta "case_events.upto" when the process dies: the next open
 * must rebuild only the missing ones (a case listing an event twice is wrong). */
static void test_case_index_swept_out_of_order_then_crash(void **state)
{
    fx_t *fx = *state;
    body_t b = make_body("c", 1, 0);
    enum { CHILDREN = 40, ROUNDS = 10 };
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        store_t *st = open_store(fx, 1 << 22, 1 << 26);
        /* round-robin over the children: each case's events spread over all numbers.
         * One batch, so that no sweep runs while they are stored (one event per
         * commit takes long enough here for the sweep to keep up, and the index
         * would never be out of order). */
        static char refs[ROUNDS * CHILDREN][32], kids[ROUNDS * CHILDREN][32];
        static case_event_t es[ROUNDS * CHILDREN];
        for (int r = 0; r < ROUNDS; r++)
            for (int c = 0; c < CHILDREN; c++) {
                int i = r * CHILDREN + c;
                snprintf(refs[i], sizeof refs[i], "r-%d-%d", r, c);
                snprintf(kids[i], sizeof kids[i], "child-%02d", c);
                es[i] = ev("s", refs[i], "absence", kids[i], 1, &b);
            }
        if (case_put_events(st, es, ROUNDS * CHILDREN, NULL, NULL) != STORE_OK)
            _exit(2);
        for (int i = 0; i < ROUNDS * CHILDREN; i++)
            if (es[i].status != CASE_ITEM_STORED)
                _exit(2);
        /* two slices fall due (the sweep's timer is real time, 1/8 s per slice) */
        for (int i = 0; i < 2; i++) {
            struct timespec ts = {0, 140 * 1000 * 1000};
            nanosleep(&ts, NULL);
            char ref[32];
            snprintf(ref, sizeof ref, "late-%d", i);
            case_event_t e = ev("s", ref, "absence", "child-00", 1, &b);
            if (put1(st, &e) != STORE_OK)
                _exit(3);
        }
        _exit(0); /* no store_close: the rest of the index was never written */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The precondition, else this tests nothing: the crash left the index out of
     * order (entries written ahead of upto, and others after upto not written). */
    index_state_t is = read_index_state(fx->dir);
    if (is.last != ROUNDS * CHILDREN + 2 || is.ahead == 0 || is.missing == 0)
        fail_msg("the crash did not leave the index out of order: %llu events, upto %llu, "
                 "%llu entries ahead of upto, %llu missing (want both > 0)",
                 (unsigned long long)is.last, (unsigned long long)is.upto,
                 (unsigned long long)is.ahead, (unsigned long long)is.missing);
    /* the idempotency entries went with the index: some written, some not */
    uint64_t idem = count_entries(fx->dir, "idem");
    if (idem == 0 || idem >= is.last)
        fail_msg("%llu of %llu idempotency entries on disk after the crash: want some, not all",
                 (unsigned long long)idem, (unsigned long long)is.last);
    fx->st = open_store(fx, 1 << 22, 1 << 26);
    {   /* every event sent before the crash is a duplicate now, with its first answer */
        static case_event_t rs[ROUNDS * CHILDREN];
        static char refs[ROUNDS * CHILDREN][32];
        for (int i = 0; i < ROUNDS * CHILDREN; i++) {
            snprintf(refs[i], sizeof refs[i], "r-%d-%d", i / CHILDREN, i % CHILDREN);
            rs[i] = ev("s", refs[i], "absence", "child-00", 1, &b);
        }
        assert_int_equal(case_put_events(fx->st, rs, ROUNDS * CHILDREN, NULL, NULL), STORE_OK);
        for (int i = 0; i < ROUNDS * CHILDREN; i++) {
            char want[STORE_ID_MAX];
            snprintf(want, sizeof want, "ev-%012d", i + 1);
            assert_int_equal(rs[i].status, CASE_ITEM_DUPLICATE);
            assert_string_equal(rs[i].event_id, want);
        }
    }
    for (int c = 0; c < CHILDREN; c++) {
        char ref[32], child[32];
        snprintf(ref, sizeof ref, "again-%d", c);
        snprintf(child, sizeof child, "child-%02d", c);
        case_event_t e = ev("s", ref, "absence", child, 1, &b);
        assert_int_equal(put1(fx->st, &e), STORE_OK);
        assert_int_equal(e.status, CASE_ITEM_STORED);
        assert_case(fx->st, e.case_id, "normal", ROUNDS + 1 + (c == 0 ? 2 : 0));
    }
    assert_int_equal(store_flush_index(fx->st), STORE_OK);
    store_close(&fx->st);
    fx->st = open_store(fx, 1 << 22, 1 << 26);
    case_event_t e = ev("s", "final", "absence", "child-07", 1, &b);
    assert_int_equal(put1(fx->st, &e), STORE_OK);
    assert_case(fx->st, e.case_id, "normal", ROUNDS + 2);
    free(b.data);
}

static void test_persistence(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    body_t b = make_body("c", 1, 0);
    case_event_t e[3] = {
        ev("s", "m-1", "absence", "child-1", 1, &b),
        ev("s", "m-2", "absence", NULL, 1, &b),
        ev("s", "m-3", "online_risk", NULL, 1, &b),
    };
    assert_int_equal(case_put_events(fx->st, e, 3, NULL, NULL), STORE_OK);
    store_close(&fx->st);
    assert_null(fx->st);

    fx->st = open_store(fx, 1 << 20, 1 << 24);
    /* duplicates survive a restart */
    case_event_t dup = ev("s", "m-2", "absence", NULL, 1, &b);
    assert_int_equal(put1(fx->st, &dup), STORE_OK);
    assert_int_equal(dup.status, CASE_ITEM_DUPLICATE);
    assert_string_equal(dup.event_id, e[1].event_id);
    assert_string_equal(dup.case_id, e[1].case_id);
    /* sequence numbers continue: no event or case id is reused */
    case_event_t n = ev("s", "m-4", "absence", NULL, 1, &b);
    assert_int_equal(put1(fx->st, &n), STORE_OK);
    assert_int_equal(n.status, CASE_ITEM_STORED);
    assert_int_equal(id_num(n.event_id), id_num(e[2].event_id) + 1);
    for (int i = 0; i < 3; i++)
        assert_string_not_equal(n.case_id, e[i].case_id);
    assert_int_equal(id_num(n.case_id), id_num(e[2].case_id) + 1);
    /* the open case of a child survives too */
    case_event_t j = ev("s", "m-5", "absence", "child-1", 3, &b);
    assert_int_equal(put1(fx->st, &j), STORE_OK);
    assert_string_equal(j.case_id, e[0].case_id);
    assert_case(fx->st, e[0].case_id, "critical", 2);
    /* the records are there */
    rec_t r;
    rec_get(fx->st, 0, e[2].event_id, &r);
    assert_field_str(&r, "type", "online_risk");
    rec_free(&r);

    /* a third open, with a map_size smaller than the data: the map holds the
     * data (store.h: "or the existing file's size if larger"), and grows again */
    store_close(&fx->st);
    fx->st = open_store(fx, 64 << 10, 1 << 24);
    assert_true(store_map_size(fx->st) >= data_file_size(fx));
    case_event_t k = ev("s", "m-6", "absence", NULL, 1, &b);
    assert_int_equal(put1(fx->st, &k), STORE_OK);
    assert_int_equal(id_num(k.event_id), id_num(j.event_id) + 1);
    free(b.data);
}

/* Start at 64 KiB and grow by doubling, transparently, to hold several MiB. */
static void test_map_growth(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 64 << 10, 64 << 20);
    uint64_t start = store_map_size(fx->st);
    assert_true(start >= (64u << 10));
    enum { BATCHES = 40, PER = 50 };
    body_t b = make_body("c", 1, 1500);
    char refs[BATCHES * PER][16];
    unsigned long long expect = 1;
    for (int i = 0; i < BATCHES; i++) {
        case_event_t e[PER];
        for (int k = 0; k < PER; k++) {
            snprintf(refs[i * PER + k], sizeof refs[0], "r-%d", i * PER + k);
            e[k] = ev("s", refs[i * PER + k], "absence", (k % 3) ? NULL : "kid", k % 4, &b);
        }
        store_rc_t rc = case_put_events(fx->st, e, PER, NULL, NULL);
        if (rc != STORE_OK)
            fail_msg("batch %d: %s (map %llu)", i, store_strerror(rc),
                     (unsigned long long)store_map_size(fx->st));
        for (int k = 0; k < PER; k++) {
            assert_int_equal(e[k].status, CASE_ITEM_STORED);
            assert_int_equal(id_num(e[k].event_id), expect++);
        }
    }
    uint64_t end = store_map_size(fx->st);
    assert_true(end > start);
    assert_true(end >= (uint64_t)BATCHES * PER * 1500); /* it holds ~3 MiB of bodies */
    assert_true(end <= (64u << 20));
    /* every event is readable, the first and the last */
    char id[STORE_ID_MAX];
    rec_t r;
    snprintf(id, sizeof id, "ev-%012d", 1);
    rec_get(fx->st, 0, id, &r);
    assert_field_str(&r, "ref", "r-0");
    rec_free(&r);
    snprintf(id, sizeof id, "ev-%012d", BATCHES * PER);
    rec_get(fx->st, 0, id, &r);
    assert_field_str(&r, "ref", refs[BATCHES * PER - 1]);
    rec_free(&r);
    /* the join case collected every third event of every batch */
    case_event_t probe = ev("s", "probe", "absence", "kid", 0, &b);
    assert_int_equal(put1(fx->st, &probe), STORE_OK);
    assert_int_equal(id_num(probe.event_id), expect++);
    assert_case(fx->st, probe.case_id, "critical", BATCHES * ((PER + 2) / 3) + 1);
    /* reopened at the small size, the map holds the data and grows again */
    store_close(&fx->st);
    fx->st = open_store(fx, 64 << 10, 64 << 20);
    assert_true(store_map_size(fx->st) >= data_file_size(fx));
    for (int i = 0; i < 5; i++) {
        case_event_t e[PER];
        char more[PER][32];
        for (int k = 0; k < PER; k++) {
            snprintf(more[k], sizeof more[0], "more-%d-%d", i, k);
            e[k] = ev("s", more[k], "absence", NULL, 1, &b);
        }
        assert_int_equal(case_put_events(fx->st, e, PER, NULL, NULL), STORE_OK);
        for (int k = 0; k < PER; k++)
            assert_int_equal(id_num(e[k].event_id), expect++);
    }
    free(b.data);
}

/* map_size == map_max: the store fills; a full batch stores nothing at all. */
static void test_map_full(void **state)
{
    fx_t *fx = *state;
    const uint64_t small = 256 << 10;
    fx->st = open_store(fx, small, small);
    enum { PER = 20 };
    body_t b = make_body("c", 1, 1000);
    static char refs[4000][16];
    int n_refs = 0, full = 0;
    unsigned long long last_event = 0, last_case = 0;
    case_event_t e[PER];
    for (int i = 0; i < 200 && !full; i++) {
        for (int k = 0; k < PER; k++) {
            snprintf(refs[n_refs], sizeof refs[0], "r-%d", n_refs);
            e[k] = ev("s", refs[n_refs], "absence", (k % 2) ? NULL : "kid", 1, &b);
            n_refs++;
        }
        /* one duplicate of an earlier event in each batch after the first */
        if (i > 0)
            e[PER - 1] = ev("s", "r-0", "absence", "kid", 1, &b);
        store_rc_t rc = case_put_events(fx->st, e, PER, NULL, NULL);
        if (rc == STORE_FULL) {
            full = 1;
            for (int k = 0; k < PER; k++)
                if (e[k].status != CASE_ITEM_PENDING)
                    fail_msg("item %d of the failed batch has status %d, want PENDING", k,
                             (int)e[k].status);
            break;
        }
        assert_int_equal(rc, STORE_OK);
        for (int k = 0; k < PER; k++) {
            if (e[k].status == CASE_ITEM_STORED) {
                assert_int_equal(id_num(e[k].event_id), last_event + 1);
                last_event++;
                if (id_num(e[k].case_id) > last_case)
                    last_case = id_num(e[k].case_id);
            } else {
                assert_int_equal(e[k].status, CASE_ITEM_DUPLICATE);
            }
        }
    }
    assert_true(full);
    assert_true(last_event > 0);
    assert_int_equal(store_map_size(fx->st), small); /* it did not grow past map_max */
    /* Still full for the same batch; and nothing of it is readable. */
    assert_int_equal(case_put_events(fx->st, e, PER, NULL, NULL), STORE_FULL);
    char id[STORE_ID_MAX];
    char *raw = NULL;
    size_t len = 0;
    snprintf(id, sizeof id, "ev-%012llu", last_event + 1);
    assert_int_equal(case_get_event(fx->st, id, &raw, &len), STORE_NOTFOUND);
    snprintf(id, sizeof id, "case-%010llu", last_case + 1);
    assert_int_equal(case_get(fx->st, id, &raw, &len), STORE_NOTFOUND);
    /* Reads still work when full. */
    snprintf(id, sizeof id, "ev-%012llu", last_event);
    rec_t r;
    rec_get(fx->st, 0, id, &r);
    rec_free(&r);

    /* Reopen with room: the failed batch goes in whole, as new events, numbered
     * right after the last committed one. */
    store_close(&fx->st);
    fx->st = open_store(fx, small, 16 << 20);
    assert_int_equal(case_put_events(fx->st, e, PER, NULL, NULL), STORE_OK);
    unsigned long long next = last_event + 1;
    for (int k = 0; k < PER - 1; k++) {
        if (e[k].status != CASE_ITEM_STORED)
            fail_msg("item %d (%s) of the failed batch: status %d, want STORED: it was half-stored",
                     k, e[k].ref, (int)e[k].status);
        assert_int_equal(id_num(e[k].event_id), next++);
    }
    assert_int_equal(e[PER - 1].status, CASE_ITEM_DUPLICATE); /* the r-0 retry */
    assert_int_equal(id_num(e[PER - 1].event_id), 1);
    /* "kid" events joined the case opened at the start, none before the failure got lost */
    assert_string_equal(e[0].case_id, e[PER - 1].case_id);
    free(b.data);
}

static void test_dir_mode(void **state)
{
    fx_t *fx = *state;
    mode_t old = umask(0);
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    umask(old);
    struct stat sb;
    assert_int_equal(stat(fx->dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    if ((sb.st_mode & 0777) != 0700)
        fail_msg("data dir mode %o, want 0700", (unsigned)(sb.st_mode & 0777));
    char f[160];
    snprintf(f, sizeof f, "%s/data.mdb", fx->dir);
    assert_int_equal(stat(f, &sb), 0);
    assert_int_equal(sb.st_mode & 077, 0); /* no access for group or others */
    store_close(&fx->st);

    /* An existing directory with looser permissions is tightened. */
    assert_int_equal(chmod(fx->dir, 0755), 0);
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    assert_int_equal(stat(fx->dir, &sb), 0);
    if ((sb.st_mode & 0777) != 0700)
        fail_msg("existing data dir left at mode %o, want 0700", (unsigned)(sb.st_mode & 0777));
}

static void test_open_errors(void **state)
{
    fx_t *fx = *state;
    char err[512] = "";
    char bad[160];
    snprintf(bad, sizeof bad, "%s/no/such/parent", fx->base);
    assert_null(store_open(bad, 1 << 20, 1 << 24, err, sizeof err));
    assert_true(strlen(err) > 0);
    assert_non_null(strstr(err, bad)); /* the message names the directory */

    /* a file where the directory should be */
    snprintf(bad, sizeof bad, "%s/file", fx->base);
    FILE *f = fopen(bad, "w");
    assert_non_null(f);
    fclose(f);
    err[0] = '\0';
    assert_null(store_open(bad, 1 << 20, 1 << 24, err, sizeof err));
    assert_true(strlen(err) > 0);

    /* a data dir of another store format is refused, not reused */
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    store_close(&fx->st);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_open(env, fx->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    uint64_t two = 2;
    MDB_val k = {6, (void *)"format"}, v = {sizeof two, &two};
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    err[0] = '\0';
    assert_null(store_open(fx->dir, 1 << 20, 1 << 24, err, sizeof err));
    assert_non_null(strstr(err, "format"));
}

static void test_close_twice(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    store_t *st = fx->st;
    store_close(&st);
    assert_null(st);
    store_close(&st);
    store_close(NULL);
    fx->st = NULL; /* already closed through st */
}

static void test_severity_names(void **state)
{
    (void)state;
    static const char *names[] = {"low", "normal", "high", "critical"};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(case_severity_name(i), names[i]);
        assert_int_equal(case_severity_parse(names[i], strlen(names[i])), i);
    }
    assert_int_equal(case_severity_parse("hig", 3), -1);
    assert_int_equal(case_severity_parse("highs", 5), -1);
    assert_int_equal(case_severity_parse("High", 4), -1);
    assert_int_equal(case_severity_parse("", 0), -1);
    assert_int_equal(case_severity_parse("high\0x", 6), -1);
    assert_non_null(store_strerror(STORE_OK));
    assert_string_not_equal(store_strerror(STORE_FULL), store_strerror(STORE_IO));
    assert_string_not_equal(store_strerror(STORE_NOTFOUND), store_strerror(STORE_IO));
}


/* ---- the iterator's stop value ------------------------------------------------- */

typedef struct {
    int seen;
    int stop_at;  /* the visit (1-based) that ends the walk */
    int give;     /* what that visit returns */
    int rc;       /* what store_each returned */
} each_ctx_t;

static int each_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k, (void)kl, (void)v, (void)vl;
    each_ctx_t *c = ud;
    return ++c->seen == c->stop_at ? c->give : 0;
}

static int put_counters(store_txn_t *t, void *ud)
{
    (void)ud;
    static const char *names[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        uint64_t n = (uint64_t)i;
        int rc = store_put(t, STORE_DB_COUNTERS, names[i], 1, &n, sizeof n, 0);
        if (rc)
            return rc;
    }
    return 0;
}

static int each_fn(store_txn_t *t, void *ud)
{
    each_ctx_t *c = ud;
    c->rc = store_each(t, STORE_DB_COUNTERS, NULL, 0, 0, each_visit, c);
    return 0;
}

/* STORE_EACH_STOP ends a walk as success; every other value is an error that
 * store_each returns unchanged: a positive errno from LMDB (EINVAL, ENOMEM) must
 * not pass for "stop, all is well", nor a negative LMDB code. */
/* A case's status moves once, from open to resolved or closed. */
static void test_case_status_moves(void **state)
{
    (void)state;
    for (int f = 0; f < CASE_STATUS_COUNT; f++)
        for (int t = 0; t < CASE_STATUS_COUNT; t++)
            assert_int_equal(case_may_move((case_status_t)f, (case_status_t)t),
                             f == CASE_OPEN && t != CASE_OPEN);
    assert_int_equal(case_status_parse("closed", 6), CASE_CLOSED);
    assert_int_equal(case_status_parse("close", 5), -1);
    assert_string_equal(case_status_name(CASE_RESOLVED), "resolved");
    assert_null(case_status_name(CASE_STATUS_COUNT));
}

static void test_each_stop_and_errors(void **state)
{
    fx_t *fx = *state;
    fx->st = open_store(fx, 1 << 20, 1 << 24);
    assert_int_equal(store_write(fx->st, put_counters, NULL), STORE_OK);

    each_ctx_t all = {0, 0, 0, -7};
    assert_int_equal(store_read(fx->st, each_fn, &all), STORE_OK);
    assert_int_equal(all.rc, 0);
    assert_int_equal(all.seen, 4);

    each_ctx_t stop = {0, 2, STORE_EACH_STOP, -7};
    assert_int_equal(store_read(fx->st, each_fn, &stop), STORE_OK);
    assert_int_equal(stop.rc, 0);   /* a stop is success */
    assert_int_equal(stop.seen, 2); /* and ends the walk where asked */

    static const int errors[] = {EINVAL, ENOMEM, 1, MDB_CORRUPTED, -1};
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
        each_ctx_t bad = {0, 3, errors[i], 0};
        assert_int_equal(store_read(fx->st, each_fn, &bad), STORE_OK);
        assert_int_equal(bad.rc, errors[i]); /* returned unchanged, never taken for a stop */
        assert_int_equal(bad.seen, 3);
    }
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    log_set_level(LOG_WARN); /* the map-full test logs its expected errors */
    const struct CMUnitTest tests[] = {
        T(test_put_batch_ids),
        T(test_empty_batch),
        T(test_duplicate),
        T(test_duplicate_within_batch),
        T(test_duplicate_in_memory_then_on_disk),
        T(test_aborted_event_is_no_duplicate),
        T(test_purge_drops_waiting_entries),
        T(test_case_joining),
        T(test_case_record),
        T(test_get_impossible_id_notfound),
        T(test_refuse),
        T(test_case_index_rebuilt_after_crash),
        T(test_case_index_swept_out_of_order_then_crash),
        T(test_get_event),
        T(test_inputs_copied),
        T(test_persistence),
        T(test_map_growth),
        T(test_map_full),
        T(test_dir_mode),
        T(test_open_errors),
        T(test_close_twice),
        T(test_case_status_moves),
        T(test_each_stop_and_errors),
        cmocka_unit_test(test_severity_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
