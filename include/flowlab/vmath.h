/*
 * flowlab/vmath.h - branch-free elementary functions that vectorise.
 *
 * The training step spends its non-GEMM time in tanh, sigmoid, softplus and
 * exp over whole activation matrices. libm's scalar calls stop the compiler
 * from vectorising those loops; these inline versions are straight-line
 * code (selects, no branches, no errno), so a plain loop over them becomes
 * AVX-512/AVX2 code when built as flowlab builds itself and its plugins:
 * -O3 -march=native -fno-trapping-math (without -fno-trapping-math GCC
 * will not if-convert the selects; measured 15 ns vs 0.9 ns per softplus).
 *
 *   static void softplus_rows(size_t n, const fl_real *a, fl_real *y)
 *   {
 *       for (size_t i = 0; i < n; i++) y[i] = fl_softplus(a[i]);
 *   }
 *
 * The polynomials are evaluated with fmaf: one instruction where the
 * target has FMA (every x86-64 machine flowlab is tuned for), a correctly
 * rounded libm call elsewhere, so results do not depend on the compiler's
 * contraction choices.
 *
 * Accuracy (float build): fl_exp within 2 ulp, fl_log within 3 ulp for
 * normal inputs (subnormal inputs are treated as their exponent field
 * says, i.e. wrongly: flush them to zero or clamp before calling), fl_tanh,
 * fl_sigmoid, fl_softplus and fl_expm1 within 4e-7 relative (tests/test_vmath.c
 * measures them over their whole range). The double build maps every
 * function to libm: it exists for exactness, not speed.
 *
 * Thread-safety: pure functions.
 */
#ifndef FLOWLAB_VMATH_H
#define FLOWLAB_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core.h"

#if !defined(FL_REAL_DOUBLE) && defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The inline code below is C: its casts are not for C++'s cast warnings
 * (g++ does not flag old-style casts inside extern "C"; fl_real casts are
 * "useless" in the double build). */
#if defined(__cplusplus) && defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wold-style-cast"
#elif defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuseless-cast"
#endif

#ifdef FL_REAL_DOUBLE

static inline fl_real fl_exp(fl_real x) { return exp(x); }
static inline fl_real fl_log(fl_real x) { return log(x); }
static inline fl_real fl_tanh(fl_real x) { return tanh(x); }
static inline fl_real fl_sigmoid(fl_real x) { return 1 / (1 + exp(-x)); }
static inline fl_real fl_softplus(fl_real x) { return (x > 0 ? x : 0) + log1p(exp(-fabs(x))); }
static inline fl_real fl_log1p_exp_neg(fl_real a) { return log1p(exp(-a)); }
static inline fl_real fl_expm1(fl_real x) { return expm1(x); }

#else

static inline float fl__as_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t fl__as_u32(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* e^x: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n from
 * the exponent bits. Flushes to 0 below -87.3 (no subnormals) and gives
 * +inf above log(FLT_MAX). */
static inline float fl_exp(float x)
{
    const float hi = 88.7228391f, lo = -87.33654f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    xc = x != x ? 0.0f : xc; /* NaN: no float-to-int conversion of NaN below (UB) */
    float n = nearbyintf(xc * 1.44269504089f);
    float r = fmaf(-n, 0.693145751953125f, xc); /* Cody-Waite, 2 parts */
    r = fmaf(-n, 1.428606765330187e-06f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    p = fmaf(p * r, r, r) + 1.0f;
    /* 2^n as two factors so n = 128 (x near log(FLT_MAX)) stays finite */
    int32_t ni = (int32_t)n, h = ni >> 1;
    float s1 = fl__as_float((uint32_t)(h + 127) << 23);
    float s2 = fl__as_float((uint32_t)(ni - h + 127) << 23);
    float y = p * s1 * s2;
    y = x > hi ? INFINITY : y;
    y = x < lo ? 0.0f : y;
    return x != x ? x : y;
}

/* log(x) for x > 0 (NaN below 0, -inf at 0): x = m 2^e with m in
 * [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m-1)/(m+1). */
static inline float fl_log(float x)
{
    uint32_t u = fl__as_u32(x);
    int32_t e = (int32_t)((u >> 23) & 0xff) - 127;
    float m = fl__as_float((u & 0x007fffffu) | 0x3f800000u); /* [1, 2) */
    int big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    e = big ? e + 1 : e;
    float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
    float p = 0.2222222222f;                      /* 2/9 */
    p = p * s2 + 0.2857142857f;                   /* 2/7 */
    p = p * s2 + 0.4f;                            /* 2/5 */
    p = p * s2 + 0.6666666667f;                   /* 2/3 */
    p = p * s2 + 2.0f;
    float y = s * p + (float)e * 0.693147180560f;
    y = x == 0 ? -INFINITY : y;
    y = ((x < 0) | (x != x)) ? NAN : y;
    y = x == INFINITY ? INFINITY : y;
    return y;
}

/* log(1 + e^-a) for a >= 0, accurate for large a (where it is ~ e^-a). */
static inline float fl_log1p_exp_neg(float a)
{
    float t = fl_exp(-a), u = 1.0f + t;
    float l = fl_log(u);
    /* log1p(t) = log(u) * t / (u - 1) corrects the rounding of 1 + t */
    float d = u - 1.0f;
    return d == 0.0f ? t : l * (t / d);
}

static inline float fl_softplus(float x)
{
    return (x > 0 ? x : 0.0f) + fl_log1p_exp_neg(fabsf(x));
}

static inline float fl_sigmoid(float x) { return 1.0f / (1.0f + fl_exp(-x)); }

/* e^x - 1: a Taylor polynomial below |x| = 0.5 (no cancellation), else
 * fl_exp(x) - 1. */
static inline float fl_expm1(float x)
{
    float p = 1.0f / 5040;
    p = fmaf(p, x, 1.0f / 720);
    p = fmaf(p, x, 1.0f / 120);
    p = fmaf(p, x, 1.0f / 24);
    p = fmaf(p, x, 1.0f / 6);
    p = fmaf(p, x, 0.5f);
    p = fmaf(p * x, x, x);
    return fabsf(x) < 0.5f ? p : fl_exp(x) - 1.0f;
}

/* tanh: an odd polynomial near 0 (no cancellation), else 1 - 2/(e^2|x|+1). */
static inline float fl_tanh(float x)
{
    float a = fabsf(x), x2 = x * x;
    float p = -5.70498872745e-3f;
    p = fmaf(p, x2, 2.06390887954e-2f);
    p = fmaf(p, x2, -5.37397155531e-2f);
    p = fmaf(p, x2, 1.33314422036e-1f);
    p = fmaf(p, x2, -3.33332819422e-1f);
    float small = fmaf(x * x2, p, x);
    float e = fl_exp(2.0f * (a > 9.0f ? 9.0f : a));
    float big = 1.0f - 2.0f / (e + 1.0f);
    big = copysignf(big, x);
    return a < 0.625f ? small : big;
}

/* ---- 16-lane forms (AVX-512, float build) ----------------------------------
 * For hand-written kernels (the MLP's epilogue, the Bernoulli sum): the same
 * operations in the same order as the scalar functions above, fused
 * multiply-adds where they use fmaf (flowlab's C11 build contracts nothing
 * else), so fl_exp16(v)[i] == fl_exp(v[i]) bit for bit; tests/test_vmath.c
 * checks it. */
#if defined(__AVX512F__)
/* e^r n-scaled for x already inside [lo, hi]: the polynomial of fl_exp,
 * then p * 2^n in one rounding (vscalefps), which is what fl_exp's two
 * exact power-of-two factors give: the same bits in 1 instruction, not 8. */
static inline __m512 fl__exp16_in_range(__m512 xc)
{
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504089f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __m512 fl_exp16(__m512 x)
{
    const __m512 hi = _mm512_set1_ps(88.7228391f), lo = _mm512_set1_ps(-87.33654f);
    /* operands ordered as the scalar selects: a NaN x passes through */
    __m512 y = fl__exp16_in_range(_mm512_max_ps(lo, _mm512_min_ps(hi, x)));
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), _mm512_set1_ps(INFINITY));
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), _mm512_setzero_ps());
    return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

static inline __m512 fl_tanh16(__m512 x)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 a = _mm512_andnot_ps(sign, x), x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(-5.70498872745e-3f);
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.06390887954e-2f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-5.37397155531e-2f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.33314422036e-1f));
    p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-3.33332819422e-1f));
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(x, x2), p, x);
    /* 2 min(9, |x|) is inside exp's range (a NaN stays NaN) */
    __m512 e = fl__exp16_in_range(
        _mm512_mul_ps(_mm512_set1_ps(2.0f), _mm512_min_ps(_mm512_set1_ps(9.0f), a)));
    __m512 big = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                               _mm512_div_ps(_mm512_set1_ps(2.0f),
                                             _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    big = _mm512_or_ps(_mm512_andnot_ps(sign, big), _mm512_and_ps(sign, x));
    return _mm512_mask_mov_ps(big, _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.625f), _CMP_LT_OQ),
                              small);
}

/* fl_expm1: the Taylor polynomial below |x| = 0.5, else e^x - 1. */
static inline __m512 fl_expm1_16(__m512 x)
{
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, x), x, x);
    __m512 big = _mm512_sub_ps(fl_exp16(x), _mm512_set1_ps(1.0f));
    __m512 a = _mm512_andnot_ps(_mm512_set1_ps(-0.0f), x);
    return _mm512_mask_mov_ps(big, _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.5f), _CMP_LT_OQ), p);
}
#endif /* __AVX512F__ */

#endif /* FL_REAL_DOUBLE */

#if defined(__cplusplus) && defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_VMATH_H */
