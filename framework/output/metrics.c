/* metrics.c - metrics.csv: its writer (header and rows from a column
 * spec), the resume helper that keeps an interrupted run's rows, and the
 * one reader (named columns of doubles). */
#include "output/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "output/rundir.h"

/* ---- writer ------------------------------------------------------------ */

void fl_metrics_init(fl_metrics *m, const fl_metrics_col *cols, size_t n_cols)
{
    memset(m, 0, sizeof *m);
    m->cols = cols;
    m->n_cols = n_cols;
}

void fl_metrics_row(fl_metrics *m, uint64_t step, const double *v)
{
    if (m->text.len == 0) {
        fl_buf_write(&m->text, "step", 4);
        for (size_t c = 0; c < m->n_cols; c++) fl_buf_printf(&m->text, ",%s", m->cols[c].name);
        fl_buf_write(&m->text, "\n", 1);
    }
    fl_buf_printf(&m->text, "%llu", (unsigned long long)step);
    for (size_t c = 0; c < m->n_cols; c++) {
        fl_buf_write(&m->text, ",", 1);
        if (!isfinite(v[c])) continue; /* no value: the empty field */
        char s[512]; /* %f of 1e308 fits */
        int n = snprintf(s, sizeof s, m->cols[c].fmt, v[c]);
        if (n > 0 && (size_t)n < sizeof s) fl_buf_write(&m->text, s, (size_t)n);
        else m->text.failed = 1;
    }
    fl_buf_write(&m->text, "\n", 1);
}

fl_status fl_metrics_save(const fl_metrics *m, const char *dir)
{
    if (m->text.failed) {
        fl_err("%s/metrics.csv: out of memory", dir);
        return FL_ERR_NOMEM;
    }
    return fl_rundir_write(dir, "metrics.csv", m->text.data ? m->text.data : "", m->text.len);
}

void fl_metrics_free(fl_metrics *m)
{
    fl_buf_free(&m->text);
}

/* ---- reader ------------------------------------------------------------ */

/* One field as a number; empty, too long or not wholly a number is NAN. */
static double field(const char *s, size_t len)
{
    char tmp[512];
    if (len == 0 || len >= sizeof tmp) return NAN;
    memcpy(tmp, s, len);
    tmp[len] = 0;
    char *end;
    double v = strtod(tmp, &end);
    return *end ? NAN : v;
}

/* The length of the line at p (up to end), without "\n" or "\r\n"; *next
 * gets the start of the following line. */
static size_t line_at(const char *p, const char *end, const char **next)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    *next = nl ? nl + 1 : end;
    size_t l = (size_t)((nl ? nl : end) - p);
    if (l && p[l - 1] == '\r') l--;
    return l;
}

void fl_metrics_table_free(fl_metrics_table *t)
{
    for (size_t c = 0; c < t->n_cols; c++) {
        if (t->names) free(t->names[c]);
        if (t->col) free(t->col[c]);
    }
    free(t->names);
    free(t->col);
    free(t->row_start);
    free(t->row_len);
    memset(t, 0, sizeof *t);
}

/* fl_metrics_parse; `quiet` leaves fl_err alone (for lookups). */
static fl_status parse(const char *text, size_t len, const char *what, fl_metrics_table *t,
                       int quiet)
{
    memset(t, 0, sizeof *t);
    const char *end = text ? text + len : NULL, *p = text, *next;
    /* the header: the first line */
    size_t hl = text ? line_at(p, end, &next) : 0;
    if (!text || len == 0) {
        if (!quiet) fl_err("%s: empty, no header", what);
        return FL_ERR_FORMAT;
    }
    size_t nc = 1, cap = 1; /* columns; rows an upper bound (lines) */
    for (size_t i = 0; i < hl; i++) nc += p[i] == ',';
    for (size_t i = 0; i < len; i++) cap += text[i] == '\n';
    fl_status st = FL_OK;
    t->names = calloc(nc, sizeof *t->names);
    t->col = calloc(nc, sizeof *t->col);
    t->row_start = malloc(cap * sizeof *t->row_start);
    t->row_len = malloc(cap * sizeof *t->row_len);
    if (!t->names || !t->col || !t->row_start || !t->row_len) st = FL_ERR_NOMEM;
    if (st == FL_OK) t->n_cols = nc; /* from here on fl_metrics_table_free frees per column */
    for (size_t c = 0, k = 0; st == FL_OK && c < nc; c++) {
        size_t e = k;
        while (e < hl && p[e] != ',') e++;
        t->names[c] = fl_strndup(p + k, e - k);
        t->col[c] = malloc(cap * sizeof **t->col);
        if (!t->names[c] || !t->col[c]) st = FL_ERR_NOMEM;
        k = e + 1;
    }
    long cs = st == FL_OK ? fl_metrics_find(t, "step") : -1;
    if (st == FL_OK && cs < 0) {
        if (!quiet) fl_err("%s: no column 'step' in the header", what);
        st = FL_ERR_FORMAT;
    }
    for (p = next; st == FL_OK && p < end; p = next) {
        size_t l = line_at(p, end, &next);
        if (l == 0) continue;
        size_t r = t->n_rows;
        const char *f = p, *le = p + l;
        for (size_t c = 0; c < nc; c++) {
            if (!f) {
                t->col[c][r] = NAN; /* a short row */
                continue;
            }
            const char *q = memchr(f, ',', (size_t)(le - f));
            t->col[c][r] = field(f, (size_t)((q ? q : le) - f));
            f = q ? q + 1 : NULL;
        }
        if (!isfinite(t->col[cs][r])) continue; /* a row without a step */
        t->row_start[r] = (size_t)(p - text);
        t->row_len[r] = l;
        t->n_rows++;
    }
    if (st != FL_OK) {
        if (st == FL_ERR_NOMEM && !quiet) fl_err("%s: out of memory reading it", what);
        fl_metrics_table_free(t);
    }
    return st;
}

fl_status fl_metrics_parse(const char *text, size_t len, const char *what, fl_metrics_table *t)
{
    return parse(text, len, what, t, 0);
}

fl_status fl_metrics_read(const char *path, fl_metrics_table *t)
{
    memset(t, 0, sizeof *t);
    char *text = NULL;
    size_t len = 0;
    fl_status st = fl_read_file(path, &text, &len);
    if (st == FL_OK) st = parse(text, len, path, t, 0);
    free(text);
    return st;
}

long fl_metrics_find(const fl_metrics_table *t, const char *name)
{
    for (size_t c = 0; c < t->n_cols; c++)
        if (t->names[c] && strcmp(t->names[c], name) == 0) return (long)c;
    return -1;
}

const double *fl_metrics_column(const fl_metrics_table *t, const char *name)
{
    long c = fl_metrics_find(t, name);
    return c < 0 ? NULL : t->col[c];
}

/* The first row of `step`, or -1. */
static long row_of(const fl_metrics_table *t, uint64_t step)
{
    const double *s = fl_metrics_column(t, "step");
    for (size_t r = 0; s && r < t->n_rows; r++)
        if (s[r] == (double)step) return (long)r;
    return -1;
}

double fl_metrics_lookup(const char *text, size_t len, uint64_t step, const char *name)
{
    fl_metrics_table t;
    if (parse(text, len, "metrics.csv", &t, 1) != FL_OK) return NAN;
    long r = row_of(&t, step), c = fl_metrics_find(&t, name);
    double v = r >= 0 && c >= 0 ? t.col[c][r] : NAN;
    fl_metrics_table_free(&t);
    return v;
}

void fl_metrics_keep(fl_buf *out, const char *old, size_t len, uint64_t step0, double *seconds)
{
    *seconds = 0;
    fl_metrics_table t;
    if (parse(old, len, "metrics.csv", &t, 1) != FL_OK) return;
    const double *step = fl_metrics_column(&t, "step"), *secs = fl_metrics_column(&t, "train_seconds");
    const char *next;
    fl_buf_write(out, old, line_at(old, old + len, &next)); /* the header as it was */
    fl_buf_write(out, "\n", 1);
    for (size_t r = 0; r < t.n_rows; r++) {
        if (!(step[r] >= 0 && step[r] <= (double)step0)) continue;
        fl_buf_write(out, old + t.row_start[r], t.row_len[r]);
        fl_buf_write(out, "\n", 1);
        *seconds = secs && isfinite(secs[r]) ? secs[r] : 0;
    }
    fl_metrics_table_free(&t);
}
