/* bench_mlp.c - throughput of the host MLP service, forward + backward.
 *
 *   bench_mlp [ROWS IN HIDDEN OUT LAYERS [REPS]]
 *
 * Prints rows/s, GFLOP/s and the fraction of the GEMM peak measured on the
 * spot with one big single-threaded sgemm per thread (so the figure is
 * honest about this machine and these kernels). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostimpl.h"
#include "params.h"
#include "util.h"

static double gemm_peak(int threads)
{
    const int n = 1024;
    fl_real *a = fl_alloc((size_t)n * n * sizeof(fl_real) * 3 * (size_t)threads);
    for (size_t i = 0; i < (size_t)n * n * 3 * (size_t)threads; i++) a[i] = (fl_real)(i % 13) * 0.01f;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = fl_now();
#pragma omp parallel num_threads(threads)
        {
            fl_real *m = a + (size_t)omp_get_thread_num() * 3 * n * n;
            for (int k = 0; k < 4; k++)
                fl_gemm(0, 0, n, n, n, 1, m, n, m + n * n, n, 0, m + 2 * n * n, n);
        }
        double dt = fl_now() - t0, gf = 4.0 * threads * 2.0 * n * n * n / dt / 1e9;
        if (gf > best) best = gf;
    }
    fl_free(a);
    return best;
}

int main(int argc, char **argv)
{
    fl_runtime_init();
    uint32_t rows = argc > 1 ? (uint32_t)atoi(argv[1]) : 512;
    uint32_t in = argc > 2 ? (uint32_t)atoi(argv[2]) : 1;
    uint32_t hid = argc > 3 ? (uint32_t)atoi(argv[3]) : 64;
    uint32_t out = argc > 4 ? (uint32_t)atoi(argv[4]) : 1;
    uint32_t nh = argc > 5 ? (uint32_t)atoi(argv[5]) : 2;
    int reps = argc > 6 ? atoi(argv[6]) : 2000;
    uint32_t hw[16];
    for (uint32_t i = 0; i < nh && i < 16; i++) hw[i] = hid;

    fl_arena arena = { 0 };
    fl_ctx *cx = fl_ctx_new("bench", NULL, &arena, 1);
    fl_mlp_spec spec = { "net", in, out, nh, hw, FL_ACT_RELU, FL_INIT_FANIN, FL_INIT_FANIN, NULL, NULL };
    fl_mlp *m = fl_mlp_create(cx, &spec, rows);
    fl_ctx_end_create(cx);
    if (!m || fl_arena_finalize(&arena, 1) != FL_OK) return 1;
    fl_real *x = fl_alloc((size_t)rows * in * sizeof(fl_real));
    fl_real *y = fl_alloc((size_t)rows * out * sizeof(fl_real));
    fl_real *dy = fl_alloc((size_t)rows * out * sizeof(fl_real));
    fl_real *dx = fl_alloc((size_t)rows * in * sizeof(fl_real));
    fl_rng_normal(fl_rng_key_make(1, "x"), 0, 0, (size_t)rows * in, x);
    fl_rng_normal(fl_rng_key_make(1, "dy"), 0, 0, (size_t)rows * out, dy);

    double flops = 0; /* forward + backward (dW and dX) */
    uint32_t w[18] = { in };
    for (uint32_t i = 0; i < nh; i++) w[i + 1] = hid;
    w[nh + 1] = out;
    for (uint32_t l = 0; l <= nh; l++) flops += 3.0 * 2.0 * rows * w[l] * w[l + 1];

    printf("# BLAS core %s, OPENBLAS_CORETYPE=%s, fl_real=%s\n", fl_blas_core(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)", FL_REAL_NAME);
    printf("# MLP %u-%u(x%u)-%u, %u rows, forward+backward\n", in, hid, nh, out, rows);
    printf("%8s %14s %10s %12s %10s\n", "threads", "rows/s", "GFLOP/s", "peak GFLOP/s", "of peak");
    int maxt = omp_get_max_threads();
    for (int t = 1; t <= maxt; t++) {
        omp_set_num_threads(t);
        double peak = gemm_peak(t);
        for (int i = 0; i < 50; i++) {
            fl_mlp_forward(m, arena.theta, rows, x, y);
            fl_mlp_backward(m, arena.theta, arena.grad, rows, dy, dx);
        }
        double t0 = fl_now();
        for (int i = 0; i < reps; i++) {
            fl_mlp_forward(m, arena.theta, rows, x, y);
            fl_mlp_backward(m, arena.theta, arena.grad, rows, dy, dx);
        }
        double dt = fl_now() - t0, gf = flops * reps / dt / 1e9;
        printf("%8d %14.0f %10.1f %12.1f %9.1f%%\n", t, rows * (double)reps / dt, gf, peak,
               100 * gf / peak);
    }
    fl_ctx_free(cx);
    fl_arena_free(&arena);
    return 0;
}
