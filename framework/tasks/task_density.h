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

/* The preprocessing of [data] dequantize / transform / logit_alpha: a data
 * row r (levels k/255 for the image data sets) becomes the flows' input x
 * in two steps, each an exactly accounted change of variables:
 *   dequantize  uniform: u = (k + U) / 256, k = round(255 r), U ~ U(0, 1)
 *               (fresh noise every training batch; the evaluation noise is
 *               fixed: fl_rng_key_make(0, "data.dequantize.eval"), number
 *               i*D + j for pixel j of row i of the split); none: u = r.
 *               auto = uniform when the rows are images (image_h > 0) that
 *               the host does not binarize, else none.
 *   transform   logit: x = logit(a + (1 - 2a) u), a = logit_alpha (Real
 *               NVP), log|dx/du| = sum_j log(1 - 2a) - log p_j - log(1 - p_j)
 *               with p = a + (1 - 2a) u; scale: x = u - 0.5 (Glow; Jacobian
 *               1); none: x = u.
 * The NLL the task reports is then that of the rows themselves:
 *   -log p(u) = -log p_flows(x) - log|dx/du|, plus D log 256 when
 * dequantized (the discrete-data NLL of the levels k, in nats), and
 * bits/dim = that / (D ln 2), the figure image papers report. */
typedef struct fl_density_pre {
    int dequantize;             /* 1: uniform dequantization of 256 levels */
    int transform;              /* FL_PRE_NONE, FL_PRE_LOGIT or FL_PRE_SCALE */
    double alpha;               /* logit_alpha */
    double const_nats;          /* D log 256 when dequantized, else 0 */
    double bpd;                 /* 1 / (D ln 2) when dequantized (bits/dim are
                                   reported), else 0 */
} fl_density_pre;

enum { FL_PRE_NONE = 0, FL_PRE_LOGIT = 1, FL_PRE_SCALE = 2 }; /* [data] transform */

/* The density task's model (e->model). */
typedef struct fl_density_model {
    fl_stack *flows;            /* the [flow.N] layers: x (n x dim) -> u (n x dim), with
                                   per-row log-determinants; owned. With image rows the
                                   stack's input shape is image_c x image_h x image_w */
    fl_density_pre pre;         /* [data] preprocessing */
} fl_density_model;

/* The model's preprocessing (e must be a density experiment). */
const fl_density_pre *fl_density_pre_of(const fl_experiment *e);

/* Rows x (n x dim, in place) -> the flows' input, ldj[i] = log|det| of row
 * i's preprocessing (double). Dequantization noise is numbers first +
 * i*dim + j of sub-stream `sub` of `key` (`noise` 0: no dequantization,
 * for points that are not levels, e.g. a plot's grid). FL_ERR_INVALID
 * (fl_err names the row and value) when a value to dequantize is not a
 * level k/255 in [0, 1]. Allocates nothing. */
fl_status fl_density_preprocess(const fl_experiment *e, fl_real *x, uint32_t n, int noise,
                                fl_rng_key key, uint64_t sub, uint64_t first, double *ldj);
/* The inverse, for samples: the flows' space (n x dim, in place) -> rows;
 * dequantized values become the level floor(256 u)/255 they fall in
 * (clamped to [0, 1]). */
void fl_density_postprocess(const fl_experiment *e, fl_real *x, uint64_t n);
/* Points p0 .. p0+n-1 of training batch `step` (of [train] batch rows),
 * preprocessed (fresh noise per step: fl_rng_key_make(seed,
 * "data.dequantize"), sub-stream step), into x and ldj. */
fl_status fl_density_batch(fl_experiment *e, uint64_t step, uint32_t p0, uint32_t n, fl_real *x,
                           double *ldj);

/* The model's flow layers (e must be a density experiment). */
fl_stack *fl_density_flows(const fl_experiment *e);

typedef struct fl_density_result {
    double test_nll, test_se;   /* nats per example, standard error */
    double train_nll;           /* mean over the last evaluation interval */
    double test_bpd, test_bpd_se, train_bpd; /* the same in bits/dim (dequantized runs;
                                   else 0) */
    uint64_t steps;
    double seconds, steps_per_s;/* training loop only (no evaluation) */
    double valid_nll, valid_se; /* the last evaluation of the validation split (nats;
                                   0 without one) */
    double best_valid_nll;      /* the best valid_nll of the periodic evaluations */
    uint64_t best_step;         /* its step (best.flc's model); 0 = no validation split */
    int stopped_early;          /* [train] patience ended the run */
} fl_density_result;

/* Mean and standard error of -log p(x) over n data rows x (evaluation
 * mode), preprocessing included (with the fixed evaluation noise; see
 * fl_density_pre): nats, the discrete-data NLL when dequantized. Allocates
 * a chunk's buffers. FL_ERR_NUMERIC when not finite. */
fl_status fl_density_nll(fl_experiment *e, const fl_real *x, uint64_t n, double *mean, double *se);
/* -log p(x) of each of the n rows x into nll (n), as fl_density_nll
 * computes them (row i dequantized with numbers i*dim.. of the fixed
 * evaluation stream, so a row's value depends on its position). Non-finite
 * values are returned as they are. FL_ERR_INVALID (fl_err set) when a
 * dequantized run gets a value that is not a level k/255. */
fl_status fl_density_row_nll(fl_experiment *e, const fl_real *x, uint64_t n, double *nll);

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

/* n samples (n x dim) from the model, noise from `key`, mapped back through
 * the preprocessing (fl_density_postprocess): data rows. Allocates a
 * chunk of noise. */
fl_status fl_density_sample(fl_experiment *e, uint64_t n, fl_rng_key key, fl_real *out);
/* The same at temperature t: base N(0, t^2 I) (Glow's reduced temperature). */
fl_status fl_density_sample_at(fl_experiment *e, uint64_t n, fl_rng_key key, double t,
                               fl_real *out);

/* The temperatures of an image run's samples.png, one block of rows each. */
#define FL_DENSITY_N_TEMPS 3
extern const double fl_density_temps[FL_DENSITY_N_TEMPS];

/* Pictures of a trained density model, written into `dir`:
 *   curves.png   train (blue) and test (orange) NLL against step, from
 *   curves.svg   dir/metrics.csv (bits/dim for dequantized runs), with
 *                axes, labels and a legend; curves_axes.csv holds the ranges
 *   for image rows (image_h > 0):
 *   samples.png  a grid of samples (seed 0, "plot"), 10 columns, one block
 *                of 3 rows per temperature 0.5, 0.7, 1.0 (top to bottom),
 *                mapped back to pixels, grey or RGB, unscaled, with a title
 *                strip and each block's temperature on its left;
 *                samples_grid.csv lists each block's temperature and first
 *                pixel row and column
 *   and for 2-dimensional data only, all on the same axes over the test
 *   split's bounding box padded by 10%, evaluated on a 200 x 200 grid
 *   (output/chart.h's fl_chart_map layout, with axes, a title and a colour
 *   bar; plot_grid.csv: the ranges and each heatmap's top value):
 *   density.png  the learned density exp(log p(x))
 *   data.png     the test split's histogram, smoothed (Gaussian, 1.5 cells)
 *   samples.png  5000 model samples (seed 0, "plot")
 * Each file is written atomically. The model is evaluated as it stands
 * (load the checkpoint first). Returns FL_ERR_IO / FL_ERR_FORMAT for a
 * missing or malformed metrics.csv, or the first error of evaluation,
 * sampling or writing; fl_err says which. */
fl_status fl_plot_density(fl_experiment *e, const char *dir);

#endif
