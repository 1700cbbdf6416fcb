/* cmd_gradvar.c - `flowlab gradvar`: gradient signal-to-noise ratios of a
 * trained VAE under several estimators (framework/gradvar.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "tasks/gradvar.h"
#include "output/rundir.h"
#include "tasks/subset.h"
#include "tasks/task.h"
#include "tasks/task_vae.h"
#include "core/util.h"

static const char usage[] =
    "usage: flowlab gradvar RUN_DIR [--estimators LIST] [--k LIST] [--draws D] [--n N]\n"
    "                       [--split train|valid|test] [--batch B] [--plugin PATH]...\n"
    "\n"
    "Rebuilds a trained VAE from RUN_DIR and, with its parameters fixed, measures\n"
    "how noisy each estimator's gradient is. For every estimator x k (LIST is\n"
    "comma-separated; defaults elbo,iwae,stl,dreg and 1,8,64) it takes N points\n"
    "of the split (default 100 of train: the first training batch of N rows, as\n"
    "training would draw it; of valid or test: the random subset every evaluation\n"
    "takes, or the first N with [eval] pick = first) and evaluates the gradient of\n"
    "the mean bound D times (default 200) with independent noise, the same noise\n"
    "for every estimator at one k. The batch is split into calls of at most B / k points\n"
    "(B = the rows the model holds, at least [eval] batch; --batch raises it).\n"
    "\n"
    "Per parameter the mean and variance over the draws give the signal-to-noise\n"
    "ratio |E g| / std g (Rainforth et al. 2018), averaged over the inference\n"
    "network (encoder, posterior, flows) and the generative network (decoder,\n"
    "likelihood, prior), and over each top-level parameter prefix. Also: the mean\n"
    "bound and the effective sample size (sum w)^2 / sum w^2 of each point's k\n"
    "importance weights. Combinations the model refuses (miwae or piwae with an m\n"
    "that does not divide k) are listed as n/a with the reason.\n"
    "\n"
    "Prints a table and writes gradvar.csv and gradvar.json into RUN_DIR\n"
    "(atomically). Results depend only on the arguments and the run.\n";

/* Splits a comma-separated list into trimmed, non-empty, distinct items
 * (pointers into `text`, which is modified). Returns the count, or 0 on an
 * empty or repeated item (message printed). */
static size_t split_list(const char *opt, char *text, char **items, size_t cap)
{
    size_t n = 0;
    for (char *p = text;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        while (*p == ' ') p++;
        size_t len = strlen(p);
        while (len && p[len - 1] == ' ') p[--len] = 0;
        if (!*p || n == cap) {
            fprintf(stderr, "flowlab gradvar: error: %s: %s\n", opt,
                    !*p ? "empty item in the list" : "too many items");
            return 0;
        }
        for (size_t i = 0; i < n; i++)
            if (strcmp(items[i], p) == 0) {
                fprintf(stderr, "flowlab gradvar: error: %s: '%s' is listed twice\n", opt, p);
                return 0;
            }
        items[n++] = p;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

enum { MAX_ITEMS = 32 };

static int has_gradvar(const fl_task *t) { return t->gradvar; }

int fl_cmd_gradvar(fl_cli *cli, int argc, char **argv)
{
    const char *dir = NULL, *split = "train";
    const char *est_arg = "elbo,iwae,stl,dreg", *k_arg = "1,8,64";
    unsigned long long draws = 200, n = 100, batch = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage, stdout);
            return FL_EXIT_OK;
        } else if (strcmp(argv[i], "--estimators") == 0 && i + 1 < argc) {
            est_arg = argv[++i];
        } else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc) {
            k_arg = argv[++i];
        } else if (strcmp(argv[i], "--draws") == 0 && i + 1 < argc) {
            if (!fl_cli_parse_u64(argv[++i], 2, 100000000, &draws)) {
                fprintf(stderr, "flowlab gradvar: error: --draws expects an integer in "
                                "[2, 100000000]\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
            if (!fl_cli_parse_u64(argv[++i], 1, 1u << 30, &n)) {
                fprintf(stderr, "flowlab gradvar: error: --n expects a positive integer\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            if (!fl_cli_parse_u64(argv[++i], 1, 1u << 24, &batch)) {
                fprintf(stderr, "flowlab gradvar: error: --batch expects an integer in "
                                "[1, 16777216]\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--split") == 0 && i + 1 < argc) {
            split = argv[++i];
            if (strcmp(split, "train") != 0 && strcmp(split, "valid") != 0 &&
                strcmp(split, "test") != 0) {
                fprintf(stderr, "flowlab gradvar: error: --split expects train, valid or test\n");
                return FL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            cli->plugins[cli->n_plugins++] = argv[++i];
        } else if (argv[i][0] == '-' || dir) {
            fprintf(stderr, "flowlab gradvar: error: unexpected argument '%s'\n%s", argv[i],
                    usage);
            return FL_EXIT_USAGE;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        fprintf(stderr, "flowlab gradvar: error: no run directory given\n%s", usage);
        return FL_EXIT_USAGE;
    }
    char *est_text = fl_strdup(est_arg), *k_text = fl_strdup(k_arg);
    char *ests[MAX_ITEMS], *kstr[MAX_ITEMS];
    uint32_t ks[MAX_ITEMS];
    size_t n_est = est_text ? split_list("--estimators", est_text, ests, MAX_ITEMS) : 0;
    size_t n_k = n_est && k_text ? split_list("--k", k_text, kstr, MAX_ITEMS) : 0;
    int rc = n_est && n_k ? FL_EXIT_OK : FL_EXIT_USAGE;
    for (size_t j = 0; j < n_k && rc == FL_EXIT_OK; j++) {
        unsigned long long v = 1;
        if (!fl_cli_parse_u64(kstr[j], 1, 1u << 24, &v)) {
            fprintf(stderr, "flowlab gradvar: error: --k: '%s' is not an integer in "
                            "[1, 16777216]\n", kstr[j]);
            rc = FL_EXIT_USAGE;
        }
        ks[j] = (uint32_t)v;
    }
    fl_registry *reg = NULL;
    fl_experiment *e = NULL;
    fl_real *x = NULL;
    fl_gradvar_result res = { 0 };
    fl_status st = FL_OK;
    if (rc == FL_EXIT_OK) {
        char *bs = batch ? fl_strfmt("eval.batch=%llu", batch) : NULL;
        const char *sets[1] = { bs };
        st = fl_cli_load_run_with(cli, dir, sets, bs ? 1 : 0, &reg, &e);
        free(bs);
        if (st == FL_OK && !fl_task_of(e)->gradvar) {
            char names[128];
            fl_task_names(has_gradvar, names, sizeof names);
            fl_err("%s: flowlab gradvar compares the estimators of %s runs; this run's task is %s",
                   dir, names, e->task->name);
            st = FL_ERR_INVALID;
        }
        if (st != FL_OK) rc = fl_cli_fail(st);
    }
    for (size_t i = 0; i < n_est && rc == FL_EXIT_OK; i++)
        if (!fl_registry_find(reg, FL_KIND_ESTIMATOR, ests[i])) {
            fprintf(stderr, "flowlab gradvar: error: --estimators: no estimator named '%s' "
                            "(see flowlab plugins)\n", ests[i]);
            rc = FL_EXIT_USAGE;
        }
    for (size_t j = 0; j < n_k && rc == FL_EXIT_OK; j++)
        if (ks[j] > fl_vae_max_rows(e)) {
            fprintf(stderr, "flowlab gradvar: error: --k %u: the model holds %u sample rows per "
                            "call; raise them with --batch %u or more\n", ks[j],
                    fl_vae_max_rows(e), ks[j]);
            rc = FL_EXIT_USAGE;
        }
    /* the batch: the training batch of step 0, or n points of the valid or test split
     * (tasks/subset.h) */
    uint32_t np = (uint32_t)n;
    if (rc == FL_EXIT_OK) {
        if (strcmp(split, "train") == 0) {
            if (!(e->info.drawn & 1u) && e->info.n[FL_SPLIT_TRAIN] < n) {
                fprintf(stderr, "flowlab gradvar: error: --n %llu: the training split of %s has "
                                "only %llu rows\n", n, dir,
                        (unsigned long long)e->info.n[FL_SPLIT_TRAIN]);
                rc = FL_EXIT_USAGE;
            } else if (!(x = fl_alloc((size_t)n * e->info.dim * sizeof *x))) {
                st = FL_ERR_NOMEM;
            } else {
                st = fl_experiment_train_batch(e, 0, np, x);
            }
        } else {
            uint64_t cnt = 0;
            st = fl_experiment_eval_split(e, strcmp(split, "valid") == 0 ? FL_SPLIT_VALID
                                                                         : FL_SPLIT_TEST,
                                          &x, &cnt);
            if (st == FL_OK && cnt < n) {
                fprintf(stderr, "flowlab gradvar: error: --n %llu: the %s split of %s has only "
                                "%llu rows\n", n, split, dir, (unsigned long long)cnt);
                rc = FL_EXIT_USAGE;
            }
            /* n of its points as every evaluation subset: random unless [eval] pick = first */
            if (st == FL_OK && rc == FL_EXIT_OK)
                st = fl_subset_apply(x, &cnt, e->info.dim, n, fl_subset_random(e, NULL), NULL);
        }
        if (st != FL_OK) rc = fl_cli_fail(st);
    }
    if (rc == FL_EXIT_OK) {
        printf("gradvar of %s: %u points of the %s split, %llu draws, model rows %u\n", dir, np,
               split, draws, fl_vae_max_rows(e));
        fflush(stdout);
        st = fl_gradvar_run(e, x, np, (const char *const *)ests, n_est, ks, n_k, (uint32_t)draws,
                            1, &res);
        if (st == FL_OK) {
            fl_gradvar_print(&res, stdout);
            fl_buf c = { 0 }, j = { 0 };
            fl_gradvar_csv(&res, &c);
            fl_gradvar_json(&res, dir, split, &j);
            if (c.failed || j.failed) st = FL_ERR_NOMEM;
            if (st == FL_OK) st = fl_rundir_write(dir, "gradvar.csv", c.data, c.len);
            if (st == FL_OK) st = fl_rundir_write(dir, "gradvar.json", j.data, j.len);
            if (st == FL_OK) printf("wrote %s/gradvar.csv and %s/gradvar.json\n", dir, dir);
            fl_buf_free(&c);
            fl_buf_free(&j);
        }
        if (st != FL_OK) rc = fl_cli_fail(st);
    }
    fl_gradvar_result_free(&res);
    fl_free(x);
    fl_experiment_free(e);
    fl_registry_free(reg);
    free(est_text);
    free(k_text);
    return rc;
}
