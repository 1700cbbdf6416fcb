/* fastnormal.c - vectorised Box-Muller over Philox blocks. */
#include "compute/fastnormal.h"

#include <flowlab/vmath.h>
#include <string.h>

#define CHUNK 256 /* Philox blocks per batch: 1024 normals */

/* sin and cos of pi/2 * f for f in [0, 1] (polynomials on the quarter
 * turn, |error| < 2e-7). */
static inline void quarter_sincos(float f, float *s, float *c)
{
    float a = f * 1.57079632679f, a2 = a * a;
    float sp = -2.39e-8f;
    sp = sp * a2 + 2.7526e-6f;
    sp = sp * a2 - 1.98409e-4f;
    sp = sp * a2 + 8.3333315e-3f;
    sp = sp * a2 - 1.66666667e-1f;
    *s = a + a * a2 * sp;
    float cp = -2.605e-7f;
    cp = cp * a2 + 2.47609e-5f;
    cp = cp * a2 - 1.3888397e-3f;
    cp = cp * a2 + 4.16666418e-2f;
    cp = cp * a2 - 0.5f;
    *c = 1.0f + a2 * cp;
}

/* Four normals for each of `nb` consecutive blocks starting at `blk0`. */
static void blocks(fl_rng_key key, uint64_t sub, uint64_t blk0, uint32_t nb, float *z)
{
    uint32_t w0[CHUNK], w1[CHUNK], w2[CHUNK], w3[CHUNK];
    for (uint32_t b = 0; b < nb; b++) {
        uint64_t blk = blk0 + b;
        const uint32_t ctr[4] = { (uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)sub,
                                  (uint32_t)(sub >> 32) };
        uint32_t w[4];
        fl_philox4x32(key, ctr, w);
        w0[b] = w[0], w1[b] = w[1], w2[b] = w[2], w3[b] = w[3];
    }
    for (uint32_t b = 0; b < nb; b++) {
        for (int p = 0; p < 2; p++) {
            uint32_t wa = p ? w2[b] : w0[b], wb = p ? w3[b] : w1[b];
            /* u in (0, 1): 24 random bits, centred */
            float u = ((float)(wa >> 8) + 0.5f) * (1.0f / 16777216.0f);
            float r = sqrtf(-2.0f * fl_log(u));
            /* angle: quadrant from 2 bits, position in it from 22 */
            uint32_t q = wb >> 30;
            float f = ((float)((wb >> 8) & 0x3fffffu) + 0.5f) * (1.0f / 4194304.0f);
            float s, c;
            quarter_sincos(f, &s, &c);
            float cs = q == 0 ? c : q == 1 ? -s : q == 2 ? -c : s;
            float sn = q == 0 ? s : q == 1 ? c : q == 2 ? -s : -c;
            z[4 * b + 2 * p] = r * cs;
            z[4 * b + 2 * p + 1] = r * sn;
        }
    }
}

void fl_normals(fl_rng_key key, uint64_t sub, uint64_t first, size_t n, fl_real *out)
{
    float z[4 * CHUNK];
    size_t i = 0;
    while (i < n) {
        uint64_t idx = first + i, blk = idx >> 2;
        unsigned off = (unsigned)(idx & 3);
        size_t want = n - i + off;
        uint32_t nb = (uint32_t)((want + 3) / 4 < CHUNK ? (want + 3) / 4 : CHUNK);
        blocks(key, sub, blk, nb, z);
        size_t m = (size_t)nb * 4 - off;
        if (m > n - i) m = n - i;
        for (size_t j = 0; j < m; j++) out[i + j] = (fl_real)z[off + j];
        i += m;
    }
}
