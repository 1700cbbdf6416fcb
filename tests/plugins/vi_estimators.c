/* vi_estimators.c - two small estimators for the vi tests, independent of
 * the built-in estimator plugin: "t-elbo" (mean of log w, weights 1/k) and
 * "t-stl" (log mean exp of log w, softmax weights, FL_EST_DETACH_Q). */
#include <math.h>
#include <stdlib.h>

#include <flowlab/flowlab.h>

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_estimator_shape *s, void **self)
{
    (void)h, (void)cx, (void)s;
    *self = malloc(1);
    return *self ? FL_OK : FL_ERR_NOMEM;
}

static void destroy(void *self) { free(self); }

static fl_status w_elbo(void *self, const fl_est_args *a)
{
    (void)self;
    for (uint32_t b = 0; b < a->n; b++) {
        double s = 0;
        for (uint32_t j = 0; j < a->k; j++) s += a->logw[b * a->k + j];
        a->bound[b] = s / a->k;
        for (uint32_t j = 0; a->wp && j < a->k; j++)
            a->wp[b * a->k + j] = a->wq[b * a->k + j] = (fl_real)(1.0 / a->k);
    }
    return FL_OK;
}

static fl_status w_stl(void *self, const fl_est_args *a)
{
    (void)self;
    for (uint32_t b = 0; b < a->n; b++) {
        const fl_real *lw = a->logw + (size_t)b * a->k;
        double m = -INFINITY, s = 0;
        for (uint32_t j = 0; j < a->k; j++) m = lw[j] > m ? lw[j] : m;
        for (uint32_t j = 0; j < a->k; j++) s += exp(lw[j] - m);
        a->bound[b] = m + log(s / a->k);
        for (uint32_t j = 0; a->wp && j < a->k; j++)
            a->wp[b * a->k + j] = a->wq[b * a->k + j] = (fl_real)(exp(lw[j] - m) / s);
    }
    return FL_OK;
}

static const fl_estimator_class t_elbo = {
    .base = { sizeof(fl_estimator_class), "t-elbo", "test elbo", NULL, 0 },
    .create = create, .destroy = destroy, .weights = w_elbo,
};
static const fl_estimator_class t_stl = {
    .base = { sizeof(fl_estimator_class), "t-stl", "test stl", NULL, 0 },
    .flags = FL_EST_DETACH_Q,
    .create = create, .destroy = destroy, .weights = w_stl,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_ESTIMATOR, &t_elbo.base);
    return st == FL_OK ? r->add(r, FL_KIND_ESTIMATOR, &t_stl.base) : st;
}

FL_PLUGIN("test-vi-estimators", "1.0.0", init)
