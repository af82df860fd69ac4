/*
 * test_hmap.c — unit tests for common/hmap.c, the one hash table (sessions,
 * webhook ids, the waiting idempotency entries, the agents' string maps):
 * every operation checked against a plain array after each step, through
 * growth, long probe runs and deletions in every order (backward shift),
 * a clear that keeps the slots, and a walk that sees each value once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "hmap.h"

#define N 5000

typedef struct {
    char key[16];
    int live;
} ent_t;

static ent_t ents[N + 1]; /* value i (1..N) is ents[i] */

static int ent_eq(void *ctx, uintptr_t val, const void *key, size_t len)
{
    (void)ctx;
    const char *k = ents[val].key;
    return strlen(k) == len && memcmp(k, key, len) == 0;
}

static void put(hmap_t *m, uintptr_t i)
{
    ents[i].live = 1;
    assert_int_equal(hmap_put(m, ents[i].key, strlen(ents[i].key), i), 0);
}

/* Every entry found exactly when live, and the count right. */
static void check_all(const hmap_t *m)
{
    size_t live = 0;
    for (uintptr_t i = 1; i <= N; i++) {
        uintptr_t got = hmap_get(m, ents[i].key, strlen(ents[i].key));
        assert_int_equal(got, ents[i].live ? i : 0);
        live += (size_t)ents[i].live;
    }
    assert_int_equal(hmap_count(m), live);
}

static void setup_keys(void)
{
    for (uintptr_t i = 1; i <= N; i++) {
        snprintf(ents[i].key, sizeof ents[i].key, "k%lu", (unsigned long)i);
        ents[i].live = 0;
    }
}

static void test_put_get_grow(void **state)
{
    (void)state;
    hmap_t m;
    setup_keys();
    hmap_init(&m, ent_eq, NULL);
    assert_int_equal(hmap_get(&m, "k1", 2), 0); /* empty, never allocated */
    for (uintptr_t i = 1; i <= N; i++) {
        put(&m, i);
        if (i % 997 == 0)
            check_all(&m);
    }
    check_all(&m);
    /* replacing returns the old value and does not count twice */
    assert_int_equal(hmap_put(&m, ents[7].key, strlen(ents[7].key), 7), 7);
    assert_int_equal(hmap_count(&m), N);
    /* never more than half full */
    assert_true(2 * hmap_count(&m) <= m.mask + 1);
    hmap_free(&m);
}

/* Deleting from the middle of probe runs in three orders: what the backward
 * shift moves must stay findable, what it leaves must be gone. */
static void test_delete_orders(void **state)
{
    (void)state;
    for (int order = 0; order < 3; order++) {
        hmap_t m;
        setup_keys();
        hmap_init(&m, ent_eq, NULL);
        for (uintptr_t i = 1; i <= N; i++)
            put(&m, i);
        for (uintptr_t k = 0; k < N; k++) {
            uintptr_t i = order == 0   ? k + 1
                          : order == 1 ? N - k
                                       : ((k * 2654435761u) % N) + 1; /* a permutation */
            if (!ents[i].live)
                continue;
            assert_int_equal(hmap_del(&m, ents[i].key, strlen(ents[i].key)), i);
            ents[i].live = 0;
            assert_int_equal(hmap_del(&m, ents[i].key, strlen(ents[i].key)), 0);
            if (k % 500 == 0)
                check_all(&m);
        }
        /* the permutation may miss some: delete what is left */
        for (uintptr_t i = 1; i <= N; i++)
            if (ents[i].live) {
                assert_int_equal(hmap_del(&m, ents[i].key, strlen(ents[i].key)), i);
                ents[i].live = 0;
            }
        check_all(&m);
        assert_int_equal(hmap_count(&m), 0);
        hmap_free(&m);
    }
}

/* A full table at its limit (half the slots), deletions and re-adds
 * interleaved: runs wrap around the end of the slots. */
static void test_churn_at_the_limit(void **state)
{
    (void)state;
    hmap_t m;
    setup_keys();
    hmap_init(&m, ent_eq, NULL);
    hmap_reserve(&m, 32);
    size_t slots = m.mask + 1;
    for (uintptr_t i = 1; i <= 32; i++)
        put(&m, i);
    assert_int_equal(m.mask + 1, slots); /* reserve made the room: no growth */
    for (int round = 0; round < 200; round++) {
        uintptr_t out = (uintptr_t)(round * 7 % 32) + 1;
        uintptr_t in = (uintptr_t)(32 + round) % N + 1;
        if (ents[out].live) {
            assert_int_equal(hmap_del(&m, ents[out].key, strlen(ents[out].key)), out);
            ents[out].live = 0;
        }
        if (!ents[in].live && hmap_count(&m) < 32)
            put(&m, in);
        check_all(&m);
    }
    hmap_free(&m);
}

static void test_clear_and_walk(void **state)
{
    (void)state;
    hmap_t m;
    setup_keys();
    hmap_init(&m, ent_eq, NULL);
    for (uintptr_t i = 1; i <= 300; i++)
        put(&m, i);
    int seen[301] = {0};
    size_t pos = 0, walked = 0;
    for (uintptr_t v; (v = hmap_next(&m, &pos));) {
        assert_true(v >= 1 && v <= 300);
        assert_int_equal(seen[v]++, 0);
        walked++;
    }
    assert_int_equal(walked, 300);
    size_t slots = m.mask + 1;
    hmap_clear(&m);
    for (uintptr_t i = 1; i <= 300; i++)
        ents[i].live = 0;
    check_all(&m);
    assert_int_equal(m.mask + 1, slots); /* the slots are kept */
    pos = 0;
    assert_int_equal(hmap_next(&m, &pos), 0);
    put(&m, 5);
    check_all(&m);
    hmap_free(&m);
}

/* Two tables hash the same keys differently (a key each): a peer cannot
 * choose keys that collide in every broker. */
static void test_keyed(void **state)
{
    (void)state;
    hmap_t a, b;
    setup_keys();
    hmap_init(&a, ent_eq, NULL);
    hmap_init(&b, ent_eq, NULL);
    for (uintptr_t i = 1; i <= 64; i++) {
        hmap_put(&a, ents[i].key, strlen(ents[i].key), i);
        hmap_put(&b, ents[i].key, strlen(ents[i].key), i);
    }
    int differ = 0;
    for (size_t s = 0; s <= a.mask && s <= b.mask; s++)
        differ |= a.slots[s].val != b.slots[s].val;
    assert_true(differ);
    hmap_free(&a);
    hmap_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_grow),
        cmocka_unit_test(test_delete_orders),
        cmocka_unit_test(test_churn_at_the_limit),
        cmocka_unit_test(test_clear_and_walk),
        cmocka_unit_test(test_keyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
