/*
 * row.c — carehub-school's rows; see row.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "row.h"
#include "cli.h"
#include "schema_tables.h"
#include "util.h"

/* The values and limits are schemas/absence.json's (schema_tables.h, generated). */
#define AB(x) SCHEMA_ABSENCE_##x

const col_info_t COLS[NCOLS] = {
    [COL_STUDENT_ID] = {"student_id", 1},
    [COL_NAME] = {"name", 1},
    [COL_DATE] = {"date", 1},
    [COL_STATUS] = {"status", 1},
    [COL_REASON] = {"reason", 1},
    [COL_CONSECUTIVE_DAYS] = {"consecutive_days", 1},
    [COL_GENDER] = {"gender", 0},
    [COL_BIRTH_DATE] = {"birth_date", 0},
    [COL_GUARDIAN_CONTACTED] = {"guardian_contacted", 0},
    [COL_PERIOD] = {"period", 0},
    [COL_GUARDIAN_NAME] = {"guardian_name", 0},
    [COL_GUARDIAN_RELATION] = {"guardian_relation", 0},
    [COL_GUARDIAN_PHONE] = {"guardian_phone", 0},
    [COL_CATEGORY] = {"category", 0},
    [COL_JURISDICTION] = {"jurisdiction", 0},
    [COL_SEVERITY] = {"severity", 0},
    [COL_NOTE] = {"note", 0},
};

const char *const STATUS_SKIP[] = {"present", "late", NULL};
static const char *const REASONS[] = AB(REASON_ENUM);
static const char *const GENDERS[] = AB(CHILD_GENDER_ENUM);
static const char *const PERIODS[] = AB(PERIOD_ENUM);
static const char *const CATEGORIES[] = AB(CHILD_CATEGORY_ITEMS_ENUM);
static const char *const SEVERITIES[] = AB(SEVERITY_ENUM);

/* ---- Chinese headers and values (docs/agents.md, "Chinese exports") ---- */

static const struct {
    const char *zh;
    int col;
} COL_ZH[] = {
    {"学号", COL_STUDENT_ID}, {"学生编号", COL_STUDENT_ID}, {"学籍号", COL_STUDENT_ID},
    {"姓名", COL_NAME}, {"学生姓名", COL_NAME},
    {"日期", COL_DATE}, {"考勤日期", COL_DATE}, {"缺勤日期", COL_DATE},
    {"出勤状态", COL_STATUS}, {"考勤状态", COL_STATUS}, {"状态", COL_STATUS},
    {"原因", COL_REASON}, {"缺勤原因", COL_REASON},
    {"连续缺勤天数", COL_CONSECUTIVE_DAYS}, {"连续缺勤", COL_CONSECUTIVE_DAYS},
    {"性别", COL_GENDER},
    {"出生日期", COL_BIRTH_DATE},
    {"联系监护人", COL_GUARDIAN_CONTACTED}, {"已联系监护人", COL_GUARDIAN_CONTACTED},
    {"是否联系监护人", COL_GUARDIAN_CONTACTED},
    {"时段", COL_PERIOD}, {"缺勤时段", COL_PERIOD},
    {"监护人", COL_GUARDIAN_NAME}, {"监护人姓名", COL_GUARDIAN_NAME},
    {"监护人关系", COL_GUARDIAN_RELATION}, {"与学生关系", COL_GUARDIAN_RELATION},
    {"监护人电话", COL_GUARDIAN_PHONE}, {"联系电话", COL_GUARDIAN_PHONE},
    {"类别", COL_CATEGORY}, {"学生类别", COL_CATEGORY},
    {"辖区", COL_JURISDICTION}, {"街镇", COL_JURISDICTION},
    {"紧急程度", COL_SEVERITY},
    {"备注", COL_NOTE},
    {"班级", ROW_COL_IGNORED},
};

static const struct {
    col_t col;
    const char *zh, *en;
} VAL_ZH[] = {
    {COL_STATUS, "出勤", "present"}, {COL_STATUS, "到校", "present"},
    {COL_STATUS, "正常", "present"}, {COL_STATUS, "迟到", "late"},
    {COL_STATUS, "缺勤", "absent"}, {COL_STATUS, "缺席", "absent"},
    {COL_STATUS, "病假", "absent"}, {COL_STATUS, "事假", "absent"},
    {COL_STATUS, "旷课", "absent"},
    {COL_REASON, "病假", "sick"}, {COL_REASON, "生病", "sick"},
    {COL_REASON, "事假", "leave"}, {COL_REASON, "请假", "leave"},
    {COL_REASON, "无故", "unexplained"}, {COL_REASON, "无故缺勤", "unexplained"},
    {COL_REASON, "旷课", "unexplained"},
    {COL_REASON, "家庭原因", "family"}, {COL_REASON, "家事", "family"},
    {COL_REASON, "不明", "unknown"}, {COL_REASON, "未知", "unknown"},
    {COL_GENDER, "男", "male"}, {COL_GENDER, "女", "female"}, {COL_GENDER, "未知", "unknown"},
    {COL_PERIOD, "全天", "full_day"}, {COL_PERIOD, "上午", "morning"},
    {COL_PERIOD, "下午", "afternoon"},
    {COL_GUARDIAN_CONTACTED, "是", "yes"}, {COL_GUARDIAN_CONTACTED, "否", "no"},
    {COL_GUARDIAN_CONTACTED, "已联系", "yes"}, {COL_GUARDIAN_CONTACTED, "未联系", "no"},
    {COL_SEVERITY, "紧急", "critical"}, {COL_SEVERITY, "高", "high"},
    {COL_SEVERITY, "一般", "normal"}, {COL_SEVERITY, "低", "low"},
    {COL_CATEGORY, "留守儿童", "left_behind"}, {COL_CATEGORY, "困境儿童", "in_difficulty"},
    {COL_CATEGORY, "孤儿", "orphan"}, {COL_CATEGORY, "事实无人抚养儿童", "unattended"},
    {COL_CATEGORY, "事实无人抚养", "unattended"}, {COL_CATEGORY, "残疾儿童", "disabled"},
    {COL_CATEGORY, "残疾", "disabled"}, {COL_CATEGORY, "其他", "other"},
};

/* A status that is an absence with its reason (a one-column export: 出勤/迟到/病假/…). */
static const struct {
    const char *zh, *reason;
} STATUS_REASON_ZH[] = {{"病假", "sick"}, {"事假", "leave"}, {"旷课", "unexplained"}};

int row_column_alias(const char *name)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(COL_ZH); i++)
        if (!strcmp(name, COL_ZH[i].zh))
            return COL_ZH[i].col;
    return -1;
}

const char *row_value_alias(col_t col, const char *cell)
{
    for (size_t i = 0; i < UTIL_ARRAY_LEN(VAL_ZH); i++)
        if (VAL_ZH[i].col == col && !strcmp(cell, VAL_ZH[i].zh))
            return VAL_ZH[i].en;
    return NULL;
}

static void set_cell(cells_t *c, col_t col, const char *v)
{
    free(c->v[col]);
    c->v[col] = xstrdup(v);
}

void row_map_values(cells_t *c)
{
    static const col_t ENUMS[] = {COL_REASON, COL_GENDER, COL_PERIOD, COL_GUARDIAN_CONTACTED,
                                  COL_SEVERITY};
    if (!*c->v[COL_REASON])
        for (size_t i = 0; i < UTIL_ARRAY_LEN(STATUS_REASON_ZH); i++)
            if (!strcmp(c->v[COL_STATUS], STATUS_REASON_ZH[i].zh))
                set_cell(c, COL_REASON, STATUS_REASON_ZH[i].reason);
    const char *en = row_value_alias(COL_STATUS, c->v[COL_STATUS]);
    if (en)
        set_cell(c, COL_STATUS, en);
    for (size_t i = 0; i < UTIL_ARRAY_LEN(ENUMS); i++)
        if ((en = row_value_alias(ENUMS[i], c->v[ENUMS[i]])))
            set_cell(c, ENUMS[i], en);
    /* 、 ， ； (3 bytes each in UTF-8) separate categories: as ';' */
    static const char *const SEPS[] = {"\xe3\x80\x81", "\xef\xbc\x8c", "\xef\xbc\x9b"};
    char *cat = c->v[COL_CATEGORY];
    for (size_t i = 0; i < UTIL_ARRAY_LEN(SEPS); i++)
        for (char *p; (p = strstr(cat, SEPS[i]));) {
            *p = ';';
            memmove(p + 1, p + 3, strlen(p + 3) + 1);
        }
}

/* The reason of a row whose reason cell is empty. */
#define DEFAULT_REASON "unknown"
/* consecutive_days above this is a mistake in the export (the schema sets no maximum). */
#define MAX_CONSECUTIVE_DAYS 10000

void row_cells_free(cells_t *c)
{
    for (int i = 0; i < NCOLS; i++)
        free(c->v[i]);
}

void row_lower_ascii(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/* Problems with a row go into why[]; the first one is reported. */
#define ROW_BAD(...)                           \
    do {                                       \
        util_fmt(why, whylen, __VA_ARGS__);    \
        goto bad;                              \
    } while (0)

int row_set_str(json_t *o, const char *k, const char *v)
{
    return json_object_set_new(o, k, json_string(v));
}

/* A text cell of at most max characters (when not empty) as key of o. 0, or -1 with why. */
static int row_text(json_t *o, const char *key, const char *col, const char *cell, size_t max,
                    char *why, size_t whylen)
{
    if (!*cell)
        return 0;
    if (cli_utf8_len(cell) > max) {
        util_fmt(why, whylen, "%s is longer than %zu characters", col, max);
        return -1;
    }
    row_set_str(o, key, cell);
    return 0;
}

/* An enum cell (lower-cased; when not empty) that must be one of vals, as key of o.
 * 0, or -1 with why. */
static int row_enum(json_t *o, const char *key, char *cell, const char *const *vals, char *why,
                    size_t whylen)
{
    char sub[512];
    row_lower_ascii(cell);
    if (!*cell)
        return 0;
    if (cli_enum_check(cell, vals, "|", sub, sizeof sub) < 0) {
        util_fmt(why, whylen, "%s %s", key, sub);
        return -1;
    }
    row_set_str(o, key, cell);
    return 0;
}

/*
 * Check one absent row and build its body. NULL with why[] on a bad row.
 */
json_t *row_absence_body(const char *school, cells_t *c, char *why, size_t whylen)
{
    char sub[512];
    json_t *body = json_object();
    json_t *child = json_object();
    json_t *guardian = json_object();

    const char *sid = c->v[COL_STUDENT_ID];
    if (!*sid)
        ROW_BAD("student_id is empty");
    if (row_text(child, "id", "student_id", sid, AB(CHILD_ID_MAX_LENGTH), why, whylen) < 0)
        goto bad;
    const char *name = c->v[COL_NAME];
    if (!*name)
        ROW_BAD("name is empty (the broker needs the pupil's name)");
    if (row_text(child, "name", "name", name, AB(CHILD_NAME_MAX_LENGTH), why, whylen) < 0)
        goto bad;
    const char *date = c->v[COL_DATE];
    if (!cli_valid_date(date))
        ROW_BAD("date '%s' is not a day written YYYY-MM-DD", cli_show(date));

    row_lower_ascii(c->v[COL_REASON]);
    const char *reason = *c->v[COL_REASON] ? c->v[COL_REASON] : DEFAULT_REASON;
    if (cli_enum_check(reason, REASONS, "|", sub, sizeof sub) < 0)
        ROW_BAD("reason %s", sub);
    const char *days = c->v[COL_CONSECUTIVE_DAYS];
    if (!*days)
        ROW_BAD("consecutive_days is empty (school days absent in a row, this day included)");
    char *end = NULL;
    errno = 0;
    long nd = strtol(days, &end, 10);
    if (errno || *end || end == days || nd < AB(CONSECUTIVE_DAYS_MINIMUM) ||
        nd > MAX_CONSECUTIVE_DAYS)
        ROW_BAD("consecutive_days '%s' is not a whole number from %d to %d", cli_show(days),
                AB(CONSECUTIVE_DAYS_MINIMUM), MAX_CONSECUTIVE_DAYS);

    row_set_str(body, "school", school);
    row_set_str(body, "date", date);
    row_set_str(body, "reason", reason);
    json_object_set_new(body, "consecutive_days", json_integer(nd));

    if (row_enum(body, "period", c->v[COL_PERIOD], PERIODS, why, whylen) < 0)
        goto bad;
    const char *gc = c->v[COL_GUARDIAN_CONTACTED];
    if (*gc) {
        int yes;
        if (cli_parse_bool(gc, &yes) < 0)
            ROW_BAD("guardian_contacted '%s' is not yes, no, true or false", cli_show(gc));
        json_object_set_new(body, "guardian_contacted", json_boolean(yes));
    }
    if (row_enum(body, "severity", c->v[COL_SEVERITY], SEVERITIES, why, whylen) < 0 ||
        row_text(body, "note", "note", c->v[COL_NOTE], AB(NOTE_MAX_LENGTH), why, whylen) < 0 ||
        row_enum(child, "gender", c->v[COL_GENDER], GENDERS, why, whylen) < 0)
        goto bad;
    const char *bd = c->v[COL_BIRTH_DATE];
    if (*bd) {
        if (!cli_valid_date(bd))
            ROW_BAD("birth_date '%s' is not a day written YYYY-MM-DD", cli_show(bd));
        row_set_str(child, "birth_date", bd);
    }
    char *cat = c->v[COL_CATEGORY];
    if (*cat) {
        json_t *arr = json_array();
        int seen[AB(CHILD_CATEGORY_ITEMS_ENUM_COUNT)] = {0};
        json_object_set_new(child, "category", arr);
        for (char *save = NULL, *tok = strtok_r(cat, ";|,", &save); tok;
             tok = strtok_r(NULL, ";|,", &save)) {
            cli_trim(tok);
            row_lower_ascii(tok);
            if (!*tok)
                continue;
            const char *zh = row_value_alias(COL_CATEGORY, tok);
            if (zh)
                tok = (char *)zh; /* read only from here on */
            int k = cli_enum_check(tok, CATEGORIES, ", ", sub, sizeof sub);
            if (k < 0)
                ROW_BAD("category %s", sub);
            if (!seen[k]++)
                json_array_append_new(arr, json_string(tok));
        }
    }
    if (row_text(child, "jurisdiction", "jurisdiction", c->v[COL_JURISDICTION],
                 AB(CHILD_JURISDICTION_MAX_LENGTH), why, whylen) < 0)
        goto bad;
    static const struct {
        col_t col;
        const char *key;
        size_t max;
    } G[] = {{COL_GUARDIAN_NAME, "name", AB(CHILD_GUARDIAN_NAME_MAX_LENGTH)},
             {COL_GUARDIAN_RELATION, "relation", AB(CHILD_GUARDIAN_RELATION_MAX_LENGTH)},
             {COL_GUARDIAN_PHONE, "phone", AB(CHILD_GUARDIAN_PHONE_MAX_LENGTH)}};
    for (size_t i = 0; i < UTIL_ARRAY_LEN(G); i++)
        if (row_text(guardian, G[i].key, COLS[G[i].col].name, c->v[G[i].col], G[i].max, why,
                     whylen) < 0)
            goto bad;
    if (json_object_size(guardian) > 0)
        json_object_set(child, "guardian", guardian);
    json_decref(guardian);
    json_object_set_new(body, "child", child);
    return body;
bad:
    json_decref(guardian);
    json_decref(child);
    json_decref(body);
    return NULL;
}
