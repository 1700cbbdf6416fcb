/* flowbench.h - timing one flow layer's training step, shared by
 * bench_flows and bench_imglayers. */
#ifndef FL_BENCH_FLOWBENCH_H
#define FL_BENCH_FLOWBENCH_H

#include <stdint.h>

#include "core/registry.h"

typedef struct fl_bench_step {
    double seconds;   /* timed wall time */
    double cpu;       /* user CPU seconds of the process while timed */
    int reps;         /* forward + backward pairs in it */
    double gflops;    /* GEMM GFLOP/s counted by the host's gemm while timed */
    long allocs;      /* allocation calls while timed (must be 0) */
} fl_bench_step;

/* Times forward + backward (FL_MODE_TRAIN) of a one-layer stack of flow
 * `type`, its keys set by `sets` ("key=value key=value", or NULL), over
 * `rows` random rows of c x h x w (h = w = 1: a flat vector of c), after 3
 * warm-up steps, for at least min_seconds and 5 steps. `noise` > 0 adds
 * N(0, noise^2) to the initial parameters (a zero-initialised last layer
 * would otherwise skip work). Returns 0, or -1 after printing why (the
 * label is `type` and `sets`) to stderr. */
int fl_bench_flow_step(const fl_registry *r, const char *type, const char *sets, uint32_t c,
                       uint32_t h, uint32_t w, uint32_t rows, double noise, double min_seconds,
                       fl_bench_step *out);

#endif
