/* fail_lik.c - a test likelihood that fails on OpenMP worker threads only.
 *
 * A Gaussian log-likelihood (unit variance, mean = the decoder's output)
 * that declares FL_LIK_CONCURRENT_LOGP, so the host calls it on row ranges
 * from the decoder's worker threads, and fails with a message of its own
 * whenever it is called off thread 0. The host must still show that
 * message: host->error() text is kept per thread (tests/test_cli.sh). */
#include <omp.h>
#include <stdlib.h>

#include <flowlab/flowlab.h>

typedef struct fail_lik {
    const fl_host *host;
    fl_ctx *cx;
    uint32_t dim; /* data dimension = parameters per row */
} fail_lik;

static fl_status lik_create(const fl_host *host, fl_ctx *cx, const fl_likelihood_shape *shape,
                            void **self)
{
    fail_lik *l = calloc(1, sizeof *l);
    if (!l) return FL_ERR_NOMEM;
    l->host = host;
    l->cx = cx;
    l->dim = shape->dim;
    *self = l;
    return FL_OK;
}

static void lik_destroy(void *self) { free(self); }

static uint32_t lik_n_params(void *self) { return ((fail_lik *)self)->dim; }

static fl_status lik_log_prob(void *self, const fl_lik_args *a)
{
    fail_lik *l = self;
    if (!a->w && omp_get_thread_num() != 0) {
        l->host->error(l->cx, "refusing rows on worker thread %d on purpose",
                       omp_get_thread_num());
        return FL_ERR_NUMERIC;
    }
    for (uint32_t i = 0; i < a->n; i++) {
        const fl_real *x = a->x + (size_t)(i / a->k) * l->dim;
        const fl_real *m = a->param + (size_t)i * l->dim;
        fl_real s = 0;
        for (uint32_t j = 0; j < l->dim; j++) {
            fl_real d = x[j] - m[j];
            s += d * d;
            if (a->w) a->dparam[(size_t)i * l->dim + j] = a->w[i] * d;
        }
        if (a->logp) a->logp[i] = (fl_real)-0.5 * s;
    }
    return FL_OK;
}

static fl_status lik_mean(void *self, uint32_t n, const fl_real *theta, const fl_real *param,
                          fl_real *x)
{
    (void)theta;
    fail_lik *l = self;
    for (size_t i = 0; i < (size_t)n * l->dim; i++) x[i] = param[i];
    return FL_OK;
}

static const fl_likelihood_class fail_lik_class = {
    { sizeof(fl_likelihood_class), "fail-lik", "fails off OpenMP thread 0 (test)", NULL, 0 },
    FL_LIK_CONCURRENT_LOGP, lik_create, lik_destroy, lik_n_params, NULL, lik_log_prob, lik_mean,
};

static fl_status fail_lik_init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_LIKELIHOOD, &fail_lik_class.base);
}

FL_PLUGIN("fail_lik", "1", fail_lik_init)
