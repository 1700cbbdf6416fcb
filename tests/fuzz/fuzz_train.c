/* fuzz_train.c - structure-aware libFuzzer harness: the input bytes choose
 * the values of a valid experiment file for a tiny density model (data set,
 * one to three flow sections of any built-in type, training and evaluation
 * keys; the iwae schedule's 3^i-pass rounds kept to two), which is then
 * built with the plugins of the build, trained for a few steps, evaluated
 * on its test split and sampled, all through the library
 * (tasks/task_density.h, the entry tests/test_density.c uses).
 * An input starting with 'V' makes a tiny VAE instead (tasks/task_vae.h):
 * MLP encoder and decoder of a few units on 6x6 binary bars (the data set
 * of tests/test_vae.c, written as CSV at start-up), any estimator and k,
 * a Gaussian posterior with zero to two flow sections, optionally a second
 * stochastic layer, and [eval] batch, k, n, au_samples and valid_k drawn
 * across the sizes where evaluation chunks a point's samples (issue 13's
 * heap overflows were [eval] batch below au_samples or latent + 1); it is
 * trained for a few steps and given the full evaluation (fl_vae_evaluate).
 * Set FLOWLAB_FUZZ_PRINT=1 to see the experiment an input makes.
 * Learning rates of 1 and 10 (runs that diverge to NaN) are drawn only with
 * FLOWLAB_FUZZ_DIVERGE=1: they reach fl_exp (include/flowlab/vmath.h) with
 * a NaN, whose conversion to int is undefined behaviour (UBSan), an open
 * bug (docs/reliability.md, Fuzzing) that would stop every short run. */
#include "fuzz_common.h"

#include <math.h>

#include "compute/blas.h"
#include "core/config.h"
#include "core/log.h"
#include "core/registry.h"
#include "model/experiment.h"
#include "tasks/task_density.h"
#include "tasks/task_vae.h"

static fl_registry *reg;
static int print_ini, diverge;
static char bars_path[512]; /* the VAE's data, written by LLVMFuzzerInitialize */

static void remove_bars(void) { unlink(bars_path); }

/* 60 binary 6x6 images of random horizontal or vertical bars, as CSV. */
static void write_bars(void)
{
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(bars_path, sizeof bars_path, "%s/flowlab-fuzz-bars-%ld.csv", dir, (long)getpid());
    FILE *f = fopen(bars_path, "w");
    if (!f) {
        fprintf(stderr, "fuzz_train: cannot write %s\n", bars_path);
        abort();
    }
    fl_rng_key key = fl_rng_key_make(11, "bars");
    for (int i = 0; i < 60; i++) {
        fl_real u[13];
        fl_rng_uniform(key, (uint64_t)i, 0, 13, u);
        int horiz = u[12] < 0.5;
        for (int p = 0; p < 36; p++)
            fprintf(f, p < 35 ? "%d," : "%d\n", horiz ? u[p / 6] < 0.3 : u[6 + p % 6] < 0.3);
    }
    if (fclose(f) != 0) abort();
    atexit(remove_bars);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fl_runtime_init();
    fl_log_set_level(FL_LOG_ERROR);
    const char *p = getenv("FLOWLAB_FUZZ_PRINT");
    print_ini = p && *p == '1';
    p = getenv("FLOWLAB_FUZZ_DIVERGE");
    diverge = p && *p == '1';
    reg = fl_registry_new();
    if (!reg || fl_registry_load_dir(reg, FUZZ_PLUGIN_DIR) != 0) {
        fprintf(stderr, "fuzz_train: cannot load the plugins of %s\n", FUZZ_PLUGIN_DIR);
        abort();
    }
    write_bars();
    return 0;
}

/* The input read as a stream of choices; past its end every choice is 0. */
typedef struct bytes {
    const uint8_t *p;
    size_t n, at;
} bytes;

static unsigned take(bytes *b, unsigned n)
{
    unsigned v = b->at < b->n ? b->p[b->at] : 0;
    b->at++;
    return n ? v % n : v;
}

static const char *pick(bytes *b, const char *const *list, unsigned n)
{
    return list[take(b, n)];
}

#define PICK(b, list) pick(b, list, (unsigned)(sizeof list / sizeof list[0]))

static const char *const datasets[] = { "moons", "8gaussians", "rings", "checkerboard",
                                        "pinwheel", "2spirals" };
static const char *const flows[] = { "affine-coupling", "additive-coupling", "maf", "reverse",
                                     "permute", "planar", "radial", "batch-norm", "actnorm" };
static const char *const acts[] = { "relu", "tanh", "elu" };
static const char *const masks[] = { "alternate", "checkerboard", "random" };
static const char *const inits[] = { "fanin", "glorot" };
static const char *const bools[] = { "false", "true" };
static const char *const orders[] = { "natural", "reversed", "random" };
static const char *const lrs[] = { "0", "1e-4", "1e-3", "1e-2", "0.1", "1", "10" };
#define N_SAFE_LRS 5 /* lrs[0 .. 4] do not diverge in 4 steps */
static const char *const reals[] = { "0", "1e-9", "0.5", "1", "3", "100" };
static const char *const schedules[] = { "constant", "exponential", "iwae" };
static const char *const emas[] = { "0", "0.5", "0.99", "0.999999" };

static void hidden(bytes *b, fl_buf *t)
{
    unsigned n = 1 + take(b, 3);
    fl_buf_printf(t, "hidden = ");
    for (unsigned i = 0; i < n; i++) fl_buf_printf(t, "%s%u", i ? "," : "", 1 + take(b, 8));
    fl_buf_printf(t, "\n");
}

static void flow_section(bytes *b, fl_buf *t, unsigned i)
{
    const char *type = PICK(b, flows);
    fl_buf_printf(t, "[flow.%u]\ntype = %s\nrepeat = %u\n", i, type, 1 + take(b, 3));
    if (!strcmp(type, "affine-coupling") || !strcmp(type, "additive-coupling")) {
        hidden(b, t);
        fl_buf_printf(t, "activation = %s\nmask = %s\ninit = %s\nzero_init = %s\n",
                      PICK(b, acts), PICK(b, masks), PICK(b, inits), PICK(b, bools));
        if (type[1] == 'f') fl_buf_printf(t, "scale_bound = %s\n", PICK(b, reals));
    } else if (!strcmp(type, "maf")) {
        hidden(b, t);
        fl_buf_printf(t, "activation = %s\norder = %s\ninit = %s\nzero_init = %s\n"
                         "scale_bound = %s\n",
                      PICK(b, acts), PICK(b, orders), PICK(b, inits), PICK(b, bools),
                      PICK(b, reals));
    } else if (!strcmp(type, "batch-norm")) {
        fl_buf_printf(t, "momentum = %s\n", take(b, 2) ? "0.05" : "1");
    } else if (!strcmp(type, "actnorm")) {
        fl_buf_printf(t, "data_init = %s\n", PICK(b, bools));
    }
}

/* affine-coupling last: a coupling needs a latent of 2 or more */
static const char *const vae_flows[] = { "iaf", "planar", "radial", "reverse", "maf",
                                         "affine-coupling" };
static const char *const estimators[] = { "elbo", "iwae", "stl", "dreg" };
static const char *const vae_acts[] = { "tanh", "relu", "elu", "softplus" };
static const char *const variances[] = { "learned", "fixed", "global" };

static void vae_hidden(bytes *b, fl_buf *t)
{
    unsigned n = take(b, 3); /* 0 to 2 layers */
    fl_buf_printf(t, "hidden =");
    for (unsigned i = 0; i < n; i++) fl_buf_printf(t, "%s%u", i ? "," : " ", 1 + take(b, 6));
    fl_buf_printf(t, "\nact = %s\ninit = %s\n", PICK(b, vae_acts), PICK(b, inits));
}

/* A tiny VAE on the bars: every value drawn from the input, any estimator
 * (stl and dreg also through flows and two stochastic layers). */
static void vae_text(bytes *b, fl_buf *t)
{
    fl_buf_printf(t, "[experiment]\ntask = vae\nseed = %u\n", take(b, 0));
    fl_buf_printf(t, "[data]\ntype = csv\npath = %s\nstandardize = false\n", bars_path);
    unsigned latent = 1 + take(b, 6), context = take(b, 3), nflow = take(b, 3) ? take(b, 3) : 0;
    int two = take(b, 5) == 0;
    fl_buf_printf(t, "[encoder]\nlatent = %u\ncontext = %u\n", latent, context);
    vae_hidden(b, t);
    fl_buf_printf(t, "[decoder]\n");
    vae_hidden(b, t);
    if (two) {
        fl_buf_printf(t, "[encoder.2]\nlatent = %u\n", 1 + take(b, 3));
        vae_hidden(b, t);
        fl_buf_printf(t, "[decoder.2]\n");
        vae_hidden(b, t);
    }
    fl_buf_printf(t, "[posterior]\ntype = %s\n", take(b, 2) ? "gaussian-diag" : "gaussian-full");
    for (unsigned i = 1; i <= nflow; i++) {
        const char *type = pick(b, vae_flows, (unsigned)(sizeof vae_flows / sizeof vae_flows[0]) -
                                                  (latent < 2));
        fl_buf_printf(t, "[flow.%u]\ntype = %s\nrepeat = %u\n", i, type, 1 + take(b, 2));
        if (!strcmp(type, "iaf") || !strcmp(type, "maf") || !strcmp(type, "affine-coupling"))
            hidden(b, t);
    }
    if (take(b, 2)) fl_buf_printf(t, "[likelihood]\ntype = bernoulli\n");
    else fl_buf_printf(t, "[likelihood]\ntype = gaussian\nvariance = %s\n", PICK(b, variances));
    unsigned n_est = 4;
    fl_buf_printf(t, "[estimator]\ntype = %s\nk = %u\n", pick(b, estimators, n_est),
                  1 + take(b, 8));
    unsigned steps = take(b, 5);
    fl_buf_printf(t, "[train]\nsteps = %u\nbatch = %u\nlr = %s\neval_every = %u\nema = %s\n",
                  steps, 1 + take(b, 32),
                  pick(b, lrs, diverge ? (unsigned)(sizeof lrs / sizeof lrs[0]) : N_SAFE_LRS),
                  take(b, steps + 1), PICK(b, emas));
    /* [eval] batch from 1 (below every k, au_samples and latent + 1) */
    fl_buf_printf(t, "[eval]\nbatch = %u\nk = %u\nn = %u\nau_samples = %u\nvalid_k = %u\n"
                     "valid_n = %u\n",
                  1 + take(b, 120), 1 + take(b, 40), take(b, 8), 1 + take(b, 120),
                  1 + take(b, 12), take(b, 8));
}

static void experiment_text(bytes *b, fl_buf *t)
{
    fl_buf_printf(t, "[experiment]\ntask = density\nseed = %u\n", take(b, 0));
    fl_buf_printf(t, "[data]\ntype = %s\ntest_size = %u\n", PICK(b, datasets), 1 + take(b, 64));
    unsigned nflow = 1 + take(b, 3);
    for (unsigned i = 1; i <= nflow; i++) flow_section(b, t, i);
    unsigned steps = take(b, 5);
    fl_buf_printf(t, "[train]\nsteps = %u\nbatch = %u\nlr = %s\neval_every = %u\n"
                     "log_every = %u\nema = %s\nschedule = %s\nlr_decay_steps = %u\n"
                     "iwae_rounds = %u\n",
                  steps, 1 + take(b, 32),
                  pick(b, lrs, diverge ? (unsigned)(sizeof lrs / sizeof lrs[0]) : N_SAFE_LRS), take(b, steps + 1), 1 + take(b, 4),
                  PICK(b, emas), PICK(b, schedules), 1 + take(b, 4), 1 + take(b, 2));
    fl_buf_printf(t, "[eval]\nbatch = %u\n", 1 + take(b, 70));
}

/* Trains the VAE e for its few steps, then the full evaluation (the run's
 * own: test split, [eval] k and n) and one on the validation split. */
static void run_vae(fl_experiment *e, const char *ini)
{
    fl_vae_result res;
    fl_status st = fl_vae_train(e, NULL, 0, &res);
    if (st != FL_OK) {
        FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a failed VAE training set no message");
        return;
    }
    fl_vae_eval ev;
    uint64_t k = (uint64_t)fl_exp_int(&e->eval, "k"), n = (uint64_t)fl_exp_int(&e->eval, "n");
    st = fl_vae_evaluate(e, FL_SPLIT_TEST, k, n, NULL, &ev);
    if (st != FL_OK) {
        FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a failed VAE evaluation set no message");
        return;
    }
    FUZZ_CHECK(ev.k == k && ev.latent >= 1 && ev.active_units <= ev.latent,
               "evaluation: k %llu of %llu, %u active units of %u\n%s", (unsigned long long)ev.k,
               (unsigned long long)k, ev.active_units, ev.latent, ini);
    FUZZ_CHECK(!(ev.ess < 1 - 1e-6) && !(ev.ess > (double)k + 1e-6),
               "evaluation: ESS %g outside [1, %llu]\n%s", ev.ess, (unsigned long long)k, ini);
    st = fl_vae_evaluate(e, FL_SPLIT_VALID, 1 + k % 3, 2, NULL, &ev);
    if (st != FL_OK) FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a failed evaluation set no message");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int vae = size > 0 && data[0] == 'V';
    bytes b = { data, size, (size_t)vae };
    fl_buf t = { 0 };
    if (vae) vae_text(&b, &t);
    else experiment_text(&b, &t);
    FUZZ_CHECK(!t.failed && t.data, "out of memory");
    if (print_ini) fprintf(stderr, "%s", t.data);
    fl_config *c = NULL;
    fl_status st = fl_config_parse("fuzz-train.ini", t.data, &c);
    FUZZ_CHECK(st == FL_OK, "the generated experiment does not parse: %s", fl_err_msg());
    fl_experiment *e = NULL;
    st = fl_experiment_new(reg, c, &e); /* takes c */
    FUZZ_CHECK(st == FL_OK, "a valid experiment was refused: %s\n%s", fl_err_msg(), t.data);
    if (vae) {
        run_vae(e, t.data);
        fl_experiment_free(e);
        fl_buf_free(&t);
        return 0;
    }
    fl_density_result res;
    st = fl_density_train(e, NULL, 0, &res);
    if (st == FL_OK) {
        fl_real *test = NULL;
        uint64_t n = 0;
        st = fl_experiment_eval_split(e, FL_SPLIT_TEST, &test, &n);
        FUZZ_CHECK(st == FL_OK, "test split: %s", fl_err_msg());
        double nll, se;
        st = fl_density_nll(e, test, n, &nll, &se);
        if (st != FL_OK) FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a failed evaluation set no message");
        fl_free(test);
        fl_real x[2 * 7];
        st = fl_density_sample(e, 7, fl_rng_key_make(1, "fuzz"), x);
        if (st != FL_OK) FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a failed sampling set no message");
    } else {
        FUZZ_CHECK(fl_err_msg() && *fl_err_msg(), "a failed training set no message");
    }
    fl_experiment_free(e);
    fl_buf_free(&t);
    return 0;
}
