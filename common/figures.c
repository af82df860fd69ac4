/* figures.c — the response-time figures per agency; see figures.h. */
#include "figures.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void add_minutes(fig_deadline_t *d, int64_t from, int64_t to)
{
    d->mins = xrealloc(d->mins, (d->nmins + 1) * sizeof *d->mins);
    d->mins[d->nmins++] = (double)(to - from) / 60000.0;
}

void fig_report_add(fig_report_t *r, const char *agency, size_t len, const fig_assignment_t *a,
                    int64_t now)
{
    if (len >= sizeof r->rows[0].agency)
        len = sizeof r->rows[0].agency - 1;
    size_t i;
    for (i = 0; i < r->n; i++)
        if (strlen(r->rows[i].agency) == len && !memcmp(r->rows[i].agency, agency, len))
            break;
    if (i == r->n) {
        r->rows = xrealloc(r->rows, (r->n + 1) * sizeof *r->rows);
        memset(&r->rows[i], 0, sizeof r->rows[i]);
        memcpy(r->rows[i].agency, agency, len);
        r->n++;
    }
    fig_agency_t *row = &r->rows[i];
    row->count++;
    if (a->acked_at > 0 || a->ack_by < now)
        row->ack.due++;
    if (a->acked_at > 0 && a->acked_at <= a->ack_by)
        row->ack.on_time++;
    if (a->acked_at > 0)
        add_minutes(&row->ack, a->created, a->acked_at);
    if (a->resolve_by > 0 && (a->final_at > 0 || a->resolve_by < now))
        row->res.due++;
    if (a->resolve_by > 0 && a->final_at > 0 && a->final_at <= a->resolve_by)
        row->res.on_time++;
    if (a->acked_at > 0 && a->final_at >= a->acked_at)
        add_minutes(&row->res, a->acked_at, a->final_at);
    row->escalations += a->level + a->resolve_level;
    if (a->open && a->ack_by < now)
        row->open_overdue++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the ceil(num/den * n)-th smallest of sorted values; NAN for none. */
static double rank(const double *v, size_t n, size_t num, size_t den)
{
    if (!n)
        return NAN;
    size_t r = (num * n + den - 1) / den;
    return v[r ? r - 1 : 0];
}

static void finish(fig_deadline_t *d)
{
    if (d->nmins)
        qsort(d->mins, d->nmins, sizeof *d->mins, cmp_double);
    d->pct = d->due ? 100.0 * (double)d->on_time / (double)d->due : NAN;
    d->p50 = rank(d->mins, d->nmins, 1, 2);
    d->p90 = rank(d->mins, d->nmins, 9, 10);
}

static int cmp_agency(const void *a, const void *b)
{
    return strcmp(((const fig_agency_t *)a)->agency, ((const fig_agency_t *)b)->agency);
}

void fig_report_finish(fig_report_t *r)
{
    if (r->n)
        qsort(r->rows, r->n, sizeof *r->rows, cmp_agency);
    for (size_t i = 0; i < r->n; i++) {
        finish(&r->rows[i].ack);
        finish(&r->rows[i].res);
    }
}

void fig_report_free(fig_report_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->rows[i].ack.mins);
        free(r->rows[i].res.mins);
    }
    free(r->rows);
    r->rows = NULL;
    r->n = 0;
}
