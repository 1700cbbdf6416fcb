/* gradvar.h - gradient variance of VAE estimators at fixed parameters.
 *
 * For a built VAE (fl_vae_build, parameters loaded) and a fixed batch of n
 * points, each estimator x k is evaluated `draws` times with independent
 * noise: at draw t, point p's k samples come from noise sub-stream
 * FL_GRADVAR_SUB0 + t * n + p (of the run's "vae.eps" key), so every
 * estimator at the same k sees the same noise (common random numbers), and
 * results depend only on the arguments and the run, not on how the batch
 * is split. The gradient is that of the mean bound over the n points (the
 * batch is split into calls of at most fl_vae_max_rows / k points, each
 * call weighted by its share of points).
 * Per parameter entry the mean and variance over draws are accumulated
 * (Welford, double); per parameter group the report gives
 *     SNR = mean over the group's entries of |E[g]| / std[g]
 * (Rainforth et al. 2018, Tucker et al. 2019), with mean |E[g]| and mean
 * std[g] alongside. Entries whose gradient is the same in every draw
 * (std 0: padding, state, unused parameters) are left out of the group.
 *
 * Groups: "inference" = parameters whose names start with encoder,
 * posterior or flow; "generative" = decoder, likelihood, prior; and one
 * group per top-level prefix (the first name component, with the second
 * when it is a number: encoder, encoder.2, flow.1, ...). */
#ifndef FL_GRADVAR_H
#define FL_GRADVAR_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "model/experiment.h"
#include "output/rundir.h"

/* Noise sub-streams start here, far from the ones training uses. */
#define FL_GRADVAR_SUB0 (UINT64_C(1) << 48)

/* Per-entry moments of the gradient over draws, plus the bound and ESS. */
typedef struct fl_gradvar_stats {
    size_t total;          /* entries (arena.total) */
    uint32_t draws;        /* draws accumulated so far */
    double *mean, *m2;     /* total each: running mean, sum of squared deviations */
    double bound_mean, bound_m2; /* of the per-draw mean bound over the n points */
    double ess_sum;        /* sum over points and draws of the ESS of a point's weights */
    uint64_t ess_count;    /* terms in ess_sum (points whose weights are not all 0) */
} fl_gradvar_stats;

/* Allocates zeroed stats for `total` entries. FL_ERR_NOMEM on failure. */
fl_status fl_gradvar_stats_init(fl_gradvar_stats *s, size_t total);
/* Frees the arrays (NULL-safe, the struct itself is the caller's). */
void fl_gradvar_stats_free(fl_gradvar_stats *s);

/* One draw: the gradient of the mean bound over the n points of x (n x dim
 * rows) with the model's current estimator, written to g (arena.total
 * doubles, overwritten; padding and state entries come out 0). Also gives
 * the mean bound (*bound) and adds each point's ESS = (sum w)^2 / sum w^2 of
 * its k importance weights to *ess_sum / *ess_count (either may be NULL).
 * Leaves the arena's grad holding the last call's gradient. Errors are
 * those of fl_vae_bound (fl_err says why). */
fl_status fl_gradvar_draw(fl_experiment *e, const fl_real *x, uint32_t n, uint32_t draw,
                          double *g, double *bound, double *ess_sum, uint64_t *ess_count);

/* Adds draws [s->draws, s->draws + draws) to `s` (initialised for
 * e->arena.total). `prog` (may be NULL) is advanced by one per draw from
 * `prog_base`. Errors as fl_gradvar_draw. */
fl_status fl_gradvar_accumulate(fl_experiment *e, const fl_real *x, uint32_t n, uint32_t draws,
                                fl_gradvar_stats *s, fl_progress *prog, uint64_t prog_base);

/* The summary of a parameter group. */
typedef struct fl_gradvar_group {
    char name[64];
    size_t entries;        /* entries with a varying gradient (the averages' terms) */
    double snr;            /* mean |E g| / std g; NAN when entries = 0 */
    double mean_abs;       /* mean |E g| */
    double mean_std;       /* mean std g (sample standard deviation over draws) */
} fl_gradvar_group;

/* Which group a parameter name belongs to: 1 inference, 2 generative,
 * 0 neither (e.g. an estimator's own parameters). */
int fl_gradvar_side(const char *name);

/* Summarises the entries of the arena slices selected by `side` (1, 2, as
 * fl_gradvar_side) or, with side 0, the slices whose top-level prefix is
 * `prefix`. Needs s->draws >= 2. State slices are skipped. */
void fl_gradvar_summarize(const fl_experiment *e, const fl_gradvar_stats *s, int side,
                          const char *prefix, fl_gradvar_group *out);

/* Top-level prefix of a parameter name into buf ("encoder.net.W0" ->
 * "encoder", "flow.1.0.s.W0" -> "flow.1", "encoder.2.net.W0" -> "encoder.2"). */
void fl_gradvar_prefix(const char *name, char *buf, size_t cap);

/* One estimator x k of a comparison. */
typedef struct fl_gradvar_row {
    char estimator[64];
    uint32_t k;
    int ok;                /* 0: the model refused the combination */
    char *reason;          /* why not (owned), when !ok */
    uint32_t points_per_call, calls;
    double bound, bound_se; /* mean over draws of the mean bound, s.e. over draws */
    double ess;            /* mean ESS per point (1..k) */
    double seconds;
    fl_gradvar_group inference, generative;
    fl_gradvar_group *prefix; /* n_prefix groups, in fl_gradvar_result order */
} fl_gradvar_row;

typedef struct fl_gradvar_result {
    uint32_t n, draws;
    fl_gradvar_row *rows;  /* n_est x n_k, estimator-major */
    size_t n_rows;
    char **prefix;         /* the top-level prefixes of the model's trained slices */
    size_t n_prefix;
} fl_gradvar_result;

/* Runs every estimator x k on n points of x: switches the model's estimator
 * with fl_vae_use_estimator (a refusal becomes a row with ok = 0 and the
 * message as reason; the estimator names must exist in the registry), then
 * accumulates `draws` (>= 2) draws. Shows progress when `progress`. The
 * caller frees *out with fl_gradvar_result_free, also on failure. A k with
 * k > fl_vae_max_rows is FL_ERR_INVALID; other errors are numeric or
 * allocation failures with fl_err set. The model's estimator is left at the
 * last combination tried. */
fl_status fl_gradvar_run(fl_experiment *e, const fl_real *x, uint32_t n,
                         const char *const *estimators, size_t n_est, const uint32_t *ks,
                         size_t n_k, uint32_t draws, int progress, fl_gradvar_result *out);
void fl_gradvar_result_free(fl_gradvar_result *r);

/* gradvar.csv: one line per row and group
 * (estimator,k,status,bound,bound_se,ess,ess_fraction,group,entries,snr,
 * mean_abs_grad,mean_std_grad,seconds). The caller frees b. */
void fl_gradvar_csv(const fl_gradvar_result *r, fl_buf *b);
/* gradvar.json: the settings, a "rows" array with every group, and flat
 * top-level numbers EST_kK_{bound,ess,snr_inference,snr_generative} that
 * `flowlab report` picks up (as gv_...). `run` and `split` are recorded. */
void fl_gradvar_json(const fl_gradvar_result *r, const char *run, const char *split, fl_buf *b);
/* The terminal table. */
void fl_gradvar_print(const fl_gradvar_result *r, FILE *f);

#endif
