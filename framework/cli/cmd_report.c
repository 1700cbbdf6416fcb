/* cmd_report.c - `flowlab report`: aggregate a sweep directory's cells. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "sweep/report.h"
#include "sweep/sweep.h"
#include "core/util.h"

static const char usage[] =
    "usage: flowlab report SWEEP_DIR [--metric NAME] [--direction min|max] [--group-by KEYS]\n"
    "                      [--columns FIELDS | --all-columns] [--pivot ROWS COLS METRIC]\n"
    "\n"
    "Aggregates the cells of a sweep directory (made by flowlab sweep, which\n"
    "also runs this at its end). Cells that differ only in experiment.seed form\n"
    "one row: the mean and standard error of every numeric field of their\n"
    "result.json (eval.json and gradvar.json too, as eval_F and gv_F), and n,\n"
    "the number of finished cells. Rows are sorted by the metric, best first.\n"
    "Writes into SWEEP_DIR, atomically:\n"
    "  report.md     the sweep's --set options, the Markdown table (columns that\n"
    "                repeat a swept key or another column in every cell left out\n"
    "                and named), the pivot table, failed cells with their error\n"
    "  report.csv    every field, one row per group: rank,best,KEYS...,n,failed,\n"
    "                F_mean,F_se,...\n"
    "  report.html   the tables, charts overlaying the rows' training curves with\n"
    "                a legend (PNG inlined; PNG and SVG in report_curves/), the\n"
    "                pivot chart, and links to every cell's pictures\n"
    "  report_pivot.csv  with --pivot: ROWS, then COLS=V_mean, _se, _n per value\n"
    "\n"
    "  --metric NAME        result.json field to sort by (default: the sweep's\n"
    "                       `metric`, else test_nll, else the first field)\n"
    "  --direction min|max  lower or higher is better (default: the sweep's\n"
    "                       `direction`, else max for ll/elbo/accuracy fields, else min)\n"
    "  --group-by KEYS      swept keys that make rows, comma-separated (default:\n"
    "                       every swept key except experiment.seed); the others\n"
    "                       are averaged over\n"
    "  --columns FIELDS     the fields shown in report.md/.html and printed, in this\n"
    "                       order, comma-separated (report.csv keeps every field)\n"
    "  --all-columns        show repeated columns too\n"
    "  --pivot ROWS COLS METRIC\n"
    "                       also a table of METRIC (mean +- standard error) with a\n"
    "                       row per value of swept key ROWS and a column per value\n"
    "                       of swept key COLS, averaged over the other swept keys,\n"
    "                       and, when COLS is numeric, a chart of it\n";

int fl_cmd_report(fl_cli *cli, int argc, char **argv)
{
    (void)cli;
    const char *dir = NULL;
    fl_report_opts o = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (!strcmp(a, "--metric") && more) {
            o.metric = argv[++i];
        } else if (!strcmp(a, "--group-by") && more) {
            o.group_by = argv[++i];
        } else if (!strcmp(a, "--columns") && more) {
            o.columns = argv[++i];
        } else if (!strcmp(a, "--all-columns")) {
            o.all_columns = 1;
        } else if (!strcmp(a, "--pivot")) {
            if (i + 3 >= argc) {
                fprintf(stderr, "flowlab report: error: --pivot needs ROWS COLS METRIC\n%s", usage);
                return FL_EXIT_USAGE;
            }
            o.pivot_rows = argv[++i];
            o.pivot_cols = argv[++i];
            o.pivot_metric = argv[++i];
        } else if (!strcmp(a, "--direction") && more) {
            const char *d = argv[++i];
            if (strcmp(d, "min") && strcmp(d, "max")) {
                fprintf(stderr, "flowlab report: error: --direction '%s': expected min or max\n", d);
                return FL_EXIT_USAGE;
            }
            o.direction = !strcmp(d, "min") ? -1 : 1;
        } else if (a[0] == '-' || dir) {
            fprintf(stderr, "flowlab report: error: unexpected argument '%s'\n%s", a, usage);
            return FL_EXIT_USAGE;
        } else {
            dir = a;
        }
    }
    if (!dir) {
        fprintf(stderr, "flowlab report: error: need SWEEP_DIR\n%s", usage);
        return FL_EXIT_USAGE;
    }
    char *path = fl_strfmt("%s/sweep.ini", dir);
    if (!path) return FL_EXIT_FAILURE;
    fl_sweep *s = NULL;
    fl_status st = fl_sweep_load(path, &s);
    if (st == FL_ERR_IO)
        fl_err("%s: not a sweep directory (no readable sweep.ini; `flowlab sweep` makes one)", dir);
    int rc;
    if (st == FL_OK && o.columns && o.all_columns) {
        fprintf(stderr, "flowlab report: error: --columns and --all-columns exclude each other\n");
        rc = FL_EXIT_USAGE;
    } else if (st == FL_OK && fl_report_check_opts(s, &o) != FL_OK) {
        fl_cli_fail(FL_ERR_INVALID); /* prints the message; a bad option is a usage error */
        rc = FL_EXIT_USAGE;
    } else {
        if (st == FL_OK) st = fl_report_write(dir, s, &o, stdout);
        if (st == FL_OK)
            printf("wrote %s/report.{md,csv,html}%s\n", dir, o.pivot_rows ? " and report_pivot.csv" : "");
        rc = st == FL_OK ? FL_EXIT_OK : fl_cli_fail(st);
    }
    fl_sweep_free(s);
    free(path);
    return rc;
}
