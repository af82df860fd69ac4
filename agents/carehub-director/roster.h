/*
 * roster.h — carehub-director's roster: the columns of a village's roster
 * (CSV, docs/agents.md), one row checked and turned into the body of an
 * `enrolment` event (schemas/enrolment.json), and the roster state that keeps
 * enrolment ids idempotent yet lets an earlier content be sent again.
 *
 * An enrolment's id is "enr:" + BLAKE2b(child_id NUL body NUL generation),
 * keyed with the director's id key (idkey.h); body is the event body as
 * canonical JSON (sorted keys, compact). Enrolling the same row again gives
 * the same id (the broker answers duplicate:true). A child's generation goes
 * up by one whenever its row differs from the one enrolled last, so that a
 * content enrolled before (active, then not, then active again) is a new event
 * and not a duplicate the broker would ignore. The state, SPOOL/director-roster.json,
 * maps a keyed hash of each child id to the keyed hash of its last content and
 * its generation: no child id or name is in it.
 */
#ifndef CAREHUB_DIRECTOR_ROSTER_H
#define CAREHUB_DIRECTOR_ROSTER_H

#include <stddef.h>

#include <jansson.h>

#include "idkey.h"

typedef enum {
    RC_CHILD_ID,
    RC_NAME,
    RC_CATEGORY,
    RC_VILLAGE,
    RC_GENDER,
    RC_BIRTH_DATE,
    RC_JURISDICTION,
    RC_GUARDIAN_NAME,
    RC_GUARDIAN_RELATION,
    RC_GUARDIAN_PHONE,
    RC_RISK,
    RC_RISK_REASONS,
    RC_ACTIVE,
    RC_NOTE,
    RC_NCOLS
} roster_col_t;

/* Column names, in roster_col_t order, and which the header must have
 * (village: unless --village gives it). */
extern const char *const ROSTER_COLS[RC_NCOLS];
extern const int ROSTER_REQUIRED[RC_NCOLS];

/* The column of a header cell (csv_header_name), or -1. */
int roster_column(const char *cell);

/* The known columns as "a, b, c" into buf. */
void roster_column_list(char *buf, size_t len);

/* Check one row (cells by column, trimmed, "" when absent; cells may be changed)
 * and build its enrolment body; village_default is --village (NULL: none).
 * NULL with why[] on a bad row. */
json_t *roster_body(char **cells, const char *village_default, char *why, size_t whylen);

/* ---- the roster state ---------------------------------------------------------------- */

#define ROSTER_STATE_FILE "director-roster.json"

typedef struct roster_state roster_state_t;

/* Load SPOOL/director-roster.json (missing: empty). NULL with why on a
 * damaged or unreadable file. */
roster_state_t *roster_state_load(const char *spool_dir, const unsigned char key[IDKEY_BYTES],
                                  char *why, size_t whylen);
void roster_state_free(roster_state_t **st);

/* The id of this child's enrolment with this body (see above), into out[65];
 * the state remembers it as the child's last content. */
void roster_enrolment_id(roster_state_t *st, const char *child_id, const json_t *body, char out[65]);

/* Write the state (a new file, fsync'ed, renamed over the old) when it
 * changed. 0, or -1 with why. */
int roster_state_save(roster_state_t *st, char *why, size_t whylen);

#endif
