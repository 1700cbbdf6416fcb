/* cmd_sample.c - `flowlab sample`: draw from a trained model. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "train/checkpoint.h"
#include "model/experiment.h"
#include "tasks/task.h"
#include "core/util.h"

static const char usage[] =
    "usage: flowlab sample RUN_DIR -n N [-o FILE] [--seed S] [--best] [--plugin PATH]...\n"
    "\n"
    "Rebuilds the model from RUN_DIR/config.ini, loads RUN_DIR/checkpoint.flc and\n"
    "writes N samples as CSV (header x0,x1,...) to FILE (atomically) or stdout.\n"
    "Samples come from the inverse flow applied to standard normal noise drawn\n"
    "from seed S (default 0). --best loads RUN_DIR/best.flc instead, the model of\n"
    "the evaluation with the best validation figure ([train] keep_best).\n";

int fl_cmd_sample(fl_cli *cli, int argc, char **argv)
{
    const char *dir = NULL, *outp = NULL;
    unsigned long long n = 0; /* 0: no -n given */
    unsigned long long seed = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            if (!fl_cli_option_u64("sample", "-n", argv[++i], 1, 100000000, &n))
                return FL_EXIT_USAGE;
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            if (!fl_cli_option_u64("sample", "--seed", argv[++i], 0, ULLONG_MAX, &seed))
                return FL_EXIT_USAGE;
        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            outp = argv[++i];
        } else if (strcmp(argv[i], "--best") == 0) {
            cli->best = 1;
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "flowlab sample: error: unexpected argument '%s'\n%s", argv[i], usage);
            return FL_EXIT_USAGE;
        } else {
            dir = argv[i];
        }
    }
    if (!dir || n == 0) {
        fprintf(stderr, "flowlab sample: error: need RUN_DIR and -n N\n%s", usage);
        return FL_EXIT_USAGE;
    }
    fl_registry *reg;
    fl_experiment *e;
    fl_real *x = NULL;
    fl_buf b = { 0 };
    fl_status st = fl_cli_load_run(cli, dir, &reg, &e);
    const fl_task *t = st == FL_OK ? fl_task_of(e) : NULL;
    if (t && !t->sample) {
        fl_err("%s: the %s task does not sample", dir, t->model.name);
        st = FL_ERR_UNSUPPORTED;
    }
    if (st == FL_OK) st = fl_params_finite(&e->arena, dir); /* a diverged run's checkpoint */
    const uint32_t d = st == FL_OK ? t->sample_dim(e) : 0;
    if (st == FL_OK) {
        x = fl_alloc((size_t)n * d * sizeof(fl_real));
        if (!x) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) st = t->sample(e, (uint64_t)n, seed, x);
    for (size_t i = 0; st == FL_OK && i < (size_t)n * d; i++)
        if (!isfinite(x[i])) { /* finite parameters, yet a sample overflowed */
            fl_err("%s: sample %zu, coordinate %zu is not finite (%g): nothing written",
                   dir, i / d, i % d, (double)x[i]);
            st = FL_ERR_NUMERIC;
        }
    if (st == FL_OK) {
        for (uint32_t j = 0; j < d; j++) fl_buf_printf(&b, j ? ",x%u" : "x%u", j);
        fl_buf_printf(&b, "\n");
        for (unsigned long long r = 0; r < n; r++)
            for (uint32_t j = 0; j < d; j++)
                fl_buf_printf(&b, j + 1 < d ? "%.7g," : "%.7g\n", (double)x[(size_t)r * d + j]);
        if (b.failed) st = FL_ERR_NOMEM;
        else if (outp) st = fl_write_atomic(outp, b.data, b.len);
        else if (fwrite(b.data, 1, b.len, stdout) != b.len) {
            fl_err("cannot write the samples to stdout");
            st = FL_ERR_IO;
        }
    }
    int rc = st == FL_OK ? FL_EXIT_OK : fl_cli_fail(st);
    fl_buf_free(&b);
    fl_free(x);
    fl_experiment_free(e);
    fl_registry_free(reg);
    return rc;
}
