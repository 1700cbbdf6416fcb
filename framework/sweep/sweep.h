/* sweep.h - the [sweep] section of an experiment file: which keys vary,
 * the cells they span, and the run directory name of each cell.
 *
 *   [sweep]
 *   flow.1.repeat   = 2, 4, 8          ; SECTION.KEY = values (',' separated)
 *   flow.1.hidden   = 32,32 | 64,64    ; '|' separates values that contain ','
 *   train.lr        = 1e-3, 3e-4
 *   experiment.seed = 1, 2, 3
 *   zip     = flow.1.repeat flow.1.hidden   ; vary together, element-wise
 *   exclude = flow.1.repeat=8 train.lr=1e-3  ; skip cells matching all conditions
 *   exclude.2 = ...                          ; more rules (';' right after a rule separates)
 *   metric = test_nll                        ; what the report sorts by
 *   direction = min                          ; min or max
 *   gradvar = yes                            ; `flowlab gradvar` on every finished cell
 *   gradvar_estimators = iwae,dreg           ; its --estimators, --k, --draws, --n
 *   gradvar_k = 1,8,64                       ;   (each optional: gradvar's defaults)
 *
 * The cells are the cartesian product of the value lists, a zip group
 * counting as one list, in file order with the last list varying fastest,
 * minus the excluded ones. docs/sweeps.md describes the syntax. */
#ifndef FL_SWEEP_H
#define FL_SWEEP_H

#include <stddef.h>

#include "core/util.h"

/* One swept key. */
typedef struct fl_sweep_axis {
    char *key;        /* "section.key" as written */
    char **values;    /* trimmed value texts */
    size_t n;
    int line;         /* line in the file */
    int zip;          /* zip group (0, 1, ...) or -1 */
} fl_sweep_axis;

/* An exclude rule: a cell matching every condition is dropped. */
typedef struct fl_sweep_rule {
    size_t *axis, *value;   /* condition k: axis[k] takes value index value[k] */
    size_t n;
    int line;
} fl_sweep_rule;

typedef struct fl_sweep_cell {
    size_t *choice;   /* value index for each axis */
    char *name;       /* run directory name, a safe file name */
} fl_sweep_cell;

typedef struct fl_sweep {
    char *path;                 /* the file, for messages */
    int line;                   /* line of the first [sweep] header */
    fl_sweep_axis *axes;
    size_t n_axes, n_zips;
    fl_sweep_rule *rules;
    size_t n_rules;
    fl_sweep_cell *cells;       /* in listing order */
    size_t n_cells;
    size_t n_product;           /* cells before exclusion */
    char *metric;               /* [sweep] metric, or NULL */
    int direction;              /* [sweep] direction: -1 min, +1 max, 0 unset */
    int gradvar;                /* [sweep] gradvar = yes: run `flowlab gradvar` per cell */
    char *gv_estimators, *gv_k; /* its --estimators and --k lists, NULL = gradvar's default */
    char *gv_draws, *gv_n;      /* its --draws and --n, NULL = gradvar's default */
    char *base;                 /* the file's text with every [sweep] line
                                   commented out (line numbers kept): what
                                   each cell runs */
} fl_sweep;

/* Most cells a sweep may have (a typo should not start a million runs). */
#define FL_SWEEP_MAX_CELLS 100000

/* Parses the [sweep] section of `text` (the contents of file `path`) and
 * expands its cells. Errors (FL_ERR_INVALID, or FL_ERR_NOMEM) set fl_err to
 * one line naming PATH:LINE and the key; a file without [sweep] is an
 * error. On success the caller owns *out (fl_sweep_free). */
fl_status fl_sweep_parse(const char *path, const char *text, fl_sweep **out);
/* Reads the sweep file `path` into *text (NUL-terminated; the caller frees
 * it): FL_ERR_IO when it cannot be read, FL_ERR_INVALID ("PATH:LINE:
 * contains a NUL byte") when it holds a NUL, which would cut the text. */
fl_status fl_sweep_read(const char *path, char **text);
/* Reads `path` (fl_sweep_read) and parses it. */
fl_status fl_sweep_load(const char *path, fl_sweep **out);
void fl_sweep_free(fl_sweep *s);

/* The value text of `axis` in cell `cell` (borrowed). */
const char *fl_sweep_value(const fl_sweep *s, size_t cell, size_t axis);
/* Index of the axis named `key` ("section.key"), or -1. */
long fl_sweep_axis_find(const fl_sweep *s, const char *key);

/* For `flowlab run`: FL_ERR_INVALID with a message pointing to
 * `flowlab sweep` when the file at `path` has a [sweep] section; FL_OK
 * otherwise, also when the file cannot be read (the config loader reports
 * that). */
fl_status fl_sweep_refuse_run(const char *path);

#endif
