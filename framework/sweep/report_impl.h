/* report_impl.h - what the files of `flowlab report` share, private to
 * them (report.h is the public side): the cells' numbers, the groups with
 * their statistics, and the functions each file provides.
 *
 *   report.c         reads the cells (result.json, eval.json, gradvar.json,
 *                    failed.txt), picks the metric, writes the files
 *   report_stats.c   groups cells over the left-out keys (the seeds), mean
 *                    and standard error per field, the ranking
 *   report_tables.c  report.md, report.csv and report.html
 *   report_charts.c  the charts overlaying the groups' curves (from
 *                    metrics.csv) and the cells' picture links, for
 *                    report.html
 *   report_pivot.c   the pivot table (ROWS x COLS of one field) and its
 *                    chart */
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
    size_t *cols;         /* fields shown in report.md/.html, in order (owned) */
    size_t n_cols;
    long *dup_of;         /* per field: the field it repeats, -2 - a for swept key a, -1 none (owned) */
    char *sets;           /* sets.txt: the sweep's --set options, one a line (owned); NULL: not recorded */
    const fl_report_opts *o; /* the options (the caller's; never NULL) */
    struct fl_pivot *pivot; /* the pivot table, NULL without one (owned) */
} fl_report;

/* The pivot table of --pivot ROWS COLS METRIC. */
typedef struct fl_pivot {
    size_t ar, ac;        /* the axes of rows and columns */
    long field;           /* the field */
    fl_report_stat *cell; /* [i * n_cols_of_ac + j]: value i of ar, value j of ac (owned) */
    char *averaged;       /* the other swept keys, ", "-separated (owned) */
} fl_pivot;

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

/* report.md's and report.html's header lines: the --set options. */
void fl_report_sets_md(const fl_report *r, fl_buf *b);

/* report_charts.c */
/* The charts of the groups' curves into `h`: groups in rank order, up to
 * FL_REPORT_PER_CHART per chart, all charts on the same axes, each as an
 * <img> (a base64 PNG; PNG and SVG also kept as
 * report_curves/chart-K.{png,svg}) with a caption; nothing when no cell has
 * a readable metrics.csv. Errors: creating the folder or writing a file
 * (fl_err set). */
#define FL_REPORT_PER_CHART 10
fl_status fl_report_charts(const fl_report *r, fl_buf *h);
/* The pictures (*.png, *.svg) of every cell as links, groups in rank
 * order, into `h`. */
void fl_report_cell_pictures(const fl_report *r, fl_buf *h);
/* `p` (n bytes) base64-encoded into `b`. */
void fl_report_base64(fl_buf *b, const unsigned char *p, size_t n);
/* The legend text of group gi: its swept values, "key=value, ...". */
void fl_report_group_label(const fl_report *r, size_t gi, fl_buf *b);

/* report_pivot.c */
/* Fills r->pivot from r->o's pivot options (nothing without them). An
 * unknown metric is FL_ERR_INVALID (fl_err lists the fields). */
fl_status fl_report_pivot_make(fl_report *r);
void fl_report_pivot_free(fl_report *r);
/* The pivot table in Markdown (report.md and the printed table). */
void fl_report_pivot_md(const fl_report *r, fl_buf *b);
/* report_pivot.csv: ROWS, then per value of COLS its mean, se and n. */
void fl_report_pivot_csv(const fl_report *r, fl_buf *b);
/* The pivot table and its chart (report_curves/pivot.{png,svg}: the field
 * against COLS, one line per value of ROWS, +- one standard error, when
 * every value of COLS is a number) into `h`. Errors as fl_report_charts. */
fl_status fl_report_pivot_html(const fl_report *r, fl_buf *h);

/* report_gradvar.c ([sweep] gradvar = yes: the cells' gv_*_snr_* fields) */
/* A table of mean SNR per estimator, network and k with the log-log
 * slopes, into report.md; nothing without such fields. */
void fl_report_snr_md(const fl_report *r, fl_buf *b);
/* The two log-log charts (inference, generative) into report.html, also
 * kept as report_curves/snr-*.png; nothing without such fields. Errors:
 * creating the folder or writing a PNG (fl_err set). */
fl_status fl_report_snr_html(const fl_report *r, fl_buf *h);

#endif
