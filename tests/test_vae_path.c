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

/* The decoder's gradient (generative) of stl and dreg is iwae's, with
 * flows and two layers; the inference gradients differ. Same noise. */
static void check_generative(const char *extra)
{
    char *dir = make_tmpdir();
    char *csv = write_csv(dir, 200);
    fl_registry *reg = load_builtin_plugins();
    const char *ests[] = { "iwae", "stl", "dreg" };
    fl_real *g[3];
    for (int i = 0; i < 3; i++) {
        fl_experiment *e = model(reg, csv, ests[i], 4, extra);
        fl_real *x;
        uint64_t nt;
        cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt), FL_OK);
        double b[8];
        fl_arena_zero_grad(&e->arena);
        cr_assert_eq(fl_vae_bound(e, x, 6, 9, 1, b), FL_OK, "%s", fl_err_msg());
        g[i] = malloc(e->arena.total * sizeof(fl_real));
        memcpy(g[i], e->arena.grad, e->arena.total * sizeof(fl_real));
        if (i > 0) {
            double dgen = 0, dinf = 0;
            for (size_t p = 0; p < e->arena.n; p++) {
                const fl_param_rec *rec = &e->arena.p[p];
                for (size_t j = 0; j < rec->size; j++) {
                    double d = fabs((double)g[i][rec->offset + j] - g[0][rec->offset + j]);
                    if (is_inference(rec->name)) dinf = fmax(dinf, d);
                    else dgen = fmax(dgen, d);
                }
            }
            cr_expect(dgen <= 1e-5, "%s: generative gradient differs from iwae's by %g", ests[i],
                      dgen);
            cr_expect(dinf > 1e-5, "%s: inference gradient is iwae's", ests[i]);
        }
        fl_free(x);
        fl_experiment_free(e);
    }
    for (int i = 0; i < 3; i++) free(g[i]);
    fl_registry_free(reg);
    free(csv);
    remove_tree(dir);
}

Test(vae_path, generative_gradient_is_iwaes_with_iaf) { check_generative(IAF); }
Test(vae_path, generative_gradient_is_iwaes_with_two_layers) { check_generative(PLANAR TWO); }

/* x = z W + b + N(0, s2 I) with orthogonal rows of W: the exact posterior
 * is a diagonal Gaussian, N(M^-1 W (x - b), s2 M^-1) with M = W W^T + s2 I
 * diagonal. The encoder (linear) is set so that q0 followed by two affine
 * IAF steps (constant scales: the MADEs' weights at 0, the s biases not)
 * is that posterior exactly. Then log p(x, z) - log q(z|x) = log p(x) for
 * every z, so stl's inference gradient is 0 for every sample (Roeder et
 * al.'s "sticking the landing"), while the elbo's is the score term, 0 only
 * in expectation. */
#define XD 2
static const double Wx[2][XD] = { { 1.0, 0.0 }, { 0.0, 2.0 } }, bx[XD] = { 0.5, -1.0 };
#define S2 0.25

static fl_experiment *exact_model(fl_registry *reg, const char *csv, const char *est, int k)
{
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 5\n[data]\ntype = csv\npath = %s\nstandardize = false\n"
        "[encoder]\nlatent = 2\nhidden =\ncontext = 2\n[decoder]\nhidden =\n"
        "[posterior]\ntype = gaussian-diag\n[likelihood]\ntype = gaussian\nvariance = fixed\n"
        "log_var = %.17g\n[estimator]\ntype = %s\nk = %d\n[train]\nbatch = 8\n[eval]\nbatch = 64\n"
        "[flow.1]\ntype = iaf\ngate = affine\nrepeat = 2\nhidden = 4\n",
        csv, log(S2), est, k);
    fl_experiment *e = NULL;
    fl_status st = experiment_from_text(reg, "exact.ini", text, NULL, &e);
    free(text);
    cr_assert_eq(st, FL_OK, "%s", fl_err_msg());
    fl_vae *v = fl_vae_of(e);
    fl_real *th = e->arena.theta;
    /* flows: every weight and bias 0 (m = 0, s = 0) but the last layer's s
     * biases (the MADE's last parameter slice: 2 x dim, m then s) */
    for (size_t p = 0; p < e->arena.n; p++) {
        const fl_param_rec *rec = &e->arena.p[p];
        if (strncmp(rec->name, "flow", 4) != 0) continue;
        for (size_t j = 0; j < rec->size; j++) th[rec->offset + j] = 0;
        if (rec->size == 4 && strstr(rec->name, ".b")) {
            th[rec->offset + 2] = 0.3f;
            th[rec->offset + 3] = -0.4f;
        }
    }
    /* the flows' scale per dimension, measured */
    fl_real z0[2] = { 1, 1 }, c[2] = { 0, 0 }, ld = 0;
    const fl_real *out;
    cr_assert_eq(fl_stack_forward(v->flows, 1, FL_MODE_EVAL, z0, c, &ld, &out), FL_OK);
    double scale[2] = { out[0], out[1] };
    cr_assert(fabs(scale[0] - 1) > 0.1 && fabs(scale[1] - 1) > 0.1, "the flows are the identity");
    const fl_param_rec *dw = fl_arena_find(&e->arena, "decoder.net.W0");
    const fl_param_rec *db = fl_arena_find(&e->arena, "decoder.net.b0");
    const fl_param_rec *ew = fl_arena_find(&e->arena, "encoder.net.W0");
    const fl_param_rec *eb = fl_arena_find(&e->arena, "encoder.net.b0");
    cr_assert(dw && db && ew && eb && ew->size == XD * 6);
    const uint32_t out_w = 6; /* mu (2), log sigma (2), h (2) */
    for (int l = 0; l < 2; l++) {
        double M = S2;
        for (int d = 0; d < XD; d++) {
            th[dw->offset + l * XD + d] = (fl_real)Wx[l][d];
            M += Wx[l][d] * Wx[l][d];
        }
        double bias = 0;
        for (int d = 0; d < XD; d++) {
            th[ew->offset + d * out_w + l] = (fl_real)(Wx[l][d] / M / scale[l]);
            th[ew->offset + d * out_w + 2 + l] = 0;
            th[ew->offset + d * out_w + 4 + l] = 0;
            bias -= Wx[l][d] * bx[d] / M;
        }
        th[eb->offset + l] = (fl_real)(bias / scale[l]);
        th[eb->offset + 2 + l] = (fl_real)log(sqrt(S2 / M) / fabs(scale[l]));
        th[eb->offset + 4 + l] = 0;
    }
    for (int d = 0; d < XD; d++) th[db->offset + d] = (fl_real)bx[d];
    return e;
}

/* Max |inference gradient entry| over `draws` noise draws, and the root
 * mean square of those entries. */
static void inference_spread(fl_experiment *e, const fl_real *x, int draws, double *maxabs,
                             double *rms)
{
    double m = 0, s2 = 0;
    size_t cnt = 0;
    double b[8];
    for (int t = 0; t < draws; t++) {
        fl_arena_zero_grad(&e->arena);
        cr_assert_eq(fl_vae_bound(e, x, 4, 100 + (uint64_t)t * 4, 1, b), FL_OK, "%s",
                     fl_err_msg());
        for (size_t p = 0; p < e->arena.n; p++) {
            const fl_param_rec *rec = &e->arena.p[p];
            if (!is_inference(rec->name)) continue;
            for (size_t j = 0; j < rec->size; j++) {
                double gv = e->arena.grad[rec->offset + j];
                m = fmax(m, fabs(gv));
                s2 += gv * gv;
                cnt++;
            }
        }
    }
    *maxabs = m;
    *rms = sqrt(s2 / (double)cnt);
}

Test(vae_path, stl_sticks_the_landing_through_iaf_at_the_exact_posterior)
{
    char *dir = make_tmpdir();
    char *csv = fl_strfmt("%s/exact.csv", dir);
    FILE *f = fopen(csv, "w");
    cr_assert_not_null(f);
    fprintf(f, "x0,x1\n");
    fl_rng_key key = fl_rng_key_make(3, "exact");
    for (int i = 0; i < 60; i++) {
        fl_real g[4];
        fl_rng_normal(key, (uint64_t)i, 0, 4, g);
        fprintf(f, "%.6f,%.6f\n", g[0] * Wx[0][0] + g[1] * Wx[1][0] + bx[0] + 0.5 * g[2],
                g[0] * Wx[0][1] + g[1] * Wx[1][1] + bx[1] + 0.5 * g[3]);
    }
    fclose(f);
    fl_registry *reg = load_builtin_plugins();
    const char *ests[] = { "elbo", "stl", "dreg" };
    const int ks[] = { 1, 1, 4 };
    double mx[3], rms[3];
    for (int i = 0; i < 3; i++) {
        fl_experiment *e = exact_model(reg, csv, ests[i], ks[i]);
        fl_real *x;
        uint64_t nt;
        cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt), FL_OK);
        /* q is exact: every log weight of a point is log p(x) */
        double b[8];
        cr_assert_eq(fl_vae_bound(e, x, 4, 7, 0, b), FL_OK);
        const fl_vae *v = fl_vae_of(e);
        for (uint32_t r = 1; r < (uint32_t)ks[i]; r++)
            cr_assert(fabs(v->logw[r] - v->logw[0]) < 1e-4, "q is not exact: log w %g vs %g",
                      (double)v->logw[r], (double)v->logw[0]);
        inference_spread(e, x, 20, &mx[i], &rms[i]);
        cr_log_info("%s k=%d at the exact posterior: inference gradient max |g| %.3g, rms %.3g",
                    ests[i], ks[i], mx[i], rms[i]);
        fl_free(x);
        fl_experiment_free(e);
    }
    const double tiny = sizeof(fl_real) == 8 ? 1e-10 : 1e-4;
    cr_expect(rms[0] > 0.05, "the elbo's inference gradient should vary (rms %g)", rms[0]);
    cr_expect(mx[1] < tiny * rms[0], "stl k=1: inference gradient %g, not 0", mx[1]);
    cr_expect(mx[2] < tiny * rms[0], "dreg k=4: inference gradient %g, not 0", mx[2]);
    fl_registry_free(reg);
    free(csv);
    remove_tree(dir);
}
