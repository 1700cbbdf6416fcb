/* task_vi.h - variational inference of an unnormalised target.
 *
 * A flow posterior q (standard-normal base followed by the [flow.N] stack)
 * is fitted to a [target] plugin's p~(z) with any [estimator]. */
#ifndef FL_TASK_VI_H
#define FL_TASK_VI_H

#include "experiment.h"

/* Builds e->vi from the config (target, estimator, flows, [vi] keys) and
 * finalises the arena. Errors name file, line and key. */
fl_status fl_vi_build(fl_experiment *e);
/* Frees e->vi (NULL-safe). */
void fl_vi_free(fl_experiment *e);

#endif
