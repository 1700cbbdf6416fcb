/*
 * flowlab/likelihood.h - an observation model p(x | param), where param is
 * the decoder's output (Bernoulli logits, Gaussian mean and log-variance).
 *
 * One call evaluates `n` parameter rows. Parameter row i belongs to data
 * row i / k (k samples per data point share their x, which the host does
 * not copy). Gradients are requested by passing weights w (one per
 * parameter row); every gradient output is then WRITTEN (not accumulated)
 * already multiplied by its row's weight:
 *     dparam[i] = w[i] * d log p(x[i/k] | param[i]) / d param[i]
 * except dtheta, which is accumulated like every parameter gradient. The
 * host calls once without weights (log p for the estimator) and once with
 * them (gradients), so the second call may skip logp (NULL).
 *
 * Thread-safety: calls on one instance are serialised by the host; a class
 * may use OpenMP inside a call. A class that sets FL_LIK_CONCURRENT_LOGP
 * (ABI 1.2) allows calls without weights (w == NULL, log p only) to run
 * concurrently on disjoint rows: the host then evaluates log p on blocks of
 * decoder rows as they are computed, while they are still in cache.
 *
 * ABI: since 1.1 (every struct of this header); FL_LIK_CONCURRENT_LOGP since
 * 1.2. Call tags as in host.h.
 */
#ifndef FLOWLAB_LIKELIHOOD_H
#define FLOWLAB_LIKELIHOOD_H

#include "component.h"
#include "host.h"

#ifdef __cplusplus
extern "C" {
#endif

/* since 1.2: log_prob with w == NULL may run concurrently on disjoint rows. */
#define FL_LIK_CONCURRENT_LOGP 0x1u

typedef struct fl_likelihood_shape {
    uint32_t dim;          /* width of x */
    uint32_t max_rows;     /* largest n of any call */
} fl_likelihood_shape;

typedef struct fl_lik_args {
    uint32_t n, k;         /* parameter rows; rows per data row */
    const fl_real *theta;  /* this instance's own parameters */
    fl_real *dtheta;       /* accumulated when w != NULL */
    const fl_real *x;      /* (n / k) x dim data */
    const fl_real *param;  /* n x n_params */
    fl_real *logp;         /* n, written; may be NULL when w != NULL */
    const fl_real *w;      /* n weights, or NULL: no gradients */
    fl_real *dparam;       /* n x n_params, written (w != NULL) */
    fl_real *dx;           /* n x dim, written, or NULL; only with k == 1 */
} fl_lik_args;

typedef struct fl_likelihood_class {
    fl_component base;
    uint32_t flags;        /* FL_LIK_* (reserved, 0, before ABI 1.2) */

    /* [once] */
    fl_status (*create)(const fl_host *host, fl_ctx *cx, const fl_likelihood_shape *shape,
                        void **self);
    void (*destroy)(void *self);  /* [once] */
    /* [serial] Decoder outputs per row (e.g. dim for Bernoulli logits). */
    uint32_t (*n_params)(void *self);
    /* [serial] The decoder's initial output biases given the training mean
     * of x (dim values): e.g. the clipped logit for Bernoulli. NULL = zeros. */
    void (*init_bias)(void *self, const fl_real *mean, fl_real *bias);
    /* [serial]; [concurrent] for the calls with w == NULL when flags has
     * FL_LIK_CONCURRENT_LOGP (the host then calls it from the decoder's
     * OpenMP threads). */
    fl_status (*log_prob)(void *self, const fl_lik_args *a);
    /* [serial] E[x | param] for n rows (pictures). */
    fl_status (*mean)(void *self, uint32_t n, const fl_real *theta, const fl_real *param,
                      fl_real *x);
} fl_likelihood_class;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_LIKELIHOOD_H */
