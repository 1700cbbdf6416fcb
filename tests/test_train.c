/* test_train.c - the training extras of issue 20 item 6: warm-up and the
 * cosine schedule, decoupled weight decay (AdamW), gradient-norm clipping,
 * early stopping and best.flc, and their cross-key refusals; --unset. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "core/config.h"
#include "model/experiment.h"
#include "output/rundir.h"
#include "tasks/task.h"
#include "tasks/task_density.h"
#include "train/checkpoint.h"
#include "train/optim.h"

static fl_experiment *build(fl_registry *r, const char *text, const char *const *sets)
{
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "exp.ini", text, sets, &e), FL_OK, "%s", fl_err_msg());
    return e;
}

/* ---- learning-rate schedules ------------------------------------------ */

Test(schedule, warmup_then_cosine_at_given_steps)
{
    fl_registry *r = load_builtin_plugins();
    static const char *const sets[] = { "train.schedule=cosine", "train.warmup=2",
                                        "train.lr=1e-2", "train.lr_min=1e-3", NULL };
    fl_experiment *e = build(r, coupling_moons_ini, sets);
    /* warm-up: (s + 1) / 2 of lr; then lr_min + (lr - lr_min)(1 + cos(pi p)) / 2,
     * p = (s - 2) / (10 - 2) */
    cr_assert_float_eq(fl_experiment_lr(e, 0), 0.5e-2, 1e-15);
    cr_assert_float_eq(fl_experiment_lr(e, 1), 1e-2, 1e-15);
    cr_assert_float_eq(fl_experiment_lr(e, 2), 1e-2, 1e-15);
    cr_assert_float_eq(fl_experiment_lr(e, 6), 1e-3 + 9e-3 * 0.5, 1e-15);
    cr_assert_float_eq(fl_experiment_lr(e, 9),
                       1e-3 + 9e-3 * 0.5 * (1 + cos(3.14159265358979323846 * 7.0 / 8.0)),
                       1e-15);
    for (uint64_t s = 3; s < 10; s++)
        cr_assert_lt(fl_experiment_lr(e, s), fl_experiment_lr(e, s - 1), "step %llu",
                     (unsigned long long)s);
    fl_experiment_free(e);
    fl_registry_free(r);
}

Test(schedule, warmup_on_a_constant_rate)
{
    fl_registry *r = load_builtin_plugins();
    static const char *const sets[] = { "train.warmup=4", "train.lr=2e-3", NULL };
    fl_experiment *e = build(r, coupling_moons_ini, sets);
    for (uint64_t s = 0; s < 4; s++)
        cr_assert_float_eq(fl_experiment_lr(e, s), 2e-3 * (double)(s + 1) / 4.0, 1e-15);
    cr_assert_float_eq(fl_experiment_lr(e, 4), 2e-3, 1e-15);
    cr_assert_float_eq(fl_experiment_lr(e, 9), 2e-3, 1e-15);
    fl_experiment_free(e);
    fl_registry_free(r);
}

/* Bad values: one line naming the file, the line and the key. */
static void refused(const char *from, const char *to, const char *const *want)
{
    fl_registry *r = load_builtin_plugins();
    const char *p = strstr(coupling_moons_ini, from);
    cr_assert_not_null(p);
    char *text = fl_strfmt("%.*s%s%s", (int)(p - coupling_moons_ini), coupling_moons_ini, to, p + strlen(from));
    fl_experiment *e = NULL;
    fl_err_clear();
    cr_assert_neq(experiment_from_text(r, "exp.ini", text, NULL, &e), FL_OK, "%s accepted", to);
    cr_assert_null(e);
    const char *msg = fl_err_msg();
    cr_assert_null(strchr(msg, '\n'), "not one line: %s", msg);
    for (size_t i = 0; want[i]; i++)
        cr_assert_not_null(strstr(msg, want[i]), "'%s' not in: %s", want[i], msg);
    free(text);
    fl_registry_free(r);
}

Test(schedule, bad_values_are_refused_naming_file_line_and_key)
{
    const char *const neg_wd[] = { "exp.ini:16", "weight_decay", NULL };
    refused("batch = 64\n", "batch = 64\nweight_decay = -0.1\n", neg_wd);
    const char *const neg_clip[] = { "exp.ini:16", "clip_norm", NULL };
    refused("batch = 64\n", "batch = 64\nclip_norm = -1\n", neg_clip);
    const char *const bad_sched[] = { "exp.ini:16", "schedule", "cosine", NULL };
    refused("batch = 64\n", "batch = 64\nschedule = cosin\n", bad_sched);
    const char *const neg_warm[] = { "exp.ini:16", "warmup", NULL };
    refused("batch = 64\n", "batch = 64\nwarmup = -5\n", neg_warm);
    const char *const neg_pat[] = { "exp.ini:16", "patience", NULL };
    refused("batch = 64\n", "batch = 64\npatience = -1\n", neg_pat);
    const char *const lr_min[] = { "exp.ini:17", "lr_min", "exceeds lr", NULL };
    refused("batch = 64\n", "batch = 64\nschedule = cosine\nlr_min = 0.5\n", lr_min);
    const char *const pat_end[] = { "exp.ini:17", "patience", "eval_every", NULL };
    refused("batch = 64\n", "batch = 64\neval_every = 0\npatience = 3\n", pat_end);
}

/* ---- AdamW and clipping, by hand -------------------------------------- */

/* One AdamW step on four values: two trained, one state slice, one padding
 * entry. theta' = theta (1 - lr wd) - lr mhat / (sqrt(vhat) + eps) on the
 * trained ones; state and padding keep their values. */
Test(adamw, one_step_matches_the_hand_formula)
{
    fl_param_rec recs[2] = { { .name = "w", .offset = 0, .size = 2 },
                             { .name = "running", .offset = 2, .size = 1,
                               .flags = FL_PARAM_STATE } };
    fl_real theta[4] = { 1.5f, -2, 3, 4 }, grad[4] = { 0.5f, -0.25f, 0, 0 };
    fl_arena a = { .p = recs, .n = 2, .total = 4, .count = 3, .theta = theta, .grad = grad };
    const double lr = 0.1, wd = 0.2, eps = 1e-8;
    fl_adam o;
    cr_assert_eq(fl_adam_init(&o, 4, lr, 0.9, 0.999, eps), FL_OK);
    fl_weight_decay(&a, theta, lr * wd);
    fl_adam_step(&o, theta, grad);
    const double t0[2] = { 1.5, -2 }, g[2] = { 0.5, -0.25 };
    for (int i = 0; i < 2; i++) {
        /* first step: mhat = g, vhat = g^2 */
        const double want = t0[i] * (1 - lr * wd) - lr * g[i] / (fabs(g[i]) + eps);
        cr_assert_float_eq(theta[i], want, 1e-6, "theta[%d] = %.9g, want %.9g", i,
                           (double)theta[i], want);
    }
    cr_assert_eq(theta[2], 3, "a state slice is not decayed");
    cr_assert_eq(theta[3], 4, "padding is not decayed");
    fl_adam_free(&o);
}

Test(clip, scales_the_gradient_down_to_the_norm)
{
    fl_real g[2] = { 3, 4 };
    fl_clip c;
    cr_assert_eq(fl_clip_init(&c, 2, 1.0), FL_OK);
    const double norm = fl_clip_grad(&c, g); /* once: the assertion macros repeat */
    cr_assert_float_eq(norm, 5.0, 1e-12);
    cr_assert_float_eq(g[0], 0.6, 1e-6);
    cr_assert_float_eq(g[1], 0.8, 1e-6);
    cr_assert_eq(c.clipped, 1, "clipped %llu", (unsigned long long)c.clipped);
    /* within the bound: untouched */
    fl_real h[2] = { 0.3f, 0.4f };
    const double within = fl_clip_grad(&c, h);
    cr_assert_float_eq(within, 0.5, 1e-6);
    cr_assert_eq(h[0], 0.3f);
    cr_assert_eq(h[1], 0.4f);
    cr_assert_eq(c.clipped, 1);
    fl_clip_free(&c);
}

/* The norm of a gradient long enough to be cut over threads: the same
 * bits for 1 and 4 threads, and the clipped norm is the bound. */
Test(clip, the_same_bits_for_any_thread_count)
{
    const size_t n = 1u << 20;
    fl_real *g1 = malloc(n * sizeof *g1), *g4 = malloc(n * sizeof *g4);
    cr_assert(g1 && g4);
    for (size_t i = 0; i < n; i++) g1[i] = g4[i] = (fl_real)sin((double)i * 0.37) * 0.01f;
    fl_clip c1, c4;
    cr_assert_eq(fl_clip_init(&c1, n, 0.5), FL_OK);
    cr_assert_eq(fl_clip_init(&c4, n, 0.5), FL_OK);
    const int before = omp_get_max_threads();
    omp_set_num_threads(1);
    const double n1 = fl_clip_grad(&c1, g1);
    omp_set_num_threads(4);
    const double n4 = fl_clip_grad(&c4, g4);
    omp_set_num_threads(before);
    cr_assert_eq(n1, n4, "norm %.17g with 1 thread, %.17g with 4", n1, n4);
    cr_assert_gt(n1, 0.5);
    cr_assert_eq(memcmp(g1, g4, n * sizeof *g1), 0, "clipped gradients differ");
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g1[i] * g1[i];
    cr_assert_float_eq(sqrt(s), 0.5, 1e-4);
    fl_clip_free(&c1);
    fl_clip_free(&c4);
    free(g1);
    free(g4);
}

/* ---- the keys through the training loop ------------------------------- */

/* theta after training `sets` on coupling_moons_ini (steps as set), into a new array. */
static fl_real *trained(const char *const *sets, size_t *total, fl_density_result *res)
{
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = build(r, coupling_moons_ini, sets);
    fl_density_result tmp;
    cr_assert_eq(fl_density_train(e, NULL, 0, res ? res : &tmp), FL_OK, "%s", fl_err_msg());
    *total = e->arena.total;
    fl_real *out = malloc(*total * sizeof *out);
    cr_assert_not_null(out);
    memcpy(out, e->arena.theta, *total * sizeof *out);
    fl_experiment_free(e);
    fl_registry_free(r);
    return out;
}

/* One step of the loop with weight decay is the plain step plus the decay
 * term: theta_wd - theta_plain = -lr wd theta0 on every trained entry. */
Test(loop, weight_decay_is_decoupled_on_one_step)
{
    static const char *const s0[] = { "train.steps=0", NULL };
    static const char *const s1[] = { "train.steps=1", "train.lr=0.01", NULL };
    static const char *const s1wd[] = { "train.steps=1", "train.lr=0.01",
                                        "train.weight_decay=0.5", NULL };
    size_t n0, n1, n2;
    fl_real *t0 = trained(s0, &n0, NULL), *t1 = trained(s1, &n1, NULL);
    fl_real *t2 = trained(s1wd, &n2, NULL);
    cr_assert(n0 == n1 && n1 == n2);
    size_t decayed = 0;
    for (size_t i = 0; i < n0; i++) {
        const double want = (double)t1[i] - 0.01 * 0.5 * (double)t0[i];
        cr_assert_float_eq(t2[i], want, 1e-6, "entry %zu: %.9g, want %.9g", i, (double)t2[i],
                           want);
        decayed += t0[i] != 0;
    }
    cr_assert_gt(decayed, 0);
    free(t0);
    free(t1);
    free(t2);
}

/* A bound far above any gradient changes nothing; a small one changes the
 * run (Adam is scale-invariant on one step, not over several). */
Test(loop, clip_norm_changes_only_what_it_bounds)
{
    static const char *const off[] = { "train.steps=5", NULL };
    static const char *const high[] = { "train.steps=5", "train.clip_norm=1e20", NULL };
    static const char *const low[] = { "train.steps=5", "train.clip_norm=1e-3", NULL };
    size_t n;
    fl_real *a = trained(off, &n, NULL), *b = trained(high, &n, NULL), *c = trained(low, &n, NULL);
    cr_assert_eq(memcmp(a, b, n * sizeof *a), 0, "an unreached bound changed the run");
    cr_assert_neq(memcmp(a, c, n * sizeof *a), 0, "a bound below the norms changed nothing");
    free(a);
    free(b);
    free(c);
}

/* lr = 0: the validation figure never improves after the first
 * evaluation, so patience = 3 with an evaluation every 2 steps stops at
 * step 2 + 3 x 2 = 8. */
Test(loop, early_stopping_stops_after_patience_evaluations)
{
    static const char *const sets[] = { "train.steps=100", "train.lr=0", "train.eval_every=2",
                                        "train.patience=3", NULL };
    size_t n;
    fl_density_result res;
    free(trained(sets, &n, &res));
    cr_assert_eq(res.steps, 8);
    cr_assert_eq(res.stopped_early, 1);
    cr_assert_eq(res.best_step, 2);
    cr_assert_float_eq(res.best_valid_nll, res.valid_nll, 1e-12);
}

Test(loop, patience_needs_a_validation_split)
{
    fl_registry *r = load_builtin_plugins();
    /* csv data with no validation part would do too; the vi task has none */
    static const char *const text = "[experiment]\ntask = vi\n\n[target]\ntype = u1\n\n"
                                    "[flow.1]\ntype = planar\n\n[train]\nsteps = 4\n"
                                    "batch = 8\npatience = 2\n";
    fl_experiment *e = build(r, text, NULL);
    fl_err_clear();
    void *run = NULL;
    fl_train_summary s;
    cr_assert_eq(fl_task_train(e, NULL, 0, &run, &s), FL_ERR_INVALID);
    const char *msg = fl_err_msg();
    cr_assert_not_null(strstr(msg, "exp.ini:13"), "%s", msg);
    cr_assert_not_null(strstr(msg, "patience"), "%s", msg);
    cr_assert_not_null(strstr(msg, "validation split"), "%s", msg);
    if (run) fl_task_of(e)->run_free(run);
    fl_experiment_free(e);
    fl_registry_free(r);
}

/* ---- --unset ------------------------------------------------------------ */

Test(unset, removes_a_key_or_a_section)
{
    fl_config *c = NULL;
    cr_assert_eq(fl_config_parse("exp.ini", coupling_moons_ini, &c), FL_OK);
    cr_assert_eq(fl_config_unset(c, "flow.1.hidden"), FL_OK, "%s", fl_err_msg());
    cr_assert_null(fl_config_entry(fl_config_section(c, "flow.1"), "hidden"));
    cr_assert_not_null(fl_config_entry(fl_config_section(c, "flow.1"), "repeat"));
    cr_assert_eq(fl_config_unset(c, "flow.1"), FL_OK, "%s", fl_err_msg());
    cr_assert_null(fl_config_section(c, "flow.1"));
    cr_assert_not_null(fl_config_section(c, "train"));
    /* then a --set describes the layer afresh */
    cr_assert_eq(fl_config_set(c, "flow.1.type=maf"), FL_OK);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    cr_assert_eq(fl_experiment_new(r, c, &e), FL_OK, "%s", fl_err_msg());
    cr_assert_str_eq(fl_density_flows(e)->L[0].cls->base.name, "maf");
    fl_experiment_free(e);
    fl_registry_free(r);
}

Test(unset, a_name_that_matches_nothing_is_refused)
{
    fl_config *c = NULL;
    cr_assert_eq(fl_config_parse("exp.ini", coupling_moons_ini, &c), FL_OK);
    cr_assert_eq(fl_config_unset(c, "flow.1.hiden"), FL_ERR_INVALID);
    cr_assert_not_null(strstr(fl_err_msg(), "[flow.1] of exp.ini has no key hiden"), "%s",
                       fl_err_msg());
    cr_assert_eq(fl_config_unset(c, "flow.7.hidden"), FL_ERR_INVALID);
    cr_assert_not_null(strstr(fl_err_msg(), "no section [flow.7]"), "%s", fl_err_msg());
    cr_assert_eq(fl_config_unset(c, "nosuch"), FL_ERR_INVALID);
    fl_config_free(c);
}

/* ---- progress lines -------------------------------------------------- */

/* An evaluation's progress (log_every = 0) draws only on a terminal: into
 * a log file (stderr here is a pipe) it writes nothing, where a training
 * progress with log_every = 10 writes its lines. */
Test(progress, log_every_zero_writes_nothing_off_a_terminal, .init = cr_redirect_stderr)
{
    fl_progress p;
    fl_progress_start(&p, "eval", 100, 0);
    cr_assert_eq(p.tty, 0);
    for (uint64_t i = 1; i <= 100; i++) fl_progress_update(&p, i, "");
    fl_progress_end(&p);
    fflush(stderr);
    cr_assert_stderr_eq_str("");
}

Test(progress, log_every_ten_writes_ten_lines, .init = cr_redirect_stderr)
{
    fl_progress p;
    fl_progress_start(&p, "train", 100, 10);
    for (uint64_t i = 1; i <= 100; i++) fl_progress_update(&p, i, "");
    fl_progress_end(&p);
    fflush(stderr);
    cr_assert_stderr_neq_str("");
}
