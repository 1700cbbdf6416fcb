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
 * 0).
 *
 *   bench_imglayers realnvp [BATCH]
 *
 * The conv-coupling layers of experiments/images/short/realnvp-fashion.ini
 * (F = 32, B = 2, weight norm) at each of their shapes, times their
 * repeats: user CPU ms per training step of each (run it with
 * OMP_NUM_THREADS=1 on a shared machine), their sum (the couplings' part
 * of a training step), and the convolutions' GFLOP/s by count (forward,
 * dW and dX: 3 x 2 flops per multiply-add) per CPU second, against a
 * 1024^3 sgemm timed the same way in the same run. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

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

static double user_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec;
}

/* The 1024^3 sgemm (fl_gemm, on the calling thread) in GFLOP/s of user CPU
 * time: the best of 5, so that it compares with the CPU-time rates below
 * on a shared machine. */
static double gemm_peak_cpu(void)
{
    const int n = 1024;
    fl_real *a = fl_alloc((size_t)n * n * sizeof(fl_real)), *b = fl_alloc((size_t)n * n * sizeof(fl_real));
    fl_real *c = fl_alloc((size_t)n * n * sizeof(fl_real));
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (fl_real)((i % 13) * 0.01);
        b[i] = (fl_real)((i % 7) * 0.01);
    }
    fl_gemm(0, 0, n, n, n, 1, a, n, b, n, 0, c, n); /* warm up */
    double best = 0;
    for (int r = 0; r < 5; r++) {
        const double t0 = user_cpu();
        fl_gemm(0, 0, n, n, n, 1, a, n, b, n, 0, c, n);
        const double dt = user_cpu() - t0;
        if (dt > 0 && 2.0 * n * n * n / dt / 1e9 > best) best = 2.0 * n * n * n / dt / 1e9;
    }
    fl_free(a);
    fl_free(b);
    fl_free(c);
    return best;
}

/* The short Real NVP recipe's couplings: mask, input shape, repeats. */
static int realnvp(const fl_registry *r, uint32_t rows)
{
    static const struct { const char *mask; uint32_t c, h, w, rep; } L[] = {
        { "checkerboard", 1, 28, 28, 3 }, { "channel", 4, 14, 14, 3 },
        { "checkerboard", 2, 14, 14, 3 }, { "channel", 8, 7, 7, 3 },
        { "checkerboard", 4, 7, 7, 4 },
    };
    const uint32_t F = 32, B = 2;
    printf("# Real NVP short couplings (F=%u, B=%u), %u images, %d threads, fl_real=%s; "
           "CPU = user time of the process\n", F, B, rows, omp_get_max_threads(), FL_REAL_NAME);
    printf("%-34s %4s %10s %10s %10s %9s %7s\n", "layer", "rep", "cpu ms", "wall ms",
           "GFLOP", "GFLOP/s", "allocs");
    const double peak = gemm_peak_cpu();
    printf("# sgemm 1024^3 on one thread (BLAS core %s): %.1f GFLOP/s of user CPU time\n",
           fl_blas_core(), peak);
    double tc = 0, tw = 0, tf = 0;
    for (size_t l = 0; l < sizeof L / sizeof L[0]; l++) {
        char sets[160], label[96];
        snprintf(sets, sizeof sets, "mask=%s features=%u blocks=%u", L[l].mask, F, B);
        fl_bench_step t;
        if (fl_bench_flow_step(r, "conv-coupling", sets, L[l].c, L[l].h, L[l].w, rows, 0.01, 2.0,
                               &t) != 0)
            return 1;
        const int chan = L[l].mask[1] == 'h';
        const uint32_t cin = chan ? (L[l].c + 1) / 2 : L[l].c, ct = chan ? L[l].c - cin : L[l].c;
        /* multiply-adds per pixel of the net's forward */
        const double fma = 9.0 * cin * F + 2.0 * B * 9 * F * F + 9.0 * F * 2 * ct;
        const double gf = 3 * 2 * fma * L[l].h * L[l].w * rows / 1e9;
        const double cpu = t.cpu / t.reps, wall = t.seconds / t.reps;
        snprintf(label, sizeof label, "%s %ux%ux%u", L[l].mask, L[l].c, L[l].h, L[l].w);
        printf("%-34s %4u %10.2f %10.2f %10.3f %9.1f %7ld\n", label, L[l].rep, 1e3 * cpu,
               1e3 * wall, gf, gf / cpu, t.allocs);
        tc += L[l].rep * cpu;
        tw += L[l].rep * wall;
        tf += L[l].rep * gf;
    }
    printf("%-34s %4s %10.2f %10.2f %10.3f %9.1f   (%.1f images/s by CPU time; %.0f%% of the "
           "sgemm rate)\n", "all couplings of a step", "", 1e3 * tc, 1e3 * tw, tf, tf / tc,
           rows / tc, 100 * tf / tc / peak);
    return 0;
}

int main(int argc, char **argv)
{
    fl_runtime_init();
    if (argc > 1 && !strcmp(argv[1], "realnvp")) {
        fl_registry *r = fl_registry_new();
        fl_registry_load_dir(r, FL_BENCH_PLUGIN_DIR);
        const int rc = realnvp(r, argc > 2 ? (uint32_t)atoi(argv[2]) : 64);
        fl_registry_free(r);
        return rc;
    }
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
