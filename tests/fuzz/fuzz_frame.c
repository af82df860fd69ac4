/*
 * fuzz_frame.c — libFuzzer target for broker/frame.c, the first code every
 * byte a peer sends reaches.
 *
 * Each input is one frame: frame_peek_id() (which must cope with anything),
 * frame_check(), and for a frame that passes, msgpack_unpack_next() on
 * exactly those bytes (it must succeed and consume them all, since that is
 * what frame_check() promises) and frame_to_json() on the result.
 */
#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy, so ASan sees any read past the end. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    if (size)
        memcpy(buf, data, size);

    char id[128];
    (void)frame_peek_id(buf, size, id, sizeof id);
    char tiny[2];
    (void)frame_peek_id(buf, size, tiny, sizeof tiny);

    frame_rc_t rc = frame_check(buf, size);
    (void)frame_strerror(rc);
    if (rc == FRAME_OK) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        msgpack_unpack_return ur = msgpack_unpack_next(&u, buf, size, &off);
        /* frame_check's promise: msgpack-c can decode exactly these bytes. */
        if (ur != MSGPACK_UNPACK_SUCCESS || off != size || u.data.type != MSGPACK_OBJECT_MAP)
            abort();
        char path[512], why[512];
        json_t *j = frame_to_json(&u.data, path, sizeof path, why, sizeof why);
        if (j) {
            /* and back: packing the JSON value must give a frame that passes */
            msgpack_sbuffer sb;
            msgpack_packer pk;
            msgpack_sbuffer_init(&sb);
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            frame_pack_json(&pk, j);
            frame_rc_t rc2 = frame_check(sb.data, sb.size);
            if (rc2 != FRAME_OK && rc2 != FRAME_TOO_DEEP)
                abort();
            msgpack_sbuffer_destroy(&sb);
            json_decref(j);
        }
        msgpack_unpacked_destroy(&u);
    }
    free(buf);
    return 0;
}
