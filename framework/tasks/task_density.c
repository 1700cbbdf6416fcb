/* task_density.c - the density task: train, evaluate, sample. */
#include "tasks/task_density.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/checkpoint.h"
#include "core/log.h"
#include "train/optim.h"
#include "train/resume.h"
#include "output/rundir.h"
#include "core/util.h"

#define HALF_LOG_2PI 0.91893853320467274178

/* -log N(u; 0, I) - logdet for one row, in double. */
static double row_nll(const fl_real *u, uint32_t d, fl_real logdet)
{
    double q = 0;
    for (uint32_t j = 0; j < d; j++) q += (double)u[j] * u[j];
    return 0.5 * q + d * HALF_LOG_2PI - (double)logdet;
}

fl_status fl_density_nll(fl_experiment *e, const fl_real *x, uint64_t n, double *mean, double *se)
{
    uint32_t d = e->info.dim, chunk = e->eval_batch;
    fl_real *logdet = fl_alloc(chunk * sizeof(fl_real));
    if (!logdet) return FL_ERR_NOMEM;
    double s = 0, s2 = 0;
    fl_status st = FL_OK;
    for (uint64_t i = 0; i < n && st == FL_OK; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        memset(logdet, 0, m * sizeof(fl_real));
        const fl_real *u;
        st = fl_stack_forward(e->stack, m, FL_MODE_EVAL, x + i * d, NULL, logdet, &u);
        for (uint32_t r = 0; st == FL_OK && r < m; r++) {
            double v = row_nll(u + (size_t)r * d, d, logdet[r]);
            s += v;
            s2 += v * v;
        }
    }
    fl_free(logdet);
    if (st != FL_OK) return st;
    double mu = s / (double)n, var = n > 1 ? (s2 - s * mu) / (double)(n - 1) : 0;
    *mean = mu;
    *se = var > 0 ? sqrt(var / (double)n) : 0;
    if (!isfinite(mu)) {
        fl_err("the test negative log-likelihood is not finite");
        return FL_ERR_NUMERIC;
    }
    return FL_OK;
}

fl_status fl_density_train(fl_experiment *e, const char *rundir, int resume,
                           fl_density_result *res)
{
    memset(res, 0, sizeof *res);
    const uint32_t d = e->info.dim, B = e->batch;
    const uint64_t steps = fl_experiment_steps(e);
    const uint64_t eval_every = (uint64_t)fl_exp_int(&e->train, "eval_every");
    const uint64_t ckpt_every = (uint64_t)fl_exp_int(&e->train, "checkpoint_every");
    fl_adam opt;
    fl_ema ema;
    fl_real *live;
    fl_status st = fl_run_optim_init(e, &opt, &ema, &live);
    if (st != FL_OK) return st;

    /* Every buffer of the step is allocated here, once. */
    fl_real *x = fl_alloc((size_t)B * d * sizeof(fl_real));
    fl_real *du = fl_alloc((size_t)B * d * sizeof(fl_real));
    fl_real *logdet = fl_alloc(B * sizeof(fl_real));
    fl_real *dlogdet = fl_alloc(B * sizeof(fl_real));
    fl_real *test = NULL;
    uint64_t n_test = 0;
    fl_buf metrics = { 0 };
    if (st == FL_OK && (!x || !du || !logdet || !dlogdet)) st = FL_ERR_NOMEM;
    if (st == FL_OK) st = fl_experiment_eval_split(e, FL_SPLIT_TEST, &test, &n_test);
    uint64_t step0 = 0;
    double time0 = 0; /* train_seconds before this session (resumed) */
    if (st == FL_OK && resume && rundir)
        st = fl_resume_load(e, rundir, &opt, &ema, &step0, &metrics, &time0);
    if (metrics.len == 0)
        fl_buf_printf(&metrics, "step,train_nll,test_nll,test_nll_se,train_seconds\n");

    const fl_real inv_b = (fl_real)(1.0 / B);
    for (uint32_t i = 0; st == FL_OK && i < B; i++) dlogdet[i] = -inv_b;
    fl_arena_zero_grad(&e->arena); /* then each Adam step clears it (fl_adam_step_zero) */
    double interval_sum = 0, train_time = time0;
    uint64_t interval_n = 0;
    fl_progress prog;
    fl_progress_start(&prog, "train", steps, (uint64_t)fl_exp_int(&e->train, "log_every"));
    char status[128] = "";
    uint64_t evaluated = UINT64_MAX; /* the step of this session's last evaluation */

    for (uint64_t step = step0; st == FL_OK && step < steps; step++) {
        double t0 = fl_now();
        opt.lr = fl_experiment_lr(e, step);
        st = fl_experiment_train_batch(e, step, B, x);
        if (st != FL_OK) break;
        memset(logdet, 0, B * sizeof(fl_real));
        const fl_real *u;
        st = fl_stack_forward(e->stack, B, FL_MODE_TRAIN, x, NULL, logdet, &u);
        if (st != FL_OK) break;
        double loss = 0;
        for (uint32_t r = 0; r < B; r++) {
            loss += row_nll(u + (size_t)r * d, d, logdet[r]);
            for (uint32_t j = 0; j < d; j++) du[(size_t)r * d + j] = u[(size_t)r * d + j] * inv_b;
        }
        loss /= B;
        if (!isfinite(loss)) {
            fl_err("step %llu: the training loss is not finite (%g); lower [train] lr or bound "
                   "the flow's scales",
                   (unsigned long long)step + 1, loss);
            st = FL_ERR_NUMERIC;
            break;
        }
        st = fl_stack_backward(e->stack, B, FL_MODE_TRAIN, NULL, du, dlogdet, NULL, NULL);
        if (st != FL_OK) break;
        fl_adam_step_zero(&opt, e->arena.theta, e->arena.grad);
        fl_ema_update(&ema, e->arena.theta);
        train_time += fl_now() - t0;
        interval_sum += loss;
        interval_n++;

        uint64_t done = step + 1;
        int eval_now = done == steps || (eval_every && done % eval_every == 0);
        if (eval_now) {
            double nll, se;
            fl_run_use_average(e, &ema, live, 1); /* evaluate the average ... */
            st = fl_density_nll(e, test, n_test, &nll, &se);
            fl_run_use_average(e, &ema, live, 0); /* ... go on from the iterate */
            if (st != FL_OK) break;
            evaluated = done;
            res->train_nll = interval_sum / (double)interval_n;
            res->test_nll = nll;
            res->test_se = se;
            fl_buf_printf(&metrics, "%llu,%.6f,%.6f,%.6f,%.3f\n", (unsigned long long)done,
                          res->train_nll, nll, se, train_time);
            interval_sum = 0;
            interval_n = 0;
            if (rundir) st = fl_rundir_write(rundir, "metrics.csv", metrics.data, metrics.len);
            if (!prog.tty)
                fl_log(FL_LOG_INFO, "step %llu: train NLL %.4f, test NLL %.4f +- %.4f",
                       (unsigned long long)done, res->train_nll, nll, se);
        }
        if (st == FL_OK && rundir && ckpt_every && done % ckpt_every == 0 && done != steps)
            st = fl_run_save(e, rundir, &opt, &ema, done);
        if (res->test_nll != 0) snprintf(status, sizeof status, "loss %.4f  test %.4f", loss, res->test_nll);
        else snprintf(status, sizeof status, "loss %.4f", loss);
        fl_progress_update(&prog, done, status);
    }
    fl_progress_end(&prog);
    if (st == FL_OK && evaluated != steps) {
        /* No evaluation at `steps` in this session: steps = 0 (the untrained
         * model), or resumed from a checkpoint at the last step. */
        fl_run_use_average(e, &ema, live, 1);
        st = fl_density_nll(e, test, n_test, &res->test_nll, &res->test_se);
        fl_run_use_average(e, &ema, live, 0);
        if (st == FL_OK && !isnan(fl_metrics_field(&metrics, steps, 0))) {
            /* the row is there (the killed run wrote it): its training loss */
            double tr = fl_metrics_field(&metrics, steps, 1);
            res->train_nll = isnan(tr) ? 0 : tr;
        } else if (st == FL_OK) {
            fl_buf_printf(&metrics, "%llu,,%.6f,%.6f,%.3f\n", (unsigned long long)steps,
                          res->test_nll, res->test_se, train_time);
            if (rundir) st = fl_rundir_write(rundir, "metrics.csv", metrics.data, metrics.len);
        }
    }
    res->steps = opt.t;
    res->seconds = train_time;
    res->steps_per_s =
        train_time > time0 ? (double)(opt.t - step0) / (train_time - time0) : 0;
    if (st == FL_OK && rundir) st = fl_run_save(e, rundir, &opt, &ema, opt.t);
    /* Leave the model as evaluated: the average when there is one. */
    if (st == FL_OK) fl_run_use_average(e, &ema, live, 1);
    fl_buf_free(&metrics);
    fl_free(test);
    fl_free(x);
    fl_free(du);
    fl_free(logdet);
    fl_free(dlogdet);
    fl_run_optim_free(&opt, &ema, live);
    return st;
}

fl_status fl_density_write_result(fl_experiment *e, const char *dir, const fl_density_result *res)
{
    fl_buf js = { 0 };
    fl_buf_printf(&js,
                  "{\n  \"task\": \"density\",\n  \"data\": \"%s\",\n  \"test_nll\": %.6f,\n"
                  "  \"test_nll_se\": %.6f,\n  \"test_rows\": %llu,\n  \"train_nll\": %.6f,\n"
                  "  \"steps\": %llu,\n  \"train_seconds\": %.3f,\n  \"steps_per_second\": "
                  "%.1f,\n  \"parameters\": %zu\n}\n",
                  e->data_type, res->test_nll, res->test_se,
                  (unsigned long long)e->info.n[FL_SPLIT_TEST], res->train_nll,
                  (unsigned long long)res->steps, res->seconds, res->steps_per_s, e->arena.count);
    fl_status st = js.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "result.json", js.data, js.len);
    fl_buf_free(&js);
    return st;
}

fl_status fl_density_sample(fl_experiment *e, uint64_t n, fl_rng_key key, fl_real *out)
{
    uint32_t d = e->info.dim, chunk = e->max_rows;
    fl_real *u = fl_alloc((size_t)chunk * d * sizeof(fl_real));
    if (!u) return FL_ERR_NOMEM;
    fl_status st = FL_OK;
    for (uint64_t i = 0; i < n && st == FL_OK; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        fl_rng_normal(key, 0, i * d, (size_t)m * d, u);
        st = fl_stack_inverse(e->stack, m, FL_MODE_EVAL, u, NULL, out + i * d, NULL);
    }
    fl_free(u);
    return st;
}
