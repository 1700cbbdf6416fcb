/* optim.c - Adam (Kingma & Ba 2015) over flat arrays. */
#include "optim.h"

#include <tgmath.h>
#include <string.h>

#include "util.h"

fl_status fl_adam_init(fl_adam *o, size_t n, double lr, double beta1, double beta2, double eps)
{
    memset(o, 0, sizeof *o);
    o->lr = lr;
    o->beta1 = beta1;
    o->beta2 = beta2;
    o->eps = eps;
    o->n = n;
    o->m = fl_alloc((n ? n : 1) * sizeof(fl_real));
    o->v = fl_alloc((n ? n : 1) * sizeof(fl_real));
    if (!o->m || !o->v) {
        fl_adam_free(o);
        fl_err("cannot allocate optimizer state for %zu parameters", n);
        return FL_ERR_NOMEM;
    }
    return FL_OK;
}

void fl_adam_step(fl_adam *o, fl_real *restrict theta, const fl_real *restrict grad)
{
    o->t++;
    const fl_real b1 = (fl_real)o->beta1, b2 = (fl_real)o->beta2;
    /* Bias corrections folded into the step size and epsilon. */
    const double c1 = 1.0 - pow(o->beta1, (double)o->t), c2 = 1.0 - pow(o->beta2, (double)o->t);
    const fl_real step = (fl_real)(o->lr * sqrt(c2) / c1);
    const fl_real eps = (fl_real)(o->eps * sqrt(c2));
    fl_real *restrict m = o->m, *restrict v = o->v;
    const size_t n = o->n;
    /* Element-wise, so any split across threads gives the same numbers. */
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) {
        fl_real g = grad[i];
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        theta[i] -= step * m[i] / (sqrt(v[i]) + eps);
    }
}

fl_status fl_ema_init(fl_ema *e, size_t n, double decay)
{
    memset(e, 0, sizeof *e);
    e->decay = decay;
    e->n = n;
    if (decay <= 0) return FL_OK;
    e->avg = fl_alloc((n ? n : 1) * sizeof(fl_real));
    if (!e->avg) {
        fl_err("cannot allocate the parameter average for %zu parameters", n);
        return FL_ERR_NOMEM;
    }
    return FL_OK;
}

void fl_ema_update(fl_ema *e, const fl_real *restrict theta)
{
    if (!e->avg) return;
    e->t++;
    const fl_real d = (fl_real)e->decay;
    fl_real *restrict a = e->avg;
    const size_t n = e->n;
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) a[i] = d * a[i] + (1 - d) * theta[i];
}

void fl_ema_get(const fl_ema *e, fl_real *out)
{
    const fl_real c = (fl_real)(1.0 / (1.0 - pow(e->decay, (double)(e->t ? e->t : 1))));
    for (size_t i = 0; i < e->n; i++) out[i] = e->avg[i] * c;
}

void fl_ema_free(fl_ema *e)
{
    fl_free(e->avg);
    e->avg = NULL;
}

void fl_adam_free(fl_adam *o)
{
    fl_free(o->m);
    fl_free(o->v);
    o->m = o->v = NULL;
}
