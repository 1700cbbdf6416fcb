/* mlp.h - the host's MLP service (host->mlp_create/forward/backward): dense
 * layers with a fixed activation, optional MADE masks, parameters in the
 * component's block of the arena. mlp.c cuts the work into tasks;
 * mlp_kernel.c computes their products. */
#ifndef FL_MLP_H
#define FL_MLP_H

#include <flowlab/host.h>

/* An MLP for component context `cx`, created during its create phase only:
 * requests the weights and biases as parameters of cx (named NAME.W0,
 * NAME.b0, ...) and allocates buffers for up to max_rows rows. Returns NULL
 * on failure, with host->error set (invalid spec, arena refusal, out of
 * memory) except when the MLP struct itself cannot be allocated. The
 * caller owns the MLP (fl_mlp_free); host.c hands it to cx, which frees it
 * with the context. */
fl_mlp *fl_mlp_create(fl_ctx *cx, const fl_mlp_spec *spec, uint32_t max_rows);
/* out (n x out) = the MLP of in (n x in), n <= max_rows, with parameters at
 * theta (the component's block). Caches the hidden outputs for
 * fl_mlp_backward, so one MLP is used by one thread at a time; it may
 * parallelise inside (bit-identical with any thread count). No errors. */
void fl_mlp_forward(fl_mlp *m, const fl_real *theta, uint32_t n, const fl_real *in, fl_real *out);
/* fl_mlp_forward, then fn(ctx, r0, rn) on every block of finished output
 * rows [r0, r0 + rn), together covering [0, n) once. fn may run on several
 * threads at once (disjoint rows), right after its rows were computed, so
 * it reads them from cache: the decoder's likelihood in evaluation. */
typedef void (*fl_mlp_rows_fn)(void *ctx, uint32_t r0, uint32_t rn);
void fl_mlp_forward_rows(fl_mlp *m, const fl_real *theta, uint32_t n, const fl_real *in,
                         fl_real *out, fl_mlp_rows_fn fn, void *ctx);
/* Backward of the last fl_mlp_forward (same theta, n and in): adds the
 * weight gradients to dtheta (the component's gradient block) and, when din
 * is not NULL, adds d loss / d in to din (n x in); dout (n x out) is read
 * only. No errors. */
void fl_mlp_backward(fl_mlp *m, const fl_real *theta, fl_real *dtheta, uint32_t n,
                     const fl_real *dout, fl_real *din);
/* The MLP's input and output widths. Any thread. */
void fl_mlp_io(const fl_mlp *m, uint32_t *in, uint32_t *out);
/* Frees m and its buffers (not its parameters: they are the arena's).
 * NULL is allowed. */
void fl_mlp_free(fl_mlp *m);

#endif
