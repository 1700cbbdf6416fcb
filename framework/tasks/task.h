/* task.h - the task table: one entry per task (density, vae, vi).
 *
 * Every command and the experiment assembly find what a task does here;
 * no task name is compared anywhere else. An entry is the task's model
 * part (sections, [eval] keys, build: model/experiment.h), its side of the
 * training loop (train/loop.h) and what `flowlab run`, `eval`, `sample`,
 * `plot` and `gradvar` call; a NULL hook means the task does not support
 * that command. docs/architecture.md ("Adding a task") says how to add one. */
#ifndef FL_TASK_H
#define FL_TASK_H

#include <stdio.h>

#include "model/experiment.h"
#include "train/loop.h"

/* `flowlab eval`'s request (tasks with an evaluation suite). */
typedef struct fl_task_eval_args {
    fl_split split;
    uint64_t k;       /* samples per point; 0 = the run's [eval] k */
    uint64_t n;       /* points; 0 = all of the split */
    const char *pick; /* "first" or "random" (tasks/subset.h); NULL = the run's [eval]
                         pick, random when the task has none */
} fl_task_eval_args;

typedef struct fl_task {
    fl_task_model model;   /* name, sections, [eval] keys, build, free (first member:
                              fl_task_of casts e->task back) */
    /* The keys of one of the task's own host sections ([encoder], [vi],
     * ...) for `flowlab plugins SECTION`: a static table and its length,
     * or NULL when the section is not the task's. NULL = none. */
    const fl_key *(*section_keys)(const char *section, uint32_t *n);

    /* ---- flowlab run ---- */
    fl_trainer trainer;    /* step, periodic evaluation, metrics columns */
    /* Optional: the trainer for this experiment when it is not `trainer`
     * (density on images: columns in bits/dim). NULL = always `trainer`. */
    const fl_trainer *(*trainer_of)(const fl_experiment *e);
    /* The per-run state the trainer's hooks share (buffers of the step,
     * evaluation data, last results), allocated here, before the loop. */
    fl_status (*run_new)(fl_experiment *e, void **run);
    void (*run_free)(void *run);
    /* One log line before training ("vae on mnist, ..."), into buf. */
    void (*describe)(const fl_experiment *e, char *buf, size_t cap);
    /* After training, before the pictures: the final evaluation and what
     * it prints (vae: the test suite, eval.json). NULL = none. */
    fl_status (*finish)(fl_experiment *e, void *run, const fl_train_summary *s, const char *dir);
    /* Writes dir/result.json (atomically), last: its presence means the
     * run is complete. */
    fl_status (*write_result)(fl_experiment *e, void *run, const fl_train_summary *s,
                              const char *dir);
    /* The closing lines on stdout. */
    void (*report)(const fl_experiment *e, void *run, const fl_train_summary *s,
                   const char *dir);

    /* ---- the other commands; NULL = not supported ---- */
    /* flowlab plot (and the pictures of flowlab run) into dir; *files
     * names them for the log ("{density,data,samples,curves}.png"). */
    fl_status (*plot)(fl_experiment *e, const char *dir, const char **files);
    /* flowlab sample: the width of a sample and n samples (n x dim) drawn
     * from `seed`. */
    uint32_t (*sample_dim)(const fl_experiment *e);
    fl_status (*sample)(fl_experiment *e, uint64_t n, uint64_t seed, fl_real *out);
    /* flowlab eval: the evaluation suite on a split, files into dir and a
     * table on stdout. */
    fl_status (*eval)(fl_experiment *e, const fl_task_eval_args *a, const char *dir);
    /* flowlab logprob and the embedding API (tasks/logprob.h): log p(x) of
     * each of n rows of e->info.dim values into out (n), with the run's own
     * preprocessing; k = importance samples where the task estimates (0 =
     * the run's [eval] k), refused with FL_ERR_INVALID where it does not. */
    fl_status (*logprob)(fl_experiment *e, const fl_real *x, uint64_t n, uint64_t k,
                         double *out);
    /* flowlab gradvar (tasks/gradvar.c) compares this task's estimators. */
    int gradvar;
} fl_task;

/* The entry named `name`, or NULL. */
const fl_task *fl_task_find(const char *name);
/* Entry i, NULL past the last (for listings). */
const fl_task *fl_task_at(size_t i);
/* The entry an experiment was built with. */
const fl_task *fl_task_of(const fl_experiment *e);
/* Names of the entries with a hook for a command, "vae" or "density and vi",
 * into buf (for messages): `has` tells whether an entry has it. */
void fl_task_names(int (*has)(const fl_task *t), char *buf, size_t cap);

/* Trains e with its task's trainer through the shared loop (train/loop.h):
 * run_new, fl_train_loop, and the run state in *run for the hooks that
 * follow (finish, write_result, report); free it with the task's run_free.
 * On failure *run is still set (or NULL). */
fl_status fl_task_train(fl_experiment *e, const char *rundir, int resume, void **run,
                        fl_train_summary *s);

#endif
