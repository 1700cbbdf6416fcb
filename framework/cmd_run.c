/* cmd_run.c - `flowlab run`: train and evaluate an experiment file. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "cli.h"
#include "experiment.h"
#include "log.h"
#include "plot.h"
#include "rundir.h"
#include "task_density.h"
#include "task_vi.h"
#include "util.h"

static const char usage[] =
    "usage: flowlab run EXP.ini [--set SECTION.KEY=VALUE]... [--out DIR] [--plugin PATH]...\n"
    "\n"
    "Validates EXP.ini against the schemas of the components it names, trains the\n"
    "model and evaluates it. The run directory (DIR, or runs/NAME-DATE-TIME) gets\n"
    "config.ini (the resolved config, defaults included), metrics.csv,\n"
    "checkpoint.flc and result.json, each written atomically, and the pictures of\n"
    "`flowlab plot` (*.png). An existing non-empty DIR is refused.\n"
    "\n"
    "  --set S.K=V   override key K of section S (e.g. --set train.steps=500,\n"
    "                --set flow.1.hidden=32,32); repeatable\n"
    "  --out DIR     run directory\n";

fl_status fl_cli_registry(const fl_cli *cli, fl_registry **out)
{
    fl_registry *r = fl_registry_new();
    if (!r) return FL_ERR_NOMEM;
    fl_registry_load_defaults(r);
    for (size_t i = 0; i < cli->n_plugins; i++) {
        fl_status st = fl_registry_load(r, cli->plugins[i]);
        if (st != FL_OK) {
            fl_registry_free(r);
            return st;
        }
    }
    *out = r;
    return FL_OK;
}

fl_status fl_cli_load_run(const fl_cli *cli, const char *dir, fl_registry **reg,
                          fl_experiment **e)
{
    *reg = NULL;
    *e = NULL;
    char *cpath = fl_strfmt("%s/config.ini", dir), *kpath = fl_strfmt("%s/checkpoint.flc", dir);
    fl_config *cfg = NULL;
    fl_status st = cpath && kpath ? FL_OK : FL_ERR_NOMEM;
    if (st == FL_OK && access(cpath, R_OK) != 0) {
        fl_err("%s: not a run directory (no readable config.ini; `flowlab run` makes one)", dir);
        st = FL_ERR_IO;
    }
    if (st == FL_OK) st = fl_config_load(cpath, &cfg);
    if (st == FL_OK) st = fl_cli_registry(cli, reg);
    if (st == FL_OK) {
        st = fl_experiment_new(*reg, cfg, e);
        cfg = NULL;
    }
    if (st == FL_OK) st = fl_checkpoint_load(kpath, &(*e)->arena, NULL, NULL, 1, NULL);
    if (st != FL_OK) {
        fl_experiment_free(*e);
        fl_registry_free(*reg);
        *e = NULL;
        *reg = NULL;
    }
    fl_config_free(cfg);
    free(cpath);
    free(kpath);
    return st;
}

int fl_cli_fail(fl_status st)
{
    fl_log(FL_LOG_ERROR, "%s", fl_err_msg());
    return fl_exit_code(st);
}

int fl_cmd_run(fl_cli *cli, int argc, char **argv)
{
    const char *exp_path = NULL, *out = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    size_t n_sets = 0;
    if (!sets) return FL_EXIT_FAILURE;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            free(sets);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            sets[n_sets++] = argv[++i];
        } else if (strncmp(argv[i], "--set=", 6) == 0) {
            sets[n_sets++] = argv[i] + 6;
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (argv[i][0] == '-' || exp_path) {
            fprintf(stderr, "flowlab run: error: unexpected argument '%s'\n%s", argv[i], usage);
            free(sets);
            return FL_EXIT_USAGE;
        } else {
            exp_path = argv[i];
        }
    }
    if (!exp_path) {
        fprintf(stderr, "flowlab run: error: no experiment file given\n%s", usage);
        free(sets);
        return FL_EXIT_USAGE;
    }

    fl_registry *reg = NULL;
    fl_config *cfg = NULL;
    fl_experiment *e = NULL;
    char *dir = NULL;
    fl_status st = fl_config_load(exp_path, &cfg);
    for (size_t i = 0; st == FL_OK && i < n_sets; i++) st = fl_config_set(cfg, sets[i]);
    free(sets);
    if (st == FL_OK) st = fl_cli_registry(cli, &reg);
    if (st == FL_OK) {
        st = fl_experiment_new(reg, cfg, &e);
        cfg = NULL;
    }
    if (st != FL_OK) goto done;

    int threads = (int)fl_exp_int(&e->exp, "threads");
    if (threads > 0) omp_set_num_threads(threads);

    st = fl_rundir_create(out, fl_values_get(&e->exp, "name")->text, &dir);
    if (st != FL_OK) goto done;
    fl_buf b = { 0 };
    st = fl_experiment_resolved(e, &b);
    if (st == FL_OK) st = fl_rundir_write(dir, "config.ini", b.data, b.len);
    fl_buf_free(&b);
    if (st != FL_OK) goto done;

    fl_log(FL_LOG_INFO, "%s: %s on %s, %zu flow layers, %zu parameters, %d threads -> %s",
           exp_path, e->task, e->data_type, e->stack->n, e->arena.count, omp_get_max_threads(),
           dir);
    if (strcmp(e->task, "vi") == 0) { /* task vi: task_vi.c */
        fl_vi_result vr;
        st = fl_vi_train(e, dir, &vr);
        if (st == FL_OK) st = fl_plot_vi(e, dir);
        if (st != FL_OK) goto done;
        fl_vi_report(e, &vr, stdout);
        printf("ELBO %.4f +- %.4f, KL %.4f; %llu steps in %.2f s, %.0f steps/s; run directory "
               "%s\n",
               vr.elbo, vr.elbo_se, vr.kl, (unsigned long long)vr.steps, vr.seconds,
               vr.steps_per_s, dir);
        goto done;
    }
    fl_density_result res;
    st = fl_density_train(e, dir, &res);
    if (st == FL_OK) st = fl_plot_density(e, dir); /* the pictures of `flowlab plot` */
    if (st != FL_OK) goto done;
    printf("test NLL %.4f +- %.4f nats (%llu points); %llu steps in %.2f s, %.0f steps/s; run "
           "directory %s\n",
           res.test_nll, res.test_se, (unsigned long long)e->info.n[FL_SPLIT_TEST],
           (unsigned long long)res.steps, res.seconds, res.steps_per_s, dir);
done:;
    int rc = st == FL_OK ? FL_EXIT_OK : fl_cli_fail(st);
    fl_experiment_free(e);
    fl_config_free(cfg);
    fl_registry_free(reg);
    free(dir);
    return rc;
}
