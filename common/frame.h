/*
 * frame.h — the broker's msgpack layer: every byte a peer sends passes here first.
 *
 * msgpack-c trusts the lengths it reads: a five-byte frame `dd ff 00 00 00`
 * declares an array of 4 billion elements and msgpack_unpack_next() would try to
 * allocate it; deep nesting exhausts its fixed parse stack. So a frame is first
 * walked by frame_check(), which allocates nothing and checks every declared
 * length against the bytes that remain and the nesting depth against a limit;
 * only a frame that passes is handed to msgpack-c.
 *
 * Also here: conversion of msgpack values to jansson values (event bodies are
 * validated as JSON documents), packing JSON values back to msgpack, and a
 * small writer for the broker's replies.
 */
#ifndef CAREHUB_FRAME_H
#define CAREHUB_FRAME_H

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

/* Deepest nesting a frame may have: envelope map → body → child → guardian is 4. */
#define FRAME_MAX_DEPTH 16

typedef enum {
    FRAME_OK = 0,
    FRAME_EMPTY,      /* zero bytes */
    FRAME_TRUNCATED,  /* a value, or a declared length, runs past the end */
    FRAME_BAD_BYTE,   /* 0xc1, the byte msgpack never uses */
    FRAME_TOO_DEEP,   /* nesting beyond FRAME_MAX_DEPTH */
    FRAME_TRAILING,   /* bytes after the first value */
    FRAME_NOT_MAP,    /* the value is not a map */
    FRAME_KEY_TYPE,   /* the top-level map has a key that is not a string */
} frame_rc_t;

/* A sentence describing rc, for nack errors. */
const char *frame_strerror(frame_rc_t rc);

/* Walk buf as exactly one msgpack map with string keys at the top level,
 * without allocating. FRAME_OK means msgpack_unpack_next() may safely decode it. */
frame_rc_t frame_check(const char *buf, size_t len);

/* For a frame too large to decode: find the top-level "id" string in a map and
 * copy it (NUL-terminated) into id. Returns 0 when found and valid per
 * PROTOCOL §1, -1 otherwise. Reads at most len bytes; allocates nothing. */
int frame_peek_id(const char *buf, size_t len, char *id, size_t idsize);

/* The value of a string key in a msgpack map, or NULL. */
const msgpack_object *frame_map_get(const msgpack_object *map, const char *key);

/* 1 when o is a string; then *s and *n point into the object (not NUL-terminated). */
int frame_str(const msgpack_object *o, const char **s, size_t *n);
/* 1 when o is an integer that fits int64; stored in *v. */
int frame_int(const msgpack_object *o, int64_t *v);

/*
 * Convert a msgpack value to a new JSON value (caller owns the reference).
 * Returns NULL when it cannot be represented: bin or ext values, non-string or
 * duplicate map keys, strings that are not UTF-8, integers above INT64_MAX are
 * converted to reals. On failure `path` holds the JSON Pointer of the value
 * (relative to o) and `why` a sentence.
 */
json_t *frame_to_json(const msgpack_object *o, char *path, size_t pathsize, char *why,
                      size_t whysize);
/* As frame_to_json(); with FRAME_JSON_BIN_HEX a bin value becomes a string of its
 * bytes in lowercase hex (the trail's hashes, read by an agent) instead of an error. */
#define FRAME_JSON_BIN_HEX 1u
json_t *frame_to_json_flags(const msgpack_object *o, unsigned flags, char *path, size_t pathsize,
                            char *why, size_t whysize);

/* Pack a JSON value as msgpack (objects → maps, arrays → arrays, integers → ints, reals →
 * float64, true/false → bool, null → nil). */
void frame_pack_json(msgpack_packer *pk, const json_t *j);

/* Make s (NUL-terminated, in place) valid UTF-8 for a reply: when it is not,
 * every byte outside printable ASCII becomes '?'. */
void frame_text_clean(char *s);

/* Pack a C string as a msgpack str. */
void frame_pack_cstr(msgpack_packer *pk, const char *s);

/* A reply under construction: a map of `nkeys` entries, written with the
 * frame_out_* calls in any order; exactly nkeys must be written. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} frame_out_t;

void frame_out_begin(frame_out_t *o, uint32_t nkeys);
/* Begin a protocol message: a map of `v`, `op`, `id` (left out when id is
 * NULL) and `nmore` further keys for the caller to write. */
void frame_out_message(frame_out_t *o, const char *op, const char *id, uint32_t nmore);
void frame_out_str(frame_out_t *o, const char *key, const char *val);
void frame_out_strn(frame_out_t *o, const char *key, const char *val, size_t n);
void frame_out_int(frame_out_t *o, const char *key, int64_t val);
void frame_out_bool(frame_out_t *o, const char *key, int val);
/* Key only: the caller packs the value with o->pk next. */
void frame_out_key(frame_out_t *o, const char *key);
/* Release the buffer (after sending o->sb.data / o->sb.size). */
void frame_out_end(frame_out_t *o);

#endif
