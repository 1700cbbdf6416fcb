/* loop.h - the one training loop every task shares.
 *
 * The loop owns what is the same for every task: Adam and the learning-rate
 * schedule, resuming from a run directory, metrics.csv (header and rows),
 * the progress line, the checkpoint cadence, the parameter average (ema)
 * swapped in for evaluations, the evaluation cadence and the closing
 * "evaluate when the last step was not evaluated" block. A task supplies
 * its step and its evaluation through an fl_trainer (tasks/task.h puts one
 * in every task table entry). */
#ifndef FL_LOOP_H
#define FL_LOOP_H

#include "model/experiment.h"
#include "output/metrics.h"

/* The most metrics.csv columns a task may have (between `step` and
 * `train_seconds`, both the loop's). */
#define FL_TRAIN_MAX_COLS 32

/* A task's side of the loop. `run` is the task's per-run state (its step
 * buffers, evaluation data and last results), made before fl_train_loop
 * and freed after it by the task. Every hook may assume the experiment was
 * built by the same task. */
typedef struct fl_trainer {
    const fl_metrics_col *cols; /* the task's metrics.csv columns, between the loop's
                                   `step` and `train_seconds` (n_cols of them) */
    uint32_t n_cols;            /* at most FL_TRAIN_MAX_COLS */
    uint32_t train_col;         /* cols[train_col] is the mean of the step values
                                   over the evaluation interval, filled by the loop
                                   (empty in the row of a closing evaluation) */
    int train_is_bound;         /* 1: the step value is a bound to maximise (vae, vi; the
                                   loss is its negative), 0: a loss to minimise; the
                                   divergence check ([train] diverge_factor) reads it */
    /* Training step `step` (from 0) on points p0 .. p0+n-1 of its batch of
     * [train] batch = B points (a point's k samples included; the whole
     * batch is p0 = 0, n = B): the gradient of those points' share of the
     * batch-mean loss (their terms divided by B, not n) into the arena's
     * grad (zero on entry), their share of the step's value (loss or bound,
     * the cols[train_col] column's) into *value. A point's data and noise
     * must not depend on the range it is computed in ([train] grad_blocks,
     * train/dist.h). Allocates nothing. Errors set fl_err (e.g. a
     * non-finite loss names the step). */
    fl_status (*step)(fl_experiment *e, void *run, uint64_t step, uint32_t p0, uint32_t n,
                      double *value);
    /* The periodic evaluation, at the parameters in the arena (the loop has
     * swapped the average in): results kept in `run`. */
    fl_status (*evaluate)(fl_experiment *e, void *run);
    /* The values of the task's columns for the row of step `done` (after
     * an evaluation): vals[i] for cols[i], NAN for none (an empty field);
     * vals[train_col] is the loop's to fill. */
    void (*row)(fl_experiment *e, void *run, uint64_t done, double *vals);
    /* The log line after an evaluation when stderr is not a terminal (the
     * loop writes "step N: " before it); `train` is the interval mean. */
    void (*log)(fl_experiment *e, void *run, double train, char *buf, size_t cap);
    /* The progress line's status after step `done` of `steps`, from the
     * step's value; may leave buf as it is (then the last one stays). */
    void (*status)(fl_experiment *e, void *run, uint64_t done, uint64_t steps, double value,
                   char *buf, size_t cap);
    /* Optional (NULL = none): the validation figure early stopping ([train]
     * patience) and best.flc ([train] keep_best) follow. Returns its name
     * for messages ("valid_nll"), or NULL when this run has no validation
     * split; with `loss` not NULL (after an evaluation) puts the last
     * evaluation's figure there as a loss, lower is better. */
    const char *(*monitor)(const fl_experiment *e, void *run, double *loss);
} fl_trainer;

/* What the loop hands back. */
typedef struct fl_train_summary {
    double train;           /* mean step value over the last evaluation interval (0 when
                               this session took no step; when resumed at the end, the
                               metrics row's) */
    uint64_t steps;         /* optimizer steps in all (the checkpoint's) */
    uint64_t session_steps; /* steps taken by this session (after a resume) */
    double seconds;         /* training time, earlier sessions included (no evaluation) */
    double session_seconds; /* this session's training time */
    const char *monitor;    /* the trainer's validation figure, NULL = none (then the
                               next three are 0) */
    double best;            /* its best value as a loss (the trainer's monitor) */
    uint64_t best_step;     /* the step of that evaluation (best.flc's model); 0 = none */
    int stopped_early;      /* 1: [train] patience ended training before its steps */
} fl_train_summary;

/* Trains e for fl_experiment_steps(e) steps with t's step, or fewer when
 * the trainer's validation figure (t->monitor) has not improved for [train]
 * patience evaluations (early stopping). Each step's gradient is clipped
 * to [train] clip_norm and the parameters decayed by [train] weight_decay
 * (AdamW) before the Adam step at fl_experiment_lr. Stops with
 * FL_ERR_NUMERIC (fl_err naming the step) when a step value is not finite,
 * when the running mean of the loss rises more than [train] diverge_factor
 * x max(1, |best|) above its best, or when the parameters are not finite
 * at a checkpoint: nothing is saved then, so rundir keeps its last good
 * checkpoint. With `rundir`
 * (may be NULL) writes metrics.csv after every evaluation and
 * checkpoint.flc at [train] checkpoint_every and at the end (atomically);
 * with `resume` first continues from rundir/checkpoint.flc when there is
 * one. Evaluates every [train] eval_every steps and at the last step (also
 * when resumed there). With a validation figure and [train] keep_best,
 * writes rundir/best.flc (the evaluated model alone, no optimizer state)
 * at every evaluation that improves on the best so far; the best value,
 * its step and the evaluations since are in the checkpoint's run record,
 * so a resumed run stops where the uninterrupted one would. Leaves the evaluated model (the average with [train]
 * ema > 0) in the arena. Allocates the optimizer state and metrics text
 * before the first step, nothing inside it. Errors: the step's, the
 * evaluation's, resume and write failures (fl_err set). */
fl_status fl_train_loop(fl_experiment *e, const fl_trainer *t, void *run, const char *rundir,
                        int resume, fl_train_summary *out);

#endif
