/* optim.h - Adam over the flat parameter array. */
#ifndef FL_OPTIM_H
#define FL_OPTIM_H

#include <flowlab/core.h>

#include "core/params.h"

typedef struct fl_adam {
    double lr, beta1, beta2, eps;
    uint64_t t;        /* steps taken */
    size_t n;
    fl_real *m, *v;    /* first and second moments, owned */
} fl_adam;

fl_status fl_adam_init(fl_adam *o, size_t n, double lr, double beta1, double beta2, double eps);
/* theta -= lr * mhat / (sqrt(vhat) + eps), with bias correction. */
void fl_adam_step(fl_adam *o, fl_real *theta, const fl_real *grad);
/* fl_adam_step, and grad is set to zero in the same pass, ready for the
 * next step's accumulation (one pass over the gradient instead of two). */
void fl_adam_step_zero(fl_adam *o, fl_real *theta, fl_real *grad);
void fl_adam_free(fl_adam *o);

/* Gradient-norm clipping over all n entries of a gradient ([train]
 * clip_norm). The norm is summed in double over fixed chunks, the chunks'
 * sums added in chunk order, so it does not depend on the thread count. */
typedef struct fl_clip {
    double max_norm;   /* the norm the gradient is scaled down to; 0 = off */
    size_t n;          /* entries of the gradient */
    double *part;      /* ceil(n / chunk) partial sums of squares (owned) */
    uint64_t clipped;  /* steps whose gradient was scaled down */
} fl_clip;

/* Allocates the partial sums (none when max_norm = 0). Errors:
 * FL_ERR_NOMEM (fl_err set), nothing left allocated. Before training. */
fl_status fl_clip_init(fl_clip *c, size_t n, double max_norm);
/* Scales grad by max_norm / |grad| when |grad| > max_norm; returns |grad|
 * before scaling (0 when off). Allocates nothing: inside the step. */
double fl_clip_grad(fl_clip *c, fl_real *grad);
void fl_clip_free(fl_clip *c);

/* Decoupled weight decay (AdamW, Loshchilov & Hutter 2019): theta *= 1 -
 * factor over every trained slice of `a` (FL_PARAM_STATE slices such as
 * running statistics and the padding between slices keep their values).
 * The loop calls it with factor = lr_t x weight_decay before the Adam step,
 * which then reads the decayed theta. Allocates nothing. */
void fl_weight_decay(const fl_arena *a, fl_real *theta, double factor);

/* Exponential moving average of the parameters (Polyak averaging), with
 * Adam-style bias correction so early averages are not pulled to zero. */
typedef struct fl_ema {
    double decay;      /* 0 = off */
    uint64_t t;
    size_t n;
    fl_real *avg;      /* raw average (owned) */
} fl_ema;

fl_status fl_ema_init(fl_ema *e, size_t n, double decay);
void fl_ema_update(fl_ema *e, const fl_real *theta);
/* out = the bias-corrected average. */
void fl_ema_get(const fl_ema *e, fl_real *out);
void fl_ema_free(fl_ema *e);

#endif
