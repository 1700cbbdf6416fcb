/* conv.h - the host's convolution service (host->conv_create/forward/
 * backward, ABI 1.3; conv_forward_mode, upsampling and batch norm since
 * 1.4): 3x3 and 1x1 convolutions, ResNet blocks, activations, 2x
 * nearest-neighbour upsampling, batch norm, weight normalization, a zero-initialised last layer and an
 * input mask, on NHWC images, parameters in the component's block of the
 * arena. conv.c plans the work as matrix products over the whole batch
 * (fl_gemm) cut into fixed tiles. */
#ifndef FL_CONV_H
#define FL_CONV_H

#include <flowlab/host.h>

/* Whether 3x3 stride-1 convolutions run direct (conv.c's register-blocked
 * kernel over the 9 taps of a zero-padded copy) rather than through
 * im2col + fl_gemm, read at create: 0 (the default) and 1 direct, -1
 * im2col. For tests and benchmarks, which try both. */
extern int fl_conv_direct;

/* A network for component context `cx`, during its create phase only:
 * validates the spec (every refusal names the net, the layer and what is
 * wrong, through host->error), requests the parameters of cx (NAME.W<u>,
 * NAME.b<u>, or NAME.v<u>, NAME.g<u>, NAME.b<u> with weight norm) and
 * allocates every buffer for up to max_rows images. NULL on failure with
 * host->error set. The caller owns the net (fl_conv_free); host.c hands it
 * to cx, which frees it with the context. */
fl_conv *fl_conv_create(fl_ctx *cx, const fl_conv_spec *spec, uint32_t max_rows);
/* out = the net of in (n <= max_rows NHWC images), parameters at theta
 * (the component's block). Caches activations and keeps `in` for
 * fl_conv_backward. One thread at a time per net; parallel inside over
 * fixed tiles (bit-identical for any thread count). No errors, no
 * allocation. */
void fl_conv_forward(fl_conv *c, const fl_real *theta, uint32_t n, const fl_real *in,
                     fl_real *out);
/* fl_conv_forward in `mode` (host->conv_forward_mode, since 1.4): batch
 * norm layers use the batch's statistics in FL_MODE_TRAIN, moving their
 * running averages in `state` (the component's block, writable) unless it
 * is NULL, and the running averages read from theta in FL_MODE_EVAL;
 * fl_conv_forward is FL_MODE_EVAL. No errors, no allocation. */
void fl_conv_forward_mode(fl_conv *c, const fl_real *theta, fl_real *state, fl_mode mode,
                          uint32_t n, const fl_real *in, fl_real *out);
/* Backward of the last fl_conv_forward (same theta, n, in): dtheta += the
 * parameter gradients; din += d loss / d in (mask included) when din is
 * not NULL; dout is read only. No errors, no allocation. */
void fl_conv_backward(fl_conv *c, const fl_real *theta, fl_real *dtheta, uint32_t n,
                      const fl_real *dout, fl_real *din);
/* Output shape of the net: channels, height, width. Any thread. */
void fl_conv_out_shape(const fl_conv *c, uint32_t *ch, uint32_t *h, uint32_t *w);
/* Multiply-adds of one forward over n images (the backward does twice
 * as many), for benchmarks. */
double fl_conv_fmas(const fl_conv *c, uint32_t n);
/* Frees c and its buffers (not its parameters: the arena's). NULL is
 * allowed. */
void fl_conv_free(fl_conv *c);

#endif
