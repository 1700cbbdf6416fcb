/* check_logw.h - what every estimator of this folder refuses in its log
 * weights (estimators.c, tighter.c): NaN or +inf (an impossible sample is
 * -inf, which is allowed). */
#ifndef FL_EST_CHECK_LOGW_H
#define FL_EST_CHECK_LOGW_H

#include <math.h>

#include <flowlab/flowlab.h>

/* The first NaN or +inf of point b's k log weights lw, reported through
 * h->error on cx: FL_ERR_NUMERIC; else FL_OK. */
static inline fl_status fl_est_check_logw(const fl_host *h, fl_ctx *cx, const fl_real *lw,
                                          uint32_t b, uint32_t k)
{
    for (uint32_t j = 0; j < k; j++) {
        if (lw[j] != lw[j] || lw[j] == INFINITY) {
            h->error(cx, "log weight %u of data point %u is %s (expected finite or -inf)", j, b,
                     lw[j] != lw[j] ? "NaN" : "+inf");
            return FL_ERR_NUMERIC;
        }
    }
    return FL_OK;
}

#endif
