/* fuzz_train.c - structure-aware libFuzzer harness: the input bytes choose
 * the values of a valid experiment file for a tiny density model (data set,
 * one to three flow sections of any built-in type, training and evaluation
 * keys; the iwae schedule's 3^i-pass rounds kept to two), which is then
 * built with the plugins of the build, trained for a few steps, evaluated
 * on its test split and sampled, all through the library
 * (tasks/task_density.h, the entry tests/test_density.c uses).
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

static fl_registry *reg;
static int print_ini, diverge;

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bytes b = { data, size, 0 };
    fl_buf t = { 0 };
    experiment_text(&b, &t);
    FUZZ_CHECK(!t.failed && t.data, "out of memory");
    if (print_ini) fprintf(stderr, "%s", t.data);
    fl_config *c = NULL;
    fl_status st = fl_config_parse("fuzz-train.ini", t.data, &c);
    FUZZ_CHECK(st == FL_OK, "the generated experiment does not parse: %s", fl_err_msg());
    fl_experiment *e = NULL;
    st = fl_experiment_new(reg, c, &e); /* takes c */
    FUZZ_CHECK(st == FL_OK, "a valid experiment was refused: %s\n%s", fl_err_msg(), t.data);
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
