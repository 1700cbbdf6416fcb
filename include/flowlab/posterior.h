/*
 * flowlab/posterior.h - the base distribution q0(z | x) of an amortised
 * posterior, reparameterised by standard-normal noise.
 *
 * The encoder outputs, for each data point, `n_params()` numbers that the
 * posterior reads (e.g. mean and log-sigma), followed by the context h that
 * the posterior's flow layers receive. The posterior turns them and host-
 * drawn noise eps ~ N(0, I) into samples z0 and their log density:
 *     z0[b*k+j] = g(eps[b*k+j]; param[b]),  logq[b*k+j] = log q0(z0 | param[b])
 * and backward gives the vector-Jacobian product of that map. With
 * `detach` set (path-derivative estimators), log q0 is differentiated as a
 * function of z0 only, its parameters held fixed.
 *
 *   // gaussian-diag: param = [mu (dim), log sigma (dim)]
 *   z[i] = mu[i] + exp(ls[i]) * eps[i];
 *   logq = sum_i (-0.5 eps[i]^2 - ls[i]) - dim/2 log 2pi;
 *
 * The host also evaluates posterior means as samples at eps = 0, so a class
 * whose g(0; param) is not the mean must say so in its summary.
 *
 * Thread-safety: calls on one instance are serialised by the host.
 *
 * ABI: since 1.1 (every struct of this header); call tags as in host.h.
 */
#ifndef FLOWLAB_POSTERIOR_H
#define FLOWLAB_POSTERIOR_H

#include "component.h"
#include "host.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fl_posterior_shape {
    uint32_t dim;          /* latent dimension */
    uint32_t max_n;        /* largest number of data points (param rows) */
    uint32_t max_rows;     /* largest number of samples (n * k) per call */
} fl_posterior_shape;

typedef struct fl_post_fwd {
    uint32_t n, k;         /* data points, samples per point */
    const fl_real *theta;  /* this instance's parameters (often none) */
    const fl_real *param;  /* n x n_params, row stride `ld` */
    uint32_t ld;           /* row stride of param (>= n_params) */
    const fl_real *eps;    /* n*k x dim standard normals */
    fl_real *z;            /* n*k x dim, written */
    fl_real *logq;         /* n*k, written: log q0(z | param) */
} fl_post_fwd;

typedef struct fl_post_bwd {
    uint32_t n, k;
    const fl_real *theta;
    fl_real *dtheta;       /* accumulated */
    const fl_real *param;  /* as in the forward call */
    uint32_t ld;
    const fl_real *eps;
    const fl_real *z;      /* the forward's output */
    const fl_real *dz;     /* n*k x dim: dL/dz (including paths through z) */
    const fl_real *dlogq;  /* n*k: dL/dlogq */
    int detach;            /* differentiate log q0 through z only */
    fl_real *dparam;       /* n x n_params, row stride `ld`, WRITTEN (summed over k) */
} fl_post_bwd;

typedef struct fl_posterior_class {
    fl_component base;
    uint32_t flags;        /* reserved, 0 */

    /* [once] */
    fl_status (*create)(const fl_host *host, fl_ctx *cx, const fl_posterior_shape *shape,
                        void **self);
    void (*destroy)(void *self);  /* [once] */
    /* [serial] Encoder outputs read per data point. */
    uint32_t (*n_params)(void *self);
    fl_status (*sample)(void *self, const fl_post_fwd *a);    /* [serial] */
    fl_status (*backward)(void *self, const fl_post_bwd *a);  /* [serial] */
} fl_posterior_class;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_POSTERIOR_H */
