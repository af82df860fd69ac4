/*
 * desk.c — agency desks acknowledging their assignments as fast as they can
 * (bench/desks.py, docs/bench.md "Agency replies").
 *
 *   desk -b ENDPOINT --expect N [-n DESKS=1] [-w INFLIGHT=512] [--prefix bench-desk-]
 *        [--timeout SECONDS=120] [--after SECONDS=0.5] [--ack-on-arrival]
 *        [--broker-pid PID] [--out FILE] [--json]
 *
 * Opens DESKS DEALER sockets to ENDPOINT, all in this one thread over zmq_poll. Desk i
 * says hello as "<prefix><i>" (role agency in the broker's config); on hello the broker
 * pushes every unacknowledged assignment of the agency to it (PROTOCOL §5: `case`). With
 * several desks each gets every push; desk i takes the assignments whose id hashes to i
 * (FNV-1a mod DESKS), so each assignment is acknowledged by exactly one desk.
 *
 * By default the desks first collect the pushes until every desk has been pushed all N
 * (the broker pushes every pending assignment to each desk after its hello), then acknowledge: {v:1, op:"case_ack", id:"k<n>", assignment, by}, keeping INFLIGHT
 * case_acks in flight per desk (a new one goes out as soon as an answer frees a slot).
 * With --ack-on-arrival each assignment is acknowledged as soon as its push arrives.
 * The measured window runs from the first case_ack sent to the ack that completes the N;
 * then, for --after seconds, late or duplicate replies are still counted.
 *
 * Reported (one human line on stderr; with --json one JSON line on stdout):
 * acks/s over the window, p50/p99/max of case_ack -> ack (monotonic, us), counts
 * (pushes, repeats, acks, nacks by code, replies for no case_ack in flight), hello ->
 * first/last push, this process's CPU over the window (CLOCK_PROCESS_CPUTIME_ID, all
 * threads, including libzmq's I/O thread) and, with --broker-pid, the broker's
 * (utime+stime from /proc/PID/stat), and how full the window of case_acks was on
 * average (time-weighted in-flight / INFLIGHT while acknowledging): near 100 % means
 * the desks were waiting for the broker, not the other way round.
 * --out FILE: one line per assignment: "<assignment> <case> <acks> <nacks> <latency us>".
 *
 * Exit 0 when all N were acknowledged, each exactly once, and nothing was refused;
 * 1 otherwise (timeout, nack, duplicate ack, hello refused); 2 on a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <zmq.h>

#define MAX_DESKS 256
#define MAX_INFLIGHT 65536
#define ID_MAX 64
#define MAX_CODES 8
#define HELLO_TIMEOUT_MS 5000

typedef struct {
    char id[ID_MAX + 1];
    char case_id[ID_MAX + 1];
    int desk;              /* the desk that acknowledges it */
    int64_t sent_us;       /* case_ack sent (monotonic); 0 = not yet */
    uint32_t lat_us;       /* case_ack -> ack */
    uint16_t pushes;       /* `case` pushes received (over all desks) */
    uint16_t acks, nacks;  /* replies to our case_ack */
} item_t;

typedef struct {
    void *sock;
    char name[80];
    char hello_id[96];     /* "<name>-hello" */
    int welcomed;
    int64_t welcome_us;
    long pushes;           /* `case` pushes received on this socket, repeats included */
    size_t inflight;
    size_t *queue;         /* item indices to acknowledge, FIFO */
    size_t q_head, q_tail, q_cap;
} desk_t;

typedef struct {
    char code[32];
    uint64_t n;
    char error[200];
} code_t;

typedef struct {
    const char *endpoint, *prefix, *out;
    int desks, inflight, json, on_arrival;
    long expect, broker_pid;
    double timeout, after;
} options_t;

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* utime+stime of a process in seconds, or -1. */
static double proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1.0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1.0;
    p++;
    unsigned long long ut = 0, st = 0;
    /* fields after the name: state(3) ... utime(14) stime(15) */
    for (int field = 3; field <= 15; field++) {
        while (*p == ' ')
            p++;
        if (field == 14)
            ut = strtoull(p, NULL, 10);
        if (field == 15)
            st = strtoull(p, NULL, 10);
        while (*p && *p != ' ')
            p++;
    }
    long tck = sysconf(_SC_CLK_TCK);
    return tck > 0 ? (double)(ut + st) / (double)tck : -1.0;
}

/* syscw and wchar of /proc/PID/io (write syscalls, bytes passed to them), or -1. */
static void proc_io(long pid, long long *syscw, long long *wchar)
{
    char path[64], line[128];
    *syscw = *wchar = -1;
    snprintf(path, sizeof path, "/proc/%ld/io", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "syscw:", 6))
            *syscw = strtoll(line + 6, NULL, 10);
        else if (!strncmp(line, "wchar:", 6))
            *wchar = strtoll(line + 6, NULL, 10);
    }
    fclose(f);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: desk -b ENDPOINT --expect N [-n DESKS=1] [-w INFLIGHT=512] [--prefix bench-desk-]\n"
            "            [--timeout SECONDS=120] [--after SECONDS=0.5] [--ack-on-arrival]\n"
            "            [--broker-pid PID] [--out FILE] [--json]\n"
            "  DESKS agents <prefix>0..DESKS-1 (role agency) say hello, take the `case` pushes and\n"
            "  acknowledge N assignments with case_ack, INFLIGHT in flight per desk; reports acks/s\n"
            "  and the case_ack -> ack latency. See the header of bench/desk.c.\n");
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_secs(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0.0) || v > 86400.0)
        return -1;
    *out = v;
    return 0;
}

/* 0 ok, 1 help printed, -1 usage error. */
static int parse_args(int argc, char **argv, options_t *o)
{
    memset(o, 0, sizeof *o);
    o->prefix = "bench-desk-";
    o->desks = 1;
    o->inflight = 512;
    o->timeout = 120.0;
    o->after = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        } else if (!strcmp(a, "--ack-on-arrival")) {
            o->on_arrival = 1;
            continue;
        }
        if (!val) {
            fprintf(stderr, "desk: %s needs a value\n", a);
            return -1;
        }
        if (!strcmp(a, "-b")) {
            o->endpoint = val;
        } else if (!strcmp(a, "--prefix")) {
            if (strlen(val) > 40) {
                fprintf(stderr, "desk: --prefix is at most 40 characters\n");
                return -1;
            }
            o->prefix = val;
        } else if (!strcmp(a, "--out")) {
            o->out = val;
        } else if (!strcmp(a, "-n")) {
            if (parse_long(val, 1, MAX_DESKS, &n) < 0) {
                fprintf(stderr, "desk: -n wants desks from 1 to %d, not '%s'\n", MAX_DESKS, val);
                return -1;
            }
            o->desks = (int)n;
        } else if (!strcmp(a, "-w")) {
            if (parse_long(val, 1, MAX_INFLIGHT, &n) < 0) {
                fprintf(stderr, "desk: -w wants case_acks in flight from 1 to %d, not '%s'\n",
                        MAX_INFLIGHT, val);
                return -1;
            }
            o->inflight = (int)n;
        } else if (!strcmp(a, "--expect")) {
            if (parse_long(val, 1, 100000000L, &n) < 0) {
                fprintf(stderr, "desk: --expect wants a number of assignments >= 1, not '%s'\n", val);
                return -1;
            }
            o->expect = n;
        } else if (!strcmp(a, "--broker-pid")) {
            if (parse_long(val, 1, 1L << 30, &n) < 0) {
                fprintf(stderr, "desk: --broker-pid wants a process id, not '%s'\n", val);
                return -1;
            }
            o->broker_pid = n;
        } else if (!strcmp(a, "--timeout")) {
            if (parse_secs(val, &o->timeout) < 0 || o->timeout <= 0) {
                fprintf(stderr, "desk: --timeout wants seconds > 0, not '%s'\n", val);
                return -1;
            }
        } else if (!strcmp(a, "--after")) {
            if (parse_secs(val, &o->after) < 0) {
                fprintf(stderr, "desk: --after wants seconds >= 0, not '%s'\n", val);
                return -1;
            }
        } else {
            fprintf(stderr, "desk: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        }
        i++;
    }
    if (!o->endpoint || !o->expect) {
        fprintf(stderr, "desk: -b ENDPOINT and --expect N are required\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

/* ---- msgpack helpers ---- */

static int obj_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

/* Copy a string of 1..cap-1 bytes; 0 ok, -1 not a string or too long. */
static int obj_copy(const msgpack_object *o, char *buf, size_t cap)
{
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0 || o->via.str.size >= cap)
        return -1;
    memcpy(buf, o->via.str.ptr, o->via.str.size);
    buf[o->via.str.size] = '\0';
    return 0;
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (obj_is(&map->via.map.ptr[i].key, key))
            return &map->via.map.ptr[i].val;
    return NULL;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* ---- the assignments: an array and an open-addressing index by id ---- */

typedef struct {
    item_t *items;
    size_t n, cap;
    uint32_t *slots;       /* index + 1; 0 = empty */
    size_t n_slots;        /* a power of two, > 2 n */
} table_t;

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static int table_grow_slots(table_t *t)
{
    size_t ns = t->n_slots ? t->n_slots * 2 : 1024;
    uint32_t *s = calloc(ns, sizeof *s);
    if (!s)
        return -1;
    for (size_t i = 0; i < t->n; i++) {
        size_t k = fnv1a(t->items[i].id) & (ns - 1);
        while (s[k])
            k = (k + 1) & (ns - 1);
        s[k] = (uint32_t)(i + 1);
    }
    free(t->slots);
    t->slots = s;
    t->n_slots = ns;
    return 0;
}

/* The index of id, adding it when new (*added = 1); -1 out of memory. */
static long table_find_add(table_t *t, const char *id, int *added)
{
    *added = 0;
    if ((t->n + 1) * 2 > t->n_slots && table_grow_slots(t) < 0)
        return -1;
    size_t k = fnv1a(id) & (t->n_slots - 1);
    while (t->slots[k]) {
        uint32_t i = t->slots[k] - 1;
        if (!strcmp(t->items[i].id, id))
            return (long)i;
        k = (k + 1) & (t->n_slots - 1);
    }
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 4096;
        item_t *p = realloc(t->items, nc * sizeof *p);
        if (!p)
            return -1;
        t->items = p;
        t->cap = nc;
    }
    item_t *it = &t->items[t->n];
    memset(it, 0, sizeof *it);
    snprintf(it->id, sizeof it->id, "%s", id);
    t->slots[k] = (uint32_t)(t->n + 1);
    *added = 1;
    return (long)t->n++;
}

static int queue_push(desk_t *d, size_t idx)
{
    if (d->q_tail == d->q_cap) {
        size_t nc = d->q_cap ? d->q_cap * 2 : 4096;
        size_t *p = realloc(d->queue, nc * sizeof *p);
        if (!p)
            return -1;
        d->queue = p;
        d->q_cap = nc;
    }
    d->queue[d->q_tail++] = idx;
    return 0;
}

/* ---- the run ---- */

typedef struct {
    const options_t *o;
    desk_t *desks;
    table_t t;
    msgpack_sbuffer sb;
    int64_t t_hello, t_first_push, t_last_new_push, t_all_known, t_all_pushed;
    int desks_pushed;                 /* desks that have received --expect pushes */
    int64_t t_first_sent, t_done;     /* the measured window */
    double cpu_first, cpu_done;       /* this process, at both ends */
    double bcpu_first, bcpu_done;     /* the broker, at both ends */
    long long bsyscw_first, bsyscw_done, bwchar_first, bwchar_done; /* the broker's writes */
    uint64_t pushes, repeats, repeats_after_ack, acks_sent, acked, dup_acks, nacked, stray;
    uint64_t mismatched, pings, unexpected, other_pushes;
    long known, done_count;           /* distinct assignments known / acknowledged */
    int acking;                       /* case_acks may go out */
    int fatal;
    code_t codes[MAX_CODES];
    size_t n_codes;
    double inflight_area_us;          /* integral of in-flight over time while acknowledging */
    int64_t last_tick;
} run_t;

static void record_code(run_t *r, const msgpack_object *code, const msgpack_object *error)
{
    char c[32] = "(none)";
    (void)obj_copy(code, c, sizeof c);
    for (size_t i = 0; i < r->n_codes; i++)
        if (!strcmp(r->codes[i].code, c)) {
            r->codes[i].n++;
            return;
        }
    if (r->n_codes == MAX_CODES)
        return;
    code_t *k = &r->codes[r->n_codes++];
    snprintf(k->code, sizeof k->code, "%s", c);
    k->n = 1;
    if (obj_copy(error, k->error, sizeof k->error) < 0)
        snprintf(k->error, sizeof k->error, "(no error text)");
}

static int send_sb(desk_t *d, const msgpack_sbuffer *sb)
{
    if (zmq_send(d->sock, sb->data, sb->size, ZMQ_DONTWAIT) >= 0)
        return 0;
    if (errno == EAGAIN || errno == EINTR)
        return 1;
    fprintf(stderr, "desk: %s: send: %s\n", d->name, zmq_strerror(errno));
    return -1;
}

static int send_simple(run_t *r, desk_t *d, const char *op, const msgpack_object *id, const char *id_s)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(&r->sb);
    msgpack_packer_init(&pk, &r->sb, msgpack_sbuffer_write);
    int hello = !strcmp(op, "hello");
    msgpack_pack_map(&pk, hello ? 5 : 3);
    pack_str(&pk, "v");
    msgpack_pack_uint32(&pk, 1);
    pack_str(&pk, "op");
    pack_str(&pk, op);
    pack_str(&pk, "id");
    if (id)
        msgpack_pack_str_with_body(&pk, id->via.str.ptr, id->via.str.size);
    else
        pack_str(&pk, id_s);
    if (hello) {
        pack_str(&pk, "agent");
        pack_str(&pk, d->name);
        pack_str(&pk, "software");
        pack_str(&pk, "carehub-bench-desk/1");
    }
    return send_sb(d, &r->sb) < 0 ? -1 : 0;
}

/* Send the case_ack of item idx: 0 sent, 1 would block, -1 error. */
static int send_case_ack(run_t *r, desk_t *d, size_t idx)
{
    char mid[32];
    snprintf(mid, sizeof mid, "k%zu", idx);
    msgpack_packer pk;
    msgpack_sbuffer_clear(&r->sb);
    msgpack_packer_init(&pk, &r->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "v");
    msgpack_pack_uint32(&pk, 1);
    pack_str(&pk, "op");
    pack_str(&pk, "case_ack");
    pack_str(&pk, "id");
    pack_str(&pk, mid);
    pack_str(&pk, "assignment");
    pack_str(&pk, r->t.items[idx].id);
    pack_str(&pk, "by");
    pack_str(&pk, "bench officer");
    return send_sb(d, &r->sb);
}

/* The item a reply id "k<n>" names, or -1. */
static long reply_item(const run_t *r, const msgpack_object *id)
{
    char buf[32], *end;
    if (obj_copy(id, buf, sizeof buf) < 0 || buf[0] != 'k')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(buf + 1, &end, 10);
    if (errno || end == buf + 1 || *end || v >= r->t.n)
        return -1;
    return (long)v;
}

static void window_done(run_t *r, int64_t now)
{
    r->t_done = now;
    r->cpu_done = cpu_s();
    if (r->o->broker_pid) {
        r->bcpu_done = proc_cpu_s(r->o->broker_pid);
        proc_io(r->o->broker_pid, &r->bsyscw_done, &r->bwchar_done);
    }
}

static void handle(run_t *r, int di, const char *data, size_t len, int64_t now)
{
    desk_t *d = &r->desks[di];
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        r->unexpected++;
        goto out;
    }
    const msgpack_object *m = &u.data, *op = map_get(m, "op"), *id = map_get(m, "id");
    if (id && id->type != MSGPACK_OBJECT_STR)
        id = NULL;
    if (obj_is(op, "case")) {
        char aid[ID_MAX + 1];
        if (obj_copy(id, aid, sizeof aid) < 0) {
            r->unexpected++;
            goto out;
        }
        r->pushes++;
        if (!r->t_first_push)
            r->t_first_push = now;
        if (++d->pushes == r->o->expect && ++r->desks_pushed == r->o->desks)
            r->t_all_pushed = now;
        int added;
        long idx = table_find_add(&r->t, aid, &added);
        if (idx < 0) {
            fprintf(stderr, "desk: out of memory\n");
            r->fatal = 1;
            goto out;
        }
        item_t *it = &r->t.items[idx];
        if (it->pushes < UINT16_MAX)
            it->pushes++;
        if (!added) {
            r->repeats++;
            if (it->acks)
                r->repeats_after_ack++;
            goto out;
        }
        (void)obj_copy(map_get(m, "case"), it->case_id, sizeof it->case_id);
        it->desk = (int)(fnv1a(aid) % (uint32_t)r->o->desks);
        r->known++;
        r->t_last_new_push = now;
        if (queue_push(&r->desks[it->desk], (size_t)idx) < 0) {
            fprintf(stderr, "desk: out of memory\n");
            r->fatal = 1;
        }
        if (r->known == r->o->expect && !r->t_all_known)
            r->t_all_known = now;
    } else if (obj_is(op, "ack")) {
        long idx = reply_item(r, id);
        if (idx < 0 || !r->t.items[idx].sent_us) {
            r->stray++;
            goto out;
        }
        item_t *it = &r->t.items[idx];
        if (!obj_is(map_get(m, "assignment"), it->id))
            r->mismatched++;
        if (it->acks++ || it->nacks) {
            r->dup_acks++;
            goto out;
        }
        r->acked++;
        d->inflight--;
        int64_t lat = now - it->sent_us;
        it->lat_us = lat < 0 ? 0 : lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
        r->done_count++;
        if (r->done_count == r->o->expect)
            window_done(r, now);
    } else if (obj_is(op, "nack")) {
        record_code(r, map_get(m, "code"), map_get(m, "error"));
        r->nacked++;
        if (obj_is(id, d->hello_id)) {
            char e[200] = "";
            (void)obj_copy(map_get(m, "error"), e, sizeof e);
            fprintf(stderr, "desk: %s: hello refused: %s\n", d->name, e);
            r->fatal = 1;
            goto out;
        }
        long idx = reply_item(r, id);
        if (idx >= 0 && r->t.items[idx].sent_us) {
            item_t *it = &r->t.items[idx];
            if (!it->acks && !it->nacks++) {
                d->inflight--;
                r->done_count++; /* answered, though refused: the run has failed */
                if (r->done_count == r->o->expect)
                    window_done(r, now);
            }
        }
    } else if (obj_is(op, "welcome")) {
        if (obj_is(id, d->hello_id) && !d->welcomed) {
            d->welcomed = 1;
            d->welcome_us = now;
        } else {
            r->unexpected++;
        }
    } else if (obj_is(op, "ping")) {
        r->pings++;
        if (send_simple(r, d, "pong", id, "") < 0)
            r->fatal = 1;
    } else if (obj_is(op, "outcome") || obj_is(op, "reminder")) {
        r->other_pushes++;
        if (id && send_simple(r, d, "received", id, "") < 0)
            r->fatal = 1;
    } else {
        r->unexpected++;
    }
out:
    msgpack_unpacked_destroy(&u);
}

static int drain(run_t *r, int di, int64_t now)
{
    desk_t *d = &r->desks[di];
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, d->sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(&msg);
            if (e == EAGAIN || e == EINTR)
                return 0;
            fprintf(stderr, "desk: %s: receive: %s\n", d->name, zmq_strerror(e));
            return -1;
        }
        if (zmq_msg_more(&msg))
            r->unexpected++; /* the rest of a multi-frame message is read as more frames */
        else
            handle(r, di, zmq_msg_data(&msg), zmq_msg_size(&msg), now);
        zmq_msg_close(&msg);
        if (r->fatal)
            return -1;
    }
}

/* Fill every desk's window; 0 ok, 1 a send would block, -1 error. */
static int refill(run_t *r)
{
    int blocked = 0;
    for (int i = 0; i < r->o->desks; i++) {
        desk_t *d = &r->desks[i];
        while (d->inflight < (size_t)r->o->inflight && d->q_head < d->q_tail) {
            size_t idx = d->queue[d->q_head];
            int s = send_case_ack(r, d, idx);
            if (s < 0)
                return -1;
            if (s > 0) {
                blocked = 1;
                break;
            }
            int64_t now = mono_us();
            if (!r->t_first_sent) {
                r->t_first_sent = r->last_tick = now;
                r->cpu_first = cpu_s();
                if (r->o->broker_pid) {
                    r->bcpu_first = proc_cpu_s(r->o->broker_pid);
                    proc_io(r->o->broker_pid, &r->bsyscw_first, &r->bwchar_first);
                }
            }
            r->t.items[idx].sent_us = now;
            d->q_head++;
            d->inflight++;
            r->acks_sent++;
        }
    }
    return blocked;
}

static size_t total_inflight(const run_t *r)
{
    size_t n = 0;
    for (int i = 0; i < r->o->desks; i++)
        n += r->desks[i].inflight;
    return n;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint32_t *s, size_t n, double q)
{
    if (!n)
        return 0.0;
    size_t k = (size_t)ceil(q * (double)n);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return s[k - 1] / 1000.0;
}

static double ms_since(int64_t from, int64_t to)
{
    return from && to ? (double)(to - from) / 1000.0 : -1.0;
}

int main(int argc, char **argv)
{
    options_t o;
    int prc = parse_args(argc, argv, &o);
    if (prc)
        return prc > 0 ? 0 : 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, NULL);
    (void)sigaction(SIGTERM, &sa, NULL);

    int rc = 1;
    run_t r;
    memset(&r, 0, sizeof r);
    r.o = &o;
    msgpack_sbuffer_init(&r.sb);
    void *ctx = zmq_ctx_new();
    r.desks = calloc((size_t)o.desks, sizeof *r.desks);
    zmq_pollitem_t *items = calloc((size_t)o.desks, sizeof *items);
    uint32_t *lat = NULL;
    if (!ctx || !r.desks || !items) {
        fprintf(stderr, "desk: out of memory\n");
        goto done;
    }
    for (int i = 0; i < o.desks; i++) {
        desk_t *d = &r.desks[i];
        snprintf(d->name, sizeof d->name, "%s%d", o.prefix, i);
        snprintf(d->hello_id, sizeof d->hello_id, "%s-hello", d->name);
        d->sock = zmq_socket(ctx, ZMQ_DEALER);
        int zero = 0;
        if (!d->sock || zmq_setsockopt(d->sock, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
            zmq_setsockopt(d->sock, ZMQ_SNDHWM, &zero, sizeof zero) < 0 ||
            zmq_setsockopt(d->sock, ZMQ_RCVHWM, &zero, sizeof zero) < 0 ||
            zmq_connect(d->sock, o.endpoint) < 0) {
            fprintf(stderr, "desk: connect %s: %s\n", o.endpoint, zmq_strerror(errno));
            goto done;
        }
        items[i].socket = d->sock;
        items[i].events = ZMQ_POLLIN;
    }
    r.t_hello = mono_us();
    for (int i = 0; i < o.desks; i++) {
        if (send_simple(&r, &r.desks[i], "hello", NULL, r.desks[i].hello_id) < 0)
            goto done;
    }
    const int64_t deadline = r.t_hello + (int64_t)(o.timeout * 1e6);
    int64_t after_until = 0;
    int blocked = 0;
    for (;;) {
        int64_t now = mono_us();
        if (g_interrupted) {
            fprintf(stderr, "desk: interrupted\n");
            break;
        }
        if (now >= deadline) {
            fprintf(stderr, "desk: timed out after %.0f s: %ld of %ld assignments known, %ld answered\n",
                    o.timeout, r.known, o.expect, r.done_count);
            break;
        }
        if (r.t_done && !after_until)
            after_until = r.t_done + (int64_t)(o.after * 1e6);
        if (after_until && now >= after_until)
            break;
        int welcomed = 0;
        for (int i = 0; i < o.desks; i++)
            welcomed += r.desks[i].welcomed;
        if (!welcomed && now - r.t_hello > (int64_t)HELLO_TIMEOUT_MS * 1000) {
            fprintf(stderr, "desk: no desk welcomed within %d s\n", HELLO_TIMEOUT_MS / 1000);
            break;
        }
        long timeout_ms = blocked ? 1 : 50;
        if (zmq_poll(items, o.desks, timeout_ms) < 0 && errno != EINTR) {
            fprintf(stderr, "desk: zmq_poll: %s\n", zmq_strerror(errno));
            goto done;
        }
        now = mono_us();
        if (r.t_first_sent && !r.t_done) {
            r.inflight_area_us += (double)total_inflight(&r) * (double)(now - r.last_tick);
            r.last_tick = now;
        }
        for (int i = 0; i < o.desks; i++)
            if ((items[i].revents & ZMQ_POLLIN) && drain(&r, i, now) < 0)
                goto done;
        /* Collecting first: every desk has been pushed every assignment (after its hello the
         * broker pushes each desk all of them), so no push is in the measured window. */
        if (!r.acking && (o.on_arrival ? welcomed > 0 : r.desks_pushed == o.desks))
            r.acking = 1;
        blocked = 0;
        if (r.acking && !r.t_done) {
            int s = refill(&r);
            if (s < 0)
                goto done;
            blocked = s;
        }
    }

    /* ---- report ---- */
    if (r.acked) {
        lat = malloc(r.acked * sizeof *lat);
        if (!lat) {
            fprintf(stderr, "desk: out of memory\n");
            goto done;
        }
    }
    size_t n_lat = 0;
    long once = 0, never = 0, multi = 0, refused = 0;
    for (size_t i = 0; i < r.t.n; i++) {
        const item_t *it = &r.t.items[i];
        if (it->acks == 1 && !it->nacks) {
            once++;
            if (lat && n_lat < r.acked)
                lat[n_lat++] = it->lat_us;
        } else if (it->acks > 1) {
            multi++;
        }
        if (it->nacks)
            refused++;
        if (!it->acks && !it->nacks)
            never++;
    }
    if (n_lat)
        qsort(lat, n_lat, sizeof *lat, cmp_u32);
    int complete = r.t_done != 0;
    int64_t end = complete ? r.t_done : mono_us();
    double secs = r.t_first_sent ? (double)(end - r.t_first_sent) / 1e6 : 0.0;
    if (!complete) {
        r.cpu_done = cpu_s();
        if (o.broker_pid) {
            r.bcpu_done = proc_cpu_s(o.broker_pid);
            proc_io(o.broker_pid, &r.bsyscw_done, &r.bwchar_done);
        }
    }
    int have_io = o.broker_pid && r.t_first_sent && r.bsyscw_first >= 0 && r.bsyscw_done >= 0;
    double aps = secs > 0 ? (double)r.acked / secs : 0.0;
    double dcpu = r.t_first_sent ? r.cpu_done - r.cpu_first : 0.0;
    double bcpu = o.broker_pid && r.bcpu_first >= 0 && r.bcpu_done >= 0 ? r.bcpu_done - r.bcpu_first : -1.0;
    double avg_inflight = secs > 0 ? r.inflight_area_us / (secs * 1e6) : 0.0;
    double fill = avg_inflight / ((double)o.inflight * o.desks) * 100.0;
    double total_cpu = cpu_s();

    fprintf(stderr,
            "desk: %d desk%s x %d in flight: %ld assignments known (%" PRIu64 " pushes, %" PRIu64
            " repeats); %" PRIu64 " acked in %.3f s = %.0f acks/s; p50 %.3f ms, p99 %.3f ms, max %.3f ms; "
            "nacks %" PRIu64 "; desk CPU %.3f s (%.0f%% of one CPU), window %.0f%% full\n",
            o.desks, o.desks == 1 ? "" : "s", o.inflight, r.known, r.pushes, r.repeats, r.acked, secs,
            aps, pct_ms(lat, n_lat, 0.5), pct_ms(lat, n_lat, 0.99), n_lat ? lat[n_lat - 1] / 1000.0 : 0.0,
            r.nacked, dcpu, secs > 0 ? 100.0 * dcpu / secs : 0.0, fill);
    for (size_t i = 0; i < r.n_codes; i++)
        fprintf(stderr, "desk: nack %s x %" PRIu64 ", e.g.: %s\n", r.codes[i].code, r.codes[i].n,
                r.codes[i].error);
    if (o.json) {
        printf("{\"desks\":%d,\"inflight\":%d,\"expect\":%ld,\"known\":%ld,\"pushes\":%" PRIu64
               ",\"repeats\":%" PRIu64 ",\"repeats_after_ack\":%" PRIu64 ",\"acks_sent\":%" PRIu64
               ",\"acked\":%" PRIu64 ",\"acked_once\":%ld,\"never_answered\":%ld,\"acked_more_than_once\":%ld"
               ",\"refused\":%ld,\"nacked\":%" PRIu64 ",\"duplicate_acks\":%" PRIu64
               ",\"stray_replies\":%" PRIu64 ",\"mismatched\":%" PRIu64 ",\"unexpected\":%" PRIu64
               ",\"pings\":%" PRIu64 ",\"other_pushes\":%" PRIu64 ",\"complete\":%s"
               ",\"welcome_ms\":%.3f,\"first_push_ms\":%.3f,\"all_known_ms\":%.3f,\"all_pushed_ms\":%.3f"
               ",\"first_ack_sent_ms\":%.3f"
               ",\"seconds\":%.6f,\"acks_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f"
               ",\"desk_cpu_s\":%.4f,\"desk_cpu_pct\":%.1f,\"desk_cpu_total_s\":%.4f"
               ",\"broker_cpu_s\":%.3f,\"broker_cpu_pct\":%.1f,\"broker_write_syscalls\":%lld"
               ",\"broker_write_bytes\":%lld,\"avg_inflight\":%.1f,\"window_fill_pct\":%.1f"
               ",\"nack_codes\":{",
               o.desks, o.inflight, o.expect, r.known, r.pushes, r.repeats, r.repeats_after_ack, r.acks_sent,
               r.acked, once, never, multi, refused, r.nacked, r.dup_acks, r.stray, r.mismatched,
               r.unexpected, r.pings, r.other_pushes, complete ? "true" : "false",
               ms_since(r.t_hello, r.desks[0].welcome_us), ms_since(r.t_hello, r.t_first_push),
               ms_since(r.t_hello, r.t_all_known), ms_since(r.t_hello, r.t_all_pushed),
               ms_since(r.t_hello, r.t_first_sent), secs, aps,
               pct_ms(lat, n_lat, 0.5), pct_ms(lat, n_lat, 0.99), n_lat ? lat[n_lat - 1] / 1000.0 : 0.0,
               dcpu, secs > 0 ? 100.0 * dcpu / secs : 0.0, total_cpu, bcpu,
               secs > 0 && bcpu >= 0 ? 100.0 * bcpu / secs : -1.0,
               have_io ? r.bsyscw_done - r.bsyscw_first : -1LL, have_io ? r.bwchar_done - r.bwchar_first : -1LL,
               avg_inflight, fill);
        for (size_t i = 0; i < r.n_codes; i++)
            printf("%s\"%s\":%" PRIu64, i ? "," : "", r.codes[i].code, r.codes[i].n);
        printf("}}\n");
        fflush(stdout);
    }
    if (o.out) {
        FILE *f = fopen(o.out, "w");
        if (!f) {
            fprintf(stderr, "desk: %s: %s\n", o.out, strerror(errno));
            goto done;
        }
        for (size_t i = 0; i < r.t.n; i++) {
            const item_t *it = &r.t.items[i];
            fprintf(f, "%s %s %u %u %" PRIu32 "\n", it->id, it->case_id[0] ? it->case_id : "-",
                    (unsigned)it->acks, (unsigned)it->nacks, it->lat_us);
        }
        if (fclose(f) != 0) {
            fprintf(stderr, "desk: %s: %s\n", o.out, strerror(errno));
            goto done;
        }
    }
    if (complete && !r.nacked && !r.dup_acks && !r.stray && !r.mismatched && once == o.expect &&
        r.known == o.expect && !r.fatal)
        rc = 0;
    else
        fprintf(stderr, "desk: FAIL: %ld of %ld acknowledged exactly once, %" PRIu64 " nacks, %" PRIu64
                " duplicate acks, %" PRIu64 " stray replies, %ld known\n",
                once, o.expect, r.nacked, r.dup_acks, r.stray, r.known);
done:
    if (r.desks) {
        for (int i = 0; i < o.desks; i++) {
            if (r.desks[i].sock)
                zmq_close(r.desks[i].sock);
            free(r.desks[i].queue);
        }
    }
    if (ctx)
        zmq_ctx_term(ctx);
    free(r.desks);
    free(items);
    free(lat);
    free(r.t.items);
    free(r.t.slots);
    msgpack_sbuffer_destroy(&r.sb);
    return rc;
}
