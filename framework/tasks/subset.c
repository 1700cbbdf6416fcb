/* subset.c - random evaluation subsets (subset.h). */
#include "tasks/subset.h"

#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

fl_status fl_subset_indices(uint64_t n, uint64_t m, uint64_t *idx)
{
    uint64_t *perm = malloc((n ? n : 1) * sizeof *perm);
    if (!perm) return FL_ERR_NOMEM;
    for (uint64_t i = 0; i < n; i++) perm[i] = i;
    const fl_rng_key key = fl_rng_key_make(n, FL_SUBSET_STREAM);
    for (uint64_t i = 0; i < m && i < n; i++) { /* partial Fisher-Yates */
        fl_real u[2];
        fl_rng_uniform(key, 0, 2 * i, 2, u);
        /* two draws make 48 bits in the float build: no bias worth naming
         * for any split size */
        double r = ((double)u[0] + (double)u[1] / 16777216.0) * (double)(n - i);
        uint64_t j = i + (uint64_t)r;
        if (j >= n) j = n - 1;
        uint64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    memcpy(idx, perm, (m < n ? m : n) * sizeof *idx);
    free(perm);
    qsort(idx, m < n ? m : n, sizeof *idx, cmp_u64);
    return FL_OK;
}

fl_status fl_subset_apply(fl_real *x, uint64_t *n, uint32_t dim, uint64_t m, int random,
                          uint64_t **picked)
{
    if (picked) *picked = NULL;
    if (m == 0 || m >= *n) return FL_OK;
    if (random) {
        uint64_t *idx = malloc(m * sizeof *idx);
        fl_status st = idx ? fl_subset_indices(*n, m, idx) : FL_ERR_NOMEM;
        if (st != FL_OK) {
            free(idx);
            return st;
        }
        for (uint64_t i = 0; i < m; i++) /* ascending, so idx[i] >= i */
            if (idx[i] != i)
                memmove(x + i * dim, x + idx[i] * dim, dim * sizeof(fl_real));
        if (picked) *picked = idx;
        else free(idx);
    }
    *n = m;
    return FL_OK;
}

int fl_subset_random(const fl_experiment *e, const char *override)
{
    if (override) return strcmp(override, "first") != 0;
    const fl_value *p = fl_values_get(&e->eval, "pick");
    return !p || strcmp(p->text, "first") != 0;
}
