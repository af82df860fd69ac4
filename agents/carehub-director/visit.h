/*
 * visit.h — carehub-director's visits: the fields of a `visit` event
 * (schemas/visit.json) as options and as a terminal form, checked and turned
 * into the event's body.
 */
#ifndef CAREHUB_DIRECTOR_VISIT_H
#define CAREHUB_DIRECTOR_VISIT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef enum { VF_CHILD, VF_KIND, VF_DATE, VF_METHOD, VF_FINDINGS, VF_CONCERN, VF_NEEDS, VF_N } visit_field_t;

typedef enum { VK_TEXT, VK_ENUM, VK_LIST, VK_BOOL, VK_DATE } visit_kind_t;

typedef struct {
    const char *flag;             /* the option (--kind); VF_CHILD is the argument */
    const char *label;            /* the form's question */
    visit_kind_t kind;
    int required;
    const char *const *values;    /* VK_ENUM, VK_LIST: the schema's values */
    size_t max;                   /* VK_TEXT: characters */
} visit_info_t;

extern const visit_info_t VISIT_FIELDS[VF_N];

/* The values given so far (malloc'd strings; NULL: not given). */
typedef struct {
    char *val[VF_N];
} visit_t;

void visit_free(visit_t *v);

/* Check value for field f and keep it (a list as "a,b"; a bool as "true" or
 * "false"). 0, or -1 with why. */
int visit_set(visit_t *v, int f, const char *value, char *why, size_t whylen);

/* Fill the defaults (date: today, local) and check that the required fields are
 * there; build the body. NULL with why. */
json_t *visit_body(visit_t *v, char *why, size_t whylen);

/* The event's `at` for the visit's date: now for today, else noon (local) of
 * that day. */
int64_t visit_at(const char *date);

/* Today's local date as YYYY-MM-DD into out[11]. */
void visit_today(char out[11]);

/* Ask every field on the terminal (prompts on stderr, answers from stdin),
 * show the visit and ask to send it. 0 to send, -1 when the input ended or the
 * director did not confirm. */
int visit_form(visit_t *v);

#endif
