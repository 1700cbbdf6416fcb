/* eval.c - the vae task's evaluation suite (`flowlab eval`): IWAE-k
 * log-likelihood, ELBO, KL, effective sample size, active units; and the
 * periodic validation of training. */
#include "tasks/vae/vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/logmeanexp.h"
#include "core/util.h"
#include "output/json.h"
#include "output/rundir.h"
#include "tasks/subset.h"
#include "train/dist.h"

typedef struct point_acc {
    fl_lme w;           /* log-mean-exp of the log weights */
    double sum_lw, sum_kl;
} point_acc;

static void acc_add(point_acc *a, double lw, double kl)
{
    a->sum_lw += lw;
    a->sum_kl += kl;
    fl_lme_add(&a->w, lw);
}

/* Runs k samples for each of n points of x, chunked by [eval] batch. */
static fl_status eval_points(fl_experiment *e, const fl_real *x, uint64_t n, uint64_t k,
                             const char *stream, point_acc *acc, fl_progress *prog)
{
    fl_vae *v = fl_vae_of(e);
    const uint64_t S = e->eval_batch < v->Rmax ? e->eval_batch : v->Rmax;
    const uint64_t g = k <= S ? S / k : 1, kb = k <= S ? k : S;
    fl_rng_key key = fl_rng_key_make(e->seed, stream);
    char s2[128];
    snprintf(s2, sizeof s2, "%s.2", stream);
    fl_rng_key key2 = fl_rng_key_make(e->seed, s2);
    fl_status st = FL_OK;
    for (uint64_t i = 0; i < n; i++) {
        fl_lme_init(&acc[i].w);
        acc[i].sum_lw = acc[i].sum_kl = 0;
    }
    /* Under mpirun each rank takes whole chunks of g points, then every
     * point's accumulator goes to every rank (train/dist.h). */
    uint64_t mine0, mine1;
    fl_dist_share(n, g, &mine0, &mine1);
    const uint64_t ranks = (uint64_t)fl_dist_size();
    for (uint64_t p0 = mine0; p0 < mine1 && st == FL_OK; p0 += g) {
        const uint32_t m = (uint32_t)(n - p0 < g ? n - p0 : g);
        for (uint64_t j0 = 0; j0 < k && st == FL_OK; j0 += kb) {
            const uint32_t kk = (uint32_t)(k - j0 < kb ? k - j0 : kb);
            fl_vae_draw_noise(key, 0, p0, m, j0, kk, v->L1, v->eps);
            if (v->two) fl_vae_draw_noise(key2, 0, p0, m, j0, kk, v->L2, v->eps2);
            st = fl_vae_forward(e, FL_MODE_EVAL, x + p0 * v->D, m, kk);
            for (uint32_t b = 0; st == FL_OK && b < m; b++)
                for (uint32_t j = 0; j < kk; j++) {
                    size_t r = (size_t)b * kk + j;
                    double kl = (double)v->lq[r] - v->lpz[r];
                    if (v->two) kl += (double)v->lq2[r] - v->lpz1[r];
                    if (isnan(v->logw[r])) {
                        fl_err("evaluation: a log weight is NaN (point %llu)",
                               (unsigned long long)(p0 + b));
                        st = FL_ERR_NUMERIC;
                        break;
                    }
                    acc_add(&acc[p0 + b], v->logw[r], kl);
                }
            if (prog) /* rank 0's share, scaled to the whole */
                fl_progress_update(prog, ((p0 - mine0) * k + j0 + (uint64_t)m * kk) * ranks, "");
        }
    }
    return fl_dist_allgather(st, acc, sizeof *acc, n, g);
}

static double point_ll(const point_acc *a, uint64_t k) { return fl_lme_log_mean(&a->w, k); }

static void mean_se(const double *v, uint64_t n, double *mean, double *se)
{
    double s = 0, s2 = 0;
    for (uint64_t i = 0; i < n; i++) s += v[i];
    double mu = s / (double)n;
    for (uint64_t i = 0; i < n; i++) s2 += (v[i] - mu) * (v[i] - mu);
    *mean = mu;
    *se = n > 1 ? sqrt(s2 / (double)(n - 1) / (double)n) : 0;
}

/* ELBO and IWAE-k of n points (periodic validation). */
fl_status fl_vae_quick_eval(fl_experiment *e, const fl_real *x, uint64_t n, uint64_t k,
                            double *elbo, double *iwae)
{
    point_acc *acc = malloc(n * sizeof *acc);
    if (!acc) return FL_ERR_NOMEM;
    fl_status st = eval_points(e, x, n, k, "vae.valid", acc, NULL);
    double se = 0, si = 0;
    for (uint64_t i = 0; i < n; i++) {
        se += acc[i].sum_lw / (double)k;
        si += point_ll(&acc[i], k);
    }
    *elbo = se / (double)n;
    *iwae = si / (double)n;
    free(acc);
    return st;
}

fl_status fl_vae_logprob(fl_experiment *e, const fl_real *x, uint64_t n, uint64_t k, double *out)
{
    if (k == 0) k = (uint64_t)fl_exp_int(&e->eval, "k");
    point_acc *acc = malloc((n ? n : 1) * sizeof *acc);
    if (!acc) return FL_ERR_NOMEM;
    fl_status st = eval_points(e, x, n, k, "vae.eval", acc, NULL);
    for (uint64_t i = 0; st == FL_OK && i < n; i++) out[i] = point_ll(&acc[i], k);
    free(acc);
    return st;
}

/* Posterior means E_q[z1|x] of n points (exact for a posterior without
 * flows: the sample at eps = 0; else Monte Carlo with `samples`). Chunks
 * hold at most Rmax rows: several points when their samples fit, else one
 * point's samples over several chunks (summed in the same order, so the
 * means do not depend on the chunking). */
fl_status fl_vae_posterior_means(fl_experiment *e, const fl_real *x, uint64_t n, uint32_t samples,
                                 fl_real *means)
{
    fl_vae *v = fl_vae_of(e);
    const uint32_t L = v->L1, W = v->P1 + v->H, R = v->Rmax;
    const int exact = v->flows->n == 0;
    const uint32_t kk = exact ? 1 : samples;
    const uint32_t kb = kk <= R ? kk : R; /* samples per chunk */
    const uint64_t g = kk <= R ? R / kk : 1;
    double *part = malloc(L * sizeof *part); /* one point's sums across its chunks */
    if (!part) return FL_ERR_NOMEM;
    fl_rng_key key = fl_rng_key_make(e->seed, "vae.au");
    fl_status st = FL_OK;
    for (uint64_t p0 = 0; p0 < n && st == FL_OK; p0 += g) {
        uint32_t m = (uint32_t)(n - p0 < g ? n - p0 : g);
        fl_vae_net_forward(e, &v->enc, m, x + p0 * v->D, v->E);
        for (uint32_t j0 = 0; j0 < kk && st == FL_OK; j0 += kb) {
            const uint32_t c = kk - j0 < kb ? kk - j0 : kb; /* m == 1 when c < kk */
            if (exact) memset(v->eps, 0, (size_t)m * L * sizeof(fl_real));
            else fl_vae_draw_noise(key, 0, p0, m, j0, c, L, v->eps);
            fl_post_fwd pf = { m, c, fl_vae_theta(e, v->post.cx), v->E, W, v->eps, v->z0, v->lq };
            fl_part_enter(&v->post, "sample");
            st = v->pc->sample(v->post.self, &pf);
            fl_crash_leave();
            if (st != FL_OK) {
                st = fl_comp_fail(st, "posterior %s", v->post.rec->cls.base.name);
                break;
            }
            const fl_real *z = v->z0;
            if (!exact) st = fl_vae_flows_forward(e, FL_MODE_EVAL, m, c, &z);
            for (uint32_t b = 0; st == FL_OK && b < m; b++)
                for (uint32_t d = 0; d < L; d++) {
                    double s = j0 ? part[d] : 0;
                    for (uint32_t j = 0; j < c; j++) s += z[((size_t)b * c + j) * L + d];
                    if (j0 + c < kk) part[d] = s;
                    else means[(p0 + b) * L + d] = (fl_real)(s / kk);
                }
        }
    }
    free(part);
    return st;
}

/* Per-dimension KL(q(z_d|x) || N(0,1)) for an affine posterior without
 * flows (z = mu + A eps): mu = z(0), marginal variance = sum_j (z(e_j) -
 * z(0))_d^2. Accumulates the mean over the n points into kl (L). A point's
 * L + 1 rows are split over chunks of Rmax rows when they do not fit (the
 * variance summed in the same order). */
static fl_status kl_per_dim(fl_experiment *e, const fl_real *x, uint64_t n, double *kl)
{
    fl_vae *v = fl_vae_of(e);
    const uint32_t L = v->L1, W = v->P1 + v->H, kk = L + 1, R = v->Rmax;
    const uint32_t kb = kk <= R ? kk : R; /* rows per chunk */
    const uint64_t g = kk <= R ? R / kk : 1;
    double *mu = malloc(L * sizeof *mu), *var = malloc(L * sizeof *var);
    fl_status st = mu && var ? FL_OK : FL_ERR_NOMEM;
    memset(kl, 0, L * sizeof *kl);
    for (uint64_t p0 = 0; p0 < n && st == FL_OK; p0 += g) {
        uint32_t m = (uint32_t)(n - p0 < g ? n - p0 : g);
        fl_vae_net_forward(e, &v->enc, m, x + p0 * v->D, v->E);
        for (uint32_t j0 = 0; j0 < kk && st == FL_OK; j0 += kb) {
            const uint32_t c = kk - j0 < kb ? kk - j0 : kb; /* m == 1 when c < kk */
            memset(v->eps, 0, (size_t)m * c * L * sizeof(fl_real));
            for (uint32_t b = 0; b < m; b++)
                for (uint32_t r = 0; r < c; r++)
                    if (j0 + r > 0) v->eps[((size_t)b * c + r) * L + (j0 + r - 1)] = 1;
            fl_post_fwd pf = { m, c, fl_vae_theta(e, v->post.cx), v->E, W, v->eps, v->z0, v->lq };
            fl_part_enter(&v->post, "sample");
            st = v->pc->sample(v->post.self, &pf);
            fl_crash_leave();
            if (st != FL_OK) {
                st = fl_comp_fail(st, "posterior %s", v->post.rec->cls.base.name);
                break;
            }
            for (uint32_t b = 0; b < m; b++) {
                const fl_real *z = v->z0 + (size_t)b * c * L;
                for (uint32_t d = 0; d < L; d++) {
                    if (j0 == 0) {
                        mu[d] = z[d];
                        var[d] = 0;
                    }
                    for (uint32_t r = j0 ? 0 : 1; r < c; r++) {
                        double cd = (double)z[(size_t)r * L + d] - mu[d];
                        var[d] += cd * cd;
                    }
                    if (j0 + c < kk) continue;
                    double vd = var[d] < 1e-300 ? 1e-300 : var[d];
                    kl[d] += 0.5 * (mu[d] * mu[d] + vd - 1 - log(vd));
                }
            }
        }
    }
    for (uint32_t d = 0; st == FL_OK && d < L; d++) kl[d] /= (double)n;
    free(mu);
    free(var);
    return st;
}

/* Writes dir/STEM SUFFIX (atomically). */
static fl_status write_eval_file(const char *dir, const char *stem, const char *suffix,
                                 const fl_buf *b)
{
    char name[128];
    snprintf(name, sizeof name, "%s%s", stem, suffix);
    return fl_rundir_write(dir, name, b->data, b->len);
}

void fl_vae_eval_stem(const fl_experiment *e, fl_split split, uint64_t k, uint64_t n,
                      char *buf, size_t cap)
{
    uint64_t own_n = (uint64_t)fl_exp_int(&e->eval, "n"), all = e->info.n[FL_SPLIT_TEST];
    if (own_n == 0 || own_n > all) own_n = all;
    if (split == FL_SPLIT_TEST && k == (uint64_t)fl_exp_int(&e->eval, "k") && n == own_n)
        snprintf(buf, cap, "eval");
    else
        snprintf(buf, cap, "eval-%s-k%llu-n%llu",
                 split == FL_SPLIT_TEST ? "test" : split == FL_SPLIT_VALID ? "valid" : "train",
                 (unsigned long long)k, (unsigned long long)n);
}

fl_status fl_vae_evaluate(fl_experiment *e, fl_split split, uint64_t k, uint64_t n_max,
                          const char *dir, fl_vae_eval *out)
{
    return fl_vae_evaluate_pick(e, split, k, n_max, NULL, dir, out);
}

fl_status fl_vae_evaluate_pick(fl_experiment *e, fl_split split, uint64_t k, uint64_t n_max,
                               const char *pick_override, const char *dir, fl_vae_eval *out)
{
    fl_vae *v = fl_vae_of(e);
    memset(out, 0, sizeof *out);
    fl_real *x = NULL;
    uint64_t n = 0;
    fl_status st = fl_experiment_eval_split(e, split, &x, &n);
    if (st != FL_OK) return st;
    uint64_t *pick = NULL; /* a random subset (tasks/subset.h): the points' indices in the split */
    const uint64_t all = n;
    st = fl_subset_apply(x, &n, v->D, n_max, fl_subset_random(e, pick_override), &pick);
    if (st != FL_OK) {
        fl_free(x);
        return st;
    }
    const uint32_t L = v->L1;
    point_acc *acc = malloc(n * sizeof *acc);
    double *ll = malloc(n * sizeof *ll), *el = malloc(n * sizeof *el);
    fl_real *means = fl_alloc(n * L * sizeof(fl_real));
    double *var = calloc(L, sizeof *var), *kl = calloc(L, sizeof *kl);
    if (!acc || !ll || !el || !means || !var || !kl) st = FL_ERR_NOMEM;
    double t0 = fl_now();
    fl_progress prog;
    fl_progress_start(&prog, "eval", n * k, 0);
    if (st == FL_OK) st = eval_points(e, x, n, k, "vae.eval", acc, &prog);
    fl_progress_end(&prog);
    double ess = 0, klsum = 0;
    if (st == FL_OK) {
        for (uint64_t i = 0; i < n; i++) {
            ll[i] = point_ll(&acc[i], k);
            el[i] = acc[i].sum_lw / (double)k;
            ess += fl_lme_ess(&acc[i].w);
            klsum += acc[i].sum_kl / (double)k;
        }
        mean_se(ll, n, &out->ll, &out->ll_se);
        mean_se(el, n, &out->elbo, &out->elbo_se);
        out->ess = ess / (double)n;
        out->kl = klsum / (double)n;
        out->n = n;
        out->k = k;
        out->latent = L;
        if (!isfinite(out->ll)) {
            fl_err("evaluation: the log-likelihood estimate is not finite");
            st = FL_ERR_NUMERIC;
        }
    }
    /* Active units (Burda et al.): Var_x E_q[z_d|x] > threshold. */
    const double thr = fl_exp_real(&e->eval, "au_threshold");
    if (st == FL_OK)
        st = fl_vae_posterior_means(e, x, n, (uint32_t)fl_exp_int(&e->eval, "au_samples"), means);
    if (st == FL_OK) {
        for (uint32_t d = 0; d < L; d++) {
            double s = 0, s2 = 0;
            for (uint64_t i = 0; i < n; i++) s += means[i * L + d];
            double mu = s / (double)n;
            for (uint64_t i = 0; i < n; i++) {
                double c = means[i * L + d] - mu;
                s2 += c * c;
            }
            var[d] = n > 1 ? s2 / (double)(n - 1) : 0;
            if (var[d] > thr) out->active_units++;
        }
    }
    const int have_kl = v->flows->n == 0;
    if (st == FL_OK && have_kl) st = kl_per_dim(e, x, n, kl);
    out->seconds = fl_now() - t0;
    char *stem = out->stem;
    fl_vae_eval_stem(e, split, k, n, stem, sizeof out->stem);
    out->pick = n < all ? pick ? "random" : "first" : NULL;
    if (n < all && fl_subset_random(e, pick_override) != fl_subset_random(e, NULL)) {
        /* another choice of points than the run's own [eval] pick: its own files */
        size_t len = strlen(stem);
        snprintf(stem + len, sizeof out->stem - len, "-%s", out->pick);
    }
    if (st == FL_OK && dir && fl_dist_rank() == 0) { /* under mpirun rank 0 writes */
        fl_buf b = { 0 };
        fl_buf_printf(&b, "point,log_likelihood,elbo,ess\n");
        for (uint64_t i = 0; i < n; i++)
            fl_buf_printf(&b, "%llu,%.6f,%.6f,%.3f\n", (unsigned long long)(pick ? pick[i] : i),
                          ll[i], el[i],
                          fl_lme_ess(&acc[i].w));
        st = b.failed ? FL_ERR_NOMEM : write_eval_file(dir, stem, "_points.csv", &b);
        fl_buf_free(&b);
        fl_buf u = { 0 };
        fl_buf_printf(&u, "dim,var_posterior_mean,active,kl\n");
        for (uint32_t d = 0; d < L; d++) {
            fl_buf_printf(&u, "%u,%.6g,%d,", d, var[d], var[d] > thr);
            if (have_kl) fl_buf_printf(&u, "%.6f\n", kl[d]);
            else fl_buf_printf(&u, "\n");
        }
        if (st == FL_OK)
            st = u.failed ? FL_ERR_NOMEM : write_eval_file(dir, stem, "_units.csv", &u);
        fl_buf_free(&u);
        fl_buf j = { 0 };
        fl_json w;
        fl_json_begin(&w, &j);
        fl_json_key_str(&w, "split", split == FL_SPLIT_TEST    ? "test"
                                     : split == FL_SPLIT_VALID ? "valid"
                                                               : "train");
        fl_json_key_uint(&w, "points", n);
        if (n < all) fl_json_key_str(&w, "pick", pick ? "random" : "first");
        fl_json_key_uint(&w, "k", k);
        fl_json_key_num(&w, "log_likelihood", out->ll, "%.6f");
        fl_json_key_num(&w, "log_likelihood_se", out->ll_se, "%.6f");
        fl_json_key_num(&w, "elbo", out->elbo, "%.6f");
        fl_json_key_num(&w, "elbo_se", out->elbo_se, "%.6f");
        fl_json_key_num(&w, "gap", out->ll - out->elbo, "%.6f");
        fl_json_key_num(&w, "kl", out->kl, "%.6f");
        fl_json_key_num(&w, "ess", out->ess, "%.3f");
        fl_json_key_num(&w, "ess_fraction", out->ess / (double)k, "%.6f");
        fl_json_key_uint(&w, "active_units", out->active_units);
        fl_json_key_uint(&w, "latent", L);
        fl_json_key_num(&w, "au_threshold", thr, "%g");
        fl_json_key_num(&w, "seconds", out->seconds, "%.3f");
        fl_status jst = fl_json_end(&w);
        if (st == FL_OK) st = jst;
        if (st == FL_OK) st = write_eval_file(dir, stem, ".json", &j);
        fl_buf_free(&j);
    }
    free(pick);
    free(acc);
    free(ll);
    free(el);
    fl_free(means);
    free(var);
    free(kl);
    fl_free(x);
    return st;
}

void fl_vae_print_eval(const fl_vae_eval *ev)
{
    printf("  %-28s %12s\n", "metric", "value");
    printf("  %-28s %12.3f +- %.3f\n", "log p(x) (IWAE-k)", ev->ll, ev->ll_se);
    printf("  %-28s %12.3f +- %.3f\n", "ELBO", ev->elbo, ev->elbo_se);
    printf("  %-28s %12.3f\n", "gap log p(x) - ELBO", ev->ll - ev->elbo);
    printf("  %-28s %12.3f\n", "KL(q(z|x) || p(z))", ev->kl);
    printf("  %-28s %12.1f (%.4f of k)\n", "ESS of the weights", ev->ess,
           ev->ess / (double)ev->k);
    printf("  %-28s %9u / %u\n", "active units", ev->active_units, ev->latent);
    printf("  %-28s %12llu x k = %llu\n", "points", (unsigned long long)ev->n,
           (unsigned long long)ev->k);
    printf("  %-28s %12.2f s\n", "time", ev->seconds);
}

fl_status fl_vae_eval_cmd(fl_experiment *e, const fl_task_eval_args *a, const char *dir)
{
    fl_vae_eval ev;
    const uint64_t k = a->k ? a->k : (uint64_t)fl_exp_int(&e->eval, "k");
    fl_status st = fl_vae_evaluate_pick(e, a->split, k, a->n, a->pick, dir, &ev);
    if (st != FL_OK) return st;
    printf("%s split of %s (%s.json%s%s%s):\n", a->split == FL_SPLIT_VALID ? "valid" : "test",
           dir, ev.stem, ev.pick ? ", " : "", ev.pick ? ev.pick : "", ev.pick ? " points" : "");
    fl_vae_print_eval(&ev);
    return FL_OK;
}
