/* loop.c - the one training loop every task shares (loop.h). */
#include "train/loop.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "model/stack.h"
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

/* Divergence: the loss's running mean against its best so far. Reads the
 * step values only, so a healthy run's numbers are unchanged. */
typedef struct diverge {
    double factor;      /* [train] diverge_factor; 0 = off */
    int bound;          /* the step value is a bound (loss = -value) */
    double mean;        /* running mean of the loss (decay 0.9, ~10 steps) */
    double best;        /* the lowest running mean so far */
    uint64_t best_step, last_save;
} diverge;

/* Stops on a non-finite step value or a divergence, naming step `done`. */
static fl_status check_value(diverge *d, uint64_t done, double value, const char *rundir)
{
    const char *what = d->bound ? "bound" : "loss";
    char kept[600] = "";
    if (rundir && d->last_save)
        snprintf(kept, sizeof kept, "; %s/checkpoint.flc (step %llu) is kept", rundir,
                 (unsigned long long)d->last_save);
    if (!isfinite(value)) {
        fl_err("step %llu: the training %s is not finite (%g); lower [train] lr%s",
               (unsigned long long)done, what, value, kept);
        return FL_ERR_NUMERIC;
    }
    const double loss = d->bound ? -value : value;
    d->mean = done == 1 || isnan(d->mean) ? loss : 0.9 * d->mean + 0.1 * loss;
    if (isnan(d->best) || d->mean < d->best) {
        d->best = d->mean;
        d->best_step = done;
    }
    if (d->factor > 0 && d->mean - d->best > d->factor * fmax(1.0, fabs(d->best))) {
        const double sg = d->bound ? -1 : 1;
        fl_err("step %llu: the training %s diverged: its running mean %.6g is more than "
               "[train] diverge_factor = %g x max(1, |best|) %s its best, %.6g at step %llu; "
               "lower [train] lr, or raise diverge_factor (0 = off)%s",
               (unsigned long long)done, what, sg * d->mean, d->factor,
               d->bound ? "below" : "above", sg * d->best, (unsigned long long)d->best_step,
               kept);
        return FL_ERR_NUMERIC;
    }
    return FL_OK;
}

/* Every parameter (and the average) finite before a checkpoint is
 * written: a checkpoint is never replaced by a diverged model. */
static fl_status params_finite(const fl_experiment *e, const fl_ema *ema, uint64_t done)
{
    const fl_arena *a = &e->arena;
    for (int which = 0; which < 2; which++) {
        const fl_real *v = which ? ema->avg : a->theta;
        if (!v) continue;
        for (size_t i = 0; i < a->n; i++) {
            const fl_param_rec *p = &a->p[i];
            for (size_t j = 0; j < p->size; j++)
                if (!isfinite(v[p->offset + j])) {
                    fl_err("step %llu: %s %s[%zu] is not finite (%g): the run diverged, and "
                           "the checkpoint is not overwritten; lower [train] lr",
                           (unsigned long long)done, which ? "the average of parameter" :
                           "parameter", p->name, j, (double)v[p->offset + j]);
                    return FL_ERR_NUMERIC;
                }
        }
    }
    return FL_OK;
}

/* A checkpoint at step `done`, with the open evaluation interval, once every
 * parameter is checked finite (a diverged model never replaces the last
 * good checkpoint). */
static fl_status save(fl_experiment *e, const char *rundir, const fl_adam *opt,
                      const fl_ema *ema, uint64_t done, fl_checkpoint_run *rec,
                      double interval_sum, uint64_t interval_n)
{
    rec->interval_sum = interval_sum;
    rec->interval_n = interval_n;
    fl_status st = params_finite(e, ema, done);
    return st == FL_OK ? fl_run_save(e, rundir, opt, ema, done, rec) : st;
}

/* A component's failure inside step `done` (e.g. an estimator's NaN) gets
 * the step in front, unless the message names it already: a task's own
 * "step N: ..." or a flow layer's "... at step N, row R" (model/stack.c). */
static void name_step(uint64_t done)
{
    const char *msg = fl_err_msg();
    if (strncmp(msg, "step ", 5) == 0 || strstr(msg, " at step ")) return;
    char *m = fl_strdup(fl_err_msg());
    if (m) fl_err("step %llu: %s", (unsigned long long)done, m);
    free(m);
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
    /* The checkpoints' run record: the experiment's hash (a resume refuses
     * another experiment) and the open evaluation interval (a resumed run's
     * next training mean is the uninterrupted run's). */
    fl_checkpoint_run rec = { 0, 0, 0 };
    if (rundir) st = fl_resume_hash(e, &rec.config_hash);
    if (st == FL_OK && resume && rundir) {
        const uint64_t hash = rec.config_hash;
        st = fl_resume_load(e, rundir, &opt, &ema, &step0, &metrics.text, &time0, &rec);
        rec.config_hash = hash;
    }

    fl_arena_zero_grad(&e->arena); /* then each Adam step clears it (fl_adam_step_zero) */
    double interval_sum = rec.interval_sum, train_time = time0;
    uint64_t interval_n = rec.interval_n;
    fl_progress prog;
    fl_progress_start(&prog, "train", steps, (uint64_t)fl_exp_int(&e->train, "log_every"));
    char status[160] = "", line[256];
    uint64_t evaluated = UINT64_MAX; /* the step of this session's last evaluation */
    diverge dv = { fl_exp_real(&e->train, "diverge_factor"), t->train_is_bound, NAN, NAN, 0,
                   step0 };

    for (uint64_t step = step0; st == FL_OK && step < steps; step++) {
        double t0 = fl_now(), value;
        opt.lr = fl_experiment_lr(e, step);
        fl_stack_set_step(step + 1); /* a layer's non-finite value names the step */
        st = t->step(e, run, step, &value); /* the task's forward and backward */
        if (st != FL_OK) name_step(step + 1);
        if (st == FL_OK) st = check_value(&dv, step + 1, value, rundir);
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
        if (st == FL_OK && rundir && ckpt_every && done % ckpt_every == 0 && done != steps) {
            st = save(e, rundir, &opt, &ema, done, &rec, interval_sum, interval_n);
            if (st == FL_OK) dv.last_save = done;
        }
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
    if (st == FL_OK && rundir)
        st = save(e, rundir, &opt, &ema, opt.t, &rec, interval_sum, interval_n);
    fl_stack_set_step(0); /* what follows is evaluation or sampling */
    if (st == FL_OK) fl_run_use_average(e, &ema, live, 1); /* leave the evaluated model */
    fl_metrics_free(&metrics);
    fl_run_optim_free(&opt, &ema, live);
    return st;
}
