/* loop.c - the one training loop every task shares (loop.h). */
#include "train/loop.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hostimpl.h"
#include "core/log.h"
#include "model/stack.h"
#include "output/rundir.h"
#include "train/dist.h"
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

/* [train] grad_blocks = G against the batch, the ranks and the layers:
 * every rank needs a block, every block a point, and no layer may couple
 * the rows of a batch (a block's gradient must not depend on the others). */
static fl_status check_blocks(const fl_experiment *e, uint32_t G)
{
    const int N = fl_dist_size();
    if (G > e->batch) {
        fl_err("%s: [train] grad_blocks = %u exceeds [train] batch = %u: every block needs a "
               "point", e->cfg->path, G, e->batch);
        return FL_ERR_INVALID;
    }
    if ((uint32_t)N > G) {
        fl_err("%s: %d ranks (mpirun -n %d) need [train] grad_blocks >= %d, and it is %u: set "
               "it to a multiple of every rank count you use (e.g. --set train.grad_blocks=%d); "
               "the result depends on grad_blocks only, never on the ranks",
               e->cfg->path, N, N, N, G, N == 2 || N == 3 ? 6 : N);
        return FL_ERR_INVALID;
    }
    const fl_stack *flows = e->task->flows ? e->task->flows(e) : NULL;
    for (size_t i = 0; G > 1 && flows && i < flows->n; i++) {
        const fl_layer *l = &flows->L[i];
        if (!(l->cls->flags & FL_FLOW_BATCH_COUPLED)) continue;
        char sec[128];
        snprintf(sec, sizeof sec, "%s", l->cx->path);
        char *dot = strchr(sec, '.');
        if (dot && (dot = strchr(dot + 1, '.'))) *dot = 0; /* flow.1.3 -> flow.1 */
        fl_err("%s: [%s] %s couples the rows of a batch (batch statistics), so a block's "
               "gradient would depend on the other blocks: [train] grad_blocks = %u needs "
               "row-independent layers; use grad_blocks = 1 (one process) or a layer without "
               "batch statistics (e.g. actnorm)",
               e->cfg->path, sec, l->cls->base.name, G);
        return FL_ERR_INVALID;
    }
    return FL_OK;
}

/* A layer with state its training forward sets from the rows it sees
 * (actnorm's data-dependent initialisation): the first step computes the
 * whole batch once on every rank, discarding the gradient, so the state is
 * the one-piece batch's on every rank and for any grad_blocks. */
static int has_state(const fl_arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->p[i].flags & FL_PARAM_STATE) return 1;
    return 0;
}

/* Rank 0's training state on every rank after a resume: parameters,
 * Adam, the average, the step and the open interval. */
static void share_state(fl_experiment *e, fl_adam *opt, fl_ema *ema, uint64_t *step0,
                        double *time0, fl_checkpoint_run *rec)
{
    if (fl_dist_size() == 1) return;
    const size_t bytes = e->arena.total * sizeof(fl_real);
    fl_dist_bcast0(e->arena.theta, bytes);
    fl_dist_bcast0(opt->m, bytes);
    fl_dist_bcast0(opt->v, bytes);
    fl_dist_bcast0(&opt->t, sizeof opt->t);
    if (ema->avg) fl_dist_bcast0(ema->avg, ema->n * sizeof(fl_real));
    fl_dist_bcast0(&ema->t, sizeof ema->t);
    fl_dist_bcast0(step0, sizeof *step0);
    fl_dist_bcast0(time0, sizeof *time0);
    fl_dist_bcast0(rec, sizeof *rec);
}

/* Every rank holds the same parameters (the sum and Adam are the same
 * everywhere; a layer that updates state from its own rows would break it). */
static fl_status same_everywhere(const fl_experiment *e, uint64_t done)
{
    int r;
    if (fl_dist_same(fl_dist_hash(e->arena.theta, e->arena.total * sizeof(fl_real)), &r))
        return FL_OK;
    fl_err("step %llu: rank %d's parameters differ from rank 0's: a layer changes its state "
           "from the rows it sees; train it with [train] grad_blocks = 1 on one process",
           (unsigned long long)done, r);
    return FL_ERR_INTERNAL;
}

/* Early stopping and best.flc after the evaluation of step `done`, while
 * the evaluated model (the average with [train] ema) is in theta: a better
 * figure than the best so far is recorded in `rec` (the checkpoints' run
 * record) and, with `keep`, its model written to rundir/best.flc; another
 * counts as a bad evaluation. *stop = 1 after `patience` bad ones in a row
 * (0 = never). Rank 0 decides for every rank. */
static fl_status track_best(fl_experiment *e, const fl_trainer *t, void *run, uint64_t done,
                            const char *rundir, int keep, uint64_t patience,
                            fl_checkpoint_run *rec, int *stop)
{
    double loss = NAN;
    t->monitor(e, run, &loss);
    fl_status st = FL_OK;
    if (isfinite(loss) && (rec->best_step == 0 || loss < rec->best)) {
        rec->best = loss;
        rec->best_step = done;
        rec->bad_evals = 0;
        if (rundir && keep) {
            char *path = fl_strfmt("%s/best.flc", rundir);
            st = path ? fl_checkpoint_save(path, &e->arena, NULL, NULL, done) : FL_ERR_NOMEM;
            free(path);
        }
    } else {
        rec->bad_evals++;
    }
    *stop = patience && rec->bad_evals >= patience;
    fl_dist_bcast0(rec, sizeof *rec);
    fl_dist_bcast0(stop, sizeof *stop);
    return st;
}

/* [train] patience without a validation figure: one line naming the key. */
static fl_status refuse_patience(const fl_experiment *e, const fl_trainer *t, uint64_t patience)
{
    const fl_cfg_section *sec = fl_config_section(e->cfg, "train");
    char where[512];
    fl_config_where(e->cfg, sec, sec ? fl_config_entry(sec, "patience") : NULL, where,
                    sizeof where);
    char why[320];
    if (t->monitor && e->data_type)
        snprintf(why, sizeof why, "[data] %s has none", e->data_type);
    else snprintf(why, sizeof why, "the %s task has none", e->task->name);
    fl_err("%s: [train] patience = %llu needs a validation split to watch, and %s (stopping "
           "on the test split would bias the test figure); set [train] patience = 0",
           where, (unsigned long long)patience, why);
    return FL_ERR_INVALID;
}

fl_status fl_train_loop(fl_experiment *e, const fl_trainer *t, void *run, const char *rundir,
                        int resume, fl_train_summary *out)
{
    memset(out, 0, sizeof *out);
    const uint64_t steps = fl_experiment_steps(e);
    const uint64_t eval_every = (uint64_t)fl_exp_int(&e->train, "eval_every");
    const uint64_t ckpt_every = (uint64_t)fl_exp_int(&e->train, "checkpoint_every");
    const uint64_t patience = (uint64_t)fl_exp_int(&e->train, "patience");
    const int keep_best = fl_exp_int(&e->train, "keep_best") != 0;
    const double decay = fl_exp_real(&e->train, "weight_decay");
    const char *mon = t->monitor ? t->monitor(e, run, NULL) : NULL;
    if (patience && !mon) return refuse_patience(e, t, patience);
    if (t->n_cols > FL_TRAIN_MAX_COLS || t->train_col >= t->n_cols) {
        fl_err("a task's trainer has %u metrics columns (training column %u); the loop takes "
               "at most %d", t->n_cols, t->train_col, FL_TRAIN_MAX_COLS);
        return FL_ERR_INTERNAL;
    }
    /* The batch in G fixed blocks (train/dist.h); this rank's are [b0, b1). */
    const uint32_t G = (uint32_t)fl_exp_int(&e->train, "grad_blocks"), B = e->batch;
    uint32_t b0, b1;
    fl_dist_my_blocks(G, &b0, &b1);
    fl_dist_grad red;
    fl_adam opt;
    fl_ema ema;
    fl_clip clip;
    fl_real *live;
    memset(&red, 0, sizeof red);
    memset(&clip, 0, sizeof clip);
    fl_status st = check_blocks(e, G);
    if (st == FL_OK) st = fl_dist_grad_init(&red, e->arena.total, G);
    if (st == FL_OK)
        st = fl_clip_init(&clip, e->arena.total, fl_exp_real(&e->train, "clip_norm"));
    const int have_opt = st == FL_OK && (st = fl_run_optim_init(e, &opt, &ema, &live)) == FL_OK;
    st = fl_dist_agree(st); /* a rank that cannot start stops every rank */
    if (st != FL_OK) {
        if (have_opt) fl_run_optim_free(&opt, &ema, live);
        fl_clip_free(&clip);
        fl_dist_grad_free(&red);
        return st;
    }
    fl_metrics_col cols[FL_TRAIN_MAX_COLS + 1];
    metrics_columns(t, cols);
    fl_metrics metrics;
    fl_metrics_init(&metrics, cols, t->n_cols + 1);
    uint64_t step0 = 0;
    double time0 = 0; /* train_seconds before this session (resumed) */
    /* The checkpoints' run record: the experiment's hash (a resume refuses
     * another experiment) and the open evaluation interval (a resumed run's
     * next training mean is the uninterrupted run's). */
    fl_checkpoint_run rec = { 0, 0, 0, 0, 0, 0 };
    if (rundir) st = fl_resume_hash(e, &rec.config_hash);
    if (st == FL_OK && resume && rundir) {
        const uint64_t hash = rec.config_hash;
        st = fl_resume_load(e, rundir, &opt, &ema, &step0, &metrics.text, &time0, &rec);
        rec.config_hash = hash;
    }
    /* Only rank 0 has a run directory: it resumes, the others take its state. */
    int writes = rundir != NULL;
    fl_dist_bcast0(&writes, sizeof writes);
    st = fl_dist_agree(st);
    if (st == FL_OK) share_state(e, &opt, &ema, &step0, &time0, &rec);
    if (st == FL_OK && G > 1 && step0 == 0 && has_state(&e->arena)) {
        double ignored;
        fl_arena_zero_grad(&e->arena);
        fl_stack_set_step(1);
        st = fl_dist_agree(t->step(e, run, 0, 0, B, &ignored));
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

    uint64_t saved = step0; /* the last checkpoint (for a stopped rank's line) */
    uint64_t sum_bytes = 0;  /* bytes this rank moved for the gradient sums */
    /* a run killed after early stopping ended it stops again at once */
    int stop = mon && patience && rec.best_step && rec.bad_evals >= patience;
    for (uint64_t step = step0; st == FL_OK && !stop && step < steps; step++) {
        double t0 = fl_now(), value = 0;
        opt.lr = fl_experiment_lr(e, step);
        fl_stack_set_step(step + 1); /* a layer's non-finite value names the step */
        fl_dist_note(step + 1, saved);
        /* The task's forward and backward on each of this rank's blocks,
         * then every rank's blocks summed in block order (train/dist.h). */
        for (uint32_t g = b0; st == FL_OK && g < b1; g++) {
            uint32_t p0, n;
            double v;
            fl_dist_block_rows(B, G, g, &p0, &n);
            if (g > b0) fl_arena_zero_grad(&e->arena);
            st = t->step(e, run, step, p0, n, &v);
            if (st == FL_OK) fl_dist_grad_add(&red, g - b0, e->arena.grad, v);
        }
        if (st != FL_OK) name_step(step + 1);
        uint64_t sent0, got0, sent1, got1; /* the sum's traffic, for the closing line */
        fl_dist_traffic(&sent0, &got0);
        st = fl_dist_grad_reduce(&red, st, e->arena.grad, &value);
        fl_dist_traffic(&sent1, &got1);
        sum_bytes += (sent1 - sent0) + (got1 - got0);
        if (st == FL_OK) st = check_value(&dv, step + 1, value, rundir);
        if (st != FL_OK) {
            st = fl_dist_agree(st); /* the same on every rank: printed by rank 0 alone */
            break;
        }
        fl_clip_grad(&clip, e->arena.grad); /* the same sum on every rank: no exchange */
        fl_weight_decay(&e->arena, e->arena.theta, opt.lr * decay);
        fl_adam_step_zero(&opt, e->arena.theta, e->arena.grad);
        fl_ema_update(&ema, e->arena.theta);
        train_time += fl_now() - t0;
        interval_sum += value;
        interval_n++;

        const uint64_t done = step + 1;
        const int eval_now = done == steps || (eval_every && done % eval_every == 0);
        const int ckpt_now = ckpt_every && done % ckpt_every == 0 && done != steps && !stop;
        if (eval_now) {
            fl_run_use_average(e, &ema, live, 1);
            st = t->evaluate(e, run);
            if (st == FL_OK && mon)
                st = track_best(e, t, run, done, rundir, keep_best, patience, &rec, &stop);
            fl_run_use_average(e, &ema, live, 0);
            if (st == FL_OK) {
                evaluated = done;
                out->train = interval_sum / (double)interval_n;
                interval_sum = 0;
                interval_n = 0;
                st = metrics_row(e, t, run, &metrics, done, out->train, train_time, rundir);
            }
            if (st == FL_OK && !prog.tty) {
                t->log(e, run, out->train, line, sizeof line);
                fl_log(FL_LOG_INFO, "step %llu: %s", (unsigned long long)done, line);
            }
            if (st == FL_OK && stop)
                fl_log(FL_LOG_INFO, "step %llu: early stopping: %s has not improved for %llu "
                       "evaluations ([train] patience); the best, %.6g, was at step %llu%s",
                       (unsigned long long)done, mon, (unsigned long long)rec.bad_evals,
                       t->train_is_bound ? -rec.best : rec.best,
                       (unsigned long long)rec.best_step,
                       rundir && keep_best ? " (best.flc)" : "");
            st = fl_dist_agree(st); /* rank 0's writes can fail alone: every rank learns it */
        }
        if (st == FL_OK && ckpt_now) st = same_everywhere(e, done);
        if (st == FL_OK && rundir && ckpt_now)
            st = save(e, rundir, &opt, &ema, done, &rec, interval_sum, interval_n);
        if (ckpt_now) st = fl_dist_agree(st);
        if (st == FL_OK && ckpt_now && writes) saved = dv.last_save = done;
        t->status(e, run, done, steps, value, status, sizeof status);
        fl_progress_update(&prog, done, status);
    }
    fl_progress_end(&prog);

    const uint64_t last = opt.t; /* steps, or fewer after early stopping */
    if (st == FL_OK && evaluated != last) {
        /* No evaluation at the last step in this session: steps = 0 (the
         * untrained model), or resumed from a checkpoint at the last step
         * (saved before a final evaluation, which a kill may interrupt). */
        st = evaluate_average(e, t, run, &ema, live);
        const fl_buf *text = &metrics.text;
        if (st == FL_OK && !isnan(fl_metrics_lookup(text->data, text->len, last, "step"))) {
            /* the row is there (the killed run wrote it): its training value */
            double tr = fl_metrics_lookup(text->data, text->len, last, t->cols[t->train_col].name);
            out->train = isnan(tr) ? 0 : tr;
        } else if (st == FL_OK) {
            st = metrics_row(e, t, run, &metrics, last, NAN, train_time, rundir);
        }
    }
    out->monitor = mon;
    out->best = mon ? rec.best : 0;
    out->best_step = mon ? rec.best_step : 0;
    out->stopped_early = stop;
    if (st == FL_OK && clip.clipped)
        fl_log(FL_LOG_INFO, "[train] clip_norm = %g scaled the gradient down in %llu of %llu "
               "steps", clip.max_norm, (unsigned long long)clip.clipped,
               (unsigned long long)(opt.t - step0));
    st = fl_dist_agree(st);
    out->steps = opt.t;
    out->session_steps = opt.t - step0;
    out->seconds = train_time;
    out->session_seconds = train_time - time0;
    if (st == FL_OK) st = same_everywhere(e, opt.t);
    if (st == FL_OK && rundir)
        st = save(e, rundir, &opt, &ema, opt.t, &rec, interval_sum, interval_n);
    st = fl_dist_agree(st);
    if (st == FL_OK && writes) fl_dist_note(opt.t, opt.t);
    if (st == FL_OK && fl_dist_size() > 1 && out->session_steps) {
        uint64_t sent, got;
        fl_dist_traffic(&sent, &got);
        fl_log(FL_LOG_INFO, "rank %d of %d: the gradient sums moved %.0f bytes a step (in and "
               "out; the gradient is %zu bytes); %.3g MB sent and %.3g MB received in all",
               fl_dist_rank(), fl_dist_size(), (double)sum_bytes / (double)out->session_steps,
               e->arena.total * sizeof(fl_real), (double)sent / 1e6, (double)got / 1e6);
    }
    fl_stack_set_step(0); /* what follows is evaluation or sampling */
    if (st == FL_OK) fl_run_use_average(e, &ema, live, 1); /* leave the evaluated model */
    fl_metrics_free(&metrics);
    fl_run_optim_free(&opt, &ema, live);
    fl_clip_free(&clip);
    fl_dist_grad_free(&red);
    return st;
}
