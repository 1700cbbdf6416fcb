/* pathgrad.h - the score of a flow posterior at its own samples, for
 * path-derivative estimators (STL, DReG).
 *
 * With z_0 from a base density q_0 and z_t = f_t(z_{t-1}), the density of
 * z_t is log q_t(z_t) = log q_{t-1}(z_{t-1}) - log|det J_t(z_{t-1})|, so its
 * gradient with the parameters held fixed obeys
 *     a_t = grad_{z_t} log q_t(z_t) = J_t^{-T} (a_{t-1} - grad_{z_{t-1}} logdet_t),
 * from a_0 = grad log q_0(z_0) (= -z_0 for a standard normal). Each layer's
 * Jacobian J_t (dim x dim per row) comes from `dim` calls of the layer's
 * backward with unit vectors dy = e_i, and grad logdet_t from one call with
 * dy = 0, dlogdet = 1; the parameter gradients of those calls go to a
 * scratch array, never to the arena's grad. Each row's system is solved by
 * LU with partial pivoting in double. Cost: (dim + 1) backward passes per
 * layer plus O(rows dim^3): cheap in 2D, not meant for large dim.
 *
 * Layers whose rows interact (FL_FLOW_BATCH_COUPLED) or that factor part of
 * their input out are not supported. A context (IAF's h) is a parameter of
 * q here: it is passed to the layers as in the forward, and held fixed. */
#ifndef FL_PATHGRAD_H
#define FL_PATHGRAD_H

#include "model/stack.h"

typedef struct fl_pathgrad {
    fl_stack *s;           /* not owned */
    uint32_t max_rows, dim;
    fl_real *dtheta;       /* arena-sized scratch for the parameter gradients */
    fl_real *J;            /* max_rows x dim x dim: row i of a row's block = d y_i / d x */
    fl_real *gld;          /* max_rows x dim: grad of one layer's logdet */
    fl_real *dy;           /* max_rows x dim: unit vectors */
    fl_real *ld0, *ld1;    /* max_rows zeros, max_rows ones */
    double *a;             /* max_rows x dim: the running score */
    double *lu;            /* dim x dim + dim: one row's system */
} fl_pathgrad;

/* Allocates every buffer for calls of up to max_rows rows; `s` must be
 * ready (fl_stack_ready) and outlive `p`. Refuses batch-coupled layers
 * (FL_ERR_UNSUPPORTED, fl_err names the layer). */
fl_status fl_pathgrad_init(fl_pathgrad *p, fl_stack *s, uint32_t max_rows);
void fl_pathgrad_free(fl_pathgrad *p);

/* After fl_stack_forward(s, n, mode, z0, NULL, ...): writes
 * out (n x dim) = grad_{z_T} log q(z_T) at the forward's output, given
 * a0 (n x dim) = grad log q_0(z_0). Does not touch the arena's grad nor the
 * stack's activations, so fl_stack_backward may follow. Allocates nothing.
 * FL_ERR_NUMERIC when a Jacobian is singular or a result not finite. */
fl_status fl_pathgrad_score(fl_pathgrad *p, uint32_t n, fl_mode mode, const fl_real *a0,
                            fl_real *out);
/* The same for a stack whose forward was given the context c (n x the
 * stack's ctx_dim, the forward's own pointer; NULL = none). */
fl_status fl_pathgrad_score_ctx(fl_pathgrad *p, uint32_t n, fl_mode mode, const fl_real *a0,
                                const fl_real *c, fl_real *out);

#endif
