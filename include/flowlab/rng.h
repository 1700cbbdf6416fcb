/*
 * flowlab/rng.h - counter-based random numbers (Philox4x32-10).
 *
 * A stream is a 64-bit key; a number is a pure function of (key, counter).
 * There is no state to share between threads, so a row's noise depends only
 * on its index, never on which thread drew it or in which order: a run gives
 * the same numbers with 1 or 2 threads. The host derives one key per
 * component and purpose from the experiment seed (fl_host.rng_key); plugins
 * draw with the inline functions below.
 *
 *   fl_rng_key k = fl_rng_key_make(1234, "data.train");
 *   fl_real eps[64];
 *   fl_rng_normal(k, step, 0, 64, eps);        // the same 64 numbers, always
 *
 * Thread-safety: all functions are pure.
 */
#ifndef FLOWLAB_RNG_H
#define FLOWLAB_RNG_H

#include <math.h>
#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The inline code below is C: its casts are not for C++'s cast warnings
 * (g++ does not flag old-style casts inside extern "C"; fl_real casts are
 * "useless" in the double build). */
#if defined(__cplusplus) && defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wold-style-cast"
#elif defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuseless-cast"
#endif

typedef struct fl_rng_key {
    uint32_t k[2];
} fl_rng_key;

/* One Philox4x32-10 block: four 32-bit words for a 128-bit counter. */
static inline void fl_philox4x32(fl_rng_key key, const uint32_t ctr[4], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key.k[0], k1 = key.k[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* FNV-1a then a splitmix64 finaliser: a well-mixed 64-bit hash of a name. */
static inline uint64_t fl_rng_hash(uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (const char *p = name; p && *p; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ull;
    }
    h += 0x9E3779B97F4A7C15ull;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}

/* A key for the stream `name` under `seed`. */
static inline fl_rng_key fl_rng_key_make(uint64_t seed, const char *name)
{
    uint64_t h = fl_rng_hash(seed, name);
    fl_rng_key k = { { (uint32_t)h, (uint32_t)(h >> 32) } };
    return k;
}

/* Map 32 random bits to (0, 1), never 0 or 1. */
static inline double fl_rng_u01(uint32_t w)
{
    return ((double)w + 0.5) * (1.0 / 4294967296.0);
}

/* Uniform (0,1) numbers i = first .. first+n-1 of sub-stream `sub` of `key`.
 * Number i comes from block i/4, word i%4, so any split of [0, n) across
 * threads gives the same values. */
static inline void fl_rng_uniform(fl_rng_key key, uint64_t sub, uint64_t first, size_t n,
                                  fl_real *out)
{
    uint32_t ctr[4], w[4];
    for (size_t i = 0; i < n;) {
        uint64_t idx = first + i, blk = idx >> 2;
        ctr[0] = (uint32_t)blk; ctr[1] = (uint32_t)(blk >> 32);
        ctr[2] = (uint32_t)sub; ctr[3] = (uint32_t)(sub >> 32);
        fl_philox4x32(key, ctr, w);
        for (unsigned j = (unsigned)(idx & 3); j < 4 && i < n; j++, i++) {
            fl_real u = (fl_real)fl_rng_u01(w[j]);
            /* A float can round (0,1) up to 1: keep it open. */
            out[i] = u < 1 ? u : (fl_real)(1 - 1.0 / (1 << 24));
        }
    }
}

/* Standard normal numbers, same indexing as fl_rng_uniform. Box-Muller on
 * word pairs (0,1) and (2,3) of each block. */
static inline void fl_rng_normal(fl_rng_key key, uint64_t sub, uint64_t first, size_t n,
                                 fl_real *out)
{
    uint32_t ctr[4], w[4];
    for (size_t i = 0; i < n;) {
        uint64_t idx = first + i, blk = idx >> 2;
        ctr[0] = (uint32_t)blk; ctr[1] = (uint32_t)(blk >> 32);
        ctr[2] = (uint32_t)sub; ctr[3] = (uint32_t)(sub >> 32);
        fl_philox4x32(key, ctr, w);
        double z[4];
        for (int p = 0; p < 4; p += 2) {
            double r = sqrt(-2.0 * log(fl_rng_u01(w[p])));
            double a = 6.283185307179586 * fl_rng_u01(w[p + 1]);
            z[p] = r * cos(a);
            z[p + 1] = r * sin(a);
        }
        for (unsigned j = (unsigned)(idx & 3); j < 4 && i < n; j++, i++)
            out[i] = (fl_real)z[j];
    }
}

#if defined(__cplusplus) && defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_RNG_H */
