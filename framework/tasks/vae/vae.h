/* vae.h - the vae task's private header: its model and the functions its
 * files share (model.c assembles, step.c runs forward/backward and the
 * training step, eval.c the evaluation suite, sample.c samples and
 * pictures, task.c the table entry). Other layers use tasks/task_vae.h.
 *
 * Rows: n data points with k samples each give n*k sample rows, row
 * r = b*k + j for sample j of point b. Every per-sample buffer holds Rmax
 * rows (the largest n*k of one call: training B*k or an evaluation chunk),
 * so the training step allocates nothing. Widths: D data, L1 and L2 the
 * latents of layers 1 and 2, H the encoder's context, P1 and P2 the
 * posteriors' parameters per point, Q the likelihood's per row. */
#ifndef FL_VAE_PRIVATE_H
#define FL_VAE_PRIVATE_H

#include "compute/mlp.h"
#include "model/pathgrad.h"
#include "core/hostimpl.h"
#include "tasks/task.h"
#include "tasks/task_vae.h"

/* Limits of a conv net's INI keys (levels, blocks per level). */
#define FL_VAE_MAX_LEVELS 6
#define FL_VAE_MAX_BLOCKS 16

/* An encoder or decoder made from a host section ([encoder], [decoder],
 * ...): an MLP, or with `net = conv` a convolutional ResNet (net.c says
 * which layers). Buffers hold max_rows rows. */
typedef struct fl_vae_net {
    fl_values cfg;      /* the section (owned) */
    fl_ctx *cx;         /* owned; owns the MLP and the conv nets */
    fl_mlp *m;          /* mlp: the network; conv: its dense layer (the ctx's) */
    uint32_t in, out;   /* widths of a row in and out */
    int conv, decoder;  /* net = conv; the decoder's layout (z -> image) */
    fl_act act;         /* [section] act */
    /* net = conv only: */
    uint32_t img_c, img_h, img_w; /* the data's image shape */
    uint32_t ch, blocks, levels;  /* [section] channels, blocks, levels */
    int wn;             /* [section] weight_norm */
    uint32_t qc;        /* decoder: output channels per pixel (out / D) */
    uint32_t feat;      /* encoder: conv features per row (into the dense layer);
                           decoder: the dense layer's output (C x h0 x w0) */
    fl_conv *conv_net;  /* the conv net (the ctx's) */
    size_t bias_off;    /* decoder: its `out` output biases in the ctx's block */
    fl_real *f, *df;    /* max_rows x feat. encoder: features, their gradient;
                           decoder: the dense output before and after the act
                           (the conv net's input) */
    fl_real *g0;        /* decoder: max_rows x feat, the conv net's input gradient */
    fl_real *y;         /* decoder with qc > 1: max_rows x out, the conv net's NHWC
                           output (then its gradient) before the block transpose */
} fl_vae_net;

/* net.c: builds p from [section] (keys, nkeys): in -> out, `out_bias` the
 * decoder's initial output biases (or NULL), max_rows rows per call;
 * `decoder` picks the conv layout (z -> image; out must be a multiple of
 * the data dimension). Errors name the file, line and key. p is freed by
 * fl_vae_net_free whatever the status. */
fl_status fl_vae_net_make(fl_experiment *e, fl_vae_net *p, const char *section, const fl_key *keys,
                          uint32_t nkeys, uint32_t in, uint32_t out, const fl_real *out_bias,
                          uint32_t max_rows, int decoder);
void fl_vae_net_free(fl_vae_net *p);
/* out (n x out) = net(in (n x in)), n <= max_rows; keeps what the backward
 * needs (and the `in` pointer). */
void fl_vae_net_forward(fl_experiment *e, fl_vae_net *p, uint32_t n, const fl_real *in,
                        fl_real *out);
/* Backward of the last forward: parameter gradients added to the arena's
 * grad; din (n x in) += d/din when not NULL; dout is read only. */
void fl_vae_net_backward(fl_experiment *e, fl_vae_net *p, uint32_t n, const fl_real *dout,
                         fl_real *din);

/* The vae task's model (e->model). Buffers below are sized for Rmax rows;
 * a call over n points x k samples uses the first n*k (per-sample) or n
 * (per-point) rows. */
struct fl_vae {
    uint32_t D;                 /* data dimension */
    uint32_t L1, L2;            /* latent widths: z1 (the first layer), z2 (0 without) */
    uint32_t H;                 /* context width h the encoder also outputs (0 = none) */
    uint32_t P1, P2;            /* parameters per point of q(z1|x), of q(z2|z1) */
    uint32_t Q;                 /* likelihood parameters per row (decoder outputs) */
    uint32_t k;                 /* the estimator's samples per point */
    uint32_t B;                 /* [train] batch: points per step */
    uint32_t Rmax;              /* rows every buffer holds: max(B*k, [eval] batch) */
    int two;                    /* a second stochastic layer ([encoder.2]/[decoder.2]) */
    int detach;                 /* the estimator detaches q's parameters (path derivative) */
    fl_vae_net enc, dec;          /* x (D) -> [posterior params P1 | h H]; z1 (L1) -> Q */
    fl_vae_net enc2, dec2;        /* z1 (L1) -> P2; z2 (L2) -> 2*L1 (mean, log-variance of z1) */
    fl_part post, lik, prior, est, post2, lik2; /* [posterior] [likelihood] [prior]
                                                   [estimator]; q(z2|z1), p(z1|z2) */
    const fl_posterior_class *pc, *pc2;
    const fl_likelihood_class *lc, *lc2;
    const fl_prior_class *prc;
    const fl_estimator_class *ec;
    fl_stack *flows;            /* the posterior's [flow.N] layers (may be empty): z0 (R x L1,
                                   context hrep) -> zT with log-determinants; owned */

    /* layer 1 */
    fl_real *E, *dE;            /* n x (P1 + H): encoder output per point (q0's parameters,
                                   then h) and its gradient */
    fl_real *eps;               /* R x L1: standard normal noise of q0, per sample row */
    fl_real *z0;                /* R x L1: samples of q0(z1|x), before the flows */
    fl_real *lq;                /* R: log q(zT|x) = log q0(z0|x) - sum logdet */
    fl_real *hrep;              /* R x H: each point's h repeated over its k rows (H > 0) */
    fl_real *logdet;            /* R: the flows' summed log-determinant per row */
    fl_real *dz0;               /* R x L1: dloss/dz0, out of the flows' backward */
    fl_real *dh;                /* R x H: dloss/dh per row (summed per point into dE) */
    fl_real *dz;                /* R x L1: dloss/dzT (generative and inference paths) */
    fl_real *dzp;               /* R x max(L1, L2): d log p(z_top) / dz_top, weighted by wp */
    const fl_real *zT;          /* R x L1: latent samples z1 (z0, or the flows' output) */
    fl_real *Lg, *dLg;          /* R x Q: decoder outputs (likelihood parameters), gradient */
    fl_real *lpx;               /* R: log p(x|z1) */
    fl_real *lpz;               /* R: log p(z_top), the prior at the top latent */
    fl_real *logw;              /* R: log importance weights log p(x, z) - log q(z|x) */
    fl_real *wp, *wq;           /* R: the estimator's weights on the generative and the
                                   inference gradient, scaled by the loss's -1/n */
    fl_real *ratio;             /* R: wq / wp (turns wp-weighted z-gradients into wq's) */
    fl_real *neg_wq;            /* R: -wq, the weight of log q in the posterior's backward */
    double *bound;              /* n: the estimator's bound per point */
    /* layer 2 (two) */
    fl_real *E2, *dE2;          /* R x P2: q(z2|z1)'s parameters per row, gradient */
    fl_real *eps2;              /* R x L2: standard normal noise of q(z2|z1) */
    fl_real *z2;                /* R x L2: samples of q(z2|z1) */
    fl_real *lq2;               /* R: log q(z2|z1) */
    fl_real *G2, *dG2;          /* R x 2*L1: decoder.2 outputs (p(z1|z2)'s mean and
                                   log-variance), gradient */
    fl_real *lpz1;              /* R: log p(z1|z2) */
    fl_real *dz2;               /* R x L2: dloss/dz2 */
    fl_real *dz1b;              /* R x L1: dloss/dz1 through p(z1|z2) (sampling: z1's mean) */
    /* The path derivative (detach) with flows or two layers (step.c,
     * fl_vae_path_setup); allocated only then, for Rmax rows. */
    int path_ready;             /* the buffers below exist */
    fl_pathgrad pg;             /* grad_zT log q1 through the flows (flows only) */
    fl_real *a0;                /* R x L1: grad_z0 log q0(z0) at fixed parameters (flows) */
    fl_real *score;             /* R x L1: grad_zT log q1(zT) at fixed parameters (flows) */
    fl_real *prep, *dprep;      /* R x P1: q0's parameters repeated per row, their gradient */
    fl_real *ones;              /* R: 1 (the weight of log q0 when reading a0) */
    fl_real *zero;              /* R: 0 (flows: dlogdet and dlogq once the score is in dz) */
    fl_real *dE2b;              /* R x P2: q(z2|z1)'s gradient without detach (two) */
    fl_real *gscratch;          /* arena-sized: parameter gradients that are discarded */
};

/* The model of e (e must be a vae experiment). */
static inline fl_vae *fl_vae_of(const fl_experiment *e) { return (fl_vae *)e->model; }
/* A component's parameters and gradient in the arena. */
static inline fl_real *fl_vae_theta(fl_experiment *e, fl_ctx *cx)
{
    return e->arena.theta + cx->block;
}
static inline fl_real *fl_vae_grad(fl_experiment *e, fl_ctx *cx)
{
    return e->arena.grad + cx->block;
}

/* model.c: the [eval] keys of the vae task and the keys of its sections
 * (encoder, decoder, encoder.2, decoder.2; NULL for another). */
#define FL_VAE_N_EVAL_KEYS 9
extern const fl_key fl_vae_eval_keys[FL_VAE_N_EVAL_KEYS];
const fl_key *fl_vae_section_keys(const char *section, uint32_t *n);
/* The table's prepare, build, free and flows hooks (fl_task_model):
 * prepare makes the estimator (before the data set), build the rest. */
fl_status fl_vae_prepare(fl_experiment *e);
fl_status fl_vae_build(fl_experiment *e);
void fl_vae_free(void *model);
const fl_stack *fl_vae_flows(const fl_experiment *e);

/* step.c: allocates the buffers of the path derivative when the estimator
 * detaches log q's parameters and the model has flows or two stochastic
 * layers (a no-op otherwise, and when done already). FL_ERR_NOMEM,
 * FL_ERR_UNSUPPORTED for a flow the path gradient cannot handle (fl_err
 * names it). Call after the model is built (fl_vae_build) or its
 * estimator changed. */
fl_status fl_vae_path_setup(fl_experiment *e);
void fl_vae_path_free(fl_vae *v);

/* step.c: standard normals for points p0.., samples j0..j0+k-1 (point
 * p's stream is (key, sub0 + p), independent of chunking). */
void fl_vae_draw_noise(fl_rng_key key, uint64_t sub0, uint64_t p0, uint32_t n, uint64_t j0,
                       uint32_t k, uint32_t dim, fl_real *eps);
/* z0 (n x k rows) through the posterior's flows, each point's h repeated
 * over its k samples: logdet filled, the output in *z. */
fl_status fl_vae_flows_forward(fl_experiment *e, fl_mode mode, uint32_t n, uint32_t k,
                               const fl_real **z);
/* Forward over n points x k samples of x: fills logw (n*k) and everything
 * the backward needs. eps (and eps2) must be filled. */
fl_status fl_vae_forward(fl_experiment *e, fl_mode mode, const fl_real *x, uint32_t n,
                         uint32_t k);

/* eval.c: ELBO and IWAE-k of n points (the periodic validation). */
fl_status fl_vae_quick_eval(fl_experiment *e, const fl_real *x, uint64_t n, uint64_t k,
                            double *elbo, double *iwae);
/* E_q[z1|x] of n points into means (n x L1): exact without flows, else
 * Monte Carlo with `samples` per point. */
fl_status fl_vae_posterior_means(fl_experiment *e, const fl_real *x, uint64_t n,
                                 uint32_t samples, fl_real *means);
/* `flowlab eval` (the table's eval hook). */
fl_status fl_vae_eval_cmd(fl_experiment *e, const fl_task_eval_args *a, const char *dir);
/* The task's logprob hook: IWAE-k of each row, log mean_j w_j over k
 * samples (0 = [eval] k) of stream (seed, "vae.eval"), sub-stream = the
 * row's index, exactly as `flowlab eval` scores a point at that index. */
fl_status fl_vae_logprob(fl_experiment *e, const fl_real *x, uint64_t n, uint64_t k, double *out);

/* sample.c: the table's sample and plot hooks. */
uint32_t fl_vae_sample_dim(const fl_experiment *e);
fl_status fl_vae_sample_cmd(fl_experiment *e, uint64_t n, uint64_t seed, fl_real *out);
fl_status fl_vae_plot_cmd(fl_experiment *e, const char *dir, const char **files);

/* step.c: the trainer's hooks (train/loop.h) over a per-run state. */
/* One run's state; every buffer is allocated before the first step (the
 * model's own buffers hold the rest). */
typedef struct fl_vae_run {
    fl_real *x;             /* B x D: the step's training batch */
    fl_real *vx;            /* vn x D: the periodic validation's points */
    uint64_t vn, vk;        /* validation points and samples per point ([eval] valid_k) */
    fl_split vs;            /* the validation split (valid, or test without one) */
    fl_rng_key key, key2;   /* the step's noise of layers 1 and 2 (sub-stream = step) */
    double valid_elbo, valid_iwae; /* the last periodic validation */
    fl_vae_eval test;       /* the final test evaluation (task.c), when `tested` */
    int tested;
} fl_vae_run;


#define FL_VAE_N_COLS 4
extern const fl_metrics_col fl_vae_columns[FL_VAE_N_COLS];
fl_status fl_vae_run_new(fl_experiment *e, void **run);
void fl_vae_run_free(void *run);
fl_status fl_vae_step(fl_experiment *e, void *run, uint64_t step, uint32_t p0, uint32_t n,
                      double *value);
fl_status fl_vae_validate(fl_experiment *e, void *run);
/* The trainer's monitor: "valid_iwae" (its negative as the loss) when the
 * data set has a validation split, else NULL. */
const char *fl_vae_monitor(const fl_experiment *e, void *run, double *loss);
void fl_vae_row(fl_experiment *e, void *run, uint64_t done, double *vals);
void fl_vae_log(fl_experiment *e, void *run, double train, char *buf, size_t cap);
void fl_vae_status(fl_experiment *e, void *run, uint64_t done, uint64_t steps, double value,
                   char *buf, size_t cap);
/* The run's result: its last validation with the loop's summary. */
fl_vae_result fl_vae_result_of(const fl_experiment *e, const void *run,
                               const fl_train_summary *s);

#endif
