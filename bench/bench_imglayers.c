/* bench_imglayers.c - forward + backward time of the image flow layers.
 *
 *   bench_imglayers [BATCH [FEATURES BLOCKS]]     (defaults 64, 64, 4)
 *
 * One layer at a time in a one-layer stack over BATCH images of 4 x 14 x
 * 14 (Real NVP's first scale after a squeeze on Fashion-MNIST), training
 * mode: conv-coupling (affine, checkerboard and channel masks, FEATURES
 * channels, BLOCKS ResNet blocks), invconv, actnorm and batch-norm. Prints
 * the milliseconds per forward + backward, images/s, the GEMM GFLOP/s
 * (counted by the host's gemm), their fraction of the GEMM peak measured
 * on the spot, and the allocation calls during the timed steps (must be
 * 0). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/blas.h"
#include "core/config.h"
#include "core/hostimpl.h"
#include "core/params.h"
#include "core/registry.h"
#include "core/util.h"
#include "model/stack.h"
#include "allocs.h"
#include "peak.h"

enum { C = 4, H = 14, W = 14 };

static void bench(const fl_registry *r, const char *type, const char *sets, uint32_t rows,
                  double peak)
{
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    if (!c) {
        fprintf(stderr, "%s: not registered\n", type);
        return;
    }
    fl_config *cfg = fl_config_new("bench");
    fl_config_put(cfg, "flow", "type", type, 0);
    char label[160];
    snprintf(label, sizeof label, "%s%s%s", type, sets ? " " : "", sets ? sets : "");
    if (sets) {
        char *copy = fl_strdup(sets), *save = NULL;
        for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
            char *as = fl_strfmt("flow.%s", t);
            fl_config_set(cfg, as);
            free(as);
        }
        free(copy);
    }
    const fl_key *tabs[2] = { fl_flow_host_keys, c->cls.base.keys };
    uint32_t ns[2] = { fl_flow_host_nkeys, c->cls.base.n_keys };
    fl_values v;
    if (fl_values_resolve(cfg, "flow", tabs, ns, 2, &v) != FL_OK) {
        fprintf(stderr, "%s: %s\n", label, fl_err_msg());
        fl_config_free(cfg);
        return;
    }
    fl_config_free(cfg);
    const uint32_t dim = C * H * W;
    fl_arena arena = { 0 };
    fl_stack *s = fl_stack_new(&arena, 1, dim, 0, rows);
    if (fl_stack_set_image(s, C, H, W) != FL_OK || fl_stack_push(s, &c->cls.flow, "flow", &v, 0) != FL_OK ||
        fl_arena_finalize(&arena, 1) != FL_OK || fl_stack_ready(s) != FL_OK) {
        fprintf(stderr, "%s: %s\n", label, fl_err_msg());
        fl_stack_free(s);
        fl_arena_free(&arena);
        return;
    }
    /* the zero-initialised last conv would make s and t zero: move off it */
    fl_real *noise = fl_alloc(arena.total * sizeof(fl_real));
    fl_rng_normal(fl_rng_key_make(1, "noise"), 0, 0, arena.total, noise);
    for (size_t i = 0; i < arena.total; i++) arena.theta[i] += (fl_real)0.01 * noise[i];
    fl_free(noise);
    size_t nd = (size_t)rows * dim;
    fl_real *x = fl_alloc(nd * sizeof(fl_real)), *du = fl_alloc(nd * sizeof(fl_real));
    fl_real *ld = fl_alloc(rows * sizeof(fl_real)), *dld = fl_alloc(rows * sizeof(fl_real));
    fl_rng_normal(fl_rng_key_make(1, "x"), 0, 0, nd, x);
    fl_rng_normal(fl_rng_key_make(1, "du"), 0, 0, nd, du);
    for (uint32_t i = 0; i < rows; i++) dld[i] = -1;
    const fl_real *u;
    for (int i = 0; i < 3; i++) { /* warm up (and actnorm's data init) */
        fl_stack_forward(s, rows, FL_MODE_TRAIN, x, NULL, ld, &u);
        fl_stack_backward(s, rows, FL_MODE_TRAIN, NULL, du, dld, NULL, NULL);
    }
    int reps = 0;
    uint64_t f0 = fl_gemm_flops();
    long a0 = fl_bench_allocs();
    fl_bench_allocs_arm(1);
    double t0 = fl_now(), dt;
    do {
        memset(ld, 0, rows * sizeof(fl_real));
        fl_stack_forward(s, rows, FL_MODE_TRAIN, x, NULL, ld, &u);
        fl_stack_backward(s, rows, FL_MODE_TRAIN, NULL, du, dld, NULL, NULL);
        reps++;
        dt = fl_now() - t0;
    } while (dt < 2.0 || reps < 5);
    fl_bench_allocs_arm(0);
    double gf = (double)(fl_gemm_flops() - f0) / dt / 1e9;
    printf("%-52s %8.3f %10.0f %9.1f %7.1f%% %7ld\n", label, 1e3 * dt / reps,
           reps * (double)rows / dt, gf, 100 * gf / peak, fl_bench_allocs() - a0);
    fflush(stdout);
    fl_free(x);
    fl_free(du);
    fl_free(ld);
    fl_free(dld);
    fl_stack_free(s);
    fl_arena_free(&arena);
}

int main(int argc, char **argv)
{
    fl_runtime_init();
    const uint32_t rows = argc > 1 ? (uint32_t)atoi(argv[1]) : 64;
    const int features = argc > 2 ? atoi(argv[2]) : 64, blocks = argc > 3 ? atoi(argv[3]) : 4;
    if (rows == 0 || features <= 0 || blocks < 0) {
        fprintf(stderr, "usage: bench_imglayers [BATCH [FEATURES BLOCKS]]\n");
        return 2;
    }
    fl_registry *r = fl_registry_new();
    fl_registry_load_dir(r, FL_BENCH_PLUGIN_DIR);
    int threads = omp_get_max_threads();
    double peak = fl_bench_gemm_peak(threads);
    printf("# BLAS core %s (OPENBLAS_CORETYPE=%s), %d threads, fl_real=%s\n", fl_blas_core(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset", threads,
           FL_REAL_NAME);
    printf("# measured GEMM peak: %.1f GFLOP/s; %u images of %dx%dx%d, forward + backward, "
           "training mode\n", peak, rows, C, H, W);
    printf("%-52s %8s %10s %9s %8s %7s\n", "layer", "ms/step", "images/s", "GFLOP/s", "of peak",
           "allocs");
    char sets[160];
    static const char *const masks[] = { "checkerboard", "channel" };
    for (int m = 0; m < 2; m++) {
        snprintf(sets, sizeof sets, "mask=%s features=%d blocks=%d", masks[m], features, blocks);
        bench(r, "conv-coupling", sets, rows, peak);
    }
    bench(r, "invconv", NULL, rows, peak);
    bench(r, "actnorm", NULL, rows, peak);
    bench(r, "batch-norm", NULL, rows, peak);
    fl_registry_free(r);
    return 0;
}
