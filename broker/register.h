/*
 * register.h — the child directors' register and visit rhythm (PROTOCOL §9,
 * seed task 8: 一人一档, contact monthly, home visit quarterly, more often for
 * children at risk).
 *
 * The register: one entry per child id, keyed like the case join (the keyed
 * child hash with privacy on, store_txn_child_key), in STORE_DB_REGISTER:
 *
 *   child key → {director, village, risk, active, rhythm, enrolled, contact,
 *                visit, c_due, v_due, c_rem, v_rem, c_fired, v_fired,
 *                enrol_case, visit_case, updated, entry}
 *
 * `entry` is the newest enrolment's body, sealed like every body (the child key
 * as associated data); village, director and risk are in clear for the
 * figures. `contact` / `visit` are the times (`at`, never after the broker
 * received the event) of the newest contact (a home visit counts) and home
 * visit, 0 when none. `enrolled` is when the counting started: the first
 * enrolment, or the one that made an inactive child active again.
 *
 * The rhythm: the first `rhythms` rule (config.h) matching the newest enrolment
 * (its name is kept in `rhythm`) says how often each kind is due. For kind k
 * (contact, home visit) the due time is base + every, base the later of
 * `enrolled` and the newest of that kind; after an overdue fired at D with
 * nothing recorded since, the next is D + every. Each due time and each
 * reminder (due - remind_before, when that is after the base) is one typed
 * timer in the deadline index (assign.h: ASSIGN_DUE_CONTACT … REMIND_VISIT,
 * id: the child key): the loop wakes for the first of all timers and nothing
 * scans the register per tick. A visit moves the timers of its kinds; an
 * enrolment with active:false removes them; a new enrolment of an active child
 * updates the entry and does not move them (PROTOCOL §9).
 *
 * When a due time passes: an event of type visit_overdue (agent "broker",
 * body {child:{id}, village, director, kind, due, last?}) is stored and routed
 * through the workflows like any event, in the same transaction that moves the
 * timer to the next period — so a crash records it once or not at all, and
 * its idempotency ref ("od-" kind due entry) makes a second recording a
 * duplicate. When a reminder's time passes, {op:"reminder", id, child, kind,
 * due} waits in `outcomes` for the director's agent, pushed after the commit
 * and after each hello until `received`; a visit that moves the due time
 * withdraws it.
 *
 * Rules changed in the config: at start, when the rules' fingerprint differs
 * from the one the register was scheduled with (counters "register.rhythms"),
 * every entry's rule and timers are recomputed in one write transaction.
 *
 * Everything but register_rules_apply runs in the caller's transaction and
 * returns 0 or a negative store_rc_t.
 */
#ifndef CAREHUB_REGISTER_H
#define CAREHUB_REGISTER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "assign.h"
#include "case.h"
#include "config.h"
#include "store.h"

/* The agent id of the events the broker records itself (visit_overdue); no
 * configured agent may have it (config_agents.c). */
#define REGISTER_AGENT "broker"
/* Reminder ids start with it ("rm-c-<due>-<16 hex>"): they share `outcomes`. */
#define REGISTER_REMINDER_PREFIX "rm-"
/* Register entry ids shown to supervisors: "rg-" + 24 hex (not the child id). */
#define REGISTER_ENTRY_ID_MAX 28
/* Village names: up to 200 characters of UTF-8. */
#define REGISTER_TEXT_MAX 804

typedef enum { REGISTER_CONTACT = 0, REGISTER_VISIT = 1, REGISTER_KINDS } register_kind_t;
/* "contact", "home_visit". */
const char *register_kind_name(register_kind_t k);

/* A stored event of type enrolment or visit (others: nothing): update the
 * register and the child's timers. body is the validated body. */
int register_on_event(const config_t *cfg, store_txn_t *t, const case_event_t *it,
                      const json_t *body, int64_t now, assign_effects_t *fx);

/* The deadline index's handlers (assign_deadline.c's table): a due time or a
 * reminder of the child keyed `id` fell due at `due`. Each removes its timer. */
int register_due_contact(const config_t *cfg, store_txn_t *t, const char *id, int64_t due,
                         int64_t now, assign_effects_t *fx, int *fired);
int register_due_visit(const config_t *cfg, store_txn_t *t, const char *id, int64_t due,
                       int64_t now, assign_effects_t *fx, int *fired);
int register_remind_contact(const config_t *cfg, store_txn_t *t, const char *id, int64_t due,
                            int64_t now, assign_effects_t *fx, int *fired);
int register_remind_visit(const config_t *cfg, store_txn_t *t, const char *id, int64_t due,
                          int64_t now, assign_effects_t *fx, int *fired);

/* At start: recompute every entry's rule and timers when the `rhythms` differ
 * from those the register was scheduled with (nothing to do otherwise: no
 * walk). 0, or -1 (logged). *recomputed: entries rewritten. */
int register_rules_apply(store_t *st, const config_t *cfg, int64_t now, size_t *recomputed);

/* ---- reading: figures, a director's due list, the spot-check sample ---------------- */

/* One row of query what:"register" (PROTOCOL §9). */
typedef struct {
    char village[REGISTER_TEXT_MAX];
    char director[CAREHUB_ID_MAX + 1];
    uint64_t children, contacted, visited, contact_overdue, visit_overdue, elevated;
} register_row_t;

/* Figures per (village, director) at `now`, sorted, optionally filtered (NULL
 * or "": any). *rows is the caller's to free. */
int register_figures(store_txn_t *t, const config_t *cfg, int64_t now, const char *village,
                     const char *director, register_row_t **rows, size_t *n);

/* One row of what:"register_due": a child of the director due by now + within. */
typedef struct {
    char child[CAREHUB_ID_MAX + 1];
    char name[REGISTER_TEXT_MAX];
    char village[REGISTER_TEXT_MAX];
    register_kind_t kind;
    int64_t due, last; /* last 0: none since the enrolment */
} register_due_t;

int register_due_list(store_txn_t *t, const config_t *cfg, const char *director, int64_t now,
                      int64_t within, register_due_t **rows, size_t *n);

/* One drawn entry of what:"register_sample". */
typedef struct {
    char entry[REGISTER_ENTRY_ID_MAX];
    char village[REGISTER_TEXT_MAX];
    char director[CAREHUB_ID_MAX + 1];
    char risk[16];
    char category[128];  /* the categories, space-separated */
    int active;
    int64_t enrolled, contact, visit, c_due, v_due;
    char enrol_case[STORE_ID_MAX], visit_case[STORE_ID_MAX];
    unsigned char rank[16];
} register_sample_t;

/* Draw up to n entries (filters as above): those ranking first by
 * BLAKE2b(seed, entry id). *population: how many were eligible. */
int register_sample(store_txn_t *t, const char *seed, size_t n, const char *village,
                    const char *director, register_sample_t **rows, size_t *count,
                    size_t *population);

/* Verification (a read transaction): every entry decodes, and each of its due
 * times and reminders is in the deadline index. 0, 1 with the problem, or a
 * store_rc_t. */
int register_verify(store_txn_t *t, char *problem, size_t size, unsigned long long *entries);

#endif
