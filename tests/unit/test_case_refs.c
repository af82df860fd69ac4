/*
 * test_case_refs.c — unit tests for the clients' refs with privacy on (issue 12,
 * finding 2): a ref (a school's id is a hash of school, student and date) is
 * stored only as a keyed hash — in the idempotency key, the event record and the
 * trail — and the ref sent only sealed; retries still find their first answer,
 * in memory and on disk; the outcome's ref opens; and a store written by a
 * broker from before (refs in clear) is rekeyed once at start.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "carehub_wire.h"
#include "case.h"
#include "frame.h"
#include "store.h"

#define REF "abs:STUDENT-87654321-2025-03-03"
#define AGENT "school-0042"

typedef struct {
    char dir[64];
    store_t *st;
    unsigned char key[32];
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/carehub-test-refs-XXXXXX");
    if (!fx || !mkdtemp(fx->dir))
        return -1;
    for (size_t i = 0; i < sizeof fx->key; i++)
        fx->key[i] = (unsigned char)(i * 7 + 1);
    char err[256];
    fx->st = store_open(fx->dir, 1 << 20, 1 << 24, err, sizeof err);
    if (!fx->st || store_set_privacy(fx->st, fx->key, err, sizeof err) != 0)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    store_close(&fx->st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", fx->dir);
    int rc = system(cmd);
    free(fx);
    return rc == 0 ? 0 : -1;
}

static const char BODY[] = "\x81\xa1n\x01"; /* {"n": 1} */

static case_event_t ev(const char *ref)
{
    case_event_t e;
    memset(&e, 0, sizeof e);
    e.agent = AGENT;
    e.ref = ref;
    e.type = "absence";
    e.at = 1764000000000LL;
    e.received = 1764000000500LL;
    e.severity = 1;
    e.body = BODY;
    e.body_len = sizeof BODY - 1;
    return e;
}

/* 1 when the bytes of s appear anywhere in the data file. */
static int in_data_file(const fx_t *fx, const char *s)
{
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", fx->dir);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    size_t sl = strlen(s);
    int found = 0;
    for (size_t i = 0; !found && i + sl <= (size_t)n; i++)
        found = memcmp(buf + i, s, sl) == 0;
    free(buf);
    return found;
}

typedef struct {
    const char *event_id;
    char ref[CAREHUB_ID_MAX + 1];
    char stored[64];
    int rc;
} ref_probe_t;

static int ref_probe(store_txn_t *t, void *ud)
{
    ref_probe_t *p = ud;
    const void *v;
    size_t vl;
    int rc = store_get(t, STORE_DB_EVENTS, p->event_id, strlen(p->event_id), &v, &vl);
    if (rc)
        return rc;
    p->rc = case_event_ref(t, p->event_id, v, vl, NULL, p->ref, sizeof p->ref);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    const char *s;
    size_t n;
    if (msgpack_unpack_next(&u, v, vl, NULL) == MSGPACK_UNPACK_SUCCESS &&
        frame_str(frame_map_get(&u.data, "ref"), &s, &n) && n < sizeof p->stored) {
        memcpy(p->stored, s, n);
        p->stored[n] = '\0';
    }
    msgpack_unpacked_destroy(&u);
    return 0;
}

static void test_ref_stored_keyed_and_sealed(void **state)
{
    fx_t *fx = *state;
    case_event_t first = ev(REF);
    assert_int_equal(case_put_events(fx->st, &first, 1, NULL, NULL), STORE_OK);
    assert_int_equal(first.status, CASE_ITEM_STORED);
    /* a retry, while its idempotency entry waits in memory ... */
    case_event_t again = ev(REF);
    assert_int_equal(case_put_events(fx->st, &again, 1, NULL, NULL), STORE_OK);
    assert_int_equal(again.status, CASE_ITEM_DUPLICATE);
    assert_string_equal(again.event_id, first.event_id);
    /* ... and once it is written */
    assert_int_equal(store_flush_index(fx->st), STORE_OK);
    case_event_t third = ev(REF);
    assert_int_equal(case_put_events(fx->st, &third, 1, NULL, NULL), STORE_OK);
    assert_int_equal(third.status, CASE_ITEM_DUPLICATE);
    assert_string_equal(third.event_id, first.event_id);
    /* the record holds the keyed form; the ref sent opens from it */
    ref_probe_t p = {first.event_id, "", "", -1};
    assert_int_equal(store_read(fx->st, ref_probe, &p), STORE_OK);
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.ref, REF);
    assert_int_equal(strncmp(p.stored, "h:", 2), 0);
    assert_int_equal(strlen(p.stored), STORE_REF_KEY_MAX - 1);
    /* nowhere on disk in clear: not the ref, not the student's number in it */
    store_close(&fx->st);
    assert_false(in_data_file(fx, REF));
    assert_false(in_data_file(fx, "87654321"));
    assert_true(in_data_file(fx, p.stored)); /* the search finds what is there */
}

/* A broker from before stored the ref in clear, in the event record and the
 * idempotency key. */
static int put_legacy(store_txn_t *t, void *ud)
{
    (void)ud;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    frame_pack_cstr(&pk, "id");    frame_pack_cstr(&pk, "ev-000000000001");
    frame_pack_cstr(&pk, "agent"); frame_pack_cstr(&pk, AGENT);
    frame_pack_cstr(&pk, "ref");   frame_pack_cstr(&pk, REF);
    frame_pack_cstr(&pk, "case");  frame_pack_cstr(&pk, "case-0000000001");
    int rc = store_put(t, STORE_DB_EVENTS, "ev-000000000001", 15, sb.data, sb.size, 1);
    msgpack_sbuffer_destroy(&sb);
    char key[160];
    size_t kl = store_pair_key(key, sizeof key, AGENT, REF);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    frame_pack_cstr(&pk, "ev-000000000001");
    frame_pack_cstr(&pk, "case-0000000001");
    if (!rc)
        rc = store_put(t, STORE_DB_IDEM, key, kl, sb.data, sb.size, 1);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int clear_mark(store_txn_t *t, void *ud)
{
    (void)ud;
    return store_del(t, STORE_DB_COUNTERS, "refs.keyed", 10, NULL, 0);
}

static void test_legacy_refs_rekeyed_once(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(store_write(fx->st, put_legacy, NULL), STORE_OK);
    assert_int_equal(store_write(fx->st, clear_mark, NULL), STORE_OK);
    /* the precondition: as a broker from before left it, a retry is not found */
    case_event_t probe = ev(REF);
    probe.refuse = 1; /* found: DUPLICATE; not found: REFUSED, nothing stored */
    assert_int_equal(case_put_events(fx->st, &probe, 1, NULL, NULL), STORE_OK);
    assert_int_equal(probe.status, CASE_ITEM_REFUSED);

    assert_int_equal(case_refs_upgrade(fx->st, 1), 0);
    case_event_t again = ev(REF);
    assert_int_equal(case_put_events(fx->st, &again, 1, NULL, NULL), STORE_OK);
    assert_int_equal(again.status, CASE_ITEM_DUPLICATE);
    assert_string_equal(again.event_id, "ev-000000000001");
    ref_probe_t p = {"ev-000000000001", "", "", -1};
    assert_int_equal(store_read(fx->st, ref_probe, &p), STORE_OK);
    assert_int_equal(p.rc, 0);
    assert_string_equal(p.ref, REF);
    assert_int_equal(strncmp(p.stored, "h:", 2), 0);
    /* marked: a second start walks nothing and changes nothing */
    assert_int_equal(case_refs_upgrade(fx->st, 1), 0);
    ref_probe_t q = {"ev-000000000001", "", "", -1};
    assert_int_equal(store_read(fx->st, ref_probe, &q), STORE_OK);
    assert_string_equal(q.stored, p.stored);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ref_stored_keyed_and_sealed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_refs_rekeyed_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
