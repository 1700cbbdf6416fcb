/*
 * flowlab/flow.h - the flow-layer component: a bijection y = f(x; theta, c).
 *
 * A flow maps rows of `dim` numbers, optionally conditioned on a context row
 * c of `context_dim` numbers (IAF's h). It provides
 *   forward   y = f(x), logdet[r] += log|det dy/dx| for each row r;
 *   backward  the vector-Jacobian product of the last forward:
 *             dx += dy . dy/dx + dlogdet . dlogdet/dx, and likewise dtheta,
 *             dc (every output of backward is accumulated; the host zeroes);
 *   inverse   x = f^-1(y), logdet[r] += log|det dx/dy| (where one exists).
 *
 * Conventions: row-major, one row per example, rows independent unless the
 * class declares FL_FLOW_BATCH_COUPLED. `theta` is this instance's block of
 * the flat parameter array (offsets from fl_host.param).
 *
 * Shapes (since 1.4). A row is a tensor of c channels x h rows x w columns
 * (fl_flow_shape.c, h, w; a flat vector is dim x 1 x 1), stored NHWC like
 * the convolution service's images: element (ch, y, x) is at
 * (y * w + x) * c + ch. A layer may change the shape of its output (squeeze:
 * 4c x h/2 x w/2) and may factor part of it out (split): in create it calls
 * host->flow_output(cx, c', h', w') with c'h'w' <= dim; y then has c'h'w'
 * numbers per row and the other dim - c'h'w' leave the flow through z, which
 * the stack hands to the base density (the stack as a whole stays a
 * bijection of dim numbers: its output row is [z of the first split | z of
 * the next | ... | y of the last layer]). Layers that never call flow_output
 * keep their input's shape and never see z.
 *
 *   const fl_flow_class my_flow = {
 *       .base = { sizeof(fl_flow_class), "my-flow", "y = x + b",
 *                 my_keys, 1 },
 *       .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE,
 *       .create = my_create, .destroy = my_destroy,
 *       .forward = my_forward, .backward = my_backward, .inverse = my_inverse,
 *   };
 *
 * Thread-safety: calls on one instance are serialised by the host; distinct
 * instances may run concurrently. An instance may use OpenMP inside a call.
 * Each function below carries its call tag ([once], [serial]; host.h).
 */
#ifndef FLOWLAB_FLOW_H
#define FLOWLAB_FLOW_H

#include "component.h"
#include "host.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Metadata the host uses to reject impossible models when the config loads. */
enum {
    FL_FLOW_HAS_INVERSE = 1u << 0,       /* inverse is provided and exact */
    FL_FLOW_CHEAP_FORWARD = 1u << 1,     /* forward is one parallel pass */
    FL_FLOW_CHEAP_INVERSE = 1u << 2,     /* inverse is one parallel pass */
    FL_FLOW_ACCEPTS_CONTEXT = 1u << 3,   /* uses c when context_dim > 0 */
    FL_FLOW_BATCH_COUPLED = 1u << 4,     /* rows interact (batch norm) */
    FL_FLOW_AUTOREGRESSIVE = 1u << 5,    /* Jacobian triangular in some order */
    /* since 1.4: reads the tensor shape c x h x w (masks, convolutions,
     * per-channel statistics): the kit also checks it on small image
     * shapes. A layer that needs an image (h, w > 1) refuses a flat shape in
     * create with a message. */
    FL_FLOW_SHAPED = 1u << 6
};

/* What an instance is created for. */
typedef struct fl_flow_shape {
    uint32_t dim;          /* row width of x and y */
    uint32_t context_dim;  /* 0 = no context */
    uint32_t max_rows;     /* the largest n of any call: size workspaces by it */
    uint32_t index;        /* position within its [flow.N] repeat group, from 0 */
    uint32_t position;     /* position in the whole stack, from 0 */
    /* since 1.4 (read only if FL_ABI_AT_LEAST(host, 1, 4)): the tensor
     * shape of x, c * h * w == dim; a flat vector is dim x 1 x 1. */
    uint32_t c, h, w;
} fl_flow_shape;

typedef struct fl_flow_fwd {
    uint32_t n;            /* rows, <= max_rows */
    fl_mode mode;
    fl_real *theta;        /* parameter block: read-only, except that in
                              FL_MODE_TRAIN a layer may update its own
                              FL_PARAM_STATE slices (running statistics) and
                              initialise parameters from the first batch
                              (actnorm's data-dependent init) */
    const fl_real *x;      /* n x dim, input */
    fl_real *y;            /* n x dim, output (never aliases x) */
    fl_real *logdet;       /* n, accumulated: += log|det dy/dx| */
    const fl_real *c;      /* n x context_dim, or NULL */
    /* since 1.4: n x (dim - out_dim), the factored-out part (a layer that
     * called host->flow_output with fewer numbers than dim), else NULL.
     * y is then n x out_dim. */
    fl_real *z;
} fl_flow_fwd;

typedef struct fl_flow_bwd {
    uint32_t n;
    fl_mode mode;
    const fl_real *theta;
    fl_real *dtheta;       /* parameter block of gradients, accumulated */
    const fl_real *x;      /* the input of the last forward */
    const fl_real *y;      /* its output */
    const fl_real *c;      /* its context, or NULL */
    const fl_real *dy;     /* n x dim: dL/dy */
    const fl_real *dlogdet;/* n: dL/dlogdet for each row */
    fl_real *dx;           /* n x dim, accumulated */
    fl_real *dc;           /* n x context_dim, accumulated; NULL = not needed */
    /* since 1.4, for a factoring layer (else NULL): its forward's z
     * (n x (dim - out_dim)) and dL/dz. y and dy are then n x out_dim. */
    const fl_real *z;
    const fl_real *dz;
} fl_flow_bwd;

typedef struct fl_flow_inv {
    uint32_t n;
    fl_mode mode;
    const fl_real *theta;
    const fl_real *y;      /* n x dim, input */
    fl_real *x;            /* n x dim, output (never aliases y) */
    fl_real *logdet;       /* n, accumulated: += log|det dx/dy|; may be NULL */
    const fl_real *c;      /* n x context_dim, or NULL */
    /* since 1.4, for a factoring layer (else NULL): the factored-out part,
     * n x (dim - out_dim); y is then n x out_dim and x n x dim. */
    const fl_real *z;
} fl_flow_inv;

typedef struct fl_flow_class {
    fl_component base;
    uint32_t flags;        /* FL_FLOW_* */

    /* [once] Creates an instance for `shape`: read config, request
     * parameters, workspaces and MLPs through `host`. On error returns
     * non-FL_OK after host->error(...) and frees what it allocated itself. */
    fl_status (*create)(const fl_host *host, fl_ctx *cx, const fl_flow_shape *shape,
                        void **self);
    /* [once] Frees what create allocated itself (not host-owned memory). */
    void (*destroy)(void *self);

    /* [serial] */
    fl_status (*forward)(void *self, const fl_flow_fwd *a);
    /* [serial] Must follow a forward on the same rows with the same
     * arguments: an instance may reuse what forward cached. */
    fl_status (*backward)(void *self, const fl_flow_bwd *a);
    /* [serial] NULL when FL_FLOW_HAS_INVERSE is not set. */
    fl_status (*inverse)(void *self, const fl_flow_inv *a);

    /* [serial] ABI 1.0, appended after inverse (the host reads a class whose
     * struct_size ends at inverse as order == NULL).
     * Required when FL_FLOW_AUTOREGRESSIVE is set, else NULL: writes the
     * instance's variable order, a permutation of 0..dim-1 such that
     * y[order[i]] depends on x[order[j]] only for j <= i (the conformance
     * kit checks the Jacobian against it). */
    fl_status (*order)(void *self, uint32_t *order);
} fl_flow_class;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_FLOW_H */
