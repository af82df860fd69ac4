/*
 * fuzz_schema.c — libFuzzer target for broker/schema.c, the validator every
 * event body goes through.
 *
 * The real schemas are loaded once (from $CAREHUB_SCHEMAS, else "schemas"
 * relative to the working directory). Each input is parsed as JSON with
 * jansson (JSON_DECODE_ANY | JSON_ALLOW_NUL, as bodies may be any value and
 * strings may hold NUL after msgpack conversion) and validated against every
 * type, with apply_defaults on, on a fresh deep copy each time. A document
 * that validated must validate again after its defaults were applied.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "schema.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static schema_set_t *set;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    const char *dir = getenv("CAREHUB_SCHEMAS");
    if (!dir || !*dir)
        dir = "schemas";
    char err[512] = "";
    set = schema_set_load(dir, err, sizeof err);
    if (!set || schema_set_count(set) == 0) {
        fprintf(stderr, "fuzz_schema: cannot load schemas from %s: %s\n", dir, err);
        exit(2);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!doc)
        return 0;
    for (size_t i = 0; i < schema_set_count(set); i++) {
        const schema_t *s = schema_set_get(set, schema_set_name(set, i));
        if (!s)
            abort();
        json_t *inst = json_deep_copy(doc);
        if (!inst)
            break;
        schema_error_t e;
        memset(&e, 0, sizeof e);
        if (schema_validate(s, inst, 1, &e) == 0) {
            /* defaults added to a valid instance keep it valid */
            schema_error_t e2;
            if (schema_validate(s, inst, 1, &e2) != 0)
                abort();
        } else {
            /* the error is two NUL-terminated strings */
            if (!memchr(e.path, '\0', sizeof e.path) || !memchr(e.message, '\0', sizeof e.message))
                abort();
        }
        json_decref(inst);
    }
    json_decref(doc);
    return 0;
}
