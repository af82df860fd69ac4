/*
 * fuzz_proto.c — libFuzzer target for the whole envelope path of broker/proto.c:
 * size limit → frame_check() → decode → envelope → op table → handler →
 * schema validation → staging → proto_flush() (one LMDB transaction, then the
 * replies).
 *
 * Set up once, as tests/unit/test_proto.c does: a hand-built config_t with one
 * agent of each role, the project's real schemas ($CAREHUB_SCHEMAS, else
 * "schemas"), a real store in a mkdtemp() directory, a session table, and a
 * send callback that checks each reply is exactly one msgpack map and drops it.
 * The test clock is on (as under carehubd --test-clock) with the supervisor as
 * broker.test_clock_agent, so test_clock reaches its handler from that session
 * and is forbidden on the four others.
 *
 * Each input is one frame. It is handed to proto_on_message() on each of five
 * sessions, one per role, every one of which has just (re)said hello (so a
 * hello in the input switching a session's agent does not leak into the next
 * input), and then proto_flush() commits whatever was staged. The store keeps
 * what earlier inputs stored (idempotency, duplicates and "store full" are
 * reached that way), so a crash found late in a run may need the same run's
 * earlier inputs; every one seen so far reproduced alone.
 */
#include <dirent.h>
#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "proto.h"
#include "schema.h"
#include "session.h"
#include "store.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Frames larger than this take the frame_peek_id() path. */
#define FUZZ_MAX_MESSAGE_BYTES 2048
#define NOW_MS 1764000000000LL

static const struct {
    const char *id;
    config_role_t role;
    const char *agency;
} AGENTS[] = {
    {"school-1", ROLE_SCHOOL, NULL},
    {"reporter-1", ROLE_REPORTER, NULL},
    {"monitor-1", ROLE_MONITOR, NULL},
    {"agency-police", ROLE_AGENCY, "police"},
    {"supervisor-1", ROLE_SUPERVISOR, NULL},
};
#define N_AGENTS (sizeof AGENTS / sizeof AGENTS[0])

static char base[64];
static config_agent_t agents[N_AGENTS];
static config_t cfg;
static schema_set_t *schemas;
static store_t *store;
static session_table_t *sessions;
static proto_t *proto;
static turn_t *turn;
static session_t *sess[N_AGENTS];
static msgpack_sbuffer hellos[N_AGENTS];

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[512];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            rm_rf(sub);
        }
        closedir(d);
        (void)rmdir(path);
    } else {
        (void)unlink(path);
    }
}

static void cleanup(void)
{
    turn_destroy(&turn);
    proto_destroy(&proto);
    session_table_destroy(&sessions);
    store_close(&store);
    schema_set_destroy(&schemas);
    for (size_t i = 0; i < N_AGENTS; i++)
        msgpack_sbuffer_destroy(&hellos[i]);
    if (base[0])
        rm_rf(base);
}

/* Every reply must be exactly one msgpack map; then it is dropped. */
static int drop_send(void *ud, const unsigned char *rid, size_t rid_len, const void *data,
                     size_t len)
{
    (void)ud;
    (void)rid;
    if (rid_len > SESSION_ROUTING_MAX)
        abort();
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        u.data.type != MSGPACK_OBJECT_MAP)
        abort();
    msgpack_unpacked_destroy(&u);
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    for (size_t i = 0; i < N_AGENTS; i++) {
        agents[i].id = (char *)AGENTS[i].id;
        agents[i].role = AGENTS[i].role;
        agents[i].agency = (char *)AGENTS[i].agency;
        agents[i].line = (int)i + 1;
    }
    cfg.agents = agents;
    cfg.n_agents = N_AGENTS;
    cfg.heartbeat_ms = 5000;
    cfg.max_message_bytes = FUZZ_MAX_MESSAGE_BYTES;
    cfg.security = SECURITY_NONE;
    cfg.default_ack_within_ms = 86400000;
    cfg.test_clock_agent = (char *)"supervisor-1";
    clock_enable_test();

    const char *dir = getenv("CAREHUB_SCHEMAS");
    if (!dir || !*dir)
        dir = "schemas";
    char err[512] = "";
    schemas = schema_set_load(dir, err, sizeof err);
    if (!schemas) {
        fprintf(stderr, "fuzz_proto: cannot load schemas from %s: %s\n", dir, err);
        exit(2);
    }
    snprintf(base, sizeof base, "/tmp/carehub-fuzz-proto-XXXXXX");
    if (!mkdtemp(base)) {
        perror("mkdtemp");
        exit(2);
    }
    atexit(cleanup);
    char data_dir[128];
    snprintf(data_dir, sizeof data_dir, "%s/data", base);
    store = store_open(data_dir, 4u << 20, 256u << 20, err, sizeof err);
    if (!store) {
        fprintf(stderr, "fuzz_proto: store_open: %s\n", err);
        exit(2);
    }
    sessions = session_table_new();
    turn = turn_new(store);
    proto = proto_new(&cfg, schemas, store, turn, drop_send, NULL);
    if (!proto)
        exit(2);

    for (size_t i = 0; i < N_AGENTS; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "conn-%zu", i);
        sess[i] = session_get(sessions, rid, strlen(rid), NOW_MS);
        msgpack_packer pk;
        msgpack_sbuffer_init(&hellos[i]);
        msgpack_packer_init(&pk, &hellos[i], msgpack_sbuffer_write);
        char hid[64];
        snprintf(hid, sizeof hid, "hello-%s", AGENTS[i].id);
        msgpack_pack_map(&pk, 4);
        pack_str(&pk, "v");
        msgpack_pack_int(&pk, 1);
        pack_str(&pk, "op");
        pack_str(&pk, "hello");
        pack_str(&pk, "id");
        pack_str(&pk, hid);
        pack_str(&pk, "agent");
        pack_str(&pk, AGENTS[i].id);
        proto_on_message(proto, sess[i], hellos[i].data, hellos[i].size, 1, NULL, NOW_MS);
        if (!sess[i]->agent || strcmp(sess[i]->agent->id, AGENTS[i].id) != 0) {
            fprintf(stderr, "fuzz_proto: hello as %s was refused\n", AGENTS[i].id);
            exit(2);
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy, so ASan sees any read past the end. */
    void *frame = malloc(size ? size : 1);
    if (!frame)
        return 0;
    if (size)
        memcpy(frame, data, size);
    for (size_t i = 0; i < N_AGENTS; i++) {
        if (sess[i]->agent != &agents[i])
            proto_on_message(proto, sess[i], hellos[i].data, hellos[i].size, 1, NULL, NOW_MS);
        proto_on_message(proto, sess[i], frame, size, 1, NULL, NOW_MS);
    }
    proto_flush(proto);
    (void)turn_commit(turn);
    if (proto_pending(proto) != 0)
        abort();
    free(frame);
    return 0;
}
