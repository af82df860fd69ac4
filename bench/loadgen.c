/*
 * loadgen.c — carehub load generator.
 *
 *   loadgen -b ENDPOINT [-n AGENTS=4] [-w INFLIGHT=64] [-t SECONDS=10]
 *           [--warmup SECONDS=1] [--json]
 *           [--rate EVENTS_PER_S] [--interval SECONDS] [--mandatory-every K]
 *           [--children N=1000]
 *
 * Opens AGENTS DEALER sockets to ENDPOINT (one per agent, all in this one thread
 * over zmq_poll). Each says hello as "bench-school-<i>" and, once every agent is
 * welcomed, keeps INFLIGHT absence events in flight: a new event goes out as soon
 * as an ack (or nack) frees a slot. After a warm-up the run is measured for
 * SECONDS; then nothing more is sent and the events still in flight are waited for
 * (at most 5 s) so that their latency counts too.
 *
 * Reported: acknowledged events per second inside the measured window, and the
 * p50/p99 of the send -> ack latency (monotonic clock, microsecond resolution) of
 * the events sent inside it. Failure (exit 1): no welcome within 5 s, any nack, an
 * ack marked duplicate, an event never answered, or nothing acked. Usage errors
 * exit 2. See docs/bench.md.
 *
 * Event ids are "<nonce>-<slot>-<seq>": the nonce (from the clock and the pid)
 * keeps ids of two runs against one broker apart, the slot finds the in-flight
 * record of a reply in O(1), and seq tells a stale reply from the current one.
 *
 * Options for long runs (bench/soak.py); without them nothing above changes:
 *
 *   --rate R      open loop: events are due at R per second in total (agent k mod N
 *                 takes the k-th), from the start of the warm-up, whatever the
 *                 answers do. The window (-w per agent) still bounds what is in
 *                 flight: an event due while its agent's window is full waits for a
 *                 slot, and its latency then counts from when it was *due*, not from
 *                 when it could be sent (no coordinated omission). An event sent on
 *                 time counts from its send. "backlog" = events due but not sent yet.
 *   --interval S  during the measured window, one JSON line on stdout every S seconds
 *                 (and one for a last, shorter interval) about the acks received in
 *                 that interval: {"interval", "t" (end, s since the window opened),
 *                 "seconds", "sent", "acked", "mandatory", "nacked", "outcomes",
 *                 "events_per_s", "p50_ms", "p99_ms", "max_ms" (exact, of these acks),
 *                 "inflight", "backlog", "max_backlog", "hist"}. "hist" is the latency
 *                 histogram of the same acks as [[low_us, count], ...] (non-empty
 *                 buckets, ascending): 1 us wide below 64 us, then 32 buckets per
 *                 octave, so a bucket spans [low, low * (1 + 1/32)). Histograms of
 *                 several intervals add up to the percentiles of a longer window.
 *   --mandatory-every K  every K-th event of each agent is a mandatory_report about a
 *                 child never seen before (a new case, routed by the broker's
 *                 workflows) instead of an absence.
 *   --children N  the absences of an agent cycle over N children (default 1000): how
 *                 many open cases the load keeps joining, N x AGENTS.
 *
 * With any of them the final JSON line also has "rate", "sent", "mandatory",
 * "outcomes", "max_backlog" and "backlog" (due events never sent when the window
 * closed). Outcomes (PROTOCOL §6: a case with our event was resolved) are confirmed
 * with "received" in every mode.
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

#define HELLO_TIMEOUT_MS 5000  /* every agent must be welcomed within this */
#define DRAIN_TIMEOUT_MS 5000  /* after the run, wait this long for the last acks */
#define MAX_AGENTS 4096
#define MAX_INFLIGHT 65536
#define CHILDREN 1000          /* child ids cycle over this many per agent (--children) */
#define MAX_CODES 16           /* distinct nack codes remembered */
#define MAX_LAT_SAMPLES (256u * 1024 * 1024) /* 1 GiB of samples: a hard cap */
#define HIST_LINEAR 64         /* latency histogram: 1 us buckets below this ... */
#define HIST_SUB 32            /* ... then this many buckets per octave */
#define HIST_BUCKETS (HIST_LINEAR + (32 - 6) * HIST_SUB) /* up to UINT32_MAX us */

typedef enum { PHASE_HELLO, PHASE_WARMUP, PHASE_MEASURE, PHASE_DRAIN, PHASE_DONE } phase_t;

/* One event in flight. */
typedef struct {
    uint64_t seq;          /* the event's sequence number; 0 = slot free */
    int64_t sent_us;       /* monotonic send time (open loop, held back: when it was due) */
    int mandatory;         /* a mandatory_report (--mandatory-every) */
} slot_t;

/* One agent: a DEALER socket and its in-flight events. */
typedef struct {
    void *sock;
    char name[32];         /* "bench-school-<i>" */
    int index;
    int welcomed;
    uint64_t next_seq;     /* next event's sequence number, from 1 */
    uint64_t next_child;   /* cycles over --children (default CHILDREN) */
    slot_t *slots;         /* inflight slots */
    int *free_slots;       /* stack of free slot indices */
    size_t n_free;
} agent_t;

/* A nack code seen, how often, and the first error sentence with it. */
typedef struct {
    char code[32];
    uint64_t n;
    char error[200];
} nack_code_t;

typedef struct {
    uint64_t acked;        /* acks (duplicate:false) received inside the measured window */
    uint64_t acked_total;  /* acks (duplicate:false) over the whole run */
    uint64_t duplicates;   /* acks with duplicate:true: the ids are fresh, so an error */
    uint64_t nacked;       /* every nack, whole run */
    uint64_t unexpected;   /* replies not understood or not matching an event in flight */
    uint64_t pings;        /* broker pings answered */
    uint64_t unanswered;   /* events still in flight when the drain timed out */
    uint32_t *lat;         /* latencies, us, of events sent inside the measured window */
    size_t n_lat, cap_lat;
    nack_code_t codes[MAX_CODES];
    size_t n_codes;
    uint64_t other_codes;  /* nacks whose code did not fit in codes[] */
    uint64_t sent;         /* events sent, whole run */
    uint64_t mandatory;    /* mandatory_report events acked (duplicate:false), whole run */
    uint64_t outcomes;     /* outcome pushes confirmed with received */
} stats_t;

/* One --interval: the acks received in it. */
typedef struct {
    int number;            /* 1, 2, ... */
    int64_t from_us;       /* monotonic start */
    uint64_t sent, acked, mandatory, nacked, outcomes;
    uint64_t max_backlog;
    uint32_t *lat;         /* exact latencies, us, of this interval's acks */
    size_t n_lat, cap_lat;
    uint64_t hist[HIST_BUCKETS];
} interval_t;

typedef struct {
    const char *endpoint;
    int agents;
    int inflight;
    double seconds;
    double warmup;
    int json;
    double rate;           /* --rate: events/s in total, open loop; 0 = closed loop */
    double interval;       /* --interval: seconds; 0 = none */
    long mandatory_every;  /* --mandatory-every: 0 = absences only */
    long children;         /* --children: absences cycle over this many children per agent */
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

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: loadgen -b ENDPOINT [-n AGENTS=4] [-w INFLIGHT=64] [-t SECONDS=10]\n"
            "               [--warmup SECONDS=1] [--json]\n"
            "               [--rate EVENTS_PER_S] [--interval SECONDS] [--mandatory-every K]\n"
            "               [--children N=1000]\n"
            "  N agents bench-school-0..N-1 each keep INFLIGHT absence events in flight;\n"
            "  reports acknowledged events/s and p50/p99 send->ack latency.\n"
            "  --rate: open loop at that total rate (still at most INFLIGHT per agent);\n"
            "  --interval: a JSON line per interval (acks, p50/p99, histogram) on stdout;\n"
            "  --mandatory-every K: every K-th event of an agent is a mandatory_report\n"
            "  about a new child; --children N: absences cycle over N children per agent.\n"
            "  See the header of bench/loadgen.c and docs/bench.md.\n");
}

/* Parse a whole decimal integer in [lo, hi]; -1 when it is not one. */
static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double lo, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo) || v > 86400.0)
        return -1;
    *out = v;
    return 0;
}

/* 0 ok, 1 help printed, -1 usage error (message printed). */
static int parse_args(int argc, char **argv, options_t *o)
{
    o->endpoint = NULL;
    o->agents = 4;
    o->inflight = 64;
    o->seconds = 10.0;
    o->warmup = 1.0;
    o->json = 0;
    o->rate = 0.0;
    o->interval = 0.0;
    o->mandatory_every = 0;
    o->children = CHILDREN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        if (!val) {
            fprintf(stderr, "loadgen: %s needs a value\n", a);
            return -1;
        }
        if (!strcmp(a, "-b")) {
            o->endpoint = val;
        } else if (!strcmp(a, "-n")) {
            if (parse_int(val, 1, MAX_AGENTS, &n) < 0) {
                fprintf(stderr, "loadgen: -n wants a number of agents from 1 to %d, not '%s'\n",
                        MAX_AGENTS, val);
                return -1;
            }
            o->agents = (int)n;
        } else if (!strcmp(a, "-w")) {
            if (parse_int(val, 1, MAX_INFLIGHT, &n) < 0) {
                fprintf(stderr, "loadgen: -w wants events in flight from 1 to %d, not '%s'\n",
                        MAX_INFLIGHT, val);
                return -1;
            }
            o->inflight = (int)n;
        } else if (!strcmp(a, "-t")) {
            if (parse_seconds(val, 0.001, &o->seconds) < 0) {
                fprintf(stderr, "loadgen: -t wants seconds > 0, not '%s'\n", val);
                return -1;
            }
        } else if (!strcmp(a, "--warmup")) {
            if (parse_seconds(val, 0.0, &o->warmup) < 0) {
                fprintf(stderr, "loadgen: --warmup wants seconds >= 0, not '%s'\n", val);
                return -1;
            }
        } else if (!strcmp(a, "--rate")) {
            char *end;
            errno = 0;
            o->rate = strtod(val, &end);
            if (errno || end == val || *end || !(o->rate >= 0.1) || o->rate > 1e7) {
                fprintf(stderr, "loadgen: --rate wants events per second from 0.1 to 1e7, "
                        "not '%s'\n", val);
                return -1;
            }
        } else if (!strcmp(a, "--interval")) {
            if (parse_seconds(val, 0.01, &o->interval) < 0) {
                fprintf(stderr, "loadgen: --interval wants seconds >= 0.01, not '%s'\n", val);
                return -1;
            }
        } else if (!strcmp(a, "--mandatory-every")) {
            if (parse_int(val, 1, 1000000000L, &n) < 0) {
                fprintf(stderr, "loadgen: --mandatory-every wants a whole number >= 1, "
                        "not '%s'\n", val);
                return -1;
            }
            o->mandatory_every = n;
        } else if (!strcmp(a, "--children")) {
            if (parse_int(val, 1, 1000000000L, &n) < 0) {
                fprintf(stderr, "loadgen: --children wants a whole number >= 1, not '%s'\n", val);
                return -1;
            }
            o->children = n;
        } else {
            fprintf(stderr, "loadgen: unknown option '%s'\n", a);
            usage(stderr);
            return -1;
        }
        i++;
    }
    if (!o->endpoint) {
        fprintf(stderr, "loadgen: -b ENDPOINT is required (e.g. tcp://127.0.0.1:5570)\n");
        usage(stderr);
        return -1;
    }
    return 0;
}

/* ---- msgpack helpers ---------------------------------------------------- */

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    pack_str(pk, k);
    pack_str(pk, v);
}

/* 1 when o is a string equal to s. */
static int obj_is(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

/* Copy a string object into buf (truncated, NUL-terminated); 0 ok, -1 not a string. */
static int obj_copy(const msgpack_object *o, char *buf, size_t cap)
{
    if (!o || o->type != MSGPACK_OBJECT_STR || cap == 0)
        return -1;
    size_t n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
    memcpy(buf, o->via.str.ptr, n);
    buf[n] = '\0';
    return 0;
}

/* The value under key in a map object, or NULL. */
static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (obj_is(&kv->key, key))
            return &kv->val;
    }
    return NULL;
}

/* ---- sending ------------------------------------------------------------ */

/* Send the buffer on the agent's socket: 0 sent, 1 would block, -1 error. */
static int send_buf(agent_t *a, const msgpack_sbuffer *sb)
{
    if (zmq_send(a->sock, sb->data, sb->size, ZMQ_DONTWAIT) >= 0)
        return 0;
    if (errno == EAGAIN || errno == EINTR)
        return 1;
    fprintf(stderr, "loadgen: %s: send: %s\n", a->name, zmq_strerror(errno));
    return -1;
}

static int send_hello(agent_t *a, msgpack_sbuffer *sb, const char *hello_id)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "v");
    msgpack_pack_uint32(&pk, 1);
    pack_kv_str(&pk, "op", "hello");
    pack_kv_str(&pk, "id", hello_id);
    pack_kv_str(&pk, "agent", a->name);
    pack_kv_str(&pk, "software", "carehub-loadgen/1");
    /* A DEALER queues the hello until the connection is up; "would block" here
     * means the pipe is full, which cannot happen for a first message. */
    return send_buf(a, sb) == 0 ? 0 : -1;
}

static int send_pong(agent_t *a, msgpack_sbuffer *sb, const msgpack_object *id)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, id ? 3 : 2);
    pack_str(&pk, "v");
    msgpack_pack_uint32(&pk, 1);
    pack_kv_str(&pk, "op", "pong");
    if (id) {
        pack_str(&pk, "id");
        msgpack_pack_str_with_body(&pk, id->via.str.ptr, id->via.str.size);
    }
    return send_buf(a, sb) < 0 ? -1 : 0;
}

/* Send one event from a free slot: 0 sent, 1 would block (slot kept free), -1 error.
 * With mandatory_every K > 0, every K-th event of the agent is a mandatory_report
 * about a child never seen before ("r-<nonce>-<agent>-<seq>"): a new case each. */
static int send_event(agent_t *a, msgpack_sbuffer *sb, const char *nonce, int64_t now_us,
                      int64_t now_ms, long mandatory_every, long children)
{
    int slot = a->free_slots[a->n_free - 1];
    uint64_t seq = a->next_seq;
    int mandatory = mandatory_every > 0 && seq % (uint64_t)mandatory_every == 0;
    char id[64], child[64];
    snprintf(id, sizeof id, "%s-%d-%" PRIu64, nonce, slot, seq);
    if (mandatory)
        snprintf(child, sizeof child, "r-%s-%d-%" PRIu64, nonce, a->index, seq);
    else
        snprintf(child, sizeof child, "c-%d-%" PRIu64, a->index, a->next_child);

    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    pack_str(&pk, "v");
    msgpack_pack_uint32(&pk, 1);
    pack_kv_str(&pk, "op", "event");
    pack_kv_str(&pk, "id", id);
    pack_kv_str(&pk, "type", mandatory ? "mandatory_report" : "absence");
    pack_str(&pk, "at");
    msgpack_pack_int64(&pk, now_ms);
    pack_str(&pk, "body");
    if (mandatory) {
        msgpack_pack_map(&pk, 4);
        pack_str(&pk, "reporter");
        msgpack_pack_map(&pk, 1);
        pack_kv_str(&pk, "organisation", "bench-school");
        pack_kv_str(&pk, "harm", "neglect");
        pack_kv_str(&pk, "description", "Load generator: a mandatory report about a new child.");
    } else {
        msgpack_pack_map(&pk, 5);
        pack_kv_str(&pk, "school", "bench-school");
        pack_kv_str(&pk, "date", "2026-11-28");
        pack_kv_str(&pk, "reason", "unexplained");
        pack_str(&pk, "consecutive_days");
        msgpack_pack_uint32(&pk, 1);
    }
    pack_str(&pk, "child");
    msgpack_pack_map(&pk, 2);
    pack_kv_str(&pk, "id", child);
    pack_kv_str(&pk, "name", "Bench Child");

    int rc = send_buf(a, sb);
    if (rc != 0)
        return rc;
    a->n_free--;
    a->slots[slot].seq = seq;
    a->slots[slot].sent_us = now_us;
    a->slots[slot].mandatory = mandatory;
    a->next_seq++;
    if (!mandatory)
        a->next_child = (a->next_child + 1) % (uint64_t)children;
    return 0;
}

/* Confirm an outcome push (PROTOCOL §6): {v, op:"received", id}. */
static int send_received(agent_t *a, msgpack_sbuffer *sb, const msgpack_object *id)
{
    msgpack_packer pk;
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "v");
    msgpack_pack_uint32(&pk, 1);
    pack_kv_str(&pk, "op", "received");
    pack_str(&pk, "id");
    msgpack_pack_str_with_body(&pk, id->via.str.ptr, id->via.str.size);
    return send_buf(a, sb) < 0 ? -1 : 0;
}

/* ---- replies ------------------------------------------------------------ */

/* Find the in-flight slot a reply id names; -1 when it names none. */
static int find_slot(const agent_t *a, int inflight, const char *nonce, const msgpack_object *id)
{
    char buf[80];
    if (obj_copy(id, buf, sizeof buf) < 0)
        return -1;
    size_t nl = strlen(nonce);
    if (strncmp(buf, nonce, nl) != 0 || buf[nl] != '-')
        return -1;
    char *p = buf + nl + 1, *end;
    errno = 0;
    unsigned long slot = strtoul(p, &end, 10);
    if (errno || end == p || *end != '-' || slot >= (unsigned long)inflight)
        return -1;
    p = end + 1;
    unsigned long long seq = strtoull(p, &end, 10);
    if (errno || end == p || *end || seq == 0 || a->slots[slot].seq != seq)
        return -1;
    return (int)slot;
}

static void free_slot(agent_t *a, int slot)
{
    a->slots[slot].seq = 0;
    a->free_slots[a->n_free++] = slot;
}

static void record_nack(stats_t *st, const msgpack_object *code, const msgpack_object *error)
{
    char c[32] = "(no code)";
    (void)obj_copy(code, c, sizeof c); /* keeps the default when code is missing */
    st->nacked++;
    for (size_t i = 0; i < st->n_codes; i++) {
        if (!strcmp(st->codes[i].code, c)) {
            st->codes[i].n++;
            return;
        }
    }
    if (st->n_codes == MAX_CODES) {
        st->other_codes++;
        return;
    }
    nack_code_t *nc = &st->codes[st->n_codes++];
    memcpy(nc->code, c, sizeof nc->code);
    nc->n = 1;
    if (obj_copy(error, nc->error, sizeof nc->error) < 0)
        snprintf(nc->error, sizeof nc->error, "(no error text)");
}

static int push_latency(uint32_t **lat, size_t *n_lat, size_t *cap_lat, int64_t us)
{
    if (*n_lat == *cap_lat) {
        if (*cap_lat >= MAX_LAT_SAMPLES)
            return 0; /* enough samples for any percentile; drop the rest */
        size_t cap = *cap_lat ? *cap_lat * 2 : 65536;
        uint32_t *p = realloc(*lat, cap * sizeof *p);
        if (!p) {
            fprintf(stderr, "loadgen: out of memory for latency samples\n");
            return -1;
        }
        *lat = p;
        *cap_lat = cap;
    }
    (*lat)[(*n_lat)++] = us < 0 ? 0 : us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    return 0;
}

static int record_latency(stats_t *st, int64_t us)
{
    return push_latency(&st->lat, &st->n_lat, &st->cap_lat, us);
}

/* Histogram bucket of a latency in us (see the header: --interval). */
static unsigned hist_bucket(uint32_t us)
{
    if (us < HIST_LINEAR)
        return us;
    unsigned e = 31u - (unsigned)__builtin_clz(us); /* 6..31 */
    unsigned sub = (us >> (e - 5)) & (HIST_SUB - 1);
    return HIST_LINEAR + (e - 6) * HIST_SUB + sub;
}

/* The lower bound in us of histogram bucket b. */
static uint64_t hist_low(unsigned b)
{
    if (b < HIST_LINEAR)
        return b;
    unsigned e = 6 + (b - HIST_LINEAR) / HIST_SUB, sub = (b - HIST_LINEAR) % HIST_SUB;
    return (uint64_t)(HIST_SUB + sub) << (e - 5);
}

typedef struct {
    const options_t *opt;
    const char *nonce;
    const char *hello_id;
    msgpack_sbuffer *sb;
    stats_t *st;
    phase_t phase;
    int64_t measure_from_us;   /* events sent from here on give latency samples */
    int64_t measure_until_us;  /* ... and up to here */
    int fatal;                 /* a reason to stop right away (hello refused, send error) */
    interval_t *iv;            /* --interval: the current interval; NULL without */
} run_t;

/* An ack in the measured window goes into the current interval. */
static int interval_ack(interval_t *iv, int64_t us, int mandatory)
{
    uint32_t v = us < 0 ? 0 : us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    iv->acked++;
    iv->mandatory += (uint64_t)mandatory;
    iv->hist[hist_bucket(v)]++;
    return push_latency(&iv->lat, &iv->n_lat, &iv->cap_lat, us);
}

/* Handle one reply frame of agent a. Never trusts its shape. */
static void handle_reply(run_t *r, agent_t *a, const char *data, size_t len, int64_t now_us)
{
    msgpack_unpacked u;
    size_t off = 0;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, data, len, &off) != MSGPACK_UNPACK_SUCCESS ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        r->st->unexpected++;
        goto out;
    }
    const msgpack_object *m = &u.data;
    const msgpack_object *op = map_get(m, "op");
    const msgpack_object *id = map_get(m, "id");
    if (id && id->type != MSGPACK_OBJECT_STR)
        id = NULL;

    if (op && obj_is(op, "ack")) {
        int slot = find_slot(a, r->opt->inflight, r->nonce, id);
        if (slot < 0) {
            r->st->unexpected++;
            goto out;
        }
        const msgpack_object *dup = map_get(m, "duplicate");
        if (dup && dup->type == MSGPACK_OBJECT_BOOLEAN && dup->via.boolean) {
            r->st->duplicates++;
        } else {
            r->st->acked_total++;
            r->st->mandatory += (uint64_t)a->slots[slot].mandatory;
            if (r->phase == PHASE_MEASURE)
                r->st->acked++;
            int64_t sent = a->slots[slot].sent_us;
            if (sent >= r->measure_from_us && sent < r->measure_until_us &&
                record_latency(r->st, now_us - sent) < 0)
                r->fatal = 1;
            if (r->iv && r->phase == PHASE_MEASURE &&
                interval_ack(r->iv, now_us - sent, a->slots[slot].mandatory) < 0)
                r->fatal = 1;
        }
        free_slot(a, slot);
    } else if (op && obj_is(op, "nack")) {
        record_nack(r->st, map_get(m, "code"), map_get(m, "error"));
        if (r->iv && r->phase == PHASE_MEASURE)
            r->iv->nacked++;
        int slot = find_slot(a, r->opt->inflight, r->nonce, id);
        if (slot >= 0) {
            free_slot(a, slot); /* nothing was stored; the run has failed anyway */
        } else if (r->phase == PHASE_HELLO && id && obj_is(id, r->hello_id)) {
            char code[32] = "?", err[200] = "";
            (void)obj_copy(map_get(m, "code"), code, sizeof code);
            (void)obj_copy(map_get(m, "error"), err, sizeof err);
            fprintf(stderr, "loadgen: %s: hello refused: %s: %s\n", a->name, code, err);
            r->fatal = 1;
        }
    } else if (op && obj_is(op, "welcome")) {
        if (id && obj_is(id, r->hello_id))
            a->welcomed = 1;
        else
            r->st->unexpected++;
    } else if (op && obj_is(op, "ping")) {
        r->st->pings++;
        if (send_pong(a, r->sb, id) < 0)
            r->fatal = 1;
    } else if (op && obj_is(op, "outcome") && id) {
        /* A case with one of our events was resolved: confirm, or it is re-sent. */
        r->st->outcomes++;
        if (r->iv && r->phase == PHASE_MEASURE)
            r->iv->outcomes++;
        if (send_received(a, r->sb, id) < 0)
            r->fatal = 1;
    } else {
        r->st->unexpected++; /* other pushes are not part of the bench */
    }
out:
    msgpack_unpacked_destroy(&u);
}

/* Read everything waiting on the agent's socket. 0 ok, -1 socket error. */
static int drain_socket(run_t *r, agent_t *a, int64_t now_us)
{
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, a->sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(&msg);
            if (e == EAGAIN || e == EINTR)
                return 0;
            fprintf(stderr, "loadgen: %s: receive: %s\n", a->name, zmq_strerror(e));
            return -1;
        }
        if (zmq_msg_more(&msg)) {
            /* Not one frame: count it and drop the rest of the message. */
            r->st->unexpected++;
            while (zmq_msg_more(&msg)) {
                zmq_msg_close(&msg);
                zmq_msg_init(&msg);
                if (zmq_msg_recv(&msg, a->sock, 0) < 0)
                    break;
            }
            zmq_msg_close(&msg);
            continue;
        }
        handle_reply(r, a, zmq_msg_data(&msg), zmq_msg_size(&msg), now_us);
        zmq_msg_close(&msg);
    }
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return a < b ? -1 : a > b;
}

/* Nearest-rank percentile q (0..1) of sorted samples, in ms; 0 without samples. */
static double percentile_ms(const uint32_t *s, size_t n, double q)
{
    if (n == 0)
        return 0.0;
    size_t rank = (size_t)ceil(q * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return s[rank - 1] / 1000.0;
}

static size_t total_inflight(const agent_t *agents, int n, int w)
{
    size_t t = 0;
    for (int i = 0; i < n; i++)
        t += (size_t)w - agents[i].n_free;
    return t;
}

/* Print the interval [iv->from_us, end_us) as one JSON line (--interval) and start the
 * next one at end_us. */
static void emit_interval(interval_t *iv, int64_t end_us, int64_t window_from_us,
                          size_t inflight, uint64_t backlog)
{
    double secs = (double)(end_us - iv->from_us) / 1e6;
    if (iv->n_lat)
        qsort(iv->lat, iv->n_lat, sizeof *iv->lat, cmp_u32);
    double max_ms = iv->n_lat ? iv->lat[iv->n_lat - 1] / 1000.0 : 0.0;
    printf("{\"interval\":%d,\"t\":%.3f,\"seconds\":%.3f,\"sent\":%" PRIu64
           ",\"acked\":%" PRIu64 ",\"mandatory\":%" PRIu64 ",\"nacked\":%" PRIu64
           ",\"outcomes\":%" PRIu64 ",\"events_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f"
           ",\"max_ms\":%.3f,\"inflight\":%zu,\"backlog\":%" PRIu64 ",\"max_backlog\":%" PRIu64
           ",\"hist\":[",
           iv->number, (double)(end_us - window_from_us) / 1e6, secs, iv->sent, iv->acked,
           iv->mandatory, iv->nacked, iv->outcomes, secs > 0 ? (double)iv->acked / secs : 0.0,
           percentile_ms(iv->lat, iv->n_lat, 0.50), percentile_ms(iv->lat, iv->n_lat, 0.99),
           max_ms, inflight, backlog, iv->max_backlog);
    int first = 1;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        if (!iv->hist[b])
            continue;
        printf("%s[%" PRIu64 ",%" PRIu64 "]", first ? "" : ",", hist_low(b), iv->hist[b]);
        first = 0;
    }
    printf("]}\n");
    fflush(stdout);

    iv->number++;
    iv->from_us = end_us;
    iv->sent = iv->acked = iv->mandatory = iv->nacked = iv->outcomes = 0;
    iv->max_backlog = backlog;
    iv->n_lat = 0;
    memset(iv->hist, 0, sizeof iv->hist);
}

int main(int argc, char **argv)
{
    options_t opt;
    int prc = parse_args(argc, argv, &opt);
    if (prc != 0)
        return prc > 0 ? 0 : 2;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    (void)sigaction(SIGINT, &sa, NULL); /* cannot fail for these signals */
    (void)sigaction(SIGTERM, &sa, NULL);

    int rc = 1;
    char nonce[24], hello_id[40];
    snprintf(nonce, sizeof nonce, "%08" PRIx32 "%04x",
             (uint32_t)(wall_ms() & 0xffffffff), (unsigned)getpid() & 0xffffu);
    snprintf(hello_id, sizeof hello_id, "%s-hello", nonce);

    stats_t st;
    memset(&st, 0, sizeof st);
    interval_t iv; /* --interval */
    memset(&iv, 0, sizeof iv);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    agent_t *agents = calloc((size_t)opt.agents, sizeof *agents);
    zmq_pollitem_t *items = calloc((size_t)opt.agents, sizeof *items);
    void *ctx = zmq_ctx_new();
    if (!agents || !items || !ctx) {
        fprintf(stderr, "loadgen: out of memory\n");
        goto done;
    }

    for (int i = 0; i < opt.agents; i++) {
        agent_t *a = &agents[i];
        a->index = i;
        a->next_seq = 1;
        a->next_child = 0;
        snprintf(a->name, sizeof a->name, "bench-school-%d", i);
        a->slots = calloc((size_t)opt.inflight, sizeof *a->slots);
        a->free_slots = calloc((size_t)opt.inflight, sizeof *a->free_slots);
        if (!a->slots || !a->free_slots) {
            fprintf(stderr, "loadgen: out of memory\n");
            goto done;
        }
        for (int k = 0; k < opt.inflight; k++)
            a->free_slots[k] = opt.inflight - 1 - k; /* slot 0 on top */
        a->n_free = (size_t)opt.inflight;

        a->sock = zmq_socket(ctx, ZMQ_DEALER);
        if (!a->sock) {
            fprintf(stderr, "loadgen: zmq_socket: %s\n", zmq_strerror(errno));
            goto done;
        }
        int zero = 0;
        /* The window bounds what is queued; no high-water mark needed (0 = none). */
        if (zmq_setsockopt(a->sock, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
            zmq_setsockopt(a->sock, ZMQ_SNDHWM, &zero, sizeof zero) < 0 ||
            zmq_setsockopt(a->sock, ZMQ_RCVHWM, &zero, sizeof zero) < 0 ||
            zmq_connect(a->sock, opt.endpoint) < 0) {
            fprintf(stderr, "loadgen: connect %s: %s\n", opt.endpoint, zmq_strerror(errno));
            goto done;
        }
        items[i].socket = a->sock;
        items[i].events = ZMQ_POLLIN;
    }

    run_t r;
    memset(&r, 0, sizeof r);
    r.opt = &opt;
    r.nonce = nonce;
    r.hello_id = hello_id;
    r.sb = &sb;
    r.st = &st;
    r.phase = PHASE_HELLO;
    r.measure_from_us = INT64_MAX;
    r.measure_until_us = INT64_MAX;
    r.iv = opt.interval > 0 ? &iv : NULL;

    for (int i = 0; i < opt.agents; i++)
        if (send_hello(&agents[i], &sb, hello_id) < 0)
            goto done;

    int64_t t_start = mono_us();
    int64_t hello_deadline = t_start + (int64_t)HELLO_TIMEOUT_MS * 1000;
    int64_t warmup_end = 0, run_end = 0, drain_deadline = 0;
    int64_t window_from = 0, window_until = 0; /* actual measured window */
    int n_welcomed = 0;
    int blocked = 0; /* a send would have blocked: poll briefly and retry */
    /* --rate: event k is due at sched_t0 + k / rate */
    int64_t sched_t0 = 0, next_due = 0;
    uint64_t sched_k = 0;
    int stalled = 0;          /* a due event found its agent's window full: not caught up */
    uint64_t backlog = 0, max_backlog = 0;
    /* --interval */
    const int64_t interval_us = (int64_t)(opt.interval * 1e6);
    int64_t iv_next = INT64_MAX;

    while (r.phase != PHASE_DONE) {
        int64_t now = mono_us();
        int64_t deadline;
        switch (r.phase) {
        case PHASE_HELLO: deadline = hello_deadline; break;
        case PHASE_WARMUP: deadline = warmup_end; break;
        case PHASE_MEASURE: deadline = run_end < iv_next ? run_end : iv_next; break;
        default: deadline = drain_deadline; break;
        }
        if (opt.rate > 0 && (r.phase == PHASE_WARMUP || r.phase == PHASE_MEASURE) && !stalled &&
            next_due < deadline)
            deadline = next_due; /* the next event falls due (stalled: an answer frees a slot) */
        long timeout_ms = deadline > now ? (long)((deadline - now + 999) / 1000) : 0;
        if (blocked && timeout_ms > 1)
            timeout_ms = 1;
        if (zmq_poll(items, opt.agents, timeout_ms) < 0 && errno != EINTR) {
            fprintf(stderr, "loadgen: zmq_poll: %s\n", zmq_strerror(errno));
            goto done;
        }
        now = mono_us();

        /* Phase changes come first so that replies are counted in the right window. */
        if (g_interrupted && r.phase < PHASE_DRAIN) {
            if (r.phase == PHASE_HELLO) {
                fprintf(stderr, "loadgen: interrupted before the run started\n");
                goto done;
            }
            if (r.phase == PHASE_WARMUP)
                window_from = now;
            if (r.phase == PHASE_MEASURE && r.iv && now > iv.from_us)
                emit_interval(&iv, now, window_from,
                              total_inflight(agents, opt.agents, opt.inflight), backlog);
            r.phase = PHASE_DRAIN;
            window_until = r.measure_until_us = now;
            drain_deadline = now + (int64_t)DRAIN_TIMEOUT_MS * 1000;
        }
        if (r.phase == PHASE_WARMUP && now >= warmup_end) {
            r.phase = PHASE_MEASURE;
            window_from = r.measure_from_us = now;
            run_end = now + (int64_t)(opt.seconds * 1e6);
            if (r.iv) {
                iv.number = 1;
                iv.from_us = now;
                iv.max_backlog = backlog;
                iv_next = now + interval_us;
            }
        }
        if (r.phase == PHASE_MEASURE && r.iv) {
            size_t inflight_now = total_inflight(agents, opt.agents, opt.inflight);
            while (iv_next < run_end && now >= iv_next) {
                emit_interval(&iv, iv_next, window_from, inflight_now, backlog);
                iv_next += interval_us;
            }
            if (now >= run_end && iv.from_us < run_end)
                emit_interval(&iv, run_end, window_from, inflight_now, backlog);
        }
        if (r.phase == PHASE_MEASURE && now >= run_end) {
            r.phase = PHASE_DRAIN;
            window_until = r.measure_until_us = now;
            drain_deadline = now + (int64_t)DRAIN_TIMEOUT_MS * 1000;
        }

        for (int i = 0; i < opt.agents; i++) {
            if ((items[i].revents & ZMQ_POLLIN) && drain_socket(&r, &agents[i], now) < 0)
                goto done;
        }
        if (r.fatal)
            goto done;

        if (r.phase == PHASE_HELLO) {
            n_welcomed = 0;
            for (int i = 0; i < opt.agents; i++)
                n_welcomed += agents[i].welcomed;
            if (n_welcomed == opt.agents) {
                r.phase = PHASE_WARMUP;
                warmup_end = now + (int64_t)(opt.warmup * 1e6);
                sched_t0 = next_due = now;
            } else if (now >= hello_deadline) {
                for (int i = 0; i < opt.agents; i++)
                    if (!agents[i].welcomed)
                        fprintf(stderr, "loadgen: %s: no welcome within %d s from %s "
                                "(is the broker running there, and the agent configured?)\n",
                                agents[i].name, HELLO_TIMEOUT_MS / 1000, opt.endpoint);
                goto done;
            } else {
                continue;
            }
        }

        if (r.phase == PHASE_DRAIN) {
            size_t left = total_inflight(agents, opt.agents, opt.inflight);
            if (left == 0) {
                r.phase = PHASE_DONE;
            } else if (now >= drain_deadline) {
                st.unanswered = left;
                r.phase = PHASE_DONE;
            }
            continue;
        }

        blocked = 0;
        int64_t at_ms = wall_ms();
        if (opt.rate > 0) {
            /* Open loop: send every event that is due, in order, while its agent has a
             * free slot. One held back by a full window (stalled) and those after it
             * until the schedule is caught up count their latency from when they were
             * due; the others from their send. */
            for (;;) {
                int64_t t = mono_us();
                int64_t due = sched_t0 + (int64_t)((double)sched_k * 1e6 / opt.rate);
                next_due = due;
                if (due > t) {
                    stalled = 0;
                    break;
                }
                agent_t *a = &agents[sched_k % (uint64_t)opt.agents];
                if (a->n_free == 0) {
                    stalled = 1;
                    break;
                }
                int s = send_event(a, &sb, nonce, stalled ? due : t, at_ms, opt.mandatory_every,
                               opt.children);
                if (s < 0)
                    goto done;
                if (s > 0) {
                    blocked = stalled = 1;
                    break;
                }
                sched_k++;
                st.sent++;
                if (r.iv && r.phase == PHASE_MEASURE)
                    iv.sent++;
            }
            backlog = 0;
            if (stalled) {
                uint64_t due_n =
                    (uint64_t)((double)(mono_us() - sched_t0) * opt.rate / 1e6) + 1;
                backlog = due_n > sched_k ? due_n - sched_k : 0;
            }
            if (backlog > max_backlog)
                max_backlog = backlog;
            if (backlog > iv.max_backlog)
                iv.max_backlog = backlog;
            continue;
        }

        /* Closed loop (warm-up or measure): refill every agent's window. */
        for (int i = 0; i < opt.agents; i++) {
            agent_t *a = &agents[i];
            while (a->n_free > 0) {
                int s = send_event(a, &sb, nonce, mono_us(), at_ms, opt.mandatory_every,
                               opt.children);
                if (s < 0)
                    goto done;
                if (s > 0) {
                    blocked = 1;
                    break;
                }
                st.sent++;
                if (r.iv && r.phase == PHASE_MEASURE)
                    iv.sent++;
            }
        }
    }

    /* ---- report ---- */
    double secs = (double)(window_until - window_from) / 1e6;
    double eps = secs > 0 ? (double)st.acked / secs : 0.0;
    if (st.n_lat)
        qsort(st.lat, st.n_lat, sizeof *st.lat, cmp_u32);
    double p50 = percentile_ms(st.lat, st.n_lat, 0.50);
    double p99 = percentile_ms(st.lat, st.n_lat, 0.99);

    const int extended = opt.rate > 0 || opt.interval > 0 || opt.mandatory_every > 0;
    FILE *human = opt.json ? stderr : stdout;
    char loop[64] = "";
    if (opt.rate > 0)
        snprintf(loop, sizeof loop, ", open loop at %.0f events/s", opt.rate);
    fprintf(human,
            "loadgen: %d agent%s x %d in flight%s, %.2f s measured: %.0f events/s, "
            "p50 %.3f ms, p99 %.3f ms, acked %" PRIu64 ", nacked %" PRIu64 "\n",
            opt.agents, opt.agents == 1 ? "" : "s", opt.inflight, loop, secs, eps, p50, p99,
            st.acked, st.nacked);
    if (extended)
        fprintf(stderr, "loadgen: sent %" PRIu64 ", of which mandatory_report acked %" PRIu64
                ", outcomes confirmed %" PRIu64 ", most events due and not sent %" PRIu64
                ", due and never sent %" PRIu64 "\n",
                st.sent, st.mandatory, st.outcomes, max_backlog, backlog);
    else if (st.outcomes)
        fprintf(stderr, "loadgen: %" PRIu64 " outcomes confirmed\n", st.outcomes);
    for (size_t i = 0; i < st.n_codes; i++)
        fprintf(stderr, "loadgen: nack %s x %" PRIu64 ", e.g.: %s\n", st.codes[i].code,
                st.codes[i].n, st.codes[i].error);
    if (st.other_codes)
        fprintf(stderr, "loadgen: %" PRIu64 " more nacks with other codes\n", st.other_codes);
    if (st.duplicates)
        fprintf(stderr, "loadgen: %" PRIu64 " acks said duplicate:true for fresh ids\n",
                st.duplicates);
    if (st.unanswered)
        fprintf(stderr, "loadgen: %" PRIu64 " events were never answered (waited %d s)\n",
                st.unanswered, DRAIN_TIMEOUT_MS / 1000);
    if (st.unexpected)
        fprintf(stderr, "loadgen: %" PRIu64 " replies were not understood or matched no "
                "event in flight (ignored)\n", st.unexpected);
    if (opt.json) {
        printf("{\"events_per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"acked\":%" PRIu64
               ",\"nacked\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"unanswered\":%" PRIu64
               ",\"agents\":%d,\"inflight\":%d,\"seconds\":%.3f",
               eps, p50, p99, st.acked, st.nacked, st.duplicates, st.unanswered, opt.agents,
               opt.inflight, secs);
        if (extended)
            printf(",\"rate\":%.1f,\"sent\":%" PRIu64 ",\"mandatory\":%" PRIu64
                   ",\"outcomes\":%" PRIu64 ",\"max_backlog\":%" PRIu64 ",\"backlog\":%" PRIu64,
                   opt.rate, st.sent, st.mandatory, st.outcomes, max_backlog, backlog);
        printf("}\n");
    }
    fflush(stdout);

    if (st.acked == 0)
        fprintf(stderr, "loadgen: FAIL: nothing was acknowledged in the measured window\n");
    else if (st.nacked || st.duplicates || st.unanswered)
        fprintf(stderr, "loadgen: FAIL: the broker refused, doubled or lost events (above)\n");
    else
        rc = 0;

done:
    if (agents) {
        for (int i = 0; i < opt.agents; i++) {
            if (agents[i].sock)
                zmq_close(agents[i].sock);
            free(agents[i].slots);
            free(agents[i].free_slots);
        }
    }
    if (ctx)
        zmq_ctx_term(ctx);
    free(agents);
    free(items);
    free(st.lat);
    free(iv.lat);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}
