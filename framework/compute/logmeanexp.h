/* logmeanexp.h - a running log-mean-exp of log importance weights, with
 * the effective sample size, in one pass and without overflow: the vae
 * task's IWAE-k evaluation and the vi task's log Z estimate.
 *
 *   fl_lme a;
 *   fl_lme_init(&a);
 *   for (j = 0; j < k; j++) fl_lme_add(&a, logw[j]);
 *   log_mean = fl_lme_log_mean(&a, k);   ess = fl_lme_ess(&a);
 *
 * A log weight of -inf (a zero weight) counts in k but adds nothing. */
#ifndef FL_LOGMEANEXP_H
#define FL_LOGMEANEXP_H

#include <math.h>
#include <stdint.h>

typedef struct fl_lme {
    double m;       /* largest log weight so far */
    double s1, s2;  /* sums of e^(lw - m) and e^(2 (lw - m)) */
} fl_lme;

static inline void fl_lme_init(fl_lme *a)
{
    a->m = -INFINITY;
    a->s1 = a->s2 = 0;
}

static inline void fl_lme_add(fl_lme *a, double lw)
{
    if (lw == -INFINITY) return;
    if (lw > a->m) {
        double c = a->m == -INFINITY ? 0 : exp(a->m - lw);
        a->s1 = a->s1 * c + 1;
        a->s2 = a->s2 * c * c + 1;
        a->m = lw;
    } else {
        double t = exp(lw - a->m);
        a->s1 += t;
        a->s2 += t * t;
    }
}

/* log (1/k) sum_j e^(lw_j); -inf when every weight was zero. */
static inline double fl_lme_log_mean(const fl_lme *a, uint64_t k)
{
    return a->m == -INFINITY ? -INFINITY : a->m + log(a->s1 / (double)k);
}

/* (sum w)^2 / sum w^2, 0 when every weight was zero. */
static inline double fl_lme_ess(const fl_lme *a) { return a->s2 > 0 ? a->s1 * a->s1 / a->s2 : 0; }

#endif
