/* stack.h - a sequence of flow layers and the buffers between them.
 *
 * Forward keeps every intermediate activation so backward can hand each
 * layer the input it saw; all buffers are sized for max_rows once
 * (fl_stack_ready), each activation by its layer's shape.
 *
 * Factor-out (flow.h, ABI 1.4): a layer whose output y has fewer numbers
 * than its input writes the rest to z, and the layers after it see only y.
 * The stack as a whole stays a bijection of `dim` numbers: its output row
 * is [z of the first factoring layer | z of the next | ... | y of the last
 * layer], the base density scores all of it. Backward and inverse split
 * their rows the same way. Without factoring layers the output is the last
 * activation itself (no copy). */
#ifndef FL_STACK_H
#define FL_STACK_H

#include "core/config.h"
#include "core/params.h"
#include "core/registry.h"

typedef struct fl_layer {
    const fl_flow_class *cls;
    fl_values cfg;        /* owned */
    fl_ctx *cx;           /* owned */
    void *self;
    size_t block;         /* parameter block start in the arena */
    uint32_t in_c, in_h, in_w;    /* tensor shape of the layer's input */
    uint32_t out_c, out_h, out_w; /* of its output y (host->flow_output; = input's
                                     unless it squeezes or factors out) */
    uint32_t in_dim, out_dim;     /* in_c*in_h*in_w, out_c*out_h*out_w */
    uint32_t zdim;                /* in_dim - out_dim: the numbers it factors out */
    uint32_t zoff;                /* where its z starts in the stack's output row
                                     (the zdim of the factoring layers before it) */
} fl_layer;

typedef struct fl_stack {
    fl_layer *L;
    size_t n, cap;
    uint32_t dim, ctx_dim, max_rows;
    uint32_t c, h, w;     /* the input's tensor shape (fl_stack_set_image;
                             default dim x 1 x 1) */
    uint32_t cur_c, cur_h, cur_w; /* the shape the next pushed layer sees */
    uint64_t seed;
    fl_arena *arena;      /* not owned */
    fl_real **act;        /* n+1 activations; act[0] is the caller's input,
                             act[i+1] is max_rows x L[i].out_dim */
    fl_real *g0, *g1;     /* gradient ping-pong, max_rows x dim each */
    uint32_t zdim;        /* sum of the layers' zdim: the factored-out part of a row */
    fl_real *z;           /* max_rows x zdim: layer i's z is the block at
                             z + max_rows * L[i].zoff (n x L[i].zdim, rows
                             contiguous); NULL when no layer factors out */
    fl_real *dz;          /* the same blocks for backward's dL/dz */
    fl_real *out;         /* max_rows x dim: the assembled output row; NULL
                             when no layer factors out */
    int check;            /* check every layer's output and logdet for non-finite values
                             (fl_stack_check; a task's stack has it on, the kit's off) */
} fl_stack;

/* Non-finite attribution: with s->check set, fl_stack_forward and
 * fl_stack_inverse look at the input and at each layer's output rows and
 * log-determinants as they are produced, and the first non-finite value
 * fails the call with FL_ERR_NUMERIC and one fl_err line naming the layer,
 * what and where: "[flow.3] affine-coupling: non-finite logdet at step
 * 812, row 17 (nan)". Reads only: results are unchanged. */
/* The training step the next stack calls belong to (1-based, as the
 * messages count; 0 = not training: evaluation or sampling). Set by the
 * training loop; process-wide (the loop runs one experiment at a time). */
void fl_stack_set_step(uint64_t step);

fl_stack *fl_stack_new(fl_arena *arena, uint64_t seed, uint32_t dim, uint32_t ctx_dim,
                       uint32_t max_rows);
/* The input rows are images of c x h x w (NHWC, c*h*w == dim); call
 * before the first push. FL_ERR_INVALID when the sizes do not match. */
fl_status fl_stack_set_image(fl_stack *s, uint32_t c, uint32_t h, uint32_t w);
/* Creates one layer of class `cls` with resolved values `cfg` (taken over,
 * also on failure) at path `path`, `index` within its repeat group. */
fl_status fl_stack_push(fl_stack *s, const fl_flow_class *cls, const char *path, fl_values *cfg,
                        uint32_t index);
/* Adds every [flow] / [flow.N] section of `cfg` (sorted by N), expanding
 * `repeat` and interleaving `permute`. */
fl_status fl_stack_from_config(fl_stack *s, const fl_registry *reg, const fl_config *cfg);
/* Allocates the activation, z and gradient buffers (the only allocation:
 * forward, backward and inverse allocate nothing); call after the arena is
 * finalised. FL_ERR_NOMEM on failure (the stack is then only for
 * fl_stack_free). */
fl_status fl_stack_ready(fl_stack *s);
void fl_stack_free(fl_stack *s);

/* u = f_T o ... o f_1 (x); logdet (n) is accumulated. Returns the output
 * buffer (n x dim, owned by the stack, valid until the next call; with
 * factoring layers [z... | y], see above). x must stay unchanged until
 * backward. */
fl_status fl_stack_forward(fl_stack *s, uint32_t n, fl_mode mode, const fl_real *x,
                           const fl_real *c, fl_real *logdet, const fl_real **u);
/* Backward of the last forward: du is n x dim (split like forward's
 * output into each factoring layer's dz and the last layer's dy);
 * accumulates parameter gradients into the arena, and dx/dc when not NULL. */
fl_status fl_stack_backward(fl_stack *s, uint32_t n, fl_mode mode, const fl_real *c,
                            const fl_real *du, const fl_real *dlogdet, fl_real *dx, fl_real *dc);
/* x = f^-1(u), layer by layer in reverse; u is n x dim, split like
 * forward's output (each factoring layer gets its z back); logdet (may be
 * NULL) accumulates log|det dx/du|. Overwrites the buffers forward keeps
 * for backward (do not call backward after it without a forward). */
fl_status fl_stack_inverse(fl_stack *s, uint32_t n, fl_mode mode, const fl_real *u,
                           const fl_real *c, fl_real *x, fl_real *logdet);

/* The host keys of a [flow.N] section. */
extern const fl_key fl_flow_host_keys[];
extern const uint32_t fl_flow_host_nkeys;

#endif
