/* cmd_eval.c - `flowlab eval`: the evaluation suite of a trained VAE, the
 * exact NLL (bits/dim) of a density run. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "core/log.h"
#include "tasks/task.h"
#include "train/dist.h"
#include "train/dist_mpi.h"
#include "core/util.h"

static const char usage[] =
    "usage: flowlab eval RUN_DIR [--k K] [--split test|valid] [--n N]\n"
    "                    [--pick random|first] [--batch B] [--best] [--plugin PATH]...\n"
    "\n"
    "Rebuilds a trained VAE from RUN_DIR and estimates its log-likelihood on a\n"
    "split by importance sampling with K samples per point (default: the run's\n"
    "[eval] k, 5000 as in Burda et al.), in chunks of B samples (default [eval]\n"
    "batch) so memory stays bounded. Reports per point and on average: the\n"
    "IWAE-K estimate of log p(x) with its standard error, the ELBO, their gap,\n"
    "KL(q||p), the effective sample size of the importance weights, and the\n"
    "active units (variance over x of E_q[z|x] above [eval] au_threshold).\n"
    "Writes eval.json, eval_points.csv and eval_units.csv into RUN_DIR\n"
    "(atomically) and prints a table. Those names are the run's own test\n"
    "evaluation (test split, every point or [eval] n, [eval] k: the numbers in\n"
    "result.json); any other --split/--k/--n writes eval-SPLIT-kK-nN.json,\n"
    "eval-SPLIT-kK-nN_points.csv and eval-SPLIT-kK-nN_units.csv instead\n"
    "(N the points evaluated), e.g. eval-valid-k3-n5.json.\n"
    "\n"
    "--n N scores N points of the split drawn at random: a uniform subset from\n"
    "a fixed key that depends only on the split's size (rng key (rows,\n"
    "\"eval.subset\")), so every run, seed and model of the same data set scores\n"
    "the same points and comparisons stay paired; a smaller N's points are\n"
    "among a larger N's. --pick first takes the split's first N rows instead\n"
    "(biased on ordered files). Without --pick a vae run uses its [eval] pick\n"
    "(random by default); a choice other than the run's adds -first or -random\n"
    "to the file names.\n"
    "\n"
    "A density run is scored exactly (no --k): the mean -log p(x) of the split\n"
    "(every point, or N of them as above) with its standard error, and for\n"
    "image runs with dequantized levels its bits/dim; written to eval.json (the\n"
    "whole test split) or eval-SPLIT-nN.json (eval-SPLIT-nN-first.json with\n"
    "--pick first).\n"
    "\n"
    "--best evaluates RUN_DIR/best.flc, the model of the periodic evaluation with\n"
    "the best validation figure ([train] keep_best), instead of the last one, and\n"
    "writes the files above into RUN_DIR/best/.\n"
    "\n"
    "Under `mpirun -n R` the points are split over the R processes; the numbers\n"
    "do not depend on R, and rank 0 alone writes and prints.\n";

static int has_eval(const fl_task *t) { return t->eval != NULL; }

int fl_cmd_eval(fl_cli *cli, int argc, char **argv)
{
    const char *dir = NULL, *split = "test", *pick = NULL;
    unsigned long long k = 0, n = 0, batch = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc) {
            if (!fl_cli_parse_u64(argv[++i], 1, 1ull << 24, &k)) {
                fprintf(stderr, "flowlab eval: error: --k expects an integer in [1, 16777216]\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
            if (!fl_cli_parse_u64(argv[++i], 1, 1ull << 40, &n)) {
                fprintf(stderr, "flowlab eval: error: --n expects a positive integer\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            if (!fl_cli_parse_u64(argv[++i], 1, 1ull << 24, &batch)) {
                fprintf(stderr, "flowlab eval: error: --batch expects a positive integer\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--split") == 0 && i + 1 < argc) {
            split = argv[++i];
            if (strcmp(split, "test") != 0 && strcmp(split, "valid") != 0) {
                fprintf(stderr, "flowlab eval: error: --split expects test or valid\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--best") == 0) {
            cli->best = 1;
        } else if (strcmp(argv[i], "--pick") == 0 && i + 1 < argc) {
            pick = argv[++i];
            if (strcmp(pick, "random") != 0 && strcmp(pick, "first") != 0) {
                fprintf(stderr, "flowlab eval: error: --pick expects random or first\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "flowlab eval: error: unexpected argument '%s'\n%s", argv[i], usage);
            return FL_EXIT_USAGE;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        fprintf(stderr, "flowlab eval: error: no run directory given\n%s", usage);
        return FL_EXIT_USAGE;
    }
    /* Under mpirun: the points over the ranks, rank 0 writes and prints. */
    const int mpi = fl_dist_mpi_start("eval");
    if (mpi < 0) return FL_EXIT_USAGE;
    const int rank = fl_dist_rank();
    if (rank > 0) {
        fl_log_set_level(FL_LOG_ERROR);
        if (!freopen("/dev/null", "w", stdout)) { /* its lines are rank 0's anyway */ }
    }
    fl_registry *reg = NULL;
    fl_experiment *e = NULL;
    char *bs = batch ? fl_strfmt("eval.batch=%llu", batch) : NULL;
    const char *sets[1] = { bs };
    fl_status st = fl_cli_load_run_with(cli, dir, sets, bs ? 1 : 0, &reg, &e);
    free(bs);
    if (st == FL_OK && !fl_task_of(e)->eval) {
        char names[128];
        fl_task_names(has_eval, names, sizeof names);
        fl_err("%s: flowlab eval evaluates %s runs; this run's task is %s (its result.json "
               "has its test score)", dir, names, e->task->name);
        st = FL_ERR_INVALID;
    }
    const fl_task_eval_args a = { strcmp(split, "valid") == 0 ? FL_SPLIT_VALID : FL_SPLIT_TEST,
                                  k, n, pick };
    /* --best: the best model's files beside, not over, the run's own */
    char *out = cli->best ? fl_strfmt("%s/best", dir) : fl_strdup(dir);
    if (st == FL_OK && !out) st = FL_ERR_NOMEM;
    if (st == FL_OK && cli->best && rank == 0 && mkdir(out, 0777) != 0 && errno != EEXIST) {
        fl_err("%s: %s", out, strerror(errno));
        st = FL_ERR_IO;
    }
    st = fl_dist_agree(st); /* every rank loaded the run */
    if (st == FL_OK) st = fl_task_of(e)->eval(e, &a, out); /* files into out, a table */
    free(out);
    int rc = st == FL_OK                                ? FL_EXIT_OK
             : rank > 0 && fl_dist_error_shared() ? fl_exit_code(st) /* rank 0 says it */
                                                        : fl_cli_fail(st);
    fl_experiment_free(e);
    fl_registry_free(reg);
    if (mpi) fl_dist_mpi_end();
    return rc;
}
