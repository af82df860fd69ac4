/*
 * test_web_form.c — unit tests for broker/web_form.c: the urlencoded values,
 * cookies and case-list filters the supervisors' web view reads (docs/web.md).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "web_form.h"

static int get(const char *body, const char *key, char *out, size_t size)
{
    return web_form_get(body, strlen(body), key, out, size);
}

static void test_form_values(void **state)
{
    (void)state;
    char v[64];
    assert_int_equal(get("user=wang.li&password=a+b%2B%E6%AD%A3&csrf=x", "password", v, sizeof v), 1);
    assert_string_equal(v, "a b+正");
    assert_int_equal(get("user=a&user=b", "user", v, sizeof v), 1); /* the first counts */
    assert_string_equal(v, "a");
    assert_int_equal(get("username=a&user", "user", v, sizeof v), 1); /* a key without '=' */
    assert_string_equal(v, "");
    assert_int_equal(get("username=a", "user", v, sizeof v), 0);
    assert_string_equal(v, "");
    assert_int_equal(get("", "user", v, sizeof v), 0);
    /* refused, never cut: bad escapes, NUL, control bytes, invalid UTF-8, too long */
    const char *bad[] = {"id=%zz", "id=%4", "id=%00", "id=a%0Ab", "id=%C3%28", "id=%ED%A0%80",
                         "id=%7F"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(v, 'x', sizeof v);
        assert_int_equal(get(bad[i], "id", v, sizeof v), -1);
        assert_string_equal(v, "");
    }
    assert_int_equal(get("id=12345678", "id", v, 8), -1);
    assert_int_equal(get("id=1234567", "id", v, 8), 1);
    assert_string_equal(v, "1234567");
}

static void test_cookies(void **state)
{
    (void)state;
    char v[48];
    const char *h = "carehub_login=abc; carehub_session=\"QkJD-_x\";other=1";
    assert_int_equal(web_cookie_get(h, "carehub_session", v, sizeof v), 1);
    assert_string_equal(v, "QkJD-_x");
    assert_int_equal(web_cookie_get(h, "carehub_login", v, sizeof v), 1);
    assert_string_equal(v, "abc");
    assert_int_equal(web_cookie_get(h, "other", v, sizeof v), 1);
    assert_string_equal(v, "1");
    assert_int_equal(web_cookie_get(h, "carehub", v, sizeof v), 0);
    assert_int_equal(web_cookie_get("a=b c", "a", v, sizeof v), -1);  /* a space inside */
    assert_int_equal(web_cookie_get("a=b\\c", "a", v, sizeof v), -1);
    assert_int_equal(web_cookie_get("a=toolong", "a", v, 4), -1);
    assert_int_equal(web_cookie_get("", "a", v, sizeof v), 0);
}

static void test_filters(void **state)
{
    (void)state;
    web_filter_t f;
    char why[256];
    const char *q = "status=open&type=mandatory_report&agency=police&overdue=1&after=case-0000000009&x=y";
    assert_int_equal(web_filter_parse(q, strlen(q), &f, why, sizeof why), 0);
    assert_string_equal(f.status, "open");
    assert_string_equal(f.type, "mandatory_report");
    assert_string_equal(f.agency, "police");
    assert_string_equal(f.after, "case-0000000009");
    assert_int_equal(f.overdue, 1);
    q = "status=&agency=";
    assert_int_equal(web_filter_parse(q, strlen(q), &f, why, sizeof why), 0);
    assert_string_equal(f.status, "");
    assert_int_equal(f.overdue, 0);
    q = "status=bogus";
    assert_int_equal(web_filter_parse(q, strlen(q), &f, why, sizeof why), -1);
    assert_non_null(strstr(why, "status"));
    q = "agency=%3Cscript%3E";
    assert_int_equal(web_filter_parse(q, strlen(q), &f, why, sizeof why), -1);
    assert_non_null(strstr(why, "agency"));
    assert_string_equal(f.agency, "");
    q = "overdue=yes";
    assert_int_equal(web_filter_parse(q, strlen(q), &f, why, sizeof why), -1);
    assert_non_null(strstr(why, "overdue"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_values),
        cmocka_unit_test(test_cookies),
        cmocka_unit_test(test_filters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
