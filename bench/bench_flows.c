/* bench_flows.c - forward + backward throughput of every flow layer.
 *
 *   bench_flows [PLUGIN_DIR]
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
#include "peak.h"

static void bench(const fl_registry *r, const char *type, uint32_t dim, uint32_t rows,
                  const char *sets, double peak)
{
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    if (!c) return;
    fl_config *cfg = fl_config_new("bench");
    fl_config_put(cfg, "flow", "type", type, 0);
    char label[128];
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
    fl_arena arena = { 0 };
    fl_stack *s = fl_stack_new(&arena, 1, dim, 0, rows);
    if (fl_stack_push(s, &c->cls.flow, "flow", &v, 0) != FL_OK ||
        fl_arena_finalize(&arena, 1) != FL_OK || fl_stack_ready(s) != FL_OK) {
        fprintf(stderr, "%s: %s\n", label, fl_err_msg());
        fl_stack_free(s);
        fl_arena_free(&arena);
        return;
    }
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
    } while (dt < 1.0 || reps < 5);
    fl_bench_allocs_arm(0);
    double gf = (double)(fl_gemm_flops() - f0) / dt / 1e9;
    printf("%-34s %5u %6u %12.0f %9.1f %7.1f%% %7ld\n", label, dim, rows, reps * (double)rows / dt,
           gf, 100 * gf / peak, fl_bench_allocs() - a0);
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
    const char *dir = argc > 1 ? argv[1] : FL_BENCH_PLUGIN_DIR;
    fl_registry *r = fl_registry_new();
    fl_registry_load_dir(r, dir);
    int threads = omp_get_max_threads();
    double peak = fl_bench_gemm_peak(threads);
    printf("# BLAS core %s (OPENBLAS_CORETYPE=%s), %d threads, fl_real=%s\n", fl_blas_core(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "unset", threads,
           FL_REAL_NAME);
    printf("# measured GEMM peak: %.1f GFLOP/s (1024^3 sgemm, one per thread)\n", peak);
    printf("# forward + backward, training mode; allocs = allocation calls during the timed steps\n");
    printf("%-34s %5s %6s %12s %9s %8s %7s\n", "layer", "dim", "rows", "rows/s", "GFLOP/s",
           "of peak", "allocs");
    /* `bench_flows DIR twins`: only the hand-written / graph-built pairs */
    int twins_only = argc > 2 && !strcmp(argv[2], "twins");
    for (size_t i = 0; i < r->n_comps && !twins_only; i++)
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
    if (!twins_only) {
        bench(r, "maf", 784, 1000, "hidden=1000", peak);
        bench(r, "iaf", 784, 1000, "hidden=1000", peak);
        bench(r, "maf", 784, 1000, "hidden=1000,1000", peak);
    }
    fl_registry_free(r);
    return 0;
}
