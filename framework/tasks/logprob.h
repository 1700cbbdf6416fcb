/* logprob.h - log p(x) of a user's own rows under a trained run (`flowlab
 * logprob`, the embedding API's fl_embed_log_prob): the task's logprob hook
 * (tasks/task.h) behind one width check. */
#ifndef FL_TASKS_LOGPROB_H
#define FL_TASKS_LOGPROB_H

#include <stddef.h>
#include <stdint.h>

#include "model/experiment.h"

/* log p(x) in nats of each of the n rows x (n x dim) into out (n):
 *  - density runs: exact, through the run's preprocessing; a dequantized
 *    run (images) takes levels k/255 in [0, 1] and gives log P of the
 *    8-bit image with one uniform dequantization draw per value from the
 *    fixed evaluation stream (0, "data.dequantize.eval"), numbers i*dim..
 *    for row i (a lower bound in expectation, as the run's test NLL);
 *  - vae runs: the IWAE-k estimate (k = 0: the run's [eval] k), noise
 *    sub-stream = the row's index.
 * FL_ERR_INVALID with one fl_err line when dim is not the run's width, the
 * task has no log-likelihood (vi) or k does not apply. A row's value
 * depends on its index (its noise), not on the other rows. Not
 * thread-safe for one experiment (its buffers); distinct experiments may
 * run in parallel. */
fl_status fl_logprob(fl_experiment *e, const fl_real *x, uint64_t n, uint32_t dim, uint64_t k,
                     double *out);

/* What fl_logprob computes for this run, one phrase ("exact log p(x)",
 * "IWAE-5000 estimate of log p(x)", ...), into buf. */
void fl_logprob_describe(const fl_experiment *e, uint64_t k, char *buf, size_t cap);

/* Bits per dimension of a log-probability for a dequantized (image) run:
 * -lp / (dim ln 2); 0 = the run has no bits/dim (not dequantized). */
double fl_logprob_bpd_factor(const fl_experiment *e);

#endif
