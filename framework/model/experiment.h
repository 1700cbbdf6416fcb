/* experiment.h - an experiment file turned into a ready model.
 *
 * Validates every section of the config against the host's keys and the
 * chosen components' schemas (unknown sections and keys included), creates
 * the data set and the model, and finalises the parameter arena. */
#ifndef FL_EXPERIMENT_H
#define FL_EXPERIMENT_H

#include "core/config.h"
#include "core/crash.h" /* fl_crash_leave after fl_part_enter */
#include "core/params.h"
#include "core/registry.h"
#include "model/stack.h"

struct fl_experiment;

/* A component instance made from a config section. */
typedef struct fl_part {
    const fl_comp_rec *rec;         /* class (registry-owned) */
    fl_values cfg;                  /* resolved section (owned) */
    fl_ctx *cx;                     /* owned */
    void *self;                     /* instance, destroyed by fl_part_free */
    size_t block;                   /* parameter block start in the arena */
} fl_part;

/* Marks a call into part's component for the crash line (core/crash.h):
 * its section, class and entry point `call`; fl_crash_leave after it. */
void fl_part_enter(const fl_part *p, const char *call);

/* What the model layer needs of a task to assemble an experiment: the
 * first member of each entry of the task table (tasks/task.h's fl_task),
 * so this layer calls a task without including anything of tasks/. */
typedef struct fl_task_model {
    const char *name;               /* [experiment] task = NAME */
    const char *help;               /* one line for `flowlab plugins experiment` */
    const char *const *sections;    /* sections it reads besides [experiment], [train],
                                       [eval] and [flow.N]; NULL-terminated */
    const fl_key *eval_keys;        /* its [eval] keys (static) */
    uint32_t n_eval_keys;
    int data;                       /* 1: the [data] set is made before build */
    /* Makes the task's model (e->model) from the config, finalises the
     * arena and readies every layer. On failure leaves what it made in
     * e->model for `free`. Errors name file, line and key. */
    fl_status (*build)(struct fl_experiment *e);
    /* Frees a model made by build (NULL-safe). */
    void (*free)(void *model);
    /* The [flow.N] layers the model holds (written to config.ini), or NULL. */
    const fl_stack *(*flows)(const struct fl_experiment *e);
    /* The task's own [data] keys, resolved after `type` and the data set's
     * keys (density: dequantize, transform, logit_alpha); NULL = none. */
    const fl_key *data_keys;
    uint32_t n_data_keys;
    /* Optional, called before the [data] set is made: the parts of the
     * model that need no data (vae: the estimator), so that their refusals
     * come before any data is read. Starts e->model, which build then
     * completes; on failure leaves it for `free`. NULL = nothing early. */
    fl_status (*prepare)(struct fl_experiment *e);
} fl_task_model;

/* Entry i of the task table (defined in tasks/table.c, above this layer:
 * reached only through this declaration), NULL past the last. */
const fl_task_model *fl_task_model_at(size_t i);

/* At most this many resolved sections are written to config.ini. */
#define FL_EXP_MAX_SECTIONS 64

/* The shared parts of an experiment: config, the [experiment] [train]
 * [eval] values, the data set, the parameter arena. The task's own state
 * (its layers, components and buffers) is behind `model`. */
typedef struct fl_experiment {
    fl_config *cfg;                 /* owned */
    const fl_registry *reg;         /* not owned */
    fl_values exp, train, eval;
    uint64_t seed;
    const fl_task_model *task;      /* the table entry of [experiment] task */
    void *model;                    /* the task's model (owned; task->free): density
                                       fl_density_model, vae fl_vae, vi fl_vi */

    fl_part data;                   /* [data]: the data set (its values in data.cfg);
                                       empty for a task without data */
    const fl_dataset_class *dcls;   /* data.rec's class (NULL without data) */
    void *dself;                    /* data.self */
    fl_dataset_info info;           /* the data set's dimension, splits, image shape */
    char *data_type;                /* the data set's (vi: the target's) name, for messages */

    uint64_t *perm;                 /* finite train split: this epoch's order (N) */
    uint64_t perm_epoch;            /* epoch `perm` belongs to, +1 (0 = none) */
    fl_real *binbuf;                /* dynamic binarization: batch x dim uniforms */

    fl_arena arena;
    uint32_t batch, eval_batch, max_rows;

    /* Task sections in config order for config.ini (not owned). */
    const fl_values *extra[FL_EXP_MAX_SECTIONS];
    size_t n_extra;
} fl_experiment;

/* Resolves section `section` as a component of `kind` (its `type`, or
 * `def_type` when the section or key is absent; NULL = required) and
 * prepares its ctx; the caller then calls the class's create with
 * part->cx and stores the instance in part->self, then fl_part_created.
 * Errors name file, line and key. */
fl_status fl_part_prepare(fl_experiment *e, fl_kind kind, const char *section,
                          const char *def_type, fl_part *part);
/* Ends the create phase; `st` is create's status: on failure formats the
 * component's message into fl_err (file:line, section, class, then the
 * component's own words) and returns it. */
fl_status fl_part_created(fl_experiment *e, fl_part *part, fl_status st);
/* Destroys the instance (with the class's destroy `destroy`) and frees. */
void fl_part_free(fl_part *part, void (*destroy)(void *));

/* Resolves a host-only section (keys in `keys`) and records it for
 * config.ini. */
fl_status fl_experiment_section(fl_experiment *e, const char *name, const fl_key *keys,
                                uint32_t n, fl_values *out);

/* Training length in optimizer steps ([train] steps, or epochs x batches
 * per epoch, or the IWAE schedule's passes). */
uint64_t fl_experiment_steps(const fl_experiment *e);
/* The host's keys of [experiment], [train], [eval] (the density and vi
 * tasks'; a task may have its own, fl_task_model.eval_keys) and [data]
 * (besides the data set's own): a static table and its length in *n, or
 * NULL for another name. */
const fl_key *fl_experiment_section_keys(const char *section, uint32_t *n);
/* Learning rate at `step` (from 0) under [train] schedule, times the
 * linear warm-up factor (step + 1) / warmup for step < warmup. A pure
 * function of the step, so a resumed run follows the same schedule. */
double fl_experiment_lr(const fl_experiment *e, uint64_t step);

/* Builds the experiment: the shared parts, then the task's model (its
 * table entry's build). Takes ownership of `cfg` (also on failure). Errors
 * name file, line and key. */
fl_status fl_experiment_new(const fl_registry *reg, fl_config *cfg, fl_experiment **out);
void fl_experiment_free(fl_experiment *e);

/* The resolved config (every key, defaults included) as INI text. */
fl_status fl_experiment_resolved(const fl_experiment *e, fl_buf *b);

/* Rows of a fixed evaluation split (drawn sets: a fixed key independent of
 * the experiment seed, so every seed is scored on the same points). The
 * caller frees *rows with fl_free. */
fl_status fl_experiment_eval_split(fl_experiment *e, fl_split split, fl_real **rows, uint64_t *n);

/* Training batch `step` (from 0): fresh draws for drawn sets; for finite
 * sets, batch step % (N / n) of epoch step / (N / n), epochs reshuffled from
 * the seed (the last N mod n rows of an epoch are skipped). Allocates
 * nothing. */
fl_status fl_experiment_train_batch(fl_experiment *e, uint64_t step, uint32_t n, fl_real *out);
/* Points p0 .. p0+m-1 of that batch of n (m x dim into out, p0 + m <= n):
 * the same rows and the same binarization as fl_experiment_train_batch
 * gives them, whichever range is asked for (a block of [train]
 * grad_blocks). Allocates nothing. */
fl_status fl_experiment_train_rows(fl_experiment *e, uint64_t step, uint32_t n, uint32_t p0,
                                   uint32_t m, fl_real *out);

int64_t fl_exp_int(const fl_values *v, const char *key);
double fl_exp_real(const fl_values *v, const char *key);

#endif
