/* kit.h - the conformance kit: checks that a flow layer is what it claims.
 *
 * For one flow class and one configuration it checks the inverse round
 * trip, the log-determinant against log|det J| with J from central finite
 * differences (in double), and backward against finite differences of a
 * random scalar projection, separately for inputs, parameters and context.
 * Each check prints its measured error beside its tolerance. */
#ifndef FL_KIT_H
#define FL_KIT_H

#include <stdio.h>

#include "config.h"
#include "registry.h"

typedef struct fl_kit_opts {
    uint32_t dim, ctx_dim, rows;
    uint64_t seed;
    double theta_noise;   /* N(0, s^2) added to the initial parameters so
                             zero-initialised layers are not trivially right */
    FILE *out;            /* report lines; NULL = silent */
} fl_kit_opts;

typedef struct fl_kit_report {
    int checks, failed;
    char first_failure[512];  /* "check: measured X > tol Y" */
} fl_kit_report;

/* Runs the kit on `cls` configured by `cfg` (NULL = its defaults). Returns
 * non-OK only when the layer cannot be created; failed checks are counted
 * in `rep`. */
fl_status fl_kit_flow(const fl_flow_class *cls, const fl_values *cfg, const fl_kit_opts *o,
                      fl_kit_report *rep);

#endif
