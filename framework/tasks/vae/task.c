/* task.c - the vae task's table entry (fl_task_vae) and what `flowlab run`
 * does after training: the test evaluation, result.json, the summary. */
#include "tasks/vae/vae.h"

#include <stdio.h>

#include "core/util.h"
#include "output/rundir.h"

fl_status fl_vae_write_result(fl_experiment *e, const char *dir, const fl_vae_result *res,
                              const fl_vae_eval *ev)
{
    fl_vae *v = fl_vae_of(e);
    fl_buf js = { 0 };
    fl_buf_printf(&js,
                  "{\n  \"task\": \"vae\",\n  \"data\": \"%s\",\n  \"estimator\": \"%s\",\n"
                  "  \"k\": %u,\n  \"train_bound\": %.6f,\n  \"valid_elbo\": %.6f,\n"
                  "  \"valid_iwae\": %.6f,\n  \"valid_k\": %lld,\n  \"steps\": %llu,\n"
                  "  \"train_seconds\": %.3f,\n  \"examples_per_second\": %.1f,\n"
                  "  \"parameters\": %zu",
                  e->data_type, v->est.rec->cls.base.name, v->k, res->train_bound,
                  res->valid_elbo, res->valid_iwae, (long long)fl_exp_int(&e->eval, "valid_k"),
                  (unsigned long long)res->steps, res->seconds, res->examples_per_s,
                  e->arena.count);
    if (ev)
        fl_buf_printf(&js,
                      ",\n  \"test_k\": %llu,\n  \"test_points\": %llu,\n"
                      "  \"test_log_likelihood\": %.6f,\n  \"test_log_likelihood_se\": %.6f,\n"
                      "  \"test_elbo\": %.6f,\n  \"test_kl\": %.6f,\n  \"test_ess\": %.3f,\n"
                      "  \"active_units\": %u,\n  \"eval_seconds\": %.3f",
                      (unsigned long long)ev->k, (unsigned long long)ev->n, ev->ll, ev->ll_se,
                      ev->elbo, ev->kl, ev->ess, ev->active_units, ev->seconds);
    fl_buf_printf(&js, "\n}\n");
    fl_status st = js.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "result.json", js.data, js.len);
    fl_buf_free(&js);
    return st;
}

static void vae_describe(const fl_experiment *e, char *buf, size_t cap)
{
    uint32_t k;
    const char *est = fl_vae_estimator(e, &k);
    snprintf(buf, cap, "vae on %s, estimator %s (k = %u), %zu flow layers", e->data_type, est,
             k, fl_vae_of(e)->flows->n);
}

/* The training summary, then the test evaluation ([eval] at_end). */
static fl_status vae_finish(fl_experiment *e, void *run, const fl_train_summary *s,
                            const char *dir)
{
    fl_vae_run *r = run;
    const fl_vae_result res = fl_vae_result_of(e, run, s);
    printf("train bound %.3f; validation ELBO %.3f, IWAE-%lld %.3f; %llu steps in %.1f s, %.0f "
           "examples/s\n",
           res.train_bound, res.valid_elbo, (long long)fl_exp_int(&e->eval, "valid_k"),
           res.valid_iwae, (unsigned long long)res.steps, res.seconds, res.examples_per_s);
    if (!fl_values_get(&e->eval, "at_end")->i) return FL_OK;
    fl_status st = fl_vae_evaluate(e, FL_SPLIT_TEST, (uint64_t)fl_exp_int(&e->eval, "k"),
                                   (uint64_t)fl_exp_int(&e->eval, "n"), dir, &r->test);
    if (st != FL_OK) return st;
    r->tested = 1;
    printf("test evaluation (eval.json):\n");
    fl_vae_print_eval(&r->test);
    return FL_OK;
}

static fl_status vae_result(fl_experiment *e, void *run, const fl_train_summary *s,
                            const char *dir)
{
    const fl_vae_run *r = run;
    const fl_vae_result res = fl_vae_result_of(e, run, s);
    return fl_vae_write_result(e, dir, &res, r->tested ? &r->test : NULL);
}

static void vae_report(const fl_experiment *e, void *run, const fl_train_summary *s,
                       const char *dir)
{
    (void)e;
    (void)run;
    (void)s;
    printf("pictures: %s/{samples,reconstructions,curves}.png\nrun directory %s\n", dir, dir);
}

static const char *const sections[] = { "data",      "encoder",   "decoder",
                                        "posterior", "likelihood", "prior",
                                        "estimator", "encoder.2", "decoder.2", NULL };

const fl_task fl_task_vae = {
    .model = { .name = "vae",
               .help = "a variational autoencoder (encoder, posterior with optional flows, "
                       "decoder) trained with an estimator",
               .sections = sections,
               .eval_keys = fl_vae_eval_keys,
               .n_eval_keys = FL_VAE_N_EVAL_KEYS,
               .data = 1,
               .build = fl_vae_build,
               .free = fl_vae_free,
               .flows = fl_vae_flows },
    .section_keys = fl_vae_section_keys,
    .trainer = { .cols = fl_vae_columns,
                 .n_cols = FL_VAE_N_COLS,
                 .train_col = 0,
                 .step = fl_vae_step,
                 .evaluate = fl_vae_validate,
                 .row = fl_vae_row,
                 .log = fl_vae_log,
                 .status = fl_vae_status },
    .run_new = fl_vae_run_new,
    .run_free = fl_vae_run_free,
    .describe = vae_describe,
    .finish = vae_finish,
    .write_result = vae_result,
    .report = vae_report,
    .plot = fl_vae_plot_cmd,
    .sample_dim = fl_vae_sample_dim,
    .sample = fl_vae_sample_cmd,
    .eval = fl_vae_eval_cmd,
    .gradvar = 1,
};
