/* runner.h - running a sweep's cells as child `flowlab run` processes on
 * this process's job slots: preparing a cell's directory, starting the
 * child, reaping it, moving its log, recording failures (failed.txt) and
 * every cell's outcome (cells.csv). sweep/mpi.c decides which cell runs
 * where; cli/cmd_sweep.c sets the run up. */
#ifndef FL_SWEEP_RUNNER_H
#define FL_SWEEP_RUNNER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "sweep/sweep.h"

/* What became of a cell (fl_cell_result.status). */
enum { FL_CELL_PENDING, FL_CELL_DONE, FL_CELL_CACHED, FL_CELL_FAILED };

/* A cell's outcome; plain bytes, sent as such between MPI ranks. */
typedef struct fl_cell_result {
    int32_t status, code;  /* FL_CELL_*, the cell's exit status */
    double seconds;
    char err[480];         /* the cell's last error line, for failures */
} fl_cell_result;

/* One job slot: a running child, or free. */
typedef struct fl_sweep_slot {
    pid_t pid;             /* 0 = free */
    size_t cell;
    double t0;
    char *log;             /* DIR/logs/CELL.txt while it runs */
    int gradvar;           /* the child is the cell's `flowlab gradvar` ([sweep] gradvar) */
    fl_cell_result run;    /* gradvar: the cell's own outcome, recorded when gradvar ends */
} fl_sweep_slot;

typedef struct fl_sweep_run fl_sweep_run;

/* 1 when finished cell `cell`'s DIR/CELL/config.ini is what the cell would
 * resolve to now, 0 when it differs, -1 on error (fl_err set). The CLI's
 * check: it builds the cell's experiment, which the runner knows nothing
 * of. */
typedef int (*fl_sweep_same_config_fn)(const fl_sweep_run *x, size_t cell, void *ctx);

/* For unfinished cell `cell` (DIR/CELL/checkpoint.flc, no result.json):
 * 1 when the cell's experiment may resume that checkpoint now, 0 when the
 * checkpoint belongs to another experiment or lies past its steps (fl_err
 * names the first differing key, or the step), -1 on any other error
 * (fl_err set). The CLI's check (what `run --resume` would refuse). */
typedef int (*fl_sweep_resumable_fn)(const fl_sweep_run *x, size_t cell, void *ctx);

/* A sweep being run, as every rank sees it. cli/cmd_sweep.c fills it in
 * and owns its allocations (dir, base_path, s, sets, envp, res). */
struct fl_sweep_run {
    const char *argv0, *exp_path;
    const char *const *plugins;   /* --plugin PATHs, passed on to every cell */
    size_t n_plugins;
    char *dir, *base_path;        /* the sweep directory, DIR/base.ini */
    fl_sweep *s;
    const char **sets;            /* --set options for every cell */
    size_t n_sets;
    int jobs, threads, threads_swept;
    char **envp;                  /* the cells' environment (environ, or a passive copy) */
    int rank, size;               /* MPI rank and ranks (0 and 1 without MPI) */
    fl_cell_result *res;          /* rank 0: every cell's result */
    size_t n_recorded;
    fl_sweep_same_config_fn same_config;
    fl_sweep_resumable_fn resumable;  /* NULL: every checkpoint is resumed */
    void *same_config_ctx;            /* passed to same_config and resumable */
};

/* 1 when DIR/NAME/FILE (DIR/NAME when file is NULL) exists. */
int fl_sweep_exists(const char *dir, const char *name, const char *file);

/* Prepares cell `c` and starts its `flowlab run` in free slot `sl`: a
 * finished cell with the same config is not run again (FL_CELL_CACHED),
 * one with another config is moved to DIR/superseded, an unfinished one
 * with a checkpoint is resumed when its experiment is the cell's (else
 * moved to DIR/superseded too, and the cell started afresh: nothing is
 * deleted), any other leftover directory removed.
 * Returns 1 with the child in `sl`, or 0 with the outcome in `r` (finished
 * earlier, or failed before it could start). Any rank; the slot's log is
 * owned by the slot until fl_sweep_reap. With [sweep] gradvar = yes a
 * finished cell without gradvar.json gets a `flowlab gradvar` child
 * instead (returns 1). */
int fl_sweep_start_cell(fl_sweep_run *x, size_t c, fl_sweep_slot *sl, fl_cell_result *r);

/* Reaps the children that have exited, without waiting: moves each one's
 * log into its cell directory, writes failed.txt for a failure, frees its
 * slot and calls done(x, cell, result). Returns how many. With [sweep]
 * gradvar = yes a cell that finished starts `flowlab gradvar CELL` in the
 * same slot, and done is called when that ends (its output appended to the
 * cell's log.txt; a gradvar failure is a warning, the cell stays done). */
int fl_sweep_reap(fl_sweep_run *x, fl_sweep_slot *slots,
                  void (*done)(fl_sweep_run *, size_t, const fl_cell_result *));
/* 1 while any of the x->jobs slots holds a child. */
int fl_sweep_busy(const fl_sweep_run *x, const fl_sweep_slot *slots);
/* A free slot of the x->jobs, or NULL. */
fl_sweep_slot *fl_sweep_free_slot(const fl_sweep_run *x, fl_sweep_slot *slots);
/* Sleeps 20 ms: the scheduling loops' pause when nothing happened. */
void fl_sweep_nap(void);

/* Rank 0: stores cell c's result in x->res, logs it and rewrites
 * cells.csv (a write failure is logged, not returned). */
void fl_sweep_record(fl_sweep_run *x, size_t c, const fl_cell_result *r);
/* Rank 0: writes DIR/cells.csv (atomically) from x->res: one line per
 * cell with its values, status, exit status, seconds and error. */
fl_status fl_sweep_write_cells_csv(const fl_sweep_run *x);

/* Cores this process may use, and in *shared_by the MPI ranks on this node
 * that share them (1 when ranks are bound to their own cores). */
int fl_sweep_core_budget(int *shared_by);
/* environ with OMP_WAIT_POLICY=passive instead of any wait policy, for
 * oversubscribed cells. The caller frees the array (free), not its
 * strings (environ's); NULL when out of memory (then use environ). */
char **fl_sweep_passive_env(void);

#endif
