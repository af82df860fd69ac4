/*
 * figures.h — the response-time figures per agency (issue 10, issue 14): one
 * definition, used by `carehub report` (agents/carehub/report.c) and by the
 * supervisors' web view (broker/web_pages.c), so that both say the same.
 *
 * Per agency, from its assignment records at the broker's `now`:
 *   count          assignments
 *   ack.due        acknowledged, or past ack_by (the acknowledgement is due)
 *   ack.on_time    acknowledged no later than ack_by
 *   ack.pct        on_time of due, %
 *   ack.p50/p90    minutes from creation to acknowledgement (nearest rank),
 *                  of the acknowledged ones
 *   res.due        with a resolve_by (PROTOCOL §10), final or past it
 *   res.on_time    final (resolved, referred, declined) no later than resolve_by
 *   res.pct        on_time of due, %
 *   res.p50/p90    minutes from acknowledgement to the final status, of those
 *                  acknowledged and final (with or without a resolve_by)
 *   escalations    steps fired at either deadline (level + resolve_level)
 *   open_overdue   open and past ack_by
 * A figure with nothing to count is NAN (pct, p50, p90).
 *
 * Memory: fig_report_add() grows the report (aborting on out of memory, as
 * xmalloc); fig_report_free() frees it. No I/O, no JSON: callers turn their
 * records into fig_assignment_t.
 */
#ifndef CAREHUB_FIGURES_H
#define CAREHUB_FIGURES_H

#include <stddef.h>
#include <stdint.h>

/* One assignment as the figures need it (times in ms; 0: not set). */
typedef struct {
    int64_t created, ack_by, acked_at, resolve_by, final_at;
    long level, resolve_level;
    int open;               /* state "open" */
} fig_assignment_t;

/* One deadline's figures for one agency. */
typedef struct {
    long due, on_time;
    double *mins;           /* the times taken, minutes; sorted by fig_report_finish */
    size_t nmins;
    double pct, p50, p90;   /* NAN when there is nothing to count */
} fig_deadline_t;

typedef struct {
    char agency[128];       /* the agency's id */
    long count, escalations, open_overdue;
    fig_deadline_t ack;     /* ack_by: from creation to acknowledgement */
    fig_deadline_t res;     /* resolve_by: from acknowledgement to a final status */
} fig_agency_t;

typedef struct {
    fig_agency_t *rows;
    size_t n;
} fig_report_t;

/* Count one assignment of agency (len bytes; truncated past 127) at `now`. */
void fig_report_add(fig_report_t *r, const char *agency, size_t len, const fig_assignment_t *a,
                    int64_t now);
/* Agencies in id order; the percentages and percentiles. */
void fig_report_finish(fig_report_t *r);
void fig_report_free(fig_report_t *r);

#endif
