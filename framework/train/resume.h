/* resume.h - a run's training state on disk and the parameter average:
 * checkpoints, resuming an interrupted run, evaluating the average. */
#ifndef FL_RESUME_H
#define FL_RESUME_H

#include "model/experiment.h"
#include "train/optim.h"
#include "core/util.h"

/* When `rundir` holds checkpoint.flc: restores parameters, optimizer and
 * parameter average from it (the experiment must be built from the run's
 * config), sets *step0 to its step and appends to `metrics` the header and
 * the rows of the run's metrics.csv up to step0, verbatim (rows after the
 * checkpoint are the resumed run's to write again; fl_metrics_keep). Pass
 * an fl_metrics writer's `text` as `metrics` to go on writing rows.
 * *train_seconds gets the last kept row's train_seconds, so the resumed
 * run's clock goes on from there. Without a checkpoint, *step0 = 0,
 * *train_seconds = 0 and nothing changes. Errors: those of fl_checkpoint_load (mismatched model,
 * corrupt file), with fl_err naming the file. */
fl_status fl_resume_load(fl_experiment *e, const char *rundir, fl_adam *opt, fl_ema *ema,
                         uint64_t *step0, fl_buf *metrics, double *train_seconds);

/* Writes dir/checkpoint.flc (atomically): parameters, optimizer, average
 * (see checkpoint.h), at `step`. */
fl_status fl_run_save(fl_experiment *e, const char *dir, const fl_adam *opt, const fl_ema *ema,
                      uint64_t step);

/* The optimizer state of a run, from [train]: Adam (lr, beta1, beta2, eps)
 * over all parameters, the parameter average (ema; its avg is NULL when
 * ema = 0) and *live, an arena-sized buffer for fl_run_use_average (NULL
 * without an average). On failure (FL_ERR_NOMEM) nothing is left
 * allocated. Free with fl_run_optim_free. */
fl_status fl_run_optim_init(fl_experiment *e, fl_adam *opt, fl_ema *ema, fl_real **live);
void fl_run_optim_free(fl_adam *opt, fl_ema *ema, fl_real *live);

/* on = 1: keeps the iterate in `live` (arena-sized) and puts the average
 * into theta (running statistics stay the iterate's); on = 0: restores the
 * iterate. No-op when the run keeps no average (ema->avg == NULL) or has
 * taken no step yet (ema->t == 0: the model is its initial iterate). */
void fl_run_use_average(fl_experiment *e, const fl_ema *ema, fl_real *live, int on);

#endif
