/* mlp_kernel.c - the products under the MLP service: C = [C +] op(A) B
 * for the tasks mlp.c plans, with the bias + activation (forward) or
 * activation-derivative (backward) epilogue fused on each finished tile.
 *
 * In the float build on AVX-512 machines (MLP_SIMD) a product runs on the
 * register-blocked kernel below (6 rows x up to 64 columns of C held in 24
 * zmm registers, k blocked by KC), which for these shapes (tens to a few
 * hundred columns) beats a BLAS call: no packing, no call overhead, no
 * dependence on the OPENBLAS_CORETYPE kernels. Otherwise (double build, no
 * AVX-512) fl_mlpk_mm is one fl_gemm call on the task's block, then the
 * same epilogue. Which of the two runs is fixed at compile time
 * (-march=native, -Dreal). tgmath.h comes before vmath.h, as in mlp.c, so
 * vmath.h's inline functions compile to the same math in both files. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/vmath.h>

#include "compute/blas.h"
#include "compute/mlp_kernel.h"

#if defined(__AVX512F__) && !defined(FL_REAL_DOUBLE)
#define MLP_SIMD 1
#include <immintrin.h>
#endif

enum {
    MR = FL_MLPK_MR, NVMAX = FL_MLPK_NVMAX, /* MR rows x NVMAX 16-float vectors of C */
    KC = 128,                              /* k block: a KC x 64 panel of B stays in L1 */
};

/* ---- products ----------------------------------------------------------
 *
 * fl_mlpk_mm: C (M x N) = [C +] A (M x K) B (K x N), all row-major; A is op(A) with
 * A(i,k) = a[i*lda + k] (ta = 0) or a[k*lda + i] (ta = 1). beta is 0 or 1.
 * Each element of C is summed over k in increasing order, KC at a time. */

#ifdef MLP_SIMD
/* The accumulators are named variables, not an array: GCC keeps an array
 * of vectors on the stack (a load and a store per FMA). mr and nv are
 * constants in every instance, so the unused ones vanish. */
#define ACC_ROW(i) __m512 c##i##0 = z, c##i##1 = z, c##i##2 = z, c##i##3 = z;
#define ACC_LOAD(i)                                                                        \
    if (mr > i) {                                                                          \
        const float *ci = c + (size_t)(i) * ldc;                                           \
        if (nv > 0) c##i##0 = _mm512_maskz_loadu_ps(nv == 1 ? tail : 0xffff, ci);          \
        if (nv > 1) c##i##1 = _mm512_maskz_loadu_ps(nv == 2 ? tail : 0xffff, ci + 16);     \
        if (nv > 2) c##i##2 = _mm512_maskz_loadu_ps(nv == 3 ? tail : 0xffff, ci + 32);     \
        if (nv > 3) c##i##3 = _mm512_maskz_loadu_ps(tail, ci + 48);                        \
    }
#define ACC_FMA(i)                                                                         \
    if (mr > i) {                                                                          \
        __m512 av = _mm512_set1_ps(ak[(size_t)(i) * sai]);                                 \
        if (nv > 0) c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0);                            \
        if (nv > 1) c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);                            \
        if (nv > 2) c##i##2 = _mm512_fmadd_ps(av, b2, c##i##2);                            \
        if (nv > 3) c##i##3 = _mm512_fmadd_ps(av, b3, c##i##3);                            \
    }
#define ACC_STORE(i)                                                                       \
    if (mr > i) {                                                                          \
        float *ci = c + (size_t)(i) * ldc;                                                 \
        if (nv > 0) _mm512_mask_storeu_ps(ci, nv == 1 ? tail : 0xffff, c##i##0);           \
        if (nv > 1) _mm512_mask_storeu_ps(ci + 16, nv == 2 ? tail : 0xffff, c##i##1);      \
        if (nv > 2) _mm512_mask_storeu_ps(ci + 32, nv == 3 ? tail : 0xffff, c##i##2);      \
        if (nv > 3) _mm512_mask_storeu_ps(ci + 48, tail, c##i##3);                         \
    }
#define ACC_ALL(X) X(0) X(1) X(2) X(3) X(4) X(5)

static inline __attribute__((always_inline)) void ukern(const int mr, const int nv,
                                                        __mmask16 tail, uint32_t K,
                                                        const float *a, size_t sai, size_t sak,
                                                        const float *b, size_t ldb, float *c,
                                                        size_t ldc, int load)
{
    const __m512 z = _mm512_setzero_ps();
    ACC_ALL(ACC_ROW)
    if (load) {
        ACC_ALL(ACC_LOAD)
    }
    for (uint32_t k = 0; k < K; k++) {
        const float *bk = b + (size_t)k * ldb, *ak = a + (size_t)k * sak;
        __m512 b0 = z, b1 = z, b2 = z, b3 = z;
        if (nv > 0) b0 = _mm512_maskz_loadu_ps(nv == 1 ? tail : 0xffff, bk);
        if (nv > 1) b1 = _mm512_maskz_loadu_ps(nv == 2 ? tail : 0xffff, bk + 16);
        if (nv > 2) b2 = _mm512_maskz_loadu_ps(nv == 3 ? tail : 0xffff, bk + 32);
        if (nv > 3) b3 = _mm512_maskz_loadu_ps(tail, bk + 48);
        ACC_ALL(ACC_FMA)
    }
    ACC_ALL(ACC_STORE)
}

typedef void (*ukern_fn)(__mmask16, uint32_t, const float *, size_t, size_t, const float *,
                         size_t, float *, size_t, int);
#define UK(r, v)                                                                           \
    static void uk_##r##_##v(__mmask16 t, uint32_t K, const float *a, size_t sai, size_t sak, \
                             const float *b, size_t ldb, float *c, size_t ldc, int load)   \
    {                                                                                      \
        ukern(r, v, t, K, a, sai, sak, b, ldb, c, ldc, load);                              \
    }
#define UK_ROW(r) UK(r, 1) UK(r, 2) UK(r, 3) UK(r, 4)
UK_ROW(1) UK_ROW(2) UK_ROW(3) UK_ROW(4) UK_ROW(5) UK_ROW(6)
#define UK_ENT(r) { uk_##r##_1, uk_##r##_2, uk_##r##_3, uk_##r##_4 }
static const ukern_fn ukerns[MR][NVMAX] = { UK_ENT(1), UK_ENT(2), UK_ENT(3),
                                            UK_ENT(4), UK_ENT(5), UK_ENT(6) };

/* c[i*ldc] = [c +] dot(a row i, x) for N = 1 (A row-major). */
static void mv(uint32_t M, uint32_t K, const float *a, size_t lda, const float *x, float *c,
               size_t ldc, int beta)
{
    for (uint32_t i = 0; i < M; i++) {
        const float *ai = a + (size_t)i * lda;
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        uint32_t k = 0;
        for (; k + 32 <= K; k += 32) {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(ai + k), _mm512_loadu_ps(x + k), s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(ai + k + 16), _mm512_loadu_ps(x + k + 16), s1);
        }
        for (; k < K; k += 16) {
            __mmask16 mk = K - k >= 16 ? 0xffff : (__mmask16)((1u << (K - k)) - 1);
            s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, ai + k), _mm512_maskz_loadu_ps(mk, x + k),
                                 s0);
        }
        float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
        c[(size_t)i * ldc] = beta ? c[(size_t)i * ldc] + s : s;
    }
}
#endif

static void bias_act(fl_real *z, size_t ldz, const fl_real *restrict b, uint32_t rows,
                     uint32_t cols, fl_act act);
static void act_grad(fl_real *d, size_t ldd, const fl_real *a, size_t lda, uint32_t rows,
                     uint32_t cols, fl_act act);

static void apply_ep(const fl_mlpk_ep *ep, fl_real *c, size_t ldc, uint32_t i0, uint32_t rows,
                     uint32_t j0, uint32_t cols)
{
    fl_real *t = c + (size_t)i0 * ldc + j0;
    if (ep->grad) act_grad(t, ldc, ep->a + (size_t)i0 * ep->lda + j0, ep->lda, rows, cols, ep->act);
    else bias_act(t, ldc, ep->bias + j0, rows, cols, ep->act);
}

void fl_mlpk_mm(int ta, uint32_t M, uint32_t N, uint32_t K, const fl_real *a, size_t lda,
                const fl_real *b, size_t ldb, fl_real *c, size_t ldc, int beta,
                const fl_mlpk_ep *ep)
{
    if (M == 0 || N == 0) return;
#ifdef MLP_SIMD
    const size_t sai = ta ? 1 : lda, sak = ta ? lda : 1;
    if (N == 1 && !ta && ldb == 1) {
        mv(M, K, a, lda, b, c, ldc, beta);
        if (ep) apply_ep(ep, c, ldc, 0, M, 0, 1);
        return;
    }
    if (N == 1 && ldc == 1 && M > 1) {
        /* C is a column: compute its transpose, C^T (1 x M) = B^T op(A)^T,
         * one row of vectors instead of M single-lane rows. */
        const float *bt = b;
        size_t sbk = ldb;
        for (uint32_t jb = 0, nb = fl_mlpk_n_blocks(M, NVMAX); jb < nb; jb++) {
            uint32_t j0, nj;
            fl_mlpk_split(M, nb, jb, &j0, &nj);
            int nv = (int)((nj + 15) / 16);
            __mmask16 tail = nj % 16 ? (__mmask16)((1u << (nj % 16)) - 1) : 0xffff;
            for (uint32_t k0 = 0; k0 < K; k0 += KC) {
                uint32_t kk = K - k0 < KC ? K - k0 : KC;
                ukerns[0][nv - 1](tail, kk, bt + k0 * sbk, 0, sbk, a + j0 * sai + k0 * sak, sak,
                                  c + j0, 0, beta || k0 > 0);
            }
        }
        if (ep) apply_ep(ep, c, ldc, 0, M, 0, 1);
        return;
    }
    for (uint32_t jb = 0, nb = fl_mlpk_n_blocks(N, NVMAX); jb < nb; jb++) {
        uint32_t j0, nj;
        fl_mlpk_split(N, nb, jb, &j0, &nj);
        int nv = (int)((nj + 15) / 16);
        __mmask16 tail = nj % 16 ? (__mmask16)((1u << (nj % 16)) - 1) : 0xffff;
        for (uint32_t k0 = 0; k0 < K || (k0 == 0 && !beta); k0 += KC) {
            uint32_t kk = K - k0 < KC ? K - k0 : KC;
            const int final = k0 + KC >= K;
            for (uint32_t i0 = 0; i0 < M; i0 += MR) {
                uint32_t mr = M - i0 < MR ? M - i0 : MR;
                ukerns[mr - 1][nv - 1](tail, kk, a + i0 * sai + k0 * sak, sai, sak,
                                       b + (size_t)k0 * ldb + j0, ldb, c + i0 * ldc + j0, ldc,
                                       beta || k0 > 0);
                if (ep && final) apply_ep(ep, c, ldc, i0, mr, j0, nj);
            }
            if (K == 0) break;
        }
    }
#else
    fl_gemm(ta, 0, (int)M, (int)N, (int)K, 1, a, (int)lda, b, (int)ldb, beta ? 1 : 0, c,
            (int)ldc);
    if (ep) apply_ep(ep, c, ldc, 0, M, 0, N);
#endif
}

void fl_mlpk_mmc(int ta, uint32_t M, uint32_t N, uint32_t K, const fl_real *a, size_t lda,
                 const fl_real *b, size_t ldb, fl_real *c, size_t ldc, int beta,
                 const fl_mlpk_ep *ep)
{
    fl_gemm_count(2ull * M * N * K);
    fl_mlpk_mm(ta, M, N, K, a, lda, b, ldb, c, ldc, beta, ep);
}

/* ---- element-wise ------------------------------------------------------ */

#ifdef MLP_SIMD
/* tanh and ELU in 16-lane form (flowlab/vmath.h: the scalar functions'
 * bits, in half the time of GCC's vectorisation of them). */
static int bias_act16(fl_real *z, size_t ldz, const fl_real *restrict b, uint32_t rows,
                      uint32_t cols, fl_act act)
{
    if (act != FL_ACT_TANH && act != FL_ACT_ELU) return 0;
    for (uint32_t r = 0; r < rows; r++) {
        fl_real *row = z + (size_t)r * ldz;
        for (uint32_t j = 0; j < cols; j += 16) {
            /* plain loads where whole: a masked load of a just-stored tile
             * waits for the store to reach L1 instead of forwarding */
            const int whole = cols - j >= 16;
            __mmask16 mk = whole ? 0xffff : (__mmask16)((1u << (cols - j)) - 1);
            __m512 v = whole ? _mm512_add_ps(_mm512_loadu_ps(row + j), _mm512_loadu_ps(b + j))
                             : _mm512_add_ps(_mm512_maskz_loadu_ps(mk, row + j),
                                             _mm512_maskz_loadu_ps(mk, b + j));
            if (act == FL_ACT_TANH) {
                v = fl_tanh16(v);
            } else {
                __mmask16 pos = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ);
                v = _mm512_mask_mov_ps(fl_expm1_16(v), pos, v);
            }
            if (whole) _mm512_storeu_ps(row + j, v);
            else _mm512_mask_storeu_ps(row + j, mk, v);
        }
    }
    return 1;
}
#endif

/* z = act(z + b) on a rows x cols block with row stride ldz. */
static void bias_act(fl_real *z, size_t ldz, const fl_real *restrict b, uint32_t rows,
                     uint32_t cols, fl_act act)
{
#ifdef MLP_SIMD
    if (bias_act16(z, ldz, b, rows, cols, act)) return;
#endif
    for (uint32_t r = 0; r < rows; r++) {
        fl_real *restrict row = z + (size_t)r * ldz;
        switch (act) {
        case FL_ACT_LINEAR:
            for (uint32_t j = 0; j < cols; j++) row[j] += b[j];
            break;
        case FL_ACT_RELU:
            for (uint32_t j = 0; j < cols; j++) {
                fl_real v = row[j] + b[j];
                row[j] = v > 0 ? v : 0;
            }
            break;
        case FL_ACT_TANH:
            for (uint32_t j = 0; j < cols; j++) row[j] = fl_tanh(row[j] + b[j]);
            break;
        case FL_ACT_ELU:
            for (uint32_t j = 0; j < cols; j++) {
                fl_real v = row[j] + b[j];
                row[j] = v > 0 ? v : fl_expm1(v);
            }
            break;
        case FL_ACT_SOFTPLUS:
            for (uint32_t j = 0; j < cols; j++) row[j] = fl_softplus(row[j] + b[j]);
            break;
        case FL_ACT_SIGMOID:
            for (uint32_t j = 0; j < cols; j++) row[j] = fl_sigmoid(row[j] + b[j]);
            break;
        }
    }
}

/* delta *= act'(a) on a block, with the derivative written in terms of the
 * output a. */
static void act_grad(fl_real *d, size_t ldd, const fl_real *a, size_t lda, uint32_t rows,
                     uint32_t cols, fl_act act)
{
    for (uint32_t r = 0; r < rows; r++) {
        fl_real *restrict dr = d + (size_t)r * ldd;
        const fl_real *restrict ar = a + (size_t)r * lda;
        switch (act) {
        case FL_ACT_LINEAR:
            break;
        case FL_ACT_RELU:
            for (uint32_t j = 0; j < cols; j++) dr[j] = ar[j] > 0 ? dr[j] : 0;
            break;
        case FL_ACT_TANH:
            for (uint32_t j = 0; j < cols; j++) dr[j] *= 1 - ar[j] * ar[j];
            break;
        case FL_ACT_ELU:
            for (uint32_t j = 0; j < cols; j++) dr[j] *= ar[j] > 0 ? 1 : ar[j] + 1;
            break;
        case FL_ACT_SOFTPLUS: /* sigmoid(v) = 1 - e^-a */
            for (uint32_t j = 0; j < cols; j++) dr[j] *= -fl_expm1(-ar[j]);
            break;
        case FL_ACT_SIGMOID:
            for (uint32_t j = 0; j < cols; j++) dr[j] *= ar[j] * (1 - ar[j]);
            break;
        }
    }
}
