/* test_gradvar.c - gradient signal-to-noise ratios of VAE estimators
 * (framework/gradvar.c) on tiny VAEs built from CSV data: the per-draw
 * gradient against finite differences (batch split into calls), the
 * summaries against a direct two-pass computation, what the estimators
 * share exactly, which are unbiased for which gradient, and Rainforth et
 * al.'s k-dependence of IWAE's SNRs. */
#include <math.h>

#include "common.h"
#include "tasks/gradvar.h"
#include "sweep/report.h"
#include "tasks/task_vae.h"

SUITE(gradvar);

/* Binary 6x6 images of random horizontal or vertical bars. */
static char *write_bars(const char *dir, int n)
{
    char *path = fl_strfmt("%s/bars.csv", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int j = 0; j < 36; j++) fprintf(f, j ? ",p%d" : "p%d", j);
    fprintf(f, "\n");
    fl_rng_key key = fl_rng_key_make(23, "gradvar-bars");
    for (int i = 0; i < n; i++) {
        fl_real u[13];
        fl_rng_uniform(key, (uint64_t)i, 0, 13, u);
        const int horiz = u[12] < 0.5;
        for (int p = 0; p < 36; p++) {
            const int on = horiz ? u[p / 6] < 0.3 : u[6 + p % 6] < 0.3;
            fprintf(f, p < 35 ? "%d," : "%d\n", on);
        }
    }
    fclose(f);
    return path;
}

typedef struct fixture {
    char *dir, *csv;
    fl_registry *r;
    fl_experiment *e;
    fl_real *x;     /* the test split */
    uint64_t nx;
} fixture;

/* A bars VAE (latent 3, one hidden layer of 12) with `est` x k; `more` is
 * appended to the INI text (e.g. [train] keys, a [flow.1]). */
static void setup_enc(fixture *f, const char *est, int k, int batch, int eval_batch,
                      const char *more, const char *enc)
{
    f->dir = make_tmpdir();
    f->csv = write_bars(f->dir, 400);
    f->r = load_builtin_plugins();
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 4\n[data]\ntype = csv\npath = %s\nstandardize = false\n"
        "[encoder]\nlatent = 3\nhidden = 12\n%s[decoder]\nhidden = 12\n[likelihood]\n"
        "type = bernoulli\n[estimator]\ntype = %s\nk = %d\n[train]\nbatch = %d\n"
        "eval_every = 0\n%s\n[eval]\nbatch = %d\nk = 50\nvalid_k = 5\n",
        f->csv, enc ? enc : "", est, k, batch, more ? more : "steps = 1", eval_batch);
    f->e = NULL;
    cr_assert_eq(experiment_from_text(f->r, "bars.ini", text, NULL, &f->e), FL_OK, "%s",
                 fl_err_msg());
    free(text);
    cr_assert_eq(fl_experiment_eval_split(f->e, FL_SPLIT_TEST, &f->x, &f->nx), FL_OK);
}

static void setup(fixture *f, const char *est, int k, int batch, int eval_batch, const char *more)
{
    setup_enc(f, est, k, batch, eval_batch, more, NULL);
}

static void teardown(fixture *f)
{
    fl_free(f->x);
    fl_experiment_free(f->e);
    fl_registry_free(f->r);
    free(f->csv);
    remove_tree(f->dir);
}

static void use(fixture *f, const char *est, uint32_t k)
{
    cr_assert_eq(fl_vae_use_estimator(f->e, est, k), FL_OK, "%s k=%u: %s", est, k, fl_err_msg());
}

/* `draws` per-draw gradients (draws x total, row t = draw t). */
static double *per_draw(fixture *f, uint32_t n, uint32_t draws, double *bounds)
{
    const size_t total = f->e->arena.total;
    double *g = malloc((size_t)draws * total * sizeof *g);
    cr_assert_not_null(g);
    for (uint32_t t = 0; t < draws; t++)
        cr_assert_eq(fl_gradvar_draw(f->e, f->x, n, t, g + (size_t)t * total,
                                     bounds ? &bounds[t] : NULL, NULL, NULL),
                     FL_OK, "%s", fl_err_msg());
    return g;
}

/* The gradient of the mean bound over n points, split into calls (rows of
 * the model: 8, k = 3, so 2 points per call and 3 calls for 5 points),
 * against central differences of the mean bound with the same noise. */
Test(gradvar, a_draw_is_the_gradient_of_the_mean_bound_over_calls)
{
    fixture f;
    setup(&f, "iwae", 3, 2, 8, NULL);
    cr_assert_eq(fl_vae_max_rows(f.e), 8);
    const uint32_t n = 5;
    const size_t total = f.e->arena.total;
    double *g = malloc(total * sizeof *g), *scratch = malloc(total * sizeof *scratch), b0;
    cr_assert_eq(fl_gradvar_draw(f.e, f.x, n, 7, g, &b0, NULL, NULL), FL_OK, "%s", fl_err_msg());
    const int dbl = sizeof(fl_real) == 8;
    const double h = dbl ? 1e-6 : 3e-3, tol = dbl ? 1e-6 : 3e-2;
    int checked = 0, bad = 0;
    for (size_t s = 0; s < f.e->arena.n; s++) {
        const fl_param_rec *p = &f.e->arena.p[s];
        for (size_t j = 0; j < p->size; j += 1 + p->size / 6) {
            fl_real *th = &f.e->arena.theta[p->offset + j];
            const fl_real keep = *th;
            double fb[2];
            for (int sg = 0; sg < 2; sg++) {
                *th = (fl_real)(keep + (sg ? -h : h));
                cr_assert_eq(fl_gradvar_draw(f.e, f.x, n, 7, scratch, &fb[sg], NULL, NULL), FL_OK);
            }
            *th = keep;
            const double fd = (fb[0] - fb[1]) / (2 * h), an = g[p->offset + j];
            if (fabs(fd - an) / (1 + fabs(fd)) > tol) {
                bad++;
                cr_log_error("%s[%zu]: gradvar %.6g, finite differences %.6g", p->name, j, an, fd);
            }
            checked++;
        }
    }
    cr_expect(checked > 20);
    cr_expect_eq(bad, 0, "%d of %d entries disagree", bad, checked);
    /* the same draw again is the same gradient; another draw is not */
    double b1;
    cr_assert_eq(fl_gradvar_draw(f.e, f.x, n, 7, scratch, &b1, NULL, NULL), FL_OK);
    cr_expect(b1 == b0 && memcmp(scratch, g, total * sizeof *g) == 0);
    cr_assert_eq(fl_gradvar_draw(f.e, f.x, n, 8, scratch, &b1, NULL, NULL), FL_OK);
    cr_expect(b1 != b0);
    /* the same model holding all 5 x 3 rows at once: one call, same noise
     * per point, so the same gradient up to rounding */
    fixture one;
    setup(&one, "iwae", 3, 2, 64, NULL);
    cr_assert_eq(one.e->arena.total, total);
    cr_assert_eq(fl_gradvar_draw(one.e, one.x, n, 7, scratch, &b1, NULL, NULL), FL_OK);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < total; i++) {
        worst = fmax(worst, fabs(scratch[i] - g[i]));
        scale = fmax(scale, fabs(g[i]));
    }
    cr_expect(fabs(b1 - b0) <= 1e-5 * fabs(b0), "bound %.9g in one call, %.9g in three", b1, b0);
    cr_expect(worst <= 1e-5 * scale, "gradient differs by %g (scale %g) between splits", worst,
              scale);
    teardown(&one);
    free(g);
    free(scratch);
    teardown(&f);
}

/* fl_gradvar_accumulate + summarize against a two-pass computation over
 * stored per-draw gradients; bound, its s.e. and the ESS too. */
Test(gradvar, snr_matches_a_direct_computation)
{
    fixture f;
    setup(&f, "iwae", 4, 8, 64, NULL);
    const uint32_t n = 10, draws = 40, k = 4;
    const size_t total = f.e->arena.total;
    double *bounds = malloc(draws * sizeof *bounds);
    double *g = per_draw(&f, n, draws, bounds);
    fl_gradvar_stats s;
    cr_assert_eq(fl_gradvar_stats_init(&s, total), FL_OK);
    cr_assert_eq(fl_gradvar_accumulate(f.e, f.x, n, draws, &s, NULL, 0), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(s.draws, draws);
    for (int side = 1; side <= 2; side++) {
        double snr = 0, ma = 0, sd = 0;
        size_t cnt = 0;
        for (size_t p = 0; p < f.e->arena.n; p++) {
            const fl_param_rec *rec = &f.e->arena.p[p];
            if (fl_gradvar_side(rec->name) != side) continue;
            for (size_t j = 0; j < rec->size; j++) {
                const size_t i = rec->offset + j;
                double m = 0, v = 0;
                for (uint32_t t = 0; t < draws; t++) m += g[(size_t)t * total + i];
                m /= draws;
                for (uint32_t t = 0; t < draws; t++) {
                    const double d = g[(size_t)t * total + i] - m;
                    v += d * d;
                }
                v /= draws - 1;
                if (v <= 0) continue;
                snr += fabs(m) / sqrt(v);
                ma += fabs(m);
                sd += sqrt(v);
                cnt++;
            }
        }
        cr_assert(cnt > 10);
        fl_gradvar_group grp;
        fl_gradvar_summarize(f.e, &s, side, NULL, &grp);
        cr_log_info("side %d: %zu entries, SNR %.6f (direct %.6f)", side, grp.entries, grp.snr,
                    snr / cnt);
        cr_expect_eq(grp.entries, cnt);
        cr_expect(fabs(grp.snr - snr / cnt) <= 1e-9 * (snr / cnt), "SNR %.12g vs %.12g", grp.snr,
                  snr / cnt);
        cr_expect(fabs(grp.mean_abs - ma / cnt) <= 1e-9 * (ma / cnt));
        cr_expect(fabs(grp.mean_std - sd / cnt) <= 1e-9 * (sd / cnt));
    }
    /* per-prefix groups partition the two sides here (encoder, decoder) */
    fl_gradvar_group enc, dec, inf;
    fl_gradvar_summarize(f.e, &s, 0, "encoder", &enc);
    fl_gradvar_summarize(f.e, &s, 0, "decoder", &dec);
    fl_gradvar_summarize(f.e, &s, 1, NULL, &inf);
    cr_expect(enc.entries > 0 && dec.entries > 0);
    cr_expect(enc.entries <= inf.entries);
    double bm = 0, bv = 0;
    for (uint32_t t = 0; t < draws; t++) bm += bounds[t];
    bm /= draws;
    for (uint32_t t = 0; t < draws; t++) bv += (bounds[t] - bm) * (bounds[t] - bm);
    bv /= draws - 1;
    cr_expect(fabs(s.bound_mean - bm) <= 1e-9 * fabs(bm));
    cr_expect(fabs(s.bound_m2 / (draws - 1) - bv) <= 1e-6 * bv + 1e-15);
    const double ess = s.ess_sum / (double)s.ess_count;
    cr_expect_eq(s.ess_count, (uint64_t)n * draws);
    cr_expect(ess >= 1 && ess <= k, "ESS %.3f outside [1, %u]", ess, k);
    fl_gradvar_stats_free(&s);
    free(g);
    free(bounds);
    teardown(&f);
}

Test(gradvar, names_and_groups)
{
    char b[64];
    fl_gradvar_prefix("encoder.net.W0", b, sizeof b);
    cr_expect_str_eq(b, "encoder");
    fl_gradvar_prefix("encoder.2.net.W0", b, sizeof b);
    cr_expect_str_eq(b, "encoder.2");
    fl_gradvar_prefix("flow.1.0.s.W0", b, sizeof b);
    cr_expect_str_eq(b, "flow.1");
    fl_gradvar_prefix("prior", b, sizeof b);
    cr_expect_str_eq(b, "prior");
    cr_expect_eq(fl_gradvar_side("encoder.net.W0"), 1);
    cr_expect_eq(fl_gradvar_side("posterior.2.x"), 1);
    cr_expect_eq(fl_gradvar_side("flow.3.0.W"), 1);
    cr_expect_eq(fl_gradvar_side("decoder.2.net.b1"), 2);
    cr_expect_eq(fl_gradvar_side("likelihood.log_var"), 2);
    cr_expect_eq(fl_gradvar_side("prior.mean"), 2);
    cr_expect_eq(fl_gradvar_side("estimator.t"), 0);
    cr_expect_eq(fl_gradvar_side("encoderx.W"), 0);
}

/* Paired statistics of a - b over draws for the entries of `side`: the mean
 * of z^2 and the largest |z|, z = mean(a - b) / se(a - b); and the largest
 * |a - b| of any single draw. Entries whose difference never varies count
 * only in the last. For an unbiased difference each z is about N(0, 1);
 * the entries share a few dozen noise dimensions (3 latents x 16 points),
 * so their mean z^2 fluctuates: 0.43 to 1.30 over five disjoint sets of
 * 1500 draws for the two unbiased pairs below, max |z| 2.3 to 3.6, against
 * about 1500 and 145 for STL's bias. */
static void paired(const fixture *f, const double *a, const double *b, uint32_t draws, int side,
                   double *mean_z2, double *max_z, double *max_abs)
{
    const size_t total = f->e->arena.total;
    double z2 = 0, zm = 0, am = 0;
    size_t cnt = 0;
    for (size_t p = 0; p < f->e->arena.n; p++) {
        const fl_param_rec *rec = &f->e->arena.p[p];
        if (fl_gradvar_side(rec->name) != side) continue;
        for (size_t j = 0; j < rec->size; j++) {
            const size_t i = rec->offset + j;
            double m = 0, v = 0;
            for (uint32_t t = 0; t < draws; t++) {
                const double d = a[(size_t)t * total + i] - b[(size_t)t * total + i];
                m += d;
                am = fmax(am, fabs(d));
            }
            m /= draws;
            for (uint32_t t = 0; t < draws; t++) {
                const double d = a[(size_t)t * total + i] - b[(size_t)t * total + i] - m;
                v += d * d;
            }
            v /= draws - 1;
            if (!(v > 1e-24)) continue;
            const double z = m / sqrt(v / draws);
            z2 += z * z;
            zm = fmax(zm, fabs(z));
            cnt++;
        }
    }
    *mean_z2 = cnt ? z2 / cnt : 0;
    *max_z = zm;
    *max_abs = am;
}

/* With the same noise in every draw: stl and dreg give IWAE's generative
 * gradient exactly. For the inference network, DReG is an unbiased
 * estimator of IWAE's gradient (Tucker et al. 2019): the mean of the paired
 * difference is zero within Monte Carlo error. STL with IWAE weights drops
 * a score term whose expectation is not zero for k > 1, so it is biased:
 * its paired z-scores are far from N(0, 1). */
Test(gradvar, dreg_is_unbiased_for_the_iwae_gradient_and_stl_is_not, .timeout = 200)
{
    fixture f;
    setup(&f, "iwae", 8, 8, 512, "steps = 300\nlr = 3e-3\n");
    fl_vae_result res;
    cr_assert_eq(fl_vae_train(f.e, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
    const uint32_t n = 16, draws = 1500, k = 8;
    use(&f, "iwae", k);
    double *gi = per_draw(&f, n, draws, NULL);
    use(&f, "dreg", k);
    double *gd = per_draw(&f, n, draws, NULL);
    use(&f, "stl", k);
    double *gs = per_draw(&f, n, draws, NULL);
    double z2, zm, am;
    paired(&f, gd, gi, draws, 2, &z2, &zm, &am);
    cr_expect(am <= 1e-5, "dreg: generative gradient differs from iwae's by %g", am);
    paired(&f, gs, gi, draws, 2, &z2, &zm, &am);
    cr_expect(am <= 1e-5, "stl: generative gradient differs from iwae's by %g", am);
    paired(&f, gd, gi, draws, 1, &z2, &zm, &am);
    cr_log_info("dreg - iwae, inference: mean z^2 %.3f, max |z| %.2f", z2, zm);
    cr_expect(am > 1e-6, "dreg's inference gradient is iwae's");
    cr_expect(z2 < 3 && zm < 5.5, "dreg looks biased: mean z^2 %.3f, max |z| %.2f", z2, zm);
    paired(&f, gs, gi, draws, 1, &z2, &zm, &am);
    cr_log_info("stl - iwae, inference: mean z^2 %.3f, max |z| %.2f", z2, zm);
    cr_expect(z2 > 3, "stl's bias should show at k = %u: mean z^2 %.3f", k, z2);
    free(gi);
    free(gd);
    free(gs);
    teardown(&f);
}

/* At k = 1 the estimators collapse: stl and dreg are the same estimator,
 * all four share the generative gradient, and STL is an unbiased estimator
 * of the ELBO's gradient (the dropped score term has expectation zero). */
Test(gradvar, at_k1_stl_is_unbiased_for_the_elbo_gradient, .timeout = 200)
{
    fixture f;
    setup(&f, "elbo", 1, 8, 512, NULL);
    const uint32_t n = 16, draws = 1500;
    use(&f, "elbo", 1);
    double *ge = per_draw(&f, n, draws, NULL);
    use(&f, "stl", 1);
    double *gs = per_draw(&f, n, draws, NULL);
    use(&f, "dreg", 1);
    double *gd = per_draw(&f, n, draws, NULL);
    double z2, zm, am;
    paired(&f, gs, ge, draws, 2, &z2, &zm, &am);
    cr_expect(am <= 1e-5, "stl: generative gradient differs from elbo's by %g", am);
    paired(&f, gd, gs, draws, 1, &z2, &zm, &am);
    cr_expect(am <= 1e-5, "k = 1: dreg's inference gradient differs from stl's by %g", am);
    paired(&f, gs, ge, draws, 1, &z2, &zm, &am);
    cr_log_info("stl - elbo at k = 1, inference: mean z^2 %.3f, max |z| %.2f", z2, zm);
    cr_expect(am > 1e-6, "stl's inference gradient is elbo's");
    cr_expect(z2 < 3 && zm < 5.5, "stl looks biased at k = 1: mean z^2 %.3f, max |z| %.2f",
              z2, zm);
    free(ge);
    free(gs);
    free(gd);
    teardown(&f);
}

/* Rainforth et al. (2018): for IWAE the SNR of the generative gradient
 * grows with k (like sqrt(k)) while that of the inference gradient shrinks
 * (like 1/sqrt(k)), on a model trained enough for the posterior to be
 * reasonable. DReG's inference SNR does not collapse that way. Also the
 * run's rows: bounds increase with k, ESS in [1, k]. */
Test(gradvar, iwae_snr_grows_with_k_for_the_decoder_and_shrinks_for_the_encoder, .timeout = 200)
{
    fixture f;
    setup(&f, "iwae", 8, 20, 2048, "steps = 1500\nlr = 3e-3\n");
    fl_vae_result res;
    cr_assert_eq(fl_vae_train(f.e, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
    const char *ests[] = { "iwae", "dreg" };
    const uint32_t ks[] = { 1, 16, 128 };
    fl_gradvar_result gr;
    cr_assert_eq(fl_gradvar_run(f.e, f.x, 16, ests, 2, ks, 3, 300, 0, &gr), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(gr.n_rows, 6);
    for (size_t i = 0; i < gr.n_rows; i++) {
        const fl_gradvar_row *r = &gr.rows[i];
        cr_log_info("%s k=%u: bound %.3f ess %.2f SNR inference %.4f generative %.4f", r->estimator,
                    r->k, r->bound, r->ess, r->inference.snr, r->generative.snr);
        cr_assert(r->ok);
        cr_expect(r->ess >= 1 && r->ess <= r->k, "ESS %.3f outside [1, %u]", r->ess, r->k);
        cr_expect_eq(r->calls, (16 * r->k + 2047) / 2048);
    }
    const fl_gradvar_row *iw = gr.rows, *dr = gr.rows + 3;
    for (int j = 0; j + 1 < 3; j++) {
        cr_expect(iw[j + 1].bound > iw[j].bound - 3 * (iw[j].bound_se + iw[j + 1].bound_se),
                  "IWAE-%u %.3f below IWAE-%u %.3f", ks[j + 1], iw[j + 1].bound, ks[j], iw[j].bound);
        cr_expect(iw[j + 1].generative.snr > iw[j].generative.snr,
                  "generative SNR k=%u %.4f not above k=%u %.4f", ks[j + 1],
                  iw[j + 1].generative.snr, ks[j], iw[j].generative.snr);
        cr_expect(iw[j + 1].inference.snr < iw[j].inference.snr,
                  "inference SNR k=%u %.4f not below k=%u %.4f", ks[j + 1], iw[j + 1].inference.snr,
                  ks[j], iw[j].inference.snr);
    }
    cr_expect(dr[2].inference.snr > iw[2].inference.snr,
              "at k = %u DReG's inference SNR %.4f should beat IWAE's %.4f", ks[2],
              dr[2].inference.snr, iw[2].inference.snr);
    /* the same estimator and k in the same noise: identical bound */
    cr_expect(dr[0].bound == iw[0].bound);
    fl_gradvar_result_free(&gr);
    teardown(&f);
}

/* A combination the model refuses (here an estimator it does not know) is
 * a row with the model's reason while the other rows run, stl through a
 * flow posterior among them; the outputs mention it. */
Test(gradvar, refused_combinations_are_rows_with_a_reason)
{
    fixture f;
    setup_enc(&f, "iwae", 2, 8, 64, "steps = 1\n[flow.1]\ntype = iaf\nhidden = 6\n",
              "context = 2\n");
    const char *ests[] = { "iwae", "stl", "no-such" };
    const uint32_t ks[] = { 2 };
    fl_gradvar_result gr;
    cr_assert_eq(fl_gradvar_run(f.e, f.x, 4, ests, 3, ks, 1, 5, 0, &gr), FL_OK, "%s",
                 fl_err_msg());
    cr_assert_eq(gr.n_rows, 3);
    cr_expect(gr.rows[0].ok);
    cr_expect(gr.rows[1].ok, "stl through an IAF posterior: %s",
              gr.rows[1].reason ? gr.rows[1].reason : "");
    cr_expect(!gr.rows[2].ok);
    assert_contains(gr.rows[2].reason, "no-such");
    int has_flow = 0;
    for (size_t p = 0; p < gr.n_prefix; p++) has_flow |= strcmp(gr.prefix[p], "flow.1") == 0;
    cr_expect(has_flow, "no flow.1 prefix group");
    cr_expect(gr.rows[0].inference.entries > 0);
    fl_buf c = { 0 }, j = { 0 };
    fl_gradvar_csv(&gr, &c);
    fl_gradvar_json(&gr, "RUN", "test", &j);
    cr_assert(!c.failed && !j.failed);
    assert_contains(c.data, "no-such,2,n/a: ");
    assert_contains(j.data, "\"iwae_k2_snr_inference\": ");
    assert_contains(j.data, "\"stl_k2_snr_inference\": ");
    assert_not_contains(j.data, "no-such_k2_bound");
    fl_json_num *nums;
    size_t nn;
    /* gradvar.json is what `flowlab report` reads: valid JSON, flat numbers */
    cr_assert_eq(fl_json_numbers(j.data, &nums, &nn), FL_OK, "%s\n%s", fl_err_msg(), j.data);
    cr_expect(nn >= 6);
    for (size_t i = 0; i < nn; i++) free(nums[i].name);
    free(nums);
    fl_buf_free(&c);
    fl_buf_free(&j);
    fl_gradvar_result_free(&gr);
    /* too large a k for the model's rows is an error naming the fix */
    const uint32_t big[] = { 1000 };
    cr_expect_neq(fl_gradvar_run(f.e, f.x, 4, ests, 1, big, 1, 5, 0, &gr), FL_OK);
    assert_contains(fl_err_msg(), "--batch");
    fl_gradvar_result_free(&gr);
    teardown(&f);
}
