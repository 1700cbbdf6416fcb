/* metrics.h - the one metrics module: metrics.csv's column spec, its
 * writer and its reader.
 *
 * metrics.csv is a header line "step,NAME,NAME,..." and one row per
 * evaluation: the step (an integer), then each column's value printed with
 * its format, or an empty field for "no value" (absent, or not finite).
 * The writer keeps the whole file in memory and the caller saves it
 * (atomically) after each row, so a killed run leaves a whole file. The
 * reader gives named columns of doubles; resume, the curves of `flowlab
 * plot` and the charts of `flowlab report` all read through it. */
#ifndef FL_METRICS_H
#define FL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

/* ---- writer ------------------------------------------------------------ */

/* One column after `step`. */
typedef struct fl_metrics_col {
    const char *name;  /* header name, e.g. "test_nll" (no ',', no line break) */
    const char *fmt;   /* one printf conversion of a double, e.g. "%.6f", "%.6g" */
} fl_metrics_col;

/* A metrics.csv being written. */
typedef struct fl_metrics {
    const fl_metrics_col *cols; /* the columns after step (the caller's; must outlive this) */
    size_t n_cols;              /* how many */
    fl_buf text;                /* the file so far: the header, then the rows (owned) */
} fl_metrics;

/* An empty file with the columns `cols` (borrowed). Allocates nothing;
 * free with fl_metrics_free. Any time. */
void fl_metrics_init(fl_metrics *m, const fl_metrics_col *cols, size_t n_cols);

/* Appends one row: `step`, then v[0 .. n_cols-1] each with its column's
 * format, an empty field for a value that is not finite (pass NAN for "no
 * value"). Writes the header first when the text is empty (a fresh run; a
 * resumed run's text starts with the old file's header, see
 * fl_metrics_keep). Errors show in m->text.failed (fl_metrics_save reports
 * them). */
void fl_metrics_row(fl_metrics *m, uint64_t step, const double *v);

/* Writes the text to DIR/metrics.csv atomically (fl_rundir_write).
 * FL_ERR_NOMEM when an earlier append failed, else that write's status;
 * fl_err says which. */
fl_status fl_metrics_save(const fl_metrics *m, const char *dir);

/* Frees the text; m can be initialised again. */
void fl_metrics_free(fl_metrics *m);

/* Resume: appends to `out` the header of the metrics.csv `old` (len bytes)
 * and, verbatim, its rows whose step is at most `step0` (rows after a
 * checkpoint are the resumed run's to write again); a kept row without a
 * final newline gets one. *seconds gets the last kept row's
 * train_seconds (0 without one, or without that column). A malformed `old`
 * (no step column) keeps nothing: the run starts a fresh file. Errors show
 * in out->failed. */
void fl_metrics_keep(fl_buf *out, const char *old, size_t len, uint64_t step0, double *seconds);

/* ---- reader ------------------------------------------------------------ */

/* A metrics.csv read into columns. */
typedef struct fl_metrics_table {
    size_t n_cols;      /* header columns, step included */
    char **names;       /* n_cols names, as in the header (owned) */
    size_t n_rows;      /* rows kept: those whose step is a finite number */
    double **col;       /* col[c][r]: column c of row r; NAN when the field is
                           empty, not a number, or missing (a short row) (owned) */
    size_t *row_start;  /* where row r's line starts in the text that was
                           parsed, and its length without the line break:
                           for copying rows verbatim (owned) */
    size_t *row_len;
} fl_metrics_table;

/* Parses metrics.csv text (`len` bytes, need not be NUL-terminated):
 * fields are split at ',', lines at '\n' (a trailing '\r' is dropped),
 * blank lines are skipped, and so is every row whose `step` is not a
 * number. A field of 512 characters or more reads as NAN. FL_OK, or
 * FL_ERR_FORMAT when there is no header or it has no `step` column,
 * FL_ERR_NOMEM, with fl_err set (naming `what`, a path for messages) and
 * *t empty. On FL_OK free *t with fl_metrics_table_free. Any time, any
 * thread. */
fl_status fl_metrics_parse(const char *text, size_t len, const char *what, fl_metrics_table *t);

/* fl_metrics_parse of the file at `path`; a missing or unreadable file is
 * fl_read_file's error (FL_ERR_IO). */
fl_status fl_metrics_read(const char *path, fl_metrics_table *t);

/* The index of column `name`, or -1. */
long fl_metrics_find(const fl_metrics_table *t, const char *name);

/* Column `name` (n_rows values), or NULL when the header has no such
 * column. Points into t. */
const double *fl_metrics_column(const fl_metrics_table *t, const char *name);

/* Frees the table; *t becomes empty (freeing an empty table is fine). */
void fl_metrics_table_free(fl_metrics_table *t);

/* The value of column `name` in the row of step `step` of the metrics.csv
 * text `text` (len bytes, header first): NAN when there is no such row or
 * column, or the field is empty. The last row of that step counts. For a
 * trainer's closing "was the last step's row written already" check. */
double fl_metrics_lookup(const char *text, size_t len, uint64_t step, const char *name);

#endif
