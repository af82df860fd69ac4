/*
 * register_int.h — what the register's files share (register.c: the record,
 * events, timers, rules; register_read.c: figures, due lists, the sample, the
 * verification). Nothing outside broker/register*.c includes it; the API is
 * register.h.
 */
#ifndef CAREHUB_REGISTER_INT_H
#define CAREHUB_REGISTER_INT_H

#include <msgpack.h>

#include "register.h"

/* A register entry, decoded (register.h has the record's fields). */
typedef struct {
    char director[CAREHUB_ID_MAX + 1];
    char village[REGISTER_TEXT_MAX];
    char risk[16];
    char rhythm[130];       /* the rule's name, "" when none matched */
    int active;
    int64_t enrolled, updated;
    int64_t last[REGISTER_KINDS];  /* newest recorded, 0 none */
    int64_t due[REGISTER_KINDS];   /* the timer set, 0 none */
    int64_t rem[REGISTER_KINDS];   /* the reminder's timer, 0 none (or sent) */
    int64_t fired[REGISTER_KINDS]; /* the last overdue recorded for this base, 0 none */
    int64_t owed[REGISTER_KINDS];  /* when the current period fell or falls due (not moved by
                                    * the overdue notices after it, nor by an enrolment update) */
    char enrol_case[STORE_ID_MAX], visit_case[STORE_ID_MAX];
    unsigned char *entry;   /* the sealed enrolment body (with_entry: malloc'd) */
    size_t entry_len;
} reg_t;

/* Decode a record (with_entry: copy the sealed enrolment out). 0 or STORE_CORRUPTED. */
int reg_decode(const void *v, size_t vl, reg_t *r, int with_entry);
void reg_free(reg_t *r);
int reg_put(store_txn_t *t, const char *key, const reg_t *r);
/* "rg-" + 24 hex of the child key's hash. */
void reg_entry_id(const char *key, char out[REGISTER_ENTRY_ID_MAX]);
/* Open the sealed enrolment into body and unpack it into u (a map); close
 * with reg_entry_close whatever it returned. 0 or STORE_CORRUPTED. */
int reg_entry_open(store_txn_t *t, const char *key, const reg_t *r, msgpack_sbuffer *body,
                   msgpack_unpacked *u);
void reg_entry_close(msgpack_sbuffer *body, msgpack_unpacked *u);
/* The configured rule of that name, or NULL. */
const config_rhythm_t *reg_rule(const config_t *cfg, const char *name);
/* When kind k is next due after `from` under the rule: its every (contact_every,
 * visit_every) after from, in clock time or working days (config_deadline). */
int64_t reg_next(const config_t *cfg, const config_rhythm_t *rule, register_kind_t k,
                 int64_t from);
/* What kind k's due time counts from: the later of the enrolment and the newest of k. */
int64_t reg_base(const reg_t *r, register_kind_t k);
/* When kind k is (or was) due for the current period: owed, else the timer. */
int64_t reg_owed(const reg_t *r, register_kind_t k);
/* store_fn: 0 when the rules mark equals the 32-byte fingerprint ud, else STORE_NOTFOUND. */
int reg_rules_same(store_txn_t *t, void *ud);

#endif
