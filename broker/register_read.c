/*
 * register_read.c — reading the register (register.h): the supervisors'
 * figures per village and director, a director's list of children due, the
 * yearly spot-check sample, and the verification of the register's timers.
 * Each is one walk of the register in the caller's transaction.
 */
#include "register.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "register_int.h"
#include "util.h"

/* ---- figures ------------------------------------------------------------------------------ */

typedef struct {
    const config_t *cfg;
    int64_t now;
    const char *village, *director;
    register_row_t *rows;
    size_t n, cap;
    hmap_t by;  /* village NUL director → row index + 1 */
    int rc;
} fig_ctx_t;

static size_t row_key(char *buf, size_t size, const char *village, const char *director)
{
    size_t a = strlen(village), b = strlen(director);
    if (a + b + 1 > size)
        return 0;
    memcpy(buf, village, a);
    buf[a] = '\0';
    memcpy(buf + a + 1, director, b);
    return a + 1 + b;
}

static int row_eq(void *ctx, uintptr_t val, const void *key, size_t len)
{
    fig_ctx_t *c = ctx;
    const register_row_t *r = &c->rows[val - 1];
    char buf[REGISTER_TEXT_MAX + CAREHUB_ID_MAX + 2];
    size_t n = row_key(buf, sizeof buf, r->village, r->director);
    return n == len && memcmp(buf, key, len) == 0;
}

static int filtered_out(const char *village, const char *director, const reg_t *r)
{
    return (village && village[0] && strcmp(village, r->village) != 0) ||
           (director && director[0] && strcmp(director, r->director) != 0);
}

static int fig_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    fig_ctx_t *c = ud;
    reg_t r;
    if (reg_decode(v, vl, &r, 0))
        return STORE_CORRUPTED;
    if (!r.active || filtered_out(c->village, c->director, &r))
        return 0;
    char key[REGISTER_TEXT_MAX + CAREHUB_ID_MAX + 2];
    size_t kn = row_key(key, sizeof key, r.village, r.director);
    uintptr_t at = hmap_get(&c->by, key, kn);
    if (!at) {
        if (c->n == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 64;
            c->rows = xrealloc(c->rows, c->cap * sizeof *c->rows);
        }
        register_row_t *row = &c->rows[c->n++];
        memset(row, 0, sizeof *row);
        util_fmt(row->village, sizeof row->village, "%s", r.village);
        util_fmt(row->director, sizeof row->director, "%s", r.director);
        at = c->n;
        hmap_put(&c->by, key, kn, at);
    }
    register_row_t *row = &c->rows[at - 1];
    row->children++;
    row->elevated += strcmp(r.risk, "elevated") == 0;
    const config_rhythm_t *rule = reg_rule(c->cfg, r.rhythm);
    if (!rule)
        return 0; /* no rhythm: counted, never due */
    /* contacted / visited: one recorded within the last period of the rhythm;
     * overdue: the current period's due time (as scheduled: an enrolment
     * update moves none) has passed */
    uint64_t *done[REGISTER_KINDS] = {&row->contacted, &row->visited};
    uint64_t *late[REGISTER_KINDS] = {&row->contact_overdue, &row->visit_overdue};
    for (int kd = 0; kd < REGISTER_KINDS; kd++) {
        if (r.last[kd] && c->now < reg_next(c->cfg, rule, (register_kind_t)kd, r.last[kd]))
            ++*done[kd];
        int64_t owed = reg_owed(&r, (register_kind_t)kd);
        if (owed && owed <= c->now)
            ++*late[kd];
    }
    return 0;
}

static int row_cmp(const void *a, const void *b)
{
    const register_row_t *x = a, *y = b;
    int d = strcmp(x->village, y->village);
    return d ? d : strcmp(x->director, y->director);
}

int register_figures(store_txn_t *t, const config_t *cfg, int64_t now, const char *village,
                     const char *director, register_row_t **rows, size_t *n)
{
    fig_ctx_t c = {.cfg = cfg, .now = now, .village = village, .director = director};
    hmap_init(&c.by, row_eq, &c);
    int rc = store_each(t, STORE_DB_REGISTER, NULL, 0, 0, fig_visit, &c);
    hmap_free(&c.by);
    if (rc) {
        free(c.rows);
        return rc;
    }
    if (c.n)
        qsort(c.rows, c.n, sizeof *c.rows, row_cmp);
    *rows = c.rows;
    *n = c.n;
    return 0;
}

/* ---- a director's children due ---------------------------------------------------------- */

typedef struct {
    store_txn_t *t;
    const config_t *cfg;
    const char *director;
    int64_t until;
    register_due_t *rows;
    size_t n, cap;
} due_ctx_t;

static int due_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    due_ctx_t *c = ud;
    reg_t r;
    if (reg_decode(v, vl, &r, 0))
        return STORE_CORRUPTED;
    if (!r.active || strcmp(r.director, c->director) != 0)
        return 0;
    const config_rhythm_t *rule = reg_rule(c->cfg, r.rhythm);
    char key[ASSIGN_DUE_ID_MAX];
    if (!rule || kl >= sizeof key)
        return 0;
    memcpy(key, k, kl);
    key[kl] = '\0';
    int rc = 0;
    for (int kd = 0; kd < REGISTER_KINDS && !rc; kd++) {
        /* the current period's due time, whatever overdue notices fired since */
        int64_t due = reg_owed(&r, (register_kind_t)kd);
        if (!due || due > c->until)
            continue;
        if (c->n == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 64;
            c->rows = xrealloc(c->rows, c->cap * sizeof *c->rows);
        }
        register_due_t *row = &c->rows[c->n];
        memset(row, 0, sizeof *row);
        reg_t full;
        msgpack_sbuffer body;
        msgpack_unpacked u;
        rc = reg_decode(v, vl, &full, 1);
        if (!rc)
            rc = reg_entry_open(c->t, key, &full, &body, &u);
        else
            msgpack_sbuffer_init(&body), msgpack_unpacked_init(&u);
        if (!rc) {
            const msgpack_object *child = frame_map_get(&u.data, "child");
            const char *s;
            size_t n;
            if (child && frame_str(frame_map_get(child, "id"), &s, &n))
                util_fmt(row->child, sizeof row->child, "%.*s", (int)n, s);
            if (child && frame_str(frame_map_get(child, "name"), &s, &n))
                util_fmt(row->name, sizeof row->name, "%.*s", (int)n, s);
        }
        reg_entry_close(&body, &u);
        reg_free(&full);
        if (rc)
            break;
        util_fmt(row->village, sizeof row->village, "%s", r.village);
        row->kind = (register_kind_t)kd;
        row->due = due;
        row->last = r.last[kd] >= r.enrolled ? r.last[kd] : 0; /* none since the enrolment */
        c->n++;
    }
    return rc;
}

static int due_cmp(const void *a, const void *b)
{
    const register_due_t *x = a, *y = b;
    if (x->due != y->due)
        return x->due < y->due ? -1 : 1;
    return strcmp(x->child, y->child);
}

int register_due_list(store_txn_t *t, const config_t *cfg, const char *director, int64_t now,
                      int64_t within, register_due_t **rows, size_t *n)
{
    due_ctx_t c = {t, cfg, director, now + within, NULL, 0, 0};
    int rc = store_each(t, STORE_DB_REGISTER, NULL, 0, 0, due_visit, &c);
    if (rc) {
        if (c.rows)
            sodium_memzero(c.rows, c.cap * sizeof *c.rows);
        free(c.rows);
        return rc;
    }
    if (c.n)
        qsort(c.rows, c.n, sizeof *c.rows, due_cmp);
    *rows = c.rows;
    *n = c.n;
    return 0;
}

/* ---- the spot-check sample -------------------------------------------------------------- */

typedef struct {
    store_txn_t *t;
    const char *seed;
    size_t want;
    const char *village, *director;
    register_sample_t *rows; /* the best `want` so far, by rank */
    size_t n, population;
} sample_ctx_t;

static int sample_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    sample_ctx_t *c = ud;
    reg_t r;
    char key[ASSIGN_DUE_ID_MAX];
    if (kl >= sizeof key || reg_decode(v, vl, &r, 0))
        return STORE_CORRUPTED;
    if (filtered_out(c->village, c->director, &r))
        return 0;
    c->population++;
    memcpy(key, k, kl);
    key[kl] = '\0';
    register_sample_t s;
    memset(&s, 0, sizeof s);
    reg_entry_id(key, s.entry);
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, sizeof s.rank);
    crypto_generichash_update(&h, (const unsigned char *)c->seed, strlen(c->seed) + 1);
    crypto_generichash_update(&h, (const unsigned char *)s.entry, strlen(s.entry));
    crypto_generichash_final(&h, s.rank, sizeof s.rank);
    size_t pos = c->n;
    while (pos > 0 && memcmp(s.rank, c->rows[pos - 1].rank, sizeof s.rank) < 0)
        pos--;
    if (pos >= c->want)
        return 0;
    util_fmt(s.village, sizeof s.village, "%s", r.village);
    util_fmt(s.director, sizeof s.director, "%s", r.director);
    util_fmt(s.risk, sizeof s.risk, "%s", r.risk);
    util_fmt(s.enrol_case, sizeof s.enrol_case, "%s", r.enrol_case);
    util_fmt(s.visit_case, sizeof s.visit_case, "%s", r.visit_case);
    s.active = r.active;
    s.enrolled = r.enrolled;
    s.contact = r.last[REGISTER_CONTACT];
    s.visit = r.last[REGISTER_VISIT];
    s.c_due = r.active ? reg_owed(&r, REGISTER_CONTACT) : 0;
    s.v_due = r.active ? reg_owed(&r, REGISTER_VISIT) : 0;
    /* the categories, from the sealed enrolment */
    reg_t full;
    int rc = reg_decode(v, vl, &full, 1);
    msgpack_sbuffer body;
    msgpack_unpacked u;
    if (!rc)
        rc = reg_entry_open(c->t, key, &full, &body, &u);
    else
        msgpack_sbuffer_init(&body), msgpack_unpacked_init(&u);
    if (!rc) {
        const msgpack_object *child = frame_map_get(&u.data, "child");
        const msgpack_object *cat = child ? frame_map_get(child, "category") : NULL;
        for (uint32_t i = 0; cat && cat->type == MSGPACK_OBJECT_ARRAY && i < cat->via.array.size; i++) {
            const char *p;
            size_t n;
            if (frame_str(&cat->via.array.ptr[i], &p, &n)) {
                size_t at = strlen(s.category);
                util_fmt(s.category + at, sizeof s.category - at, "%s%.*s", at ? " " : "", (int)n, p);
            }
        }
    }
    reg_entry_close(&body, &u);
    reg_free(&full);
    if (rc)
        return rc;
    if (c->n == c->want)
        c->n--; /* the last one drops out */
    memmove(&c->rows[pos + 1], &c->rows[pos], (c->n - pos) * sizeof *c->rows);
    c->rows[pos] = s;
    c->n++;
    return 0;
}

int register_sample(store_txn_t *t, const char *seed, size_t n, const char *village,
                    const char *director, register_sample_t **rows, size_t *count,
                    size_t *population)
{
    sample_ctx_t c = {t, seed, n ? n : 1, village, director, NULL, 0, 0};
    c.rows = xcalloc(c.want, sizeof *c.rows);
    int rc = store_each(t, STORE_DB_REGISTER, NULL, 0, 0, sample_visit, &c);
    if (rc) {
        free(c.rows);
        return rc;
    }
    *rows = c.rows;
    *count = c.n;
    *population = c.population;
    return 0;
}

/* ---- verification ----------------------------------------------------------------------- */

typedef struct {
    store_txn_t *t;
    char *problem;
    size_t size;
    unsigned long long *entries;
} ver_ctx_t;

static int has_timer(store_txn_t *t, int64_t due, assign_due_kind_t kind, const char *key)
{
    return assign_due_has(t, kind, key, due);
}

static int ver_visit(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    ver_ctx_t *c = ud;
    reg_t r;
    char key[ASSIGN_DUE_ID_MAX];
    ++*c->entries;
    if (kl >= sizeof key || reg_decode(v, vl, &r, 0))
        return store_entry_problem(c->problem, c->size, STORE_DB_REGISTER, k, kl, "does not decode");
    memcpy(key, k, kl);
    key[kl] = '\0';
    static const assign_due_kind_t DK[REGISTER_KINDS] = {ASSIGN_DUE_CONTACT, ASSIGN_DUE_VISIT};
    static const assign_due_kind_t RK[REGISTER_KINDS] = {ASSIGN_DUE_REMIND_CONTACT,
                                                         ASSIGN_DUE_REMIND_VISIT};
    for (int kd = 0; kd < REGISTER_KINDS; kd++) {
        int rc;
        if (r.due[kd] && (rc = has_timer(c->t, r.due[kd], DK[kd], key)))
            return rc == STORE_NOTFOUND ? store_entry_problem(c->problem, c->size, STORE_DB_REGISTER,
                                                              k, kl, "has a due time missing from deadlines")
                                        : rc;
        if (r.rem[kd] && (rc = has_timer(c->t, r.rem[kd], RK[kd], key)))
            return rc == STORE_NOTFOUND ? store_entry_problem(c->problem, c->size, STORE_DB_REGISTER,
                                                              k, kl, "has a reminder missing from deadlines")
                                        : rc;
    }
    return 0;
}

int register_verify(store_txn_t *t, char *problem, size_t size, unsigned long long *entries)
{
    ver_ctx_t c = {t, problem, size, entries};
    problem[0] = '\0';
    int rc = store_each(t, STORE_DB_REGISTER, NULL, 0, 0, ver_visit, &c);
    return rc ? rc : problem[0] != '\0';
}
