/* checkpoint.h - saving and restoring parameters and optimizer state.
 *
 * File layout (host byte order; checkpoints move between x86-64 and ARM64
 * machines, not across endianness):
 *   "FLOWLABC" | u32 format version | u32 sizeof(fl_real) | u64 step |
 *   u64 total | u32 n_entries | u32 flags (1 = optimizer, 2 = average) |
 *   n_entries x (u32 name_len | name | u64 offset | u64 size) |
 *   theta[total] | [u64 adam_t | m[total] | v[total]] |
 *   [u64 ema_t | f64 decay | avg[total]] | u32 crc32 of all before
 * Written to a temporary file and renamed, so a crash never leaves a torn
 * checkpoint. Loading checks magic, version, sizeof(fl_real), the manifest
 * against the model, the length and the checksum, and says which failed. */
#ifndef FL_CHECKPOINT_H
#define FL_CHECKPOINT_H

#include "train/optim.h"
#include "core/params.h"

#define FL_CHECKPOINT_VERSION 1u

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

#endif
