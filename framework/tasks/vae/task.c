/* task.c - the vae task's table entry (fl_task_vae) and what `flowlab run`
 * does after training: the test evaluation, result.json, the summary. */
#include "tasks/vae/vae.h"

#include <stdio.h>

#include "core/util.h"
#include "output/json.h"
#include "output/rundir.h"

fl_status fl_vae_write_result(fl_experiment *e, const char *dir, const fl_vae_result *res,
                              const fl_vae_eval *ev)
{
    fl_vae *v = fl_vae_of(e);
    fl_buf js = { 0 };
    fl_json w;
    fl_json_begin(&w, &js);
    fl_json_key_str(&w, "task", "vae");
    fl_json_key_str(&w, "data", e->data_type);
    fl_json_key_str(&w, "estimator", v->est.rec->cls.base.name);
    fl_json_key_uint(&w, "k", v->k);
    fl_json_key_num(&w, "train_bound", res->train_bound, "%.6f");
    fl_json_key_num(&w, "valid_elbo", res->valid_elbo, "%.6f");
    fl_json_key_num(&w, "valid_iwae", res->valid_iwae, "%.6f");
    fl_json_key_int(&w, "valid_k", fl_exp_int(&e->eval, "valid_k"));
    if (res->best_step) { /* a validation split: the best periodic figure */
        fl_json_key_num(&w, "best_valid_iwae", res->best_valid_iwae, "%.6f");
        fl_json_key_uint(&w, "best_step", res->best_step);
        fl_json_key_int(&w, "stopped_early", res->stopped_early);
    }
    fl_json_key_uint(&w, "steps", res->steps);
    fl_json_key_num(&w, "train_seconds", res->seconds, "%.3f");
    fl_json_key_num(&w, "examples_per_second", res->examples_per_s, "%.1f");
    fl_json_key_uint(&w, "parameters", e->arena.count);
    if (ev) { /* the test evaluation, when there was one */
        fl_json_key_uint(&w, "test_k", ev->k);
        fl_json_key_uint(&w, "test_points", ev->n);
        fl_json_key_num(&w, "test_log_likelihood", ev->ll, "%.6f");
        fl_json_key_num(&w, "test_log_likelihood_se", ev->ll_se, "%.6f");
        fl_json_key_num(&w, "test_elbo", ev->elbo, "%.6f");
        fl_json_key_num(&w, "test_kl", ev->kl, "%.6f");
        fl_json_key_num(&w, "test_ess", ev->ess, "%.3f");
        fl_json_key_uint(&w, "active_units", ev->active_units);
        fl_json_key_num(&w, "eval_seconds", ev->seconds, "%.3f");
    }
    fl_status st = fl_json_end(&w);
    if (st == FL_OK) st = fl_rundir_write(dir, "result.json", js.data, js.len);
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
               .prepare = fl_vae_prepare,
               .build = fl_vae_build,
               .free = fl_vae_free,
               .flows = fl_vae_flows },
    .section_keys = fl_vae_section_keys,
    .trainer = { .cols = fl_vae_columns,
                 .n_cols = FL_VAE_N_COLS,
                 .train_col = 0,
                 .train_is_bound = 1,
                 .step = fl_vae_step,
                 .evaluate = fl_vae_validate,
                 .row = fl_vae_row,
                 .log = fl_vae_log,
                 .status = fl_vae_status,
                 .monitor = fl_vae_monitor },
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
    .logprob = fl_vae_logprob,
    .gradvar = 1,
};
