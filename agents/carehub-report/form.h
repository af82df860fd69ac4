/*
 * form.h — carehub-report's form: the fields of a mandatory_report (PROTOCOL
 * §8, schemas/mandatory_report.json) with their checks, the values given so
 * far (from options or the terminal), and the event body built from them.
 */
#ifndef CAREHUB_REPORT_FORM_H
#define CAREHUB_REPORT_FORM_H

#include <stddef.h>

#include "carehub_wire.h"
#include "cli.h"

typedef enum { K_TEXT, K_ENUM, K_BOOL, K_DATE, K_TIME, K_LIST } kind_t;

enum {
    F_ORGANISATION,
    F_REPORTER_NAME,
    F_ROLE,
    F_PHONE,
    F_HARM,
    F_DESCRIPTION,
    F_SUSPECTED,
    F_IMMEDIATE_DANGER,
    F_LOCATION,
    F_OCCURRED_AT,
    F_CHILD_NAME,
    F_CHILD_ID,
    F_GENDER,
    F_BIRTH_DATE,
    F_CATEGORY,
    F_JURISDICTION,
    F_GUARDIAN_NAME,
    F_GUARDIAN_RELATION,
    F_GUARDIAN_PHONE,
    F_SEVERITY,
    F_NOTE,
    NFIELDS
};

typedef struct {
    const char *flag;            /* the long option */
    const char *label;           /* the question in the form */
    kind_t kind;
    const char *const *values;   /* K_ENUM, K_LIST */
    size_t max;                  /* K_TEXT: characters */
    int required;
    const char *key;             /* where the body holds it: "child.guardian.name" */
} field_t;

extern const field_t FIELDS[NFIELDS];

typedef struct {
    char *val[NFIELDS];        /* normalised values; NULL = not given */
    int json;                  /* --json output */
    cli_outcomes_t *outcomes;  /* the local outcome log */
    cli_map_t *shown;          /* outcome ids printed in this run */
    /* the report submitted in this run */
    char ref[CAREHUB_ID_MAX + 1];
    int answered;              /* 1 ack, -1 nack */
    char event[CAREHUB_ID_MAX + 1], case_id[CAREHUB_ID_MAX + 1];
    int duplicate;
    cli_nack_t nack;           /* the refusal, when answered is -1 */
    long earlier;              /* acks of earlier spooled events */
    long refused_earlier;
} report_t;

/* Check `in` for field f and store its normalised form; for K_LIST with
 * append, add to what is there (a repeated --category). 0, or -1 with why. */
int set_field(report_t *r, int f, const char *in, int append, char *why, size_t whylen);
/* The body of the mandatory_report from the fields (all checked): JSON text, malloc'd. */
char *build_body(const report_t *r);
/* How many required fields are not given, their flags as "--a, --b" into buf. */
int missing_required(const report_t *r, char *buf, size_t len);

#endif
