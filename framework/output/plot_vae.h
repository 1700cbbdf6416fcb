/* plot_vae.h - pictures of a trained VAE run. */
#ifndef FL_PLOT_VAE_H
#define FL_PLOT_VAE_H

#include "model/experiment.h"

/* Writes into `dir` (atomically):
 *   curves.png           train bound (blue), validation ELBO (orange) and
 *                        IWAE-valid_k (green) against step, from
 *                        dir/metrics.csv (ranges in curves_axes.csv)
 *   samples.png          decoder means of 100 prior samples, 10 x 10
 *   reconstructions.png  40 test images spread over the split, each above its
 *                        reconstruction
 *                        (decoder mean at the posterior mean)
 * Image pictures only when the data set declares an image shape. The model
 * is used as it stands. Returns FL_ERR_IO / FL_ERR_FORMAT for a missing or
 * malformed metrics.csv, or the first evaluation or write error. */
fl_status fl_plot_vae(fl_experiment *e, const char *dir);

#endif
