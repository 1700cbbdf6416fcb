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
#include "flowbench.h"
#include "peak.h"

enum { C = 4, H = 14, W = 14 };

static void bench(const fl_registry *r, const char *type, const char *sets, uint32_t rows,
                  double peak)
{
    char label[160];
    snprintf(label, sizeof label, "%s%s%s", type, sets ? " " : "", sets ? sets : "");
    fl_bench_step t;
    /* noise: the zero-initialised last conv would make s and t zero */
    if (fl_bench_flow_step(r, type, sets, C, H, W, rows, 0.01, 2.0, &t) != 0) return;
    printf("%-52s %8.3f %10.0f %9.1f %7.1f%% %7ld\n", label, 1e3 * t.seconds / t.reps,
           t.reps * (double)rows / t.seconds, t.gflops, 100 * t.gflops / peak, t.allocs);
    fflush(stdout);
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
