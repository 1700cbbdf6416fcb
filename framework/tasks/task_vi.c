/* task_vi.c - variational inference of an unnormalised target: the
 * model, the training step, evaluation, and the table entry fl_task_vi
 * (docs/vi.md). */
#include "tasks/task_vi.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute/logmeanexp.h"
#include "core/hostimpl.h"
#include "core/log.h"
#include "core/util.h"
#include "output/plot.h"
#include "output/rundir.h"
#include "tasks/task.h"

#define HALF_LOG_2PI 0.91893853320467274178

static const fl_key vi_keys[] = {
    { "anneal", FL_KEY_BOOL, "false", 0, 0, NULL,
      "anneal the target in training: log w = beta_t log p~ - log q with beta_t = min(1, "
      "0.01 + t/anneal_steps) (Rezende & Mohamed); evaluation always uses beta = 1" },
    { "anneal_steps", FL_KEY_INT, "0", 0, 1e12, NULL,
      "steps for beta to reach 1; 0 = half of the training steps" },
    { "elbo_samples", FL_KEY_INT, "10000", 1, 1e9, NULL,
      "samples of the evaluation ELBO (mean of log w, beta = 1)" },
    { "logz_samples", FL_KEY_INT, "100000", 1, 1e10, NULL,
      "samples of the importance-sampling estimate of log Z with q as the proposal" },
    { "grid", FL_KEY_INT, "2000", 10, 20000, NULL,
      "cells per side of the grid integral of exp(log p~) over the target's box, the "
      "reference log Z of a 2D target without an analytic one" },
};

static const fl_key *vi_section_keys(const char *section, uint32_t *n)
{
    if (strcmp(section, "vi") != 0) return NULL;
    *n = (uint32_t)(sizeof vi_keys / sizeof *vi_keys);
    return vi_keys;
}

fl_vi *fl_vi_of(const fl_experiment *e) { return e->model; }

#define NTAB(t) ((uint32_t)(sizeof(t) / sizeof((t)[0])))

static const fl_target_class *tcls(const fl_vi *v) { return &v->target.rec->cls.target; }
static const fl_estimator_class *ecls(const fl_vi *v) { return &v->est.rec->cls.estimator; }

static fl_status target_fail(fl_vi *v, fl_status st)
{
    return fl_comp_fail(st, "[target] %s", v->target.rec->cls.base.name);
}

static fl_status vi_build(fl_experiment *e)
{
    fl_vi *v = calloc(1, sizeof *v);
    if (!v) return FL_ERR_NOMEM;
    e->model = v;
    fl_status st = fl_part_prepare(e, FL_KIND_TARGET, "target", NULL, &v->target);
    if (st == FL_OK) {
        v->info.log_z = NAN;
        st = tcls(v)->create(fl_host_table(), v->target.cx, &v->info, &v->target.self);
        st = fl_part_created(e, &v->target, st);
    }
    if (st == FL_OK && v->info.dim == 0) {
        fl_err("[target] %s reports dimension 0", v->target.rec->cls.base.name);
        st = FL_ERR_INVALID;
    }
    if (st == FL_OK) {
        e->data_type = fl_strdup(v->target.rec->cls.base.name);
        if (!e->data_type) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) st = fl_experiment_section(e, "vi", vi_keys, NTAB(vi_keys), &v->cfg);
    if (st == FL_OK) st = fl_part_prepare(e, FL_KIND_ESTIMATOR, "estimator", "elbo", &v->est);
    if (st == FL_OK) {
        v->k = (uint32_t)fl_exp_int(&v->est.cfg, "k");
        v->detach = (ecls(v)->flags & FL_EST_DETACH_Q) != 0;
        uint64_t rows = (uint64_t)e->batch * v->k;
        if (rows > (1u << 24)) {
            fl_err("%s: [train] batch x [estimator] k = %llu rows per step: at most %u", e->cfg->path,
                   (unsigned long long)rows, 1u << 24);
            st = FL_ERR_INVALID;
        }
        v->rows = (uint32_t)rows;
        fl_estimator_shape sh = { e->batch, v->k };
        if (st == FL_OK) {
            st = ecls(v)->create(fl_host_table(), v->est.cx, &sh, &v->est.self);
            st = fl_part_created(e, &v->est, st);
        }
    }
    if (st != FL_OK) return st;
    e->max_rows = v->rows > e->eval_batch ? v->rows : e->eval_batch;
    v->flows = fl_stack_new(&e->arena, e->seed, v->info.dim, 0, e->max_rows);
    st = v->flows ? fl_stack_from_config(v->flows, e->reg, e->cfg) : FL_ERR_NOMEM;
    if (st == FL_OK) st = fl_arena_finalize(&e->arena, e->seed);
    if (st == FL_OK) st = fl_stack_ready(v->flows);
    if (st == FL_OK && v->detach) st = fl_pathgrad_init(&v->pg, v->flows, v->rows);
    return st;
}

static void vi_free(void *model)
{
    fl_vi *v = model;
    if (!v) return;
    fl_pathgrad_free(&v->pg);
    fl_stack_free(v->flows);
    if (v->target.rec) fl_part_free(&v->target, tcls(v)->destroy);
    if (v->est.rec) fl_part_free(&v->est, ecls(v)->destroy);
    fl_values_free(&v->cfg);
    free(v);
}

static const fl_stack *vi_flows(const fl_experiment *e) { return fl_vi_of(e)->flows; }

fl_status fl_vi_target_logp(fl_experiment *e, const fl_real *z, uint64_t n, fl_real *logp)
{
    fl_vi *v = fl_vi_of(e);
    const uint32_t d = v->info.dim, chunk = 1u << 16;
    for (uint64_t i = 0; i < n; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        fl_target_args a = { m, z + i * d, logp + i, NULL, NULL };
        fl_host_clear_error();
        fl_status st = tcls(v)->log_prob(v->target.self, &a);
        if (st != FL_OK) return target_fail(v, st);
    }
    return FL_OK;
}

/* log N(eps; 0, I) of one row, in double. */
static double log_normal(const fl_real *eps, uint32_t d)
{
    double q = 0;
    for (uint32_t j = 0; j < d; j++) q += (double)eps[j] * eps[j];
    return -0.5 * q - d * HALF_LOG_2PI;
}

/* Rows row0 .. row0+m-1 of q's sample stream `key` (element i*dim + j of
 * sub-stream 0 is coordinate j of row i): z (m x dim) and log q (m, or
 * NULL); eps and ld are m x dim and m scratch. */
static fl_status sample_rows(fl_experiment *e, fl_rng_key key, uint64_t row0, uint32_t m,
                             fl_real *eps, fl_real *ld, fl_real *z, fl_real *logq)
{
    const uint32_t d = fl_vi_of(e)->info.dim;
    fl_rng_normal(key, 0, row0 * d, (size_t)m * d, eps);
    memset(ld, 0, m * sizeof(fl_real));
    const fl_real *zt;
    fl_status st = fl_stack_forward(fl_vi_of(e)->flows, m, FL_MODE_EVAL, eps, NULL, ld, &zt);
    if (st != FL_OK) return st;
    memcpy(z, zt, (size_t)m * d * sizeof(fl_real));
    for (uint32_t r = 0; logq && r < m; r++)
        logq[r] = (fl_real)(log_normal(eps + (size_t)r * d, d) - ld[r]);
    return FL_OK;
}

fl_status fl_vi_sample(fl_experiment *e, uint64_t n, fl_rng_key key, fl_real *z, fl_real *logq)
{
    const uint32_t d = fl_vi_of(e)->info.dim, chunk = e->max_rows;
    fl_real *eps = fl_alloc((size_t)chunk * d * sizeof(fl_real));
    fl_real *ld = fl_alloc(chunk * sizeof(fl_real));
    fl_status st = eps && ld ? FL_OK : FL_ERR_NOMEM;
    for (uint64_t i = 0; i < n && st == FL_OK; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        st = sample_rows(e, key, i, m, eps, ld, z + i * d, logq ? logq + i : NULL);
    }
    fl_free(eps);
    fl_free(ld);
    return st;
}

fl_status fl_vi_log_q(fl_experiment *e, const fl_real *z, uint64_t n, fl_real *logq)
{
    const uint32_t d = fl_vi_of(e)->info.dim, chunk = e->max_rows;
    fl_real *x = fl_alloc((size_t)chunk * d * sizeof(fl_real));
    fl_real *ld = fl_alloc(chunk * sizeof(fl_real));
    fl_status st = x && ld ? FL_OK : FL_ERR_NOMEM;
    for (uint64_t i = 0; i < n && st == FL_OK; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        memset(ld, 0, m * sizeof(fl_real));
        st = fl_stack_inverse(fl_vi_of(e)->flows, m, FL_MODE_EVAL, z + i * d, NULL, x, ld);
        for (uint32_t r = 0; st == FL_OK && r < m; r++)
            logq[i + r] = (fl_real)(log_normal(x + (size_t)r * d, d) + ld[r]);
    }
    fl_free(x);
    fl_free(ld);
    return st;
}

fl_status fl_vi_logz_grid(fl_experiment *e, uint32_t cells, double *logz)
{
    fl_vi *v = fl_vi_of(e);
    if (v->info.dim != 2) {
        fl_err("the grid integral of log Z needs a 2D target (%s has dimension %u)",
               v->target.rec->cls.base.name, v->info.dim);
        return FL_ERR_UNSUPPORTED;
    }
    const double *b = v->info.box;
    if (!(b[1] > b[0] && b[3] > b[2]) || !isfinite(b[1] - b[0]) || !isfinite(b[3] - b[2])) {
        fl_err("[target] %s reports an empty or infinite box", v->target.rec->cls.base.name);
        return FL_ERR_INVALID;
    }
    const double dx = (b[1] - b[0]) / cells, dy = (b[3] - b[2]) / cells;
    fl_real *z = fl_alloc((size_t)cells * 2 * sizeof(fl_real));
    fl_real *lp = fl_alloc(cells * sizeof(fl_real));
    fl_status st = z && lp ? FL_OK : FL_ERR_NOMEM;
    double m = -INFINITY, s = 0;
    for (uint32_t j = 0; j < cells && st == FL_OK; j++) {
        for (uint32_t i = 0; i < cells; i++) {
            z[2 * i] = (fl_real)(b[0] + (i + 0.5) * dx);
            z[2 * i + 1] = (fl_real)(b[2] + (j + 0.5) * dy);
        }
        st = fl_vi_target_logp(e, z, cells, lp);
        for (uint32_t i = 0; st == FL_OK && i < cells; i++) {
            double l = lp[i];
            if (isnan(l)) {
                fl_err("[target] %s: log p~ is NaN at (%g, %g)", v->target.rec->cls.base.name,
                       (double)z[2 * i], (double)z[2 * i + 1]);
                st = FL_ERR_NUMERIC;
            } else if (l > m) {
                s = s * exp(m - l) + 1;
                m = l;
            } else {
                s += exp(l - m);
            }
        }
    }
    fl_free(z);
    fl_free(lp);
    if (st != FL_OK) return st;
    *logz = m + log(s) + log(dx * dy);
    if (!isfinite(*logz)) {
        fl_err("[target] %s: the grid integral of exp(log p~) over its box is %g",
               v->target.rec->cls.base.name, exp(*logz));
        return FL_ERR_NUMERIC;
    }
    return FL_OK;
}

/* Statistics of log w = log p~(z) - log q(z) over n samples of q from
 * `key`: mean and its standard error, log-mean-exp and the ESS. */
typedef struct lw_stats {
    double mean, se, lme, ess;
} lw_stats;

static fl_status logw_stats(fl_experiment *e, fl_rng_key key, uint64_t n, lw_stats *out)
{
    const uint32_t d = fl_vi_of(e)->info.dim, chunk = e->eval_batch;
    fl_real *z = fl_alloc((size_t)chunk * d * sizeof(fl_real));
    fl_real *eps = fl_alloc((size_t)chunk * d * sizeof(fl_real));
    fl_real *lq = fl_alloc(chunk * sizeof(fl_real)), *lp = fl_alloc(chunk * sizeof(fl_real));
    fl_real *ld = fl_alloc(chunk * sizeof(fl_real));
    fl_status st = z && eps && lq && lp && ld ? FL_OK : FL_ERR_NOMEM;
    double s = 0, s2 = 0;
    fl_lme w;
    fl_lme_init(&w);
    for (uint64_t i = 0; i < n && st == FL_OK; i += chunk) {
        uint32_t c = (uint32_t)(n - i < chunk ? n - i : chunk);
        st = sample_rows(e, key, i, c, eps, ld, z, lq);
        if (st == FL_OK) st = fl_vi_target_logp(e, z, c, lp);
        for (uint32_t r = 0; st == FL_OK && r < c; r++) {
            double lw = (double)lp[r] - lq[r];
            if (isnan(lw)) {
                fl_err("a log weight is NaN in evaluation");
                st = FL_ERR_NUMERIC;
                break;
            }
            s += lw;
            s2 += lw * lw;
            fl_lme_add(&w, lw);
        }
    }
    fl_free(z);
    fl_free(eps);
    fl_free(lq);
    fl_free(lp);
    fl_free(ld);
    if (st != FL_OK) return st;
    double mu = s / (double)n, var = n > 1 ? (s2 - s * mu) / (double)(n - 1) : 0;
    out->mean = mu;
    out->se = var > 0 ? sqrt(var / (double)n) : 0;
    out->lme = fl_lme_log_mean(&w, n);
    out->ess = fl_lme_ess(&w);
    return FL_OK;
}

fl_status fl_vi_evaluate(fl_experiment *e, double logz_ref, const char *how, fl_vi_result *res)
{
    fl_vi *v = fl_vi_of(e);
    fl_status st = FL_OK;
    if (isnan(logz_ref)) {
        how = "none";
        if (isfinite(v->info.log_z)) {
            logz_ref = v->info.log_z;
            how = "analytic";
        } else if (v->info.dim == 2) {
            st = fl_vi_logz_grid(e, (uint32_t)fl_exp_int(&v->cfg, "grid"), &logz_ref);
            how = "grid";
        }
    }
    if (st != FL_OK) return st;
    res->logz_ref = logz_ref;
    res->logz_ref_how = how;
    lw_stats a, b;
    res->elbo_n = (uint64_t)fl_exp_int(&v->cfg, "elbo_samples");
    res->logz_n = (uint64_t)fl_exp_int(&v->cfg, "logz_samples");
    st = logw_stats(e, fl_rng_key_make(0, "vi.elbo"), res->elbo_n, &a);
    if (st == FL_OK) st = logw_stats(e, fl_rng_key_make(0, "vi.logz"), res->logz_n, &b);
    if (st != FL_OK) return st;
    res->elbo = a.mean;
    res->elbo_se = a.se;
    res->logz_is = b.lme;
    res->ess = b.ess;
    res->kl = logz_ref - a.mean; /* NAN without a reference */
    res->kl_se = a.se;
    if (!isfinite(res->elbo)) {
        fl_err("the evaluation ELBO is not finite (%g)", res->elbo);
        return FL_ERR_NUMERIC;
    }
    return FL_OK;
}

static void fmt_num(char *buf, size_t cap, double x)
{
    if (isfinite(x)) snprintf(buf, cap, "%.6f", x);
    else snprintf(buf, cap, "null");
}

fl_status fl_vi_write_result(fl_experiment *e, const char *dir, const fl_vi_result *r)
{
    fl_vi *v = fl_vi_of(e);
    char ref[32], kl[32];
    fmt_num(ref, sizeof ref, r->logz_ref);
    fmt_num(kl, sizeof kl, r->kl);
    fl_buf js = { 0 };
    fl_buf_printf(&js,
                  "{\n  \"task\": \"vi\",\n  \"target\": \"%s\",\n  \"estimator\": \"%s\",\n"
                  "  \"k\": %u,\n  \"elbo\": %.6f,\n  \"elbo_se\": %.6f,\n  \"elbo_samples\": %llu,\n"
                  "  \"logz_is\": %.6f,\n  \"logz_ess\": %.1f,\n  \"logz_samples\": %llu,\n"
                  "  \"logz_ref\": %s,\n  \"logz_ref_method\": \"%s\",\n  \"kl\": %s,\n"
                  "  \"kl_se\": %.6f,\n  \"train_bound\": %.6f,\n  \"steps\": %llu,\n"
                  "  \"train_seconds\": %.3f,\n  \"steps_per_second\": %.1f,\n"
                  "  \"parameters\": %zu\n}\n",
                  v->target.rec->cls.base.name, v->est.rec->cls.base.name, v->k, r->elbo,
                  r->elbo_se, (unsigned long long)r->elbo_n, r->logz_is, r->ess,
                  (unsigned long long)r->logz_n, ref, r->logz_ref_how, kl, r->kl_se,
                  r->train_bound, (unsigned long long)r->steps, r->seconds, r->steps_per_s,
                  e->arena.count);
    fl_status st = js.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "result.json", js.data, js.len);
    fl_buf_free(&js);
    return st;
}

/* Training buffers, all allocated before the loop. */
typedef struct step_bufs {
    fl_real *eps, *logdet, *logp, *gp, *ones, *logw, *wp, *wq, *dz, *dld, *score, *a0;
    double *bound;
} step_bufs;

static void bufs_free(step_bufs *b)
{
    fl_real **p[] = { &b->eps, &b->logdet, &b->logp, &b->gp, &b->ones, &b->logw, &b->wp,
                      &b->wq, &b->dz, &b->dld, &b->score, &b->a0 };
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) fl_free(*p[i]);
    fl_free(b->bound);
    memset(b, 0, sizeof *b);
}

static fl_status bufs_alloc(step_bufs *b, uint32_t R, uint32_t B, uint32_t d, int detach)
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
        bufs_free(b);
        return FL_ERR_NOMEM;
    }
    for (uint32_t r = 0; r < R; r++) b->ones[r] = 1;
    return FL_OK;
}

/* One training step at inverse temperature beta: the mean bound over the
 * batch goes to *bound_mean; the arena's grad (zero on entry) gets the
 * gradient of the loss -mean_b bound_b (through the estimator's surrogate). */
static fl_status train_step(fl_experiment *e, step_bufs *b, fl_rng_key noise, uint64_t step,
                            double beta, double *bound_mean)
{
    fl_vi *v = fl_vi_of(e);
    const uint32_t d = v->info.dim, R = v->rows, B = e->batch;
    fl_rng_normal(noise, step, 0, (size_t)R * d, b->eps);
    memset(b->logdet, 0, R * sizeof(fl_real));
    const fl_real *z;
    fl_status st = fl_stack_forward(fl_vi_of(e)->flows, R, FL_MODE_TRAIN, b->eps, NULL, b->logdet, &z);
    if (st != FL_OK) return st;
    fl_target_args ta = { R, z, b->logp, b->ones, b->gp };
    fl_host_clear_error();
    st = tcls(v)->log_prob(v->target.self, &ta);
    if (st != FL_OK) return target_fail(v, st);
    for (uint32_t r = 0; r < R; r++)
        b->logw[r] = (fl_real)(beta * b->logp[r] - log_normal(b->eps + (size_t)r * d, d) +
                               b->logdet[r]);
    fl_est_args ea = { B, v->k, b->logw, b->bound, b->wp, b->wq };
    fl_host_clear_error();
    st = ecls(v)->weights(v->est.self, &ea);
    if (st != FL_OK) return fl_comp_fail(st, "[estimator] %s", v->est.rec->cls.base.name);
    double s = 0;
    for (uint32_t i = 0; i < B; i++) s += b->bound[i];
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
    step_bufs b;
    fl_status st = bufs_alloc(&b, fl_vi_of(e)->rows, e->batch, fl_vi_of(e)->info.dim, fl_vi_of(e)->detach);
    if (st != FL_OK) return st;
    fl_arena_zero_grad(&e->arena);
    st = train_step(e, &b, fl_rng_key_make(e->seed, "vi.noise"), step, beta, bound);
    bufs_free(&b);
    return st;
}

/* One run's state: the step's buffers and the last evaluation. */
typedef struct vi_run {
    fl_vi_result res;       /* the last evaluation (ELBO, log Z, KL) */
    step_bufs b;            /* the step's buffers (step_bufs) */
    fl_rng_key noise;       /* the step's noise: sub-stream = step */
    double ref;             /* reference log Z (NAN when none), computed once */
    const char *how;        /* "analytic", "grid" or "none" */
    int anneal;             /* [vi] anneal */
    uint64_t anneal_steps;  /* steps for beta to reach 1 */
    double beta;            /* the last step's inverse temperature */
} vi_run;

/* The inverse temperature of the step before `done` (1 when done = 0). */
static double beta_at(const vi_run *r, uint64_t done)
{
    return r->anneal && done ? fmin(1.0, 0.01 + (double)(done - 1) / (double)r->anneal_steps)
                             : 1.0;
}

static void run_free(void *p)
{
    vi_run *r = p;
    if (!r) return;
    bufs_free(&r->b);
    free(r);
}

static fl_status run_new(fl_experiment *e, void **out)
{
    fl_vi *v = fl_vi_of(e);
    vi_run *r = calloc(1, sizeof *r);
    *out = r;
    if (!r) return FL_ERR_NOMEM;
    const uint64_t steps = fl_experiment_steps(e);
    r->anneal = fl_values_get(&v->cfg, "anneal")->i != 0;
    r->anneal_steps = (uint64_t)fl_exp_int(&v->cfg, "anneal_steps");
    if (r->anneal_steps == 0) r->anneal_steps = steps / 2 ? steps / 2 : 1;
    r->noise = fl_rng_key_make(e->seed, "vi.noise");
    r->beta = 1;
    fl_status st = bufs_alloc(&r->b, v->rows, e->batch, v->info.dim, v->detach);
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

static fl_status vi_step(fl_experiment *e, void *p, uint64_t step, double *value)
{
    vi_run *r = p;
    r->beta = r->anneal ? fmin(1.0, 0.01 + (double)step / (double)r->anneal_steps) : 1.0;
    return train_step(e, &r->b, r->noise, step, r->beta, value);
}

static fl_status vi_evaluate(fl_experiment *e, void *p)
{
    vi_run *r = p;
    return fl_vi_evaluate(e, r->ref, r->how, &r->res);
}

static const fl_metric_col columns[] = {
    { "beta", "%.4f", 0 },          { "train_bound", "%.6f", FL_COL_TRAIN },
    { "elbo", "%.6f", 0 },          { "elbo_se", "%.6f", 0 },
    { "logz_is", "%.6f", 0 },       { "logz_ess", "%.1f", 0 },
    { "logz_ref", "%.6f", FL_COL_OPTIONAL }, { "kl", "%.6f", FL_COL_OPTIONAL },
};

static void vi_row(fl_experiment *e, void *p, uint64_t done, double *vals)
{
    (void)e;
    const vi_run *r = p;
    vals[0] = beta_at(r, done);
    vals[2] = r->res.elbo;
    vals[3] = r->res.elbo_se;
    vals[4] = r->res.logz_is;
    vals[5] = r->res.ess;
    vals[6] = r->res.logz_ref;
    vals[7] = r->res.kl;
}

static void vi_log(fl_experiment *e, void *p, double train, char *buf, size_t cap)
{
    (void)e;
    const vi_run *r = p;
    snprintf(buf, cap, "train bound %.4f (beta %.3f), ELBO %.4f +- %.4f", train, r->beta,
             r->res.elbo, r->res.elbo_se);
}

static void vi_status(fl_experiment *e, void *p, uint64_t done, uint64_t steps, double bound,
                      char *buf, size_t cap)
{
    (void)e;
    const vi_run *r = p;
    if ((done & 15) != 0 && done != steps) return;
    if (r->res.elbo_n)
        snprintf(buf, cap, "bound %.4f  beta %.3f  elbo %.4f", bound, r->beta, r->res.elbo);
    else snprintf(buf, cap, "bound %.4f  beta %.3f", bound, r->beta);
}

/* The result of a run: the last evaluation with the loop's summary. */
static fl_vi_result result_of(const vi_run *r, const fl_train_summary *s)
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
    if (run) *res = result_of(run, &s);
    run_free(run);
    return st;
}

void fl_vi_report(const fl_experiment *e, const fl_vi_result *r, FILE *f)
{
    const fl_vi *v = fl_vi_of(e);
    fprintf(f, "  %-34s %10.4f +- %.4f\n", "ELBO", r->elbo, r->elbo_se);
    char lbl[64];
    snprintf(lbl, sizeof lbl, "log Z, importance (%llu samples)", (unsigned long long)r->logz_n);
    fprintf(f, "  %-34s %10.4f  (ESS %.0f)\n", lbl, r->logz_is, r->ess);
    snprintf(lbl, sizeof lbl, "log Z, reference (%s)", r->logz_ref_how);
    if (isfinite(r->logz_ref)) fprintf(f, "  %-34s %10.4f\n", lbl, r->logz_ref);
    else fprintf(f, "  %-34s %10s\n", lbl, "-");
    if (isfinite(r->kl))
        fprintf(f, "  %-34s %10.4f +- %.4f\n", "KL(q||p) = log Z - ELBO", r->kl, r->kl_se);
    fprintf(f, "  (%s, target %s, estimator %s, k = %u)\n", "vi", v->target.rec->cls.base.name,
            v->est.rec->cls.base.name, v->k);
}

/* ------------------------------------------------------------------ */
/* The table entry.                                                     */

static void vi_describe(const fl_experiment *e, char *buf, size_t cap)
{
    snprintf(buf, cap, "vi on %s, %zu flow layers", e->data_type, fl_vi_of(e)->flows->n);
}

static fl_status vi_result(fl_experiment *e, void *run, const fl_train_summary *s,
                           const char *dir)
{
    fl_vi_result res = result_of(run, s);
    return fl_vi_write_result(e, dir, &res);
}

static void vi_report(const fl_experiment *e, void *run, const fl_train_summary *s,
                      const char *dir)
{
    fl_vi_result vr = result_of(run, s);
    fl_vi_report(e, &vr, stdout);
    printf("ELBO %.4f +- %.4f, KL %.4f; %llu steps in %.2f s, %.0f steps/s; run directory "
           "%s\n",
           vr.elbo, vr.elbo_se, vr.kl, (unsigned long long)vr.steps, vr.seconds,
           vr.steps_per_s, dir);
}

static fl_status vi_plot(fl_experiment *e, const char *dir, const char **files)
{
    *files = fl_vi_of(e)->info.dim == 2 ? "{target,density,samples,curves}.png" : "curves.png";
    return fl_plot_vi(e, dir);
}

static uint32_t vi_sample_dim(const fl_experiment *e) { return fl_vi_of(e)->info.dim; }

/* samples of the fitted posterior q */
static fl_status vi_sample_cmd(fl_experiment *e, uint64_t n, uint64_t seed, fl_real *out)
{
    return fl_vi_sample(e, n, fl_rng_key_make(seed, "sample"), out, NULL);
}

static const char *const sections[] = { "target", "estimator", "vi", NULL };

const fl_task fl_task_vi = {
    .model = { .name = "vi",
               .help = "fit a flow posterior to an unnormalised [target]",
               .sections = sections,
               .data = 0,
               .build = vi_build,
               .free = vi_free,
               .flows = vi_flows },
    .section_keys = vi_section_keys,
    .trainer = { .cols = columns,
                 .n_cols = 8,
                 .step = vi_step,
                 .evaluate = vi_evaluate,
                 .row = vi_row,
                 .log = vi_log,
                 .status = vi_status },
    .run_new = run_new,
    .run_free = run_free,
    .describe = vi_describe,
    .write_result = vi_result,
    .report = vi_report,
    .plot = vi_plot,
    .sample_dim = vi_sample_dim,
    .sample = vi_sample_cmd,
};
