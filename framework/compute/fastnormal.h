/* fastnormal.h - standard normals in bulk, vectorised.
 *
 * The VAE draws latent-dimension x B x k normals per step and 250 million
 * for an IWAE-5000 evaluation of 1000 images; fl_rng_normal's scalar libm
 * log/sin/cos made that a sixth of the evaluation. fl_normals gives the
 * same interface and counter-based indexing (number i of (key, sub) comes
 * from Philox block i/4, so any split gives the same values) but computes
 * Box-Muller with float polynomials over blocks of counters that the
 * compiler vectorises. Its numbers differ from fl_rng_normal's (a
 * different stream), with the same distribution (tests/test_rng.c checks
 * moments and tails). */
#ifndef FL_FASTNORMAL_H
#define FL_FASTNORMAL_H

#include <flowlab/rng.h>

/* out[i] = normal number first+i of sub-stream `sub` of `key`, i < n. */
void fl_normals(fl_rng_key key, uint64_t sub, uint64_t first, size_t n, fl_real *out);

#endif
