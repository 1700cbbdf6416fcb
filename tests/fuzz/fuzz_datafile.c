/* fuzz_datafile.c - libFuzzer harness of the data-file readers, the
 * plugins of plugins/datasets loaded from the build (as `flowlab run` loads
 * them): the input is written to a file and a one-layer experiment is built
 * on it, then every row of each split (up to 4096) is read and must be
 * finite. Compiled once per reader: FUZZ_FORMAT 0 = csv, 1 = amat (4x4
 * images), 2 = idx; an amat or idx input that starts with the gzip magic is
 * named .gz, so both the plain and the gzip paths are fuzzed. */
#include "fuzz_common.h"

#include <math.h>

#include "compute/blas.h"
#include "core/config.h"
#include "core/log.h"
#include "core/registry.h"
#include "model/experiment.h"

#ifndef FUZZ_FORMAT
#error "compile with -DFUZZ_FORMAT=0 (csv), 1 (amat) or 2 (idx)"
#endif

static fl_registry *reg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fl_runtime_init();
    fl_log_set_level(FL_LOG_ERROR);
    reg = fl_registry_new();
    if (!reg || fl_registry_load_dir(reg, FUZZ_PLUGIN_DIR) != 0 ||
        !fl_registry_find(reg, FL_KIND_DATASET, "csv")) {
        fprintf(stderr, "fuzz_datafile: cannot load the plugins of %s\n", FUZZ_PLUGIN_DIR);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int gz = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    const char *suffix = FUZZ_FORMAT == 0 ? ".csv"
                         : FUZZ_FORMAT == 1 ? (gz ? ".amat.gz" : ".amat")
                                            : (gz ? ".idx.gz" : ".idx");
    const char *path = fuzz_write_input(data, size, suffix);
    char *text;
    if (FUZZ_FORMAT == 0)
        text = fl_strfmt("[data]\ntype = csv\npath = %s\n", path);
    else if (FUZZ_FORMAT == 1)
        text = fl_strfmt("[data]\ntype = amat\ntrain = %s\ntest = %s\nheight = 4\nwidth = 4\n",
                         path, path);
    else
        text = fl_strfmt("[data]\ntype = idx\ntrain_images = %s\ntest_images = %s\n"
                         "valid_size = 1\nbinarize = none\n",
                         path, path);
    char *full = fl_strfmt("%s[flow.1]\ntype = reverse\n[train]\nsteps = 0\nbatch = 1\n"
                           "[eval]\nbatch = 1\n",
                           text);
    fl_config *c = NULL;
    fl_experiment *e = NULL;
    fl_status st = fl_config_parse("fuzz.ini", full, &c);
    FUZZ_CHECK(st == FL_OK, "the harness's own experiment: %s", fl_err_msg());
    st = fl_experiment_new(reg, c, &e); /* takes c */
    if (st != FL_OK) {
        FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a refused file set no message");
        if (e) fl_experiment_free(e);
    } else {
        FUZZ_CHECK(e->info.dim > 0, "dimension 0");
        fl_real *rows = malloc(16 * (size_t)e->info.dim * sizeof *rows);
        if (!rows) abort();
        for (int s = 0; s < 3; s++) {
            if ((e->info.drawn >> s) & 1u || e->info.n[s] == 0) continue;
            /* every row, up to 4096, 16 at a time */
            uint64_t n = e->info.n[s] < 4096 ? e->info.n[s] : 4096;
            for (uint64_t r0 = 0; r0 < n; r0 += 16) {
                uint64_t idx[16];
                uint32_t m = (uint32_t)(n - r0 < 16 ? n - r0 : 16);
                for (uint32_t j = 0; j < m; j++) idx[j] = r0 + j;
                st = e->dcls->read(e->dself, (fl_split)s, idx, m, rows);
                FUZZ_CHECK(st == FL_OK, "split %d: %s", s, fl_err_msg());
                for (size_t k = 0; k < m * (size_t)e->info.dim; k++)
                    FUZZ_CHECK(isfinite((double)rows[k]), "split %d row %llu value %zu is not finite",
                               s, (unsigned long long)(r0 + k / e->info.dim), k % e->info.dim);
            }
        }
        free(rows);
        fl_experiment_free(e);
    }
    free(full);
    free(text);
    return 0;
}
