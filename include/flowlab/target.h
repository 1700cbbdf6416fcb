/*
 * flowlab/target.h - an unnormalised target density p~(z) for the vi task
 * (Rezende & Mohamed's U1-U4, a banana, a mixture, ...).
 *
 * log_prob returns log p~(z) = -U(z); with weights w it also WRITES
 * dz[i] = w[i] * grad log p~(z_i) (the likelihood.h convention). create
 * reports the dimension, the log-normaliser log Z = log int p~ when known
 * (NAN otherwise: for 2D targets the host integrates on a grid), and a
 * window for pictures.
 *
 * Thread-safety: log_prob may be called concurrently on one instance with
 * disjoint outputs.
 *
 * ABI: since 1.1 (every struct of this header); call tags as in host.h.
 */
#ifndef FLOWLAB_TARGET_H
#define FLOWLAB_TARGET_H

#include "component.h"
#include "host.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fl_target_info {
    uint32_t dim;          /* set by create */
    double log_z;          /* log normaliser, or NAN when unknown */
    double box[4];         /* xmin, xmax, ymin, ymax: where the mass is (2D),
                              used for pictures and grid integration */
} fl_target_info;

typedef struct fl_target_args {
    uint32_t n;
    const fl_real *z;      /* n x dim */
    fl_real *logp;         /* n, written; may be NULL when w != NULL */
    const fl_real *w;      /* n weights, or NULL: no gradient */
    fl_real *dz;           /* n x dim, written (w != NULL) */
} fl_target_args;

typedef struct fl_target_class {
    fl_component base;
    uint32_t flags;        /* reserved, 0 */

    /* [once] */
    fl_status (*create)(const fl_host *host, fl_ctx *cx, fl_target_info *info, void **self);
    void (*destroy)(void *self);                                   /* [once] */
    fl_status (*log_prob)(void *self, const fl_target_args *a);   /* [concurrent] */
} fl_target_class;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_TARGET_H */
