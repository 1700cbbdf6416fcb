/* cmd_run.c - `flowlab run`: train and evaluate an experiment file. */
#include <dirent.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compute/fpenv.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/dist_mpi.h"
#include "train/resume.h"
#include "cli/cli.h"
#include "model/experiment.h"
#include "core/log.h"
#include "output/provenance.h"
#include "output/rundir.h"
#include "sweep/sweep.h"
#include "tasks/task.h"
#include "core/util.h"

static const char usage[] =
    "usage: flowlab run EXP.ini [--set SECTION.KEY=VALUE]... [--unset SECTION[.KEY]]...\n"
    "                   [--out DIR [--resume]] [--plugin PATH]...\n"
    "\n"
    "Validates EXP.ini against the schemas of the components it names, trains the\n"
    "model and evaluates it. The run directory (DIR, or runs/NAME-DATE-TIME) gets\n"
    "config.ini (the resolved config, defaults included), metrics.csv,\n"
    "checkpoint.flc and result.json, each written atomically, and the pictures of\n"
    "`flowlab plot` (*.png). An existing non-empty DIR is refused (but see --resume).\n"
    "\n"
    "  --set S.K=V   override key K of section S (e.g. --set train.steps=500,\n"
    "                --set flow.1.hidden=32,32); repeatable\n"
    "  --unset S.K   remove key K of section S from EXP.ini (its default applies),\n"
    "                or with --unset S the whole section; applied before every\n"
    "                --set, e.g. --unset flow.1 --set flow.1.type=maf replaces a\n"
    "                coupling layer spelled out key by key; repeatable\n"
    "  --out DIR     run directory\n"
    "  --resume      continue the run in DIR (--out) from its last checkpoint;\n"
    "                a DIR without a checkpoint starts afresh in place when it\n"
    "                holds no result.json and only files flowlab writes (a run\n"
    "                stopped before its first checkpoint), else it is refused\n"
    "\n"
    "DIR also gets provenance.json (version, git revision, plugins, seed, host,\n"
    "times, exit status), also when the run fails. A file with a [sweep] section\n"
    "is refused: run it with `flowlab sweep`.\n"
    "\n"
    "Under `mpirun -n N` every batch is split over the N processes, which hold\n"
    "the same parameters; rank 0 alone writes DIR and prints. The result does\n"
    "not depend on N: it needs N <= [train] grad_blocks (docs/performance.md).\n";

/* Whether `name` is a file a run writes into its directory (config.ini,
 * metrics.csv, provenance.json, best.flc, pictures, evaluations, a sweep cell's log,
 * an atomic write's leftover NAME.tmp.PID); result.json and checkpoint.flc
 * are checked apart. */
static int flowlab_file(const char *name)
{
    static const char *const exact[] = { "config.ini", "metrics.csv", "provenance.json",
                                         "best.flc", "log.txt", "failed.txt", "plot_grid.csv",
                                         "curves_axes.csv", "samples_grid.csv", "gradvar.json",
                                         "gradvar.csv" };
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
        if (strcmp(name, exact[i]) == 0) return 1;
    size_t n = strlen(name);
    if (strstr(name, ".tmp.")) return 1;
    if (n > 4 && (!strcmp(name + n - 4, ".png") || !strcmp(name + n - 4, ".svg"))) return 1;
    return strncmp(name, "eval", 4) == 0 && n > 5 &&
           (strcmp(name + n - 5, ".json") == 0 || strcmp(name + n - 4, ".csv") == 0);
}

/* --resume with a directory that has no checkpoint: *in_place = 1 when
 * `dir` exists, is not empty, holds no result.json and only files of
 * flowlab (a run stopped before its first checkpoint): it starts afresh
 * there. A missing or empty directory is left to fl_rundir_create
 * (*in_place = 0); anything else is refused. */
static fl_status restart_check(const char *dir, int *in_place)
{
    *in_place = 0;
    DIR *d = opendir(dir);
    if (!d) return FL_OK; /* missing (or not a directory): fl_rundir_create says */
    struct dirent *de;
    const char *bad = NULL;
    int files = 0, finished = 0;
    char first[256] = "";
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        files++;
        if (strcmp(de->d_name, "result.json") == 0) finished = 1;
        else if (!bad && !flowlab_file(de->d_name)) {
            snprintf(first, sizeof first, "%s", de->d_name);
            bad = first;
        }
    }
    closedir(d);
    if (files == 0) return FL_OK;
    if (finished) {
        fl_err("%s: holds a finished run (result.json) but no checkpoint.flc to resume from; "
               "choose another --out or remove it (runs are never overwritten)",
               dir);
        return FL_ERR_EXISTS;
    }
    if (bad) {
        fl_err("%s: has no checkpoint.flc to resume from and holds %s, which flowlab does not "
               "write; choose another --out or remove it (runs are never overwritten)",
               dir, bad);
        return FL_ERR_EXISTS;
    }
    fl_log(FL_LOG_INFO, "%s: no checkpoint.flc to resume from; starting afresh in it", dir);
    *in_place = 1;
    return FL_OK;
}

/* Rank 0's run directory: --resume checks (nothing is written into DIR
 * before it is known to hold this experiment's unfinished run), the
 * directory made or reused (*dir, also when a later write fails), then
 * config.ini. *resume becomes 0 when DIR has no checkpoint. */
static fl_status make_rundir(const fl_experiment *e, const char *out, int *resume, char **dir)
{
    fl_status st = FL_OK;
    int in_place = 0; /* --resume on a directory without a checkpoint: start afresh there */
    if (*resume) {
        /* An existing run directory is continued, a missing one created. */
        char *ck = fl_strfmt("%s/checkpoint.flc", out);
        *resume = ck && access(ck, R_OK) == 0;
        free(ck);
        if (!*resume) st = restart_check(out, &in_place);
        /* the same experiment, result.json absent, a checkpoint within its steps */
        else st = fl_resume_check(e, out);
        if (st != FL_OK) return st;
    }
    if (*resume || in_place) {
        *dir = fl_strdup(out);
        st = *dir ? FL_OK : FL_ERR_NOMEM;
    } else {
        st = fl_rundir_create(out, fl_values_get(&e->exp, "name")->text, dir);
    }
    if (st != FL_OK) return st;
    fl_buf b = { 0 };
    st = fl_experiment_resolved(e, &b);
    if (st == FL_OK) st = fl_rundir_write(*dir, "config.ini", b.data, b.len);
    fl_buf_free(&b);
    return st;
}

/* Trains e with its task (the shared loop), then the task's final
 * evaluation, pictures and result.json, result.json last: its presence
 * means the run is complete. */
static fl_status run_task(fl_experiment *e, const char *exp_path, const char *dir, int resume)
{
    const fl_task *t = fl_task_of(e);
    char what[256];
    t->describe(e, what, sizeof what);
    if (fl_dist_size() > 1)
        fl_log(FL_LOG_INFO, "%s: %s, %zu parameters, %d ranks x %d threads, [train] "
               "grad_blocks = %lld -> %s", exp_path, what, e->arena.count, fl_dist_size(),
               omp_get_max_threads(), (long long)fl_exp_int(&e->train, "grad_blocks"), dir);
    else
        fl_log(FL_LOG_INFO, "%s: %s, %zu parameters, %d threads -> %s", exp_path, what,
               e->arena.count, omp_get_max_threads(), dir);
    void *run = NULL;
    fl_train_summary s;
    const char *files = NULL;
    fl_status st = fl_task_train(e, dir, resume, &run, &s);
    if (st == FL_OK && t->finish) st = t->finish(e, run, &s, dir);
    if (st == FL_OK && t->plot) st = t->plot(e, dir, &files); /* the pictures of `flowlab plot` */
    if (st == FL_OK) st = t->write_result(e, run, &s, dir);
    if (st == FL_OK) t->report(e, run, &s, dir);
    t->run_free(run);
    return st;
}

/* A rank other than 0 under mpirun: trains its blocks and takes part in
 * the evaluations; writes nothing (dir NULL). */
static fl_status run_task_rank(fl_experiment *e, int resume)
{
    const fl_task *t = fl_task_of(e);
    void *run = NULL;
    fl_train_summary s;
    fl_status st = fl_task_train(e, NULL, resume, &run, &s);
    if (st == FL_OK && t->finish) st = t->finish(e, run, &s, NULL);
    t->run_free(run);
    return st;
}

int fl_cmd_run(fl_cli *cli, int argc, char **argv)
{
    const double t_start = fl_provenance_now(); /* for provenance.json */
    const char *exp_path = NULL, *out = NULL;
    int resume = 0;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    const char **unsets = calloc((size_t)argc + 1, sizeof *unsets);
    size_t n_sets = 0, n_unsets = 0;
    if (!sets || !unsets) {
        free(sets);
        free(unsets);
        return FL_EXIT_FAILURE;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            free(sets);
            free(unsets);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            sets[n_sets++] = argv[++i];
        } else if (strncmp(argv[i], "--set=", 6) == 0) {
            sets[n_sets++] = argv[i] + 6;
        } else if (strcmp(argv[i], "--unset") == 0 && i + 1 < argc) {
            unsets[n_unsets++] = argv[++i];
        } else if (strncmp(argv[i], "--unset=", 8) == 0) {
            unsets[n_unsets++] = argv[i] + 8;
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (strcmp(argv[i], "--resume") == 0) {
            resume = 1;
        } else if (i + 1 == argc && (!strcmp(argv[i], "--set") || !strcmp(argv[i], "--out") ||
                                     !strcmp(argv[i], "--plugin") || !strcmp(argv[i], "--unset"))) {
            fprintf(stderr, "flowlab: error: %s needs a value (flowlab run --help)\n", argv[i]);
            free(sets);
            free(unsets);
            return FL_EXIT_USAGE;
        } else if (argv[i][0] == '-' || exp_path) {
            fprintf(stderr, "flowlab run: error: unexpected argument '%s'\n%s", argv[i], usage);
            free(sets);
            free(unsets);
            return FL_EXIT_USAGE;
        } else {
            exp_path = argv[i];
        }
    }
    if (!exp_path) {
        fprintf(stderr, "flowlab run: error: no experiment file given\n%s", usage);
        free(sets);
        free(unsets);
        return FL_EXIT_USAGE;
    }
    if (resume && !out) {
        fprintf(stderr, "flowlab run: error: --resume needs the run directory (--out DIR)\n");
        free(sets);
        free(unsets);
        return FL_EXIT_USAGE;
    }

    /* Under mpirun: rank 0 writes and prints, the others only compute. */
    const int mpi = fl_dist_mpi_start("run");
    if (mpi < 0) {
        free(sets);
        free(unsets);
        return FL_EXIT_USAGE;
    }
    const int rank = fl_dist_rank();
    if (rank > 0) {
        fl_log_set_level(FL_LOG_ERROR);
        if (!freopen("/dev/null", "w", stdout)) { /* its lines are rank 0's anyway */ }
    }
    fl_registry *reg = NULL;
    fl_config *cfg = NULL;
    fl_experiment *e = NULL;
    char *dir = NULL;
    fl_status st = fl_sweep_refuse_run(exp_path); /* [sweep] files are for `flowlab sweep` */
    if (st == FL_OK) st = fl_config_load(exp_path, &cfg);
    for (size_t i = 0; st == FL_OK && i < n_unsets; i++) st = fl_config_unset(cfg, unsets[i]);
    for (size_t i = 0; st == FL_OK && i < n_sets; i++) st = fl_config_set(cfg, sets[i]);
    free(sets);
    free(unsets);
    if (st == FL_OK) st = fl_cli_registry(cli, &reg);
    char missing[1024] = ""; /* --resume: the run's plugins that are gone */
    if (st == FL_OK && resume) st = fl_provenance_reload(out, reg, missing, sizeof missing);
    if (st == FL_OK) {
        st = fl_experiment_new(reg, cfg, &e);
        cfg = NULL;
        fl_cli_missing_plugins(&st, missing);
    }
    if (st == FL_OK) {
        int threads = (int)fl_exp_int(&e->exp, "threads");
        if (threads > 0) {
            omp_set_num_threads(threads);
            /* the new team */
            fl_fpenv_flush_denormals(fl_exp_int(&e->exp, "flush_denormals") != 0);
        }
    }
    if (st == FL_OK && rank == 0) st = make_rundir(e, out, &resume, &dir);
    st = fl_dist_agree(st); /* every rank built the experiment, rank 0 the directory */
    if (st != FL_OK) goto done;
    if (fl_dist_size() > 1) {
        /* the others learn rank 0's directory (for their messages) and resume */
        char name[4096] = "";
        if (rank == 0) snprintf(name, sizeof name, "%s", dir);
        fl_dist_bcast0(name, sizeof name);
        fl_dist_bcast0(&resume, sizeof resume);
        fl_dist_watch(exp_path, name);
    }
    /* provenance.json as the run starts, so --resume of a killed run knows
     * its plugins; rewritten at the end */
    if (rank == 0 && dir) {
        st = fl_provenance_write(dir, reg, e->seed, t_start, t_start, fl_fpenv_flushing(),
                                 FL_PROVENANCE_RUNNING);
        if (st != FL_OK) goto done;
    }
    st = rank == 0 ? run_task(e, exp_path, dir, resume) : run_task_rank(e, resume);
done:;
    int rc = st == FL_OK                                ? FL_EXIT_OK
             : rank > 0 && fl_dist_error_shared() ? fl_exit_code(st) /* rank 0 says it */
                                                        : fl_cli_fail(st);

    /* ---- provenance.json (framework/provenance.c): whenever a run directory
     * exists, successful or not ---- */
    if (dir) {
        fl_status pst = fl_provenance_write(dir, reg, e ? e->seed : 0, t_start,
                                            fl_provenance_now(), e ? fl_fpenv_flushing() : -1,
                                            rc);
        if (pst != FL_OK && rc == FL_EXIT_OK) rc = fl_cli_fail(pst);
    }
    /* ---- end of provenance ---- */

    fl_experiment_free(e);
    fl_config_free(cfg);
    fl_registry_free(reg);
    free(dir);
    if (mpi) fl_dist_mpi_end();
    return rc;
}
