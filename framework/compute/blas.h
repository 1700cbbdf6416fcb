/* blas.h - the BLAS side of compute: the one CBLAS call site (fl_gemm and
 * its flop counter) and the process's thread and wait-policy set-up. */
#ifndef FL_BLAS_H
#define FL_BLAS_H

#include <stdint.h>

#include <flowlab/core.h>

/* C = alpha op(A) op(B) + beta C, row-major (CBLAS sgemm/dgemm), counted in
 * fl_gemm_flops. Behind host->gemm: any thread, any time; the caller owns
 * every matrix. No error return (CBLAS has none). */
void fl_gemm(int trans_a, int trans_b, int m, int n, int k, fl_real alpha, const fl_real *a,
             int lda, const fl_real *b, int ldb, fl_real beta, fl_real *c, int ldc);

/* Total floating-point operations issued through fl_gemm (and counted by
 * fl_gemm_count) so far, for benchmarks. Any thread. */
uint64_t fl_gemm_flops(void);
/* Adds `flops` to fl_gemm_flops: products computed without CBLAS (the MLP
 * service's own kernel) count too. Any thread. */
void fl_gemm_count(uint64_t flops);

/* Name of the BLAS core in use (e.g. "SkylakeX"), for benchmarks; a static
 * string of OpenBLAS. */
const char *fl_blas_core(void);
/* Puts BLAS on one thread (flowlab parallelises over fixed tiles itself,
 * which keeps results independent of the thread count) and OpenMP on one
 * active level. Idempotent; call from the main thread before the first
 * parallel region (main, each test and bench, fl_mlp_create). */
void fl_runtime_init(void);
/* Picks the OpenMP wait policy for this process when the user has not (see
 * blas.c): restarts the program (execv of /proc/self/exe with argv) with a
 * short spin on an idle machine or OMP_WAIT_POLICY=passive on a busy one.
 * Call first thing in main, before any thread exists; returns only when no
 * restart happened (also when the exec failed: the default policy stays). */
void fl_choose_wait_policy(char **argv);

#endif
