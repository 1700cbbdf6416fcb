/* test_density.c - the quickstart experiment, shortened: training must
 * bring the test NLL on two moons well below the untrained model's, and
 * samples from the trained model must look like the moons. */
#include <math.h>
#include <sys/wait.h>

#include "common.h"
#include "core/log.h"
#include "tasks/task.h"
#include "tasks/task_density.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/loop.h"

SUITE(density);

#define LOG_2PI 1.8378770664093454836

static fl_experiment *quickstart(const fl_registry *r, const char *const *sets)
{
    char *path = fl_strfmt("%s/experiments/quickstart.ini", test_env("FLOWLAB_SOURCE_ROOT"));
    fl_config *c = NULL;
    cr_assert_eq(fl_config_load(path, &c), FL_OK, "%s", fl_err_msg());
    for (size_t i = 0; sets[i]; i++) cr_assert_eq(fl_config_set(c, sets[i]), FL_OK);
    fl_experiment *e = NULL;
    cr_assert_eq(fl_experiment_new(r, c, &e), FL_OK, "%s", fl_err_msg());
    free(path);
    return e;
}

Test(density, untrained_model_is_the_identity)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    static const char *const sets[] = { "data.test_size=2000", NULL };
    fl_experiment *e = quickstart(r, sets);
    fl_real *test;
    uint64_t n;
    cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &test, &n), FL_OK);
    cr_assert_eq(n, 2000);
    double nll, se;
    cr_assert_eq(fl_density_nll(e, test, n, &nll, &se), FL_OK, "%s", fl_err_msg());
    /* Identity flow: the NLL of the data under N(0, I). */
    double direct = 0;
    for (uint64_t i = 0; i < n; i++) {
        double a = test[2 * i], b = test[2 * i + 1];
        direct += 0.5 * (a * a + b * b) + LOG_2PI;
    }
    direct /= (double)n;
    cr_assert_float_eq(nll, direct, 1e-4, "untrained NLL %g, N(0,I) NLL %g", nll, direct);
    /* ~2.5 nats: the moons sit off-centre, at mean (0.5, 0.25). */
    cr_assert(nll > 2.2 && nll < 2.8, "untrained NLL %g", nll);
    cr_assert(se > 0 && se < 0.1, "standard error %g", se);
    fl_free(test);
    fl_experiment_free(e);
    fl_registry_free(r);
}

Test(density, quickstart_trains_and_samples_moons, .timeout = 120)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    static const char *const sets[] = { "train.steps=400", "data.test_size=2000", NULL };
    fl_experiment *e = quickstart(r, sets);

    fl_density_result res;
    cr_assert_eq(fl_density_train(e, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(res.steps, 400);
    cr_assert(isfinite(res.test_nll) && isfinite(res.train_nll));
    cr_assert_lt(res.test_nll, 0.9, "test NLL %g after 400 steps (untrained ~2.0)", res.test_nll);
    cr_assert_gt(res.test_nll, 0.0, "test NLL %g is implausibly low for moons", res.test_nll);
    cr_assert(res.test_se > 0 && res.test_se < 0.1);

    enum { S = 1000 };
    fl_real *x = fl_alloc(S * 2 * sizeof(fl_real));
    cr_assert_eq(fl_density_sample(e, S, fl_rng_key_make(0, "sample"), x), FL_OK, "%s",
                 fl_err_msg());
    double m0 = 0, m1 = 0;
    for (int i = 0; i < S; i++) {
        cr_assert(isfinite(x[2 * i]) && isfinite(x[2 * i + 1]), "sample %d not finite", i);
        m0 += x[2 * i];
        m1 += x[2 * i + 1];
    }
    m0 /= S;
    m1 /= S;
    /* The moons have mean (0.5, 0.25); N(0, I) samples would not. */
    cr_assert(m0 >= 0.2 && m0 <= 0.8, "mean of x0 %g", m0);
    cr_assert(m1 >= 0.0 && m1 <= 0.5, "mean of x1 %g", m1);

    /* Sampling is a pure function of the key. */
    fl_real *x2 = fl_alloc(S * 2 * sizeof(fl_real));
    cr_assert_eq(fl_density_sample(e, S, fl_rng_key_make(0, "sample"), x2), FL_OK);
    cr_assert_eq(memcmp(x, x2, S * 2 * sizeof(fl_real)), 0);
    fl_free(x);
    fl_free(x2);
    fl_experiment_free(e);
    fl_registry_free(r);
}

/* The density task's step, failing at step `fail_step`: a run "killed"
 * between checkpoints (a failed step writes nothing more). */
static uint64_t fail_step;
static fl_status (*real_step)(fl_experiment *, void *, uint64_t, uint32_t, uint32_t, double *);
static fl_status failing_step(fl_experiment *e, void *run, uint64_t step, uint32_t p0, uint32_t n,
                              double *value)
{
    if (step == fail_step) {
        fl_err("stopped at step %llu by the test", (unsigned long long)step);
        return FL_ERR_INTERNAL;
    }
    return real_step(e, run, step, p0, n, value);
}

/* Trains e in dir through the shared loop with a step that fails at step
 * `at`: what a kill -9 after the checkpoint before `at` leaves behind. */
static void train_killed_at(fl_experiment *e, const char *dir, uint64_t at)
{
    const fl_task *t = fl_task_of(e);
    fl_trainer tr = t->trainer_of ? *t->trainer_of(e) : t->trainer; /* e's columns */
    real_step = tr.step;
    fail_step = at;
    tr.step = failing_step;
    void *run = NULL;
    fl_train_summary s;
    cr_assert_eq(t->run_new(e, &run), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_train_loop(e, &tr, run, dir, 0, &s), FL_ERR_INTERNAL);
    t->run_free(run);
}

/* metrics.csv of dir without its last column (train_seconds, a clock). */
static char *metrics_without_seconds(const char *dir)
{
    char *p = fl_strfmt("%s/metrics.csv", dir), *text = NULL;
    size_t len = 0;
    cr_assert_eq(fl_read_file(p, &text, &len), FL_OK, "%s", fl_err_msg());
    fl_buf b = { 0 };
    for (char *l = text; *l;) {
        char *nl = strchr(l, '\n'), *end = nl ? nl : l + strlen(l), *c = end;
        while (c > l && c[-1] != ',') c--;
        fl_buf_write(&b, l, (size_t)(c - l));
        fl_buf_printf(&b, "\n");
        l = nl ? nl + 1 : end;
    }
    free(text);
    free(p);
    return b.data;
}

/* An interrupted run resumed from its checkpoint ends exactly where an
 * uninterrupted one does: parameters (the test NLL) and metrics.csv (but
 * for train_seconds), including the training mean of the evaluation
 * interval the kill cut (steps 51-100, checkpoint at 90): the checkpoint
 * carries the interval's sum and count. */
Test(density, a_resumed_run_matches_an_uninterrupted_one, .timeout = 120)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    char *da = make_tmpdir(), *db = make_tmpdir();
    static const char *const full[] = { "train.steps=120", "train.eval_every=50",
                                        "train.checkpoint_every=30", "data.test_size=500", NULL };
    fl_density_result a, c;
    fl_experiment *e = quickstart(r, full);
    cr_assert_eq(fl_density_train(e, da, 0, &a), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    e = quickstart(r, full);
    train_killed_at(e, db, 95);
    fl_experiment_free(e);
    char *mid = metrics_without_seconds(db);
    assert_not_contains(mid, "\n100,");
    e = quickstart(r, full);
    cr_assert_eq(fl_density_train(e, db, 1, &c), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    cr_expect_eq(c.steps, 120);
    cr_expect_eq(a.test_nll, c.test_nll, "uninterrupted %.9g, resumed %.9g", a.test_nll,
                 c.test_nll);
    char *ma = metrics_without_seconds(da), *mc = metrics_without_seconds(db);
    assert_contains(ma, "\n50,");
    assert_contains(ma, "\n100,");
    assert_contains(ma, "\n120,");
    cr_expect_str_eq(mc, ma, "resumed metrics.csv\n%s\nuninterrupted\n%s", mc, ma);
    free(mid);
    free(ma);
    free(mc);
    remove_tree(da);
    remove_tree(db);
    fl_registry_free(r);
}

/* The bytes of dir/name (NULL when missing). */
static char *file_bytes(const char *dir, const char *name, size_t *len)
{
    char *p = fl_strfmt("%s/%s", dir, name), *text = NULL;
    fl_status st = fl_read_file(p, &text, len);
    free(p);
    return st == FL_OK ? text : NULL;
}

/* A checkpoint is continued only by its own experiment and within its
 * steps: another seed or learning rate, or fewer steps than the checkpoint
 * has taken, is refused with a message, and the run directory is left as
 * it was. Keys that may change (steps, eval_every) are accepted. */
Test(density, resume_refuses_another_experiment_and_too_few_steps, .timeout = 120)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    char *dir = make_tmpdir();
    static const char *const half[] = { "train.steps=40", "data.test_size=200", NULL };
    fl_density_result res;
    fl_experiment *e = quickstart(r, half);
    cr_assert_eq(fl_density_train(e, dir, 0, &res), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    size_t lc0, lm0, lc1, lm1;
    char *ck0 = file_bytes(dir, "checkpoint.flc", &lc0), *mt0 = file_bytes(dir, "metrics.csv", &lm0);
    cr_assert(ck0 && mt0);
    static const char *const other_seed[] = { "train.steps=80", "data.test_size=200",
                                              "experiment.seed=3", NULL };
    static const char *const other_lr[] = { "train.steps=80", "data.test_size=200",
                                            "train.lr=0.01", NULL };
    static const char *const too_few[] = { "train.steps=30", "data.test_size=200", NULL };
    const char *const *cases[] = { other_seed, other_lr, too_few };
    const char *why[] = { "saved by a run of another experiment", "another experiment",
                          "at step 40, past the 30 steps of this experiment" };
    for (int i = 0; i < 3; i++) {
        e = quickstart(r, cases[i]);
        fl_err_clear();
        cr_expect_eq(fl_density_train(e, dir, 1, &res), FL_ERR_INVALID, "case %d resumed", i);
        assert_contains(fl_err_msg(), "checkpoint.flc");
        assert_contains(fl_err_msg(), why[i]);
        fl_experiment_free(e);
        char *ck1 = file_bytes(dir, "checkpoint.flc", &lc1), *mt1 = file_bytes(dir, "metrics.csv", &lm1);
        cr_expect(ck1 && lc1 == lc0 && memcmp(ck1, ck0, lc0) == 0, "case %d changed the checkpoint", i);
        cr_expect(mt1 && lm1 == lm0 && memcmp(mt1, mt0, lm0) == 0, "case %d changed metrics.csv", i);
        free(ck1);
        free(mt1);
    }
    /* the keys that may change */
    static const char *const longer[] = { "train.steps=60", "train.eval_every=20",
                                          "data.test_size=200", "eval.batch=700", NULL };
    e = quickstart(r, longer);
    cr_expect_eq(fl_density_train(e, dir, 1, &res), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(res.steps, 60);
    fl_experiment_free(e);
    free(ck0);
    free(mt0);
    remove_tree(dir);
    fl_registry_free(r);
}

/* Occurrences of `needle` in `hay`. */
static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
    return n;
}

/* A run killed after writing metrics rows past its last checkpoint: the
 * resumed run keeps the rows up to the checkpoint, writes the later ones
 * once, and its train_seconds go on from the kept rows'. */
Test(density, a_resumed_run_drops_the_rows_after_its_checkpoint, .timeout = 120)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    char *dir = make_tmpdir();
    static const char *const half[] = { "train.steps=60", "train.eval_every=20",
                                        "data.test_size=200", NULL };
    static const char *const full[] = { "train.steps=100", "train.eval_every=20",
                                        "data.test_size=200", NULL };
    fl_density_result b, c;
    fl_experiment *e = quickstart(r, half);
    cr_assert_eq(fl_density_train(e, dir, 0, &b), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    /* rows the killed run wrote after its checkpoint at step 60 */
    char *mp = fl_strfmt("%s/metrics.csv", dir), *text = NULL;
    size_t len = 0;
    cr_assert_eq(fl_read_file(mp, &text, &len), FL_OK);
    fl_buf m = { 0 };
    fl_buf_write(&m, text, len);
    fl_buf_printf(&m, "80,9,9,9,1000.000\n100,9,9,9,2000.000\n");
    cr_assert_eq(fl_write_atomic(mp, m.data, m.len), FL_OK, "%s", fl_err_msg());
    fl_buf_free(&m);
    free(text);
    e = quickstart(r, full);
    cr_assert_eq(fl_density_train(e, dir, 1, &c), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    cr_assert_eq(fl_read_file(mp, &text, &len), FL_OK);
    const char *steps[] = { "\n20,", "\n40,", "\n60,", "\n80,", "\n100," };
    for (size_t i = 0; i < 5; i++)
        cr_expect_eq(count_of(text, steps[i]), 1, "row%s appears %d times in\n%s", steps[i],
                     count_of(text, steps[i]), text);
    assert_not_contains(text, "1000.000");
    assert_not_contains(text, ",9,9,9,");
    /* train_seconds (the last column) never goes back */
    double prev = 0;
    int rows = 0;
    for (const char *l = strchr(text, '\n'); l && l[1]; l = strchr(l + 1, '\n')) {
        const char *end = strchr(l + 1, '\n'), *c = end;
        while (c > l && c[-1] != ',') c--;
        double t = strtod(c, NULL);
        cr_expect_geq(t, prev, "train_seconds went back to %g after %g:\n%s", t, prev, text);
        prev = t;
        rows++;
    }
    cr_expect_eq(rows, 5);
    cr_expect_geq(c.seconds, b.seconds);
    free(text);
    free(mp);
    remove_tree(dir);
    fl_registry_free(r);
}

/* A run killed after its last checkpoint (before result.json) and resumed:
 * nothing left to train, the first run's results and metrics.csv. */
Test(density, a_run_resumed_at_its_last_step_gives_its_results, .timeout = 120)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    char *dir = make_tmpdir();
    static const char *const sets[] = { "train.steps=50", "train.eval_every=20",
                                        "data.test_size=300", NULL };
    fl_density_result a, b;
    fl_experiment *e = quickstart(r, sets);
    cr_assert_eq(fl_density_train(e, dir, 0, &a), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    char *mp = fl_strfmt("%s/metrics.csv", dir), *before = NULL, *after = NULL;
    char *rp = fl_strfmt("%s/result.json", dir);
    cr_expect(access(rp, F_OK) != 0,
              "fl_density_train wrote result.json (flowlab run writes it after the pictures)");
    free(rp);
    size_t len = 0;
    cr_assert_eq(fl_read_file(mp, &before, &len), FL_OK);
    e = quickstart(r, sets);
    cr_assert_eq(fl_density_train(e, dir, 1, &b), FL_OK, "%s", fl_err_msg());
    fl_experiment_free(e);
    cr_expect_eq(b.steps, 50);
    cr_expect_eq(a.test_nll, b.test_nll, "%.17g against %.17g", a.test_nll, b.test_nll);
    cr_expect_eq(a.test_se, b.test_se);
    cr_expect_neq(b.test_nll, 0);
    /* the training loss and time come from metrics.csv (6 and 3 decimals) */
    cr_expect_leq(fabs(a.train_nll - b.train_nll), 5e-7, "%.9g against %.9g", a.train_nll,
                  b.train_nll);
    cr_expect_leq(fabs(a.seconds - b.seconds), 5e-4);
    cr_assert_eq(fl_read_file(mp, &after, &len), FL_OK);
    cr_expect_str_eq(after, before);
    free(before);
    free(after);
    free(mp);
    remove_tree(dir);
    fl_registry_free(r);
}

/* steps = 0 evaluates the untrained model (also with a parameter average,
 * which has no steps to average yet). */
Test(density, zero_steps_evaluate_the_untrained_model, .timeout = 60)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    char *dir = make_tmpdir();
    static const char *const sets[] = { "train.steps=0", "data.test_size=300", NULL };
    fl_experiment *e = quickstart(r, sets);
    double nll, se;
    fl_real *test = NULL;
    uint64_t n = 0;
    cr_assert_eq(fl_experiment_eval_split(e, FL_SPLIT_TEST, &test, &n), FL_OK);
    cr_assert_eq(fl_density_nll(e, test, n, &nll, &se), FL_OK, "%s", fl_err_msg());
    fl_density_result res;
    cr_assert_eq(fl_density_train(e, dir, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(res.steps, 0);
    cr_expect_eq(res.test_nll, nll, "%.17g against the untrained %.17g", res.test_nll, nll);
    double again, se2;
    cr_assert_eq(fl_density_nll(e, test, n, &again, &se2), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(again, nll, "the model left after 0 steps is not the initial one");
    char *mp = fl_strfmt("%s/metrics.csv", dir), *text = NULL;
    size_t len = 0;
    cr_assert_eq(fl_read_file(mp, &text, &len), FL_OK);
    assert_contains(text, "train_seconds\n0,,");
    free(text);
    free(mp);
    fl_free(test);
    fl_experiment_free(e);
    remove_tree(dir);
    fl_registry_free(r);
}

/* `flowlab run EXP --out DIR --resume` with a DIR that has no checkpoint;
 * returns the exit status, stderr in DIR/../err.txt of `tmp`. */
static int run_resume(const char *tmp, const char *dir)
{
    char *cmd = fl_strfmt("'%s' run '%s/experiments/quickstart.ini' --out '%s' --resume "
                          "--set train.steps=5 --set data.test_size=100 >/dev/null 2>'%s/err.txt'",
                          test_env("FLOWLAB_EXE"), test_env("FLOWLAB_SOURCE_ROOT"), dir, tmp);
    int rc = system(cmd);
    free(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void put_file(const char *dir, const char *name, const char *text)
{
    char *p = fl_strfmt("%s/%s", dir, name);
    cr_assert_eq(fl_write_atomic(p, text, strlen(text)), FL_OK, "%s", fl_err_msg());
    free(p);
}

static int has_file(const char *dir, const char *name)
{
    char *p = fl_strfmt("%s/%s", dir, name);
    int ok = access(p, F_OK) == 0;
    free(p);
    return ok;
}

/* --resume without a checkpoint starts afresh in a directory holding only
 * what a run stopped before its first checkpoint wrote, and refuses one
 * with other files or a finished run's result.json. */
Test(density, resume_without_a_checkpoint_starts_afresh_only_in_a_run_directory,
     .timeout = 120)
{
    char *tmp = make_tmpdir();
    char *dir = fl_strfmt("%s/run", tmp);
    cr_assert_eq(fl_mkdirs(dir), FL_OK);
    put_file(dir, "config.ini", "[experiment]\n");
    put_file(dir, "metrics.csv", "step,train_nll,test_nll,test_nll_se,train_seconds\n");
    put_file(dir, "provenance.json", "{}\n");
    put_file(dir, "metrics.csv.tmp.123", "x");
    char *err = fl_strfmt("%s/err.txt", tmp), *text = NULL;
    size_t len;
    int rc = run_resume(tmp, dir);
    cr_assert_eq(fl_read_file(err, &text, &len), FL_OK);
    cr_expect_eq(rc, 0, "exit %d: %s", rc, text);
    cr_expect(has_file(dir, "result.json") && has_file(dir, "checkpoint.flc"));
    free(text);

    /* a finished run without its checkpoint */
    char *ck = fl_strfmt("%s/checkpoint.flc", dir);
    unlink(ck);
    free(ck);
    rc = run_resume(tmp, dir);
    cr_assert_eq(fl_read_file(err, &text, &len), FL_OK);
    cr_expect_neq(rc, 0);
    assert_contains(text, "result.json");
    free(text);

    /* a file flowlab does not write */
    char *res = fl_strfmt("%s/result.json", dir);
    unlink(res);
    free(res);
    put_file(dir, "notes.txt", "mine\n");
    rc = run_resume(tmp, dir);
    cr_assert_eq(fl_read_file(err, &text, &len), FL_OK);
    cr_expect_neq(rc, 0);
    assert_contains(text, "notes.txt");
    cr_expect(has_file(dir, "notes.txt"));
    free(text);

    free(err);
    remove_tree(dir);
    remove_tree(tmp);
}

/* A registry with the built-in plugins and nan-shift (tests/plugins/nan_flow.c). */
static fl_registry *with_nan_flow(void)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    char *p = fl_strfmt("%s/nan_flow.so", test_env("FLOWLAB_TEST_DIR"));
    cr_assert_eq(fl_registry_load(r, p), FL_OK, "%s", fl_err_msg());
    free(p);
    return r;
}

/* Issue 13: the first non-finite value is traced to the layer that made it,
 * in training (with the step), evaluation and sampling; the training run
 * stops, and its last checkpoint (before the bad step) stays on disk. */
Test(density, a_non_finite_value_names_its_layer_and_keeps_the_last_checkpoint, .timeout = 120)
{
    fl_registry *r = with_nan_flow();
    char *dir = make_tmpdir();
    static const char *const train[] = { "train.steps=20", "train.checkpoint_every=2",
                                         "data.test_size=100", "flow.9.type=nan-shift",
                                         "flow.9.train_call=5", "flow.9.what=logdet", NULL };
    fl_density_result res;
    fl_experiment *e = quickstart(r, train);
    cr_expect_eq(fl_density_train(e, dir, 0, &res), FL_ERR_NUMERIC);
    assert_contains(fl_err_msg(), "[flow.9] nan-shift: non-finite logdet at step 5, row 17 (nan)");
    fl_experiment_free(e);
    char *ck = fl_strfmt("%s/checkpoint.flc", dir);
    uint64_t step = 0;
    fl_checkpoint_run rec;
    cr_assert_eq(fl_checkpoint_peek(ck, &step, &rec), FL_OK, "%s", fl_err_msg());
    cr_expect_eq(step, 4, "the checkpoint on disk is at step %llu, not 4",
                 (unsigned long long)step);
    free(ck);

    /* evaluation: the output of the layer, outside training */
    static const char *const ev[] = { "data.test_size=100", "flow.9.type=nan-shift",
                                      "flow.9.eval=true", NULL };
    e = quickstart(r, ev);
    fl_real x[2 * 40] = { 0 };
    double mean, se;
    cr_expect_eq(fl_density_nll(e, x, 40, &mean, &se), FL_ERR_NUMERIC);
    assert_contains(fl_err_msg(), "[flow.9] nan-shift: non-finite output in evaluation, row 17");
    fl_experiment_free(e);

    /* sampling: the inverse */
    static const char *const inv[] = { "data.test_size=100", "flow.9.type=nan-shift",
                                       "flow.9.inverse=true", NULL };
    e = quickstart(r, inv);
    fl_real out[2 * 40];
    cr_expect_eq(fl_density_sample(e, 40, fl_rng_key_make(1, "t"), out), FL_ERR_NUMERIC);
    assert_contains(fl_err_msg(),
                    "[flow.9] nan-shift: non-finite output in sampling (inverse), row 17");
    fl_experiment_free(e);
    remove_tree(dir);
    fl_registry_free(r);
}

/* Issue 13: the quickstart at lr = 10 diverges: the run stops at a named
 * step, saying the loss diverged, instead of finishing with a test NLL of
 * 1e27. At the default lr it does not stop (diverge_factor's default). */
Test(density, a_diverging_run_stops_and_names_the_step, .timeout = 120)
{
    fl_registry *r = with_nan_flow();
    char *dir = make_tmpdir();
    static const char *const lr10[] = { "train.steps=200", "train.lr=10",
                                        "data.test_size=100", NULL };
    fl_density_result res;
    fl_experiment *e = quickstart(r, lr10);
    cr_expect_eq(fl_density_train(e, dir, 0, &res), FL_ERR_NUMERIC);
    assert_contains(fl_err_msg(), "step ");
    assert_contains(fl_err_msg(), "the training loss diverged");
    fl_experiment_free(e);
    /* a looser factor lets it run on, until its loss is not finite */
    static const char *const off[] = { "train.steps=200", "train.lr=10",
                                       "train.diverge_factor=0", "data.test_size=100", NULL };
    e = quickstart(r, off);
    fl_status st = fl_density_train(e, NULL, 0, &res);
    cr_expect(st != FL_OK || !(res.test_nll < 100),
              "lr = 10 without the check gave a test NLL of %g", res.test_nll);
    fl_experiment_free(e);
    remove_tree(dir);
    fl_registry_free(r);
}

/* [train] grad_blocks (train/dist.h): the blocks cover the batch once, in
 * order, by a rule of B and G alone; an evaluation's share is whole chunks. */
Test(density, grad_blocks_cut_the_batch_into_contiguous_blocks)
{
    for (uint32_t B = 1; B <= 40; B++)
        for (uint32_t G = 1; G <= B; G++) {
            uint32_t next = 0;
            for (uint32_t g = 0; g < G; g++) {
                uint32_t p0, n;
                fl_dist_block_rows(B, G, g, &p0, &n);
                cr_assert_eq(p0, next, "B %u G %u block %u starts at %u", B, G, g, p0);
                cr_assert_gt(n, 0, "B %u G %u block %u is empty", B, G, g);
                next = p0 + n;
            }
            cr_assert_eq(next, B, "B %u G %u: the blocks end at %u", B, G, next);
        }
    uint32_t first, end;
    fl_dist_my_blocks(6, &first, &end); /* one process: every block */
    cr_assert(first == 0 && end == 6);
    uint64_t a, b;
    fl_dist_share(1000, 64, &a, &b);
    cr_assert(a == 0 && b == 1000);
}

/* A step in G = 5 blocks is the one-piece step up to the rounding of the
 * sum, the same every time, and leaves the parameters finite. */
Test(density, grad_blocks_sum_to_the_one_piece_gradient, .timeout = 60)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    static const char *const one[] = { "train.steps=3", "train.batch=100", "data.test_size=200",
                                       NULL };
    static const char *const five[] = { "train.steps=3", "train.batch=100",
                                        "data.test_size=200", "train.grad_blocks=5", NULL };
    fl_experiment *e1 = quickstart(r, one), *e5 = quickstart(r, five), *f5 = quickstart(r, five);
    fl_density_result res;
    cr_assert_eq(fl_density_train(e1, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_density_train(e5, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_density_train(f5, NULL, 0, &res), FL_OK, "%s", fl_err_msg());
    const size_t n = e1->arena.total;
    cr_assert_eq(memcmp(e5->arena.theta, f5->arena.theta, n * sizeof(fl_real)), 0,
                 "grad_blocks = 5 is not repeatable");
    double dmax = 0, tmax = 0;
    for (size_t i = 0; i < n; i++) {
        dmax = fmax(dmax, fabs((double)e1->arena.theta[i] - e5->arena.theta[i]));
        tmax = fmax(tmax, fabs((double)e1->arena.theta[i]));
    }
    /* Adam's first steps move each parameter by about lr = 1e-3 whatever
     * the gradient's size, so rounding shows only far below that. */
    cr_assert_lt(dmax, 1e-5 * fmax(1, tmax), "largest difference %g", dmax);
    fl_experiment_free(e1);
    fl_experiment_free(e5);
    fl_experiment_free(f5);
    fl_registry_free(r);
}

/* grad_blocks beyond the batch, and a batch-coupled layer with blocks,
 * are refused before the first step, naming the key. */
Test(density, grad_blocks_refusals_name_the_key, .timeout = 60)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_ERROR);
    fl_registry *r = load_builtin_plugins();
    static const char *const big[] = { "train.steps=2", "train.batch=4", "train.grad_blocks=5",
                                       "data.test_size=100", NULL };
    fl_experiment *e = quickstart(r, big);
    fl_density_result res;
    cr_assert_eq(fl_density_train(e, NULL, 0, &res), FL_ERR_INVALID);
    cr_assert(strstr(fl_err_msg(), "[train] grad_blocks = 5 exceeds [train] batch = 4"), "%s",
              fl_err_msg());
    fl_experiment_free(e);
    static const char *const bn[] = { "train.steps=2", "train.grad_blocks=2",
                                      "flow.2.type=batch-norm", "data.test_size=100", NULL };
    e = quickstart(r, bn);
    cr_assert_eq(fl_density_train(e, NULL, 0, &res), FL_ERR_INVALID);
    cr_assert(strstr(fl_err_msg(), "[flow.2] batch-norm couples the rows"), "%s", fl_err_msg());
    fl_experiment_free(e);
    fl_registry_free(r);
}
