/* model.c - the vi task's model: its [vi] keys, the target, estimator and
 * flow posterior q, the target's log density and samples of q. */
#include "tasks/vi/vi.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

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

const fl_key *fl_vi_section_keys(const char *section, uint32_t *n)
{
    if (strcmp(section, "vi") != 0) return NULL;
    *n = (uint32_t)(sizeof vi_keys / sizeof *vi_keys);
    return vi_keys;
}

fl_vi *fl_vi_of(const fl_experiment *e) { return e->model; }



fl_status fl_vi_build(fl_experiment *e)
{
    fl_vi *v = calloc(1, sizeof *v);
    if (!v) return FL_ERR_NOMEM;
    e->model = v;
    fl_status st = fl_part_prepare(e, FL_KIND_TARGET, "target", NULL, &v->target);
    if (st == FL_OK) {
        v->info.log_z = NAN;
        st = fl_vi_tcls(v)->create(fl_host_table(), v->target.cx, &v->info, &v->target.self);
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
    if (st == FL_OK) st = fl_experiment_section(e, "vi", vi_keys, FL_NTAB(vi_keys), &v->cfg);
    if (st == FL_OK) st = fl_part_prepare(e, FL_KIND_ESTIMATOR, "estimator", "elbo", &v->est);
    if (st == FL_OK) {
        v->k = (uint32_t)fl_exp_int(&v->est.cfg, "k");
        v->detach = (fl_vi_ecls(v)->flags & FL_EST_DETACH_Q) != 0;
        uint64_t rows = (uint64_t)e->batch * v->k;
        if (rows > (1u << 24)) {
            fl_err("%s: [train] batch x [estimator] k = %llu rows per step: at most %u", e->cfg->path,
                   (unsigned long long)rows, 1u << 24);
            st = FL_ERR_INVALID;
        }
        v->rows = (uint32_t)rows;
        fl_estimator_shape sh = { e->batch, v->k };
        if (st == FL_OK) {
            st = fl_vi_ecls(v)->create(fl_host_table(), v->est.cx, &sh, &v->est.self);
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

void fl_vi_free(void *model)
{
    fl_vi *v = model;
    if (!v) return;
    fl_pathgrad_free(&v->pg);
    fl_stack_free(v->flows);
    if (v->target.rec) fl_part_free(&v->target, fl_vi_tcls(v)->destroy);
    if (v->est.rec) fl_part_free(&v->est, fl_vi_ecls(v)->destroy);
    fl_values_free(&v->cfg);
    free(v);
}

const fl_stack *fl_vi_flows(const fl_experiment *e) { return fl_vi_of(e)->flows; }

fl_status fl_vi_target_logp(fl_experiment *e, const fl_real *z, uint64_t n, fl_real *logp)
{
    fl_vi *v = fl_vi_of(e);
    const uint32_t d = v->info.dim, chunk = 1u << 16;
    for (uint64_t i = 0; i < n; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        fl_target_args a = { m, z + i * d, logp + i, NULL, NULL };
        fl_host_clear_error();
        fl_part_enter(&v->target, "log_prob");
        fl_status st = fl_vi_tcls(v)->log_prob(v->target.self, &a);
        fl_crash_leave();
        if (st != FL_OK) return fl_vi_target_fail(v, st);
    }
    return FL_OK;
}

/* Rows row0 .. row0+m-1 of q's sample stream `key` (element i*dim + j of
 * sub-stream 0 is coordinate j of row i): z (m x dim) and log q (m, or
 * NULL); eps and ld are m x dim and m scratch. */
fl_status fl_vi_sample_rows(fl_experiment *e, fl_rng_key key, uint64_t row0, uint32_t m,
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
        logq[r] = (fl_real)(fl_vi_log_normal(eps + (size_t)r * d, d) - ld[r]);
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
        st = fl_vi_sample_rows(e, key, i, m, eps, ld, z + i * d, logq ? logq + i : NULL);
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
            logq[i + r] = (fl_real)(fl_vi_log_normal(x + (size_t)r * d, d) + ld[r]);
    }
    fl_free(x);
    fl_free(ld);
    return st;
}

