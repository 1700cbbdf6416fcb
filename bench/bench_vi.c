/* bench_vi.c - training speed of the vi task at Rezende & Mohamed's U1
 * size: 32 planar layers, batch 256, k = 1, 2 dimensions.
 *
 *   bench_vi [STEPS [REPS]]            (defaults 3000, 5)
 *
 * Runs the U1 reference configuration (experiments/vi/u1-planar-k32.ini,
 * with evaluation only at the end) REPS times and prints the training
 * loop's steps/s for each and their median (the loop only: the reference
 * log Z and the final evaluation are not timed). Also checks that the
 * training step allocates nothing: the number of allocation calls
 * (bench/allocs.c) of a whole run (after a warm-up run) must not grow with the number
 * of steps. The estimator is the
 * built-in "elbo", or the test plugin's "t-elbo" when that is missing.
 * Not a test: timings depend on the machine and its load. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "model/experiment.h"
#include "compute/blas.h"
#include "core/log.h"
#include "core/registry.h"
#include "tasks/task_vi.h"
#include "core/util.h"
#include "allocs.h"

static const char config[] =
    "[experiment]\ntask = vi\nseed = 1\n"
    "[target]\ntype = u1\n"
    "[estimator]\ntype = elbo\nk = 1\n"
    "[flow.1]\ntype = planar\nrepeat = 32\n"
    "[vi]\nanneal = true\nelbo_samples = 10000\nlogz_samples = 10000\ngrid = 100\n"
    "[train]\nbatch = 256\nlr = 3e-3\neval_every = 0\n";

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One run of `steps` steps: steps/s of the loop, ELBO, malloc calls. */
static int run(const fl_registry *r, const char *est, long steps, double *sps, double *elbo,
               long *n_alloc)
{
    fl_config *c = NULL;
    char set1[64], set2[64];
    snprintf(set1, sizeof set1, "train.steps=%ld", steps);
    snprintf(set2, sizeof set2, "estimator.type=%s", est);
    fl_status st = fl_config_parse("bench_vi", config, &c);
    if (st == FL_OK) st = fl_config_set(c, set1);
    if (st == FL_OK) st = fl_config_set(c, set2);
    fl_experiment *e = NULL;
    if (st == FL_OK) st = fl_experiment_new(r, c, &e);
    else fl_config_free(c);
    fl_vi_result res;
    const long a0 = fl_bench_allocs();
    fl_bench_allocs_arm(1);
    if (st == FL_OK) st = fl_vi_train(e, NULL, 0, &res);
    fl_bench_allocs_arm(0);
    if (st != FL_OK) {
        fprintf(stderr, "bench_vi: %s\n", fl_err_msg());
        fl_experiment_free(e);
        return 1;
    }
    *sps = res.steps_per_s;
    *elbo = res.elbo;
    *n_alloc = fl_bench_allocs() - a0;
    fl_experiment_free(e);
    return 0;
}

int main(int argc, char **argv)
{
    long steps = argc > 1 ? atol(argv[1]) : 3000;
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (steps < 1 || reps < 1 || reps > 100) {
        fprintf(stderr, "usage: bench_vi [STEPS [REPS]]\n");
        return 2;
    }
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = fl_registry_new();
    fl_registry_load_dir(r, FL_BENCH_PLUGIN_DIR);
    const char *est = "elbo";
    if (!fl_registry_find(r, FL_KIND_ESTIMATOR, "elbo")) {
        fl_registry_load(r, FL_BENCH_TEST_DIR "/vi_estimators.so");
        est = "t-elbo";
    }
    printf("vi U1: 32 planar layers, batch 256, k = 1, estimator %s, %ld steps; OpenMP max "
           "threads %d, BLAS core %s, fl_real %s\n",
           est, steps, omp_get_max_threads(), fl_blas_core(), FL_REAL_NAME);
    double sps[100], elbo;
    long a_long, a_short;
    double s_short, e_short;
    for (int w = 0; w < 2; w++) /* the first run warms up lazy allocations */
        if (run(r, est, steps > 100 ? 100 : 1, &s_short, &e_short, &a_short)) return 1;
    for (int i = 0; i < reps; i++) {
        if (run(r, est, steps, &sps[i], &elbo, &a_long)) return 1;
        printf("  run %d: %8.0f steps/s  (ELBO %.4f)\n", i + 1, sps[i], elbo);
    }
    qsort(sps, (size_t)reps, sizeof *sps, cmp);
    printf("median %.0f steps/s (%.1f us/step); allocations per run: %ld at %ld steps, %ld "
           "at %ld: %s\n",
           sps[reps / 2], 1e6 / sps[reps / 2], a_short, steps > 100 ? 100L : 1L, a_long, steps,
           a_long == a_short ? "the step allocates nothing" : "THE STEP ALLOCATES");
    fl_registry_free(r);
    return a_long == a_short ? 0 : 1;
}
