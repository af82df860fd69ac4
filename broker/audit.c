/* audit.c — verifying the whole store; see audit.h. */
#include "audit.h"

#include "assign.h"
#include "case.h"
#include "register.h"

static int indexes_txn(store_txn_t *t, void *ud)
{
    trail_report_t *r = ud;
    int rc = case_verify_indexes(t, r->problem, sizeof r->problem, &r->index_entries);
    if (rc == 0)
        rc = assign_verify_indexes(t, r->problem, sizeof r->problem, &r->index_entries);
    if (rc == 0)
        rc = register_verify(t, r->problem, sizeof r->problem, &r->index_entries);
    return rc == 1 ? 0 : rc; /* a problem is in r->problem */
}

int audit_verify(store_t *st, const trail_anchor_t *anchor, trail_report_t *r)
{
    int rc = trail_verify(st, anchor, r);
    if (rc != 0)
        return rc;
    store_rc_t s = store_read_long(st, indexes_txn, r);
    if (s != STORE_OK && s != STORE_NOTFOUND)
        return STORE_CORRUPTED;
    return r->problem[0] ? 1 : 0;
}
