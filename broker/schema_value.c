/*
 * schema_value.c — JSON values as JSON Schema sees them, shared by the compiler
 * and the validator (broker/schema_int.h): the type names, a growable string,
 * number comparison, JSON Schema equality (as a total order), UTF-8 length and
 * validity, and the "date" format.
 */
#include "schema_int.h"

#include "util.h"

#include <stdlib.h>
#include <string.h>

const schema_type_name_t schema_type_names[] = {
    {T_STRING, "string", "a string"},     {T_INTEGER, "integer", "an integer"},
    {T_NUMBER, "number", "a number"},     {T_BOOLEAN, "boolean", "a boolean"},
    {T_OBJECT, "object", "an object"},    {T_ARRAY, "array", "an array"},
    {T_NULL, "null", "null"},
};
const size_t schema_ntype_names = UTIL_ARRAY_LEN(schema_type_names);

/* 1 when the real r has no fractional part. */
int schema_real_is_integral(double r)
{
    if (r != r)
        return 0; /* NaN: jansson does not make these, but be safe */
    if (r >= 4503599627370496.0 || r <= -4503599627370496.0)
        return 1; /* |r| >= 2^52: every double there is an integer (or infinite) */
    return (double)(long long)r == r;
}

/* Compare an integer with a real exactly (no rounding of large integers). */
static int cmp_int_real(json_int_t i, double r)
{
    if (r >= 9223372036854775808.0)
        return -1;
    if (r < -9223372036854775808.0)
        return 1;
    long long t = (long long)r; /* truncates towards zero */
    if ((double)t > r)
        t--; /* floor for negative non-integers */
    if ((long long)i < t)
        return -1;
    if ((long long)i > t)
        return 1;
    return (double)t < r ? -1 : 0;
}

/* Compare two JSON numbers by value: <0, 0, >0. */
int schema_num_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return x < y ? -1 : x > y;
    }
    if (json_is_integer(a))
        return cmp_int_real(json_integer_value(a), json_real_value(b));
    if (json_is_integer(b))
        return -cmp_int_real(json_integer_value(b), json_real_value(a));
    double x = json_real_value(a), y = json_real_value(b);
    return x < y ? -1 : x > y;
}

/* Rank of a value's type in the total order below. */
static int type_rank(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return 0;
    case JSON_FALSE: return 1;
    case JSON_TRUE: return 2;
    case JSON_INTEGER:
    case JSON_REAL: return 3;
    case JSON_STRING: return 4;
    case JSON_ARRAY: return 5;
    case JSON_OBJECT: return 6;
    }
    return 7;
}

/* Bytewise order of two byte strings, shorter first on a common prefix. */
static int cmp_bytes(const char *a, size_t la, const char *b, size_t lb)
{
    int c = memcmp(a, b, la < lb ? la : lb);
    if (c)
        return c < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb;
}

/* One member of an object, for comparing objects key by key. */
typedef struct {
    const char *key;
    size_t len;
    json_t *val;
} member_t;

static int cmp_members(const void *a, const void *b)
{
    const member_t *x = a, *y = b;
    return cmp_bytes(x->key, x->len, y->key, y->len);
}

/* An object's members (borrowed) sorted by key. */
static member_t *sorted_members(json_t *obj, size_t *n)
{
    member_t *m = xcalloc(json_object_size(obj) + 1, sizeof *m);
    const char *key;
    size_t len, i = 0;
    json_t *v;
    json_object_keylen_foreach(obj, key, len, v) {
        m[i++] = (member_t){key, len, v};
    }
    qsort(m, i, sizeof *m, cmp_members);
    *n = i;
    return m;
}

/*
 * A total order on JSON values whose equality is JSON Schema's equality:
 * numbers by value (1 == 1.0), booleans distinct from numbers, arrays element by
 * element, objects by key set and values. Sets *deep when nesting exceeds the
 * validator's limit (the result is then meaningless).
 */
int schema_json_cmp(json_t *a, json_t *b, int depth, int *deep)
{
    if (depth > SCHEMA_MAX_DEPTH) {
        *deep = 1;
        return 0;
    }
    int ra = type_rank(a), rb = type_rank(b);
    if (ra != rb)
        return ra < rb ? -1 : 1;
    switch (json_typeof(a)) {
    case JSON_INTEGER:
    case JSON_REAL:
        return schema_num_cmp(a, b);
    case JSON_STRING:
        return cmp_bytes(json_string_value(a), json_string_length(a), json_string_value(b),
                         json_string_length(b));
    case JSON_ARRAY: {
        size_t la = json_array_size(a), lb = json_array_size(b);
        for (size_t i = 0; i < la && i < lb; i++) {
            int c = schema_json_cmp(json_array_get(a, i), json_array_get(b, i), depth + 1, deep);
            if (c || *deep)
                return c;
        }
        return la < lb ? -1 : la > lb;
    }
    case JSON_OBJECT: {
        size_t la = json_object_size(a), lb = json_object_size(b);
        if (la != lb)
            return la < lb ? -1 : 1;
        size_t na, nb;
        member_t *ka = sorted_members(a, &na), *kb = sorted_members(b, &nb);
        int c = 0;
        for (size_t i = 0; i < na && i < nb && !c; i++)
            c = cmp_members(&ka[i], &kb[i]);
        for (size_t i = 0; i < na && i < nb && !c && !*deep; i++)
            c = schema_json_cmp(ka[i].val, kb[i].val, depth + 1, deep);
        free(ka);
        free(kb);
        return c;
    }
    default:
        return 0; /* null, true, false: same rank is equal */
    }
}

/* 1 when s is a real calendar date written YYYY-MM-DD (years 0001–9999). */
int schema_is_date(const char *s, size_t n)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n != 10 || s[4] != '-' || s[7] != '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return 0;
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0');
    int d = (s[8] - '0') * 10 + (s[9] - '0');
    if (y < 1 || m < 1 || m > 12 || d < 1)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    int dim = mdays[m - 1] + (m == 2 && leap);
    return d <= dim;
}

