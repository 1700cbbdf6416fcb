/* eval.c - the vi task's evaluation: ELBO, importance-sampled log Z,
 * the reference log Z (analytic or a grid), result.json and the summary. */
#include "tasks/vi/vi.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/logmeanexp.h"
#include "core/util.h"
#include "output/json.h"
#include "output/rundir.h"
#include "train/dist.h"

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
    double *lw = malloc(n * sizeof *lw); /* per sample, summed in sample order below */
    fl_status st = z && eps && lq && lp && ld && lw ? FL_OK : FL_ERR_NOMEM;
    /* under mpirun each rank takes whole chunks (train/dist.h) */
    uint64_t mine0, mine1;
    fl_dist_share(n, chunk, &mine0, &mine1);
    for (uint64_t i = mine0; i < mine1 && st == FL_OK; i += chunk) {
        uint32_t c = (uint32_t)(n - i < chunk ? n - i : chunk);
        st = fl_vi_sample_rows(e, key, i, c, eps, ld, z, lq);
        if (st == FL_OK) st = fl_vi_target_logp(e, z, c, lp);
        for (uint32_t r = 0; st == FL_OK && r < c; r++) {
            lw[i + r] = (double)lp[r] - lq[r];
            if (isnan(lw[i + r])) {
                fl_err("a log weight is NaN in evaluation");
                st = FL_ERR_NUMERIC;
            }
        }
    }
    fl_free(z);
    fl_free(eps);
    fl_free(lq);
    fl_free(lp);
    fl_free(ld);
    st = fl_dist_allgather(st, lw, sizeof *lw, n, chunk);
    double s = 0, s2 = 0;
    fl_lme w;
    fl_lme_init(&w);
    for (uint64_t i = 0; st == FL_OK && i < n; i++) {
        s += lw[i];
        s2 += lw[i] * lw[i];
        fl_lme_add(&w, lw[i]);
    }
    free(lw);
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

fl_status fl_vi_write_result(fl_experiment *e, const char *dir, const fl_vi_result *r)
{
    fl_vi *v = fl_vi_of(e);
    fl_buf js = { 0 };
    fl_json w;
    fl_json_begin(&w, &js);
    fl_json_key_str(&w, "task", "vi");
    fl_json_key_str(&w, "target", v->target.rec->cls.base.name);
    fl_json_key_str(&w, "estimator", v->est.rec->cls.base.name);
    fl_json_key_uint(&w, "k", v->k);
    fl_json_key_num(&w, "elbo", r->elbo, "%.6f");
    fl_json_key_num(&w, "elbo_se", r->elbo_se, "%.6f");
    fl_json_key_uint(&w, "elbo_samples", r->elbo_n);
    fl_json_key_num(&w, "logz_is", r->logz_is, "%.6f");
    fl_json_key_num(&w, "logz_ess", r->ess, "%.1f");
    fl_json_key_uint(&w, "logz_samples", r->logz_n);
    fl_json_key_num(&w, "logz_ref", r->logz_ref, "%.6f"); /* null without a reference */
    fl_json_key_str(&w, "logz_ref_method", r->logz_ref_how);
    fl_json_key_num(&w, "kl", r->kl, "%.6f");
    fl_json_key_num(&w, "kl_se", r->kl_se, "%.6f");
    fl_json_key_num(&w, "train_bound", r->train_bound, "%.6f");
    fl_json_key_uint(&w, "steps", r->steps);
    fl_json_key_num(&w, "train_seconds", r->seconds, "%.3f");
    fl_json_key_num(&w, "steps_per_second", r->steps_per_s, "%.1f");
    fl_json_key_uint(&w, "parameters", e->arena.count);
    fl_status st = fl_json_end(&w);
    if (st == FL_OK) st = fl_rundir_write(dir, "result.json", js.data, js.len);
    fl_buf_free(&js);
    return st;
}

/* Training buffers, all allocated before the loop. */
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

