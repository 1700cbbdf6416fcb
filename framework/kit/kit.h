/* kit.h - the conformance kit: checks that a flow layer is what it claims.
 *
 * For one flow class and one configuration (fl_kit_flow) it checks:
 * the same seed gives the same numbers; the inverse round trip; the
 * log-determinant against log|det J| with J by central finite differences
 * (in double); for autoregressive layers, that J is triangular in the
 * layer's declared order; backward against finite differences of a random
 * scalar projection, separately for inputs, parameters and context; finite
 * outputs at inputs of +-10 and with large parameters; independence of the
 * rows of a batch in evaluation mode; for batch-coupled layers, that
 * evaluation mode reproduces training mode once the running statistics
 * equal the batch's. The inverse, log-determinant, triangularity and batch
 * checks run in evaluation mode, where even batch norm treats rows
 * independently; the gradient checks run in training mode. It also measures how much the
 * context moves the output. fl_kit_class runs it over several
 * configurations (the defaults, each boolean key flipped, each other enum
 * choice), dimensions and context sizes, requires some configuration to use
 * the context when the layer declares it, and prints one table.
 *
 * Shaped layers (FL_FLOW_SHAPED) are also checked on small images (1x4x4,
 * 2x4x4, 3x2x2, 4x2x2, 12x2x2; c x h x w). The layer runs in a one-layer
 * stack, so what is checked is the stack's row: for a layer that factors
 * out, [z | y] (model/stack.h), which keeps every check square. A shape
 * the layer refuses in create (squeeze on an odd size) is "not applicable",
 * not a failure, but the defaults must run on at least one shape. */
#ifndef FL_KIT_H
#define FL_KIT_H

#include <stdio.h>

#include "core/config.h"
#include "core/registry.h"

enum {
    FL_KIT_INVERSE,
    FL_KIT_INVERSE_LOGDET,
    FL_KIT_LOGDET,
    FL_KIT_GRAD_X,
    FL_KIT_GRAD_THETA,
    FL_KIT_GRAD_C,
    FL_KIT_TRIANGULAR,
    FL_KIT_CONTEXT,
    FL_KIT_EXTREME_X,
    FL_KIT_LARGE_THETA,
    FL_KIT_BATCH,
    FL_KIT_TRAIN_EVAL,
    FL_KIT_SEED,
    FL_KIT_N
};

typedef struct fl_kit_opts {
    uint32_t dim, ctx_dim, rows;
    uint64_t seed;
    double theta_noise;   /* N(0, s^2) added to the initial parameters so
                             zero-initialised layers are not trivially right */
    FILE *out;            /* per-check lines of each run; NULL = silent */
    uint32_t c, h, w;     /* fl_kit_flow: an image shape c x h x w (then dim is
                             ignored: c*h*w); c == 0: a flat row of dim
                             (dim x 1 x 1). fl_kit_class: c != 0 checks only
                             this shape (and dim only when also given) */
} fl_kit_opts;

typedef struct fl_kit_stat {
    int runs, fails;
    double worst;         /* largest error / tolerance */
    double worst_err, tol;
    char first_failure[256];
} fl_kit_stat;

typedef struct fl_kit_report {
    int checks, failed, skipped;
    double context_effect;    /* max |y(c) - y(c')| seen */
    char first_failure[512];  /* "check: measure = X exceeds tolerance Y (...)" */
    fl_kit_stat stat[FL_KIT_N];
} fl_kit_report;

/* Runs the kit on `cls` configured by `cfg` (NULL = its defaults). Returns
 * non-OK only when the layer cannot be created (fl_err says why); failed
 * checks are counted in `rep`. */
fl_status fl_kit_flow(const fl_flow_class *cls, const fl_values *cfg, const fl_kit_opts *o,
                      fl_kit_report *rep);

/* Runs the kit over configurations x dims (base->dim, or 2, 5, 8; for a
 * shaped layer also the image shapes above, or only base->c x h x w when
 * given) x context (0, and base->ctx_dim or 3 when accepted), printing the
 * table to `out` (may be NULL). */
fl_status fl_kit_class(const fl_flow_class *cls, const fl_kit_opts *base, FILE *out,
                       fl_kit_report *total);

const char *fl_kit_check_name(int id);
/* A check's name in a dump ("inverse", "inverse-logdet", "grad-theta", ...:
 * unique, no blanks), and back to its id (-1 for an unknown name). */
const char *fl_kit_check_key(int id);
int fl_kit_check_id(const char *key);

/* The kit as a debugger: the first failed check of a run with what it
 * compared and every input it ran on, printed under the table and written
 * by `flowlab check --dump FILE` (fl_kit_dump_write, format in
 * docs/writing-a-layer.md), read back by `--replay FILE`. */
typedef struct fl_kit_failure {
    int check;            /* FL_KIT_* that failed; -1 = none captured yet */
    int want;             /* capture only this check (-1 = the first to fail) */
    double err, tol;      /* the measured error and its tolerance */
    int row;              /* offending input row; -1 = no single row */
    double a, b;          /* the two numbers compared ... */
    char a_what[64], b_what[64]; /* ... and what each is */
    char *flow;           /* the class's name (owned) */
    char *plugin;         /* the plugin file that registered it (owned; set by
                             the caller before fl_kit_dump_write), or NULL */
    char label[160];      /* the configuration, e.g. "defaults" */
    char **key, **val;    /* the layer's resolved keys and values (owned), */
    size_t n_keys;        /* 'type' excluded */
    uint32_t dim, ctx_dim, rows, c, h, w; /* the run's shape (c == 0: flat) */
    uint64_t seed;
    double noise;         /* fl_kit_opts.theta_noise */
    fl_real *x, *ctx;     /* rows x dim, rows x ctx_dim: the inputs */
    fl_real *ry, *rl;     /* rows x dim, rows: the random projection of the
                             gradient checks, L = ry . y + rl . logdet */
    fl_real *theta;       /* the parameters when the check started (n_theta) */
    size_t n_theta;
    char **pname;         /* parameter slices: name, offset, size (n_params) */
    size_t *poff, *psize, n_params;
} fl_kit_failure;

/* Extra inputs of fl_kit_class_debug. */
typedef struct fl_kit_debug {
    const char *const *set;   /* "KEY=VALUE" for the layer's base configuration */
    size_t n_set;
    fl_kit_failure *fail;     /* receives the first failure (fl_kit_failure_init
                                 first), or NULL */
} fl_kit_debug;

/* An empty failure (check = want = row = -1, nothing owned); before any
 * other use. free releases what it owns (strings and arrays) and leaves it
 * as after init. Neither fails. */
void fl_kit_failure_init(fl_kit_failure *f);
void fl_kit_failure_free(fl_kit_failure *f);

/* Validates the n_set "KEY=VALUE" pairs `set` against `cls`. Returns
 * FL_ERR_INVALID with fl_err naming the key ("--set KEY: ...") on a
 * malformed pair, a key the layer does not have, or a value it refuses
 * (alone or with the other keys). Any time; allocates nothing it keeps. */
fl_status fl_kit_check_set(const fl_flow_class *cls, const char *const *set, size_t n_set);

/* fl_kit_class with a base configuration (dbg->set, validated first with
 * fl_kit_check_set; its keys are not varied) and the first failure
 * captured into dbg->fail (and printed with the table,
 * fl_kit_failure_print); the caller frees dbg->fail. dbg may be NULL. */
fl_status fl_kit_class_debug(const fl_flow_class *cls, const fl_kit_opts *base,
                             const fl_kit_debug *dbg, FILE *out, fl_kit_report *total);

/* Prints what `f` compared, the offending row of x (and of the context)
 * and the parameter values (a few of each; the dump has them all). */
void fl_kit_failure_print(const fl_kit_failure *f, FILE *out);

/* Writes / reads the text dump of `f`. Errors: FL_ERR_IO (cannot write or
 * read), FL_ERR_INVALID (a malformed file; fl_err names FILE:LINE). read
 * fills an initialised `f`, which the caller frees either way. */
fl_status fl_kit_dump_write(const fl_kit_failure *f, const char *path);
fl_status fl_kit_dump_read(const char *path, fl_kit_failure *f);

/* Re-runs the check of dump `d` on `cls` with exactly its inputs (x,
 * context, projection, parameters; the same seed, shape and keys).
 * `again` (initialised) receives the failure if the check fails again;
 * rep->stat[d->check] holds the new measurement. Non-OK when the layer
 * cannot be built as the dump describes (fl_err says why). */
fl_status fl_kit_replay(const fl_flow_class *cls, const fl_kit_failure *d,
                        fl_kit_failure *again, fl_kit_report *rep);

#endif
