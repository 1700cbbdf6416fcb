/* experiment.h - an experiment file turned into a ready model.
 *
 * Validates every section of the config against the host's keys and the
 * chosen components' schemas (unknown sections and keys included), creates
 * the data set and the model, and finalises the parameter arena. */
#ifndef FL_EXPERIMENT_H
#define FL_EXPERIMENT_H

#include "config.h"
#include "params.h"
#include "registry.h"
#include "stack.h"

typedef struct fl_experiment {
    fl_config *cfg;                 /* owned */
    const fl_registry *reg;         /* not owned */
    fl_values exp, train, eval, data;
    uint64_t seed;
    const char *task;               /* "density" */

    const fl_dataset_class *dcls;
    fl_ctx *dcx;
    void *dself;
    fl_dataset_info info;
    char *data_type;

    uint64_t *perm;                 /* finite train split: this epoch's order */
    uint64_t perm_epoch;            /* epoch `perm` belongs to, +1 (0 = none) */

    fl_arena arena;
    fl_stack *stack;
    uint32_t batch, eval_batch, max_rows;
} fl_experiment;

/* Builds the experiment; takes ownership of `cfg` (also on failure). */
fl_status fl_experiment_new(const fl_registry *reg, fl_config *cfg, fl_experiment **out);
void fl_experiment_free(fl_experiment *e);

/* The resolved config (every key, defaults included) as INI text. */
fl_status fl_experiment_resolved(const fl_experiment *e, fl_buf *b);

/* Rows of a fixed evaluation split (drawn sets: a fixed key independent of
 * the experiment seed, so every seed is scored on the same points). The
 * caller frees *rows with fl_free. */
fl_status fl_experiment_eval_split(fl_experiment *e, fl_split split, fl_real **rows, uint64_t *n);

/* Training batch `step` (from 0): fresh draws for drawn sets; for finite
 * sets, batch step % (N / n) of epoch step / (N / n), epochs reshuffled from
 * the seed (the last N mod n rows of an epoch are skipped). Allocates
 * nothing. */
fl_status fl_experiment_train_batch(fl_experiment *e, uint64_t step, uint32_t n, fl_real *out);

int64_t fl_exp_int(const fl_values *v, const char *key);
double fl_exp_real(const fl_values *v, const char *key);

#endif
