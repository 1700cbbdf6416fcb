/* vi.h - the vi task's private header: what its files share (model.c
 * assembles the model and samples q, eval.c the evaluation and result,
 * step.c the training step and the trainer, task.c the table entry).
 * Other layers use tasks/task_vi.h. d = the target's dimension, R = rows
 * per step (batch x k), B = [train] batch. */
#ifndef FL_VI_PRIVATE_H
#define FL_VI_PRIVATE_H

#include "core/hostimpl.h"
#include "tasks/task.h"
#include "tasks/task_vi.h"


static inline const fl_target_class *fl_vi_tcls(const fl_vi *v)
{
    return &v->target.rec->cls.target;
}
static inline const fl_estimator_class *fl_vi_ecls(const fl_vi *v)
{
    return &v->est.rec->cls.estimator;
}
/* The target's failure as the user's message ([target] NAME: ...). */
static inline fl_status fl_vi_target_fail(fl_vi *v, fl_status st)
{
    return fl_comp_fail(st, "[target] %s", v->target.rec->cls.base.name);
}
/* log N(eps; 0, I) of one row, in double. */
static inline double fl_vi_log_normal(const fl_real *eps, uint32_t d)
{
    double q = 0;
    for (uint32_t j = 0; j < d; j++) q += (double)eps[j] * eps[j];
    return -0.5 * q - d * FL_HALF_LOG_2PI;
}


/* model.c: the [vi] keys, the table's build, free and flows hooks. */
const fl_key *fl_vi_section_keys(const char *section, uint32_t *n);
fl_status fl_vi_build(fl_experiment *e);
void fl_vi_free(void *model);
const fl_stack *fl_vi_flows(const fl_experiment *e);
/* Rows row0 .. row0+m-1 of q's sample stream `key` (element i*dim + j of
 * sub-stream 0 is coordinate j of row i): z (m x dim) and log q (m, or
 * NULL); eps and ld are m x dim and m scratch. */
fl_status fl_vi_sample_rows(fl_experiment *e, fl_rng_key key, uint64_t row0, uint32_t m,
                            fl_real *eps, fl_real *ld, fl_real *z, fl_real *logq);

/* step.c: the training step's buffers, all allocated before the loop. */
typedef struct fl_vi_bufs {
    fl_real *eps;           /* R x d: standard normal noise, the flows' input */
    fl_real *logdet;        /* R: the flows' summed log-determinant */
    fl_real *logp;          /* R: log p~(z) of the target */
    fl_real *gp;            /* R x d: grad_z log p~(z) */
    fl_real *ones;          /* R: ones, the target's gradient weights */
    fl_real *logw;          /* R: log w = beta log p~ - log q */
    fl_real *wp, *wq;       /* R: the estimator's weights (generative, inference) */
    fl_real *dz;            /* R x d: dloss/dz into the flows' backward */
    fl_real *dld;           /* R: dloss/dlogdet */
    fl_real *score;         /* R x d: grad_z log q at fixed parameters (detach only) */
    fl_real *a0;            /* R x d: -eps, the score's seed (detach only) */
    double *bound;          /* B: the estimator's bound per point */
} fl_vi_bufs;
fl_status fl_vi_bufs_alloc(fl_vi_bufs *b, uint32_t R, uint32_t B, uint32_t d, int detach);
void fl_vi_bufs_free(fl_vi_bufs *b);
/* One training step at inverse temperature beta on points p0 .. p0+n-1
 * of the batch (the whole batch: 0, [train] batch): their share of the
 * mean bound over the batch (their sum / batch) to *bound_mean, the
 * gradient of minus that share into the arena's grad (zero on entry). A
 * point's noise does not depend on the range. Allocates nothing. */
fl_status fl_vi_train_step(fl_experiment *e, fl_vi_bufs *b, fl_rng_key noise, uint64_t step,
                           double beta, uint32_t p0, uint32_t n, double *bound_mean);

/* One run's state: the step's buffers and the last evaluation. */
typedef struct fl_vi_run {
    fl_vi_result res;       /* the last evaluation (ELBO, log Z, KL) */
    fl_vi_bufs b;            /* the step's buffers (fl_vi_bufs) */
    fl_rng_key noise;       /* the step's noise: sub-stream = step */
    double ref;             /* reference log Z (NAN when none), computed once */
    const char *how;        /* "analytic", "grid" or "none" */
    int anneal;             /* [vi] anneal */
    uint64_t anneal_steps;  /* steps for beta to reach 1 */
    double beta;            /* the last step's inverse temperature */
} fl_vi_run;

/* step.c: the trainer's hooks (train/loop.h) over a fl_vi_run. */
#define FL_VI_N_COLS 8
extern const fl_metrics_col fl_vi_columns[FL_VI_N_COLS];
fl_status fl_vi_run_new(fl_experiment *e, void **run);
void fl_vi_run_free(void *run);
fl_status fl_vi_step(fl_experiment *e, void *run, uint64_t step, uint32_t p0, uint32_t n,
                     double *value);
fl_status fl_vi_validate(fl_experiment *e, void *run);
void fl_vi_row(fl_experiment *e, void *run, uint64_t done, double *vals);
void fl_vi_log(fl_experiment *e, void *run, double train, char *buf, size_t cap);
void fl_vi_status(fl_experiment *e, void *run, uint64_t done, uint64_t steps, double value,
                  char *buf, size_t cap);
/* The run's result: its last evaluation with the loop's summary. */
fl_vi_result fl_vi_result_of(const fl_vi_run *r, const fl_train_summary *s);

#endif
