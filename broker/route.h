/*
 * route.h — which agencies a case goes to: the configured workflows applied to
 * one event (CONFIG.md `workflows`).
 *
 * Workflows are tried in order. A workflow applies when every one of its
 * `match` conditions holds (no conditions: it always applies). The first that
 * applies contributes its `assign` entries; with `continue: true` the ones
 * after it are tried too, otherwise routing stops there. When none applies the
 * case goes to broker.fallback_agency (the caller's rule: route_match() only
 * reports that nothing matched).
 *
 * Conditions: `type` compares the event type; `severity` the body's severity
 * (after schema defaults); `body.a.b` the body value at that dotted path. A
 * list of values matches any of them. On a list field any element matching is
 * enough. Comparisons (">=3", "<2", "==1", "!=0") hold only for numbers.
 * Scalars compare as text: strings as they are, integers in decimal, reals
 * with %g, booleans as true/false.
 *
 * Evaluated on every new event of a case, so a growing case (an absence run
 * reaching 3 days) draws in more agencies; the caller makes one assignment
 * per agency per case.
 */
#ifndef CAREHUB_ROUTE_H
#define CAREHUB_ROUTE_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"

/* One assignment a workflow asks for. Points into the config. */
typedef struct {
    const config_workflow_t *workflow;
    const config_assign_t *assign;
} route_hit_t;

/*
 * Apply the workflows to an event of `type` with (validated) `body`. Writes
 * up to `max` hits to `out` (in workflow order, duplicates of an agency
 * removed, the first kept) and returns how many. *matched is set to 1 when
 * any workflow applied (even one with `assign: []`), 0 when none did.
 */
size_t route_match(const config_t *cfg, const char *type, const json_t *body, route_hit_t *out,
                   size_t max, int *matched);

/* The first `rhythms` rule (CONFIG.md additions) whose match holds for an
 * enrolment body (type "enrolment"), or NULL when none does. */
const config_rhythm_t *route_rhythm(const config_t *cfg, const json_t *enrolment);

/* 1 when one condition holds for the event (exposed for tests). */
int route_condition(const config_match_t *m, const char *type, const json_t *body);

#endif
