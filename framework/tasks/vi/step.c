/* step.c - the vi task's training step and its trainer (train/loop.h). */
#include "tasks/vi/vi.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void fl_vi_bufs_free(fl_vi_bufs *b)
{
    fl_real **p[] = { &b->eps, &b->logdet, &b->logp, &b->gp, &b->ones, &b->logw, &b->wp,
                      &b->wq, &b->dz, &b->dld, &b->score, &b->a0 };
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) fl_free(*p[i]);
    fl_free(b->bound);
    memset(b, 0, sizeof *b);
}

fl_status fl_vi_bufs_alloc(fl_vi_bufs *b, uint32_t R, uint32_t B, uint32_t d, int detach)
{
    memset(b, 0, sizeof *b);
    size_t fs = sizeof(fl_real), rd = (size_t)R * d * fs;
    b->eps = fl_alloc(rd);
    b->gp = fl_alloc(rd);
    b->dz = fl_alloc(rd);
    b->logdet = fl_alloc(R * fs);
    b->logp = fl_alloc(R * fs);
    b->ones = fl_alloc(R * fs);
    b->logw = fl_alloc(R * fs);
    b->wp = fl_alloc(R * fs);
    b->wq = fl_alloc(R * fs);
    b->dld = fl_alloc(R * fs);
    b->bound = fl_alloc(B * sizeof(double));
    if (detach) {
        b->score = fl_alloc(rd);
        b->a0 = fl_alloc(rd);
    }
    if (!b->eps || !b->gp || !b->dz || !b->logdet || !b->logp || !b->ones || !b->logw ||
        !b->wp || !b->wq || !b->dld || !b->bound || (detach && (!b->score || !b->a0))) {
        fl_vi_bufs_free(b);
        return FL_ERR_NOMEM;
    }
    for (uint32_t r = 0; r < R; r++) b->ones[r] = 1;
    return FL_OK;
}

/* One training step at inverse temperature beta: the mean bound over the
 * batch goes to *bound_mean; the arena's grad (zero on entry) gets the
 * gradient of the loss -mean_b bound_b (through the estimator's surrogate). */
fl_status fl_vi_train_step(fl_experiment *e, fl_vi_bufs *b, fl_rng_key noise, uint64_t step,
                           double beta, uint32_t p0, uint32_t n, double *bound_mean)
{
    fl_vi *v = fl_vi_of(e);
    const uint32_t d = v->info.dim, R = n * v->k, B = e->batch;
    fl_rng_normal(noise, step, (uint64_t)p0 * v->k * d, (size_t)R * d, b->eps);
    memset(b->logdet, 0, R * sizeof(fl_real));
    const fl_real *z;
    fl_status st = fl_stack_forward(fl_vi_of(e)->flows, R, FL_MODE_TRAIN, b->eps, NULL, b->logdet, &z);
    if (st != FL_OK) return st;
    fl_target_args ta = { R, z, b->logp, b->ones, b->gp };
    fl_host_clear_error();
    fl_part_enter(&v->target, "log_prob");
    st = fl_vi_tcls(v)->log_prob(v->target.self, &ta);
    fl_crash_leave();
    if (st != FL_OK) return fl_vi_target_fail(v, st);
    for (uint32_t r = 0; r < R; r++)
        b->logw[r] = (fl_real)(beta * b->logp[r] - fl_vi_log_normal(b->eps + (size_t)r * d, d) +
                               b->logdet[r]);
    fl_est_args ea = { n, v->k, b->logw, b->bound, b->wp, b->wq };
    fl_host_clear_error();
    fl_part_enter(&v->est, "weights");
    st = fl_vi_ecls(v)->weights(v->est.self, &ea);
    fl_crash_leave();
    if (st != FL_OK) return fl_comp_fail(st, "[estimator] %s", v->est.rec->cls.base.name);
    double s = 0;
    for (uint32_t i = 0; i < n; i++) s += b->bound[i];
    *bound_mean = s / B;
    if (!isfinite(*bound_mean)) {
        fl_err("step %llu: the training bound is not finite (%g); lower [train] lr",
               (unsigned long long)step + 1, *bound_mean);
        return FL_ERR_NUMERIC;
    }
    const double sc = -1.0 / B;
    if (v->detach) {
        /* Path derivative: grad log q at fixed parameters, no logdet term. */
        for (size_t i = 0; i < (size_t)R * d; i++) b->a0[i] = -b->eps[i];
        st = fl_pathgrad_score(&v->pg, R, FL_MODE_TRAIN, b->a0, b->score);
        if (st != FL_OK) return st;
        for (uint32_t r = 0; r < R; r++) {
            double w = sc * b->wq[r];
            for (uint32_t j = 0; j < d; j++) {
                size_t i = (size_t)r * d + j;
                b->dz[i] = (fl_real)(w * (beta * b->gp[i] - b->score[i]));
            }
            b->dld[r] = 0;
        }
    } else {
        for (uint32_t r = 0; r < R; r++) {
            double w = sc * b->wq[r];
            for (uint32_t j = 0; j < d; j++)
                b->dz[(size_t)r * d + j] = (fl_real)(w * beta * b->gp[(size_t)r * d + j]);
            b->dld[r] = (fl_real)w;
        }
    }
    /* accumulates into the arena's grad, which the caller has cleared */
    return fl_stack_backward(fl_vi_of(e)->flows, R, FL_MODE_TRAIN, NULL, b->dz, b->dld, NULL, NULL);
}

fl_status fl_vi_gradient(fl_experiment *e, uint64_t step, double beta, double *bound)
{
    fl_vi_bufs b;
    fl_status st = fl_vi_bufs_alloc(&b, fl_vi_of(e)->rows, e->batch, fl_vi_of(e)->info.dim, fl_vi_of(e)->detach);
    if (st != FL_OK) return st;
    fl_arena_zero_grad(&e->arena);
    st = fl_vi_train_step(e, &b, fl_rng_key_make(e->seed, "vi.noise"), step, beta, 0, e->batch,
                          bound);
    fl_vi_bufs_free(&b);
    return st;
}

/* The inverse temperature of the step before `done` (1 when done = 0). */
static double beta_at(const fl_vi_run *r, uint64_t done)
{
    return r->anneal && done ? fmin(1.0, 0.01 + (double)(done - 1) / (double)r->anneal_steps)
                             : 1.0;
}

void fl_vi_run_free(void *p)
{
    fl_vi_run *r = p;
    if (!r) return;
    fl_vi_bufs_free(&r->b);
    free(r);
}

fl_status fl_vi_run_new(fl_experiment *e, void **out)
{
    fl_vi *v = fl_vi_of(e);
    fl_vi_run *r = calloc(1, sizeof *r);
    *out = r;
    if (!r) return FL_ERR_NOMEM;
    const uint64_t steps = fl_experiment_steps(e);
    r->anneal = fl_values_get(&v->cfg, "anneal")->i != 0;
    r->anneal_steps = (uint64_t)fl_exp_int(&v->cfg, "anneal_steps");
    if (r->anneal_steps == 0) r->anneal_steps = steps / 2 ? steps / 2 : 1;
    r->noise = fl_rng_key_make(e->seed, "vi.noise");
    r->beta = 1;
    fl_status st = fl_vi_bufs_alloc(&r->b, v->rows, e->batch, v->info.dim, v->detach);
    /* The reference log Z once, before training (a grid for U1 takes a
     * fraction of a second). */
    r->ref = NAN;
    r->how = "none";
    if (st == FL_OK) {
        if (isfinite(v->info.log_z)) {
            r->ref = v->info.log_z;
            r->how = "analytic";
        } else if (v->info.dim == 2) {
            st = fl_vi_logz_grid(e, (uint32_t)fl_exp_int(&v->cfg, "grid"), &r->ref);
            r->how = "grid";
        }
    }
    return st;
}

fl_status fl_vi_step(fl_experiment *e, void *p, uint64_t step, uint32_t p0, uint32_t n,
                     double *value)
{
    fl_vi_run *r = p;
    r->beta = r->anneal ? fmin(1.0, 0.01 + (double)step / (double)r->anneal_steps) : 1.0;
    return fl_vi_train_step(e, &r->b, r->noise, step, r->beta, p0, n, value);
}

fl_status fl_vi_validate(fl_experiment *e, void *p)
{
    fl_vi_run *r = p;
    return fl_vi_evaluate(e, r->ref, r->how, &r->res);
}

/* train_bound (train_col 1) is the loop's interval mean; logz_ref and kl
 * are empty without a reference log Z. */
const fl_metrics_col fl_vi_columns[FL_VI_N_COLS] = {
    { "beta", "%.4f" },     { "train_bound", "%.6f" },
    { "elbo", "%.6f" },     { "elbo_se", "%.6f" },
    { "logz_is", "%.6f" },  { "logz_ess", "%.1f" },
    { "logz_ref", "%.6f" }, { "kl", "%.6f" },
};

void fl_vi_row(fl_experiment *e, void *p, uint64_t done, double *vals)
{
    (void)e;
    const fl_vi_run *r = p;
    vals[0] = beta_at(r, done);
    vals[2] = r->res.elbo;
    vals[3] = r->res.elbo_se;
    vals[4] = r->res.logz_is;
    vals[5] = r->res.ess;
    vals[6] = r->res.logz_ref;
    vals[7] = r->res.kl;
}

void fl_vi_log(fl_experiment *e, void *p, double train, char *buf, size_t cap)
{
    (void)e;
    const fl_vi_run *r = p;
    snprintf(buf, cap, "train bound %.4f (beta %.3f), ELBO %.4f +- %.4f", train, r->beta,
             r->res.elbo, r->res.elbo_se);
}

void fl_vi_status(fl_experiment *e, void *p, uint64_t done, uint64_t steps, double bound,
                      char *buf, size_t cap)
{
    (void)e;
    const fl_vi_run *r = p;
    if ((done & 15) != 0 && done != steps) return;
    if (r->res.elbo_n)
        snprintf(buf, cap, "bound %.4f  beta %.3f  elbo %.4f", bound, r->beta, r->res.elbo);
    else snprintf(buf, cap, "bound %.4f  beta %.3f", bound, r->beta);
}

/* The result of a run: the last evaluation with the loop's summary. */
fl_vi_result fl_vi_result_of(const fl_vi_run *r, const fl_train_summary *s)
{
    fl_vi_result res = r->res;
    res.train_bound = s->train;
    res.steps = s->steps;
    res.seconds = s->seconds;
    res.steps_per_s = s->session_seconds > 0 ? (double)s->session_steps / s->session_seconds : 0;
    return res;
}

fl_status fl_vi_train(fl_experiment *e, const char *rundir, int resume, fl_vi_result *res)
{
    memset(res, 0, sizeof *res);
    void *run;
    fl_train_summary s;
    fl_status st = fl_task_train(e, rundir, resume, &run, &s);
    if (run) *res = fl_vi_result_of(run, &s);
    fl_vi_run_free(run);
    return st;
}

