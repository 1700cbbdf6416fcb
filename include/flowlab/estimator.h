/*
 * flowlab/estimator.h - the estimator component: a bound and its gradient
 * weights from a matrix of log importance weights.
 *
 * For n data points with k samples each, the host computes the log weights
 *     logw[b*k + j] = log p(x_b, z_bj) - log q(z_bj | x_b)
 * (for the vi task p is the unnormalised target). An estimator turns them
 * into a per-point bound and two weights per sample, which define the
 * surrogate whose gradient the host follows:
 *     generative parameters (decoder, likelihood, prior):
 *         sum_j wp[b,j] * grad log p(x_b, z_bj)
 *     inference parameters (encoder, posterior, flows), through the sample
 *     path z = g(eps; phi):
 *         sum_j wq[b,j] * grad log w_bj
 *     where log q inside log w keeps its own dependence on phi unless the
 *     class sets FL_EST_DETACH_Q (then only the path through z remains:
 *     "sticking the landing" and DReG).
 * Examples (softmax over j):
 *     elbo  bound mean_j logw,            wp = wq = 1/k
 *     iwae  bound logsumexp_j logw - log k, wp = wq = softmax(logw)
 *     stl   as iwae, FL_EST_DETACH_Q
 *     dreg  as iwae but wq = softmax(logw)^2, FL_EST_DETACH_Q
 * The host requires wq[b,j] == 0 wherever wp[b,j] == 0 (it shares one
 * backward pass through the decoder and rescales the sample gradient by
 * wq/wp).
 *
 * The number of samples k is a host key of the [estimator] section (so
 * swapping the type keeps it); the estimator sees it in every call.
 *
 *   static fl_status my_weights(void *self, const fl_est_args *a)
 *   {
 *       for (uint32_t b = 0; b < a->n; b++) ... a->bound[b] = ...;
 *       return FL_OK;
 *   }
 *
 * Thread-safety: calls on one instance are serialised by the host.
 *
 * ABI: since 1.1 (every struct of this header); call tags as in host.h.
 */
#ifndef FLOWLAB_ESTIMATOR_H
#define FLOWLAB_ESTIMATOR_H

#include "component.h"
#include "host.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    /* log q's own parameters are detached (path-derivative estimators). */
    FL_EST_DETACH_Q = 1u << 0
};

typedef struct fl_estimator_shape {
    uint32_t max_n;        /* the largest n of any call */
    uint32_t k;            /* samples per data point ([estimator] k) */
} fl_estimator_shape;

typedef struct fl_est_args {
    uint32_t n, k;         /* data points, samples per point */
    const fl_real *logw;   /* n x k log weights (finite or -inf) */
    double *bound;         /* n, written: the bound for each point */
    fl_real *wp;           /* n x k, written: weights of the generative
                              gradient; NULL when only bounds are wanted */
    fl_real *wq;           /* n x k, written: weights of the inference
                              gradient; NULL together with wp */
} fl_est_args;

typedef struct fl_estimator_class {
    fl_component base;
    uint32_t flags;        /* FL_EST_* */

    /* [once] Reads config, may request parameters and workspaces. */
    fl_status (*create)(const fl_host *host, fl_ctx *cx, const fl_estimator_shape *shape,
                        void **self);
    void (*destroy)(void *self);  /* [once] */
    /* [serial] Bounds and weights; must not allocate. -inf log weights (impossible
     * samples) are allowed; NaN is an error (FL_ERR_NUMERIC). */
    fl_status (*weights)(void *self, const fl_est_args *a);
} fl_estimator_class;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_ESTIMATOR_H */
