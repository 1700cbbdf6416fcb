/* blas.c - the one place that talks to CBLAS. */
#include <cblas.h>
#include <omp.h>

#include "hostimpl.h"

/* OpenBLAS extensions (declared in its cblas.h; repeated for other CBLAS). */
extern char *openblas_get_corename(void);
extern void openblas_set_num_threads(int num_threads);

/* Floating-point operations issued through fl_gemm, for benchmarks. */
static uint64_t gemm_flops;

uint64_t fl_gemm_flops(void) { return __atomic_load_n(&gemm_flops, __ATOMIC_RELAXED); }

/* Products computed elsewhere (the MLP service's own kernel) count too.
 * (Declared where used: hostimpl.h is not this file's to change.) */
void fl_gemm_count(uint64_t flops);
void fl_gemm_count(uint64_t flops) { __atomic_fetch_add(&gemm_flops, flops, __ATOMIC_RELAXED); }

void fl_gemm(int trans_a, int trans_b, int m, int n, int k, fl_real alpha, const fl_real *a,
             int lda, const fl_real *b, int ldb, fl_real beta, fl_real *c, int ldc)
{
    __atomic_fetch_add(&gemm_flops, 2ull * (uint64_t)m * (uint64_t)n * (uint64_t)k,
                       __ATOMIC_RELAXED);
#ifdef FL_REAL_DOUBLE
    cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

const char *fl_blas_core(void) { return openblas_get_corename(); }
void fl_blas_set_threads(int n) { openblas_set_num_threads(n); }

void fl_runtime_init(void)
{
    /* flowlab parallelises over fixed tiles itself (see mlp.c); BLAS stays
     * on one thread so results do not depend on the thread count and the
     * cores are never oversubscribed. */
    static int done;
    if (!done) {
        /* Some OpenBLAS builds also set OpenMP's thread count here. */
        int omp_threads = omp_get_max_threads();
        openblas_set_num_threads(1);
        omp_set_num_threads(omp_threads);
        /* A parallel region inside another (a flow running its two nets
         * side by side) runs on its thread alone: tiles stay the same. */
        omp_set_max_active_levels(1);
        done = 1;
    }
}
