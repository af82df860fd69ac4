/*
 * test_school.c — unit tests for carehub-school's own parts: the Chinese header
 * names and values (agents/carehub-school/row.c) and the encodings
 * (agents/carehub-school/enc.c: detection, GB18030/GBK -> UTF-8 with iconv, the
 * stream that gives back the bytes read for the detection). It links those
 * objects and the agent programs' runtime. End to end: tests/e2e/test_agent_school.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../agents/carehub-school/enc.h"
#include "../../agents/carehub-school/row.h"
#include "util.h"

/* 学号 李明 in GB18030 (= GBK) */
#define GB_XUEHAO "\xd1\xa7\xba\xc5"
#define GB_LIMING "\xc0\xee\xc3\xf7"

static void test_column_alias(void **state)
{
    (void)state;
    assert_int_equal(row_column_alias("学号"), COL_STUDENT_ID);
    assert_int_equal(row_column_alias("姓名"), COL_NAME);
    assert_int_equal(row_column_alias("日期"), COL_DATE);
    assert_int_equal(row_column_alias("出勤状态"), COL_STATUS);
    assert_int_equal(row_column_alias("原因"), COL_REASON);
    assert_int_equal(row_column_alias("缺勤原因"), COL_REASON);
    assert_int_equal(row_column_alias("连续缺勤天数"), COL_CONSECUTIVE_DAYS);
    assert_int_equal(row_column_alias("性别"), COL_GENDER);
    assert_int_equal(row_column_alias("出生日期"), COL_BIRTH_DATE);
    assert_int_equal(row_column_alias("监护人"), COL_GUARDIAN_NAME);
    assert_int_equal(row_column_alias("监护人电话"), COL_GUARDIAN_PHONE);
    assert_int_equal(row_column_alias("联系监护人"), COL_GUARDIAN_CONTACTED);
    assert_int_equal(row_column_alias("备注"), COL_NOTE);
    assert_int_equal(row_column_alias("班级"), ROW_COL_IGNORED);
    assert_int_equal(row_column_alias("学号 "), -1);
    assert_int_equal(row_column_alias("student_id"), -1); /* English names: the caller's */
    assert_int_equal(row_column_alias(""), -1);
}

static void test_value_alias(void **state)
{
    (void)state;
    assert_string_equal(row_value_alias(COL_REASON, "病假"), "sick");
    assert_string_equal(row_value_alias(COL_REASON, "事假"), "leave");
    assert_string_equal(row_value_alias(COL_REASON, "无故"), "unexplained");
    assert_string_equal(row_value_alias(COL_REASON, "旷课"), "unexplained");
    assert_string_equal(row_value_alias(COL_REASON, "家庭原因"), "family");
    assert_string_equal(row_value_alias(COL_REASON, "不明"), "unknown");
    assert_string_equal(row_value_alias(COL_PERIOD, "全天"), "full_day");
    assert_string_equal(row_value_alias(COL_PERIOD, "上午"), "morning");
    assert_string_equal(row_value_alias(COL_PERIOD, "下午"), "afternoon");
    assert_string_equal(row_value_alias(COL_GENDER, "男"), "male");
    assert_string_equal(row_value_alias(COL_GENDER, "女"), "female");
    assert_string_equal(row_value_alias(COL_GUARDIAN_CONTACTED, "是"), "yes");
    assert_string_equal(row_value_alias(COL_GUARDIAN_CONTACTED, "否"), "no");
    assert_string_equal(row_value_alias(COL_STATUS, "缺勤"), "absent");
    assert_string_equal(row_value_alias(COL_STATUS, "迟到"), "late");
    assert_string_equal(row_value_alias(COL_STATUS, "出勤"), "present");
    assert_string_equal(row_value_alias(COL_CATEGORY, "留守儿童"), "left_behind");
    /* a value of another column, or none */
    assert_null(row_value_alias(COL_GENDER, "病假"));
    assert_null(row_value_alias(COL_REASON, "sick"));
    assert_null(row_value_alias(COL_NOTE, "是"));
}

static void cells_set(cells_t *c, col_t col, const char *v)
{
    free(c->v[col]);
    c->v[col] = xstrdup(v);
}

static void test_map_values(void **state)
{
    (void)state;
    cells_t c;
    for (int i = 0; i < NCOLS; i++)
        c.v[i] = xstrdup("");
    cells_set(&c, COL_STATUS, "病假");
    cells_set(&c, COL_GENDER, "女");
    cells_set(&c, COL_GUARDIAN_CONTACTED, "是");
    cells_set(&c, COL_CATEGORY, "留守儿童、残疾儿童；孤儿");
    cells_set(&c, COL_NOTE, "病假");
    row_map_values(&c);
    assert_string_equal(c.v[COL_STATUS], "absent");
    assert_string_equal(c.v[COL_REASON], "sick"); /* from the status: the reason was empty */
    assert_string_equal(c.v[COL_GENDER], "female");
    assert_string_equal(c.v[COL_GUARDIAN_CONTACTED], "yes");
    assert_string_equal(c.v[COL_CATEGORY], "留守儿童;残疾儿童;孤儿");
    assert_string_equal(c.v[COL_NOTE], "病假"); /* free text stays */
    /* a reason given wins over the status's */
    cells_set(&c, COL_STATUS, "事假");
    cells_set(&c, COL_REASON, "家庭原因");
    row_map_values(&c);
    assert_string_equal(c.v[COL_STATUS], "absent");
    assert_string_equal(c.v[COL_REASON], "family");
    /* the body: categories and values as the schema has them */
    cells_set(&c, COL_STUDENT_ID, "S-1");
    cells_set(&c, COL_NAME, "李明");
    cells_set(&c, COL_DATE, "2025-03-03");
    cells_set(&c, COL_CONSECUTIVE_DAYS, "2");
    cells_set(&c, COL_PERIOD, "下午");
    row_map_values(&c);
    char why[256];
    json_t *body = row_absence_body("school", &c, why, sizeof why);
    assert_non_null(body);
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(text,
                        "{\"child\":{\"category\":[\"left_behind\",\"disabled\",\"orphan\"],"
                        "\"gender\":\"female\",\"id\":\"S-1\",\"name\":\"李明\"},"
                        "\"consecutive_days\":2,\"date\":\"2025-03-03\","
                        "\"guardian_contacted\":true,\"note\":\"病假\",\"period\":\"afternoon\","
                        "\"reason\":\"family\",\"school\":\"school\"}");
    free(text);
    json_decref(body);
    /* an unknown Chinese value is a bad row, as an unknown English one */
    cells_set(&c, COL_PERIOD, "晚上");
    row_map_values(&c);
    assert_null(row_absence_body("school", &c, why, sizeof why));
    assert_non_null(strstr(why, "period"));
    row_cells_free(&c);
}

static void test_encoding_names(void **state)
{
    (void)state;
    enc_t e = ENC_AUTO;
    assert_int_equal(enc_parse("utf-8", &e), 0);
    assert_int_equal(e, ENC_UTF8);
    assert_int_equal(enc_parse("UTF8", &e), 0);
    assert_int_equal(e, ENC_UTF8);
    assert_int_equal(enc_parse("GB18030", &e), 0);
    assert_int_equal(e, ENC_GB18030);
    assert_int_equal(enc_parse("gbk", &e), 0);
    assert_int_equal(e, ENC_GBK);
    assert_int_equal(enc_parse("latin1", &e), -1);
    assert_int_equal(enc_separator_ok(ENC_GB18030, ','), 1);
    assert_int_equal(enc_separator_ok(ENC_GB18030, ';'), 1);
    assert_int_equal(enc_separator_ok(ENC_GB18030, '\t'), 1);
    assert_int_equal(enc_separator_ok(ENC_GB18030, '|'), 0);
    assert_int_equal(enc_separator_ok(ENC_GBK, '5'), 0);
    assert_int_equal(enc_separator_ok(ENC_UTF8, '|'), 1);
}

static void test_detect(void **state)
{
    (void)state;
    static const char u8[] = "学号,姓名\r\nS-1,李明\r\n";
    static const char gb[] = GB_XUEHAO ",x\r\nS-1," GB_LIMING "\r\n";
    static const char bom[] = "\xef\xbb\xbfS-1," GB_LIMING "\r\n"; /* a BOM wins */
    assert_int_equal(enc_detect((const unsigned char *)u8, strlen(u8), 1), ENC_UTF8);
    assert_int_equal(enc_detect((const unsigned char *)"a,b\n", 4, 1), ENC_UTF8);
    assert_int_equal(enc_detect((const unsigned char *)gb, strlen(gb), 1), ENC_GB18030);
    assert_int_equal(enc_detect((const unsigned char *)bom, strlen(bom), 1), ENC_UTF8);
    /* many UTF-8 characters and one stray GBK name: UTF-8 (that row is reported) */
    char mixed[512];
    util_fmt(mixed, sizeof mixed, "%s%s%s%s", u8, u8, u8, "S-2," GB_LIMING "\n");
    assert_int_equal(enc_detect((const unsigned char *)mixed, strlen(mixed), 1), ENC_UTF8);
    /* a UTF-8 character cut by the end of what was read is not held against it */
    assert_int_equal(enc_detect((const unsigned char *)u8, 4, 0), ENC_UTF8);
}

static void test_convert(void **state)
{
    (void)state;
    char why[200];
    enc_conv_t *gb = enc_conv_new(ENC_GB18030), *gbk = enc_conv_new(ENC_GBK),
               *u8 = enc_conv_new(ENC_UTF8);
    assert_non_null(gb);
    assert_non_null(gbk);
    assert_non_null(u8);
    char *s = enc_to_utf8(gb, GB_XUEHAO, 4, why, sizeof why);
    assert_string_equal(s, "学号");
    free(s);
    s = enc_to_utf8(gbk, "S-1 " GB_LIMING, 8, why, sizeof why);
    assert_string_equal(s, "S-1 李明");
    free(s);
    s = enc_to_utf8(gb, "", 0, why, sizeof why);
    assert_string_equal(s, "");
    free(s);
    /* a 4-byte GB18030 character (U+20000 𠀀) */
    s = enc_to_utf8(gb, "\x95\x32\x82\x36", 4, why, sizeof why);
    assert_string_equal(s, "\xf0\xa0\x80\x80");
    free(s);
    /* undecodable: the byte and where */
    assert_null(enc_to_utf8(gb, "ab\x80" "c", 4, why, sizeof why));
    assert_string_equal(why, "byte 0x80 at byte 3 is not GB18030");
    assert_null(enc_to_utf8(gb, "ab\xc0", 3, why, sizeof why));
    assert_non_null(strstr(why, "ends inside a GB18030 character"));
    assert_null(enc_to_utf8(u8, "x" GB_LIMING, 5, why, sizeof why));
    assert_string_equal(why, "byte 0xC0 at byte 2 is not UTF-8");
    s = enc_to_utf8(u8, "李明", strlen("李明"), why, sizeof why);
    assert_string_equal(s, "李明");
    free(s);
    enc_conv_free(&gb);
    enc_conv_free(&gbk);
    enc_conv_free(&u8);
    assert_null(gb);
    enc_conv_free(&gb); /* twice: nothing */
}

/* The stream after a detection gives back every byte, also past the first MiB. */
static void test_detect_stream(void **state)
{
    (void)state;
    size_t n = ENC_DETECT_BYTES + 4096 + 7;
    char *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)('a' + i % 26);
    memcpy(data, GB_XUEHAO, 4);
    FILE *f = fmemopen(data, n, "rb");
    assert_non_null(f);
    enc_t e = ENC_AUTO;
    FILE *s = enc_detect_stream(f, &e);
    assert_non_null(s);
    assert_int_equal(e, ENC_GB18030);
    char *back = malloc(n + 16);
    assert_non_null(back);
    size_t got = 0, k;
    while ((k = fread(back + got, 1, n + 16 - got, s)) > 0)
        got += k;
    assert_int_equal(got, n);
    assert_memory_equal(back, data, n);
    fclose(s);
    fclose(f);
    /* a small file: read whole for the detection */
    f = fmemopen((void *)"a,b\n", 4, "rb");
    s = enc_detect_stream(f, &e);
    assert_int_equal(e, ENC_UTF8);
    assert_int_equal(fread(back, 1, 16, s), 4);
    assert_memory_equal(back, "a,b\n", 4);
    fclose(s);
    fclose(f);
    free(back);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_column_alias),
        cmocka_unit_test(test_value_alias),
        cmocka_unit_test(test_map_values),
        cmocka_unit_test(test_encoding_names),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_convert),
        cmocka_unit_test(test_detect_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
