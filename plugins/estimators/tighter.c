/* tighter.c - the estimators that interpolate between or split the ELBO and
 * IWAE bounds: Renyi (variational Renyi bound) and VR-max (Li & Turner
 * 2016), MIWAE, CIWAE and PIWAE (Rainforth et al. 2018, "Tighter
 * variational bounds are not necessarily better").
 *
 * With lw_j the k log weights of a point, softmax over j, and for miwae
 * and piwae the k samples split into m groups G_1..G_m of K = k/m
 * consecutive samples:
 *
 *   renyi  bound 1/(1-a) log mean_j exp((1-a) lw_j)
 *          wp = wq = softmax((1-a) lw)          (the bound's gradient)
 *   vr-max bound max_j lw_j, wp = wq = 1 at the first argmax, else 0
 *   miwae  bound mean_g IWAE_K(G_g), wp = wq = softmax within G_g / m
 *   ciwae  bound b ELBO + (1-b) IWAE_k, wp = wq = b/k + (1-b) softmax
 *   piwae  bound IWAE_k; wp = softmax over all k (IWAE_k's generative
 *          gradient), wq = softmax within G_g / m (MIWAE's inference one)
 *
 * Special cases hold bit for bit, because the same operations run in the
 * same order as in estimators.c: renyi a = 0 and miwae/piwae m = 1 are iwae,
 * miwae m = k and ciwae b = 1 are elbo, ciwae b = 0 is iwae.
 *
 * Impossible samples (lw = -inf) weigh 0 in both gradients, as in
 * estimators.c; the remaining samples keep the weights of the bound's
 * finite part. A group of impossible samples makes the miwae bound -inf
 * (like the elbo's), as does any impossible sample for ciwae with b > 0 and
 * renyi with a > 1 (where (1-a) lw = +inf). NaN and +inf log weights are
 * FL_ERR_NUMERIC.
 *
 * PIWAE and the host's rule wq = 0 wherever wp = 0: a sample of a group far
 * below the best one can have a generative weight that rounds to 0 while
 * its inference weight (within its group) does not. Its wp is then raised
 * to wq * eps/2 (eps of fl_real), which keeps wq/wp <= 2/eps and moves the
 * sum of a point's generative weights by at most half an ulp of 1; where
 * even that rounds to 0, wq is set to 0 too (such a wq is below 2^-126).
 *
 * Everything is computed in double and rounded once when stored. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include <flowlab/flowlab.h>

#include "check_logw.h"

enum { T_RENYI, T_VRMAX, T_MIWAE, T_CIWAE, T_PIWAE };

typedef struct est {
    const fl_host *h;
    fl_ctx *cx;            /* kept for error messages */
    int kind;
    double c;              /* renyi: 1 - alpha; ciwae: beta */
    uint32_t m;            /* miwae, piwae: groups (divides k) */
    uint32_t k;            /* the shape's k: the largest a call may use */
    double *p, *q;         /* k each (host workspace): a point's weights in double */
} est;

/* m = 0: the largest divisor of k not above sqrt(k) (MIWAE(8, 8) at k = 64). */
static uint32_t auto_groups(uint32_t k)
{
    uint32_t best = 1;
    for (uint32_t d = 1; (uint64_t)d * d <= k; d++)
        if (k % d == 0) best = d;
    return best;
}

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_estimator_shape *sh, int kind,
                        void **self)
{
    const uint32_t k = sh->k;
    if (k == 0) {
        h->error(cx, "k must be at least 1");
        return FL_ERR_INVALID;
    }
    double c = 0;
    uint32_t m = 1;
    if (kind == T_RENYI) {
        double a = h->cfg_real(cx, "alpha");
        if (a == 1) {
            h->error(cx, "alpha = 1: the Renyi bound is 0/0 there (its limit is the elbo); "
                         "use type = elbo, or an alpha other than 1");
            return FL_ERR_INVALID;
        }
        c = 1 - a;
    } else if (kind == T_CIWAE) {
        c = h->cfg_real(cx, "beta"); /* [0, 1]: the key's range */
    } else if (kind == T_MIWAE || kind == T_PIWAE) {
        int64_t mm = h->cfg_int(cx, "m");
        if (mm == 0) {
            m = auto_groups(k);
        } else if (mm > k || k % (uint32_t)mm) {
            h->error(cx, "m = %lld does not divide [estimator] k = %u (m groups of k/m samples "
                         "each); use a divisor of k, or m = 0 for the largest one not above "
                         "sqrt(k)",
                     (long long)mm, k);
            return FL_ERR_INVALID;
        } else {
            m = (uint32_t)mm;
        }
    }
    est *e = calloc(1, sizeof *e);
    if (!e) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    e->h = h;
    e->cx = cx;
    e->kind = kind;
    e->c = c;
    e->m = m;
    e->k = k;
    e->p = h->workspace(cx, 2 * (size_t)k * sizeof(double));
    if (!e->p) {
        free(e);
        h->error(cx, "out of memory for %u sample weights", k);
        return FL_ERR_NOMEM;
    }
    e->q = e->p + k;
    *self = e;
    return FL_OK;
}

#define CREATE(name, kind)                                                                  \
    static fl_status create_##name(const fl_host *h, fl_ctx *cx, const fl_estimator_shape *sh, \
                                   void **self)                                             \
    {                                                                                       \
        return create(h, cx, sh, kind, self);                                               \
    }
CREATE(renyi, T_RENYI)
CREATE(vrmax, T_VRMAX)
CREATE(miwae, T_MIWAE)
CREATE(ciwae, T_CIWAE)
CREATE(piwae, T_PIWAE)

static void destroy(void *self) { free(self); }

/* IWAE over the K samples lw[0..K): the bound logsumexp - log K (as
 * estimators.c computes it) and, when p is not NULL, the softmax times
 * `scale` into p (double). All impossible: -inf and zeros. */
static double iwae_group(const fl_real *lw, uint32_t K, double scale, double *p)
{
    double m = -INFINITY;
    for (uint32_t j = 0; j < K; j++) m = lw[j] > m ? lw[j] : m;
    if (m == -INFINITY) {
        for (uint32_t j = 0; p && j < K; j++) p[j] = 0;
        return -INFINITY;
    }
    double s = 0;
    for (uint32_t j = 0; j < K; j++) s += exp((double)lw[j] - m);
    if (p) {
        const double is = 1 / s;
        for (uint32_t j = 0; j < K; j++) p[j] = exp((double)lw[j] - m) * is / scale;
    }
    return m + (log(s) - log((double)K));
}

/* Renyi: t_j = c lw_j over the possible samples (c = 1 - alpha), bound
 * (max t + log mean exp(t - max t)) / c, weights softmax(t). Near alpha = 1
 * (|c| < 1/64) the log mean is log1p(mean expm1(t - max t)), which keeps
 * its relative accuracy as c -> 0 instead of cancelling to 0/0. */
static double renyi_row(double c, const fl_real *lw, uint32_t k, double *p)
{
    double M = -INFINITY;
    uint32_t impossible = 0;
    for (uint32_t j = 0; j < k; j++) {
        if (lw[j] == -INFINITY) impossible++;
        else M = c * lw[j] > M ? c * lw[j] : M;
    }
    if (impossible == k) {
        for (uint32_t j = 0; p && j < k; j++) p[j] = 0;
        return -INFINITY;
    }
    double s = 0, e1 = 0;
    for (uint32_t j = 0; j < k; j++)
        if (lw[j] != -INFINITY) {
            s += exp(c * lw[j] - M);
            e1 += expm1(c * lw[j] - M);
        }
    if (p) {
        const double is = 1 / s;
        for (uint32_t j = 0; j < k; j++) p[j] = lw[j] == -INFINITY ? 0 : exp(c * lw[j] - M) * is;
    }
    /* alpha > 1: an impossible sample's exp((1-alpha) lw) is +inf */
    if (impossible && c < 0) return -INFINITY;
    if (fabs(c) < 1.0 / 64) return M / c + log1p(e1 / k) / c;
    return (M + (log(s) - log((double)k))) / c; /* c = 1: exactly iwae's */
}

static double vrmax_row(const fl_real *lw, uint32_t k, double *p)
{
    uint32_t at = 0;
    for (uint32_t j = 1; j < k; j++) at = lw[j] > lw[at] ? j : at; /* ties: lowest j */
    for (uint32_t j = 0; p && j < k; j++) p[j] = j == at && lw[at] != -INFINITY ? 1 : 0;
    return lw[at];
}

/* MIWAE's bound (the mean of the m group bounds, summed in order so that
 * m = k gives the elbo's sum) and its weights softmax / m into p. */
static double miwae_row(uint32_t m, const fl_real *lw, uint32_t k, double *p)
{
    const uint32_t K = k / m;
    double acc = 0;
    for (uint32_t g = 0; g < m; g++)
        acc += iwae_group(lw + (size_t)g * K, K, m, p ? p + (size_t)g * K : NULL);
    return acc / m;
}

static double ciwae_row(double beta, const fl_real *lw, uint32_t k, double *p)
{
    double mean = 0;
    for (uint32_t j = 0; j < k; j++) mean += lw[j];
    mean /= k;
    double iw = iwae_group(lw, k, 1, p);
    if (p)
        for (uint32_t j = 0; j < k; j++)
            p[j] = lw[j] == -INFINITY ? 0 : beta / k + (1 - beta) * p[j];
    /* a zero coefficient drops its term (0 * -inf would be NaN) */
    if (beta == 1) return mean;
    if (beta == 0) return iw;
    return beta * mean + (1 - beta) * iw;
}

static fl_status weights(void *self, const fl_est_args *a)
{
    const est *e = self;
    const uint32_t k = a->k;
    if (k == 0 || (!a->wp) != (!a->wq)) {
        e->h->error(e->cx, "called with k = 0, or with only one of wp and wq");
        return FL_ERR_INVALID;
    }
    if (k > e->k || ((e->kind == T_MIWAE || e->kind == T_PIWAE) && k % e->m)) {
        e->h->error(e->cx, "called with k = %u, created for k = %u (m = %u)", k, e->k, e->m);
        return FL_ERR_INVALID;
    }
    double *p = e->p, *q = e->q;
    const double half_eps = sizeof(fl_real) == sizeof(float) ? FLT_EPSILON / 2 : DBL_EPSILON / 2;
    for (uint32_t b = 0; b < a->n; b++) {
        size_t o = (size_t)b * k;
        const fl_real *lw = a->logw + o;
        fl_status st = fl_est_check_logw(e->h, e->cx, lw, b, k);
        if (st != FL_OK) return st;
        fl_real *wp = a->wp ? a->wp + o : NULL, *wq = a->wq ? a->wq + o : NULL;
        double *pp = wp ? p : NULL;
        double bound;
        switch (e->kind) {
        case T_RENYI: bound = renyi_row(e->c, lw, k, pp); break;
        case T_VRMAX: bound = vrmax_row(lw, k, pp); break;
        case T_MIWAE: bound = miwae_row(e->m, lw, k, pp); break;
        case T_CIWAE: bound = ciwae_row(e->c, lw, k, pp); break;
        default: bound = iwae_group(lw, k, 1, pp); break; /* piwae */
        }
        a->bound[b] = bound;
        if (!wp) continue;
        if (e->kind != T_PIWAE) {
            for (uint32_t j = 0; j < k; j++) wp[j] = wq[j] = (fl_real)p[j];
            continue;
        }
        miwae_row(e->m, lw, k, q);
        for (uint32_t j = 0; j < k; j++) {
            fl_real gp = (fl_real)p[j], gq = (fl_real)q[j];
            const fl_real least = (fl_real)(gq * half_eps);
            if (gp < least) gp = least;
            wp[j] = gp;
            wq[j] = gp == 0 ? 0 : gq;
        }
    }
    return FL_OK;
}

static const fl_key renyi_keys[] = {
    { "alpha", FL_KEY_REAL, "0.5", -1000, 1000, NULL,
      "Renyi order a: 0 is iwae, near 1 approaches the elbo, 1 is refused; below 0 the "
      "bound is above iwae's and no longer a lower bound in general (vr-max is a -> -inf)" },
};

static const fl_key groups_keys[] = {
    { "m", FL_KEY_INT, "0", 0, 1 << 20, NULL,
      "groups M of K = k/M samples; must divide [estimator] k; 0 = the largest divisor of k "
      "not above sqrt(k) (8 at k = 64, 2 at k = 8, 1 at k = 1)" },
};

static const fl_key ciwae_keys[] = {
    { "beta", FL_KEY_REAL, "0.5", 0, 1, NULL,
      "weight of the elbo: bound = beta elbo + (1 - beta) iwae; 1 is elbo, 0 iwae" },
};

static const fl_estimator_class renyi_class = {
    .base = { sizeof(fl_estimator_class), "renyi",
              "variational Renyi bound 1/(1-alpha) log mean_j exp((1-alpha) log w_j) (Li & "
              "Turner 2016); both gradients weigh samples by softmax((1-alpha) log w); "
              "alpha = 0 is iwae",
              renyi_keys, 1 },
    .flags = 0,
    .create = create_renyi,
    .destroy = destroy,
    .weights = weights,
};

static const fl_estimator_class vrmax_class = {
    .base = { sizeof(fl_estimator_class), "vr-max",
              "Renyi bound at alpha -> -inf (Li & Turner 2016): bound max_j log w_j, all "
              "gradient weight on that sample (ties: the first)",
              NULL, 0 },
    .flags = 0,
    .create = create_vrmax,
    .destroy = destroy,
    .weights = weights,
};

static const fl_estimator_class miwae_class = {
    .base = { sizeof(fl_estimator_class), "miwae",
              "MIWAE(M, K) (Rainforth et al. 2018): the mean of M iwae bounds over groups of "
              "K = k/M samples; weights softmax within a group / M; m = 1 is iwae, m = k elbo",
              groups_keys, 1 },
    .flags = 0,
    .create = create_miwae,
    .destroy = destroy,
    .weights = weights,
};

static const fl_estimator_class ciwae_class = {
    .base = { sizeof(fl_estimator_class), "ciwae",
              "CIWAE(beta) (Rainforth et al. 2018): bound beta elbo + (1 - beta) iwae, weights "
              "beta/k + (1 - beta) softmax",
              ciwae_keys, 1 },
    .flags = 0,
    .create = create_ciwae,
    .destroy = destroy,
    .weights = weights,
};

static const fl_estimator_class piwae_class = {
    .base = { sizeof(fl_estimator_class), "piwae",
              "PIWAE(M, K) (Rainforth et al. 2018): generative gradient of iwae over all k "
              "samples, inference gradient of MIWAE(M, k/M); the reported bound is the iwae "
              "bound over all k",
              groups_keys, 1 },
    .flags = 0,
    .create = create_piwae,
    .destroy = destroy,
    .weights = weights,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    const fl_component *cls[] = { &renyi_class.base, &vrmax_class.base, &miwae_class.base,
                                  &ciwae_class.base, &piwae_class.base };
    for (size_t i = 0; i < sizeof cls / sizeof *cls; i++) {
        fl_status st = r->add(r, FL_KIND_ESTIMATOR, cls[i]);
        if (st != FL_OK) return st;
    }
    return FL_OK;
}

FL_PLUGIN("tighter", "1.0.0", init)
