/* resume.h - a run's training state on disk and the parameter average:
 * checkpoints, resuming an interrupted run, evaluating the average. */
#ifndef FL_RESUME_H
#define FL_RESUME_H

#include "model/experiment.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "core/util.h"

/* The keys a resume may change, as a phrase for messages and docs. */
extern const char fl_resume_free_keys[];

/* A hash of a resolved experiment's text (config.ini, fl_experiment_resolved)
 * over every key but those a resume may change (fl_resume_free_keys);
 * comments and blank lines do not count. Never 0. */
uint64_t fl_resume_config_hash(const char *text, size_t len);
/* fl_resume_config_hash of e's resolved experiment (0 on FL_ERR_NOMEM). */
fl_status fl_resume_hash(const fl_experiment *e, uint64_t *hash);

/* Before `run --resume` writes anything into rundir: refuses a finished
 * run (result.json present; FL_ERR_EXISTS), and, when rundir holds
 * checkpoint.flc, a checkpoint of another experiment (the first key that
 * differs from rundir/config.ini, or the checkpoint's hash) or past e's
 * steps (FL_ERR_INVALID). One fl_err line naming the file. Reads only. */
fl_status fl_resume_check(const fl_experiment *e, const char *rundir);

/* When `rundir` holds checkpoint.flc: checks it as fl_resume_check does
 * (the same experiment, a step within e's steps), restores parameters,
 * optimizer and parameter average from it, puts its run record (the open
 * evaluation interval's loss sum and count) in *rec, sets *step0 to its step and appends to `metrics` the header and
 * the rows of the run's metrics.csv up to step0, verbatim (rows after the
 * checkpoint are the resumed run's to write again; fl_metrics_keep). Pass
 * an fl_metrics writer's `text` as `metrics` to go on writing rows.
 * *train_seconds gets the last kept row's train_seconds, so the resumed
 * run's clock goes on from there. Without a checkpoint, *step0 = 0,
 * *train_seconds = 0 and nothing changes. Errors: those of fl_checkpoint_load (mismatched model,
 * corrupt file), with fl_err naming the file. */
fl_status fl_resume_load(fl_experiment *e, const char *rundir, fl_adam *opt, fl_ema *ema,
                         uint64_t *step0, fl_buf *metrics, double *train_seconds,
                         fl_checkpoint_run *rec);

/* Writes dir/checkpoint.flc (atomically): parameters, optimizer, average
 * and the run record `rec` (see checkpoint.h; NULL = zeros), at `step`. */
fl_status fl_run_save(fl_experiment *e, const char *dir, const fl_adam *opt, const fl_ema *ema,
                      uint64_t step, const fl_checkpoint_run *rec);

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
