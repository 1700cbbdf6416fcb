/* normal.c - the standard normal prior p(z) = N(0, I).
 *
 *   log p = -|z|^2/2 - d/2 log 2 pi,   d log p/dz = -z,   sample z = eps
 *
 * No parameters. Gradients follow prior.h: dz is written, times w. */
#include <stdlib.h>
#include <string.h>

#include <flowlab/flowlab.h>

#define HALF_LOG_2PI 0.91893853320467274178

typedef struct prior {
    const fl_host *h;
    fl_ctx *cx;
    uint32_t dim, max_rows;
} prior;

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_prior_shape *sh, void **self)
{
    if (sh->dim == 0) {
        h->error(cx, "the latent dimension must be at least 1");
        return FL_ERR_INVALID;
    }
    prior *p = calloc(1, sizeof *p);
    if (!p) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    p->h = h;
    p->cx = cx;
    p->dim = sh->dim;
    p->max_rows = sh->max_rows;
    *self = p;
    return FL_OK;
}

static void destroy(void *self) { free(self); }

/* |z|^2 in double over 8 lanes, so the loop vectorises. */
static double sum_sq(const fl_real *x, uint32_t n)
{
    double acc[8] = { 0 }, s = 0;
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += (double)x[i + l] * x[i + l];
    for (; i < n; i++) s += (double)x[i] * x[i];
    for (int l = 0; l < 8; l++) s += acc[l];
    return s;
}

static fl_status log_prob(void *self, const fl_prior_args *a)
{
    const prior *p = self;
    const uint32_t d = p->dim;
    if (a->n > p->max_rows || (!a->w && !a->logp)) {
        p->h->error(p->cx, "bad call: n = %u (max_rows %u), or neither logp nor weights", a->n,
                    p->max_rows);
        return FL_ERR_INVALID;
    }
    for (uint32_t i = 0; i < a->n; i++) {
        const fl_real *z = a->z + (size_t)i * d;
        if (a->logp) a->logp[i] = (fl_real)(-0.5 * sum_sq(z, d) - d * HALF_LOG_2PI);
        if (a->w) {
            fl_real w = a->w[i], *dz = a->dz + (size_t)i * d;
            for (uint32_t j = 0; j < d; j++) dz[j] = -w * z[j];
        }
    }
    return FL_OK;
}

static fl_status sample(void *self, uint32_t n, const fl_real *theta, const fl_real *eps,
                        fl_real *z)
{
    (void)theta;
    const prior *p = self;
    memmove(z, eps, (size_t)n * p->dim * sizeof(fl_real)); /* the host may pass z == eps */
    return FL_OK;
}

static const fl_prior_class normal_class = {
    .base = { sizeof(fl_prior_class), "normal",
              "standard normal prior N(0, I) on the latent space; no parameters", NULL, 0 },
    .flags = 0,
    .create = create,
    .destroy = destroy,
    .log_prob = log_prob,
    .sample = sample,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_PRIOR, &normal_class.base);
}

FL_PLUGIN("priors-normal", "1.0.0", init)
