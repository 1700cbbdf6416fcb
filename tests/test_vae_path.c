/* test_vae_path.c - stl and dreg in the vae task through posterior flows
 * and two stochastic layers (the path derivative of log q with q's
 * parameters held fixed; tasks/vae/step.c):
 *  - the gradient against central differences of the surrogate
 *        sum_r wp_r log p(x, z_r)                      (generative)
 *        sum_r wq_r [log p(x, z_r) - log q_0(z_r)]     (inference)
 *    with the weights and q_0 (q at the unperturbed parameters) held fixed
 *    and z_r = z(eps_r; parameters); log q_0 at a moved sample is computed
 *    here independently: the flows' inverse, q0's density written out, and
 *    q(z2|z1)'s network run at the unperturbed parameters;
 *  - stl at k = 1 gives a zero inference gradient for every sample when q is
 *    the exact posterior of a linear-Gaussian model (through IAF steps),
 *    where the elbo's does not;
 *  - stl and dreg keep iwae's generative gradient, with flows and two
 *    layers; dreg's inference gradient is iwae's in expectation. */
#include <math.h>

#include "common.h"
#include "model/stack.h"
#include "tasks/task_vae.h"
#include "tasks/vae/vae.h"

SUITE(vae_path);

#define HALF_LOG_2PI 0.91893853320467274178

static char *write_csv(const char *dir, int n)
{
    char *path = fl_strfmt("%s/lin.csv", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "x0,x1,x2,x3\n");
    fl_rng_key key = fl_rng_key_make(7, "vae_path");
    for (int i = 0; i < n; i++) {
        fl_real g[6];
        fl_rng_normal(key, (uint64_t)i, 0, 6, g);
        fprintf(f, "%.6f,%.6f,%.6f,%.6f\n", g[0] + 0.5 * g[4], -g[1] + 0.5 * g[5],
                0.3 * g[0] - g[1] + 0.5 * g[2], 0.8 * g[1] + 0.5 * g[3]);
    }
    fclose(f);
    return path;
}

static fl_experiment *model(fl_registry *r, const char *csv, const char *est, int k,
                            const char *extra)
{
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 5\n[data]\ntype = csv\npath = %s\n"
        "[encoder]\nlatent = 2\nhidden = 6\ncontext = %d\n[decoder]\nhidden = 5\n"
        "[posterior]\ntype = gaussian-diag\n[likelihood]\ntype = gaussian\nvariance = learned\n"
        "[estimator]\ntype = %s\nk = %d\n[train]\nbatch = 8\n[eval]\nbatch = 64\n%s",
        csv, strstr(extra, "[flow") ? 3 : 0, est, k, extra);
    fl_experiment *e = NULL;
    fl_status st = experiment_from_text(r, "path.ini", text, NULL, &e);
    free(text);
    cr_assert_eq(st, FL_OK, "%s", fl_err_msg());
    return e;
}

static int is_inference(const char *name)
{
    return strncmp(name, "encoder", 7) == 0 || strncmp(name, "posterior", 9) == 0 ||
           strncmp(name, "flow", 4) == 0;
}

/* log N(z; mu, exp(s')) summed over d, s' floored as gaussian.c does at
 * its default min_log_sigma = -10. */
static double log_diag(const fl_real *z, const fl_real *param, uint32_t d)
{
    const double m = -10;
    double lq = -(double)d * HALF_LOG_2PI;
    for (uint32_t i = 0; i < d; i++) {
        double s = param[d + i], sp = s >= m + 1 ? s : m + exp(s - m - 1);
        double u = (z[i] - param[i]) / exp(sp);
        lq += -0.5 * u * u - sp;
    }
    return lq;
}

/* The pieces of the surrogate at the current parameters (noise stream 42):
 * z1, z2 and log p(x, z) per row. */
typedef struct sample {
    fl_real *z1, *z2;
    double *lp;
} sample;

static void run(fl_experiment *e, const fl_real *x, uint32_t n, sample *s)
{
    fl_vae *v = fl_vae_of(e);
    double b[16];
    cr_assert_eq(fl_vae_bound(e, x, n, 42, 0, b), FL_OK, "%s", fl_err_msg());
    const uint32_t R = n * v->k;
    memcpy(s->z1, v->zT, (size_t)R * v->L1 * sizeof(fl_real));
    if (v->two) memcpy(s->z2, v->z2, (size_t)R * v->L2 * sizeof(fl_real));
    for (uint32_t r = 0; r < R; r++)
        s->lp[r] = (double)v->lpx[r] + v->lpz[r] + (v->two ? v->lpz1[r] : 0);
}

/* log q(z1, z2 | x) at the current parameters for the samples of s,
 * without the sampling path: the flows' inverse, then q0's density. */
static void log_q_at(fl_experiment *e, const fl_real *x, uint32_t n, const sample *s, double *lq)
{
    fl_vae *v = fl_vae_of(e);
    const uint32_t k = v->k, R = n * k, L1 = v->L1, W = v->P1 + v->H;
    sample tmp = { malloc((size_t)R * L1 * sizeof(fl_real)),
                   malloc((size_t)R * (v->L2 + 1) * sizeof(fl_real)), malloc(R * sizeof(double)) };
    run(e, x, n, &tmp); /* v->E, v->hrep at these parameters */
    fl_real *z0 = malloc((size_t)R * L1 * sizeof(fl_real)), *ld = calloc(R, sizeof(fl_real));
    if (v->flows->n)
        cr_assert_eq(fl_stack_inverse(v->flows, R, FL_MODE_EVAL, s->z1, v->H ? v->hrep : NULL, z0,
                                      ld),
                     FL_OK, "%s", fl_err_msg());
    else
        memcpy(z0, s->z1, (size_t)R * L1 * sizeof(fl_real));
    for (uint32_t r = 0; r < R; r++)
        lq[r] = log_diag(z0 + (size_t)r * L1, v->E + (size_t)(r / k) * W, L1) + ld[r];
    if (v->two) {
        fl_vae_net_forward(e, &v->enc2, R, s->z1, v->E2);
        for (uint32_t r = 0; r < R; r++)
            lq[r] += log_diag(s->z2 + (size_t)r * v->L2, v->E2 + (size_t)r * v->P2, v->L2);
    }
    free(z0);
    free(ld);
    free(tmp.z1);
    free(tmp.z2);
    free(tmp.lp);
}

static void check_surrogate(const char *est, int k, const char *what, const char *extra)
{
    char *dir = make_tmpdir();
    char *csv = write_csv(dir, 300);
    fl_registry *reg = load_builtin_plugins();
    fl_experiment *e = model(reg, csv, est, k, extra);
    fl_vae *v = fl_vae_of(e);
    fl_real *x;
    uint64_t nt;
    cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt), FL_OK);
    const uint32_t n = 5, R = n * (uint32_t)k;
    double b[16];
    fl_arena_zero_grad(&e->arena);
    cr_assert_eq(fl_vae_bound(e, x, n, 42, 1, b), FL_OK, "%s", fl_err_msg());
    const size_t total = e->arena.total;
    fl_real *g = malloc(total * sizeof *g);
    memcpy(g, e->arena.grad, total * sizeof *g);
    double *wp = malloc(R * sizeof(double)), *wq = malloc(R * sizeof(double));
    for (uint32_t r = 0; r < R; r++) { /* the loss's weights: -1/n and the estimator's */
        wp[r] = v->wp[r];
        wq[r] = v->wq[r];
    }
    sample s = { malloc((size_t)R * v->L1 * sizeof(fl_real)),
                 malloc((size_t)R * (v->L2 + 1) * sizeof(fl_real)), malloc(R * sizeof(double)) };
    double *lq = malloc(R * sizeof(double));
    const int dbl = sizeof(fl_real) == 8;
    const double h = dbl ? 1e-6 : 3e-3, tol = dbl ? 1e-6 : 3e-2;
    int checked = 0, bad = 0, inference = 0;
    double worst = 0;
    for (size_t p = 0; p < e->arena.n; p++) {
        const fl_param_rec *rec = &e->arena.p[p];
        if (rec->flags & FL_PARAM_STATE) continue;
        const int inf = is_inference(rec->name);
        for (size_t j = 0; j < rec->size; j += 1 + rec->size / 6) {
            fl_real *th = &e->arena.theta[rec->offset + j];
            const fl_real keep = *th;
            double f[2];
            for (int sg = 0; sg < 2; sg++) {
                *th = (fl_real)(keep + (sg ? -h : h));
                run(e, x, n, &s);
                *th = keep;
                if (inf) log_q_at(e, x, n, &s, lq); /* q held at the unperturbed parameters */
                double F = 0;
                for (uint32_t r = 0; r < R; r++) F += inf ? wq[r] * (s.lp[r] - lq[r]) : wp[r] * s.lp[r];
                f[sg] = F;
            }
            double fd = (f[0] - f[1]) / (2 * h), an = g[rec->offset + j];
            double err = fabs(fd - an) / (1 + fabs(fd));
            worst = fmax(worst, err);
            if (err > tol) {
                bad++;
                cr_log_error("%s %s[%zu]: analytic %.6g, finite differences %.6g", est, rec->name,
                             j, an, fd);
            }
            checked++;
            inference += inf;
        }
    }
    cr_log_info("%s k=%d %s: %d entries (%d inference), worst relative error %.2g", est, k, what,
                checked, inference, worst);
    cr_expect(inference > 10 && checked - inference > 10);
    cr_expect_eq(bad, 0, "%d of %d gradient entries disagree with the surrogate's differences", bad,
                 checked);
    free(s.z1);
    free(s.z2);
    free(s.lp);
    free(lq);
    free(wp);
    free(wq);
    free(g);
    fl_free(x);
    fl_experiment_free(e);
    fl_registry_free(reg);
    free(csv);
    remove_tree(dir);
}

#define IAF "[flow.1]\ntype = iaf\nrepeat = 2\npermute = reverse\nhidden = 8\n"
#define PLANAR "[flow.1]\ntype = planar\nrepeat = 2\n"
#define TWO "[encoder.2]\nlatent = 2\nhidden = 4\n[decoder.2]\nhidden = 4\n"

Test(vae_path, stl_diag_two_layers) { check_surrogate("stl", 3, "two", TWO); }
Test(vae_path, dreg_diag_two_layers) { check_surrogate("dreg", 3, "two", TWO); }
Test(vae_path, stl_iaf) { check_surrogate("stl", 3, "iaf", IAF); }
Test(vae_path, dreg_iaf) { check_surrogate("dreg", 3, "iaf", IAF); }
Test(vae_path, dreg_planar) { check_surrogate("dreg", 3, "planar", PLANAR); }
Test(vae_path, stl_planar_k1) { check_surrogate("stl", 1, "planar", PLANAR); }
Test(vae_path, dreg_affine_coupling)
{
    check_surrogate("dreg", 2, "affine-coupling", "[flow.1]\ntype = affine-coupling\nrepeat = 2\nhidden = 4\n");
}
Test(vae_path, dreg_maf) { check_surrogate("dreg", 2, "maf", "[flow.1]\ntype = maf\nhidden = 8\n"); }
Test(vae_path, dreg_iaf_two_layers) { check_surrogate("dreg", 3, "iaf+two", IAF TWO); }
Test(vae_path, stl_planar_two_layers) { check_surrogate("stl", 2, "planar+two", PLANAR TWO); }
