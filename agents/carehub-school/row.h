/*
 * row.h — carehub-school's rows: the columns of an attendance export
 * (docs/agents.md), the cells of one record, and an absent row checked and
 * turned into the body of an `absence` event (schemas/absence.json).
 */
#ifndef CAREHUB_SCHOOL_ROW_H
#define CAREHUB_SCHOOL_ROW_H

#include <stddef.h>

#include <jansson.h>

typedef enum {
    COL_STUDENT_ID,
    COL_NAME,
    COL_DATE,
    COL_STATUS,
    COL_REASON,
    COL_CONSECUTIVE_DAYS,
    COL_GENDER,
    COL_BIRTH_DATE,
    COL_GUARDIAN_CONTACTED,
    COL_PERIOD,
    COL_GUARDIAN_NAME,
    COL_GUARDIAN_RELATION,
    COL_GUARDIAN_PHONE,
    COL_CATEGORY,
    COL_JURISDICTION,
    COL_SEVERITY,
    COL_NOTE,
    NCOLS
} col_t;

typedef struct {
    const char *name;
    int required;   /* the header must have it */
} col_info_t;

extern const col_info_t COLS[NCOLS];
/* Statuses that are not an absence: the row is skipped. */
extern const char *const STATUS_SKIP[];

/* The cells of one record, trimmed copies by column ("" when absent). */
typedef struct {
    char *v[NCOLS];
} cells_t;

void row_cells_free(cells_t *c);

/* A header name (as csv_header_name() made it) in Chinese -> its column
 * (docs/agents.md lists them); ROW_COL_IGNORED for a column that is known and
 * not sent (班级, the class); -1 when unknown. */
#define ROW_COL_IGNORED (-2)
int row_column_alias(const char *name);
/* A Chinese value of an enumerated column (status, reason, gender, period,
 * guardian_contacted, severity, category) -> its English value; NULL when cell
 * is not one (left as it is). */
const char *row_value_alias(col_t col, const char *cell);
/* Replace the Chinese values of the enumerated columns by their English ones
 * (a status 病假, 事假 or 旷课 is absent with that reason when the reason cell is
 * empty; 、，； separate categories as ; does). */
void row_map_values(cells_t *c);
void row_lower_ascii(char *s);
int row_set_str(json_t *o, const char *k, const char *v);
/* Check one absent row of `school` and build its body. NULL with why[] on a bad row. */
json_t *row_absence_body(const char *school, cells_t *c, char *why, size_t whylen);

#endif
