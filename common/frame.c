/* frame.c — msgpack guard, conversion and reply writer; see frame.h. */
#include "frame.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "carehub_wire.h"
#include "util.h"

const char *frame_strerror(frame_rc_t rc)
{
    switch (rc) {
    case FRAME_OK: return "ok";
    case FRAME_EMPTY: return "the frame is empty; send one msgpack map";
    case FRAME_TRUNCATED: return "the frame is not complete msgpack (a value or a declared length runs past its end)";
    case FRAME_BAD_BYTE: return "the frame is not msgpack (it holds the never-used byte 0xc1)";
    case FRAME_TOO_DEEP: return "the frame nests maps or arrays deeper than 16 levels";
    case FRAME_TRAILING: return "the frame has bytes after its msgpack map; send exactly one map per frame";
    case FRAME_NOT_MAP: return "the frame is msgpack but not a map; send one map with v, op and id";
    case FRAME_KEY_TYPE: return "the message map has a key that is not a string";
    }
    return "unknown frame error";
}

/* Reader over a byte range. All reads are bounds-checked. */
typedef struct {
    const unsigned char *p;
    size_t left;
} rd_t;

static int rd_take(rd_t *r, size_t n, const unsigned char **out)
{
    if (n > r->left)
        return -1;
    if (out)
        *out = r->p;
    r->p += n;
    r->left -= n;
    return 0;
}

static int rd_be(rd_t *r, size_t n, uint64_t *v)
{
    const unsigned char *b;
    if (rd_take(r, n, &b) < 0)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = (x << 8) | b[i];
    *v = x;
    return 0;
}

/* What one msgpack head declares. */
typedef enum { H_SCALAR, H_BYTES, H_ARRAY, H_MAP } head_kind_t;
typedef struct {
    head_kind_t kind;
    uint64_t n;      /* bytes to skip (H_BYTES, H_SCALAR payload), or element/pair count */
    int is_str;
} head_t;

static frame_rc_t read_head(rd_t *r, head_t *h)
{
    const unsigned char *b;
    uint64_t n;
    if (rd_take(r, 1, &b) < 0)
        return FRAME_TRUNCATED;
    unsigned c = *b;
    h->is_str = 0;
    h->n = 0;
    h->kind = H_SCALAR;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return FRAME_OK;
    if (c >= 0x80 && c <= 0x8f) { h->kind = H_MAP; h->n = c & 0x0f; return FRAME_OK; }
    if (c >= 0x90 && c <= 0x9f) { h->kind = H_ARRAY; h->n = c & 0x0f; return FRAME_OK; }
    if (c >= 0xa0 && c <= 0xbf) { h->kind = H_BYTES; h->n = c & 0x1f; h->is_str = 1; return FRAME_OK; }
    switch (c) {
    case 0xc1: return FRAME_BAD_BYTE;
    case 0xc4: case 0xc5: case 0xc6: /* bin 8/16/32 */
        if (rd_be(r, (size_t)1 << (c - 0xc4), &n) < 0) return FRAME_TRUNCATED;
        h->kind = H_BYTES; h->n = n; return FRAME_OK;
    case 0xc7: case 0xc8: case 0xc9: /* ext 8/16/32: length, type byte, data */
        if (rd_be(r, (size_t)1 << (c - 0xc7), &n) < 0) return FRAME_TRUNCATED;
        h->kind = H_BYTES; h->n = n + 1; return FRAME_OK;
    case 0xca: h->n = 4; h->kind = H_BYTES; return FRAME_OK;
    case 0xcb: h->n = 8; h->kind = H_BYTES; return FRAME_OK;
    case 0xcc: case 0xd0: h->n = 1; h->kind = H_BYTES; return FRAME_OK;
    case 0xcd: case 0xd1: h->n = 2; h->kind = H_BYTES; return FRAME_OK;
    case 0xce: case 0xd2: h->n = 4; h->kind = H_BYTES; return FRAME_OK;
    case 0xcf: case 0xd3: h->n = 8; h->kind = H_BYTES; return FRAME_OK;
    case 0xd4: h->n = 2; h->kind = H_BYTES; return FRAME_OK;  /* fixext 1 */
    case 0xd5: h->n = 3; h->kind = H_BYTES; return FRAME_OK;
    case 0xd6: h->n = 5; h->kind = H_BYTES; return FRAME_OK;
    case 0xd7: h->n = 9; h->kind = H_BYTES; return FRAME_OK;
    case 0xd8: h->n = 17; h->kind = H_BYTES; return FRAME_OK;
    case 0xd9: case 0xda: case 0xdb: /* str 8/16/32 */
        if (rd_be(r, (size_t)1 << (c - 0xd9), &n) < 0) return FRAME_TRUNCATED;
        h->kind = H_BYTES; h->n = n; h->is_str = 1; return FRAME_OK;
    case 0xdc: case 0xdd: /* array 16/32 */
        if (rd_be(r, c == 0xdc ? 2 : 4, &n) < 0) return FRAME_TRUNCATED;
        h->kind = H_ARRAY; h->n = n; return FRAME_OK;
    case 0xde: case 0xdf: /* map 16/32 */
        if (rd_be(r, c == 0xde ? 2 : 4, &n) < 0) return FRAME_TRUNCATED;
        h->kind = H_MAP; h->n = n; return FRAME_OK;
    }
    return FRAME_BAD_BYTE; /* not reached: every byte value is covered above */
}

/* Skip one value. Every element needs at least one byte, so a count larger
 * than the bytes left is a lie and is refused before looping over it. */
static frame_rc_t skip_value(rd_t *r, int depth)
{
    head_t h;
    frame_rc_t rc = read_head(r, &h);
    if (rc != FRAME_OK)
        return rc;
    switch (h.kind) {
    case H_SCALAR:
        return FRAME_OK;
    case H_BYTES:
        return rd_take(r, h.n, NULL) < 0 ? FRAME_TRUNCATED : FRAME_OK;
    case H_ARRAY:
    case H_MAP: {
        if (depth + 1 > FRAME_MAX_DEPTH)
            return FRAME_TOO_DEEP;
        uint64_t items = h.kind == H_MAP ? h.n * 2 : h.n;
        if (items > r->left)
            return FRAME_TRUNCATED;
        for (uint64_t i = 0; i < items; i++)
            if ((rc = skip_value(r, depth + 1)) != FRAME_OK)
                return rc;
        return FRAME_OK;
    }
    }
    return FRAME_BAD_BYTE;
}

frame_rc_t frame_check(const char *buf, size_t len)
{
    if (len == 0)
        return FRAME_EMPTY;
    rd_t r = {(const unsigned char *)buf, len};
    head_t h;
    frame_rc_t rc = read_head(&r, &h);
    if (rc != FRAME_OK)
        return rc;
    if (h.kind != H_MAP) {
        /* Tell "not msgpack" from "msgpack but not a map". */
        rd_t whole = {(const unsigned char *)buf, len};
        rc = skip_value(&whole, 0);
        if (rc != FRAME_OK)
            return rc;
        return whole.left ? FRAME_TRAILING : FRAME_NOT_MAP;
    }
    if (h.n * 2 > r.left)
        return FRAME_TRUNCATED;
    for (uint64_t i = 0; i < h.n; i++) {
        rd_t key = r;
        head_t kh;
        if ((rc = read_head(&key, &kh)) != FRAME_OK)
            return rc;
        if (!kh.is_str) {
            if ((rc = skip_value(&r, 1)) != FRAME_OK)
                return rc;
            return FRAME_KEY_TYPE;
        }
        if ((rc = skip_value(&r, 1)) != FRAME_OK)
            return rc;
        if ((rc = skip_value(&r, 1)) != FRAME_OK)
            return rc;
    }
    return r.left ? FRAME_TRAILING : FRAME_OK;
}

int frame_peek_id(const char *buf, size_t len, char *id, size_t idsize)
{
    rd_t r = {(const unsigned char *)buf, len};
    head_t h;
    if (read_head(&r, &h) != FRAME_OK || h.kind != H_MAP)
        return -1;
    for (uint64_t i = 0; i < h.n; i++) {
        head_t kh;
        const unsigned char *k;
        if (read_head(&r, &kh) != FRAME_OK)
            return -1;
        if (kh.kind != H_BYTES || rd_take(&r, kh.n, &k) < 0)
            return -1;
        if (kh.is_str && kh.n == 2 && memcmp(k, "id", 2) == 0) {
            head_t vh;
            const unsigned char *v;
            if (read_head(&r, &vh) != FRAME_OK || !vh.is_str || rd_take(&r, vh.n, &v) < 0)
                return -1;
            if (!util_valid_id((const char *)v, vh.n) || vh.n >= idsize)
                return -1;
            memcpy(id, v, vh.n);
            id[vh.n] = '\0';
            return 0;
        }
        if (skip_value(&r, 1) != FRAME_OK)
            return -1;
    }
    return -1;
}

const msgpack_object *frame_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

int frame_str(const msgpack_object *o, const char **s, size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return 0;
    *s = o->via.str.ptr;
    *n = o->via.str.size;
    return 1;
}

int frame_int(const msgpack_object *o, int64_t *v)
{
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX) {
        *v = (int64_t)o->via.u64;
        return 1;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *v = o->via.i64;
        return 1;
    }
    return 0;
}

/* Append "/token" (RFC 6901 escaped) to a JSON Pointer held in path. A token
 * that is not UTF-8 text (it may be a peer's garbage key) is written with '?'
 * for every byte outside printable ASCII, so the path can be sent back in a nack. */
static void path_push(char *path, size_t size, const char *tok, size_t n)
{
    json_t *probe = json_stringn_nocheck("", 0);
    int clean = 1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)tok[i] < 0x20 || tok[i] == 0x7f)
            clean = 0;
    if (clean && json_string_setn(probe, tok, n) < 0) /* jansson checks UTF-8 */
        clean = 0;
    json_decref(probe);
    size_t at = strlen(path);
    if (at + 1 >= size)
        return;
    path[at++] = '/';
    for (size_t i = 0; i < n && at + 2 < size; i++) {
        if (!clean && ((unsigned char)tok[i] < 0x20 || (unsigned char)tok[i] >= 0x7f))
            path[at++] = '?';
        else if (tok[i] == '~') { path[at++] = '~'; path[at++] = '0'; }
        else if (tok[i] == '/') { path[at++] = '~'; path[at++] = '1'; }
        else path[at++] = tok[i];
    }
    path[at] = '\0';
}

static json_t *to_json(const msgpack_object *o, unsigned flags, char *path, size_t pathsize,
                       char *why, size_t whysize)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: {
        json_t *j = json_real(o->via.f64);
        if (!j)
            util_fmt(why, whysize, "must be a finite number (NaN and infinity are not allowed)");
        return j;
    }
    case MSGPACK_OBJECT_STR: {
        /* msgpack-c may give an empty string a NULL pointer */
        json_t *j = json_stringn(o->via.str.size ? o->via.str.ptr : "", o->via.str.size);
        if (!j)
            util_fmt(why, whysize, "must be valid UTF-8 text without NUL bytes");
        return j;
    }
    case MSGPACK_OBJECT_BIN: {
        if (!(flags & FRAME_JSON_BIN_HEX)) {
            util_fmt(why, whysize, "must not be binary data; send text as a msgpack str");
            return NULL;
        }
        size_t n = o->via.bin.size;
        char *hex = xmalloc(2 * n + 1);
        sodium_bin2hex(hex, 2 * n + 1, (const unsigned char *)o->via.bin.ptr, n);
        json_t *j = json_string(hex);
        free(hex);
        return j;
    }
    case MSGPACK_OBJECT_EXT:
        util_fmt(why, whysize, "must not be a msgpack extension value");
        return NULL;
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            char idx[16];
            size_t save = strlen(path);
            util_fmt(idx, sizeof idx, "%u", i);
            path_push(path, pathsize, idx, strlen(idx));
            json_t *e = to_json(&o->via.array.ptr[i], flags, path, pathsize, why, whysize);
            if (!e) {
                json_decref(a);
                return NULL;
            }
            path[save] = '\0';
            json_array_append_new(a, e);
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type != MSGPACK_OBJECT_STR) {
                util_fmt(why, whysize, "has a key that is not a string; map keys must be strings");
                json_decref(m);
                return NULL;
            }
            size_t save = strlen(path);
            const char *kp = k->via.str.size ? k->via.str.ptr : "";
            path_push(path, pathsize, kp, k->via.str.size);
            if (json_object_getn(m, kp, k->via.str.size)) {
                util_fmt(why, whysize, "appears twice in the same map");
                json_decref(m);
                return NULL;
            }
            json_t *v = to_json(&o->via.map.ptr[i].val, flags, path, pathsize, why, whysize);
            if (!v) {
                json_decref(m);
                return NULL;
            }
            if (json_object_setn_new(m, kp, k->via.str.size, v) < 0) {
                util_fmt(why, whysize, "has a key that is not valid UTF-8 text");
                json_decref(m);
                return NULL;
            }
            path[save] = '\0';
        }
        return m;
    }
    }
    util_fmt(why, whysize, "has a value of an unknown msgpack type");
    return NULL;
}

json_t *frame_to_json_flags(const msgpack_object *o, unsigned flags, char *path, size_t pathsize,
                            char *why, size_t whysize)
{
    if (pathsize)
        path[0] = '\0';
    if (whysize)
        why[0] = '\0';
    return to_json(o, flags, path, pathsize, why, whysize);
}

json_t *frame_to_json(const msgpack_object *o, char *path, size_t pathsize, char *why,
                      size_t whysize)
{
    return frame_to_json_flags(o, 0, path, pathsize, why, whysize);
}

void frame_text_clean(char *s)
{
    size_t n = strlen(s);
    json_t *probe = json_stringn_nocheck("", 0);
    int ok = json_string_setn(probe, s, n) == 0; /* jansson checks UTF-8 */
    json_decref(probe);
    if (ok)
        return;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            s[i] = '?';
}

void frame_pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void frame_pack_json(msgpack_packer *pk, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        size_t kl;
        json_t *v;
        msgpack_pack_map(pk, json_object_size(j));
        json_object_keylen_foreach((json_t *)j, k, kl, v) { /* keys may hold NUL */
            msgpack_pack_str(pk, kl);
            msgpack_pack_str_body(pk, k, kl);
            frame_pack_json(pk, v);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *v;
        msgpack_pack_array(pk, json_array_size(j));
        json_array_foreach(j, i, v)
            frame_pack_json(pk, v);
        break;
    }
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(j));
        msgpack_pack_str_body(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(j)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
}

void frame_out_begin(frame_out_t *o, uint32_t nkeys)
{
    msgpack_sbuffer_init(&o->sb);
    msgpack_packer_init(&o->pk, &o->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&o->pk, nkeys);
}

void frame_out_message(frame_out_t *o, const char *op, const char *id, uint32_t nmore)
{
    frame_out_begin(o, 2 + (id != NULL) + nmore);
    frame_out_int(o, "v", CAREHUB_WIRE_VERSION);
    frame_out_str(o, "op", op);
    if (id)
        frame_out_str(o, "id", id);
}

void frame_out_key(frame_out_t *o, const char *key)
{
    frame_pack_cstr(&o->pk, key);
}

void frame_out_str(frame_out_t *o, const char *key, const char *val)
{
    frame_out_strn(o, key, val, strlen(val));
}

void frame_out_strn(frame_out_t *o, const char *key, const char *val, size_t n)
{
    frame_pack_cstr(&o->pk, key);
    msgpack_pack_str(&o->pk, n);
    msgpack_pack_str_body(&o->pk, val, n);
}

void frame_out_int(frame_out_t *o, const char *key, int64_t val)
{
    frame_pack_cstr(&o->pk, key);
    msgpack_pack_int64(&o->pk, val);
}

void frame_out_bool(frame_out_t *o, const char *key, int val)
{
    frame_pack_cstr(&o->pk, key);
    if (val)
        msgpack_pack_true(&o->pk);
    else
        msgpack_pack_false(&o->pk);
}

void frame_out_end(frame_out_t *o)
{
    msgpack_sbuffer_destroy(&o->sb);
}
