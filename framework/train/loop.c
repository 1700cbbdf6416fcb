/* loop.c - the one training loop every task shares (loop.h). */
#include "train/loop.h"

#include <math.h>
#include <string.h>

#include "core/log.h"
#include "output/rundir.h"
#include "train/optim.h"
#include "train/resume.h"

/* metrics.csv's columns: the task's, then train_seconds (step comes first
 * by itself). `cols` has room for FL_TRAIN_MAX_COLS + 1. */
static void metrics_columns(const fl_trainer *t, fl_metrics_col *cols)
{
    memcpy(cols, t->cols, t->n_cols * sizeof *cols);
    cols[t->n_cols] = (fl_metrics_col){ "train_seconds", "%.3f" };
}

/* The row of step `done` (train NAN: the closing row, its training column
 * empty), then metrics.csv rewritten when there is a run directory. */
static fl_status metrics_row(fl_experiment *e, const fl_trainer *t, void *run, fl_metrics *m,
                             uint64_t done, double train, double seconds, const char *rundir)
{
    double vals[FL_TRAIN_MAX_COLS + 1];
    t->row(e, run, done, vals);
    vals[t->train_col] = train;
    vals[t->n_cols] = seconds;
    fl_metrics_row(m, done, vals);
    return rundir ? fl_metrics_save(m, rundir) : FL_OK;
}

/* The task's evaluation of the average (when there is one); the iterate
 * goes back for the next step. */
static fl_status evaluate_average(fl_experiment *e, const fl_trainer *t, void *run,
                                  const fl_ema *ema, fl_real *live)
{
    fl_run_use_average(e, ema, live, 1);
    fl_status st = t->evaluate(e, run);
    fl_run_use_average(e, ema, live, 0);
    return st;
}

fl_status fl_train_loop(fl_experiment *e, const fl_trainer *t, void *run, const char *rundir,
                        int resume, fl_train_summary *out)
{
    memset(out, 0, sizeof *out);
    const uint64_t steps = fl_experiment_steps(e);
    const uint64_t eval_every = (uint64_t)fl_exp_int(&e->train, "eval_every");
    const uint64_t ckpt_every = (uint64_t)fl_exp_int(&e->train, "checkpoint_every");
    if (t->n_cols > FL_TRAIN_MAX_COLS || t->train_col >= t->n_cols) {
        fl_err("a task's trainer has %u metrics columns (training column %u); the loop takes "
               "at most %d", t->n_cols, t->train_col, FL_TRAIN_MAX_COLS);
        return FL_ERR_INTERNAL;
    }
    fl_adam opt;
    fl_ema ema;
    fl_real *live;
    fl_status st = fl_run_optim_init(e, &opt, &ema, &live);
    if (st != FL_OK) return st;
    fl_metrics_col cols[FL_TRAIN_MAX_COLS + 1];
    metrics_columns(t, cols);
    fl_metrics metrics;
    fl_metrics_init(&metrics, cols, t->n_cols + 1);
    uint64_t step0 = 0;
    double time0 = 0; /* train_seconds before this session (resumed) */
    if (resume && rundir)
        st = fl_resume_load(e, rundir, &opt, &ema, &step0, &metrics.text, &time0);

    fl_arena_zero_grad(&e->arena); /* then each Adam step clears it (fl_adam_step_zero) */
    double interval_sum = 0, train_time = time0;
    uint64_t interval_n = 0;
    fl_progress prog;
    fl_progress_start(&prog, "train", steps, (uint64_t)fl_exp_int(&e->train, "log_every"));
    char status[160] = "", line[256];
    uint64_t evaluated = UINT64_MAX; /* the step of this session's last evaluation */

    for (uint64_t step = step0; st == FL_OK && step < steps; step++) {
        double t0 = fl_now(), value;
        opt.lr = fl_experiment_lr(e, step);
        st = t->step(e, run, step, &value); /* the task's forward and backward */
        if (st != FL_OK) break;
        fl_adam_step_zero(&opt, e->arena.theta, e->arena.grad);
        fl_ema_update(&ema, e->arena.theta);
        train_time += fl_now() - t0;
        interval_sum += value;
        interval_n++;

        const uint64_t done = step + 1;
        if (done == steps || (eval_every && done % eval_every == 0)) {
            st = evaluate_average(e, t, run, &ema, live);
            if (st != FL_OK) break;
            evaluated = done;
            out->train = interval_sum / (double)interval_n;
            interval_sum = 0;
            interval_n = 0;
            st = metrics_row(e, t, run, &metrics, done, out->train, train_time, rundir);
            if (!prog.tty) {
                t->log(e, run, out->train, line, sizeof line);
                fl_log(FL_LOG_INFO, "step %llu: %s", (unsigned long long)done, line);
            }
        }
        if (st == FL_OK && rundir && ckpt_every && done % ckpt_every == 0 && done != steps)
            st = fl_run_save(e, rundir, &opt, &ema, done);
        t->status(e, run, done, steps, value, status, sizeof status);
        fl_progress_update(&prog, done, status);
    }
    fl_progress_end(&prog);

    if (st == FL_OK && evaluated != steps) {
        /* No evaluation at `steps` in this session: steps = 0 (the untrained
         * model), or resumed from a checkpoint at the last step (saved
         * before a final evaluation, which a kill may interrupt). */
        st = evaluate_average(e, t, run, &ema, live);
        const fl_buf *text = &metrics.text;
        if (st == FL_OK && !isnan(fl_metrics_lookup(text->data, text->len, steps, "step"))) {
            /* the row is there (the killed run wrote it): its training value */
            double tr = fl_metrics_lookup(text->data, text->len, steps, t->cols[t->train_col].name);
            out->train = isnan(tr) ? 0 : tr;
        } else if (st == FL_OK) {
            st = metrics_row(e, t, run, &metrics, steps, NAN, train_time, rundir);
        }
    }
    out->steps = opt.t;
    out->session_steps = opt.t - step0;
    out->seconds = train_time;
    out->session_seconds = train_time - time0;
    if (st == FL_OK && rundir) st = fl_run_save(e, rundir, &opt, &ema, opt.t);
    if (st == FL_OK) fl_run_use_average(e, &ema, live, 1); /* leave the evaluated model */
    fl_metrics_free(&metrics);
    fl_run_optim_free(&opt, &ema, live);
    return st;
}
