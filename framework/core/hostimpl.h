/* hostimpl.h - the host side of fl_host: component contexts.
 *
 * An fl_ctx ties one component instance to its validated config section,
 * its parameter block in the arena, its random streams and the workspaces
 * and MLPs it asked for (all freed with the ctx). */
#ifndef FL_HOSTIMPL_H
#define FL_HOSTIMPL_H

#include <flowlab/host.h>

#include "core/config.h"
#include "core/params.h"

struct fl_ctx {
    char *path;               /* "flow.1.3", "data" */
    const fl_values *cfg;     /* validated section (not owned) */
    fl_arena *arena;          /* not owned */
    size_t block;             /* start of this component's parameters */
    uint64_t seed;
    int creating;             /* param/workspace/mlp/cfg allowed */
    void **ws;                /* workspaces (owned) */
    size_t n_ws;
    fl_mlp **mlps;            /* MLPs (owned) */
    size_t n_mlps;
};

/* The process-wide host table handed to plugins. */
const fl_host *fl_host_table(void);

/* Text of the last host->error() on this thread ("" when none); cleared by
 * fl_host_clear_error before every call into a component that may set it. */
const char *fl_host_last_error(void);
void fl_host_clear_error(void);
/* The one place a component's failure becomes the user's message: sets
 * fl_err to PREFIX ": " and the component's own words (its last
 * host->error() on this thread), or the status's text when it said nothing;
 * PREFIX is printf-formatted (e.g. "%s: [%s] %s" with file:line, section
 * and class). Returns st. Any thread. */
fl_status fl_comp_fail(fl_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* A context for a component about to be created. `cfg` must outlive it. */
fl_ctx *fl_ctx_new(const char *path, const fl_values *cfg, fl_arena *arena, uint64_t seed);
/* Ends the create phase: later param/workspace/mlp calls are refused. */
void fl_ctx_end_create(fl_ctx *cx);
/* Frees the ctx and everything it owns (after the instance is destroyed). */
void fl_ctx_free(fl_ctx *cx);

/* The gemm behind host->gemm (CBLAS). */
void fl_gemm(int trans_a, int trans_b, int m, int n, int k, fl_real alpha, const fl_real *a,
             int lda, const fl_real *b, int ldb, fl_real beta, fl_real *c, int ldc);

/* The MLP service (mlp.c). */
fl_mlp *fl_mlp_create(fl_ctx *cx, const fl_mlp_spec *spec, uint32_t max_rows);
void fl_mlp_forward(fl_mlp *m, const fl_real *theta, uint32_t n, const fl_real *in, fl_real *out);
/* fl_mlp_forward, then fn(ctx, r0, rn) on every block of finished output
 * rows [r0, r0 + rn), together covering [0, n) once. fn may run on several
 * threads at once (disjoint rows), right after its rows were computed, so
 * it reads them from cache: the decoder's likelihood in evaluation. */
typedef void (*fl_mlp_rows_fn)(void *ctx, uint32_t r0, uint32_t rn);
void fl_mlp_forward_rows(fl_mlp *m, const fl_real *theta, uint32_t n, const fl_real *in,
                         fl_real *out, fl_mlp_rows_fn fn, void *ctx);
void fl_mlp_backward(fl_mlp *m, const fl_real *theta, fl_real *dtheta, uint32_t n,
                     const fl_real *dout, fl_real *din);
void fl_mlp_free(fl_mlp *m);

/* Total floating-point operations issued through fl_gemm so far. */
uint64_t fl_gemm_flops(void);

/* Name of the BLAS core in use (e.g. "SkylakeX"), for benchmarks. */
const char *fl_blas_core(void);
/* Puts BLAS on one thread (flowlab parallelises over fixed tiles itself,
 * which keeps results independent of the thread count). Idempotent. */
void fl_runtime_init(void);
/* Picks the OpenMP wait policy for this process when the user has not (see
 * blas.c): restarts the program (execv of /proc/self/exe with argv) with a
 * short spin on an idle machine or OMP_WAIT_POLICY=passive on a busy one.
 * Call first thing in main; returns only when no restart happened. */
void fl_choose_wait_policy(char **argv);
/* Threads BLAS may use outside parallel regions. */
void fl_blas_set_threads(int n);

#endif
