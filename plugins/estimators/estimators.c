/* estimators.c - the ELBO, IWAE, STL and DReG estimators.
 *
 * Each turns the n x k log importance weights logw[b*k + j] into one bound
 * per data point and the two gradient weights of estimator.h:
 *
 *   elbo  bound = mean_j logw                  wp = wq = 1/k
 *   iwae  bound = logsumexp_j logw - log k     wp = wq = softmax_j logw
 *   stl   as iwae, FL_EST_DETACH_Q             (Roeder et al. 2017)
 *   dreg  as iwae, wq = softmax^2, FL_EST_DETACH_Q  (Tucker et al. 2019)
 *
 * Everything is computed in double and rounded once when stored.
 *
 * Impossible samples (logw = -inf) are allowed. They get zero weights (a
 * gradient of log p at an impossible z means nothing), which also keeps the
 * host's rule wq = 0 wherever wp = 0. For iwae/stl/dreg that is what the
 * softmax gives anyway; the bound is -inf only when every sample of the
 * point is impossible, and then all its weights are 0. For elbo any -inf
 * sample makes the bound -inf; the remaining samples keep weight 1/k (the
 * gradient of the finite part of the mean). NaN or +inf log weights are
 * FL_ERR_NUMERIC: they mean something upstream already went wrong. */
#include <math.h>
#include <stdlib.h>

#include <flowlab/flowlab.h>

#include "check_logw.h"

enum { EST_ELBO, EST_IWAE, EST_STL, EST_DREG };

typedef struct est {
    const fl_host *h;
    fl_ctx *cx;            /* kept for error messages */
    int kind;
} est;

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_estimator_shape *sh, int kind,
                        void **self)
{
    if (sh->k == 0) {
        h->error(cx, "k must be at least 1");
        return FL_ERR_INVALID;
    }
    est *e = calloc(1, sizeof *e);
    if (!e) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    e->h = h;
    e->cx = cx;
    e->kind = kind;
    *self = e;
    return FL_OK;
}

#define CREATE(name, kind)                                                                  \
    static fl_status create_##name(const fl_host *h, fl_ctx *cx, const fl_estimator_shape *sh, \
                                   void **self)                                             \
    {                                                                                       \
        return create(h, cx, sh, kind, self);                                               \
    }
CREATE(elbo, EST_ELBO)
CREATE(iwae, EST_IWAE)
CREATE(stl, EST_STL)
CREATE(dreg, EST_DREG)

static void destroy(void *self) { free(self); }

static void elbo_row(const fl_real *lw, uint32_t k, double *bound, fl_real *wp, fl_real *wq)
{
    double s = 0;
    for (uint32_t j = 0; j < k; j++) s += lw[j];
    *bound = s / k; /* -inf as soon as one sample is impossible */
    if (!wp) return;
    const fl_real w = (fl_real)(1.0 / k);
    for (uint32_t j = 0; j < k; j++) {
        wp[j] = lw[j] == -INFINITY ? 0 : w;
        wq[j] = wp[j];
    }
}

/* logsumexp - log k, shifted by the maximum so no exp overflows; the
 * weights are the softmax, and (dreg) its square for wq. k = 1 gives
 * bound = logw and weight exp(0)/1 = 1 exactly, as elbo does. */
static void iwae_row(const fl_real *lw, uint32_t k, int squared, double *bound, fl_real *wp,
                     fl_real *wq)
{
    double m = -INFINITY;
    for (uint32_t j = 0; j < k; j++) m = lw[j] > m ? lw[j] : m;
    if (m == -INFINITY) {
        *bound = -INFINITY;
        for (uint32_t j = 0; wp && j < k; j++) wp[j] = wq[j] = 0;
        return;
    }
    double s = 0;
    for (uint32_t j = 0; j < k; j++) s += exp((double)lw[j] - m);
    *bound = m + (log(s) - log((double)k));
    if (!wp) return;
    const double is = 1 / s;
    for (uint32_t j = 0; j < k; j++) {
        double p = exp((double)lw[j] - m) * is;
        wp[j] = (fl_real)p;
        wq[j] = (fl_real)(squared ? p * p : p);
    }
}

static fl_status weights(void *self, const fl_est_args *a)
{
    const est *e = self;
    if (a->k == 0 || (!a->wp) != (!a->wq)) {
        e->h->error(e->cx, "called with k = 0, or with only one of wp and wq");
        return FL_ERR_INVALID;
    }
    for (uint32_t b = 0; b < a->n; b++) {
        size_t o = (size_t)b * a->k;
        const fl_real *lw = a->logw + o;
        fl_status st = fl_est_check_logw(e->h, e->cx, lw, b, a->k);
        if (st != FL_OK) return st;
        fl_real *wp = a->wp ? a->wp + o : NULL, *wq = a->wq ? a->wq + o : NULL;
        if (e->kind == EST_ELBO) elbo_row(lw, a->k, &a->bound[b], wp, wq);
        else iwae_row(lw, a->k, e->kind == EST_DREG, &a->bound[b], wp, wq);
    }
    return FL_OK;
}

static const fl_estimator_class elbo_class = {
    .base = { sizeof(fl_estimator_class), "elbo",
              "evidence lower bound: mean over the k samples of log w; every sample "
              "weighs 1/k (an impossible sample makes the bound -inf and weighs 0)",
              NULL, 0 },
    .flags = 0,
    .create = create_elbo,
    .destroy = destroy,
    .weights = weights,
};

static const fl_estimator_class iwae_class = {
    .base = { sizeof(fl_estimator_class), "iwae",
              "importance-weighted bound log mean_j exp(log w_j) (Burda et al.); sample "
              "weights = softmax of log w for both gradients; k = 1 is elbo",
              NULL, 0 },
    .flags = 0,
    .create = create_iwae,
    .destroy = destroy,
    .weights = weights,
};

static const fl_estimator_class stl_class = {
    .base = { sizeof(fl_estimator_class), "stl",
              "iwae bound and weights, with log q's parameters detached from the "
              "inference gradient ('sticking the landing', Roeder et al.)",
              NULL, 0 },
    .flags = FL_EST_DETACH_Q,
    .create = create_stl,
    .destroy = destroy,
    .weights = weights,
};

static const fl_estimator_class dreg_class = {
    .base = { sizeof(fl_estimator_class), "dreg",
              "doubly reparameterised iwae gradient (Tucker et al.): iwae bound, generative "
              "weights softmax, inference weights softmax^2, log q detached",
              NULL, 0 },
    .flags = FL_EST_DETACH_Q,
    .create = create_dreg,
    .destroy = destroy,
    .weights = weights,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    const fl_component *cls[] = { &elbo_class.base, &iwae_class.base, &stl_class.base,
                                  &dreg_class.base };
    for (size_t i = 0; i < sizeof cls / sizeof *cls; i++) {
        fl_status st = r->add(r, FL_KIND_ESTIMATOR, cls[i]);
        if (st != FL_OK) return st;
    }
    return FL_OK;
}

FL_PLUGIN("estimators", "1.0.0", init)
