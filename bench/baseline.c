/*
 * baseline.c — the minimal durable server carehubd is measured against.
 *
 *   baseline -b ENDPOINT -d DATADIR [--ready-file FILE]
 *
 * What any broker keeping PROTOCOL §4's promise ("ack only after the event is
 * durably committed") has to do at the least, and nothing more: a ROUTER socket, an
 * LMDB environment with full durability (no MDB_NOSYNC, MDB_NOMETASYNC or
 * MDB_WRITEMAP: every commit is synced), and a loop that
 *
 *   1. waits in zmq_poll,
 *   2. drains every message waiting (at most BATCH_MAX): `hello` is answered with
 *      `welcome` right away; each `event` is put under "<agent>/<id>" with
 *      MDB_NOOVERWRITE in one write transaction opened for the batch,
 *   3. commits that transaction once, and only then acks every event of the batch.
 *
 * It validates nothing beyond the envelope (no schema, no roles, no cases, no
 * routing): carehubd's cost over this is what the benchmark shows. A retried id is
 * answered duplicate:true with the first answer's event and case, as the protocol
 * says. The stored value is the event's sequence number (8 bytes, big-endian)
 * followed by the raw frame, so that a retry can be answered from the store.
 *
 * With ENDPOINT "tcp://127.0.0.1:*" the kernel picks the port; the endpoint really
 * bound is written to the ready file (FILE.tmp, then renamed) once the server is
 * ready. SIGTERM or SIGINT stops it cleanly: the current batch is finished first.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>
#include <msgpack.h>
#include <zmq.h>

#define BATCH_MAX 1024              /* messages drained into one transaction at most */
#define MAX_PEERS 4096              /* connections remembered (routing id -> agent) */
#define MAX_ID 64                   /* PROTOCOL §1: ids are 1-64 bytes */
#define MAX_RID 256                 /* ZeroMQ routing ids are at most 255 bytes */
#define MAP_SIZE (1024UL * 1024 * 1024) /* 1 GiB */
#define MAX_FRAME (4 * 262144)      /* ZMQ_MAXMSGSIZE: bigger frames drop the connection */
#define HEARTBEAT_MS 5000

/* A connection that said hello. */
typedef struct {
    uint8_t rid[MAX_RID];
    size_t rid_len;
    char agent[MAX_ID + 1];
} peer_t;

/* An event of the current batch, waiting for the commit before its answer. */
typedef struct {
    uint8_t rid[MAX_RID];
    size_t rid_len;
    char id[MAX_ID + 1];
    uint64_t seq;          /* event and case number to answer with */
    int duplicate;         /* the key was already stored: answer the original seq */
} pending_t;

typedef struct {
    void *sock;
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;          /* the batch's write transaction; NULL until its first event */
    int txn_failed;        /* a put failed: the batch is aborted and answered unavailable */
    uint64_t next_seq;
    peer_t *peers;
    size_t n_peers;
    pending_t *pending;
    size_t n_pending;
    msgpack_sbuffer sb;
    uint64_t stored, batches;
} server_t;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: baseline -b ENDPOINT -d DATADIR [--ready-file FILE]\n"
                 "  minimal durable server (ROUTER + LMDB, ack after commit) for bench/run.sh\n");
}

/* mkdir -p; 0 ok, -1 with errno set. */
static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Write text to path atomically (path.tmp, then rename). 0 ok, -1 (message printed). */
static int write_ready_file(const char *path, const char *text)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        fprintf(stderr, "baseline: ready file name too long\n");
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "baseline: %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    int bad = fprintf(f, "%s\n", text) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) < 0) {
        fprintf(stderr, "baseline: cannot write %s: %s\n", path, strerror(errno));
        (void)unlink(tmp); /* best effort: nothing else to do with a half-written file */
        return -1;
    }
    return 0;
}

/* ---- msgpack ------------------------------------------------------------ */

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static int obj_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (obj_is(&map->via.map.ptr[i].key, key))
            return &map->via.map.ptr[i].val;
    return NULL;
}

/* Copy an id-like string (1..MAX_ID bytes) into buf[MAX_ID + 1]; 0 ok, -1 not one. */
static int get_id(const msgpack_object *o, char *buf)
{
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 ||
        o->via.str.size > MAX_ID)
        return -1;
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = '\0';
    return 0;
}

/* Send the packed reply to the peer; a failed send is reported, not fatal. */
static void send_reply(server_t *s, const uint8_t *rid, size_t rid_len)
{
    if (zmq_send(s->sock, rid, rid_len, ZMQ_SNDMORE) < 0 ||
        zmq_send(s->sock, s->sb.data, s->sb.size, 0) < 0)
        fprintf(stderr, "baseline: send: %s\n", zmq_strerror(errno));
}

/* Start a reply map of n entries (v, op, and id when given count in n). */
static void reply_begin(server_t *s, msgpack_packer *pk, size_t n, const char *op,
                        const char *id)
{
    msgpack_sbuffer_clear(&s->sb);
    msgpack_packer_init(pk, &s->sb, msgpack_sbuffer_write);
    msgpack_pack_map(pk, n);
    pack_str(pk, "v");
    msgpack_pack_uint32(pk, 1);
    pack_str(pk, "op");
    pack_str(pk, op);
    if (id) {
        pack_str(pk, "id");
        pack_str(pk, id);
    }
}

static void send_nack(server_t *s, const uint8_t *rid, size_t rid_len, const char *id,
                      const char *code, const char *error)
{
    msgpack_packer pk;
    reply_begin(s, &pk, id ? 5 : 4, "nack", id);
    pack_str(&pk, "code");
    pack_str(&pk, code);
    pack_str(&pk, "error");
    pack_str(&pk, error);
    send_reply(s, rid, rid_len);
}

/* ---- handlers ----------------------------------------------------------- */

static peer_t *find_peer(server_t *s, const uint8_t *rid, size_t rid_len)
{
    for (size_t i = 0; i < s->n_peers; i++)
        if (s->peers[i].rid_len == rid_len && !memcmp(s->peers[i].rid, rid, rid_len))
            return &s->peers[i];
    return NULL;
}

static void on_hello(server_t *s, const uint8_t *rid, size_t rid_len, const char *id,
                     const msgpack_object *msg)
{
    char agent[MAX_ID + 1];
    if (get_id(map_get(msg, "agent"), agent) < 0) {
        send_nack(s, rid, rid_len, id, "malformed", "hello needs agent: a string of 1-64 bytes.");
        return;
    }
    peer_t *p = find_peer(s, rid, rid_len);
    if (!p) {
        if (s->n_peers == MAX_PEERS) {
            send_nack(s, rid, rid_len, id, "unavailable", "Too many connections; retry later.");
            return;
        }
        p = &s->peers[s->n_peers++];
        memcpy(p->rid, rid, rid_len);
        p->rid_len = rid_len;
    }
    memcpy(p->agent, agent, sizeof agent);

    msgpack_packer pk;
    reply_begin(s, &pk, 6, "welcome", id);
    pack_str(&pk, "agent");
    pack_str(&pk, agent);
    pack_str(&pk, "role");
    pack_str(&pk, "school");
    pack_str(&pk, "heartbeat_ms");
    msgpack_pack_uint32(&pk, HEARTBEAT_MS);
    send_reply(s, rid, rid_len);
}

/* Store one event in the batch's transaction; its answer waits for the commit. */
static void on_event(server_t *s, const uint8_t *rid, size_t rid_len, const char *id,
                     const char *frame, size_t len)
{
    const peer_t *p = find_peer(s, rid, rid_len);
    if (!p) {
        send_nack(s, rid, rid_len, id, "hello_required", "Say hello first, then resend.");
        return;
    }
    pending_t *e = &s->pending[s->n_pending++];
    memcpy(e->rid, rid, rid_len);
    e->rid_len = rid_len;
    memcpy(e->id, id, strlen(id) + 1);
    e->seq = 0;
    e->duplicate = 0;
    if (s->txn_failed)
        return;

    int rc = 0;
    if (!s->txn && (rc = mdb_txn_begin(s->env, NULL, 0, &s->txn)) != 0)
        goto fail;

    char key[2 * MAX_ID + 2];
    int klen = snprintf(key, sizeof key, "%s/%s", p->agent, id);
    uint64_t seq = s->next_seq;
    MDB_val k = { (size_t)klen, key }, v = { 8 + len, NULL };
    /* MDB_RESERVE: LMDB makes the room and the value is written into it in place. */
    rc = mdb_put(s->txn, s->dbi, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
    if (rc == 0) {
        uint8_t *val = v.mv_data;
        for (int i = 0; i < 8; i++)
            val[i] = (uint8_t)(seq >> (56 - 8 * i));
        memcpy(val + 8, frame, len);
        e->seq = seq;
        s->next_seq++;
        s->stored++;
        return;
    }
    if (rc == MDB_KEYEXIST && v.mv_size >= 8) {
        /* v now holds the stored value: answer with the first event's number. */
        const uint8_t *old = v.mv_data;
        for (int i = 0; i < 8; i++)
            e->seq = e->seq << 8 | old[i];
        e->duplicate = 1;
        return;
    }
fail:
    fprintf(stderr, "baseline: store: %s\n", mdb_strerror(rc));
    if (s->txn)
        mdb_txn_abort(s->txn);
    s->txn = NULL;
    s->txn_failed = 1;
}

/* Commit the batch, then answer every event in it. */
static void finish_batch(server_t *s)
{
    int ok = !s->txn_failed;
    if (s->txn) {
        int rc = mdb_txn_commit(s->txn); /* frees the transaction either way */
        s->txn = NULL;
        if (rc != 0) {
            fprintf(stderr, "baseline: commit: %s\n", mdb_strerror(rc));
            ok = 0;
        }
    }
    for (size_t i = 0; i < s->n_pending; i++) {
        pending_t *e = &s->pending[i];
        if (!ok) {
            send_nack(s, e->rid, e->rid_len, e->id, "unavailable",
                      "The event could not be stored; retry later.");
            continue;
        }
        char ev[24], cs[24];
        snprintf(ev, sizeof ev, "e%" PRIu64, e->seq);
        snprintf(cs, sizeof cs, "c%" PRIu64, e->seq);
        msgpack_packer pk;
        reply_begin(s, &pk, 6, "ack", e->id);
        pack_str(&pk, "event");
        pack_str(&pk, ev);
        pack_str(&pk, "case");
        pack_str(&pk, cs);
        pack_str(&pk, "duplicate");
        if (e->duplicate)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
        send_reply(s, e->rid, e->rid_len);
    }
    if (s->n_pending)
        s->batches++;
    s->n_pending = 0;
    s->txn_failed = 0;
}

/* Handle one message (routing id + one frame). */
static void on_message(server_t *s, const uint8_t *rid, size_t rid_len, const char *frame,
                       size_t len)
{
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, frame, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        send_nack(s, rid, rid_len, NULL, "malformed", "Send one msgpack map per frame.");
        goto out;
    }
    const msgpack_object *m = &u.data;
    const msgpack_object *op = map_get(m, "op");
    char id[MAX_ID + 1];
    if (!op || op->type != MSGPACK_OBJECT_STR || get_id(map_get(m, "id"), id) < 0) {
        send_nack(s, rid, rid_len, NULL, "malformed", "The envelope needs op and id strings.");
        goto out;
    }
    if (obj_is(op, "event"))
        on_event(s, rid, rid_len, id, frame, len);
    else if (obj_is(op, "hello"))
        on_hello(s, rid, rid_len, id, m);
    else if (obj_is(op, "ping")) {
        msgpack_packer pk;
        reply_begin(s, &pk, 3, "pong", id);
        send_reply(s, rid, rid_len);
    } else if (!obj_is(op, "pong") && !obj_is(op, "received"))
        send_nack(s, rid, rid_len, id, "unknown_op", "The baseline knows hello, event and ping.");
out:
    msgpack_unpacked_destroy(&u);
}

/* Receive at most BATCH_MAX waiting messages into one batch. -1 on a socket error. */
static int drain(server_t *s)
{
    for (int n = 0; n < BATCH_MAX; n++) {
        zmq_msg_t rid, body;
        zmq_msg_init(&rid);
        if (zmq_msg_recv(&rid, s->sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(&rid);
            if (e == EAGAIN || e == EINTR)
                return 0;
            fprintf(stderr, "baseline: receive: %s\n", zmq_strerror(e));
            return -1;
        }
        /* The rest of a message arrives with its first frame: these never block. */
        int more = zmq_msg_more(&rid);
        zmq_msg_init(&body);
        if (more && zmq_msg_recv(&body, s->sock, 0) >= 0) {
            if (!zmq_msg_more(&body) && zmq_msg_size(&rid) < MAX_RID)
                on_message(s, zmq_msg_data(&rid), zmq_msg_size(&rid), zmq_msg_data(&body),
                           zmq_msg_size(&body));
            while (zmq_msg_more(&body)) { /* more than one frame: not ours, dropped */
                zmq_msg_close(&body);
                zmq_msg_init(&body);
                if (zmq_msg_recv(&body, s->sock, 0) < 0)
                    break;
            }
        }
        zmq_msg_close(&body);
        zmq_msg_close(&rid);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL, *datadir = NULL, *ready = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "baseline: %s needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "-b"))
            endpoint = argv[++i];
        else if (!strcmp(argv[i], "-d"))
            datadir = argv[++i];
        else if (!strcmp(argv[i], "--ready-file"))
            ready = argv[++i];
        else {
            fprintf(stderr, "baseline: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!endpoint || !datadir) {
        usage(stderr);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, NULL); /* cannot fail for these signals */
    (void)sigaction(SIGTERM, &sa, NULL);

    int rc = 1, mrc;
    void *ctx = NULL;
    server_t s;
    memset(&s, 0, sizeof s);
    msgpack_sbuffer_init(&s.sb);
    s.peers = calloc(MAX_PEERS, sizeof *s.peers);
    s.pending = calloc(BATCH_MAX, sizeof *s.pending);
    if (!s.peers || !s.pending) {
        fprintf(stderr, "baseline: out of memory\n");
        goto done;
    }

    if (mkdir_p(datadir) < 0) {
        fprintf(stderr, "baseline: cannot create %s: %s\n", datadir, strerror(errno));
        goto done;
    }
    MDB_txn *txn;
    MDB_stat stat;
    if ((mrc = mdb_env_create(&s.env)) != 0 ||
        (mrc = mdb_env_set_mapsize(s.env, MAP_SIZE)) != 0 ||
        (mrc = mdb_env_open(s.env, datadir, 0, 0644)) != 0 ||
        (mrc = mdb_txn_begin(s.env, NULL, 0, &txn)) != 0) {
        fprintf(stderr, "baseline: lmdb %s: %s\n", datadir, mdb_strerror(mrc));
        goto done;
    }
    if ((mrc = mdb_dbi_open(txn, NULL, 0, &s.dbi)) != 0 ||
        (mrc = mdb_stat(txn, s.dbi, &stat)) != 0) {
        mdb_txn_abort(txn);
        fprintf(stderr, "baseline: lmdb %s: %s\n", datadir, mdb_strerror(mrc));
        goto done;
    }
    if ((mrc = mdb_txn_commit(txn)) != 0) {
        fprintf(stderr, "baseline: lmdb %s: %s\n", datadir, mdb_strerror(mrc));
        goto done;
    }
    s.next_seq = (uint64_t)stat.ms_entries + 1; /* numbers stay unique over restarts */

    ctx = zmq_ctx_new();
    s.sock = ctx ? zmq_socket(ctx, ZMQ_ROUTER) : NULL;
    if (!s.sock) {
        fprintf(stderr, "baseline: zmq: %s\n", zmq_strerror(errno));
        goto done;
    }
    int zero = 0;
    int64_t maxmsg = MAX_FRAME;
    if (zmq_setsockopt(s.sock, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
        zmq_setsockopt(s.sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
        zmq_bind(s.sock, endpoint) < 0) {
        fprintf(stderr, "baseline: bind %s: %s\n", endpoint, zmq_strerror(errno));
        goto done;
    }
    char bound[256];
    size_t blen = sizeof bound;
    if (zmq_getsockopt(s.sock, ZMQ_LAST_ENDPOINT, bound, &blen) < 0) {
        fprintf(stderr, "baseline: ZMQ_LAST_ENDPOINT: %s\n", zmq_strerror(errno));
        goto done;
    }
    if (ready && write_ready_file(ready, bound) < 0)
        goto done;
    fprintf(stderr, "baseline: listening on %s, data in %s\n", bound, datadir);

    zmq_pollitem_t item = { s.sock, 0, ZMQ_POLLIN, 0 };
    while (!g_stop) {
        /* A timeout so that a signal delivered to another thread is still seen. */
        if (zmq_poll(&item, 1, 500) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "baseline: zmq_poll: %s\n", zmq_strerror(errno));
            goto done;
        }
        if (!(item.revents & ZMQ_POLLIN))
            continue;
        int drc = drain(&s);
        finish_batch(&s); /* also when drain failed: answer what was received */
        if (drc < 0)
            goto done;
    }
    fprintf(stderr, "baseline: stopping: %" PRIu64 " events stored in %" PRIu64 " commits\n",
            s.stored, s.batches);
    rc = 0;

done:
    if (s.txn)
        mdb_txn_abort(s.txn);
    if (s.sock)
        zmq_close(s.sock);
    if (ctx)
        zmq_ctx_term(ctx);
    if (s.env)
        mdb_env_close(s.env);
    if (ready && rc == 0)
        (void)unlink(ready); /* not ready any more; a missing file is fine */
    free(s.peers);
    free(s.pending);
    msgpack_sbuffer_destroy(&s.sb);
    return rc;
}
