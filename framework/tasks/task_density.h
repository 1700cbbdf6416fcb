/* task_density.h - density estimation by exact maximum likelihood.
 *
 * The model maps data to a standard normal, u = f(x), and scores
 * log p(x) = log N(u; 0, I) + sum_t logdet_t. Training minimises the mean
 * negative log-likelihood over minibatches with Adam (train/loop.h);
 * sampling draws u and runs the inverses. The table entry is
 * fl_task_density (tasks/task.h). */
#ifndef FL_TASK_DENSITY_H
#define FL_TASK_DENSITY_H

#include "model/experiment.h"

/* The density task's model (e->model). */
typedef struct fl_density_model {
    fl_stack *flows;            /* the [flow.N] layers: x (n x dim) -> u (n x dim), with
                                   per-row log-determinants; owned */
} fl_density_model;

/* The model's flow layers (e must be a density experiment). */
fl_stack *fl_density_flows(const fl_experiment *e);

typedef struct fl_density_result {
    double test_nll, test_se;   /* nats per example, standard error */
    double train_nll;           /* mean over the last evaluation interval */
    uint64_t steps;
    double seconds, steps_per_s;/* training loop only (no evaluation) */
} fl_density_result;

/* Mean and standard error of -log p(x) over n rows (evaluation mode).
 * Allocates a chunk's log-determinants. FL_ERR_NUMERIC when not finite. */
fl_status fl_density_nll(fl_experiment *e, const fl_real *x, uint64_t n, double *mean, double *se);

/* Trains through the shared loop (fl_task_train); when `rundir` is not
 * NULL writes metrics.csv and checkpoint.flc there (atomically). With
 * `resume`, continues from rundir/checkpoint.flc when there is one.
 * result.json is written by fl_density_write_result, after the pictures,
 * so a run directory with result.json is complete. */
fl_status fl_density_train(fl_experiment *e, const char *rundir, int resume,
                           fl_density_result *res);

/* Writes dir/result.json (atomically) from a training result. */
fl_status fl_density_write_result(fl_experiment *e, const char *dir,
                                  const fl_density_result *res);

/* n samples (n x dim) from the model, noise from `key`. Allocates a
 * chunk of noise. */
fl_status fl_density_sample(fl_experiment *e, uint64_t n, fl_rng_key key, fl_real *out);

/* Pictures of a trained density model, written into `dir`:
 *   curves.png   train (blue) and test (orange) NLL against step, from
 *                dir/metrics.csv; curves_axes.csv holds the ranges
 *   and for 2-dimensional data only, all on one 200 x 200 grid over the
 *   test split's bounding box padded by 10% (plot_grid.csv: the ranges and
 *   each heatmap's top value):
 *   density.png  the learned density exp(log p(x))
 *   data.png     the test split's histogram, smoothed (Gaussian, 1.5 cells)
 *   samples.png  5000 model samples (seed 0, "plot")
 * Each file is written atomically. The model is evaluated as it stands
 * (load the checkpoint first). Returns FL_ERR_IO / FL_ERR_FORMAT for a
 * missing or malformed metrics.csv, or the first error of evaluation,
 * sampling or writing; fl_err says which. */
fl_status fl_plot_density(fl_experiment *e, const char *dir);

#endif
