/* bench_flows.c - forward + backward throughput of every flow layer.
 *
 *   bench_flows [PLUGIN_DIR]
 *   bench_flows PLUGIN_DIR twins [ROUNDS]      hand-written / graph-built pairs, A/B
 *   bench_flows PLUGIN_DIR one TYPE DIM [SEC]  one layer (for a profiler)
 *
 * Each registered flow, with its default keys, at 1,000 rows x 50 dims;
 * then MADE-based layers (iaf, maf) at 784 dims with 1,000 hidden units.
 * Prints rows/s, the GEMM GFLOP/s (counted by the host's gemm) and their
 * fraction of the machine's GEMM peak measured on the spot (one large
 * single-threaded sgemm per thread), and checks that the timed steps
 * allocate nothing (bench/allocs.c: no allocation call while timed). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "compute/blas.h"
#include "core/hostimpl.h"
#include "core/params.h"
#include "core/registry.h"
#include "model/stack.h"
#include "core/util.h"
#include "allocs.h"
#include "flowbench.h"
#include "peak.h"

static void bench(const fl_registry *r, const char *type, uint32_t dim, uint32_t rows,
                  const char *sets, double peak)
{
    char label[128];
    snprintf(label, sizeof label, "%s%s%s", type, sets ? " " : "", sets ? sets : "");
    fl_bench_step t;
    if (fl_bench_flow_step(r, type, sets, dim, 1, 1, rows, 0, 1.0, &t) != 0) return;
    printf("%-34s %5u %6u %12.0f %9.1f %7.1f%% %7ld\n", label, dim, rows,
           t.reps * (double)rows / t.seconds, t.gflops, 100 * t.gflops / peak, t.allocs);
    fflush(stdout);
}

/* The expression service's layers beside their hand-written twins, timed
 * by the CPU time of the timed steps (not wall time: on a shared machine
 * that mostly measures the other jobs), in `rounds` interleaved rounds of
 * 0.2 s per layer, so that a change in load hits both alike. */
static void twins(const fl_registry *r, int rounds)
{
    static const char *const pairs[][2] = { { "planar", "planar-expr" },
                                            { "affine-coupling", "affine-coupling-expr" } };
    static const uint32_t dims[] = { 2, 64, 784 };
    printf("# hand-written and graph-built twins, CPU time, %d interleaved rounds, "
           "%d threads, fl_real=%s\n", rounds, omp_get_max_threads(), FL_REAL_NAME);
    printf("%-22s %5s %14s %14s %7s\n", "layer", "dim", "hand rows/s", "graph rows/s", "ratio");
    for (size_t d = 0; d < 3; d++)
        for (size_t t = 0; t < 2; t++) {
            double sec[2] = { 0, 0 }, steps[2] = { 0, 0 };
            for (int k = 0; k < rounds; k++)
                for (int i = 0; i < 2; i++) {
                    int j = k & 1 ? 1 - i : i; /* ABBA: neither always goes first */
                    fl_bench_step st;
                    if (fl_bench_flow_step(r, pairs[t][j], NULL, dims[d], 1, 1, 1000, 0, 0.2,
                                           &st) != 0)
                        return;
                    sec[j] += st.cpu;
                    steps[j] += st.reps;
                }
            double a = 1000 * steps[0] / sec[0], b = 1000 * steps[1] / sec[1];
            printf("%-22s %5u %14.0f %14.0f %7.2f\n", pairs[t][0], dims[d], a, b, a / b);
            fflush(stdout);
        }
}

int main(int argc, char **argv)
{
    fl_runtime_init();
    const char *dir = argc > 1 ? argv[1] : FL_BENCH_PLUGIN_DIR;
    fl_registry *r = fl_registry_new();
    fl_registry_load_dir(r, dir);
    if (argc > 2 && !strcmp(argv[2], "twins")) {
        twins(r, argc > 3 ? atoi(argv[3]) : 6);
        fl_registry_free(r);
        return 0;
    }
    if (argc > 4 && !strcmp(argv[2], "one")) {
        fl_bench_step st;
        if (fl_bench_flow_step(r, argv[3], NULL, (uint32_t)atoi(argv[4]), 1, 1, 1000, 0,
                               argc > 5 ? atof(argv[5]) : 5, &st) == 0)
            printf("%s %s: %.0f rows/s (CPU time)\n", argv[3], argv[4],
                   1000.0 * st.reps / st.cpu);
        fl_registry_free(r);
        return 0;
    }
    int threads = omp_get_max_threads();
    double peak = fl_bench_gemm_peak(threads);
    printf("# BLAS core %s (OPENBLAS_CORETYPE=%s), %d threads, fl_real=%s\n", fl_blas_core(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset", threads,
           FL_REAL_NAME);
    printf("# measured GEMM peak: %.1f GFLOP/s (1024^3 sgemm, one per thread)\n", peak);
    printf("# forward + backward, training mode; allocs = allocation calls during the timed steps\n");
    printf("%-34s %5s %6s %12s %9s %8s %7s\n", "layer", "dim", "rows", "rows/s", "GFLOP/s",
           "of peak", "allocs");
    for (size_t i = 0; i < r->n_comps; i++)
        if (r->comps[i].kind == FL_KIND_FLOW) bench(r, r->comps[i].cls.base.name, 50, 1000, NULL, peak);
    /* the expression service's layers beside their hand-written twins */
    static const char *const twins[][2] = { { "planar", "planar-expr" },
                                            { "affine-coupling", "affine-coupling-expr" } };
    static const uint32_t twin_dims[] = { 2, 64, 784 };
    printf("# hand-written and graph-built (expression service) twins\n");
    for (size_t d = 0; d < 3; d++)
        for (size_t t = 0; t < 2; t++)
            for (int k = 0; k < 2; k++) bench(r, twins[t][k], twin_dims[d], 1000, NULL, peak);
    bench(r, "mixlogistic-coupling", 64, 1000, NULL, peak);
    bench(r, "maf", 784, 1000, "hidden=1000", peak);
    bench(r, "iaf", 784, 1000, "hidden=1000", peak);
    bench(r, "maf", 784, 1000, "hidden=1000,1000", peak);
    fl_registry_free(r);
    return 0;
}
