/* cmd_logprob.c - `flowlab logprob`: log p(x) of a user's own rows under a
 * trained density or vae run (tasks/logprob.h). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/log.h"
#include "core/util.h"
#include "model/experiment.h"
#include "tasks/logprob.h"
#include "tasks/rows.h"
#include "tasks/task.h"

static const char usage[] =
    "usage: flowlab logprob RUN_DIR --in FILE.csv|FILE.npy [--out FILE] [--k K]\n"
    "                       [--plugin PATH]...\n"
    "\n"
    "Rebuilds the model of RUN_DIR and writes log p(x) in nats of every row of\n"
    "FILE as CSV (header row,log_prob; ,bits_per_dim added for dequantized image\n"
    "runs) to --out FILE (atomically) or stdout, with 6 decimals.\n"
    "\n"
    "FILE: CSV (one row per line, comma-separated numbers, an optional header\n"
    "line) or a NumPy .npy array (format 1.0-3.0, C order, little-endian\n"
    "float32, float64 or uint8, shape (n, dim) or (n,)); uint8 values are read\n"
    "as the numbers 0..255. Each row must have the run's data width (an image:\n"
    "c*h*w values in the data set's order and scale).\n"
    "\n"
    "density runs: exact log p(x), through the run's [data] preprocessing with\n"
    "its Jacobian. A dequantized (image) run takes levels k/255 in [0, 1] and\n"
    "gives log P(x) of the 8-bit image: one uniform dequantization draw per value\n"
    "from the fixed evaluation stream, as the run's test NLL, so -log_prob /\n"
    "(dim ln 2) is its bits/dim.\n"
    "vae runs: the IWAE-K estimate of log p(x) (K default: the run's [eval] k),\n"
    "row i with the noise `flowlab eval` gives the point at index i.\n"
    "\n"
    "Exit codes: 2 bad command line, 3 a run without log p(x) (vi) or --k on a\n"
    "density run, 5 a missing run, an unreadable FILE or rows of the wrong width.\n";

int fl_cmd_logprob(fl_cli *cli, int argc, char **argv)
{
    const char *dir = NULL, *inp = NULL, *outp = NULL;
    unsigned long long k = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--in") == 0 && i + 1 < argc) {
            inp = argv[++i];
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            outp = argv[++i];
        } else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc) {
            if (!fl_cli_option_u64("logprob", "--k", argv[++i], 1, 1ull << 24, &k))
                return FL_EXIT_USAGE;
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "flowlab logprob: error: unexpected argument '%s'\n%s", argv[i],
                    usage);
            return FL_EXIT_USAGE;
        } else {
            dir = argv[i];
        }
    }
    if (!dir || !inp) {
        fprintf(stderr, "flowlab logprob: error: need RUN_DIR and --in FILE\n%s", usage);
        return FL_EXIT_USAGE;
    }
    fl_registry *reg = NULL;
    fl_experiment *e = NULL;
    fl_rows rows = { 0 };
    double *lp = NULL;
    fl_buf b = { 0 };
    fl_status st = fl_cli_load_run(cli, dir, &reg, &e);
    if (st == FL_OK && !fl_task_of(e)->logprob) st = fl_logprob(e, NULL, 0, 0, 0, NULL);
    if (st == FL_OK) st = fl_rows_read(inp, &rows);
    if (st == FL_OK && rows.dim != e->info.dim) {
        fl_err("%s: rows of %u values; the run %s was trained on %s rows of %u values", inp,
               rows.dim, dir, e->data_type, e->info.dim);
        st = FL_ERR_IO; /* bad input: exit 5 */
    }
    if (st == FL_OK) {
        lp = malloc((rows.n ? rows.n : 1) * sizeof *lp);
        if (!lp) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) {
        st = fl_logprob(e, rows.x, rows.n, rows.dim, k, lp);
        if (st != FL_OK) fl_err_prefix("%s", inp);
    }
    if (st == FL_OK) {
        char what[160];
        fl_logprob_describe(e, k, what, sizeof what);
        fl_log(FL_LOG_INFO, "%s: %llu rows, %s", inp, (unsigned long long)rows.n, what);
        const double bpd = fl_logprob_bpd_factor(e);
        fl_buf_printf(&b, bpd ? "row,log_prob,bits_per_dim\n" : "row,log_prob\n");
        for (uint64_t i = 0; i < rows.n; i++) {
            fl_buf_printf(&b, "%llu,%.6f", (unsigned long long)i, lp[i]);
            if (bpd) fl_buf_printf(&b, ",%.6f", -lp[i] * bpd);
            fl_buf_printf(&b, "\n");
        }
        if (b.failed) st = FL_ERR_NOMEM;
        else if (outp) st = fl_write_atomic(outp, b.data, b.len);
        else if (fwrite(b.data, 1, b.len, stdout) != b.len) {
            fl_err("cannot write to stdout");
            st = FL_ERR_IO;
        }
    }
    int rc = st == FL_OK ? FL_EXIT_OK : fl_cli_fail(st);
    fl_buf_free(&b);
    free(lp);
    fl_rows_free(&rows);
    fl_experiment_free(e);
    fl_registry_free(reg);
    return rc;
}
