/* bench_pathgrad.c - the cost of stl/dreg's path derivative against an iwae
 * step on the same vae model (issue 18, item 1): user CPU time of this
 * process per gradient (forward, estimator weights, backward: fl_vae_bound
 * with grad = 1 on one fixed batch of binarized MNIST), iwae and dreg
 * interleaved round by round, so a loaded machine slows both alike.
 *   OMP_NUM_THREADS=1 build/bench/bench_pathgrad [ROUNDS [MNIST_DIR]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "compute/blas.h"
#include "core/config.h"
#include "core/log.h"
#include "core/registry.h"
#include "core/util.h"
#include "model/experiment.h"
#include "tasks/task_vae.h"

static const char base[] =
    "[experiment]\ntask = vae\nseed = 1\n"
    "[data]\ntype = binarized-mnist\ndir = %s\n"
    "[decoder]\nhidden = 200,200\nact = tanh\n[likelihood]\ntype = bernoulli\n"
    "[estimator]\ntype = %s\nk = %u\n%s"
    "[train]\nbatch = %u\nsteps = 1\neval_every = 0\n"
    "[eval]\nbatch = %u\nvalid_n = 1\nvalid_k = 1\nat_end = false\n";

typedef struct cfg {
    const char *name, *ini;
    uint32_t k, batch, reps;
} cfg;

static double user_seconds(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec;
}

/* Seconds of user CPU per gradient of `est` on c's model. */
static double time_one(const fl_registry *r, const char *dir, const cfg *c, const char *est)
{
    char *text = fl_strfmt(base, dir, est, c->k, c->ini, c->batch, c->batch * c->k);
    fl_config *cf = NULL;
    fl_experiment *e = NULL;
    fl_status st = fl_config_parse(c->name, text, &cf);
    if (st == FL_OK) st = fl_experiment_new(r, cf, &e);
    free(text);
    fl_real *x = NULL;
    uint64_t n = 0;
    if (st == FL_OK) st = fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &n);
    if (st != FL_OK) {
        fprintf(stderr, "bench_pathgrad: %s %s: %s\n", c->name, est, fl_err_msg());
        exit(1);
    }
    double *b = malloc(c->batch * sizeof *b);
    if (fl_vae_bound(e, x, c->batch, 0, 1, b) != FL_OK) exit(1); /* warm up */
    double t0 = user_seconds();
    for (uint32_t i = 0; i < c->reps; i++)
        if (fl_vae_bound(e, x, c->batch, i, 1, b) != FL_OK) {
            fprintf(stderr, "bench_pathgrad: %s\n", fl_err_msg());
            exit(1);
        }
    double t = (user_seconds() - t0) / c->reps;
    free(b);
    fl_free(x);
    fl_experiment_free(e);
    return t;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 3;
    const char *dir = argc > 2 ? argv[2] : "../shared/data/binarized_mnist";
    if (rounds < 1 || rounds > 32) rounds = 3;
    fl_log_set_level(FL_LOG_WARN);
    fl_runtime_init();
    fl_registry *r = fl_registry_new();
    fl_registry_load_dir(r, FL_BENCH_PLUGIN_DIR);
    static const cfg cs[] = {
        { "two stochastic layers (100-50), k 50", "[encoder]\nlatent = 100\nhidden = 200,200\n"
          "[encoder.2]\nlatent = 50\nhidden = 100,100\n[decoder.2]\nhidden = 100,100\n", 50, 20, 10 },
        { "2 IAF (latent 50, MADE 320, h 50), k 50", "[encoder]\nlatent = 50\nhidden = 200,200\n"
          "context = 50\n[flow.1]\ntype = iaf\nrepeat = 2\npermute = reverse\nhidden = 320\n"
          "activation = elu\n", 50, 20, 2 },
        { "2 IAF (latent 8, MADE 64, h 8), k 50", "[encoder]\nlatent = 8\nhidden = 200,200\n"
          "context = 8\n[flow.1]\ntype = iaf\nrepeat = 2\npermute = reverse\nhidden = 64\n",
          50, 20, 10 },
        { "2 planar (latent 50, h 50), k 50", "[encoder]\nlatent = 50\nhidden = 200,200\n"
          "context = 50\n[flow.1]\ntype = planar\nrepeat = 2\n", 50, 20, 2 },
    };
    const int nc = sizeof cs / sizeof cs[0];
    printf("%-44s %12s %12s %8s\n", "model (batch 20)", "iwae ms", "dreg ms", "ratio");
    for (int c = 0; c < nc; c++) {
        double ti[32], td[32], q[32];
        for (int i = 0; i < rounds; i++) {
            ti[i] = time_one(r, dir, &cs[c], "iwae");
            td[i] = time_one(r, dir, &cs[c], "dreg");
            q[i] = td[i] / ti[i];
        }
        qsort(ti, rounds, sizeof *ti, cmp);
        qsort(td, rounds, sizeof *td, cmp);
        qsort(q, rounds, sizeof *q, cmp);
        printf("%-44s %12.1f %12.1f %8.2f\n", cs[c].name, 1e3 * ti[rounds / 2],
               1e3 * td[rounds / 2], q[rounds / 2]);
        fflush(stdout);
    }
    fl_registry_free(r);
    return 0;
}
