/*
 * test_schema.c — the schema validator (broker/schema.c) against the shared
 * corpus tests/data/schema_cases.json (the same documents the Python oracle in
 * tests/e2e/test_schema_oracle.py checks with a standard validator), plus
 * defaults, load errors, UTF-8 length counting, JSON Schema equality and deep
 * instances.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "schema.h"
#include "util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef CAREHUB_SOURCE_DIR
#define SRC_DIR CAREHUB_SOURCE_DIR
#else
#define SRC_DIR "."
#endif

/* ---- helpers ----------------------------------------------------------- */

static schema_set_t *load_project_schemas(void)
{
    char err[1024];
    schema_set_t *set = schema_set_load(SRC_DIR "/schemas", err, sizeof err);
    if (!set)
        print_error("schema_set_load: %s\n", err);
    assert_non_null(set);
    return set;
}

/* A temporary directory the test writes schema files into. */
typedef struct {
    char dir[64];
} tmpdir_t;

static void tmp_open(tmpdir_t *t)
{
    util_fmt(t->dir, sizeof t->dir, "/tmp/carehub-test-schema-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
}

static void tmp_write(tmpdir_t *t, const char *name, const char *text)
{
    char path[256];
    util_fmt(path, sizeof path, "%s/%s", t->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void tmp_close(tmpdir_t *t)
{
    DIR *d = opendir(t->dir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char path[512];
        util_fmt(path, sizeof path, "%s/%s", t->dir, de->d_name);
        assert_int_equal(unlink(path), 0);
    }
    closedir(d);
    assert_int_equal(rmdir(t->dir), 0);
}

/* Load a one-file set {name}.json = text; returns the set (or NULL with err). */
static schema_set_t *load_one(const char *name, const char *text, char *err, size_t errlen)
{
    tmpdir_t t;
    tmp_open(&t);
    char file[128];
    util_fmt(file, sizeof file, "%s.json", name);
    tmp_write(&t, file, text);
    schema_set_t *set = schema_set_load(t.dir, err, errlen);
    tmp_close(&t);
    return set;
}

/* The load must fail and the message must name the file and contain `needle`. */
static void expect_load_error(const char *text, const char *needle)
{
    char err[1024] = "";
    schema_set_t *set = load_one("bad", text, err, sizeof err);
    if (set || !strstr(err, "bad.json") || !strstr(err, needle))
        print_error("schema %s\n  expected an error with \"%s\", got: %s\n", text, needle,
                    set ? "(loaded)" : err);
    assert_null(set);
    assert_non_null(strstr(err, "bad.json"));
    assert_non_null(strstr(err, needle));
}

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j)
        print_error("bad test JSON %s: %s\n", text, je.text);
    assert_non_null(j);
    return j;
}

/* Validate text against a one-file schema; returns rc, err filled. */
static int check_text(const char *schema_text, const char *instance, schema_error_t *e)
{
    char err[512];
    schema_set_t *set = load_one("t", schema_text, err, sizeof err);
    if (!set)
        print_error("load: %s\n", err);
    assert_non_null(set);
    json_t *inst = parse(instance);
    int rc = schema_validate(schema_set_get(set, "t"), inst, 1, e);
    json_decref(inst);
    schema_set_destroy(&set);
    return rc;
}

/* ---- the shared corpus ------------------------------------------------- */

static void test_corpus(void **state)
{
    (void)state;
    schema_set_t *set = load_project_schemas();
    json_error_t je;
    json_t *cases = json_load_file(SRC_DIR "/tests/data/schema_cases.json", 0, &je);
    if (!cases)
        print_error("schema_cases.json:%d: %s\n", je.line, je.text);
    assert_non_null(cases);
    assert_true(json_array_size(cases) >= 60);

    size_t i, failures = 0;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *type = json_string_value(json_object_get(c, "type"));
        json_t *valid = json_object_get(c, "valid");
        const char *want_path = json_string_value(json_object_get(c, "path"));
        const char *want_msg = json_string_value(json_object_get(c, "message"));
        assert_non_null(name);
        assert_non_null(type);
        assert_true(json_is_boolean(valid));
        const schema_t *s = schema_set_get(set, type);
        assert_non_null(s);

        json_t *body = json_deep_copy(json_object_get(c, "body"));
        schema_error_t e;
        int rc = schema_validate(s, body, 0, &e);
        json_decref(body);
        int ok = 1;
        if (json_is_true(valid) && rc != 0) {
            print_error("case \"%s\": expected valid, got %s: %s\n", name, e.path, e.message);
            ok = 0;
        } else if (json_is_false(valid)) {
            if (rc == 0) {
                print_error("case \"%s\": expected invalid at %s, got valid\n", name,
                            want_path ? want_path : "?");
                ok = 0;
            } else if (!want_path || strcmp(want_path, e.path) != 0) {
                print_error("case \"%s\": expected path \"%s\", got \"%s\" (%s)\n", name,
                            want_path ? want_path : "(none in corpus)", e.path, e.message);
                ok = 0;
            } else if (want_msg && !strstr(e.message, want_msg)) {
                print_error("case \"%s\": expected message with \"%s\", got \"%s\"\n", name,
                            want_msg, e.message);
                ok = 0;
            } else if (e.message[0] == '\0') {
                print_error("case \"%s\": empty message\n", name);
                ok = 0;
            }
        }
        failures += !ok;
    }
    json_decref(cases);
    schema_set_destroy(&set);
    assert_int_equal(failures, 0);
}

/* Every schema's own "examples" must validate (they are the documentation). */
static void test_examples_valid(void **state)
{
    (void)state;
    schema_set_t *set = load_project_schemas();
    /* in name order: the three of §8 and the register's three of §9 */
    static const char *const names[] = {"absence", "enrolment", "mandatory_report",
                                        "online_risk", "visit", "visit_overdue"};
    assert_int_equal(schema_set_count(set), 6);
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(schema_set_name(set, i), names[i]);
    assert_null(schema_set_name(set, 6));
    assert_null(schema_set_get(set, "no_such_type"));
    assert_null(schema_set_get(set, ""));
    for (size_t i = 0; i < schema_set_count(set); i++) {
        char path[256];
        util_fmt(path, sizeof path, SRC_DIR "/schemas/%s.json", schema_set_name(set, i));
        json_t *doc = json_load_file(path, 0, NULL);
        assert_non_null(doc);
        json_t *examples = json_object_get(doc, "examples");
        assert_true(json_array_size(examples) >= 1);
        size_t k;
        json_t *ex;
        json_array_foreach(examples, k, ex) {
            schema_error_t e;
            int rc = schema_validate(schema_set_get(set, schema_set_name(set, i)), ex, 0, &e);
            if (rc)
                print_error("%s example %zu: %s %s\n", path, k, e.path, e.message);
            assert_int_equal(rc, 0);
        }
        json_decref(doc);
    }
    schema_set_destroy(&set);
    schema_set_destroy(&set); /* twice is safe */
    assert_null(set);
}

/* ---- defaults ---------------------------------------------------------- */

static void test_defaults_applied(void **state)
{
    (void)state;
    schema_set_t *set = load_project_schemas();
    const schema_t *abs = schema_set_get(set, "absence");
    schema_error_t e;

    json_t *body = parse("{\"school\":\"S\",\"date\":\"2024-03-01\",\"reason\":\"sick\","
                         "\"consecutive_days\":1,\"child\":{\"id\":\"c1\",\"name\":\"N\"}}");
    /* without apply_defaults nothing changes */
    assert_int_equal(schema_validate(abs, body, 0, &e), 0);
    assert_null(json_object_get(body, "severity"));
    assert_int_equal(schema_validate(abs, body, 1, &e), 0);
    assert_string_equal(json_string_value(json_object_get(body, "severity")), "normal");
    /* the result is still valid, and applying again changes nothing */
    assert_int_equal(schema_validate(abs, body, 1, &e), 0);
    assert_int_equal(json_object_size(body), 6);
    json_decref(body);

    /* a present value is kept */
    body = parse("{\"risk\":\"suicide\",\"platform\":\"P\",\"severity\":\"critical\"}");
    assert_int_equal(schema_validate(schema_set_get(set, "online_risk"), body, 1, &e), 0);
    assert_string_equal(json_string_value(json_object_get(body, "severity")), "critical");
    json_decref(body);

    /* an invalid body is left untouched */
    body = parse("{\"risk\":\"suicide\"}");
    assert_int_equal(schema_validate(schema_set_get(set, "online_risk"), body, 1, &e), -1);
    assert_string_equal(e.path, "/platform");
    assert_null(json_object_get(body, "severity"));
    json_decref(body);
    schema_set_destroy(&set);
}

static void test_defaults_nested(void **state)
{
    (void)state;
    char err[512];
    schema_set_t *set = load_one(
        "t",
        "{\"type\":\"object\",\"properties\":{"
        "  \"a\":{\"type\":\"object\",\"properties\":{"
        "     \"x\":{\"type\":\"integer\",\"default\":7},"
        "     \"y\":{\"$ref\":\"#/$defs/level\"}}},"
        "  \"list\":{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{"
        "     \"k\":{\"type\":\"string\",\"default\":\"kk\"}}}},"
        "  \"absent_obj\":{\"type\":\"object\",\"properties\":{\"z\":{\"default\":1}}}},"
        " \"$defs\":{\"level\":{\"enum\":[\"lo\",\"hi\"],\"default\":\"lo\"}}}",
        err, sizeof err);
    if (!set)
        print_error("%s\n", err);
    assert_non_null(set);
    json_t *inst = parse("{\"a\":{},\"list\":[{},{\"k\":\"mine\"}]}");
    schema_error_t e;
    assert_int_equal(schema_validate(schema_set_get(set, "t"), inst, 1, &e), 0);
    json_t *a = json_object_get(inst, "a");
    assert_int_equal(json_integer_value(json_object_get(a, "x")), 7);
    assert_string_equal(json_string_value(json_object_get(a, "y")), "lo"); /* through $ref */
    json_t *list = json_object_get(inst, "list");
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "k")), "kk");
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "k")), "mine");
    /* an absent object with no default of its own is not invented */
    assert_null(json_object_get(inst, "absent_obj"));
    json_decref(inst);
    schema_set_destroy(&set);
}

/* ---- load errors ------------------------------------------------------- */

static void test_load_errors(void **state)
{
    (void)state;
    expect_load_error("{\"type\":\"object\",\"allOf\":[]}", "allOf");
    expect_load_error("{\"properties\":{\"a\":{\"pattern\":\"^x$\"}}}", "pattern");
    expect_load_error("{\"properties\":{\"a\":{\"pattern\":\"^x$\"}}}", "#/properties/a");
    expect_load_error("{\"exclusiveMinimum\":1}", "exclusiveMinimum");
    expect_load_error("{\"$ref\":\"#/definitions/x\",\"definitions\":{}}", "#/definitions/x");
    expect_load_error("{\"$ref\":\"other.json#/$defs/x\"}", "other.json");
    expect_load_error("{\"$ref\":\"#/$defs/missing\",\"$defs\":{}}", "missing");
    expect_load_error("{\"$ref\":\"#/$defs/a/b\",\"$defs\":{\"a\":{}}}", "#/$defs/a/b");
    expect_load_error("{\"$ref\":\"#/$defs/a\",\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},"
                      "\"b\":{\"$ref\":\"#/$defs/a\"}}}",
                      "cycle");
    expect_load_error("{\"$ref\":\"#/$defs/a\",\"$defs\":{\"a\":{\"$ref\":\"#/$defs/a\"}}}",
                      "cycle");
    expect_load_error("{\"type\":\"string\",\"format\":\"email\"}", "email");
    expect_load_error("{\"type\":\"strnig\"}", "strnig");
    expect_load_error("{\"type\":[]}", "type");
    expect_load_error("{\"type\":[\"string\",\"string\"]}", "twice");
    expect_load_error("{\"required\":\"name\"}", "required");
    expect_load_error("{\"required\":[\"a\",\"a\"]}", "twice");
    expect_load_error("{\"minLength\":-1}", "minLength");
    expect_load_error("{\"maxLength\":1.5}", "maxLength");
    expect_load_error("{\"minLength\":5,\"maxLength\":2}", "minLength");
    expect_load_error("{\"minimum\":\"1\"}", "minimum");
    expect_load_error("{\"uniqueItems\":1}", "uniqueItems");
    expect_load_error("{\"items\":[{}]}", "prefixItems");
    expect_load_error("{\"enum\":[]}", "enum");
    expect_load_error("{\"enum\":\"a\"}", "enum");
    expect_load_error("{\"properties\":[]}", "properties");
    expect_load_error("{\"properties\":{\"a\":3}}", "#/properties/a");
    expect_load_error("{\"additionalProperties\":\"no\"}", "additionalProperties");
    expect_load_error("{\"properties\":{\"a\":{\"$defs\":{}}}}", "$defs");
    expect_load_error("{\"properties\":{\"a\":{\"$id\":\"x\"}}}", "$id");
    expect_load_error("{\"$schema\":\"http://json-schema.org/draft-07/schema#\"}", "2020-12");
    expect_load_error("{\"title\":5}", "title");
    expect_load_error("{\"examples\":{}}", "examples");
    expect_load_error("{\"type\":\"string\",\"maxLength\":2,\"default\":\"long\"}", "default");
    expect_load_error("[]", "object");
    /* broken JSON: the file and the line */
    expect_load_error("{\n  \"type\": \"object\",\n  \"properties\": {\n}", "bad.json:4");
    expect_load_error("{\"type\":\"object\",\"type\":\"string\"}", "duplicate");
    expect_load_error("", "bad.json");

    /* a directory that does not exist, and one with no schemas */
    char err[512];
    assert_null(schema_set_load("/nonexistent/carehub/schemas", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/carehub/schemas"));
    tmpdir_t t;
    tmp_open(&t);
    tmp_write(&t, "README.txt", "not a schema");
    assert_null(schema_set_load(t.dir, err, sizeof err));
    assert_non_null(strstr(err, "no schema files"));
    /* a type name the protocol cannot carry */
    tmp_write(&t, "bad name.json", "{}");
    assert_null(schema_set_load(t.dir, err, sizeof err));
    assert_non_null(strstr(err, "bad name.json"));
    tmp_close(&t);

    /* one bad file refuses the whole set, naming that file */
    tmp_open(&t);
    tmp_write(&t, "good.json", "{\"type\":\"object\"}");
    tmp_write(&t, "worse.json", "{\"type\":\"object\",\"oneOf\":[]}");
    assert_null(schema_set_load(t.dir, err, sizeof err));
    assert_non_null(strstr(err, "worse.json"));
    assert_non_null(strstr(err, "oneOf"));
    tmp_close(&t);

    /* a NULL/zero-size err buffer is allowed */
    assert_null(schema_set_load("/nonexistent/carehub/schemas", NULL, 0));
}

/* What the loader accepts: booleans, annotations, $ref with siblings. */
static void test_load_accepts(void **state)
{
    (void)state;
    schema_error_t e;
    const char *s = "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
                    "\"$id\":\"https://example.org/t\",\"title\":\"t\",\"description\":\"d\","
                    "\"$comment\":\"c\",\"examples\":[{}],"
                    "\"type\":\"object\",\"properties\":{\"any\":true,\"never\":false,"
                    "\"c\":{\"$ref\":\"#/$defs/c\",\"required\":[\"id\"]}},"
                    "\"$defs\":{\"c\":{\"type\":\"object\",\"required\":[\"name\"]},"
                    "\"we~ird/name\":{\"const\":1}}}";
    assert_int_equal(check_text(s, "{\"any\":[1,{\"x\":null}]}", &e), 0);
    assert_int_equal(check_text(s, "{\"never\":1}", &e), -1);
    assert_string_equal(e.path, "/never");
    assert_int_equal(check_text(s, "{\"c\":{\"id\":1}}", &e), -1); /* $ref applies ... */
    assert_string_equal(e.path, "/c/name");
    assert_int_equal(check_text(s, "{\"c\":{\"name\":1}}", &e), -1); /* ... and its siblings */
    assert_string_equal(e.path, "/c/id");
    assert_int_equal(check_text(s, "{\"c\":{\"name\":1,\"id\":2}}", &e), 0);
    /* a def name with escapes */
    const char *esc = "{\"$ref\":\"#/$defs/we~0ird~1name\",\"$defs\":{\"we~ird/name\":{\"const\":1}}}";
    assert_int_equal(check_text(esc, "1", &e), 0);
    assert_int_equal(check_text(esc, "2", &e), -1);
    assert_string_equal(e.message, "must be exactly 1");
    /* additionalProperties as a schema */
    const char *ap = "{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"integer\"}}";
    assert_int_equal(check_text(ap, "{\"a\":\"s\",\"b\":1}", &e), 0);
    assert_int_equal(check_text(ap, "{\"a\":\"s\",\"b\":\"x\"}", &e), -1);
    assert_string_equal(e.path, "/b");
    assert_string_equal(e.message, "must be an integer");
    /* additionalProperties false with no properties */
    assert_int_equal(check_text("{\"additionalProperties\":false}", "{\"q\":1}", &e), -1);
    assert_string_equal(e.message, "is not a known field (allowed: none)");
    /* the root schema `true` */
    assert_int_equal(check_text("{}", "[1,2,{\"x\":\"y\"}]", &e), 0);
}

/* ---- strings, numbers, equality --------------------------------------- */

static void test_utf8_length(void **state)
{
    (void)state;
    schema_error_t e;
    const char *s = "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}";
    assert_int_equal(check_text(s, "\"ab\"", &e), 0);
    assert_int_equal(check_text(s, "\"a\"", &e), -1);
    assert_string_equal(e.message, "must be at least 2 characters");
    assert_int_equal(check_text(s, "\"abcd\"", &e), -1);
    assert_string_equal(e.message, "must be at most 3 characters");
    /* 3 code points in 9 bytes (CJK), 3 in 12 bytes (emoji, written as surrogate pairs) */
    assert_int_equal(check_text(s, "\"\xE7\x95\x99\xE5\xAE\x88\xE5\x84\xBF\"", &e), 0);
    assert_int_equal(check_text(s, "\"\\ud83d\\ude00\\ud83d\\ude00\\ud83d\\ude00\"", &e), 0);
    assert_int_equal(check_text(s, "\"\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\"", &e), -1); /* éééé */
    /* an escaped NUL is a character too */
    assert_int_equal(check_text(s, "\"a\\u0000b\"", &e), 0);
    assert_int_equal(check_text(s, "\"a\\u0000bc\"", &e), -1);
}

static void test_dates(void **state)
{
    (void)state;
    schema_error_t e;
    const char *s = "{\"type\":\"string\",\"format\":\"date\"}";
    const char *good[] = {"\"2024-02-29\"", "\"2000-02-29\"", "\"0001-01-01\"", "\"9999-12-31\"",
                          "\"2023-12-31\"", "\"2023-04-30\""};
    const char *bad[] = {"\"2023-02-29\"", "\"2100-02-29\"", "\"2024-02-30\"", "\"2024-06-31\"",
                         "\"2024-00-01\"", "\"2024-01-00\"", "\"2024-1-01\"",  "\"20240101\"",
                         "\"2024-01-01 \"", "\" 2024-01-01\"", "\"2024-01-0a\"", "\"\"",
                         "\"0000-01-01\"", "\"2024/01/01\"", "\"2024-01-01\\u0000\"",
                         "\"\xEF\xBC\x92\x30\x32\x34-01-01\""};
    for (size_t i = 0; i < UTIL_ARRAY_LEN(good); i++) {
        if (check_text(s, good[i], &e) != 0)
            print_error("%s: %s\n", good[i], e.message);
        assert_int_equal(check_text(s, good[i], &e), 0);
    }
    for (size_t i = 0; i < UTIL_ARRAY_LEN(bad); i++) {
        if (check_text(s, bad[i], &e) != -1)
            print_error("%s accepted\n", bad[i]);
        assert_int_equal(check_text(s, bad[i], &e), -1);
        assert_non_null(strstr(e.message, "must be a date YYYY-MM-DD"));
    }
    /* format applies to strings only, as in the standard */
    assert_int_equal(check_text("{\"format\":\"date\"}", "20240101", &e), 0);
}

static void test_numbers_and_equality(void **state)
{
    (void)state;
    schema_error_t e;
    /* integers: integral reals count, booleans do not */
    assert_int_equal(check_text("{\"type\":\"integer\"}", "2.0", &e), 0);
    assert_int_equal(check_text("{\"type\":\"integer\"}", "1e3", &e), 0);
    assert_int_equal(check_text("{\"type\":\"integer\"}", "2.5", &e), -1);
    assert_int_equal(check_text("{\"type\":\"integer\"}", "true", &e), -1);
    assert_int_equal(check_text("{\"type\":\"number\"}", "2.5", &e), 0);
    assert_int_equal(check_text("{\"type\":\"number\"}", "\"2\"", &e), -1);
    assert_string_equal(e.message, "must be a number");
    assert_int_equal(check_text("{\"type\":[\"string\",\"null\"]}", "null", &e), 0);
    assert_int_equal(check_text("{\"type\":[\"string\",\"integer\",\"null\"]}", "{}", &e), -1);
    assert_string_equal(e.message, "must be a string, an integer or null");
    /* limits compare exactly, also beyond 2^53 and between integers and reals */
    assert_int_equal(check_text("{\"maximum\":9007199254740992}", "9007199254740993", &e), -1);
    assert_string_equal(e.message, "must be at most 9007199254740992");
    assert_int_equal(check_text("{\"minimum\":1.5}", "1", &e), -1);
    assert_string_equal(e.message, "must be at least 1.5");
    assert_int_equal(check_text("{\"minimum\":1.5}", "2", &e), 0);
    assert_int_equal(check_text("{\"maximum\":-0.5}", "-1", &e), 0);
    assert_int_equal(check_text("{\"maximum\":-0.5}", "0", &e), -1);
    assert_int_equal(check_text("{\"maximum\":1e300}", "9223372036854775807", &e), 0);
    assert_int_equal(check_text("{\"minimum\":-1e300}", "-9223372036854775807", &e), 0);
    assert_int_equal(check_text("{\"minimum\":1}", "true", &e), 0); /* not a number */
    /* enum and const: 1 == 1.0, true != 1, objects regardless of key order */
    const char *en = "{\"enum\":[1,\"a\",null,[1,2],{\"k\":1,\"j\":[true]}]}";
    assert_int_equal(check_text(en, "1.0", &e), 0);
    assert_int_equal(check_text(en, "true", &e), -1);
    assert_string_equal(e.message, "must be one of: 1, a, null, [1,2], {\"k\":1,\"j\":[true]}");
    assert_int_equal(check_text(en, "null", &e), 0);
    assert_int_equal(check_text(en, "[1.0,2]", &e), 0);
    assert_int_equal(check_text(en, "[2,1]", &e), -1);
    assert_int_equal(check_text(en, "{\"j\":[true],\"k\":1.0}", &e), 0);
    assert_int_equal(check_text(en, "{\"j\":[1],\"k\":1}", &e), -1);
    assert_int_equal(check_text("{\"const\":false}", "0", &e), -1);
    assert_int_equal(check_text("{\"const\":false}", "false", &e), 0);
    /* uniqueItems with the same equality; the repeat is pointed at */
    const char *u = "{\"uniqueItems\":true}";
    assert_int_equal(check_text(u, "[1,true,\"1\",null,false,0]", &e), 0);
    assert_int_equal(check_text(u, "[1,2,1.0]", &e), -1);
    assert_string_equal(e.path, "/2");
    assert_string_equal(e.message, "repeats item 0 (items must be unique)");
    assert_int_equal(check_text(u, "[{\"a\":1,\"b\":2},[3],{\"b\":2,\"a\":1}]", &e), -1);
    assert_string_equal(e.path, "/2");
    assert_int_equal(check_text(u, "[5,3,5,3]", &e), -1); /* first repeat by position */
    assert_string_equal(e.path, "/2");
    assert_string_equal(e.message, "repeats item 0 (items must be unique)");
    assert_int_equal(check_text(u, "[3,5,5,3]", &e), -1);
    assert_string_equal(e.path, "/2");
    assert_string_equal(e.message, "repeats item 1 (items must be unique)");
    assert_int_equal(check_text(u, "[{\"a\":1},{\"a\":1,\"b\":1},{\"b\":1}]", &e), 0);
    assert_int_equal(check_text("{\"minItems\":2}", "[1]", &e), -1);
    assert_string_equal(e.message, "must have at least 2 items");
}

/* A long uniqueItems array stays fast (sorted, not pairwise). */
static void test_unique_large(void **state)
{
    (void)state;
    char err[256];
    schema_set_t *set = load_one("t", "{\"uniqueItems\":true}", err, sizeof err);
    assert_non_null(set);
    json_t *arr = json_array();
    for (int i = 0; i < 100000; i++)
        json_array_append_new(arr, json_integer(i));
    json_array_append_new(arr, json_real(99999.0));
    schema_error_t e;
    assert_int_equal(schema_validate(schema_set_get(set, "t"), arr, 0, &e), -1);
    assert_string_equal(e.path, "/100000");
    assert_string_equal(e.message, "repeats item 99999 (items must be unique)");
    json_decref(arr);
    schema_set_destroy(&set);
}

/* ---- hostile instances ------------------------------------------------- */

static json_t *nest_objects(int levels)
{
    json_t *inner = json_object();
    for (int i = 0; i < levels; i++) {
        json_t *outer = json_object();
        json_object_set_new(outer, "c", inner);
        inner = outer;
    }
    return inner;
}

static void test_deep_nesting(void **state)
{
    (void)state;
    char err[512];
    /* a recursive schema: each level may hold another under "c" */
    schema_set_t *set = load_one("t",
                                 "{\"$ref\":\"#/$defs/n\",\"$defs\":{\"n\":{\"type\":\"object\","
                                 "\"properties\":{\"c\":{\"$ref\":\"#/$defs/n\"}},"
                                 "\"additionalProperties\":false}}}",
                                 err, sizeof err);
    if (!set)
        print_error("%s\n", err);
    assert_non_null(set);
    const schema_t *s = schema_set_get(set, "t");
    schema_error_t e;

    json_t *ok = nest_objects(64);
    assert_int_equal(schema_validate(s, ok, 1, &e), 0);
    json_decref(ok);

    json_t *deep = nest_objects(5000); /* deeper than jansson's parser allows (2048) */
    assert_int_equal(schema_validate(s, deep, 1, &e), -1);
    assert_non_null(strstr(e.message, "nested deeper than 64 levels"));
    assert_int_equal(strncmp(e.path, "/c/c/c/c", 8), 0);
    json_decref(deep);
    schema_set_destroy(&set);

    /* uniqueItems over deep values does not recurse without bound */
    set = load_one("t", "{\"uniqueItems\":true}", err, sizeof err);
    assert_non_null(set);
    json_t *arr = json_array();
    json_array_append_new(arr, nest_objects(5000));
    json_array_append_new(arr, nest_objects(5000));
    assert_int_equal(schema_validate(schema_set_get(set, "t"), arr, 0, &e), -1);
    assert_non_null(strstr(e.message, "nested deeper"));
    json_decref(arr);
    schema_set_destroy(&set);

    /* enum/const compare against a deep instance without trouble */
    set = load_one("t", "{\"const\":{\"c\":{}}}", err, sizeof err);
    assert_non_null(set);
    deep = nest_objects(5000);
    assert_int_equal(schema_validate(schema_set_get(set, "t"), deep, 0, &e), -1);
    json_decref(deep);
    schema_set_destroy(&set);
}

static void test_hostile_keys_and_args(void **state)
{
    (void)state;
    schema_set_t *set = load_project_schemas();
    const schema_t *abs = schema_set_get(set, "absence");
    schema_error_t e;

    /* a very long unknown key: the path is cut at a character boundary, not overrun */
    json_t *body = parse("{\"school\":\"S\",\"date\":\"2024-03-01\",\"reason\":\"sick\","
                         "\"consecutive_days\":1,\"child\":{\"id\":\"c1\",\"name\":\"N\"}}");
    char *key = xmalloc(3001);
    for (int i = 0; i < 1000; i++)
        memcpy(key + 3 * i, "\xE7\x95\x99", 3);
    key[3000] = '\0';
    json_object_set_new(json_object_get(body, "child"), key, json_true());
    assert_int_equal(schema_validate(abs, body, 0, &e), -1);
    assert_true(strlen(e.path) < sizeof e.path);
    assert_int_equal(strncmp(e.path, "/child/\xE7\x95\x99", 10), 0);
    assert_int_equal((strlen(e.path) - 7) % 3, 0); /* whole characters only */
    json_object_del(json_object_get(body, "child"), key);
    free(key);

    /* a key with invalid UTF-8 and a NUL (jansson's unchecked API) */
    json_object_setn_new_nocheck(body, "x\xFF\0y", 4, json_true());
    assert_int_equal(schema_validate(abs, body, 0, &e), -1);
    assert_string_equal(e.path, "/x\xEF\xBF\xBD\xEF\xBF\xBDy");
    assert_non_null(strstr(e.message, "is not a known field"));
    json_decref(body);

    /* "name" followed by a NUL is not "name" */
    body = parse("{\"school\":\"S\",\"date\":\"2024-03-01\",\"reason\":\"sick\","
                 "\"consecutive_days\":1,\"child\":{\"id\":\"c1\"}}");
    json_object_setn_new_nocheck(json_object_get(body, "child"), "name\0", 5,
                                 json_string("N"));
    assert_int_equal(schema_validate(abs, body, 0, &e), -1);
    assert_string_equal(e.path, "/child/name\xEF\xBF\xBD");
    json_decref(body);

    /* NULL arguments never crash */
    assert_int_equal(schema_validate(NULL, NULL, 1, &e), -1);
    assert_int_equal(schema_validate(abs, NULL, 1, &e), -1);
    assert_int_equal(schema_validate(abs, NULL, 1, NULL), -1);
    assert_null(schema_set_get(NULL, "absence"));
    assert_null(schema_set_get(set, NULL));
    assert_int_equal(schema_set_count(NULL), 0);
    assert_null(schema_set_name(NULL, 0));
    schema_set_destroy(NULL);

    /* every JSON type at every field of a full body: no crash, a message each time */
    json_t *full = parse("{\"severity\":\"high\",\"school\":\"S\",\"date\":\"2024-03-01\","
                         "\"reason\":\"sick\",\"consecutive_days\":1,\"period\":\"morning\","
                         "\"guardian_contacted\":true,\"note\":\"n\",\"child\":{\"id\":\"c\","
                         "\"name\":\"N\",\"gender\":\"male\",\"birth_date\":\"2015-01-01\","
                         "\"category\":[\"orphan\"],\"jurisdiction\":\"J\",\"guardian\":{"
                         "\"name\":\"G\",\"relation\":\"r\",\"phone\":\"p\"}}}");
    const char *values[] = {"null", "true", "0", "-1", "1.5", "\"\"", "[]", "{}", "[[[]]]",
                            "{\"a\":{}}"};
    const char *fields[] = {"severity", "school", "date", "reason", "consecutive_days",
                            "period", "guardian_contacted", "note", "child"};
    for (size_t f = 0; f < UTIL_ARRAY_LEN(fields); f++) {
        for (size_t v = 0; v < UTIL_ARRAY_LEN(values); v++) {
            json_t *b = json_deep_copy(full);
            json_object_set_new(b, fields[f], parse(values[v]));
            if (schema_validate(abs, b, 1, &e) < 0)
                assert_true(e.message[0] != '\0');
            json_decref(b);
        }
    }
    json_decref(full);
    schema_set_destroy(&set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_examples_valid),
        cmocka_unit_test(test_defaults_applied),
        cmocka_unit_test(test_defaults_nested),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_accepts),
        cmocka_unit_test(test_utf8_length),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_numbers_and_equality),
        cmocka_unit_test(test_unique_large),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_hostile_keys_and_args),
    };
    return cmocka_run_group_tests_name("schema", tests, NULL, NULL);
}
