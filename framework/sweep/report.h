/* report.h - the aggregated report of a sweep directory.
 *
 * Reads every cell's result.json (and failed.txt, metrics.csv) under the
 * sweep directory (a finished cell's eval.json and gradvar.json too, when
 * present: their numeric fields are added as eval_NAME and gv_NAME), groups
 * cells that differ only in the keys left out of the grouping (by default:
 * only in experiment.seed), and writes, each atomically:
 *   report.md    the --set options given to the whole sweep (sets.txt), a
 *                Markdown table, mean +- standard error of every numeric
 *                field per group (duplicated columns left out, or the
 *                chosen columns), with the cell count, sorted by the metric,
 *                the best row marked; failed cells listed; the pivot table
 *                when asked for
 *   report.csv   every field's numbers, full precision, one row per group
 *                (no column left out: it is the data)
 *   report_pivot.csv  the pivot table's numbers, when asked for
 *   report.html  the same tables, charts that overlay the groups' curves of
 *                the metric (from each cell's metrics.csv, one colour per
 *                group, a legend naming them) as base64 PNG data URIs (PNG
 *                and SVG also kept in report_curves/), the pivot chart, and
 *                links to every cell's pictures */
#ifndef FL_REPORT_H
#define FL_REPORT_H

#include <stdio.h>

#include "output/json.h" /* fl_json_numbers, for the report's callers */
#include "sweep/sweep.h"
#include "core/util.h"

typedef struct fl_report_opts {
    /* Field to sort by. NULL: the sweep's `metric`, else test_nll when a
     * cell has it, else the first numeric field. */
    const char *metric;
    /* -1 lower is better, +1 higher is better, 0: the sweep's `direction`,
     * else max for fields whose '_'-separated words include ll, elbo,
     * accuracy, likelihood, iwae, bound, snr or ess (test_ll_k5000,
     * eval_log_likelihood) unless the last word is se, min otherwise (nll,
     * loss, seconds, *_se). */
    int direction;
    /* Swept keys that tell rows apart, blank- or comma-separated (each must
     * be a swept key: check with fl_report_check_group_by). NULL: every
     * swept key except experiment.seed. */
    const char *group_by;
    /* Fields shown in report.md, report.html and the printed table, in this
     * order, comma- or blank-separated (each must be a field of some cell).
     * NULL: every field but those that repeat a swept key or an earlier
     * field in every finished cell (k and estimator.k, test_log_likelihood
     * and eval_log_likelihood), unless all_columns is 1. */
    const char *columns;
    int all_columns;
    /* The pivot table (all three or none): mean +- standard error of field
     * pivot_metric over the finished cells of each pair of values of the
     * swept keys pivot_rows and pivot_cols (two different swept keys),
     * averaged over every other swept key. */
    const char *pivot_rows, *pivot_cols, *pivot_metric;
} fl_report_opts;

/* FL_OK when every key of `group_by` (NULL is fine) is a swept key of `s`;
 * else FL_ERR_INVALID with a message listing the swept keys. */
fl_status fl_report_check_group_by(const fl_sweep *s, const char *group_by);

/* FL_OK when the options that name swept keys name swept keys of `s`
 * (--group-by, and --pivot's ROWS and COLS, which must differ); else
 * FL_ERR_INVALID with a message naming the option and listing the swept
 * keys. Fields (--columns, --metric, --pivot's METRIC) are checked by
 * fl_report_write, which knows them. */
fl_status fl_report_check_opts(const fl_sweep *s, const fl_report_opts *o);

/* Writes report.md, report.csv, report.html, report_curves/ (and
 * report_pivot.csv with a pivot) into `dir` (the sweep directory whose
 * cells `s` lists). Prints the Markdown table (and the pivot table) to
 * `table` unless it is NULL. Cells without result.json count as failed
 * (with failed.txt) or missing. An explicit metric, column or pivot metric
 * that no finished cell has is FL_ERR_INVALID (the message lists the
 * fields); write errors are FL_ERR_IO; fl_err says which. */
fl_status fl_report_write(const char *dir, const fl_sweep *s, const fl_report_opts *o,
                          FILE *table);

#endif
