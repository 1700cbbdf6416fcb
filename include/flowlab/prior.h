/*
 * flowlab/prior.h - the prior p(z) of a latent-variable model.
 *
 * Same gradient convention as likelihood.h: gradients are requested with
 * row weights w, and dz is WRITTEN already multiplied by w[i]; dtheta is
 * accumulated.
 *
 * Thread-safety: calls on one instance are serialised by the host.
 *
 * ABI: since 1.1 (every struct of this header); call tags as in host.h.
 */
#ifndef FLOWLAB_PRIOR_H
#define FLOWLAB_PRIOR_H

#include "component.h"
#include "host.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fl_prior_shape {
    uint32_t dim;
    uint32_t max_rows;
} fl_prior_shape;

typedef struct fl_prior_args {
    uint32_t n;
    const fl_real *theta;
    fl_real *dtheta;       /* accumulated when w != NULL */
    const fl_real *z;      /* n x dim */
    fl_real *logp;         /* n, written; may be NULL when w != NULL */
    const fl_real *w;      /* n weights, or NULL: no gradients */
    fl_real *dz;           /* n x dim, written (w != NULL) */
} fl_prior_args;

typedef struct fl_prior_class {
    fl_component base;
    uint32_t flags;        /* reserved, 0 */

    /* [once] */
    fl_status (*create)(const fl_host *host, fl_ctx *cx, const fl_prior_shape *shape,
                        void **self);
    void (*destroy)(void *self);  /* [once] */
    fl_status (*log_prob)(void *self, const fl_prior_args *a);  /* [serial] */
    /* [serial] z (n x dim) ~ p from standard normals eps (n x dim). */
    fl_status (*sample)(void *self, uint32_t n, const fl_real *theta, const fl_real *eps,
                        fl_real *z);
} fl_prior_class;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_PRIOR_H */
