/*
 * silence.h — silences (PROTOCOL §10): a supervisor holds back the assignments
 * and notices of the events that match a workflow-style `match` for a while
 * (an absence wave on a school trip, a holiday the calendar does not know).
 *
 * A silence is one record in STORE_DB_SILENCES, keyed by its id ("sil-" and
 * six or more digits, in the order made; the counter is counters["silence.seq"]):
 *
 *   id → {id, match, starts, ends, reason, author, created, expired?}
 *
 * `match` is the wire's map as checked and normalised (values as text, lists
 * as lists of text, comparisons as their text ">=3"): the same form is parsed
 * again when the silences are loaded. `expired` is when a supervisor ended it
 * early (silence_expire). The store is the truth: nothing is kept in memory
 * between turns, so a restart keeps them.
 *
 * A silence is active for an event the broker received at r when
 * starts <= r < ends and it was not expired at or before r. Such an event is
 * stored, acknowledged and joined as usual; its record carries
 * `silenced:"<id>"` (case.h) and it makes no assignment, no notice and no
 * fallback (assign_on_event). Nothing fires for it when the silence ends.
 *
 * Refused (silence_parse): a match without `type`, one that could match a
 * mandatory_report (its type list holds it), or an online_risk whose
 * body.risk could be self_harm, suicide, grooming or sexual_content (the
 * silence needs a body.risk condition listing values, none of them these);
 * silence_find() refuses them again at match time, whatever the store holds.
 * A child in danger is never silenced.
 *
 * Creating and expiring write a trail record (kinds `silence_created`,
 * `silence_expired`; case "", the supervisor as actor, the silence record's
 * hash, the reason as `ref`).
 */
#ifndef CAREHUB_SILENCE_H
#define CAREHUB_SILENCE_H

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "carehub_wire.h"
#include "store.h"

#define SILENCE_ID_MAX 24                      /* "sil-" + digits, with the NUL */
#define SILENCE_REASON_MAX 500                 /* bytes of `reason` */
#define SILENCE_SPAN_MAX (90LL * 86400000LL)   /* ends - starts, at most */
#define SILENCE_CONDITIONS_MAX 16              /* keys in `match` */
#define SILENCE_VALUES_MAX 32                  /* values in one condition's list */

/* A silence asked for, as checked by silence_parse(); silence_create() writes it. */
typedef struct {
    char author[CAREHUB_ID_MAX + 1];           /* the supervisor's agent id */
    char reason[SILENCE_REASON_MAX + 1];
    int64_t starts, ends, created;             /* ms since the epoch */
    msgpack_sbuffer match;                     /* the normalised match map, packed */
    char id[SILENCE_ID_MAX];                   /* out: the id given */
} silence_new_t;

/*
 * Check a `silence` request (`map`: the decoded message) received at `now`
 * from `author`. 0 with *req filled (free it with silence_new_free), or -1
 * with *field (a JSON Pointer: "/match", "/ends", …) and a sentence in why.
 */
int silence_parse(const msgpack_object *map, const char *author, int64_t now, silence_new_t *req,
                  const char **field, char *why, size_t whysize);
void silence_new_free(silence_new_t *req);

/* Inside a write transaction: give req its id, write the record and its trail
 * record. Re-runnable. 0 or a store_rc_t. */
int silence_create(store_txn_t *t, silence_new_t *req);

/* Inside a write transaction: end silence `id` at `now` (`actor`: the
 * supervisor), with its trail record. *found 0 when there is no such silence
 * (nothing written); expiring an expired one again writes nothing. 0 or a
 * store_rc_t. */
int silence_expire(store_txn_t *t, const char *id, const char *actor, int64_t now, int *found);

/* The silences that may hold events received at or after `from` (not expired
 * before it, not ended by it), parsed once for a batch. */
typedef struct silence_set silence_set_t;

/* Inside a transaction: 0 with *out (free with silence_set_free), or a
 * store_rc_t (STORE_CORRUPTED: a record does not decode). */
int silence_load(store_txn_t *t, int64_t from, silence_set_t **out);
void silence_set_free(silence_set_t **s);

/* The id of the first silence of s active at `received` whose match holds for
 * the event (type, validated body), or NULL. Never one for an event that may
 * concern a child in danger. The string lives as long as s. */
const char *silence_find(const silence_set_t *s, const char *type, const json_t *body,
                         int64_t received);

/* Pack the silences made after `after` ("" or NULL: from the first), oldest
 * first, as the `silences` query shows them, appended to sb while they fit in
 * `budget` bytes (at least one); *n gets how many, next the last one packed
 * when more follow ("" when none). 0 or a store_rc_t. */
int silence_pack_page(store_txn_t *t, const char *after, size_t budget, msgpack_sbuffer *sb,
                      uint32_t *n, char next[SILENCE_ID_MAX]);

/* 1 when match conditions (parsed) could hold for an event that concerns a
 * child in danger (exposed for tests); why gets the sentence. */
int silence_match_is_dangerous(const msgpack_object *match, char *why, size_t whysize);

#endif
