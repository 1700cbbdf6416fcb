/* test_vi.c - the vi task: targets (gradients against finite differences,
 * log Z against a grid integral), the training gradient and the STL path
 * gradient against finite differences of their surrogates, a short
 * training run that must fit a banana, KL >= 0, and pictures that put the
 * mass where the target has it. The estimators come from the test plugin
 * vi_estimators.so (t-elbo, t-stl), independent of plugins/estimators. */
#include <math.h>
#include <png.h>

#include "common.h"
#include "core/log.h"
#include "output/chart.h"
#include "output/plot.h"
#include "tasks/task_vi.h"

SUITE(vi);

#ifdef FL_REAL_DOUBLE
#define IS_DOUBLE 1
#else
#define IS_DOUBLE 0
#endif

static fl_registry *registry(void)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    char *p = fl_strfmt("%s/vi_estimators.so", test_env("FLOWLAB_TEST_DIR"));
    cr_assert_eq(fl_registry_load(r, p), FL_OK, "%s", fl_err_msg());
    free(p);
    return r;
}

/* A vi experiment on `target` with `flows` planar layers and estimator
 * `est` (k samples), plus --set style overrides. */
static fl_experiment *vi_exp(const fl_registry *r, const char *target, int flows, const char *est,
                             int k, const char *const *sets)
{
    char flow[96] = "", text[1024];
    if (flows) snprintf(flow, sizeof flow, "[flow.1]\ntype = planar\nrepeat = %d\n", flows);
    snprintf(text, sizeof text,
             "[experiment]\ntask = vi\nseed = 3\n[target]\ntype = %s\n"
             "[estimator]\ntype = %s\nk = %d\n%s"
             "[vi]\nelbo_samples = 4000\nlogz_samples = 20000\ngrid = 400\n"
             "[train]\nbatch = 4\nlr = 3e-3\neval_every = 0\n[eval]\nbatch = 2000\n",
             target, est, k, flow);
    fl_experiment *e = NULL;
    fl_status st = experiment_from_text(r, "vi-test.ini", text, sets, &e);
    cr_assert_eq(st, FL_OK, "%s", fl_err_msg());
    return e;
}

static const char *const targets[] = { "u1", "u2", "u3", "u4", "banana", "mixture" };
#define N_TARGETS (sizeof targets / sizeof *targets)

Test(vi, target_gradients_match_finite_differences)
{
    fl_registry *r = registry();
    const double h = IS_DOUBLE ? 1e-5 : 2e-3, tol = IS_DOUBLE ? 1e-6 : 2e-2;
    for (size_t t = 0; t < N_TARGETS; t++) {
        fl_experiment *e = vi_exp(r, targets[t], 0, "t-elbo", 1, NULL);
        const fl_vi *v = fl_vi_of(e);
        const fl_target_class *c = &v->target.rec->cls.target;
        const double *b = v->info.box;
        enum { N = 64 };
        fl_real z[2 * N], lp[N], one[N], g[2 * N], zp[2], lpp[2];
        fl_rng_key key = fl_rng_key_make(7, targets[t]);
        fl_rng_uniform(key, 0, 0, 2 * N, z);
        for (int i = 0; i < N; i++) {
            /* Points over the box and a little beyond (the shoulders). */
            z[2 * i] = (fl_real)(b[0] - 0.5 + (b[1] - b[0] + 1) * z[2 * i]);
            z[2 * i + 1] = (fl_real)(b[2] - 0.5 + (b[3] - b[2] + 1) * z[2 * i + 1]);
            one[i] = 1;
        }
        fl_target_args a = { N, z, lp, one, g };
        cr_assert_eq(c->log_prob(v->target.self, &a), FL_OK);
        double worst = 0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < 2; j++) {
                zp[0] = z[2 * i];
                zp[1] = z[2 * i + 1];
                zp[j] = (fl_real)(z[2 * i + j] + h);
                fl_target_args p1 = { 1, zp, lpp, NULL, NULL };
                c->log_prob(v->target.self, &p1);
                zp[j] = (fl_real)(z[2 * i + j] - h);
                fl_target_args p2 = { 1, zp, lpp + 1, NULL, NULL };
                c->log_prob(v->target.self, &p2);
                double fd = ((double)lpp[0] - lpp[1]) / (2 * h);
                double err = fabs(fd - g[2 * i + j]) / fmax(1, fmax(fabs(fd), fabs(g[2 * i + j])));
                cr_assert(isfinite(lp[i]), "%s: log p~ not finite", targets[t]);
                worst = fmax(worst, err);
            }
        cr_assert_lt(worst, tol, "%s: gradient vs finite differences, worst relative error %g",
                     targets[t], worst);
        fl_experiment_free(e);
    }
    fl_registry_free(r);
}

Test(vi, analytic_log_z_matches_grid_integral)
{
    fl_registry *r = registry();
    for (size_t t = 1; t < N_TARGETS; t++) { /* all but u1 have an analytic log Z */
        fl_experiment *e = vi_exp(r, targets[t], 0, "t-elbo", 1, NULL);
        double grid;
        cr_assert_eq(fl_vi_logz_grid(e, 1500, &grid), FL_OK, "%s", fl_err_msg());
        cr_assert(isfinite(fl_vi_of(e)->info.log_z), "%s has no analytic log Z", targets[t]);
        cr_assert_float_eq(grid, fl_vi_of(e)->info.log_z, 2e-3, "%s: grid %.6f, analytic %.6f",
                           targets[t], grid, fl_vi_of(e)->info.log_z);
        fl_experiment_free(e);
    }
    /* U1: no closed form; the grid converges (and matches PyTorch's 1.878). */
    fl_experiment *e = vi_exp(r, "u1", 0, "t-elbo", 1, NULL);
    cr_assert(isnan(fl_vi_of(e)->info.log_z));
    double g1, g2;
    cr_assert_eq(fl_vi_logz_grid(e, 1000, &g1), FL_OK);
    cr_assert_eq(fl_vi_logz_grid(e, 2000, &g2), FL_OK);
    cr_assert_float_eq(g1, g2, 1e-4, "grids 1000 and 2000: %.6f %.6f", g1, g2);
    cr_assert_float_eq(g2, 1.8775, 1e-3, "U1 log Z %.6f", g2);
    fl_experiment_free(e);
    fl_registry_free(r);
}

/* The loss of fl_vi_gradient, recomputed from scratch for the parameters
 * now in the arena, with the sample weights wq and the parameters of log q
 * (`frozen`, NULL = the live ones) held fixed:
 *   L = -(1/B) sum wq (log p~(z_T) - log q(z_T)),
 * log q through the inverses, so that with `frozen` set only the sample
 * path moves. Also returns each sample's log w at the live parameters. */
static double surrogate(fl_experiment *e, const fl_real *frozen, const double *wq, double *logw)
{
    const fl_vi *v = fl_vi_of(e);
    const uint32_t R = v->rows, B = e->batch;
    fl_real eps[2 * 64], z[2 * 64], ld[64], lp[64], lq[64], x[2 * 64];
    cr_assert_leq(R, 64);
    fl_rng_normal(fl_rng_key_make(e->seed, "vi.noise"), 5, 0, 2 * R, eps);
    memset(ld, 0, sizeof ld);
    const fl_real *zt;
    cr_assert_eq(fl_stack_forward(fl_vi_of(e)->flows, R, FL_MODE_TRAIN, eps, NULL, ld, &zt), FL_OK);
    memcpy(z, zt, 2 * R * sizeof(fl_real));
    cr_assert_eq(fl_vi_target_logp(e, z, R, lp), FL_OK);
    fl_real *live = NULL;
    if (frozen) {
        live = fl_alloc(e->arena.total * sizeof(fl_real));
        memcpy(live, e->arena.theta, e->arena.total * sizeof(fl_real));
        memcpy(e->arena.theta, frozen, e->arena.total * sizeof(fl_real));
    }
    memset(lq, 0, sizeof lq);
    cr_assert_eq(fl_stack_inverse(fl_vi_of(e)->flows, R, FL_MODE_EVAL, z, NULL, x, lq), FL_OK);
    if (live) {
        memcpy(e->arena.theta, live, e->arena.total * sizeof(fl_real));
        fl_free(live);
    }
    double L = 0;
    for (uint32_t i = 0; i < R; i++) {
        double q = -0.5 * ((double)x[2 * i] * x[2 * i] + (double)x[2 * i + 1] * x[2 * i + 1]) -
                   1.8378770664093453 + lq[i];
        if (logw) logw[i] = (double)lp[i] - q;
        L += wq[i] * ((double)lp[i] - q);
    }
    return -L / B;
}

/* <grad, v> from fl_vi_gradient against the central difference of the
 * surrogate along random directions v of the parameters. */
static void check_gradient(const char *est, int k, int detach)
{
    fl_registry *r = registry();
    static const char *const sets[] = { "train.batch=3", NULL };
    fl_experiment *e = vi_exp(r, "banana", 3, est, k, sets);
    cr_assert_eq(fl_vi_of(e)->detach, detach);
    const uint32_t R = fl_vi_of(e)->rows;
    const size_t T = e->arena.total;
    /* Move off the initialisation so every term matters. */
    fl_rng_key key = fl_rng_key_make(11, "perturb");
    fl_real *noise = fl_alloc(T * sizeof(fl_real)), *theta0 = fl_alloc(T * sizeof(fl_real));
    fl_rng_normal(key, 0, 0, T, noise);
    for (size_t i = 0; i < T; i++) e->arena.theta[i] += (fl_real)(0.2 * noise[i]);
    memcpy(theta0, e->arena.theta, T * sizeof(fl_real));

    double bound, logw[64], wq[64], ones[64];
    for (uint32_t i = 0; i < R; i++) ones[i] = 1;
    cr_assert_eq(fl_vi_gradient(e, 5, 1.0, &bound), FL_OK, "%s", fl_err_msg());
    /* The estimator's weights at theta0: 1/k (elbo) or the softmax (stl). */
    surrogate(e, NULL, ones, logw);
    for (uint32_t b = 0; b < e->batch; b++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < k; j++) m = fmax(m, logw[b * k + j]);
        for (int j = 0; j < k; j++) s += exp(logw[b * k + j] - m);
        for (int j = 0; j < k; j++)
            wq[b * k + j] = detach ? exp(logw[b * k + j] - m) / s : 1.0 / k;
    }
    const double h = IS_DOUBLE ? 1e-5 : 2e-3, tol = IS_DOUBLE ? 1e-6 : 2e-2;
    double worst = 0;
    for (int dir = 0; dir < 6; dir++) {
        fl_rng_normal(key, (uint64_t)dir + 1, 0, T, noise);
        double nn = 0, gv = 0;
        for (size_t i = 0; i < T; i++) nn += (double)noise[i] * noise[i];
        for (size_t i = 0; i < T; i++) noise[i] = (fl_real)(noise[i] / sqrt(nn));
        for (size_t i = 0; i < T; i++) gv += (double)e->arena.grad[i] * noise[i];
        for (size_t i = 0; i < T; i++) e->arena.theta[i] = theta0[i] + (fl_real)h * noise[i];
        double lp = surrogate(e, detach ? theta0 : NULL, wq, NULL);
        for (size_t i = 0; i < T; i++) e->arena.theta[i] = theta0[i] - (fl_real)h * noise[i];
        double lm = surrogate(e, detach ? theta0 : NULL, wq, NULL);
        memcpy(e->arena.theta, theta0, T * sizeof(fl_real));
        double fd = (lp - lm) / (2 * h);
        double err = fabs(fd - gv) / fmax(1, fmax(fabs(fd), fabs(gv)));
        worst = fmax(worst, err);
        cr_assert_lt(err, tol, "%s direction %d: finite difference %.8g, gradient %.8g", est, dir,
                     fd, gv);
    }
    cr_log_info("%s: worst relative error %g", est, worst);
    fl_free(noise);
    fl_free(theta0);
    fl_experiment_free(e);
    fl_registry_free(r);
}

Test(vi, elbo_gradient_matches_finite_differences) { check_gradient("t-elbo", 2, 0); }

Test(vi, stl_path_gradient_matches_finite_differences) { check_gradient("t-stl", 3, 1); }

/* The path score a_T = grad log q(z_T) against central differences of
 * log q through the inverses. */
Test(vi, path_score_matches_finite_differences)
{
    fl_registry *r = registry();
    static const char *const sets[] = { "train.batch=8", NULL };
    fl_experiment *e = vi_exp(r, "u1", 4, "t-stl", 1, sets);
    fl_real eps[16], a0[16], score[16], ld[8], z[16], zp[2], x[2], lq[1];
    fl_rng_normal(fl_rng_key_make(1, "score"), 0, 0, 16, eps);
    for (int i = 0; i < 16; i++) a0[i] = -eps[i];
    memset(ld, 0, sizeof ld);
    const fl_real *zt;
    cr_assert_eq(fl_stack_forward(fl_vi_of(e)->flows, 8, FL_MODE_TRAIN, eps, NULL, ld, &zt), FL_OK);
    memcpy(z, zt, sizeof z);
    cr_assert_eq(fl_pathgrad_score(&fl_vi_of(e)->pg, 8, FL_MODE_TRAIN, a0, score), FL_OK, "%s",
                 fl_err_msg());
    const double h = IS_DOUBLE ? 1e-5 : 2e-3, tol = IS_DOUBLE ? 1e-6 : 2e-2;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 2; j++) {
            double v[2];
            for (int s = 0; s < 2; s++) {
                zp[0] = z[2 * i];
                zp[1] = z[2 * i + 1];
                zp[j] = (fl_real)(z[2 * i + j] + (s ? -h : h));
                lq[0] = 0;
                cr_assert_eq(fl_stack_inverse(fl_vi_of(e)->flows, 1, FL_MODE_EVAL, zp, NULL, x, lq), FL_OK);
                v[s] = -0.5 * ((double)x[0] * x[0] + (double)x[1] * x[1]) + lq[0];
            }
            double fd = (v[0] - v[1]) / (2 * h);
            cr_assert_float_eq(fd, score[2 * i + j], tol * fmax(1, fabs(fd)),
                               "row %d coordinate %d: finite difference %g, path score %g", i, j, fd,
                               (double)score[2 * i + j]);
        }
    fl_experiment_free(e);
    fl_registry_free(r);
}

Test(vi, trains_a_banana_and_kl_is_nonnegative, .timeout = 120)
{
    fl_registry *r = registry();
    static const char *const sets[] = { "train.batch=64", "train.steps=1500", "train.lr=1e-2",
                                        "vi.anneal=true", NULL };
    fl_experiment *e = vi_exp(r, "banana", 8, "t-elbo", 1, sets);
    fl_vi_result before, res;
    cr_assert_eq(fl_vi_evaluate(e, NAN, NULL, &before), FL_OK, "%s", fl_err_msg());
    cr_assert_str_eq(before.logz_ref_how, "analytic");
    cr_assert_geq(before.kl, -3 * before.kl_se, "untrained KL %g +- %g", before.kl, before.kl_se);
    char *dir = make_tmpdir();
    cr_assert_eq(fl_vi_train(e, dir, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_log_info("banana: ELBO %.4f -> %.4f, log Z %.4f, KL %.4f, IS log Z %.4f (ESS %.0f)",
                before.elbo, res.elbo, res.logz_ref, res.kl, res.logz_is, res.ess);
    cr_assert_gt(res.elbo, 1.40, "ELBO %g (log Z = %g)", res.elbo, res.logz_ref);
    cr_assert_lt(res.kl, 0.08, "KL %g", res.kl);
    cr_assert_geq(res.kl, -3 * res.kl_se, "KL %g +- %g is negative", res.kl, res.kl_se);
    /* IS is consistent: log Z_IS close to the truth once q fits. */
    cr_assert_float_eq(res.logz_is, res.logz_ref, 0.05, "IS log Z %g vs %g", res.logz_is,
                       res.logz_ref);
    cr_assert_gt(res.ess, 1000);
    /* The run directory: metrics rows end with the final numbers. */
    char *p = fl_strfmt("%s/metrics.csv", dir), *text = NULL;
    size_t n;
    cr_assert_eq(fl_read_file(p, &text, &n), FL_OK);
    assert_contains(text, "step,beta,train_bound,elbo,elbo_se,logz_is,logz_ess,logz_ref,kl");
    assert_contains(text, "\n1500,1.0000,");
    free(text);
    free(p);
    p = fl_strfmt("%s/result.json", dir);
    cr_assert(access(p, F_OK) != 0, "fl_vi_train wrote result.json (cmd_run writes it last)");
    cr_assert_eq(fl_vi_write_result(e, dir, &res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_read_file(p, &text, &n), FL_OK);
    assert_contains(text, "\"logz_ref_method\": \"analytic\"");
    free(text);
    free(p);

    /* Pictures: q's mass centre on the grid agrees with the target's. */
    cr_assert_eq(fl_plot_vi(e, dir), FL_OK, "%s", fl_err_msg());
    enum { G = 200 };
    double *tg = malloc(G * G * sizeof *tg), *q = malloc(G * G * sizeof *q);
    int exact;
    cr_assert_eq(fl_vi_plot_grids(e, tg, q, &exact), FL_OK);
    cr_assert(exact);
    double ct[2] = { 0, 0 }, cq[2] = { 0, 0 }, mt = 0, mq = 0;
    for (int j = 0; j < G; j++)
        for (int i = 0; i < G; i++) {
            mt += tg[j * G + i], mq += q[j * G + i];
            ct[0] += i * tg[j * G + i], ct[1] += j * tg[j * G + i];
            cq[0] += i * q[j * G + i], cq[1] += j * q[j * G + i];
        }
    for (int a = 0; a < 2; a++)
        cr_assert_float_eq(ct[a] / mt, cq[a] / mq, 4, "mass centre axis %d: target %g, q %g cells",
                           a, ct[a] / mt, cq[a] / mq);
    free(tg);
    free(q);
    remove_tree(dir);
    fl_experiment_free(e);
    fl_registry_free(r);
}

/* Reads an 8-bit RGB PNG; the caller frees the result. */
static uint8_t *read_png(const char *path, uint32_t *w, uint32_t *h)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&img, path), "cannot read %s", path);
    img.format = PNG_FORMAT_RGB;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(img));
    cr_assert(png_image_finish_read(&img, NULL, buf, 0, NULL), "cannot decode %s", path);
    *w = img.width;
    *h = img.height;
    return buf;
}

/* U1's picture: two bright arcs at z1 = +-2 on the ring |z| = 2, dark at
 * the origin and in the corners, the left and right halves mirror images. */
Test(vi, u1_target_picture_has_its_mass_on_the_arcs)
{
    fl_registry *r = registry();
    static const char *const sets[] = { "train.steps=0", "vi.logz_samples=2000",
                                        "vi.elbo_samples=2000", NULL };
    fl_experiment *e = vi_exp(r, "u1", 2, "t-elbo", 1, sets);
    char *dir = make_tmpdir();
    fl_vi_result res;
    cr_assert_eq(fl_vi_train(e, dir, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_plot_vi(e, dir), FL_OK, "%s", fl_err_msg());
    char *p = fl_strfmt("%s/target.png", dir);
    uint32_t w, h;
    uint8_t *img = read_png(p, &w, &h);
    cr_assert(w == FL_MAP_W && h == FL_MAP_H);
    /* Luminance-weighted centre of each half, in data coordinates, inside
     * the plot square less its frame (box [-4, 4]^2: square pixel
     * x = (z1 + 4) * S / 8, row = (4 - z2) * S / 8, S = FL_MAP_SIDE). */
    const double ppu = FL_MAP_SIDE / 8.0;
    double sx[2] = { 0, 0 }, sy[2] = { 0, 0 }, sw[2] = { 0, 0 }, on = 0, off = 0;
    for (uint32_t y = 1; y + 1 < FL_MAP_SIDE; y++)
        for (uint32_t x = 1; x + 1 < FL_MAP_SIDE; x++) {
            const uint8_t *px = img + 3 * ((size_t)(y + FL_MAP_Y0) * w + x + FL_MAP_X0);
            double l = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2] - 40; /* viridis' floor */
            if (l < 0) l = 0;
            int half = x >= FL_MAP_SIDE / 2;
            double z1 = (x + 0.5) / ppu - 4, z2 = 4 - (y + 0.5) / ppu;
            sx[half] += l * z1, sy[half] += l * z2, sw[half] += l;
            if (l > 120) { /* bright: on the ring, or counted against it */
                if (fabs(sqrt(z1 * z1 + z2 * z2) - 2) < 0.6) on++;
                else off++;
            }
        }
    for (int half = 0; half < 2; half++) {
        double cx = sx[half] / sw[half], cy = sy[half] / sw[half];
        cr_assert_float_eq(cx, half ? 1.8 : -1.8, 0.35, "half %d: mass centre z1 = %g", half, cx);
        cr_assert_float_eq(cy, 0, 0.1, "half %d: mass centre z2 = %g", half, cy);
    }
    cr_assert_float_eq(sw[0], sw[1], 0.02 * sw[0], "the halves differ: %g vs %g", sw[0], sw[1]);
    cr_assert_gt(on, 500, "only %g bright pixels near the ring", on);
    cr_assert_eq(off, 0, "%g bright pixels off the ring", off);
    const uint8_t *c0 = img + 3 * ((size_t)(FL_MAP_Y0 + FL_MAP_SIDE / 2) * w + FL_MAP_X0 + FL_MAP_SIDE / 2);
    const uint8_t *corner = img + 3 * ((size_t)(FL_MAP_Y0 + 2) * w + FL_MAP_X0 + 2);
    cr_assert(c0[0] == 68 && c0[1] == 1 && c0[2] == 84, "the origin is not at the colour floor");
    cr_assert(corner[0] == 68 && corner[1] == 1 && corner[2] == 84, "a corner is not dark");
    free(img);
    free(p);
    for (const char *f = "density.png\0samples.png\0curves.png\0"; *f; f += strlen(f) + 1) {
        p = fl_strfmt("%s/%s", dir, f);
        cr_assert_eq(access(p, R_OK), 0, "%s missing", f);
        free(p);
    }
    remove_tree(dir);
    fl_experiment_free(e);
    fl_registry_free(r);
}

Test(vi, config_errors_name_the_section)
{
    fl_registry *r = registry();
    fl_experiment *e = NULL;
    fl_status st = experiment_from_text(r, "bad.ini",
                                        "[experiment]\ntask = vi\n[target]\ntype = u9\n", NULL, &e);
    cr_assert_neq(st, FL_OK);
    assert_contains(fl_err_msg(), "bad.ini");
    assert_contains(fl_err_msg(), "no such target");
    st = experiment_from_text(r, "bad.ini",
                              "[experiment]\ntask = vi\n[target]\ntype = u2\nedge = -1\n", NULL, &e);
    cr_assert_neq(st, FL_OK);
    assert_contains(fl_err_msg(), "edge");
    st = experiment_from_text(r, "bad.ini",
                              "[experiment]\ntask = vi\n[target]\ntype = u1\n[vi]\nanneal = maybe\n",
                              NULL, &e);
    cr_assert_neq(st, FL_OK);
    assert_contains(fl_err_msg(), "anneal");
    fl_registry_free(r);
}

/* A run killed after its last checkpoint and resumed: nothing left to
 * train, the first run's results and metrics.csv; steps = 0 evaluates the
 * untrained posterior. */
Test(vi, a_run_resumed_at_its_last_step_gives_its_results, .timeout = 120)
{
    fl_registry *r = registry();
    static const char *const sets[] = { "train.batch=16", "train.steps=30",
                                        "train.eval_every=20", "train.ema=0.9",
                                        "vi.elbo_samples=500", "vi.logz_samples=500", NULL };
    char *dir = make_tmpdir();
    fl_vi_result a, b;
    fl_experiment *e = vi_exp(r, "banana", 2, "t-elbo", 1, sets);
    cr_assert_eq(fl_vi_train(e, dir, 0, &a), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    char *mp = fl_strfmt("%s/metrics.csv", dir), *before = NULL, *after = NULL;
    size_t len = 0;
    cr_assert_eq(fl_read_file(mp, &before, &len), FL_OK);
    e = vi_exp(r, "banana", 2, "t-elbo", 1, sets);
    cr_assert_eq(fl_vi_train(e, dir, 1, &b), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    cr_expect_eq(b.steps, 30);
    cr_expect_eq(a.elbo, b.elbo, "%.17g against %.17g", a.elbo, b.elbo);
    cr_expect_eq(a.logz_is, b.logz_is);
    cr_expect_eq(a.kl, b.kl);
    cr_expect_neq(b.elbo, 0);
    cr_expect_leq(fabs(a.train_bound - b.train_bound), 5e-7, "%.9g against %.9g",
                  a.train_bound, b.train_bound);
    cr_assert_eq(fl_read_file(mp, &after, &len), FL_OK);
    cr_expect_str_eq(after, before);
    free(before);
    free(after);
    remove_tree(dir);

    static const char *const zero[] = { "train.steps=0", "vi.elbo_samples=500",
                                        "vi.logz_samples=500", NULL };
    dir = make_tmpdir();
    fl_vi_result u, z;
    e = vi_exp(r, "banana", 2, "t-elbo", 1, zero);
    cr_assert_eq(fl_vi_evaluate(e, NAN, NULL, &u), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_vi_train(e, dir, 0, &z), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(z.steps, 0);
    cr_expect_eq(z.elbo, u.elbo, "%.17g against the untrained %.17g", z.elbo, u.elbo);
    fl_experiment_free(e);
    free(mp);
    mp = fl_strfmt("%s/metrics.csv", dir);
    cr_assert_eq(fl_read_file(mp, &after, &len), FL_OK);
    assert_contains(after, "train_seconds\n0,1.0000,,");
    free(after);
    free(mp);
    remove_tree(dir);
    fl_registry_free(r);
}

/* Issue 13: a vi run whose flow yields NaN stops at the step, naming the
 * layer; one at lr = 10 stops as diverged (or non-finite), naming the step,
 * rather than finishing with a meaningless ELBO. */
Test(vi, a_non_finite_layer_and_a_divergence_stop_the_run, .timeout = 120)
{
    fl_registry *r = registry();
    char *p = fl_strfmt("%s/nan_flow.so", test_env("FLOWLAB_TEST_DIR"));
    cr_assert_eq(fl_registry_load(r, p), FL_OK, "%s", fl_err_msg());
    free(p);
    static const char *const nan_at_3[] = { "train.batch=32", "train.steps=10",
                                            "flow.2.type=nan-shift", "flow.2.train_call=3",
                                            "flow.2.row=5", "vi.elbo_samples=500",
                                            "vi.logz_samples=500", NULL };
    fl_vi_result res;
    fl_experiment *e = vi_exp(r, "u1", 2, "t-elbo", 1, nan_at_3);
    cr_expect_eq(fl_vi_train(e, NULL, 0, &res), FL_ERR_NUMERIC);
    assert_contains(fl_err_msg(), "[flow.2] nan-shift: non-finite output at step 3, row 5 (nan)");
    fl_experiment_free(e);

    /* the evaluation (the ELBO's samples through the flows) */
    static const char *const nan_eval[] = { "flow.2.type=nan-shift", "flow.2.eval=true",
                                            "flow.2.row=5", "vi.elbo_samples=500",
                                            "vi.logz_samples=500", NULL };
    e = vi_exp(r, "u1", 2, "t-elbo", 1, nan_eval);
    cr_expect_eq(fl_vi_evaluate(e, NAN, NULL, &res), FL_ERR_NUMERIC);
    assert_contains(fl_err_msg(), "[flow.2] nan-shift: non-finite output in evaluation, row 5");
    fl_experiment_free(e);

    static const char *const lr10[] = { "train.batch=32", "train.steps=300", "train.lr=10",
                                        "vi.elbo_samples=500", "vi.logz_samples=500", NULL };
    e = vi_exp(r, "u1", 8, "t-elbo", 1, lr10);
    cr_expect_eq(fl_vi_train(e, NULL, 0, &res), FL_ERR_NUMERIC, "lr = 10 finished: ELBO %g",
                 res.elbo);
    assert_contains(fl_err_msg(), "step ");
    fl_experiment_free(e);
    fl_registry_free(r);
}
