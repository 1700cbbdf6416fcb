/*
 * flowlab/embed.h - the embedding API: use a trained run from another
 * program (C, or Python through python/flowlab, docs/python.md).
 *
 * Link with libflowlab.so (built as build/framework/libflowlab.so). It is
 * not part of the plugin ABI: plugins never call it.
 *
 *   fl_embed_run *run;
 *   if (fl_embed_open("runs/moons", &run) != FL_OK) {
 *       fprintf(stderr, "%s\n", fl_embed_error());
 *       return 1;
 *   }
 *   double x[2] = { 0.5, 0.25 }, lp;
 *   fl_embed_log_prob(run, x, 1, 2, 0, &lp);   // log p(x) in nats
 *   fl_embed_close(run);
 *
 * Errors. Every call that can fail returns an fl_status (core.h) and, on
 * failure, leaves one line in fl_embed_error(), the same line `flowlab`
 * would print (file, line and key where there is one).
 *
 * Threads. Every function may be called from any thread. Calls that compute
 * (fl_embed_open, fl_embed_log_prob, fl_embed_sample) take one lock of the
 * library, so they run one at a time across all handles (each uses the
 * library's own OpenMP threads, [experiment] threads of the run); the
 * getters (fl_embed_task, fl_embed_dim) do not lock. A handle must not be
 * closed while another thread uses it.
 *
 * Numbers. Rows are double whatever the library's fl_real (float, or double
 * in a -Dreal=double build): they are converted on the way in and out, so
 * results equal `flowlab logprob` and `flowlab sample` of the same build.
 */
#ifndef FLOWLAB_EMBED_H
#define FLOWLAB_EMBED_H

#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A trained run loaded into memory: its model and parameters. Opaque. */
typedef struct fl_embed_run fl_embed_run;

/* Loads the run directory `dir` (its config.ini and checkpoint.flc, with
 * the parameter average when the run kept one) and the plugins it needs:
 * the build's or install's plugin folder, then FLOWLAB_PLUGIN_PATH, as the
 * flowlab command does. On success *out is a new handle the caller owns
 * (fl_embed_close). On failure *out is NULL and fl_embed_error() says why:
 * FL_ERR_IO (no such directory, not a run directory, no checkpoint),
 * FL_ERR_INVALID (its config.ini no longer loads), FL_ERR_FORMAT (a
 * damaged checkpoint), FL_ERR_NOT_FOUND (a plugin it names is missing).
 * `dir` stays the caller's. Locks. */
fl_status fl_embed_open(const char *dir, fl_embed_run **out);

/* Frees the handle and everything it holds; NULL is ignored. The handle
 * must not be in use by another thread. */
void fl_embed_close(fl_embed_run *run);

/* The run's task: "density", "vae" or "vi". The string lives as long as
 * the library. No lock. */
const char *fl_embed_task(const fl_embed_run *run);

/* Values per data row (the data set's width, c*h*w for images): the width
 * fl_embed_log_prob expects. 0 for a task without data (vi). No lock. */
uint32_t fl_embed_dim(const fl_embed_run *run);

/* Values per sample row from fl_embed_sample (the data width; vi: the
 * target's); 0 when the task does not sample. No lock. */
uint32_t fl_embed_sample_dim(const fl_embed_run *run);

/* log p(x) in nats of each of the n rows x (n x dim, row-major, the
 * caller's) into out (n doubles, the caller's), exactly what `flowlab
 * logprob` prints (docs/architecture.md, "log p(x) of your own points"):
 * density runs exact, through the run's preprocessing (an image run takes
 * levels k/255 and gives log P of the 8-bit image with the fixed
 * evaluation dequantization draw); vae runs the IWAE-k estimate with k
 * importance samples (0 = the run's [eval] k). Row i's value depends on i
 * (its noise), not on the other rows. FL_ERR_INVALID when dim is not
 * fl_embed_dim, the task has no log-likelihood (vi), or k > 1 on a density
 * run; FL_ERR_NOMEM. Locks. */
fl_status fl_embed_log_prob(fl_embed_run *run, const double *x, uint64_t n, uint32_t dim,
                            uint64_t k, double *out);

/* n samples (n x fl_embed_sample_dim, row-major) into out (the caller's),
 * drawn from `seed` exactly as `flowlab sample -n n --seed seed` writes
 * them: density the inverse flow of normal noise (through the inverse
 * preprocessing), vae the decoder means of prior draws, vi draws from the
 * fitted flow. FL_ERR_UNSUPPORTED when the task or a layer cannot sample;
 * FL_ERR_NOMEM. Locks. */
fl_status fl_embed_sample(fl_embed_run *run, uint64_t n, uint64_t seed, double *out);

/* The last error message of the calling thread (thread-local; "" when
 * none). Valid until the thread's next call into the library. */
const char *fl_embed_error(void);

/* sizeof(fl_real) of the library: 4 (float build) or 8 (double build). */
uint32_t fl_embed_real_size(void);

#ifdef __cplusplus
}
#endif

#endif
