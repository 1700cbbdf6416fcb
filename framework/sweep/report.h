/* report.h - the aggregated report of a sweep directory.
 *
 * Reads every cell's result.json (and failed.txt, metrics.csv) under the
 * sweep directory (a finished cell's eval.json and gradvar.json too, when
 * present: their numeric fields are added as eval_NAME and gv_NAME), groups
 * cells that differ only in the keys left out of the grouping (by default:
 * only in experiment.seed), and writes, each atomically:
 *   report.md    a Markdown table, mean +- standard error of every numeric
 *                field of result.json per group, with the cell count, sorted
 *                by the metric, the best row marked; failed cells listed
 *   report.csv   the same numbers, full precision, one row per group
 *   report.html  self-contained: the table and one chart per group (the
 *                metric's curve from each cell's metrics.csv, one colour per
 *                cell) as base64 PNG data URIs; the PNGs are also kept in
 *                report_curves/ */
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
} fl_report_opts;

/* FL_OK when every key of `group_by` (NULL is fine) is a swept key of `s`;
 * else FL_ERR_INVALID with a message listing the swept keys. */
fl_status fl_report_check_group_by(const fl_sweep *s, const char *group_by);

/* Writes report.md, report.csv, report.html and report_curves/ into `dir`
 * (the sweep directory whose cells `s` lists). Prints the Markdown table to
 * `table` unless it is NULL. Cells without result.json count as failed
 * (with failed.txt) or missing. An explicit metric that no finished cell
 * has is FL_ERR_INVALID; write errors are FL_ERR_IO; fl_err says which. */
fl_status fl_report_write(const char *dir, const fl_sweep *s, const fl_report_opts *o,
                          FILE *table);

#endif
