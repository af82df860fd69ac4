/*
 * fuzz_sms_inbound.c — libFuzzer target for the SMS gateway's inbound body
 * (PROTOCOL §11, broker/phone.c phone_parse_inbound): whatever a gateway (or
 * whoever holds its secret) posts must never crash the broker, and the codes
 * found must be exactly the runs of six ASCII digits in `text`.
 *
 * The input is the body, byte for byte. Invariants (a violation aborts):
 *  - the parse returns 0 or -1 and nothing else;
 *  - on 0: `from` is non-empty, NUL-terminated inside its buffer and equal to
 *    the body's "from" as jansson reads it; at most PHONE_CODES_MAX codes, each
 *    six ASCII digits, and they are the first runs of exactly six digits in
 *    "text", in order (counted here independently);
 *  - on -1 for a body jansson reads as an object with string "from" (non-empty,
 *    fitting, no NUL) and string "text": never.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phone.h"

#define FROM_SIZE 65

static void broken(const char *what)
{
    fprintf(stderr, "fuzz_sms_inbound: invariant broken: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char from[FROM_SIZE], codes[PHONE_CODES_MAX][7];
    size_t n = 99;
    memset(from, 'x', sizeof from);
    int rc = phone_parse_inbound((const char *)data, size, from, sizeof from, codes, &n);
    if (rc != 0 && rc != -1)
        broken("return value");

    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    json_t *jf = json_object_get(j, "from"), *jt = json_object_get(j, "text");
    int valid = json_is_string(jf) && json_is_string(jt) && json_string_length(jf) > 0 &&
                json_string_length(jf) < FROM_SIZE &&
                strlen(json_string_value(jf)) == json_string_length(jf);
    if (valid != (rc == 0))
        broken(valid ? "a valid body refused" : "an invalid body accepted");
    if (rc == 0) {
        if (!memchr(from, '\0', sizeof from) || strcmp(from, json_string_value(jf)) != 0)
            broken("from");
        /* the runs of exactly six digits in text, counted here */
        const char *t = json_string_value(jt);
        size_t tl = json_string_length(jt), want = 0;
        for (size_t i = 0; i < tl;) {
            if (t[i] < '0' || t[i] > '9') {
                i++;
                continue;
            }
            size_t k = i;
            while (k < tl && t[k] >= '0' && t[k] <= '9')
                k++;
            if (k - i == 6) {
                if (want < PHONE_CODES_MAX && (want >= n || memcmp(codes[want], t + i, 6) != 0 ||
                                               codes[want][6] != '\0'))
                    broken("a code differs from the text's run of six digits");
                want++;
            }
            i = k;
        }
        if (n != (want < PHONE_CODES_MAX ? want : PHONE_CODES_MAX))
            broken("the number of codes");
    } else if (n != 0) {
        broken("codes reported for a refused body");
    }
    json_decref(j);
    return 0;
}
