/* resume.h - continuing an interrupted run from its run directory. */
#ifndef FL_RESUME_H
#define FL_RESUME_H

#include "experiment.h"
#include "optim.h"
#include "util.h"

/* When `rundir` holds checkpoint.flc: restores parameters, optimizer and
 * parameter average from it (the experiment must be built from the run's
 * config), sets *step0 to its step and appends the run's metrics.csv to
 * `metrics` (so the file keeps its earlier rows). Without a checkpoint,
 * *step0 = 0 and nothing changes. Errors: those of fl_checkpoint_load
 * (mismatched model, corrupt file), with fl_err naming the file. */
fl_status fl_resume_load(fl_experiment *e, const char *rundir, fl_adam *opt, fl_ema *ema,
                         uint64_t *step0, fl_buf *metrics);

#endif
