/* task_vi.h - variational inference of an unnormalised target.
 *
 * A flow posterior q (standard-normal base of the target's dimension,
 * followed by the [flow.N] stack) is fitted to a [target] plugin's p~(z)
 * with any [estimator]:
 *     z_0 = eps ~ N(0, I),  z_T = f(eps),  log q(z_T) = log N(eps) - sum_t logdet_t
 *     log w = beta log p~(z_T) - log q(z_T)
 * and the estimator's weights give the gradient (estimator.h). Path-
 * derivative estimators (FL_EST_DETACH_Q) use grad_z log q at fixed
 * parameters (pathgrad.h). docs/vi.md describes the task; its table entry
 * is fl_task_vi (tasks/task.h). */
#ifndef FL_TASK_VI_H
#define FL_TASK_VI_H

#include <stdio.h>

#include "model/experiment.h"
#include "model/pathgrad.h"

/* The vi task's model (e->model). d = info.dim, R = rows. */
typedef struct fl_vi {
    fl_part target, est;     /* [target], [estimator] instances */
    fl_values cfg;           /* [vi] */
    fl_target_info info;     /* dim, analytic log Z (or NAN), picture box */
    uint32_t k;              /* samples per bound ([estimator] k) */
    uint32_t rows;           /* rows per training step: batch x k */
    int detach;              /* the estimator sets FL_EST_DETACH_Q */
    fl_stack *flows;         /* the posterior's [flow.N] layers (may be empty): eps (n x d,
                                standard normal) -> z (n x d) with log-determinants;
                                sized for max(R, [eval] batch) rows; owned */
    fl_pathgrad pg;          /* grad_z log q through `flows` for R rows; only when detach */
} fl_vi;

/* The vi model of e (e must be a vi experiment). */
fl_vi *fl_vi_of(const fl_experiment *e);

typedef struct fl_vi_result {
    double elbo, elbo_se;    /* mean of log w (beta = 1) over elbo_samples, its SE */
    uint64_t elbo_n;
    double logz_is, ess;     /* log mean exp of log w over logz_samples, effective sample size */
    uint64_t logz_n;
    double logz_ref;         /* analytic or grid log Z; NAN when neither is available */
    const char *logz_ref_how;/* "analytic", "grid" or "none" (static) */
    double kl, kl_se;        /* log Z_ref - elbo (NAN without a reference), SE = elbo_se */
    double train_bound;      /* mean training bound over the last evaluation interval */
    uint64_t steps;
    double seconds, steps_per_s; /* training loop only (no evaluation) */
} fl_vi_result;

/* The model is built by the table entry's build (fl_experiment_new): the
 * target, the estimator, the flows and the [vi] keys; it sets
 * e->data_type to the target's name (for messages). */

/* Trains through the shared loop (fl_task_train); when `rundir` is not
 * NULL writes metrics.csv and checkpoint.flc there (atomically). Leaves the
 * evaluated model (the average with [train] ema > 0) in the arena.
 * result.json is written by fl_vi_write_result, after the pictures, so a
 * run directory with result.json is complete. */
fl_status fl_vi_train(fl_experiment *e, const char *rundir, int resume, fl_vi_result *res);

/* Writes dir/result.json (atomically) from a training result. */
fl_status fl_vi_write_result(fl_experiment *e, const char *dir, const fl_vi_result *res);

/* The final numbers for the model as it stands: ELBO over [vi]
 * elbo_samples, importance-sampled log Z over logz_samples (fixed noise
 * streams, independent of the seed), and the reference log Z (analytic, or
 * the grid integral for a 2D target; pass logz_ref = NAN to have it
 * computed, or a value computed before). */
fl_status fl_vi_evaluate(fl_experiment *e, double logz_ref, const char *how, fl_vi_result *res);

/* log Z of a 2D target by integrating exp(log p~) over its box on a
 * cells x cells grid (cell centres, log-sum-exp in double). */
fl_status fl_vi_logz_grid(fl_experiment *e, uint32_t cells, double *logz);

/* log p~(z) for n rows (n x dim) into logp. */
fl_status fl_vi_target_logp(fl_experiment *e, const fl_real *z, uint64_t n, fl_real *logp);

/* n samples z_T (n x dim) of q with noise from `key` (element i*dim + j of
 * sub-stream 0 is coordinate j of sample i); logq (n, may be NULL) gets
 * log q of each sample. Evaluation mode. */
fl_status fl_vi_sample(fl_experiment *e, uint64_t n, fl_rng_key key, fl_real *z, fl_real *logq);

/* log q(z) at given points via the inverses (FL_ERR_UNSUPPORTED, with
 * fl_err set, when a layer has none). */
fl_status fl_vi_log_q(fl_experiment *e, const fl_real *z, uint64_t n, fl_real *logq);

/* One training step's gradient (noise sub-stream `step`, inverse
 * temperature beta) into the arena's grad, without an update; the mean
 * bound goes to *bound. Allocates its buffers (for tests and benchmarks). */
fl_status fl_vi_gradient(fl_experiment *e, uint64_t step, double beta, double *bound);

/* The result as a small table on `f`. */
void fl_vi_report(const fl_experiment *e, const fl_vi_result *res, FILE *f);

/* Pictures of a trained vi model (task_vi.h), written into `dir`:
 *   curves.png   the training bound (blue, mean over each evaluation
 *                interval, at the annealed beta), the evaluation ELBO
 *                (orange) and the reference log Z (grey) against step, from
 *                dir/metrics.csv, with axes, labels and a legend (and
 *                curves.svg); curves_axes.csv holds the ranges
 *   and for a 2D target, on the same axes over the target's box, evaluated
 *   on a 200 x 200 grid (output/chart.h's fl_chart_map layout, with a title
 *   and a colour bar; plot_grid.csv: the ranges, each heatmap's top value, the common colour
 *   scale and how q was obtained):
 *   target.png   the target density exp(log p~), normalised on the grid
 *   density.png  q(z) on the target's colour scale (clipped above it): exact through the inverses
 *                when every layer has one, else a smoothed histogram of
 *                200000 samples
 *   samples.png  5000 samples of q (seed 0, "plot")
 * Each file is written atomically; errors as fl_plot_density. */
fl_status fl_plot_vi(fl_experiment *e, const char *dir);

/* The two heatmaps of fl_plot_vi (FL_PLOT_GRID^2 = 200 x 200 values each,
 * row j from the bottom): the target normalised on the grid, and q;
 * *q_exact = 1 when q came from the inverses. For tests. */
fl_status fl_vi_plot_grids(fl_experiment *e, double *target, double *q, int *q_exact);

#endif
