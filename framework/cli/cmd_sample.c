/* cmd_sample.c - `flowlab sample`: draw from a trained model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/experiment.h"
#include "tasks/task_density.h"
#include "tasks/task_vae.h"
#include "tasks/task_vi.h"
#include "core/util.h"

static const char usage[] =
    "usage: flowlab sample RUN_DIR -n N [-o FILE] [--seed S] [--plugin PATH]...\n"
    "\n"
    "Rebuilds the model from RUN_DIR/config.ini, loads RUN_DIR/checkpoint.flc and\n"
    "writes N samples as CSV (header x0,x1,...) to FILE (atomically) or stdout.\n"
    "Samples come from the inverse flow applied to standard normal noise drawn\n"
    "from seed S (default 0).\n";

int fl_cmd_sample(fl_cli *cli, int argc, char **argv)
{
    const char *dir = NULL, *outp = NULL;
    long long n = -1;
    unsigned long long seed = 0;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            errno = 0;
            n = strtoll(argv[++i], &end, 10);
            if (*end || errno || n <= 0 || n > 100000000) {
                fprintf(stderr, "flowlab sample: error: -n expects an integer in [1, 1e8]\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = fl_cli_strtoull(argv[++i], &end);
            if (*end) {
                fprintf(stderr, "flowlab sample: error: --seed expects an integer\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            outp = argv[++i];
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "flowlab sample: error: unexpected argument '%s'\n%s", argv[i], usage);
            return FL_EXIT_USAGE;
        } else {
            dir = argv[i];
        }
    }
    if (!dir || n < 0) {
        fprintf(stderr, "flowlab sample: error: need RUN_DIR and -n N\n%s", usage);
        return FL_EXIT_USAGE;
    }
    fl_registry *reg;
    fl_experiment *e;
    fl_real *x = NULL;
    fl_buf b = { 0 };
    fl_status st = fl_cli_load_run(cli, dir, &reg, &e);
    if (st == FL_OK) {
        x = fl_alloc((size_t)n * (e->vi ? e->vi->info.dim : e->info.dim) * sizeof(fl_real));
        if (!x) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK && e->vae) {
        /* decoder means of prior samples, in chunks the model was sized for */
        const uint32_t chunk = 1000;
        for (long long i = 0; st == FL_OK && i < n; i += chunk) {
            uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
            char nm[64];
            snprintf(nm, sizeof nm, "sample.%lld", i / chunk);
            st = fl_vae_sample(e, m, fl_rng_key_make(seed, nm), x + (size_t)i * e->info.dim);
        }
    } else if (st == FL_OK && e->vi) {
        /* samples of the fitted posterior q */
        st = fl_vi_sample(e, (uint64_t)n, fl_rng_key_make(seed, "sample"), x, NULL);
    } else if (st == FL_OK) {
        st = fl_density_sample(e, (uint64_t)n, fl_rng_key_make(seed, "sample"), x);
    }
    if (st == FL_OK) {
        uint32_t d = e->vi ? e->vi->info.dim : e->info.dim;
        for (uint32_t j = 0; j < d; j++) fl_buf_printf(&b, j ? ",x%u" : "x%u", j);
        fl_buf_printf(&b, "\n");
        for (long long r = 0; r < n; r++)
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
