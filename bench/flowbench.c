/* flowbench.c - timing one flow layer's training step (flowbench.h). */
#include "flowbench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "compute/blas.h"
#include "core/config.h"
#include "core/params.h"
#include "core/util.h"
#include "model/stack.h"
#include "allocs.h"

static double user_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec;
}

int fl_bench_flow_step(const fl_registry *r, const char *type, const char *sets, uint32_t c,
                       uint32_t h, uint32_t w, uint32_t rows, double noise, double min_seconds,
                       fl_bench_step *out)
{
    const char *sp = sets ? " " : "", *st = sets ? sets : "";
    const fl_comp_rec *rec = fl_registry_find(r, FL_KIND_FLOW, type);
    if (!rec) {
        fprintf(stderr, "%s%s%s: not registered\n", type, sp, st);
        return -1;
    }
    fl_config *cfg = fl_config_new("bench");
    fl_config_put(cfg, "flow", "type", type, 0);
    if (sets) {
        char *copy = fl_strdup(sets), *save = NULL;
        for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
            char *as = fl_strfmt("flow.%s", t);
            fl_config_set(cfg, as);
            free(as);
        }
        free(copy);
    }
    const fl_key *tabs[2] = { fl_flow_host_keys, rec->cls.base.keys };
    uint32_t ns[2] = { fl_flow_host_nkeys, rec->cls.base.n_keys };
    fl_values v;
    fl_status rs = fl_values_resolve(cfg, "flow", tabs, ns, 2, &v);
    fl_config_free(cfg);
    if (rs != FL_OK) {
        fprintf(stderr, "%s%s%s: %s\n", type, sp, st, fl_err_msg());
        return -1;
    }
    const uint32_t dim = c * h * w;
    fl_arena arena = { 0 };
    fl_stack *s = fl_stack_new(&arena, 1, dim, 0, rows);
    if (fl_stack_set_image(s, c, h, w) != FL_OK ||
        fl_stack_push(s, &rec->cls.flow, "flow", &v, 0) != FL_OK ||
        fl_arena_finalize(&arena, 1) != FL_OK || fl_stack_ready(s) != FL_OK) {
        fprintf(stderr, "%s%s%s: %s\n", type, sp, st, fl_err_msg());
        fl_stack_free(s);
        fl_arena_free(&arena);
        return -1;
    }
    if (noise > 0) {
        fl_real *z = fl_alloc(arena.total * sizeof(fl_real));
        fl_rng_normal(fl_rng_key_make(1, "noise"), 0, 0, arena.total, z);
        for (size_t i = 0; i < arena.total; i++) arena.theta[i] += (fl_real)noise * z[i];
        fl_free(z);
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
    double t0 = fl_now(), c0 = user_cpu(), dt;
    do {
        memset(ld, 0, rows * sizeof(fl_real));
        fl_stack_forward(s, rows, FL_MODE_TRAIN, x, NULL, ld, &u);
        fl_stack_backward(s, rows, FL_MODE_TRAIN, NULL, du, dld, NULL, NULL);
        reps++;
        dt = fl_now() - t0;
    } while (dt < min_seconds || reps < 5);
    fl_bench_allocs_arm(0);
    out->seconds = dt;
    out->cpu = user_cpu() - c0;
    out->reps = reps;
    out->gflops = (double)(fl_gemm_flops() - f0) / dt / 1e9;
    out->allocs = fl_bench_allocs() - a0;
    fl_free(x);
    fl_free(du);
    fl_free(ld);
    fl_free(dld);
    fl_stack_free(s);
    fl_arena_free(&arena);
    return 0;
}
