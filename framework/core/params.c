/* params.c - the flat parameter arena and its initialisation. */
#include "core/params.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

fl_status fl_arena_request(fl_arena *a, const char *name, const fl_param_spec *spec,
                           const fl_real *values, size_t *offset)
{
    if (a->theta) {
        fl_err("parameter '%s' requested after the model was built", name);
        return FL_ERR_INTERNAL;
    }
    if (spec->init < FL_INIT_ZERO || spec->init > FL_INIT_FANIN) {
        fl_err("parameter '%s' has unknown init %d", name, (int)spec->init);
        return FL_ERR_INVALID;
    }
    if (fl_arena_find(a, name)) {
        fl_err("parameter '%s' requested twice", name);
        return FL_ERR_INVALID;
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 64;
        fl_param_rec *np = realloc(a->p, cap * sizeof *np);
        if (!np) return FL_ERR_NOMEM;
        a->p = np;
        a->cap = cap;
    }
    fl_param_rec *r = &a->p[a->n];
    memset(r, 0, sizeof *r);
    r->name = fl_strdup(name);
    if (!r->name) return FL_ERR_NOMEM;
    if (values) {
        r->values = malloc((spec->size ? spec->size : 1) * sizeof(fl_real));
        if (!r->values) {
            free(r->name);
            return FL_ERR_NOMEM;
        }
        memcpy(r->values, values, spec->size * sizeof(fl_real));
    }
    r->offset = a->total;
    r->size = spec->size;
    r->init = spec->init;
    r->fan_in = spec->fan_in;
    r->fan_out = spec->fan_out;
    r->value = spec->value;
    r->flags = spec->flags;
    /* Keep every slice 16-float aligned so vector loops start aligned. */
    a->total += (spec->size + 15) & ~(size_t)15;
    a->count += spec->size;
    a->n++;
    *offset = r->offset;
    return FL_OK;
}

fl_status fl_arena_finalize(fl_arena *a, uint64_t seed)
{
    size_t n = a->total ? a->total : 1;
    a->theta = fl_alloc(n * sizeof(fl_real));
    a->grad = fl_alloc(n * sizeof(fl_real));
    if (!a->theta || !a->grad) {
        fl_err("cannot allocate %zu parameters", a->total);
        return FL_ERR_NOMEM;
    }
    for (size_t i = 0; i < a->n; i++) {
        fl_param_rec *r = &a->p[i];
        fl_real *t = a->theta + r->offset;
        if (r->values) {
            memcpy(t, r->values, r->size * sizeof(fl_real));
            continue;
        }
        fl_rng_key key = fl_rng_key_make(seed, r->name);
        switch (r->init) {
        case FL_INIT_ZERO:
            break;
        case FL_INIT_CONST:
            for (size_t j = 0; j < r->size; j++) t[j] = (fl_real)r->value;
            break;
        case FL_INIT_NORMAL:
            fl_rng_normal(key, 0, 0, r->size, t);
            for (size_t j = 0; j < r->size; j++) t[j] *= (fl_real)r->value;
            break;
        case FL_INIT_UNIFORM:
        case FL_INIT_FANIN:
        case FL_INIT_GLOROT: {
            double lim = r->value;
            if (r->init == FL_INIT_FANIN) lim = 1.0 / sqrt(r->fan_in ? (double)r->fan_in : 1.0);
            if (r->init == FL_INIT_GLOROT) {
                double fans = (double)r->fan_in + (double)r->fan_out;
                lim = sqrt(6.0 / (fans > 0 ? fans : 1.0));
            }
            fl_rng_uniform(key, 0, 0, r->size, t);
            for (size_t j = 0; j < r->size; j++) t[j] = (fl_real)((2.0 * t[j] - 1.0) * lim);
            break;
        }
        default:
            fl_err("parameter '%s' has unknown init %d", r->name, (int)r->init);
            return FL_ERR_INVALID;
        }
    }
    return FL_OK;
}

void fl_arena_zero_grad(fl_arena *a)
{
    if (a->grad) memset(a->grad, 0, a->total * sizeof(fl_real));
}

const fl_param_rec *fl_arena_find(const fl_arena *a, const char *name)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->p[i].name, name) == 0) return &a->p[i];
    return NULL;
}

void fl_arena_copy_state(const fl_arena *a, fl_real *dst, const fl_real *src)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->p[i].flags & FL_PARAM_STATE)
            memcpy(dst + a->p[i].offset, src + a->p[i].offset, a->p[i].size * sizeof(fl_real));
}

void fl_arena_free(fl_arena *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->p[i].name);
        free(a->p[i].values);
    }
    free(a->p);
    fl_free(a->theta);
    fl_free(a->grad);
    memset(a, 0, sizeof *a);
}
