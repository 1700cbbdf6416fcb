/* bench_mlp.c - throughput of the host MLP service, forward + backward.
 *
 *   bench_mlp [ROWS IN HIDDEN OUT LAYERS [REPS [relu|tanh|...]]]
 *   bench_mlp vae      the VAE shapes: 784-200-200-100 and 50-200-200-784,
 *                      tanh and relu, 100 to 5000 rows
 *
 * Prints rows/s, GFLOP/s and the fraction of the peak measured on the spot:
 * the larger of one big single-threaded BLAS sgemm per thread and the MLP
 * service's own product kernel on a 1024x1024x1024 layer (one per thread),
 * so the figure is honest about this machine and these kernels. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/blas.h"
#include "compute/mlp.h"
#include "core/hostimpl.h"
#include "core/params.h"
#include "core/util.h"
#include "peak.h"

/* GFLOP/s of the MLP service's own product: a 1024 -> 1024 linear layer
 * on 1024 rows, one network per thread (forward only: one 1024^3 product). */
static double mlp_peak(int threads)
{
    const uint32_t n = 1024;
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads); /* one thread: no region inside the MLP either */
    fl_arena arena = { 0 };
    fl_ctx *cx = fl_ctx_new("peak", NULL, &arena, 1);
    fl_mlp *m[64] = { 0 };
    fl_mlp_spec spec = { "p", n, n, 0, NULL, FL_ACT_LINEAR, FL_INIT_FANIN, FL_INIT_FANIN, NULL, NULL };
    char name[16];
    for (int t = 0; t < threads && t < 64; t++) {
        snprintf(name, sizeof name, "p%d", t);
        spec.name = name;
        m[t] = fl_mlp_create(cx, &spec, n);
    }
    fl_ctx_end_create(cx);
    if (fl_arena_finalize(&arena, 1) != FL_OK) return 0;
    fl_real *x = fl_alloc((size_t)n * n * sizeof(fl_real) * 2 * (size_t)threads);
    for (size_t i = 0; i < (size_t)n * n * 2 * (size_t)threads; i++) x[i] = (fl_real)(i % 13) * 0.01f;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = fl_now();
#pragma omp parallel num_threads(threads)
        {
            int t = omp_get_thread_num();
            fl_real *in = x + (size_t)t * 2 * n * n;
            for (int k = 0; k < 4; k++) fl_mlp_forward(m[t], arena.theta, n, in, in + (size_t)n * n);
        }
        double gf = 4.0 * threads * 2.0 * n * n * n / (fl_now() - t0) / 1e9;
        if (gf > best) best = gf;
    }
    fl_free(x);
    fl_ctx_free(cx);
    fl_arena_free(&arena);
    omp_set_num_threads(saved);
    return best;
}

static fl_act act_named(const char *s)
{
    static const char *names[] = { "linear", "relu", "tanh", "elu", "softplus", "sigmoid" };
    for (int i = 0; i < 6; i++)
        if (strcmp(s, names[i]) == 0) return (fl_act)i;
    fprintf(stderr, "bench_mlp: unknown activation '%s'\n", s);
    exit(2);
}

static const char *act_name(fl_act a)
{
    static const char *names[] = { "linear", "relu", "tanh", "elu", "softplus", "sigmoid" };
    return names[a];
}

/* Forward + backward of one MLP shape at 1..max threads; prints one line
 * per thread count. peak[t] is the peak for t threads. */
static void run(uint32_t rows, uint32_t in, uint32_t hid, uint32_t out, uint32_t nh, int reps,
                fl_act act, const double *peak)
{
    uint32_t hw[16];
    if (nh > 16) nh = 16;
    for (uint32_t i = 0; i < nh; i++) hw[i] = hid;
    fl_arena arena = { 0 };
    fl_ctx *cx = fl_ctx_new("bench", NULL, &arena, 1);
    fl_mlp_spec spec = { "net", in, out, nh, hw, act, FL_INIT_FANIN, FL_INIT_FANIN, NULL, NULL };
    fl_mlp *m = fl_mlp_create(cx, &spec, rows);
    fl_ctx_end_create(cx);
    if (!m || fl_arena_finalize(&arena, 1) != FL_OK) exit(1);
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
    if (reps <= 0) reps = (int)(2e9 / flops) + 1; /* about 2 GFLOP per measurement */

    int maxt = omp_get_max_threads();
    for (int t = 1; t <= maxt; t++) {
        omp_set_num_threads(t);
        for (int i = 0; i < 3 + reps / 10; i++) {
            fl_mlp_forward(m, arena.theta, rows, x, y);
            fl_mlp_backward(m, arena.theta, arena.grad, rows, dy, dx);
        }
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) { /* best of 3: the machine is shared */
            double t0 = fl_now();
            for (int i = 0; i < reps; i++) {
                fl_mlp_forward(m, arena.theta, rows, x, y);
                fl_mlp_backward(m, arena.theta, arena.grad, rows, dy, dx);
            }
            double dt = fl_now() - t0;
            if (dt < best) best = dt;
        }
        double gf = flops * reps / best / 1e9;
        char shape[64];
        snprintf(shape, sizeof shape, "%u-%u(x%u)-%u %s", in, hid, nh, out, act_name(act));
        printf("%-26s %6u %8d %12.0f %9.1f %8.1f%%\n", shape, rows, t, rows * (double)reps / best,
               gf, 100 * gf / peak[t]);
    }
    omp_set_num_threads(maxt);
    fl_free(x);
    fl_free(y);
    fl_free(dy);
    fl_free(dx);
    fl_ctx_free(cx);
    fl_arena_free(&arena);
}

int main(int argc, char **argv)
{
    fl_runtime_init();
    int maxt = omp_get_max_threads();
    double peak[65] = { 0 };
    printf("# BLAS core %s, OPENBLAS_CORETYPE=%s, fl_real=%s\n", fl_blas_core(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)", FL_REAL_NAME);
    for (int t = 1; t <= maxt && t <= 64; t++) {
        double b = fl_bench_gemm_peak(t), k = mlp_peak(t);
        peak[t] = b > k ? b : k;
        printf("# peak, %d thread(s): BLAS 1024^3 sgemm %.1f GFLOP/s, MLP kernel 1024^3 %.1f GFLOP/s\n",
               t, b, k);
    }
    printf("# forward + backward (dW, dX), best of 3; %% of the larger peak\n");
    printf("%-26s %6s %8s %12s %9s %9s\n", "MLP", "rows", "threads", "rows/s", "GFLOP/s",
           "of peak");
    if (argc > 1 && strcmp(argv[1], "vae") == 0) {
        static const uint32_t rows[] = { 100, 500, 1000, 5000 };
        static const fl_act acts[] = { FL_ACT_TANH, FL_ACT_RELU };
        for (int a = 0; a < 2; a++)
            for (int i = 0; i < 4; i++) {
                run(rows[i], 784, 200, 100, 2, 0, acts[a], peak);
                run(rows[i], 50, 200, 784, 2, 0, acts[a], peak);
            }
        return 0;
    }
    uint32_t nrows = argc > 1 ? (uint32_t)atoi(argv[1]) : 512;
    uint32_t in = argc > 2 ? (uint32_t)atoi(argv[2]) : 1;
    uint32_t hid = argc > 3 ? (uint32_t)atoi(argv[3]) : 64;
    uint32_t out = argc > 4 ? (uint32_t)atoi(argv[4]) : 1;
    uint32_t nh = argc > 5 ? (uint32_t)atoi(argv[5]) : 2;
    int reps = argc > 6 ? atoi(argv[6]) : 2000;
    fl_act act = argc > 7 ? act_named(argv[7]) : FL_ACT_RELU;
    run(nrows, in, hid, out, nh, reps, act, peak);
    return 0;
}
