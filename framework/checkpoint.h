/* checkpoint.h - saving and restoring parameters and optimizer state.
 *
 * File layout (little-endian, host byte order):
 *   "FLOWLABC" | u32 format version | u32 sizeof(fl_real) | u64 step |
 *   u64 total | u32 n_entries | u32 has_optimizer |
 *   n_entries x (u32 name_len | name | u64 offset | u64 size) |
 *   theta[total] | [u64 adam_t | m[total] | v[total]] | u32 crc32 of all before
 * Written to a temporary file and renamed, so a crash never leaves a torn
 * checkpoint. Loading checks magic, version, sizeof(fl_real), the manifest
 * against the model, the length and the checksum, and says which failed. */
#ifndef FL_CHECKPOINT_H
#define FL_CHECKPOINT_H

#include "optim.h"
#include "params.h"

#define FL_CHECKPOINT_VERSION 1u

/* Saves theta (and the optimizer when `opt` is not NULL). */
fl_status fl_checkpoint_save(const char *path, const fl_arena *a, const fl_adam *opt,
                             uint64_t step);
/* Restores into a finalised arena built from the same config; `opt` may be
 * NULL (its state is then ignored). *step may be NULL. */
fl_status fl_checkpoint_load(const char *path, fl_arena *a, fl_adam *opt, uint64_t *step);

#endif
