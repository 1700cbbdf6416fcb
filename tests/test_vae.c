/* test_vae.c - the vae task: exact bounds on a linear-Gaussian model,
 * estimator gradients against finite differences, and a tiny VAE that
 * learns. No MNIST needed: data are written as CSV into a temp dir. */
#include <math.h>
#include <omp.h>

#include "common.h"
#include "tasks/task_vae.h"
#include "tasks/task_vae.h"
#include "compute/logmeanexp.h"

SUITE(vae);

#define D 4
#define L 2
#define SIGMA2 0.25

/* The true linear-Gaussian model: x = z W + b + sigma n. */
static const double W_true[L][D] = { { 1.0, -0.5, 0.3, 0.8 }, { 0.2, 0.9, -0.7, 0.4 } };
static const double b_true[D] = { 0.5, -1.0, 0.25, 0.0 };

static char *write_ppca_csv(const char *dir, int n)
{
    char *path = fl_strfmt("%s/ppca.csv", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "x0,x1,x2,x3\n");
    fl_rng_key key = fl_rng_key_make(7, "ppca");
    for (int i = 0; i < n; i++) {
        fl_real g[L + D];
        fl_rng_normal(key, (uint64_t)i, 0, L + D, g);
        for (int d = 0; d < D; d++) {
            double v = b_true[d] + sqrt(SIGMA2) * g[L + d];
            for (int l = 0; l < L; l++) v += g[l] * W_true[l][d];
            fprintf(f, d + 1 < D ? "%.6f," : "%.6f\n", v);
        }
    }
    fclose(f);
    return path;
}

static fl_experiment *ppca_model(fl_registry *r, const char *csv, const char *posterior,
                                 const char *est, int k, const char *train)
{
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 3\n[data]\ntype = csv\npath = %s\nstandardize = false\n"
        "valid_fraction = 0.1\ntest_fraction = 0.1\n"
        "[encoder]\nlatent = %d\nhidden =\n[decoder]\nhidden =\n[posterior]\ntype = %s\n"
        "[likelihood]\ntype = gaussian\nvariance = fixed\nlog_var = %.17g\n"
        "[estimator]\ntype = %s\nk = %d\n[train]\nbatch = 50\n%s\n[eval]\nbatch = 5000\n",
        csv, L, posterior, log(SIGMA2), est, k, train ? train : "steps = 1");
    fl_experiment *e = NULL;
    fl_status st = experiment_from_text(r, "ppca.ini", text, NULL, &e);
    free(text);
    cr_assert_eq(st, FL_OK, "building the PPCA model failed: %s", fl_err_msg());
    return e;
}

/* Sets the decoder to the true W, b. */
static void set_true_decoder(fl_experiment *e)
{
    const fl_param_rec *w = fl_arena_find(&e->arena, "decoder.net.W0");
    const fl_param_rec *b = fl_arena_find(&e->arena, "decoder.net.b0");
    cr_assert(w && b && w->size == L * D && b->size == D);
    for (int l = 0; l < L; l++)
        for (int d = 0; d < D; d++) e->arena.theta[w->offset + l * D + d] = (fl_real)W_true[l][d];
    for (int d = 0; d < D; d++) e->arena.theta[b->offset + d] = (fl_real)b_true[d];
}

/* Exact log N(x; b, W^T W + s2 I) with the model's current decoder. */
static double exact_logp(const fl_experiment *e, const fl_real *x)
{
    const fl_param_rec *w = fl_arena_find(&e->arena, "decoder.net.W0");
    const fl_param_rec *b = fl_arena_find(&e->arena, "decoder.net.b0");
    double C[D][D], r[D];
    for (int i = 0; i < D; i++) {
        r[i] = x[i] - e->arena.theta[b->offset + i];
        for (int j = 0; j < D; j++) {
            double s = i == j ? SIGMA2 : 0;
            for (int l = 0; l < L; l++)
                s += (double)e->arena.theta[w->offset + l * D + i] *
                     e->arena.theta[w->offset + l * D + j];
            C[i][j] = s;
        }
    }
    /* Cholesky */
    double Lc[D][D] = { { 0 } }, logdet = 0;
    for (int i = 0; i < D; i++)
        for (int j = 0; j <= i; j++) {
            double s = C[i][j];
            for (int q = 0; q < j; q++) s -= Lc[i][q] * Lc[j][q];
            if (i == j) {
                Lc[i][i] = sqrt(s);
                logdet += 2 * log(Lc[i][i]);
            } else {
                Lc[i][j] = s / Lc[j][j];
            }
        }
    double y[D], q = 0;
    for (int i = 0; i < D; i++) {
        double s = r[i];
        for (int j = 0; j < i; j++) s -= Lc[i][j] * y[j];
        y[i] = s / Lc[i][i];
        q += y[i] * y[i];
    }
    return -0.5 * (q + logdet + D * log(2 * 3.14159265358979323846));
}

/* Mean over `n` points and `draws` noise draws of the bound, and the
 * standard error of that mean over draws. */
static void mc_bound(fl_experiment *e, const fl_real *x, uint32_t n, int draws, double *mean,
                     double *se)
{
    double *b = malloc(n * sizeof *b), s = 0, s2 = 0;
    for (int t = 0; t < draws; t++) {
        cr_assert_eq(fl_vae_bound(e, x, n, 1000 + (uint64_t)t * n, 0, b), FL_OK, "%s",
                     fl_err_msg());
        double m = 0;
        for (uint32_t i = 0; i < n; i++) m += b[i];
        m /= n;
        s += m;
        s2 += m * m;
    }
    free(b);
    *mean = s / draws;
    double var = (s2 - s * s / draws) / (draws - 1);
    *se = sqrt(var > 0 ? var / draws : 0);
}

Test(vae, iwae_bounds_are_ordered_and_approach_the_exact_likelihood)
{
    char *dir = make_tmpdir();
    char *csv = write_ppca_csv(dir, 1000);
    fl_registry *r = load_builtin_plugins();
    const int ks[] = { 1, 5, 50, 1000 };
    double m[4], se[4], logp = 0;
    fl_real *x = NULL;
    uint64_t nt = 0;
    const uint32_t n = 20;
    for (int i = 0; i < 4; i++) {
        fl_experiment *e = ppca_model(r, csv, "gaussian-diag", "iwae", ks[i], NULL);
        set_true_decoder(e);
        if (!x) {
            cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt), FL_OK);
            for (uint32_t j = 0; j < n; j++) logp += exact_logp(e, x + (size_t)j * D);
            logp /= n;
        }
        mc_bound(e, x, n, ks[i] >= 1000 ? 10 : 200, &m[i], &se[i]);
        fl_experiment_free(e);
    }
    cr_log_info("log p(x) %.4f; L1 %.4f+-%.4f L5 %.4f+-%.4f L50 %.4f+-%.4f L1000 %.4f+-%.4f",
                logp, m[0], se[0], m[1], se[1], m[2], se[2], m[3], se[3]);
    for (int i = 0; i + 1 < 4; i++)
        cr_expect(m[i] <= m[i + 1] + 3 * (se[i] + se[i + 1]), "L%d = %.4f > L%d = %.4f", ks[i],
                  m[i], ks[i + 1], m[i + 1]);
    for (int i = 0; i < 4; i++)
        cr_expect(m[i] <= logp + 3 * se[i] + 1e-3, "L%d = %.4f above log p(x) = %.4f", ks[i],
                  m[i], logp);
    /* a random encoder leaves a real gap at k = 1 that importance sampling closes */
    cr_expect(logp - m[0] > 0.5, "the untrained posterior should leave a gap (%.4f)", logp - m[0]);
    cr_expect(logp - m[3] < 0.1 * (logp - m[0]), "IWAE-1000 gap %.4f vs ELBO gap %.4f",
              logp - m[3], logp - m[0]);
    fl_free(x);
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}

Test(vae, full_covariance_posterior_fitted_by_elbo_reaches_the_likelihood)
{
    char *dir = make_tmpdir();
    char *csv = write_ppca_csv(dir, 1000);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = ppca_model(r, csv, "gaussian-full", "elbo", 1,
                                  "steps = 3000\nlr = 3e-3\neval_every = 0\n");
    fl_vae_result res;
    cr_assert_eq(fl_vae_train(e, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
    fl_real *x;
    uint64_t nt;
    cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt), FL_OK);
    const uint32_t n = 50;
    double logp = 0, m, se;
    for (uint32_t j = 0; j < n; j++) logp += exact_logp(e, x + (size_t)j * D);
    logp /= n;
    mc_bound(e, x, n, 200, &m, &se);
    cr_log_info("after ELBO training: log p(x) %.4f, ELBO %.4f +- %.4f", logp, m, se);
    cr_expect(m <= logp + 3 * se + 1e-3, "ELBO %.4f above log p(x) %.4f", m, logp);
    cr_expect(logp - m < 0.02, "ELBO gap %.4f: the full-covariance posterior should be exact",
              logp - m);
    fl_free(x);
    fl_experiment_free(e);
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}

/* Gradient of -mean bound (fixed noise) against central differences. */
static void check_gradient(const char *est, int k, const char *posterior, const char *extra)
{
    char *dir = make_tmpdir();
    char *csv = write_ppca_csv(dir, 300);
    fl_registry *r = load_builtin_plugins();
    char *more = fl_strfmt("[encoder]\nlatent = 2\nhidden = 6\ncontext = %d\n[decoder]\nhidden = 5\n%s",
                           extra && strstr(extra, "[flow") ? 3 : 0, extra ? extra : "");
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 5\n[data]\ntype = csv\npath = %s\n"
        "[posterior]\ntype = %s\n[likelihood]\ntype = gaussian\nvariance = learned\n"
        "[estimator]\ntype = %s\nk = %d\n[train]\nbatch = 8\n[eval]\nbatch = 64\n%s",
        csv, posterior, est, k, more);
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "grad.ini", text, NULL, &e), FL_OK, "%s", fl_err_msg());
    fl_real *x;
    uint64_t nt;
    cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt), FL_OK);
    const uint32_t n = 6;
    double b[8];
    fl_arena_zero_grad(&e->arena);
    cr_assert_eq(fl_vae_bound(e, x, n, 42, 1, b), FL_OK, "%s", fl_err_msg());
    size_t total = e->arena.total;
    fl_real *g = malloc(total * sizeof *g);
    memcpy(g, e->arena.grad, total * sizeof *g);
    const int dbl = sizeof(fl_real) == 8;
    const double h = dbl ? 1e-6 : 3e-3, tol = dbl ? 1e-6 : 3e-2;
    int checked = 0, bad = 0;
    double worst = 0;
    for (size_t s = 0; s < e->arena.n; s++) {
        const fl_param_rec *p = &e->arena.p[s];
        if (p->flags & FL_PARAM_STATE) continue;
        for (size_t j = 0; j < p->size; j += 1 + p->size / 7) {
            fl_real *th = &e->arena.theta[p->offset + j];
            fl_real keep = *th;
            double f[2];
            for (int sg = 0; sg < 2; sg++) {
                *th = (fl_real)(keep + (sg ? -h : h));
                cr_assert_eq(fl_vae_bound(e, x, n, 42, 0, b), FL_OK);
                double m = 0;
                for (uint32_t i = 0; i < n; i++) m += b[i];
                f[sg] = -m / n;
            }
            *th = keep;
            double fd = (f[0] - f[1]) / (2 * h), an = g[p->offset + j];
            double err = fabs(fd - an) / (1 + fabs(fd));
            if (err > worst) worst = err;
            if (err > tol) {
                bad++;
                cr_log_error("%s %s[%zu]: analytic %.6g, finite differences %.6g", est, p->name,
                             j, an, fd);
            }
            checked++;
        }
    }
    cr_log_info("%s k=%d %s%s: %d gradient entries, worst relative error %.2g", est, k, posterior,
                extra ? " + extra sections" : "", checked, worst);
    cr_expect(checked > 20);
    cr_expect_eq(bad, 0, "%d of %d gradient entries disagree with finite differences", bad,
                 checked);
    free(g);
    fl_free(x);
    fl_experiment_free(e);
    fl_registry_free(r);
    free(text);
    free(more);
    free(csv);
    remove_tree(dir);
}

Test(vae, elbo_gradient_matches_finite_differences) { check_gradient("elbo", 3, "gaussian-diag", NULL); }
Test(vae, iwae_gradient_matches_finite_differences) { check_gradient("iwae", 5, "gaussian-diag", NULL); }
Test(vae, iwae_gradient_full_covariance) { check_gradient("iwae", 4, "gaussian-full", NULL); }
Test(vae, iwae_gradient_with_iaf_posterior_and_context)
{
    check_gradient("iwae", 3, "gaussian-diag",
                   "[flow.1]\ntype = iaf\nrepeat = 2\npermute = reverse\nhidden = 8\n");
}

Test(vae, iwae_gradient_with_two_stochastic_layers)
{
    check_gradient("iwae", 3, "gaussian-diag",
                   "[encoder.2]\nlatent = 2\nhidden = 4\n[decoder.2]\nhidden = 4\n");
}

/* STL and DReG: the generative (decoder) gradient is IWAE's; the inference
 * gradient differs from IWAE's only by dropping the score term of log q. */
Test(vae, stl_and_dreg_share_the_generative_gradient_of_iwae)
{
    char *dir = make_tmpdir();
    char *csv = write_ppca_csv(dir, 300);
    fl_registry *r = load_builtin_plugins();
    const char *ests[] = { "iwae", "stl", "dreg" };
    fl_real *grads[3];
    size_t total = 0;
    const fl_param_rec *dec = NULL, *enc = NULL;
    for (int i = 0; i < 3; i++) {
        char *text = fl_strfmt(
            "[experiment]\ntask = vae\nseed = 5\n[data]\ntype = csv\npath = %s\n"
            "[encoder]\nlatent = 2\nhidden = 6\n[decoder]\nhidden = 5\n"
            "[likelihood]\ntype = gaussian\n[estimator]\ntype = %s\nk = 5\n[train]\nbatch = 8\n"
            "[eval]\nbatch = 64\n",
            csv, ests[i]);
        fl_experiment *e = NULL;
        cr_assert_eq(experiment_from_text(r, "g.ini", text, NULL, &e), FL_OK, "%s", fl_err_msg());
        fl_real *x;
        uint64_t nt;
        cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt), FL_OK);
        double b[8];
        fl_arena_zero_grad(&e->arena);
        cr_assert_eq(fl_vae_bound(e, x, 6, 9, 1, b), FL_OK, "%s", fl_err_msg());
        total = e->arena.total;
        grads[i] = malloc(total * sizeof(fl_real));
        memcpy(grads[i], e->arena.grad, total * sizeof(fl_real));
        dec = fl_arena_find(&e->arena, "decoder.net.W1");
        enc = fl_arena_find(&e->arena, "encoder.net.W1");
        cr_assert(dec && enc);
        size_t doff = dec->offset, dsz = dec->size, eoff = enc->offset, esz = enc->size;
        if (i > 0) {
            double dd = 0, de = 0;
            for (size_t j = 0; j < dsz; j++) dd = fmax(dd, fabs(grads[i][doff + j] - grads[0][doff + j]));
            for (size_t j = 0; j < esz; j++) de = fmax(de, fabs(grads[i][eoff + j] - grads[0][eoff + j]));
            cr_expect(dd <= 1e-5, "%s: decoder gradient differs from iwae's by %g", ests[i], dd);
            cr_expect(de > 1e-6, "%s: encoder gradient identical to iwae's", ests[i]);
        }
        fl_free(x);
        fl_experiment_free(e);
        free(text);
    }
    for (int i = 0; i < 3; i++) free(grads[i]);
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}

/* Binary 6x6 images of random horizontal and vertical bars. */
static char *write_bars_csv(const char *dir, int n)
{
    char *path = fl_strfmt("%s/bars.csv", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int j = 0; j < 36; j++) fprintf(f, j ? ",p%d" : "p%d", j);
    fprintf(f, "\n");
    fl_rng_key key = fl_rng_key_make(11, "bars");
    for (int i = 0; i < n; i++) {
        fl_real u[13];
        fl_rng_uniform(key, (uint64_t)i, 0, 13, u);
        int horiz = u[12] < 0.5;
        for (int p = 0; p < 36; p++) {
            int row = p / 6, col = p % 6;
            int on = horiz ? u[row] < 0.3 : u[6 + col] < 0.3;
            fprintf(f, p < 35 ? "%d," : "%d\n", on);
        }
    }
    fclose(f);
    return path;
}

/* The per-point noise is keyed by point and sample, and the decoder's
 * likelihood is evaluated on row blocks as they are computed, cut where
 * the data point changes: so the [eval] batch (how rows are chunked, and
 * where blocks and points meet) changes no number. */
Test(vae, evaluation_does_not_depend_on_the_eval_batch)
{
    char *dir = make_tmpdir();
    char *csv = write_bars_csv(dir, 200);
    fl_registry *r = load_builtin_plugins();
    const char *const batches[] = { "eval.batch = 4000", "eval.batch = 700", "eval.batch = 130" };
    fl_vae_eval ev[3];
    for (int i = 0; i < 3; i++) {
        const char *const sets[] = { batches[i], NULL };
        char *text = fl_strfmt(
            "[experiment]\ntask = vae\nseed = 3\n[data]\ntype = csv\npath = %s\n"
            "standardize = false\n[encoder]\nlatent = 4\nhidden = 32\n[decoder]\nhidden = 32\n"
            "[likelihood]\ntype = bernoulli\n[estimator]\ntype = iwae\nk = 5\n[train]\n"
            "batch = 20\n",
            csv);
        fl_experiment *e = NULL;
        cr_assert_eq(experiment_from_text(r, "bars.ini", text, sets, &e), FL_OK, "%s",
                     fl_err_msg());
        /* k = 300 > 130: a point's samples also span chunks */
        cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 300, 0, NULL, &ev[i]), FL_OK, "%s",
                     fl_err_msg());
        fl_experiment_free(e);
        free(text);
    }
    /* Bit for bit with the host's own product kernel (float, AVX-512). The
     * BLAS products of the other builds may round differently for other
     * tile shapes: there, to 1e-12. */
#if defined(FL_REAL_DOUBLE) || !defined(__AVX512F__)
    const double tol = 1e-12;
#else
    const double tol = 0;
#endif
#define CLOSE(a, b) (fabs((a) - (b)) <= tol * fabs(b))
    for (int i = 1; i < 3; i++) {
        cr_expect(CLOSE(ev[i].ll, ev[0].ll) && CLOSE(ev[i].elbo, ev[0].elbo) &&
                      CLOSE(ev[i].ess, ev[0].ess) && CLOSE(ev[i].kl, ev[0].kl),
                  "%s: log p %.17g ELBO %.17g ESS %.17g, against %.17g %.17g %.17g", batches[i],
                  ev[i].ll, ev[i].elbo, ev[i].ess, ev[0].ll, ev[0].elbo, ev[0].ess);
    }
#undef CLOSE
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}

/* Trains the bars VAE with an IAF posterior, nets wide enough for the MLP
 * service to thread (and to run its pipelined backward), for a few steps
 * with `threads` threads; returns a copy of theta. */
static fl_real *train_wide(fl_registry *r, const char *csv, int threads, size_t *total)
{
    omp_set_num_threads(threads);
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 5\n[data]\ntype = csv\npath = %s\nstandardize = false\n"
        "[encoder]\nlatent = 8\nhidden = 256,256\ncontext = 8\n[decoder]\nhidden = 256,256\n"
        "[likelihood]\ntype = bernoulli\n[estimator]\ntype = elbo\nk = 1\n"
        "[flow.1]\ntype = iaf\nrepeat = 2\npermute = reverse\nhidden = 256,256\n"
        "[train]\nbatch = 100\nsteps = 6\neval_every = 0\n[eval]\nat_end = false\n",
        csv);
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "wide.ini", text, NULL, &e), FL_OK, "%s", fl_err_msg());
    fl_vae_result res;
    cr_assert_eq(fl_vae_train(e, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
    *total = e->arena.total;
    fl_real *theta = malloc(*total * sizeof(fl_real));
    memcpy(theta, e->arena.theta, *total * sizeof(fl_real));
    fl_experiment_free(e);
    free(text);
    return theta;
}

Test(vae, training_is_bit_identical_with_1_and_2_threads, .timeout = 120)
{
    char *dir = make_tmpdir();
    char *csv = write_bars_csv(dir, 400);
    fl_registry *r = load_builtin_plugins();
    size_t n1, n2;
    fl_real *t1 = train_wide(r, csv, 1, &n1);
    fl_real *t2 = train_wide(r, csv, 2, &n2);
    cr_assert_eq(n1, n2);
    size_t diff = 0;
    for (size_t i = 0; i < n1; i++) diff += memcmp(&t1[i], &t2[i], sizeof(fl_real)) != 0;
    cr_assert_eq(diff, 0, "%zu of %zu parameters differ between 1 and 2 threads", diff, n1);
    free(t1);
    free(t2);
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}

Test(vae, log_mean_exp_counts_zero_weights_and_does_not_overflow)
{
    fl_lme a;
    fl_lme_init(&a);
    const double lw[] = { -INFINITY, 1000.0, 1000.0 + log(3.0) };
    for (int j = 0; j < 3; j++) fl_lme_add(&a, lw[j]);
    /* weights 0, e^1000, 3 e^1000: mean 4/3 e^1000, ESS 16 / 10 */
    cr_assert(fabs(fl_lme_log_mean(&a, 3) - (1000.0 + log(4.0 / 3.0))) < 1e-12, "%.17g",
              fl_lme_log_mean(&a, 3));
    cr_assert(fabs(fl_lme_ess(&a) - 1.6) < 1e-12, "%.17g", fl_lme_ess(&a));
    fl_lme_init(&a);
    fl_lme_add(&a, -INFINITY);
    fl_lme_add(&a, -INFINITY);
    cr_assert(fl_lme_log_mean(&a, 2) == -INFINITY);
    cr_assert(fl_lme_ess(&a) == 0);
}

Test(vae, a_tiny_vae_learns_bars, .timeout = 120)
{
    char *dir = make_tmpdir();
    char *csv = write_bars_csv(dir, 400);
    fl_registry *r = load_builtin_plugins();
    const char *const sets[] = { NULL };
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 1\n[data]\ntype = csv\npath = %s\nstandardize = false\n"
        "[encoder]\nlatent = 4\nhidden = 32\n[decoder]\nhidden = 32\n[likelihood]\n"
        "type = bernoulli\n[estimator]\ntype = iwae\nk = 5\n[train]\nbatch = 20\nsteps = 3000\n"
        "lr = 3e-3\neval_every = 0\n[eval]\nbatch = 2000\nk = 200\nvalid_k = 20\n",
        csv);
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "bars.ini", text, sets, &e), FL_OK, "%s", fl_err_msg());
    fl_vae_eval before, after;
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 200, 0, NULL, &before), FL_OK, "%s",
                 fl_err_msg());
    fl_vae_result res;
    cr_assert_eq(fl_vae_train(e, dir, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 200, 0, dir, &after), FL_OK, "%s",
                 fl_err_msg());
    cr_log_info("bars: log p(x) %.3f -> %.3f, ELBO %.3f -> %.3f, active units %u", before.ll,
                after.ll, before.elbo, after.elbo, after.active_units);
    /* 36 fair coins would be 24.9 nats; bars carry about 6-7 bits */
    cr_expect(after.ll > -12.0, "IWAE-200 log-likelihood %.3f after training", after.ll);
    cr_expect(after.ll > before.ll + 5, "no real improvement: %.3f -> %.3f", before.ll, after.ll);
    cr_expect(after.elbo <= after.ll + 0.05, "ELBO %.3f above the IWAE-200 estimate %.3f",
              after.elbo, after.ll);
    cr_expect(after.active_units >= 1);
    cr_expect(after.ess >= 1 && after.ess <= 200);
    char *ej = fl_strfmt("%s/eval.json", dir);
    cr_expect(access(ej, R_OK) == 0);
    free(ej);
    fl_experiment_free(e);
    fl_registry_free(r);
    free(text);
    free(csv);
    remove_tree(dir);
}

/* A small bars VAE with [train] `train` (e.g. "steps = 40"). */
static fl_experiment *small_bars(fl_registry *r, const char *csv, const char *train)
{
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 2\n[data]\ntype = csv\npath = %s\nstandardize = false\n"
        "[encoder]\nlatent = 3\nhidden = 16\n[decoder]\nhidden = 16\n[likelihood]\n"
        "type = bernoulli\n[estimator]\ntype = iwae\nk = 3\n[train]\nbatch = 20\nlr = 3e-3\n"
        "ema = 0.9\n%s\n[eval]\nbatch = 2000\nk = 20\nvalid_k = 10\n",
        csv, train);
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "small.ini", text, NULL, &e), FL_OK, "%s",
                 fl_err_msg());
    free(text);
    return e;
}

/* A run killed after its last checkpoint (saved before the final test
 * evaluation) and resumed: nothing left to train, the same results. */
Test(vae, a_run_resumed_at_its_last_step_gives_its_results, .timeout = 120)
{
    char *dir = make_tmpdir();
    char *csv = write_bars_csv(dir, 200);
    fl_registry *r = load_builtin_plugins();
    const char *train = "steps = 40\neval_every = 15";
    fl_vae_result a, b;
    fl_vae_eval ea, eb;
    fl_experiment *e = small_bars(r, csv, train);
    cr_assert_eq(fl_vae_train(e, dir, 0, &a), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 20, 0, NULL, &ea), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    char *mp = fl_strfmt("%s/metrics.csv", dir), *before = NULL, *after = NULL;
    size_t len;
    cr_assert_eq(fl_read_file(mp, &before, &len), FL_OK);
    e = small_bars(r, csv, train);
    cr_assert_eq(fl_vae_train(e, dir, 1, &b), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 20, 0, NULL, &eb), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    cr_expect_eq(b.steps, 40);
    cr_expect_eq(a.valid_elbo, b.valid_elbo, "%.17g against %.17g", a.valid_elbo, b.valid_elbo);
    cr_expect_eq(a.valid_iwae, b.valid_iwae, "%.17g against %.17g", a.valid_iwae, b.valid_iwae);
    cr_expect_neq(b.valid_iwae, 0);
    /* the training bound and time come from metrics.csv (6 and 3 decimals) */
    cr_expect_leq(fabs(a.train_bound - b.train_bound), 5e-7, "%.9g against %.9g",
                  a.train_bound, b.train_bound);
    cr_expect_leq(fabs(a.seconds - b.seconds), 5e-4, "%.6f against %.6f", a.seconds, b.seconds);
    cr_expect_eq(ea.ll, eb.ll, "the model left for evaluation differs: %.17g against %.17g",
                 ea.ll, eb.ll);
    cr_expect_eq(ea.elbo, eb.elbo);
    /* metrics.csv is unchanged: its last row was already there */
    cr_assert_eq(fl_read_file(mp, &after, &len), FL_OK);
    cr_expect_str_eq(after, before);
    free(before);
    free(after);
    free(mp);
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}

/* steps = 0 evaluates the untrained model: a metrics.csv row at step 0,
 * and the pictures can be drawn from it. */
Test(vae, zero_steps_evaluate_the_untrained_model, .timeout = 120)
{
    char *dir = make_tmpdir();
    char *csv = write_bars_csv(dir, 200);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = small_bars(r, csv, "steps = 0");
    fl_vae_result res;
    fl_vae_eval ev;
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_VALID, 10, 0, NULL, &ev), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(fl_vae_train(e, dir, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(res.steps, 0);
    cr_expect(isfinite(res.valid_iwae) && res.valid_iwae < 0, "valid IWAE %g", res.valid_iwae);
    char *mp = fl_strfmt("%s/metrics.csv", dir), *text = NULL;
    size_t len;
    cr_assert_eq(fl_read_file(mp, &text, &len), FL_OK, "%s", fl_err_msg());
    assert_contains(text, "step,train_bound,valid_elbo,valid_iwae,lr,train_seconds\n0,,");
    cr_assert_eq(fl_plot_vae(e, dir), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_vae_write_result(e, dir, &res, NULL), FL_OK, "%s", fl_err_msg());
    free(text);
    free(mp);
    fl_experiment_free(e);
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}

static char *slurp(const char *dir, const char *name)
{
    char *p = fl_strfmt("%s/%s", dir, name), *text = NULL;
    size_t len;
    fl_status st = fl_read_file(p, &text, &len);
    free(p);
    return st == FL_OK ? text : NULL;
}

/* An evaluation with another split, k or n than the run's own writes files
 * named after them and leaves eval.json (the numbers of result.json). */
Test(vae, other_evaluations_do_not_overwrite_the_runs_own, .timeout = 120)
{
    char *dir = make_tmpdir();
    char *csv = write_bars_csv(dir, 200);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = small_bars(r, csv, "steps = 10");
    fl_vae_eval own, other;
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 20, 0, dir, &own), FL_OK, "%s",
                 fl_err_msg());
    char *json = slurp(dir, "eval.json"), *points = slurp(dir, "eval_points.csv");
    cr_assert(json && points, "the run's own evaluation wrote no eval.json / eval_points.csv");
    assert_contains(json, "\"split\": \"test\"");
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_VALID, 3, 5, dir, &other), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 7, 0, dir, &other), FL_OK, "%s",
                 fl_err_msg());
    char *json2 = slurp(dir, "eval.json"), *points2 = slurp(dir, "eval_points.csv");
    cr_expect_str_eq(json2, json);
    cr_expect_str_eq(points2, points);
    char *valid = slurp(dir, "eval-valid-k3-n5.json");
    cr_assert_not_null(valid, "no eval-valid-k3-n5.json");
    assert_contains(valid, "\"split\": \"valid\"");
    assert_contains(valid, "\"points\": 5,");
    char *vp = slurp(dir, "eval-valid-k3-n5_points.csv");
    char *vu = slurp(dir, "eval-valid-k3-n5_units.csv");
    cr_expect(vp && vu, "no eval-valid-k3-n5_points.csv / _units.csv");
    char name[96];
    fl_vae_eval_stem(e, FL_SPLIT_TEST, 7, other.n, name, sizeof name);
    cr_expect_str_neq(name, "eval");
    char *tk = fl_strfmt("%s.json", name), *t7 = slurp(dir, tk);
    cr_expect_not_null(t7, "no %s", tk);
    fl_vae_eval_stem(e, FL_SPLIT_TEST, 20, own.n, name, sizeof name);
    cr_expect_str_eq(name, "eval");
    free(tk);
    free(t7);
    free(vp);
    free(vu);
    free(valid);
    free(json);
    free(json2);
    free(points);
    free(points2);
    fl_experiment_free(e);
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}

/* More hidden widths than an MLP may have is an error naming the file,
 * line, section and key, not a silently shorter network. */
Test(vae, too_many_hidden_layers_are_an_error_at_their_line)
{
    char *dir = make_tmpdir();
    char *csv = write_bars_csv(dir, 50);
    fl_registry *r = load_builtin_plugins();
    fl_buf widths = { 0 };
    for (int i = 0; i < 65; i++) fl_buf_printf(&widths, i ? ",2" : "2");
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 2\n[data]\ntype = csv\npath = %s\nstandardize = false\n"
        "[encoder]\nlatent = 3\nhidden = 4\n[decoder]\nhidden = %s\n[likelihood]\n"
        "type = bernoulli\n[train]\nsteps = 1\nbatch = 10\n",
        csv, widths.data);
    fl_experiment *e = NULL;
    cr_assert_neq(experiment_from_text(r, "wide.ini", text, NULL, &e), FL_OK,
                  "65 hidden widths were accepted");
    assert_contains(fl_err_msg(), "wide.ini:12: [decoder] hidden: 65 hidden layers; at most 64");
    fl_experiment_free(e);
    /* 64 are fine */
    widths.len -= 2;
    widths.data[widths.len] = 0;
    free(text);
    text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 2\n[data]\ntype = csv\npath = %s\nstandardize = false\n"
        "[encoder]\nlatent = 3\nhidden = 4\n[decoder]\nhidden = %s\n[likelihood]\n"
        "type = bernoulli\n[train]\nsteps = 1\nbatch = 10\n",
        csv, widths.data);
    e = NULL;
    cr_assert_eq(experiment_from_text(r, "wide.ini", text, NULL, &e), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    fl_buf_free(&widths);
    free(text);
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}

/* The units file (posterior-mean variances, active units, KL per
 * dimension) of a bars VAE with `model` sections evaluated with
 * [eval] batch = `batch`; training batch 2, k = 1, so the buffers hold
 * max(2, batch) rows. */
static char *units_with_eval_batch(fl_registry *r, const char *csv, const char *model, int batch,
                                   unsigned *active)
{
    char *dir = make_tmpdir();
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 4\n[data]\ntype = csv\npath = %s\nstandardize = false\n"
        "%s\n[decoder]\nhidden = 8\n[likelihood]\ntype = bernoulli\n[estimator]\ntype = elbo\n"
        "k = 1\n[train]\nbatch = 2\nsteps = 3\n[eval]\nbatch = %d\n",
        csv, model, batch);
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "units.ini", text, NULL, &e), FL_OK, "%s", fl_err_msg());
    fl_vae_eval ev;
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 5, 12, dir, &ev), FL_OK, "%s", fl_err_msg());
    *active = ev.active_units;
    char stem[96];
    fl_vae_eval_stem(e, FL_SPLIT_TEST, 5, ev.n, stem, sizeof stem);
    char *name = fl_strfmt("%s_units.csv", stem), *units = slurp(dir, name);
    cr_assert_not_null(units, "no %s", name);
    free(name);
    free(text);
    fl_experiment_free(e);
    remove_tree(dir);
    return units;
}

/* Issue 13, item 1: one point needs more rows than [eval] batch holds (100
 * posterior samples through an IAF for its mean; latent + 1 = 13 rows for
 * the KL per dimension without flows). They are split over chunks: no
 * write past the buffers (ASan), and the same numbers as with a batch that
 * holds them. */
Test(vae, a_point_needing_more_rows_than_the_eval_batch_is_chunked, .timeout = 120)
{
    char *dir = make_tmpdir();
    char *csv = write_bars_csv(dir, 100);
    fl_registry *r = load_builtin_plugins();
    const char *const models[] = {
        "[encoder]\nlatent = 3\nhidden = 8\ncontext = 2\n"
        "[flow.1]\ntype = iaf\nrepeat = 2\nhidden = 8\n",
        "[encoder]\nlatent = 12\nhidden = 8\n",
    };
    for (int i = 0; i < 2; i++) {
        unsigned a_small, a_big;
        char *small = units_with_eval_batch(r, csv, models[i], 6, &a_small);
        char *big = units_with_eval_batch(r, csv, models[i], 4000, &a_big);
        cr_expect_str_eq(small, big, "model %d: batch 6 gives\n%s\nbatch 4000 gives\n%s", i,
                         small, big);
        cr_expect_eq(a_small, a_big);
        free(small);
        free(big);
    }
    fl_registry_free(r);
    free(csv);
    remove_tree(dir);
}
