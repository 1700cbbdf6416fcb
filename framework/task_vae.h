/* task_vae.h - variational autoencoders trained with any estimator.
 *
 * Model: encoder MLP -> [posterior] q0(z|x) (+ [flow.N] steps fed the
 * encoder's context h) -> [prior] p(z), decoder MLP -> [likelihood]
 * p(x|z); optionally a second stochastic layer (IWAE's two-layer model).
 * Training follows the [estimator]'s weights; evaluation estimates
 * log p(x) by importance sampling with k samples per point. */
#ifndef FL_TASK_VAE_H
#define FL_TASK_VAE_H

#include "experiment.h"

/* Builds e->vae from the config and finalises the arena. */
fl_status fl_vae_build(fl_experiment *e);
/* Frees e->vae (NULL-safe). */
void fl_vae_free(fl_experiment *e);

#endif
