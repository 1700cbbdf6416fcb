/* params.h - the flat parameter arena.
 *
 * Every parameter of a model lives in one array `theta` and its gradient in
 * `grad`, both host-owned and 64-byte aligned. Components request named
 * slices while they are created; fl_arena_finalize then allocates the
 * arrays and initialises each slice from a stream keyed by seed and name,
 * so initial values do not depend on creation order or thread count. */
#ifndef FL_PARAMS_H
#define FL_PARAMS_H

#include <flowlab/host.h>

typedef struct fl_param_rec {
    char *name;        /* full path, e.g. "flow.1.0.s.W0" */
    size_t offset, size;
    fl_init init;
    uint32_t fan_in, fan_out;
    double value;
    uint32_t flags;    /* FL_PARAM_STATE: not trained */
    fl_real *values;   /* explicit initial values (owned), or NULL */
} fl_param_rec;

typedef struct fl_arena {
    fl_param_rec *p;
    size_t n, cap;
    size_t total;      /* length of theta: parameters plus alignment padding */
    size_t count;      /* number of parameters (sum of slice sizes) */
    fl_real *theta, *grad;  /* NULL until finalised */
} fl_arena;

/* Appends a slice; *offset is its absolute position. `values` (may be NULL)
 * are copied and override `spec->init`. */
fl_status fl_arena_request(fl_arena *a, const char *name, const fl_param_spec *spec,
                           const fl_real *values, size_t *offset);
/* Allocates theta and grad and initialises theta. */
fl_status fl_arena_finalize(fl_arena *a, uint64_t seed);
void fl_arena_zero_grad(fl_arena *a);
const fl_param_rec *fl_arena_find(const fl_arena *a, const char *name);
/* Copies the FL_PARAM_STATE slices of `src` into `dst` (both theta-sized):
 * averaged weights keep the live running statistics. */
void fl_arena_copy_state(const fl_arena *a, fl_real *dst, const fl_real *src);
/* Frees everything the arena owns (not the struct itself). */
void fl_arena_free(fl_arena *a);

#endif
