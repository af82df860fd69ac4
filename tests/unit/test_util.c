/*
 * test_util.c — unit tests for broker/util.c's UTF-8 checks, the one checker the
 * schema validator, the CSV reader's callers and the agents' command lines share:
 * each boundary of RFC 3629 on both sides (the last overlong form and the first
 * valid one, the surrogates' edges, U+10FFFF and one past it), truncated and
 * interrupted sequences, and NUL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "util.h"

typedef struct {
    const char *bytes;
    size_t len;
    size_t seq; /* util_utf8_seq of the whole: 0 = invalid */
} utf8_case_t;

#define C(s, n) {s, sizeof s - 1, n}

static const utf8_case_t CASES[] = {
    C("A", 1),
    C("\x7f", 1),
    C("\xc1\xbf", 0),             /* overlong U+007F */
    C("\xc2\x80", 2),             /* U+0080 */
    C("\xdf\xbf", 2),             /* U+07FF */
    C("\xe0\x9f\xbf", 0),         /* overlong U+07FF */
    C("\xe0\xa0\x80", 3),         /* U+0800 */
    C("\xed\x9f\xbf", 3),         /* U+D7FF */
    C("\xed\xa0\x80", 0),         /* U+D800, a surrogate */
    C("\xed\xbf\xbf", 0),         /* U+DFFF */
    C("\xee\x80\x80", 3),         /* U+E000 */
    C("\xef\xbf\xbf", 3),         /* U+FFFF */
    C("\xf0\x8f\xbf\xbf", 0),     /* overlong U+FFFF */
    C("\xf0\x90\x80\x80", 4),     /* U+10000 */
    C("\xf4\x8f\xbf\xbf", 4),     /* U+10FFFF */
    C("\xf4\x90\x80\x80", 0),     /* U+110000 */
    C("\xf5\x80\x80\x80", 0),     /* no such lead byte */
    C("\x80", 0),                 /* a continuation alone */
    C("\xe4\xb8", 0),             /* truncated 中 */
    C("\xe4\x41\xad", 0),         /* interrupted */
    C("\xff", 0),
};

static void test_utf8_seq_boundaries(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const utf8_case_t *c = &CASES[i];
        size_t got = util_utf8_seq(c->bytes, c->len);
        if (got != c->seq)
            fail_msg("case %zu (%zu bytes): util_utf8_seq %zu, want %zu", i, c->len, got, c->seq);
        assert_int_equal(util_utf8_valid(c->bytes, c->len), c->seq == c->len);
    }
    assert_int_equal(util_utf8_seq("", 0), 0);
    assert_int_equal(util_utf8_seq("\0", 1), 1); /* NUL is valid UTF-8 */
    assert_int_equal(util_utf8_seq("\xe4\xb8\xad", 2), 0); /* n cuts the sequence */
}

static void test_utf8_valid_and_count(void **state)
{
    (void)state;
    const char *s = "天津 Binhai 滨海";
    assert_true(util_utf8_valid(s, strlen(s)));
    assert_int_equal(util_utf8_count(s, strlen(s)), 12);
    assert_true(util_utf8_valid("", 0));
    assert_int_equal(util_utf8_count("", 0), 0);
    /* a bad byte anywhere makes the whole invalid */
    char bad[32];
    memcpy(bad, "abc\xe4\xb8\xad", 6);
    bad[6] = '\xc0';
    assert_true(util_utf8_valid(bad, 6));
    assert_false(util_utf8_valid(bad, 7));
    assert_false(util_utf8_valid(bad, 5)); /* ends inside 中 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_seq_boundaries),
        cmocka_unit_test(test_utf8_valid_and_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
