/* optim.h - Adam over the flat parameter array. */
#ifndef FL_OPTIM_H
#define FL_OPTIM_H

#include <flowlab/core.h>

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
