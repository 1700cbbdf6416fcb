/* dlogistic.c - the discretized logistic likelihood of grey-level images
 * (Kingma et al. 2016, IAF on CIFAR-10; Salimans et al. 2017, PixelCNN++ with
 * one component): pixel values x in [0, 1] fall in `bins` bins (256 for
 * 8-bit images; x = g / (bins - 1), g = 0 .. bins-1); a pixel's probability
 * is the mass of a logistic(mu, s) over its bin, the two edge bins taking
 * the tails:
 *
 *   P(g) = F(c + h) - F(c - h)   0 < g < bins-1,  c = g / (bins-1), h = 1/(2(bins-1))
 *   P(0) = F(h),   P(bins-1) = 1 - F(1 - h),      F(t) = sigmoid((t - mu) / s)
 *
 * so the bins' probabilities sum to 1 exactly. param = [mu (dim), log s
 * (dim)] per row (the gaussian likelihood's block layout); log s is
 * clamped below at min_log_scale (zero gradient there), as PixelCNN++
 * does, so a pixel that is always 0 cannot drive s to 0.
 *
 * With a = (c + h - mu)/s, b = (c - h - mu)/s (a - b = 2h/s = d > 0):
 *   log P = log sigmoid(a) + log sigmoid(-b) + log(1 - e^-d)   (interior)
 *   d/dmu   = -(sigmoid(-a) - sigmoid(b)) / s
 *   d/dlogs = -a sigmoid(-a) + b sigmoid(b) - d / expm1(d)
 * edges: log sigmoid(a) (g = 0) and log sigmoid(-b) (g = bins-1) with the
 * matching terms. Every term is computed in double, stable for any a, b. */
#include <math.h>
#include <stdlib.h>

#include <flowlab/flowlab.h>

typedef struct dlog {
    const fl_host *h;
    fl_ctx *cx;
    uint32_t dim, max_rows, bins;
    double min_ls;
} dlog;

static const fl_key keys[] = {
    { "bins", FL_KEY_INT, "256", 2, 65536, NULL,
      "grey levels: x in [0, 1] is bin round(x * (bins - 1)); 256 for 8-bit images" },
    { "min_log_scale", FL_KEY_REAL, "-7", -30, 5, NULL,
      "lower clamp of the log-scale (PixelCNN++: -7)" },
};

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_likelihood_shape *sh, void **self)
{
    if (sh->dim == 0) {
        h->error(cx, "the data dimension must be at least 1");
        return FL_ERR_INVALID;
    }
    dlog *L = calloc(1, sizeof *L);
    if (!L) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    L->h = h;
    L->cx = cx;
    L->dim = sh->dim;
    L->max_rows = sh->max_rows;
    L->bins = (uint32_t)h->cfg_int(cx, "bins");
    L->min_ls = h->cfg_real(cx, "min_log_scale");
    *self = L;
    return FL_OK;
}

static void destroy(void *self) { free(self); }

static uint32_t n_params(void *self) { return 2 * ((dlog *)self)->dim; }

/* log sigmoid(t), stable both ways. */
static inline double log_sigmoid(double t) { return -(fmax(-t, 0) + log1p(exp(-fabs(t)))); }
static inline double sigmoid(double t)
{
    return t >= 0 ? 1 / (1 + exp(-t)) : exp(t) / (1 + exp(t));
}

/* log P of one pixel (bin g of `bins`) and, when dmu is not NULL, its
 * derivatives in mu and the (unclamped) log-scale. */
static double pixel(uint32_t g, uint32_t bins, double mu, double ls_raw, double min_ls,
                    double *dmu, double *dls)
{
    const int clamped = ls_raw < min_ls;
    const double ls = clamped ? min_ls : ls_raw, is = exp(-ls);
    const double half = 0.5 / (bins - 1), c = (double)g / (bins - 1);
    const double a = (c + half - mu) * is, b = (c - half - mu) * is;
    double lp, gm, gl;
    if (g == 0) {
        lp = log_sigmoid(a);
        const double sa = sigmoid(-a);
        gm = -sa * is;
        gl = -a * sa;
    } else if (g == bins - 1) {
        lp = log_sigmoid(-b);
        const double sb = sigmoid(b);
        gm = sb * is;
        gl = b * sb;
    } else {
        const double d = 2 * half * is, em = -expm1(-d); /* 1 - e^-d, > 0 */
        lp = log_sigmoid(a) + log_sigmoid(-b) + log(em);
        const double sa = sigmoid(-a), sb = sigmoid(b);
        gm = -(sa - sb) * is;
        gl = -a * sa + b * sb - d * exp(-d) / em; /* d / expm1(d), no inf/inf */
    }
    if (dmu) {
        *dmu = gm;
        *dls = clamped ? 0 : gl;
    }
    return lp;
}

static fl_status log_prob(void *self, const fl_lik_args *a)
{
    dlog *L = self;
    if (a->k == 0 || a->n % a->k || a->n > L->max_rows || (!a->w && !a->logp)) {
        L->h->error(L->cx, "bad call: n = %u, k = %u (n must be a multiple of k, at most "
                    "max_rows %u; logp may be NULL only with weights)",
                    a->n, a->k, L->max_rows);
        return FL_ERR_INVALID;
    }
    if (a->dx) {
        L->h->error(L->cx, "the data are discrete grey levels: log p has no gradient in x");
        return FL_ERR_UNSUPPORTED;
    }
    const uint32_t D = L->dim, bins = L->bins;
    const fl_real *x0 = a->x;
    /* Every x must be a grey level in [0, 1]: checked once per data row. */
    for (uint32_t r = 0; r < a->n / a->k; r++)
        for (uint32_t d = 0; d < D; d++) {
            fl_real v = x0[(size_t)r * D + d];
            if (!(v >= 0 && v <= 1)) {
                L->h->error(L->cx, "x = %g (row %u, dimension %u) is outside [0, 1]; the "
                            "discretized logistic takes grey levels (e.g. [data] binarize = "
                            "none)", (double)v, r, d);
                return FL_ERR_INVALID;
            }
        }
    int par = (size_t)a->n * D > 16384;
    (void)par;
#pragma omp parallel for schedule(static) if (par)
    for (uint32_t i = 0; i < a->n; i++) {
        const fl_real *x = a->x + (size_t)(i / a->k) * D;
        const fl_real *mu = a->param + (size_t)i * 2 * D, *ls = mu + D;
        fl_real *gmu = a->w ? a->dparam + (size_t)i * 2 * D : NULL;
        double s = 0;
        for (uint32_t d = 0; d < D; d++) {
            uint32_t g = (uint32_t)lrint((double)x[d] * (bins - 1));
            double dm = 0, dl = 0;
            s += pixel(g, bins, mu[d], ls[d], L->min_ls, gmu ? &dm : NULL, &dl);
            if (gmu) {
                gmu[d] = (fl_real)(a->w[i] * dm);
                gmu[D + d] = (fl_real)(a->w[i] * dl);
            }
        }
        if (a->logp) a->logp[i] = (fl_real)s;
    }
    return FL_OK;
}

/* The decoder's initial biases: mu at the data mean, log s at -2 (a
 * logistic of standard deviation 0.25, about a grey image's). */
static void init_bias(void *self, const fl_real *mean, fl_real *bias)
{
    const dlog *L = self;
    for (uint32_t d = 0; d < L->dim; d++) {
        bias[d] = mean[d];
        bias[L->dim + d] = -2;
    }
}

/* E[x] ~ mu clamped to [0, 1] (pictures). */
static fl_status mean(void *self, uint32_t n, const fl_real *theta, const fl_real *param,
                      fl_real *x)
{
    (void)theta;
    const dlog *L = self;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t d = 0; d < L->dim; d++) {
            fl_real m = param[(size_t)i * 2 * L->dim + d];
            x[(size_t)i * L->dim + d] = m < 0 ? 0 : m > 1 ? 1 : m;
        }
    return FL_OK;
}

static const fl_likelihood_class dlog_class = {
    .base = { sizeof(fl_likelihood_class), "discretized-logistic",
              "grey levels in [0, 1] in `bins` bins (256): the mass of a logistic(mu, s) over "
              "each pixel's bin, the edge bins taking the tails; param = mu (dim), log s (dim); "
              "decoder bias starts at the data mean, log s = -2",
              keys, sizeof keys / sizeof keys[0] },
    .flags = FL_LIK_CONCURRENT_LOGP, /* log p alone touches only its rows */
    .create = create,
    .destroy = destroy,
    .n_params = n_params,
    .init_bias = init_bias,
    .log_prob = log_prob,
    .mean = mean,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_LIKELIHOOD, &dlog_class.base);
}

FL_PLUGIN("dlogistic", "1.0.0", init)
