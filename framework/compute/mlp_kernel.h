/* mlp_kernel.h - the products and fused epilogues under the MLP service
 * (mlp_kernel.c), private to compute/: mlp.c plans the tasks, these compute
 * them. */
#ifndef FL_MLP_KERNEL_H
#define FL_MLP_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include <flowlab/host.h>

/* The kernel's register tile: MR rows x up to NVMAX 16-float vectors of C.
 * mlp.c cuts its tasks in whole tiles of this shape. */
enum { FL_MLPK_MR = 6, FL_MLPK_NVMAX = 4 };

/* An epilogue applied to each finished MR-row tile of C while it is still
 * in L1: z = act(z + bias) (forward) or d *= act'(a) (backward). The
 * element-wise code is the same as a separate pass, so are the numbers. */
typedef struct fl_mlpk_ep {
    int grad;               /* 0: bias_act; 1: act_grad */
    fl_act act;
    const fl_real *bias;    /* bias of column 0 of C */
    const fl_real *a;       /* act_grad: the outputs of row 0, column 0 of C */
    size_t lda;
} fl_mlpk_ep;

/* C (M x N) = [C +] op(A) (M x K) B (K x N), all row-major: A(i,k) is
 * a[i*lda + k] (ta = 0) or a[k*lda + i] (ta = 1); beta is 0 or 1; then ep
 * (may be NULL) on every finished tile. Each element of C is summed over k
 * in increasing order, in the same blocks whatever the caller's thread, so
 * the result depends on the shapes only. Any thread; no errors; the caller
 * owns every matrix. */
void fl_mlpk_mm(int ta, uint32_t M, uint32_t N, uint32_t K, const fl_real *a, size_t lda,
                const fl_real *b, size_t ldb, fl_real *c, size_t ldc, int beta,
                const fl_mlpk_ep *ep);
/* fl_mlpk_mm, counted in fl_gemm_flops (for bench_flows) like an fl_gemm
 * call. */
void fl_mlpk_mmc(int ta, uint32_t M, uint32_t N, uint32_t K, const fl_real *a, size_t lda,
                 const fl_real *b, size_t ldb, fl_real *c, size_t ldc, int beta,
                 const fl_mlpk_ep *ep);

/* Block b of nb blocks of N columns, in whole 16-column vectors, as even as
 * possible: columns [*j0, *j0 + *nj). */
static inline void fl_mlpk_split(uint32_t N, uint32_t nb, uint32_t b, uint32_t *j0, uint32_t *nj)
{
    const uint32_t nvec = (N + 15) / 16, q = nvec / nb, r = nvec % nb;
    const uint32_t v0 = b * q + (b < r ? b : r), nv = q + (b < r);
    *j0 = 16 * v0;
    *nj = 16 * (v0 + nv) < N ? 16 * nv : N - 16 * v0;
}

/* How many blocks of at most `vecs` 16-column vectors cover N columns. */
static inline uint32_t fl_mlpk_n_blocks(uint32_t N, uint32_t vecs)
{
    return ((N + 15) / 16 + vecs - 1) / vecs;
}

#endif
