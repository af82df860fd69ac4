/*
 * assign_verify.c — verification of the indexes the assignment module owns,
 * each entry against the records it names (see assign.h, assign_verify_indexes):
 * case_assign, every assignment's own entry in it, deadlines, outcomes.
 */
#include "assign_int.h"

#include <string.h>

#include "register.h"
#include "util.h"

typedef struct {
    store_txn_t *t;
    char *problem;
    size_t size;
    unsigned long long *entries;
    const char *want;   /* reverse check: the assignment id looked for */
    int found;
} chk_t;

#define fail(c, db, k, kl, what) store_entry_problem((c)->problem, (c)->size, db, k, kl, what)

/* 0 when db holds key id, 1 when not, or a store_rc_t. */
static int absent(store_txn_t *t, store_db_t db, const char *id)
{
    const void *v;
    size_t vl;
    int rc = store_get(t, db, id, strlen(id), &v, &vl);
    return rc == STORE_NOTFOUND ? 1 : rc;
}

/* case_assign: case → assignment, an assignment of that case. */
static int check_case_assign(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    chk_t *c = ud;
    char id[STORE_ID_MAX], of[STORE_ID_MAX];
    ++*c->entries;
    if (store_copy_id(v, vl, id, sizeof id))
        return fail(c, STORE_DB_CASE_ASSIGN, k, kl, "names no assignment id");
    int rc = assign_case_of(c->t, id, of);
    if (rc == STORE_NOTFOUND)
        return fail(c, STORE_DB_CASE_ASSIGN, k, kl, "names an assignment that is not there");
    if (rc)
        return rc;
    if (strlen(of) != kl || memcmp(of, k, kl) != 0)
        return fail(c, STORE_DB_CASE_ASSIGN, k, kl, "names an assignment of another case");
    return 0;
}

static int find_value(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)k;
    (void)kl;
    chk_t *c = ud;
    if (vl == strlen(c->want) && memcmp(v, c->want, vl) == 0) {
        c->found = 1;
        return STORE_EACH_STOP;
    }
    return 0;
}

/* assignments: each one listed under its case, which exists. */
static int check_assignment(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    chk_t *c = ud;
    as_t a;
    char id[STORE_ID_MAX];
    if (store_copy_id(k, kl, id, sizeof id) || assign_rec_decode(c->t, v, vl, &a))
        return fail(c, STORE_DB_ASSIGNMENTS, k, kl, "does not decode");
    int rc = absent(c->t, STORE_DB_CASES, a.case_id);
    if (rc == 1)
        return fail(c, STORE_DB_ASSIGNMENTS, k, kl, "is of a case that is not there");
    c->want = id;
    c->found = 0;
    if (rc || (rc = store_each(c->t, STORE_DB_CASE_ASSIGN, a.case_id, strlen(a.case_id), 1,
                               find_value, c)))
        return rc;
    return c->found ? 0 : fail(c, STORE_DB_ASSIGNMENTS, k, kl, "is missing from its case's case_assign");
}

/* deadlines: due + kind + id, for an assignment (steps) or a case (quiet close, purge). */
static int check_deadline(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    chk_t *c = ud;
    int kind;
    char id[ASSIGN_DUE_ID_MAX];
    ++*c->entries;
    if (assign_due_key_parse(k, kl, &kind, id))
        return fail(c, STORE_DB_DEADLINES, (const char *)k + 8, kl > 8 ? kl - 8 : 0, "is malformed");
    store_db_t of = kind == ASSIGN_DUE_STEP    ? STORE_DB_ASSIGNMENTS
                    : kind >= ASSIGN_DUE_CONTACT ? STORE_DB_REGISTER
                                                 : STORE_DB_CASES;
    int rc = absent(c->t, of, id);
    if (rc == 1)
        return fail(c, STORE_DB_DEADLINES, id, strlen(id), "is for a record that is not there");
    return rc;
}

/* outcomes: agent NUL "out-" + event id, for an event that is there; or agent
 * NUL a reminder id (register.h), which names no record. */
static int check_outcome(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    (void)v;
    (void)vl;
    chk_t *c = ud;
    const char *nul = memchr(k, '\0', kl);
    ++*c->entries;
    size_t off = nul ? (size_t)(nul - (const char *)k) + 1 : kl;
    char oid[STORE_ID_MAX + 8];
    if (nul && kl - off > 3 && memcmp(nul + 1, REGISTER_REMINDER_PREFIX, 3) == 0)
        return 0;
    if (!nul || kl - off <= 4 || kl - off >= sizeof oid || memcmp(nul + 1, "out-", 4) != 0)
        return fail(c, STORE_DB_OUTCOMES, k, kl, "is malformed");
    memcpy(oid, nul + 1, kl - off);
    oid[kl - off] = '\0';
    int rc = absent(c->t, STORE_DB_EVENTS, oid + 4);
    if (rc == 1)
        return fail(c, STORE_DB_OUTCOMES, k, kl, "is for an event that is not there");
    return rc;
}

int assign_verify_indexes(store_txn_t *t, char *problem, size_t size, unsigned long long *entries)
{
    chk_t c = {t, problem, size, entries, NULL, 0};
    static const struct {
        store_db_t db;
        store_each_fn fn;
    } WALKS[] = {
        {STORE_DB_CASE_ASSIGN, check_case_assign},
        {STORE_DB_ASSIGNMENTS, check_assignment},
        {STORE_DB_DEADLINES, check_deadline},
        {STORE_DB_OUTCOMES, check_outcome},
    };
    problem[0] = '\0';
    int rc = 0;
    for (size_t i = 0; !rc && !problem[0] && i < UTIL_ARRAY_LEN(WALKS); i++)
        rc = store_each(t, WALKS[i].db, NULL, 0, 0, WALKS[i].fn, &c);
    return rc ? rc : problem[0] != '\0';
}
