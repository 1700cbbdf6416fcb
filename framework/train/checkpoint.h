/* checkpoint.h - saving and restoring parameters and optimizer state.
 *
 * File layout (host byte order; checkpoints move between x86-64 and ARM64
 * machines, not across endianness):
 *   "FLOWLABC" | u32 format version | u32 sizeof(fl_real) | u64 step |
 *   u64 total | u32 n_entries | u32 flags (1 = optimizer, 2 = average) |
 *   n_entries x (u32 name_len | name | u64 offset | u64 size) |
 *   theta[total] | [u64 adam_t | m[total] | v[total]] |
 *   [u64 ema_t | f64 decay | avg[total]] |
 *   u64 config_hash | f64 interval_sum | u64 interval_n (the run record, since version 2) |
 *   f64 best | u64 best_step | u64 bad_evals (early stopping, since version 3) |
 *   u32 crc32 of all before
 * Written to a temporary file and renamed, so a crash never leaves a torn
 * checkpoint. Loading checks magic, version, sizeof(fl_real), the manifest
 * against the model, the length and the checksum, and says which failed. */
#ifndef FL_CHECKPOINT_H
#define FL_CHECKPOINT_H

#include "train/optim.h"
#include "core/params.h"

/* Version 2 added the run record, version 3 early stopping's state to it;
 * older files still load (what they lack reads as zeros: no hash to check,
 * an empty interval, no best validation figure yet). */
#define FL_CHECKPOINT_VERSION 3u

/* What a training run's checkpoint records besides the model, so that a
 * resume can refuse another experiment and go on exactly. */
typedef struct fl_checkpoint_run {
    uint64_t config_hash;   /* fl_resume_config_hash of the run's resolved experiment (0 =
                               unknown: a version-1 file or a save without a run) */
    double interval_sum;    /* training loss summed over the open evaluation interval */
    uint64_t interval_n;    /* steps in that interval */
    /* version 3: early stopping's state (zeros in older files) */
    double best;            /* the best validation figure so far, as a loss */
    uint64_t best_step;     /* the step it was measured at; 0 = none yet */
    uint64_t bad_evals;     /* evaluations since then that did not improve on it */
} fl_checkpoint_run;

/* Saves theta, and the optimizer and the parameter average when not NULL
 * (an fl_ema with decay 0 counts as absent). */
fl_status fl_checkpoint_save(const char *path, const fl_arena *a, const fl_adam *opt,
                             const fl_ema *ema, uint64_t step);
/* Restores into a finalised arena built from the same config. `opt` and
 * `ema` may be NULL (their state is then ignored). With `use_average` set
 * and an average in the file, theta gets the (bias-corrected) average: what
 * evaluation and sampling use. *step may be NULL. */
fl_status fl_checkpoint_load(const char *path, fl_arena *a, fl_adam *opt, fl_ema *ema,
                             int use_average, uint64_t *step);
/* The same with a run record: saved from *run (NULL = zeros); loaded into
 * *run when not NULL. */
fl_status fl_checkpoint_save_run(const char *path, const fl_arena *a, const fl_adam *opt,
                                 const fl_ema *ema, uint64_t step, const fl_checkpoint_run *run);
fl_status fl_checkpoint_load_run(const char *path, fl_arena *a, fl_adam *opt, fl_ema *ema,
                                 int use_average, uint64_t *step, fl_checkpoint_run *run);
/* The step and run record of the checkpoint at `path` without a model
 * (checks magic, version and checksum only; the manifest is checked when
 * it is loaded). Errors: FL_ERR_IO (unreadable), FL_ERR_FORMAT, fl_err
 * naming the file. */
fl_status fl_checkpoint_peek(const char *path, uint64_t *step, fl_checkpoint_run *run);

/* FL_OK when every parameter in a's theta is finite; else FL_ERR_NUMERIC
 * and one fl_err line naming dir/checkpoint.flc, the tensor and the index
 * (a diverged run's checkpoint: sampling from it would print nan). */
fl_status fl_params_finite(const fl_arena *a, const char *dir);

#endif
