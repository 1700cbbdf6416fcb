/* task_vae.h - variational autoencoders trained with any estimator.
 *
 * Model: encoder MLP -> [posterior] q0(z|x) (+ [flow.N] steps fed the
 * encoder's context h, IAF's Algorithm 1) -> [prior] p(z), decoder MLP ->
 * [likelihood] p(x|z); with [encoder.2]/[decoder.2] a second stochastic
 * layer (the IWAE paper's two-layer model: q(z1|x) q(z2|z1), p(z2) p(z1|z2)
 * p(x|z1), both extra conditionals diagonal Gaussians). Training follows
 * the [estimator]'s weights over B x k samples; evaluation estimates
 * log p(x) by importance sampling with k samples per point. The task's
 * files are in tasks/vae/ (vae.h: the model and every buffer's shape); its
 * table entry is fl_task_vae (tasks/task.h). */
#ifndef FL_TASK_VAE_H
#define FL_TASK_VAE_H

#include "model/experiment.h"

/* The model (e->model); built by the table entry's build. */
typedef struct fl_vae fl_vae;

typedef struct fl_vae_result {
    double train_bound;        /* mean bound over the last interval */
    double valid_elbo, valid_iwae; /* last periodic validation (valid_k) */
    uint64_t steps;
    double seconds, examples_per_s; /* training loop only */
    double best_valid_iwae;    /* the best valid_iwae of the periodic validations */
    uint64_t best_step;        /* its step (best.flc's model); 0 = no validation split
                                  (the periodic figures are then the test split's) */
    int stopped_early;         /* [train] patience ended the run */
} fl_vae_result;

/* Trains through the shared loop (fl_task_train), resuming from
 * rundir/checkpoint.flc when `resume`; writes metrics.csv and
 * checkpoint.flc into `rundir` (may be NULL). result.json
 * is written by fl_vae_write_result, after the final evaluation, so a run
 * directory with result.json is complete. */
fl_status fl_vae_train(fl_experiment *e, const char *rundir, int resume, fl_vae_result *res);

/* The model's estimator (see fl_vae_use_estimator) on n points of x with
 * k samples each, at the arena's theta in evaluation mode: per point
 * bounds. Point b's noise is sub-stream noise_sub + b, so a fixed noise_sub
 * holds the noise fixed (finite differences) and independent draws need
 * noise_sub values at least n apart. Needs n * k <= fl_vae_max_rows.
 * Out: bound (n). When
 * `grad` is set, also accumulates the gradient of -mean(bound) (the
 * estimator's surrogate) into the arena's grad. */
fl_status fl_vae_bound(fl_experiment *e, const fl_real *x, uint32_t n, uint64_t noise_sub,
                       int grad, double *bound);

typedef struct fl_vae_eval {
    uint64_t n, k;
    double ll, ll_se;          /* mean log p(x) estimate (IWAE-k) and its s.e. */
    double elbo, elbo_se;      /* mean ELBO (k = 1 bound averaged over the k samples) */
    double kl;                 /* mean E_q[log q(z|x) - log p(z)] (all layers) */
    double ess;                /* mean effective sample size (1..k) */
    uint32_t active_units, latent;
    double seconds;
    const char *pick;          /* "random" or "first" when n is a subset of the split, else
                                  NULL (static strings) */
    char stem[96];             /* the files' name stem (fl_vae_eval_stem, -first/-random added
                                  for a pick other than the run's) */
} fl_vae_eval;

/* The evaluation suite on `split`: IWAE-k log-likelihood, ELBO, gap, ESS,
 * KL, active units (first stochastic layer). With `dir` writes STEM.json,
 * STEM_points.csv and STEM_units.csv there, STEM from fl_vae_eval_stem:
 * eval.json etc. for the run's own test evaluation. `n_max` 0 = every
 * point. */
fl_status fl_vae_evaluate(fl_experiment *e, fl_split split, uint64_t k, uint64_t n_max,
                          const char *dir, fl_vae_eval *out);
/* As fl_vae_evaluate, with `pick` ("first" or "random", NULL = the run's
 * [eval] pick) choosing the n_max points (tasks/subset.h); a choice other
 * than the run's own adds "-first" or "-random" to the files' stem. */
fl_status fl_vae_evaluate_pick(fl_experiment *e, fl_split split, uint64_t k, uint64_t n_max,
                               const char *pick, const char *dir, fl_vae_eval *out);
/* The file name stem of an evaluation of n points of `split` with k
 * samples each: "eval" for the run's own (test split, [eval] k and [eval]
 * n, 0 = all points), whose numbers result.json also holds; otherwise
 * "eval-SPLIT-kK-nN" (e.g. eval-valid-k3-n5), so another evaluation never
 * overwrites the run's own. */
void fl_vae_eval_stem(const fl_experiment *e, fl_split split, uint64_t k, uint64_t n,
                      char *buf, size_t cap);

/* Replaces the model's estimator by registry estimator `type` with k
 * samples (gradvar compares estimators on one trained model). Calls of
 * fl_vae_bound then need n * k <= the rows the model was built for
 * (fl_vae_max_rows). Refuses path-derivative estimators where the model
 * cannot give them (flows, two stochastic layers). */
fl_status fl_vae_use_estimator(fl_experiment *e, const char *type, uint32_t k);
/* Sample rows the model's buffers hold (n * k of one call). */
uint32_t fl_vae_max_rows(const fl_experiment *e);
/* The log importance weights of the last fl_vae_bound: n x k values (row
 * b*k + j for sample j of point b), the model's buffer, valid until its
 * next call. For diagnostics (gradvar's effective sample size). */
const fl_real *fl_vae_logw(const fl_experiment *e);

/* Writes dir/result.json (atomically): the training summary and, when `ev`
 * is not NULL, the test evaluation (test_log_likelihood, test_elbo, ...). */
fl_status fl_vae_write_result(fl_experiment *e, const char *dir, const fl_vae_result *res,
                              const fl_vae_eval *ev);

/* The estimator's name and k. */
const char *fl_vae_estimator(const fl_experiment *e, uint32_t *k);
/* Prints an evaluation as a table on stdout (flowlab run and eval). */
void fl_vae_print_eval(const fl_vae_eval *ev);

/* Decoder means of `n` prior samples (n x data dim), noise from `key`. */
fl_status fl_vae_sample(fl_experiment *e, uint32_t n, fl_rng_key key, fl_real *out);
/* Reconstructions: decoder means at the posterior means of x (n rows). */
fl_status fl_vae_reconstruct(fl_experiment *e, const fl_real *x, uint32_t n, fl_real *out);

/* Pictures of a trained VAE run (tasks/vae/plot.c). Writes into `dir` (atomically):
 *   curves.png           train bound (blue), validation ELBO (orange) and
 *                        IWAE-valid_k (green) against step, from
 *                        dir/metrics.csv (ranges in curves_axes.csv)
 *   samples.png          decoder means of 100 prior samples, 10 x 10
 *   reconstructions.png  40 test images spread over the split, each above its
 *                        reconstruction
 *                        (decoder mean at the posterior mean)
 * Image pictures only when the data set declares an image shape. The model
 * is used as it stands. Returns FL_ERR_IO / FL_ERR_FORMAT for a missing or
 * malformed metrics.csv, or the first evaluation or write error. */
fl_status fl_plot_vae(fl_experiment *e, const char *dir);

#endif
