/*
 * audit.h — verifying the whole store, as `carehubd verify --data DIR` and a
 * supervisor's query what:"verify" do: first the trail (trail_verify: the
 * chain, its key mark, an anchor when given, every event, case and assignment
 * against its last trail record), then every index against the records it
 * names, by the module that owns it: open_cases and idem (case.h),
 * case_assign, deadlines and outcomes (assign.h). Read transactions only, so
 * it may run in a job's thread beside the loop.
 */
#ifndef CAREHUB_AUDIT_H
#define CAREHUB_AUDIT_H

#include "store.h"
#include "trail.h"

/* 0 intact; 1 with r->problem naming the first problem; a store_rc_t when the
 * store cannot be read. r->index_entries counts the index entries checked. */
int audit_verify(store_t *st, const trail_anchor_t *anchor, trail_report_t *r);

#endif
