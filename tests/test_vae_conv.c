/* test_vae_conv.c - the vae task with convolutional encoders and decoders
 * ([encoder]/[decoder] net = conv) on tiny synthetic images written as an
 * idx file: gradients against finite differences for every estimator path
 * and posterior, a short training run that learns, ordered IWAE bounds,
 * resume and the refusals of bad keys. No MNIST needed. */
#include <math.h>

#include "common.h"
#include "tasks/task_vae.h"

SUITE(vae_conv);

#define SIDE 8

/* n grey-level 8x8 images of random bars (the on pixels 240-255, the rest
 * 0-10) as an idx3-ubyte file. */
static char *write_bars_idx(const char *dir, const char *name, int n, uint64_t seed)
{
    char *path = fl_strfmt("%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    const unsigned char hd[16] = { 0, 0, 8, 3, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                                   (unsigned char)(n >> 8), (unsigned char)n, 0, 0, 0, SIDE,
                                   0, 0, 0, SIDE };
    fwrite(hd, 1, 16, f);
    fl_rng_key key = fl_rng_key_make(seed, "bars");
    for (int i = 0; i < n; i++) {
        fl_real u[2 * SIDE + 1 + SIDE * SIDE];
        fl_rng_uniform(key, (uint64_t)i, 0, sizeof u / sizeof u[0], u);
        int horiz = u[2 * SIDE] < 0.5;
        for (int p = 0; p < SIDE * SIDE; p++) {
            int row = p / SIDE, col = p % SIDE;
            int on = horiz ? u[row] < 0.3 : u[SIDE + col] < 0.3;
            fl_real g = u[2 * SIDE + 1 + p];
            unsigned char b = (unsigned char)(on ? 240 + 15 * g : 10 * g);
            fputc(b, f);
        }
    }
    fclose(f);
    return path;
}

typedef struct bars {
    char *dir, *train, *test;
    fl_registry *r;
} bars;

static bars bars_open(void)
{
    bars b;
    b.dir = make_tmpdir();
    b.train = write_bars_idx(b.dir, "train.idx", 300, 1);
    b.test = write_bars_idx(b.dir, "test.idx", 60, 2);
    b.r = load_builtin_plugins();
    return b;
}

static void bars_close(bars *b)
{
    fl_registry_free(b->r);
    free(b->train);
    free(b->test);
    remove_tree(b->dir);
}

/* A conv VAE on the bars; `binarize` the idx key, `rest` more sections. */
static fl_experiment *conv_model(const bars *b, const char *binarize, const char *rest,
                                 const char *const *sets)
{
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\nseed = 5\n[data]\ntype = idx\ntrain_images = %s\n"
        "test_images = %s\nvalid_size = 50\nbinarize = %s\n"
        "[encoder]\nnet = conv\nlatent = 3\nchannels = 4\nblocks = 1\nlevels = 1\nact = elu\n"
        "[decoder]\nnet = conv\nchannels = 4\nblocks = 1\nlevels = 1\nact = elu\n"
        "[eval]\nbatch = 200\nk = 20\nvalid_k = 5\n%s",
        b->train, b->test, binarize, rest);
    fl_experiment *e = NULL;
    fl_status st = experiment_from_text(b->r, "conv.ini", text, sets, &e);
    free(text);
    cr_assert_eq(st, FL_OK, "building the conv VAE failed: %s", fl_err_msg());
    return e;
}

/* -mean bound over 5 test points against central differences with fixed
 * noise, at a few entries of every parameter. */
static void check_gradient(const char *binarize, const char *rest, const char *const *sets)
{
    bars b = bars_open();
    fl_experiment *e = conv_model(&b, binarize, rest, sets);
    fl_real *x;
    uint64_t nt;
    cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt), FL_OK);
    const uint32_t n = 5;
    double bd[8];
    fl_arena_zero_grad(&e->arena);
    cr_assert_eq(fl_vae_bound(e, x, n, 42, 1, bd), FL_OK, "%s", fl_err_msg());
    size_t total = e->arena.total;
    fl_real *g = malloc(total * sizeof *g);
    memcpy(g, e->arena.grad, total * sizeof *g);
    const int dbl = sizeof(fl_real) == 8;
    const double h = dbl ? 1e-6 : 2e-3, tol = dbl ? 1e-5 : 4e-2;
    int checked = 0, bad = 0, conv_seen = 0;
    double worst = 0;
    for (size_t s = 0; s < e->arena.n; s++) {
        const fl_param_rec *p = &e->arena.p[s];
        if (p->flags & FL_PARAM_STATE) continue;
        if (strstr(p->name, "conv")) conv_seen++;
        for (size_t j = 0; j < p->size; j += 1 + p->size / 5) {
            fl_real *th = &e->arena.theta[p->offset + j];
            fl_real keep = *th;
            double f[2];
            for (int sg = 0; sg < 2; sg++) {
                *th = (fl_real)(keep + (sg ? -h : h));
                cr_assert_eq(fl_vae_bound(e, x, n, 42, 0, bd), FL_OK);
                double m = 0;
                for (uint32_t i = 0; i < n; i++) m += bd[i];
                f[sg] = -m / n;
            }
            *th = keep;
            double fd = (f[0] - f[1]) / (2 * h), an = g[p->offset + j];
            double err = fabs(fd - an) / (1 + fabs(fd));
            if (err > worst) worst = err;
            if (err > tol) {
                bad++;
                cr_log_error("%s[%zu]: analytic %.6g, finite differences %.6g", p->name, j, an, fd);
            }
            checked++;
        }
    }
    cr_log_info("conv VAE (%s): %d gradient entries, worst relative error %.2g", rest, checked,
                worst);
    cr_expect(conv_seen >= 4, "only %d conv parameter slices", conv_seen);
    cr_expect(checked > 40);
    cr_expect_eq(bad, 0, "%d of %d gradient entries disagree with finite differences", bad,
                 checked);
    free(g);
    fl_free(x);
    fl_experiment_free(e);
    bars_close(&b);
}

Test(vae_conv, elbo_gradient_bernoulli, .timeout = 120)
{
    check_gradient("fixed", "[estimator]\ntype = elbo\nk = 2\n[train]\nbatch = 8\n", NULL);
}
Test(vae_conv, iwae_gradient_gaussian_full_posterior, .timeout = 120)
{
    check_gradient("fixed", "[posterior]\ntype = gaussian-full\n[estimator]\ntype = iwae\n"
                            "k = 3\n[train]\nbatch = 8\n", NULL);
}
/* Two outputs per pixel (mean, log-variance): the decoder's channel to
 * block transposition. */
Test(vae_conv, iwae_gradient_gaussian_likelihood_two_channels, .timeout = 120)
{
    check_gradient("none", "[likelihood]\ntype = gaussian\nvariance = learned\n"
                           "[estimator]\ntype = iwae\nk = 2\n[train]\nbatch = 8\n", NULL);
}
/* Grey levels under the discretized logistic (mean and log-scale channels). */
Test(vae_conv, iwae_gradient_discretized_logistic, .timeout = 120)
{
    check_gradient("none", "[likelihood]\ntype = discretized-logistic\n"
                           "[estimator]\ntype = iwae\nk = 2\n[train]\nbatch = 8\n", NULL);
}
/* IWAE's second stochastic layer (MLPs) on top of the conv nets. */
Test(vae_conv, iwae_gradient_two_stochastic_layers, .timeout = 120)
{
    check_gradient("fixed", "[encoder.2]\nlatent = 2\nhidden = 4\n[decoder.2]\nhidden = 4\n"
                            "[estimator]\ntype = iwae\nk = 2\n[train]\nbatch = 8\n", NULL);
}
Test(vae_conv, iwae_gradient_iaf_with_context, .timeout = 120)
{
    const char *const sets[] = { "encoder.context = 4", NULL };
    check_gradient("fixed", "[flow.1]\ntype = iaf\nrepeat = 2\npermute = reverse\nhidden = 6\n"
                            "[estimator]\ntype = iwae\nk = 2\n[train]\nbatch = 8\n", sets);
}
Test(vae_conv, iwae_gradient_relu_tanh_no_weight_norm_two_levels, .timeout = 120)
{
    const char *const sets[] = { "encoder.act = relu", "decoder.act = tanh",
                                 "encoder.weight_norm = false", "decoder.weight_norm = false",
                                 "encoder.levels = 2", "decoder.levels = 2", "decoder.blocks = 2",
                                 NULL };
    check_gradient("fixed", "[estimator]\ntype = iwae\nk = 3\n[train]\nbatch = 8\n", sets);
}

static const char train_rest[] =
    "[estimator]\ntype = iwae\nk = 3\n[train]\nbatch = 20\nlr = 1e-2\nsteps = 600\n"
    "eval_every = 50\n";

/* A short run improves the test log-likelihood by several nats, and the
 * IWAE bounds of the trained model are ordered L1 <= L5 <= L50. */
Test(vae_conv, a_short_run_learns_and_iwae_bounds_are_ordered, .timeout = 180)
{
    bars b = bars_open();
    fl_experiment *e = conv_model(&b, "dynamic", train_rest, NULL);
    fl_vae_eval before, after, ev[3];
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 20, 0, NULL, &before), FL_OK, "%s",
                 fl_err_msg());
    char *run = fl_strfmt("%s", b.dir);
    fl_vae_result res;
    cr_assert_eq(fl_vae_train(e, run, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 20, 0, NULL, &after), FL_OK, "%s",
                 fl_err_msg());
    cr_log_info("conv VAE on bars: IWAE-20 %.3f -> %.3f nats", before.ll, after.ll);
    cr_expect_gt(after.ll, before.ll + 3, "%.3f -> %.3f", before.ll, after.ll);
    const uint64_t ks[3] = { 1, 5, 50 };
    for (int i = 0; i < 3; i++)
        cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, ks[i], 0, NULL, &ev[i]), FL_OK, "%s",
                     fl_err_msg());
    cr_log_info("L1 %.3f L5 %.3f L50 %.3f", ev[0].ll, ev[1].ll, ev[2].ll);
    cr_expect_leq(ev[0].ll, ev[1].ll);
    cr_expect_leq(ev[1].ll, ev[2].ll);
    fl_experiment_free(e);
    free(run);
    bars_close(&b);
}

/* Resumed at its last checkpoint: the conv parameters (weight-normalised
 * v, g, the decoder's output biases) come back exactly. */
Test(vae_conv, a_resumed_run_gives_its_results, .timeout = 180)
{
    bars b = bars_open();
    const char *rest = "[estimator]\ntype = elbo\nk = 1\n[train]\nbatch = 20\nlr = 3e-3\n"
                       "steps = 30\neval_every = 10\n";
    char *run = fl_strfmt("%s", b.dir);
    fl_vae_result r1, r2;
    fl_vae_eval e1, e2;
    fl_experiment *e = conv_model(&b, "dynamic", rest, NULL);
    cr_assert_eq(fl_vae_train(e, run, 0, &r1), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 10, 0, NULL, &e1), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    e = conv_model(&b, "dynamic", rest, NULL);
    cr_assert_eq(fl_vae_train(e, run, 1, &r2), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 10, 0, NULL, &e2), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    cr_expect_eq(r2.steps, 30);
    cr_expect_eq(r1.valid_iwae, r2.valid_iwae, "%.17g against %.17g", r1.valid_iwae, r2.valid_iwae);
    cr_expect_eq(e1.ll, e2.ll, "%.17g against %.17g", e1.ll, e2.ll);
    free(run);
    bars_close(&b);
}

static void expect_refused(const char *rest, const char *what)
{
    bars b = bars_open();
    char *text = fl_strfmt(
        "[experiment]\ntask = vae\n[data]\ntype = idx\ntrain_images = %s\nvalid_size = 50\n"
        "[train]\nbatch = 8\n%s",
        b.train, rest);
    fl_experiment *e = NULL;
    cr_expect_neq(experiment_from_text(b.r, "bad.ini", text, NULL, &e), FL_OK, "%s accepted",
                  what);
    assert_contains(fl_err_msg(), what);
    fl_experiment_free(e);
    free(text);
    bars_close(&b);
}

Test(vae_conv, bad_conv_keys_are_refused_with_their_line)
{
    /* 8 does not halve 4 times */
    expect_refused("[encoder]\nnet = conv\n[decoder]\nnet = conv\nlevels = 4\n", "levels");
    expect_refused("[encoder]\nnet = conv\nhidden = 10\n", "hidden");
    expect_refused("[encoder]\nnet = conv\nact = softplus\n", "act");
    expect_refused("[decoder]\nnet = conv\nblocks = 0\n", "blocks");
}

Test(vae_conv, conv_needs_image_data)
{
    char *dir = make_tmpdir();
    char *csv = fl_strfmt("%s/a.csv", dir);
    FILE *f = fopen(csv, "w");
    fprintf(f, "a,b\n");
    for (int i = 0; i < 50; i++) fprintf(f, "%d,%d\n", i % 2, i % 3 == 0);
    fclose(f);
    fl_registry *r = load_builtin_plugins();
    char *text = fl_strfmt("[experiment]\ntask = vae\n[data]\ntype = csv\npath = %s\n"
                           "[encoder]\nnet = conv\n[train]\nbatch = 8\n",
                           csv);
    fl_experiment *e = NULL;
    cr_expect_neq(experiment_from_text(r, "csv.ini", text, NULL, &e), FL_OK);
    assert_contains(fl_err_msg(), "image");
    fl_experiment_free(e);
    free(text);
    free(csv);
    fl_registry_free(r);
    remove_tree(dir);
}

/* The `point` column of an eval_points.csv (n rows). */
static void read_points(const char *dir, uint64_t *idx, int n)
{
    char *path = fl_strfmt("%s/eval-test-k4-n%d_points.csv", dir, n), *text = NULL;
    size_t len;
    cr_assert_eq(fl_read_file(path, &text, &len), FL_OK, "%s", path);
    const char *p = strchr(text, '\n') + 1;
    for (int i = 0; i < n; i++) {
        idx[i] = strtoull(p, NULL, 10);
        p = strchr(p, '\n') + 1;
    }
    cr_expect_eq(*p, 0, "more than %d points", n);
    free(text);
    free(path);
}

/* [eval] pick = random: a sorted random subset of the test split, the
 * same for runs of other seeds. */
Test(vae_conv, eval_pick_random_is_a_seed_independent_subset, .timeout = 120)
{
    bars b = bars_open();
    uint64_t idx[2][10];
    for (int s = 0; s < 2; s++) {
        const char *const sets[] = { "eval.pick = random", s ? "experiment.seed = 9" : NULL, NULL };
        fl_experiment *e = conv_model(&b, "fixed", "[train]\nbatch = 8\n", sets);
        fl_vae_eval ev;
        cr_assert_eq(fl_vae_evaluate(e, FL_SPLIT_TEST, 4, 10, b.dir, &ev), FL_OK, "%s",
                     fl_err_msg());
        cr_expect_eq(ev.n, 10);
        read_points(b.dir, idx[s], 10);
        fl_experiment_free(e);
    }
    int first = 1;
    for (int i = 0; i < 10; i++) {
        cr_expect_lt(idx[0][i], 60);
        if (i) cr_expect_lt(idx[0][i - 1], idx[0][i], "not sorted and distinct");
        cr_expect_eq(idx[0][i], idx[1][i], "point %d: %llu with seed 5, %llu with seed 9", i,
                     (unsigned long long)idx[0][i], (unsigned long long)idx[1][i]);
        first &= idx[0][i] == (uint64_t)i;
    }
    cr_expect(!first, "the random subset is the first 10 points");
    bars_close(&b);
}

/* Dynamic binarization of more rows than a [train] batch in one call
 * (flowlab gradvar --n 100 on a batch-8 run overflowed the batch-sized
 * scratch): the same pixels as two calls of half the rows each. */
Test(vae_conv, dynamic_binarization_of_more_rows_than_a_batch)
{
    bars b = bars_open();
    fl_experiment *e = conv_model(&b, "dynamic", "[train]\nbatch = 8\n", NULL);
    const uint32_t n = 100, D = SIDE * SIDE;
    fl_real *all = fl_alloc((size_t)n * D * sizeof(fl_real));
    fl_real *half = fl_alloc((size_t)n * D * sizeof(fl_real));
    cr_assert_eq(fl_experiment_train_rows(e, 3, n, 0, n, all), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_experiment_train_rows(e, 3, n, 0, n / 2, half), FL_OK);
    cr_assert_eq(fl_experiment_train_rows(e, 3, n, n / 2, n / 2, half + (size_t)(n / 2) * D), FL_OK);
    size_t ones = 0;
    for (size_t i = 0; i < (size_t)n * D; i++) {
        cr_assert(all[i] == 0 || all[i] == 1);
        ones += all[i] == 1;
        cr_assert_eq(all[i], half[i], "pixel %zu", i);
    }
    cr_expect(ones > 0 && ones < (size_t)n * D);
    fl_free(all);
    fl_free(half);
    fl_experiment_free(e);
    bars_close(&b);
}
