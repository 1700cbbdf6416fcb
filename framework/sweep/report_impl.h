/* report_impl.h - what the files of `flowlab report` share, private to
 * them (report.h is the public side): the cells' numbers, the groups with
 * their statistics, and the functions each file provides.
 *
 *   report.c         reads the cells (result.json, eval.json, gradvar.json,
 *                    failed.txt), picks the metric, writes the files
 *   report_stats.c   groups cells over the left-out keys (the seeds), mean
 *                    and standard error per field, the ranking
 *   report_tables.c  report.md, report.csv and report.html
 *   report_charts.c  one curve chart per group (from metrics.csv) for
 *                    report.html */
#ifndef FL_REPORT_IMPL_H
#define FL_REPORT_IMPL_H

#include <stddef.h>

#include "sweep/report.h"

/* A cell's state. */
enum { FL_CELL_MISSING, FL_CELL_DONE, FL_CELL_FAILED };

/* One cell's results. */
typedef struct fl_report_cell {
    int state;            /* FL_CELL_* */
    int exit_status;      /* failed.txt's, -1 unknown (failed cells) */
    char *error;          /* failed.txt's error line (owned), or NULL */
    double *v;            /* per field, NAN when absent (owned) */
} fl_report_cell;

/* One field's statistics over a group's finished cells. */
typedef struct fl_report_stat {
    size_t n;             /* cells with a finite value */
    double mean, se;      /* NAN when n = 0; se NAN when n < 2 */
} fl_report_stat;

/* Cells that differ only in the keys left out of the grouping. */
typedef struct fl_report_group {
    size_t first;         /* the lowest-numbered member cell, for the key values */
    size_t *cells;        /* member cells, in the order of their numbers (owned) */
    size_t n_cells, n_done, n_failed, n_missing;
    fl_report_stat *f;    /* per field (owned) */
} fl_report_group;

/* A report being made. */
typedef struct fl_report {
    const fl_sweep *s;    /* the sweep (the caller's) */
    const char *dir;      /* the sweep directory (the caller's) */
    fl_report_cell *cd;   /* per cell (owned) */
    char **fields;        /* numeric fields, the union over cells in first-seen order (owned) */
    size_t n_fields;
    int *in_group;        /* per axis: 1 when it tells rows apart (owned) */
    fl_report_group *g;   /* groups in the order of their first cell (owned) */
    size_t n_groups;
    size_t *order;        /* group indices, best first (owned) */
    long metric;          /* field index to sort by, -1 = none */
    int direction;        /* -1 lower is better, +1 higher */
    size_t n_done, n_failed, n_missing; /* cells per state */
} fl_report;

/* report.c */
/* The index of field `name`, or -1. */
long fl_report_field_index(const fl_report *r, const char *name);
/* The metric's name, or NULL without one. */
const char *fl_report_metric_name(const fl_report *r);

/* report_stats.c */
/* Fills r->in_group from `group_by` (NULL: every axis but experiment.seed)
 * and r->g with the groups and their statistics; needs r->cd and
 * r->fields. FL_ERR_NOMEM is the only error (fl_err not set). */
fl_status fl_report_group_cells(fl_report *r, const char *group_by);
/* +1 (higher is better) or -1 for a field's name (see fl_report_opts). */
int fl_report_default_direction(const char *metric);
/* Fills r->order (allocated by the caller, n_groups entries): groups by
 * the metric's mean, best first, rows without a value last, ties in group
 * order. Not thread-safe (qsort's context is a static). */
void fl_report_rank(fl_report *r);

/* report_tables.c */
/* A number for a table cell: "-" when not finite, integers whole, else
 * `digits` significant digits. */
void fl_report_fmt_num(char *buf, size_t cap, double v, int digits);
/* `s` with <, >, & and " escaped for HTML. */
void fl_report_html_text(fl_buf *b, const char *s);
/* report.md into `b`; its table also into `table` (printed by the CLI). */
void fl_report_md(const fl_report *r, fl_buf *b, fl_buf *table);
/* report.csv: full precision, one row per group. */
void fl_report_csv(const fl_report *r, fl_buf *b);
/* report.html with a chart per group; the first error of a chart. */
fl_status fl_report_html(const fl_report *r, fl_buf *h);

/* report_charts.c */
/* The chart of group `gi` (rank k, from 0) into `h` as an <img> (a base64
 * PNG, also kept as report_curves/row-K.png) and a caption; nothing when
 * no member cell has a readable metrics.csv. Errors: creating the folder
 * or writing the PNG (fl_err set). */
fl_status fl_report_chart(const fl_report *r, size_t gi, size_t k, fl_buf *h);
/* Appends base64 of the n bytes at p to b (a PNG's data URI). */
void fl_report_base64(fl_buf *b, const unsigned char *p, size_t n);

/* report_gradvar.c ([sweep] gradvar = yes: the cells' gv_*_snr_* fields) */
/* A table of mean SNR per estimator, network and k with the log-log
 * slopes, into report.md; nothing without such fields. */
void fl_report_snr_md(const fl_report *r, fl_buf *b);
/* The two log-log charts (inference, generative) into report.html, also
 * kept as report_curves/snr-*.png; nothing without such fields. Errors:
 * creating the folder or writing a PNG (fl_err set). */
fl_status fl_report_snr_html(const fl_report *r, fl_buf *h);

#endif
