/*
 * config_diag.c — the configuration loader's diagnostics: errors collected
 * with the FILE:LINE:COL of the offending node, sorted by position and handed
 * to the caller as lines; values from the file quoted and escaped for
 * messages; "did you mean" suggestions by edit distance; and libyaml's own
 * reader and syntax errors turned into the same kind of line. Errors are never
 * fatal: each check reports and the walk goes on, so that one run lists every
 * problem (at most MAX_ERRORS kept, the rest counted).
 */
#include "config_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_ERRORS = 200 }; /* errors kept; the rest are counted */

/* ---- errors -------------------------------------------------------------- */

static void add_err_v(loader_t *ld, int line, int col, const char *fmt, va_list ap)
{
    ld->n_total++;
    if (ld->n_errs >= MAX_ERRORS)
        return;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *msg = xmalloc(n > 0 ? (size_t)n + 1 : 1);
    if (n > 0)
        (void)vsnprintf(msg, (size_t)n + 1, fmt, ap2);
    else
        msg[0] = '\0';
    va_end(ap2);
    if (ld->n_errs == ld->cap_errs) {
        ld->cap_errs = ld->cap_errs ? 2 * ld->cap_errs : 16;
        ld->errs = xrealloc(ld->errs, ld->cap_errs * sizeof *ld->errs);
    }
    size_t seq = ld->n_errs;
    ld->errs[seq] = (cerr_t){line, col, seq, msg};
    ld->n_errs++;
}

void FMT(4, 5) cfg_err_pos(loader_t *ld, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    add_err_v(ld, line, col, fmt, ap);
    va_end(ap);
}

/* An error located at a node (or at the file when node is NULL). */
void FMT(3, 4) cfg_err_at(loader_t *ld, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (node)
        add_err_v(ld, (int)node->start_mark.line + 1, (int)node->start_mark.column + 1, fmt, ap);
    else
        add_err_v(ld, 0, 0, fmt, ap);
    va_end(ap);
}

int cfg_node_line(const yaml_node_t *n)
{
    return n ? (int)n->start_mark.line + 1 : 0;
}

static int cmp_err(const void *a, const void *b)
{
    const cerr_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void diag_push(config_diag_t *diag, char *line)
{
    diag->lines = xrealloc(diag->lines, (diag->n + 1) * sizeof *diag->lines);
    diag->lines[diag->n++] = line;
}

/* Hand the sorted errors to the caller as "FILE:LINE:COL: message" lines. */
void cfg_flush_errors(loader_t *ld, config_diag_t *diag)
{
    if (ld->n_errs > 1)
        qsort(ld->errs, ld->n_errs, sizeof *ld->errs, cmp_err);
    for (size_t i = 0; i < ld->n_errs; i++) {
        cerr_t *e = &ld->errs[i];
        if (diag) {
            size_t n = strlen(ld->path) + strlen(e->msg) + 48;
            char *line = xmalloc(n);
            if (e->line > 0)
                util_fmt(line, n, "%s:%d:%d: %s", ld->path, e->line, e->col, e->msg);
            else
                util_fmt(line, n, "%s: %s", ld->path, e->msg);
            diag_push(diag, line);
        }
        free(e->msg);
    }
    if (diag && ld->n_total > ld->n_errs) {
        size_t n = strlen(ld->path) + 96;
        char *line = xmalloc(n);
        util_fmt(line, n, "%s: %zu more errors not shown; fix the ones above first", ld->path,
                 ld->n_total - ld->n_errs);
        diag_push(diag, line);
    }
    free(ld->errs);
    ld->errs = NULL;
    ld->n_errs = ld->cap_errs = 0;
}

/* Quote a value from the file for a message: at most ~60 bytes (cut at a UTF-8
 * boundary), control characters, quotes and backslashes escaped. The result
 * lives until QBUFS more calls. */
const char *cfg_qv(loader_t *ld, const char *s)
{
    char *buf = ld->qbuf[ld->qnext++ % QBUFS];
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i >= 60 && (c & 0xC0) != 0x80) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (o + 8 >= QBUF_SIZE)
            break;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            util_fmt(buf + o, QBUF_SIZE - o, "\\x%02x", (unsigned)c);
            o += 4;
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* ---- did you mean -------------------------------------------------------- */

/* Levenshtein distance of short strings, for "did you mean". */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest candidate to s (edit distance <= 2, and small for short words)
 * formatted with `fmt` into buf; "" when none is close. */
static void suggest_fmt(char *buf, size_t n, const char *s, const char *const *cand,
                        size_t n_cand, const char *fmt)
{
    size_t best = 3, len = strlen(s);
    const char *pick = NULL;
    buf[0] = '\0';
    for (size_t i = 0; i < n_cand; i++) {
        size_t d = edit_distance(s, cand[i]);
        if (d < best && d * 3 <= len + 1) {
            best = d;
            pick = cand[i];
        }
    }
    if (pick)
        util_fmt(buf, n, fmt, pick);
}

/* " did you mean \"x\"?" when one candidate is close to s, else "". */
void cfg_suggest(char *buf, size_t n, const char *s, const char *const *cand, size_t n_cand)
{
    suggest_fmt(buf, n, s, cand, n_cand, " did you mean \"%s\"?");
}

/* " (did you mean \"x\"?)": the same, for the middle of a sentence. */
void cfg_suggest_paren(char *buf, size_t n, const char *s, const char *const *cand,
                       size_t n_cand)
{
    suggest_fmt(buf, n, s, cand, n_cand, " (did you mean \"%s\"?)");
}

/* "a, b, c" into buf. */
void cfg_join_names(char *buf, size_t n, const char *const *names, size_t count)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < count && o + 4 < n; i++) {
        util_fmt(buf + o, n - o, "%s%s", i ? ", " : "", names[i]);
        o += strlen(buf + o);
    }
}

/* ---- YAML reader and syntax errors --------------------------------------- */

/* Where a reader error (bad UTF-8 ...) happened, from its byte offset. */
static void offset_pos(const char *buf, size_t len, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

void cfg_yaml_error(loader_t *ld, const yaml_parser_t *p, const char *buf, size_t len)
{
    const char *problem = p->problem ? p->problem : "unknown problem";
    int line, col;
    switch (p->error) {
    case YAML_MEMORY_ERROR:
        cfg_err_pos(ld, 0, 0, "out of memory while parsing the YAML");
        return;
    case YAML_READER_ERROR:
        offset_pos(buf, len, p->problem_offset, &line, &col);
        cfg_err_pos(ld, line, col,
                    "cannot read the file as YAML text: %s (byte 0x%02x); save it as "
                    "UTF-8",
                    problem, (unsigned)(p->problem_value & 0xff));
        return;
    default:
        line = (int)p->problem_mark.line + 1;
        col = (int)p->problem_mark.column + 1;
        if (p->context)
            cfg_err_pos(ld, line, col, "YAML syntax error: %s (%s at line %d, column %d)", problem,
                        p->context, (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
        else
            cfg_err_pos(ld, line, col, "YAML syntax error: %s", problem);
        return;
    }
}
