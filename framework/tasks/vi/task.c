/* task.c - the vi task's table entry (fl_task_vi) and what `flowlab run`
 * does after training. */
#include "tasks/vi/vi.h"

#include <stdio.h>

#include "output/plot.h"

static void vi_describe(const fl_experiment *e, char *buf, size_t cap)
{
    snprintf(buf, cap, "vi on %s, %zu flow layers", e->data_type, fl_vi_of(e)->flows->n);
}

static fl_status vi_result(fl_experiment *e, void *run, const fl_train_summary *s,
                           const char *dir)
{
    fl_vi_result res = fl_vi_result_of(run, s);
    return fl_vi_write_result(e, dir, &res);
}

static void vi_report(const fl_experiment *e, void *run, const fl_train_summary *s,
                      const char *dir)
{
    fl_vi_result vr = fl_vi_result_of(run, s);
    fl_vi_report(e, &vr, stdout);
    printf("ELBO %.4f +- %.4f, KL %.4f; %llu steps in %.2f s, %.0f steps/s; run directory "
           "%s\n",
           vr.elbo, vr.elbo_se, vr.kl, (unsigned long long)vr.steps, vr.seconds,
           vr.steps_per_s, dir);
}

static fl_status vi_plot(fl_experiment *e, const char *dir, const char **files)
{
    *files = fl_vi_of(e)->info.dim == 2 ? "{target,density,samples,curves}.png" : "curves.png";
    return fl_plot_vi(e, dir);
}

static uint32_t vi_sample_dim(const fl_experiment *e) { return fl_vi_of(e)->info.dim; }

/* samples of the fitted posterior q */
static fl_status vi_sample_cmd(fl_experiment *e, uint64_t n, uint64_t seed, fl_real *out)
{
    return fl_vi_sample(e, n, fl_rng_key_make(seed, "sample"), out, NULL);
}

static const char *const sections[] = { "target", "estimator", "vi", NULL };

const fl_task fl_task_vi = {
    .model = { .name = "vi",
               .help = "fit a flow posterior to an unnormalised [target]",
               .sections = sections,
               .data = 0,
               .build = fl_vi_build,
               .free = fl_vi_free,
               .flows = fl_vi_flows },
    .section_keys = fl_vi_section_keys,
    .trainer = { .cols = fl_vi_columns,
                 .n_cols = FL_VI_N_COLS,
                 .train_col = 1,
                 .train_is_bound = 1,
                 .step = fl_vi_step,
                 .evaluate = fl_vi_validate,
                 .row = fl_vi_row,
                 .log = fl_vi_log,
                 .status = fl_vi_status },
    .run_new = fl_vi_run_new,
    .run_free = fl_vi_run_free,
    .describe = vi_describe,
    .write_result = vi_result,
    .report = vi_report,
    .plot = vi_plot,
    .sample_dim = vi_sample_dim,
    .sample = vi_sample_cmd,
};
