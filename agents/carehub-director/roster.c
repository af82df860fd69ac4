/*
 * roster.c — carehub-director's roster rows and roster state; see roster.h.
 */
#include "roster.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "cli.h"
#include "csv.h"
#include "schema_tables.h"
#include "util.h"

/* The values and limits are schemas/enrolment.json's (schema_tables.h, generated). */
#define EN(x) SCHEMA_ENROLMENT_##x

const char *const ROSTER_COLS[RC_NCOLS] = {
    [RC_CHILD_ID] = "child_id",
    [RC_NAME] = "name",
    [RC_CATEGORY] = "category",
    [RC_VILLAGE] = "village",
    [RC_GENDER] = "gender",
    [RC_BIRTH_DATE] = "birth_date",
    [RC_JURISDICTION] = "jurisdiction",
    [RC_GUARDIAN_NAME] = "guardian_name",
    [RC_GUARDIAN_RELATION] = "guardian_relation",
    [RC_GUARDIAN_PHONE] = "guardian_phone",
    [RC_RISK] = "risk",
    [RC_RISK_REASONS] = "risk_reasons",
    [RC_ACTIVE] = "active",
    [RC_NOTE] = "note",
};

const int ROSTER_REQUIRED[RC_NCOLS] = {[RC_CHILD_ID] = 1, [RC_NAME] = 1, [RC_CATEGORY] = 1};

static const char *const GENDERS[] = EN(CHILD_GENDER_ENUM);
static const char *const CATEGORIES[] = EN(CHILD_CATEGORY_ITEMS_ENUM);
static const char *const RISKS[] = EN(RISK_ENUM);
static const char *const RISK_REASONS[] = EN(RISK_REASONS_ITEMS_ENUM);

int roster_column(const char *cell)
{
    char norm[64];
    if (csv_header_name(cell, norm, sizeof norm) < 0)
        return -1;
    for (int i = 0; i < RC_NCOLS; i++)
        if (!strcmp(norm, ROSTER_COLS[i]))
            return i;
    return -1;
}

void roster_column_list(char *buf, size_t len)
{
    const char *cols[RC_NCOLS + 1];
    for (int i = 0; i < RC_NCOLS; i++)
        cols[i] = ROSTER_COLS[i];
    cols[RC_NCOLS] = NULL;
    cli_enum_list(cols, ", ", buf, len);
}

/* ---- one row -------------------------------------------------------------------------- */

#define BAD(...)                               \
    do {                                       \
        util_fmt(why, whylen, __VA_ARGS__);    \
        goto bad;                              \
    } while (0)

static void lower_ascii(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

/* A text cell of at most max characters (when not empty) as key of o. 0, or -1 with why. */
static int put_text(json_t *o, const char *key, int col, const char *cell, size_t max, char *why,
                    size_t whylen)
{
    if (!*cell)
        return 0;
    if (cli_utf8_len(cell) > max) {
        util_fmt(why, whylen, "%s is longer than %zu characters", ROSTER_COLS[col], max);
        return -1;
    }
    json_object_set_new(o, key, json_string(cell));
    return 0;
}

/* An enum cell (lower-cased; when not empty) that must be one of vals, as key of o. */
static int put_enum(json_t *o, const char *key, int col, char *cell, const char *const *vals,
                    char *why, size_t whylen)
{
    char sub[512];
    lower_ascii(cell);
    if (!*cell)
        return 0;
    if (cli_enum_check(cell, vals, "|", sub, sizeof sub) < 0) {
        util_fmt(why, whylen, "%s %s", ROSTER_COLS[col], sub);
        return -1;
    }
    json_object_set_new(o, key, json_string(cell));
    return 0;
}

/* A list cell (values separated by ';' or '|'), each one of vals, at most once:
 * a JSON array into *out (NULL when the cell is empty). */
static int put_list(json_t *o, const char *key, int col, char *cell, const char *const *vals,
                    size_t nvals, char *why, size_t whylen)
{
    char sub[512];
    if (!*cell)
        return 0;
    json_t *arr = json_array();
    unsigned char *seen = xcalloc(nvals, 1);
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(cell, ";|", &save); tok;
         tok = strtok_r(NULL, ";|", &save)) {
        cli_trim(tok);
        lower_ascii(tok);
        if (!*tok)
            continue;
        int k = cli_enum_check(tok, vals, ", ", sub, sizeof sub);
        if (k < 0) {
            util_fmt(why, whylen, "%s %s (several: separated by ';' or '|')", ROSTER_COLS[col], sub);
            rc = -1;
            break;
        }
        if (!seen[k]++)
            json_array_append_new(arr, json_string(tok));
    }
    free(seen);
    if (rc == 0 && json_array_size(arr) > 0)
        json_object_set(o, key, arr);
    json_decref(arr);
    return rc;
}

json_t *roster_body(char **c, const char *village_default, char *why, size_t whylen)
{
    json_t *body = json_object();
    json_t *child = json_object();
    json_t *guardian = json_object();

    if (!*c[RC_CHILD_ID])
        BAD("child_id is empty");
    if (put_text(child, "id", RC_CHILD_ID, c[RC_CHILD_ID], EN(CHILD_ID_MAX_LENGTH), why, whylen) < 0)
        goto bad;
    if (!*c[RC_NAME])
        BAD("name is empty (the register keeps the child's name)");
    if (put_text(child, "name", RC_NAME, c[RC_NAME], EN(CHILD_NAME_MAX_LENGTH), why, whylen) < 0)
        goto bad;
    if (put_list(child, "category", RC_CATEGORY, c[RC_CATEGORY], CATEGORIES,
                 EN(CHILD_CATEGORY_ITEMS_ENUM_COUNT), why, whylen) < 0)
        goto bad;
    if (json_array_size(json_object_get(child, "category")) < EN(CHILD_CATEGORY_MIN_ITEMS))
        BAD("category is empty (at least one of %s)", EN(CHILD_CATEGORY_ITEMS_ENUM_TEXT));

    const char *village = c[RC_VILLAGE];
    if (!*village && village_default)
        village = village_default;
    else if (*village && village_default && strcmp(village, village_default) != 0)
        BAD("village '%s' is not the --village given ('%s')", cli_show(village),
            cli_show(village_default));
    if (!*village)
        BAD("village is empty (or give --village for the whole file)");
    if (put_text(body, "village", RC_VILLAGE, village, EN(VILLAGE_MAX_LENGTH), why, whylen) < 0)
        goto bad;

    if (put_enum(child, "gender", RC_GENDER, c[RC_GENDER], GENDERS, why, whylen) < 0)
        goto bad;
    if (*c[RC_BIRTH_DATE]) {
        if (!cli_valid_date(c[RC_BIRTH_DATE]))
            BAD("birth_date '%s' is not a day written YYYY-MM-DD", cli_show(c[RC_BIRTH_DATE]));
        json_object_set_new(child, "birth_date", json_string(c[RC_BIRTH_DATE]));
    }
    if (put_text(child, "jurisdiction", RC_JURISDICTION, c[RC_JURISDICTION],
                 EN(CHILD_JURISDICTION_MAX_LENGTH), why, whylen) < 0 ||
        put_text(guardian, "name", RC_GUARDIAN_NAME, c[RC_GUARDIAN_NAME],
                 EN(CHILD_GUARDIAN_NAME_MAX_LENGTH), why, whylen) < 0 ||
        put_text(guardian, "relation", RC_GUARDIAN_RELATION, c[RC_GUARDIAN_RELATION],
                 EN(CHILD_GUARDIAN_RELATION_MAX_LENGTH), why, whylen) < 0 ||
        put_text(guardian, "phone", RC_GUARDIAN_PHONE, c[RC_GUARDIAN_PHONE],
                 EN(CHILD_GUARDIAN_PHONE_MAX_LENGTH), why, whylen) < 0)
        goto bad;
    if (json_object_size(guardian) > 0)
        json_object_set(child, "guardian", guardian);

    if (put_enum(body, "risk", RC_RISK, c[RC_RISK], RISKS, why, whylen) < 0 ||
        put_list(body, "risk_reasons", RC_RISK_REASONS, c[RC_RISK_REASONS], RISK_REASONS,
                 EN(RISK_REASONS_ITEMS_ENUM_COUNT), why, whylen) < 0)
        goto bad;
    if (*c[RC_ACTIVE]) {
        int yes;
        if (cli_parse_bool(c[RC_ACTIVE], &yes) < 0)
            BAD("active '%s' is not yes, no, true or false", cli_show(c[RC_ACTIVE]));
        json_object_set_new(body, "active", json_boolean(yes));
    }
    if (put_text(body, "note", RC_NOTE, c[RC_NOTE], EN(NOTE_MAX_LENGTH), why, whylen) < 0)
        goto bad;
    json_object_set_new(body, "child", child);
    json_decref(guardian);
    return body;
bad:
    json_decref(guardian);
    json_decref(child);
    json_decref(body);
    return NULL;
}

/* ---- the roster state ------------------------------------------------------------------ */

struct roster_state {
    char path[4200];
    unsigned char key[IDKEY_BYTES];
    json_t *children;   /* keyed hash of the child id -> {"c": content hash, "g": generation} */
    int changed;
};

roster_state_t *roster_state_load(const char *spool_dir, const unsigned char key[IDKEY_BYTES],
                                  char *why, size_t whylen)
{
    roster_state_t *st = xcalloc(1, sizeof *st);
    util_fmt(st->path, sizeof st->path, "%s/%s", spool_dir, ROSTER_STATE_FILE);
    memcpy(st->key, key, IDKEY_BYTES);
    json_error_t je;
    json_t *j = json_load_file(st->path, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        if (access(st->path, F_OK) != 0 && errno == ENOENT) {
            st->children = json_object();
            return st;
        }
        util_fmt(why, whylen, "%s cannot be read: %s (line %d); move it away to start afresh "
                 "(rows enrolled before, changed and changed back, are then not sent again)",
                 st->path, je.text, je.line);
        free(st);
        return NULL;
    }
    if (!json_is_object(json_object_get(j, "children"))) {
        util_fmt(why, whylen, "%s is not a roster state (no \"children\" object)", st->path);
        json_decref(j);
        free(st);
        return NULL;
    }
    st->children = json_incref(json_object_get(j, "children"));
    json_decref(j);
    return st;
}

void roster_state_free(roster_state_t **stp)
{
    if (!stp || !*stp)
        return;
    json_decref((*stp)->children);
    sodium_memzero((*stp)->key, sizeof (*stp)->key);
    free(*stp);
    *stp = NULL;
}

void roster_enrolment_id(roster_state_t *st, const char *child_id, const json_t *body, char out[65])
{
    char ckey[65], content[65], gen[24];
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    const char *cparts[] = {"child", child_id};
    const char *bparts[] = {"content", child_id, text ? text : ""};
    idkey_id(st->key, "", cparts, 2, ckey);
    idkey_id(st->key, "", bparts, 3, content);

    json_t *e = json_object_get(st->children, ckey);
    const char *last = json_string_value(json_object_get(e, "c"));
    json_int_t g = json_integer_value(json_object_get(e, "g"));
    if (e && (!last || strcmp(last, content) != 0)) {
        g++;   /* a change since the last enrolment: a new generation */
        json_object_set_new(st->children, ckey, json_pack("{s:s, s:I}", "c", content, "g", g));
        st->changed = 1;
    } else if (!e) {
        json_object_set_new(st->children, ckey, json_pack("{s:s, s:I}", "c", content, "g", g));
        st->changed = 1;
    }
    util_fmt(gen, sizeof gen, "%lld", (long long)g);
    const char *parts[] = {child_id, text ? text : "", gen};
    idkey_id(st->key, "enr:", parts, 3, out);
    free(text);
}

int roster_state_save(roster_state_t *st, char *why, size_t whylen)
{
    if (!st->changed)
        return 0;
    char tmp[4300];
    util_fmt(tmp, sizeof tmp, "%s.tmp", st->path);
    json_t *j = json_pack("{s:i, s:O}", "version", 1, "children", st->children);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    int fd = -1, rc = -1;
    (void)unlink(tmp);
    if (text && (fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) >= 0) {
        size_t len = strlen(text);
        if (write(fd, text, len) == (ssize_t)len && fsync(fd) == 0 && close(fd) == 0) {
            fd = -1;
            rc = rename(tmp, st->path);
        }
    }
    if (rc != 0) {
        util_fmt(why, whylen, "cannot write %s: %s", st->path, text ? strerror(errno) : "out of memory");
        if (fd >= 0)
            close(fd);
        (void)unlink(tmp);
    } else {
        st->changed = 0;
    }
    free(text);
    return rc;
}
