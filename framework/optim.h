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
void fl_adam_free(fl_adam *o);

#endif
