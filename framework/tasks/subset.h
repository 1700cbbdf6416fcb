/* subset.h - which points an evaluation on part of a split scores
 * ([eval] n and valid_n, `flowlab eval --n`, the validation monitor).
 *
 * Evaluation files are often ordered (binarized MNIST's test set by class
 * and writer), so the first m points are a biased sample. By default a
 * subset is a uniform random one, drawn from a fixed key that depends only
 * on the split's size: every run, seed and model of the same data set
 * scores the same points, so comparisons stay paired. `pick = first` keeps
 * the first m points. */
#ifndef FL_TASKS_SUBSET_H
#define FL_TASKS_SUBSET_H

#include <stdint.h>

#include "model/experiment.h"

/* The subset's key: fl_rng_key_make(n, FL_SUBSET_STREAM), n = the split's
 * row count, sub-stream 0 (docs/architecture.md, "Random numbers"). */
#define FL_SUBSET_STREAM "eval.subset"

/* The m (< n) indices of a uniform random subset of 0..n-1, ascending,
 * into idx (m entries): a partial Fisher-Yates shuffle of 0..n-1 whose
 * first m places are kept, so a smaller subset of the same split is part of
 * a larger one. Uses n indices of scratch. FL_ERR_NOMEM, or FL_OK. Pure:
 * any thread, any time. */
fl_status fl_subset_indices(uint64_t n, uint64_t m, uint64_t *idx);

/* Reduces the n x dim rows of x to m of them in place (m >= n: nothing
 * changes, *n stays). random = 0 keeps the first m; else the rows of
 * fl_subset_indices, in ascending order. *picked (when not NULL) gets the
 * chosen rows' indices in the split (m entries, the caller frees with
 * free) or NULL when the subset is the first rows or the whole split.
 * Sets *n to the rows kept. FL_ERR_NOMEM, or FL_OK. */
fl_status fl_subset_apply(fl_real *x, uint64_t *n, uint32_t dim, uint64_t m, int random,
                          uint64_t **picked);

/* 1 when an experiment's subsets are random: its [eval] pick (when its
 * task has that key) is not "first"; `override` (a --pick value, or NULL)
 * wins. */
int fl_subset_random(const fl_experiment *e, const char *override);

#endif
