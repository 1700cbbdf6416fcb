/* likelihoods.c - observation models p(x | param) for decoders.
 *
 *   bernoulli  param = logits l (d):  log p = sum_d x_d l_d - softplus(l_d)
 *              d/dl = x - sigmoid(l), d/dx = l;  mean = sigmoid(l)
 *   gaussian   diagonal, log-variance lv:
 *              log p = -1/2 sum_d [(x_d - m_d)^2 e^-lv_d + lv_d + log 2 pi]
 *              d/dm = (x - m) e^-lv,  d/dlv = ((x - m)^2 e^-lv - 1)/2,
 *              d/dx = -(x - m) e^-lv;  mean = m
 *              variance = learned: param = [m (d), lv (d)] per row
 *                         fixed:   param = m, lv = log_var for every d
 *                         global:  param = m, lv a trained vector (theta)
 *
 * The Bernoulli loop is the hot loop of IWAE training and evaluation (e.g.
 * 5000 x 784 per call): it is written as straight-line loops over vmath.h
 * so it vectorises, sums log p in 16 double lanes (a single running sum
 * would have to be added in order, which blocks vectorisation), and splits
 * rows over OpenMP threads above PAR_MIN elements. Each row's numbers do
 * not depend on the split, so results are the same at any thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <flowlab/flowlab.h>
#include <flowlab/vmath.h>

/* Elements (rows x dim) above which a call is split over threads. */
#define PAR_MIN 65536
#define LANES 16
#define BLOCK 512 /* elements per stack buffer of log p terms */
#define LOG_2PI 1.83787706640934548356

enum { BERNOULLI, GAUSSIAN };
enum { VAR_LEARNED, VAR_FIXED, VAR_GLOBAL }; /* order of the `variance` choices */

typedef struct lik {
    const fl_host *h;
    fl_ctx *cx;
    int kind, var;
    uint32_t dim, np, max_rows;
    size_t lv_off;          /* global: the log-variance slice in theta */
    fl_real *lv_fixed;      /* fixed: dim copies of log_var */
    double *acc;            /* global: dim, the log-variance gradient being summed */
} lik;

static const fl_key gauss_keys[] = {
    { "variance", FL_KEY_ENUM, "learned", 0, 0, "learned|fixed|global",
      "learned: the decoder outputs [mean, log-variance] per dimension; fixed: log-variance "
      "= log_var everywhere; global: one trained log-variance per dimension, shared by "
      "all rows" },
    { "log_var", FL_KEY_REAL, "0", -20, 20, NULL,
      "the log-variance with variance = fixed, and the initial one with variance = global "
      "(unused with learned)" },
};

static void destroy(void *self) { free(self); }

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_likelihood_shape *sh, int kind,
                        void **self)
{
    if (sh->dim == 0) {
        h->error(cx, "the data dimension must be at least 1");
        return FL_ERR_INVALID;
    }
    lik *L = calloc(1, sizeof *L);
    if (!L) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    L->h = h;
    L->cx = cx;
    L->kind = kind;
    L->dim = sh->dim;
    L->max_rows = sh->max_rows;
    L->np = sh->dim;
    int ok = 1;
    if (kind == GAUSSIAN) {
        L->var = (int)h->cfg_int(cx, "variance");
        double lv = h->cfg_real(cx, "log_var");
        if (L->var == VAR_LEARNED) {
            L->np = 2 * sh->dim;
        } else if (L->var == VAR_FIXED) {
            ok = (L->lv_fixed = h->workspace(cx, sh->dim * sizeof(fl_real))) != NULL;
            for (uint32_t d = 0; ok && d < sh->dim; d++) L->lv_fixed[d] = (fl_real)lv;
        } else {
            fl_param_spec spec = { .name = "log_var", .size = sh->dim, .init = FL_INIT_CONST,
                                   .value = lv };
            fl_status st = h->param(cx, &spec, &L->lv_off);
            if (st != FL_OK) {
                free(L);
                return st;
            }
            ok = (L->acc = h->workspace(cx, sh->dim * sizeof(double))) != NULL;
        }
    }
    if (!ok) {
        h->error(cx, "out of memory");
        free(L);
        return FL_ERR_NOMEM;
    }
    *self = L;
    return FL_OK;
}

static fl_status create_bern(const fl_host *h, fl_ctx *cx, const fl_likelihood_shape *sh,
                             void **self)
{
    return create(h, cx, sh, BERNOULLI, self);
}

static fl_status create_gauss(const fl_host *h, fl_ctx *cx, const fl_likelihood_shape *sh,
                              void **self)
{
    return create(h, cx, sh, GAUSSIAN, self);
}

static uint32_t n_params(void *self) { return ((lik *)self)->np; }

/* Sum of m <= BLOCK terms in double, in LANES independent partial sums
 * so the loop vectorises. Log p is computed in two passes per block of
 * BLOCK elements (terms into a stack buffer, then this sum): measured
 * 1.2 ns/element for Bernoulli against 1.9 with the sum fused into the
 * term loop, which GCC vectorises less well. */
static inline double sum_block(const fl_real *restrict t, uint32_t m)
{
    double acc[LANES] = { 0 }, s = 0;
    uint32_t j = 0;
    for (; j + LANES <= m; j += LANES)
        for (int q = 0; q < LANES; q++) acc[q] += t[j + q];
    for (; j < m; j++) s += t[j];
    for (int q = 0; q < LANES; q++) s += acc[q];
    return s;
}

/* ---- bernoulli ------------------------------------------------------------ */

/* x l - softplus(l) = (x - [l > 0]) l - log(1 + e^-|l|): the first part is
 * exactly 0 for a saturated, correctly predicted pixel, so no cancellation
 * of large terms. */
static inline fl_real bern_term(fl_real x, fl_real l)
{
    fl_real a = l < 0 ? -l : l;
    return (x - (l > 0 ? (fl_real)1 : (fl_real)0)) * l - fl_log1p_exp_neg(a);
}

#ifdef FL_REAL_DOUBLE
static double bern_logp(const fl_real *restrict x, const fl_real *restrict l, uint32_t dim)
{
    fl_real t[BLOCK];
    double s = 0;
    for (uint32_t d0 = 0; d0 < dim; d0 += BLOCK) {
        uint32_t m = dim - d0 < BLOCK ? dim - d0 : BLOCK;
        for (uint32_t d = 0; d < m; d++) t[d] = bern_term(x[d0 + d], l[d0 + d]);
        s += sum_block(t, m);
    }
    return s;
}
#else
/* The hot loop of IWAE training and of k = 5000 evaluation. Sum of
 * log(1 + e^-|l|) as the log of a product: each lane multiplies its
 * (1 + e^-|l|) in double (exact for a float e^-|l|, and at most 2 per
 * factor, so 900 factors stay below 2^900 < DBL_MAX), and one log per lane
 * replaces a log per pixel. */
#define PROD_SPAN 896 /* pixels per lane between folds: 2^896 < DBL_MAX */

static double bern_logp(const fl_real *restrict x, const fl_real *restrict l, uint32_t dim)
{
    double prod[LANES], lin[LANES], s = 0;
    for (int q = 0; q < LANES; q++) prod[q] = 1, lin[q] = 0;
    uint32_t d = 0, since = 0;
#ifdef __AVX512F__
    /* The loop below, spelled out: GCC assembles its double lanes from
     * scalar loads (measured 2 ns/pixel against 0.3). Lanes 0-7 and 8-15
     * are the low and high halves. */
    {
        const __m512d one = _mm512_set1_pd(1.0);
        __m512d p0 = one, p1 = one, s0 = _mm512_setzero_pd(), s1 = s0;
        for (; d + LANES <= dim; d += LANES) {
            __m512 lq = _mm512_loadu_ps(l + d), xq = _mm512_loadu_ps(x + d);
            /* -|l|: the sign bit set */
            __m512 t = fl_exp16(_mm512_or_ps(lq, _mm512_set1_ps(-0.0f)));
            p0 = _mm512_mul_pd(p0, _mm512_add_pd(one, _mm512_cvtps_pd(_mm512_castps512_ps256(t))));
            p1 = _mm512_mul_pd(p1, _mm512_add_pd(one, _mm512_cvtps_pd(_mm512_extractf32x8_ps(t, 1))));
            __mmask16 pos = _mm512_cmp_ps_mask(lq, _mm512_setzero_ps(), _CMP_GT_OQ);
            __m512 u = _mm512_mask_sub_ps(xq, pos, xq, _mm512_set1_ps(1.0f));
            u = _mm512_mul_ps(u, lq);
            s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(u)));
            s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(u, 1)));
            if (++since == PROD_SPAN) {
                _mm512_storeu_pd(prod, p0);
                _mm512_storeu_pd(prod + 8, p1);
                for (int q = 0; q < LANES; q++) s -= log(prod[q]);
                p0 = p1 = one;
                since = 0;
            }
        }
        _mm512_storeu_pd(prod, p0);
        _mm512_storeu_pd(prod + 8, p1);
        _mm512_storeu_pd(lin, s0);
        _mm512_storeu_pd(lin + 8, s1);
    }
#endif
    for (; d + LANES <= dim; d += LANES) {
        for (int q = 0; q < LANES; q++) {
            float lq = l[d + q], a = fabsf(lq);
            float t = fl_exp(-a);
            prod[q] *= 1.0 + (double)t;
            lin[q] += (double)((x[d + q] - (lq > 0 ? 1.0f : 0.0f)) * lq);
        }
        if (++since == PROD_SPAN) {
            for (int q = 0; q < LANES; q++) s -= log(prod[q]), prod[q] = 1;
            since = 0;
        }
    }
    for (; d < dim; d++) s += bern_term(x[d], l[d]);
    /* One log for the lanes' product: each lane is below 2^PROD_SPAN and
     * the running product is kept in [0.5, 1) with its power of two apart
     * (16 lanes of up to 2^896 would overflow a double). */
    double p = 1;
    long e2 = 0;
    for (int q = 0; q < LANES; q++) {
        int ex;
        s += lin[q];
        p = frexp(p * prod[q], &ex);
        e2 += ex;
    }
    return s - (log(p) + (double)e2 * 0.69314718055994530942);
}
#endif

static void bern_grad(const fl_real *restrict x, const fl_real *restrict l, fl_real w,
                      uint32_t dim, fl_real *restrict dl)
{
    for (uint32_t d = 0; d < dim; d++) dl[d] = w * (x[d] - fl_sigmoid(l[d]));
}

static void bern_rows(const lik *L, const fl_lik_args *a, uint32_t i)
{
    const uint32_t dim = L->dim;
    const fl_real *x = a->x + (size_t)(i / a->k) * dim, *l = a->param + (size_t)i * dim;
    if (a->logp) a->logp[i] = (fl_real)bern_logp(x, l, dim);
    if (!a->w) return;
    fl_real w = a->w[i];
    bern_grad(x, l, w, dim, a->dparam + (size_t)i * dim);
    if (a->dx) {
        fl_real *dx = a->dx + (size_t)i * dim;
        for (uint32_t d = 0; d < dim; d++) dx[d] = w * l[d];
    }
}

/* logit(clip(mean, 0.001, 0.999)): the decoder starts at the data mean, and
 * the clip keeps an always-0 pixel at a finite logit (-6.9). */
static void bern_init_bias(void *self, const fl_real *mean, fl_real *bias)
{
    const lik *L = self;
    for (uint32_t d = 0; d < L->dim; d++) {
        double m = mean[d];
        m = m < 0.001 ? 0.001 : m > 0.999 ? 0.999 : m;
        bias[d] = (fl_real)log(m / (1 - m));
    }
}

/* ---- gaussian ------------------------------------------------------------- */

/* One row: log p, and with gradients d/dm (dm), d/dlv (written to dlv, or
 * added to acc for the global variance) and d/dx, all times w. */
static double gauss_row(const fl_real *restrict x, const fl_real *restrict m,
                        const fl_real *restrict lv, uint32_t dim, int want_logp,
                        const fl_real *w, fl_real *restrict dm, fl_real *restrict dlv,
                        double *restrict acc, fl_real *restrict dx)
{
    double s = 0;
    if (want_logp) {
        fl_real t[BLOCK];
        for (uint32_t d0 = 0; d0 < dim; d0 += BLOCK) {
            uint32_t n = dim - d0 < BLOCK ? dim - d0 : BLOCK;
            for (uint32_t d = 0; d < n; d++) {
                fl_real r = x[d0 + d] - m[d0 + d];
                t[d] = r * r * fl_exp(-lv[d0 + d]) + lv[d0 + d];
            }
            s += sum_block(t, n);
        }
        s = -0.5 * (s + dim * LOG_2PI);
    }
    if (!w) return s;
    const fl_real wi = *w, hw = wi / 2;
    for (uint32_t d = 0; d < dim; d++) dm[d] = wi * (x[d] - m[d]) * fl_exp(-lv[d]);
    if (dx)
        for (uint32_t d = 0; d < dim; d++) dx[d] = -dm[d];
    if (dlv) {
        for (uint32_t d = 0; d < dim; d++) {
            fl_real r = x[d] - m[d];
            dlv[d] = hw * (r * r * fl_exp(-lv[d]) - 1);
        }
    } else if (acc) {
        for (uint32_t d = 0; d < dim; d++) {
            fl_real r = x[d] - m[d];
            acc[d] += hw * (r * r * fl_exp(-lv[d]) - 1);
        }
    }
    return s;
}

static void gauss_rows(const lik *L, const fl_lik_args *a, uint32_t i)
{
    const uint32_t dim = L->dim, np = L->np;
    const fl_real *x = a->x + (size_t)(i / a->k) * dim, *m = a->param + (size_t)i * np;
    const fl_real *lv = L->var == VAR_LEARNED ? m + dim
                        : L->var == VAR_FIXED ? L->lv_fixed
                                              : a->theta + L->lv_off;
    fl_real *dm = a->w ? a->dparam + (size_t)i * np : NULL;
    fl_real *dlv = a->w && L->var == VAR_LEARNED ? dm + dim : NULL;
    double *acc = a->w && L->var == VAR_GLOBAL ? L->acc : NULL;
    fl_real *dx = a->w && a->dx ? a->dx + (size_t)i * dim : NULL;
    double lp = gauss_row(x, m, lv, dim, a->logp != NULL, a->w ? a->w + i : NULL, dm, dlv, acc,
                          dx);
    if (a->logp) a->logp[i] = (fl_real)lp;
}

/* The decoder starts at the data mean with unit variance (log-variance 0). */
static void gauss_init_bias(void *self, const fl_real *mean, fl_real *bias)
{
    const lik *L = self;
    for (uint32_t d = 0; d < L->dim; d++) bias[d] = mean[d];
    if (L->var == VAR_LEARNED)
        for (uint32_t d = 0; d < L->dim; d++) bias[L->dim + d] = 0;
}

/* ---- calls ---------------------------------------------------------------- */

static fl_status log_prob(void *self, const fl_lik_args *a)
{
    lik *L = self;
    if (a->k == 0 || a->n % a->k || a->n > L->max_rows || (a->dx && a->k != 1) ||
        (!a->w && !a->logp)) {
        L->h->error(L->cx, "bad call: n = %u, k = %u (n must be a multiple of k, at most "
                    "max_rows %u; dx needs k = 1; logp may be NULL only with weights)",
                    a->n, a->k, L->max_rows);
        return FL_ERR_INVALID;
    }
    /* The global variance's gradient is a sum over rows: done serially, in
     * row order, so it is the same at any thread count. */
    int serial = L->kind == GAUSSIAN && L->var == VAR_GLOBAL && a->w;
    int par = !serial && (size_t)a->n * L->dim > PAR_MIN;
    (void)par;
    if (serial)
        for (uint32_t d = 0; d < L->dim; d++) L->acc[d] = 0;
    if (L->kind == BERNOULLI) {
#pragma omp parallel for schedule(static) if (par)
        for (uint32_t i = 0; i < a->n; i++) bern_rows(L, a, i);
    } else {
#pragma omp parallel for schedule(static) if (par)
        for (uint32_t i = 0; i < a->n; i++) gauss_rows(L, a, i);
    }
    if (serial)
        for (uint32_t d = 0; d < L->dim; d++) a->dtheta[L->lv_off + d] += (fl_real)L->acc[d];
    return FL_OK;
}

static fl_status bern_mean(void *self, uint32_t n, const fl_real *theta, const fl_real *param,
                           fl_real *x)
{
    (void)theta;
    const lik *L = self;
    size_t len = (size_t)n * L->dim;
    for (size_t i = 0; i < len; i++) x[i] = fl_sigmoid(param[i]);
    return FL_OK;
}

static fl_status gauss_mean(void *self, uint32_t n, const fl_real *theta, const fl_real *param,
                            fl_real *x)
{
    (void)theta;
    const lik *L = self;
    for (uint32_t i = 0; i < n; i++)
        memcpy(x + (size_t)i * L->dim, param + (size_t)i * L->np, L->dim * sizeof(fl_real));
    return FL_OK;
}

static const fl_likelihood_class bern_class = {
    .base = { sizeof(fl_likelihood_class), "bernoulli",
              "independent Bernoulli pixels on logits (param = dim logits; x in [0, 1]); "
              "mean = sigmoid(logits); decoder bias starts at logit(clipped data mean)",
              NULL, 0 },
    .flags = FL_LIK_CONCURRENT_LOGP, /* log p alone touches only its rows */
    .create = create_bern,
    .destroy = destroy,
    .n_params = n_params,
    .init_bias = bern_init_bias,
    .log_prob = log_prob,
    .mean = bern_mean,
};

static const fl_likelihood_class gauss_class = {
    .base = { sizeof(fl_likelihood_class), "gaussian",
              "diagonal Gaussian: param = mean (dim), plus log-variance (dim) with variance = "
              "learned; decoder bias starts at the data mean, log-variance 0",
              gauss_keys, sizeof gauss_keys / sizeof gauss_keys[0] },
    .flags = FL_LIK_CONCURRENT_LOGP, /* log p alone touches only its rows */
    .create = create_gauss,
    .destroy = destroy,
    .n_params = n_params,
    .init_bias = gauss_init_bias,
    .log_prob = log_prob,
    .mean = gauss_mean,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_LIKELIHOOD, &bern_class.base);
    return st == FL_OK ? r->add(r, FL_KIND_LIKELIHOOD, &gauss_class.base) : st;
}

FL_PLUGIN("likelihoods", "1.0.0", init)
