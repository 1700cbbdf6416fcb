/* task_density.c - the density task: its model, training step,
 * evaluation, result and the table entry fl_task_density. */
#include "tasks/task_density.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hostimpl.h"
#include "core/log.h"
#include "core/util.h"
#include "output/plot.h"
#include "output/json.h"
#include "output/rundir.h"
#include "tasks/task.h"
#include "train/dist.h"


/* -log N(u; 0, I) - logdet for one row, in double. */
static double row_nll(const fl_real *u, uint32_t d, fl_real logdet)
{
    double q = 0;
    for (uint32_t j = 0; j < d; j++) q += (double)u[j] * u[j];
    return 0.5 * q + d * FL_HALF_LOG_2PI - (double)logdet;
}

/* ------------------------------------------------------------------ */
/* The model.                                                           */

fl_stack *fl_density_flows(const fl_experiment *e)
{
    return ((const fl_density_model *)e->model)->flows;
}

static const fl_stack *density_flows(const fl_experiment *e) { return fl_density_flows(e); }

static fl_status density_build(fl_experiment *e)
{
    fl_density_model *m = calloc(1, sizeof *m);
    if (!m) return FL_ERR_NOMEM;
    e->model = m;
    m->flows = fl_stack_new(&e->arena, e->seed, e->info.dim, 0, e->max_rows);
    fl_status st = m->flows ? fl_stack_from_config(m->flows, e->reg, e->cfg) : FL_ERR_NOMEM;
    if (st == FL_OK && m->flows->n == 0) {
        fl_err("%s: the model has no flow layers: add a [flow.1] section with a type",
               e->cfg->path);
        st = FL_ERR_INVALID;
    }
    /* Metadata checks at load time, not at the end of training. */
    for (size_t i = 0; st == FL_OK && i < m->flows->n; i++)
        if (!(m->flows->L[i].cls->flags & FL_FLOW_HAS_INVERSE)) {
            fl_log(FL_LOG_WARN, "[%s] %s has no inverse: this model can be trained and "
                   "evaluated but not sampled", m->flows->L[i].cx->path,
                   m->flows->L[i].cls->base.name);
            break;
        }
    if (st == FL_OK) st = fl_arena_finalize(&e->arena, e->seed);
    if (st == FL_OK) st = fl_stack_ready(m->flows);
    return st;
}

static void density_free(void *model)
{
    fl_density_model *m = model;
    if (!m) return;
    fl_stack_free(m->flows);
    free(m);
}

/* ------------------------------------------------------------------ */
/* Evaluation.                                                          */

fl_status fl_density_nll(fl_experiment *e, const fl_real *x, uint64_t n, double *mean, double *se)
{
    uint32_t d = e->info.dim, chunk = e->eval_batch;
    fl_real *logdet = fl_alloc(chunk * sizeof(fl_real));
    double *nll = malloc(n * sizeof *nll); /* per row, summed in row order below */
    fl_status st = logdet && nll ? FL_OK : FL_ERR_NOMEM;
    /* under mpirun each rank takes whole chunks (train/dist.h) */
    uint64_t mine0, mine1;
    fl_dist_share(n, chunk, &mine0, &mine1);
    for (uint64_t i = mine0; i < mine1 && st == FL_OK; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        memset(logdet, 0, m * sizeof(fl_real));
        const fl_real *u;
        st = fl_stack_forward(fl_density_flows(e), m, FL_MODE_EVAL, x + i * d, NULL, logdet, &u);
        for (uint32_t r = 0; st == FL_OK && r < m; r++)
            nll[i + r] = row_nll(u + (size_t)r * d, d, logdet[r]);
    }
    fl_free(logdet);
    st = fl_dist_allgather(st, nll, sizeof *nll, n, chunk);
    double s = 0, s2 = 0;
    for (uint64_t i = 0; st == FL_OK && i < n; i++) {
        s += nll[i];
        s2 += nll[i] * nll[i];
    }
    free(nll);
    if (st != FL_OK) return st;
    double mu = s / (double)n, var = n > 1 ? (s2 - s * mu) / (double)(n - 1) : 0;
    *mean = mu;
    *se = var > 0 ? sqrt(var / (double)n) : 0;
    if (!isfinite(mu)) {
        fl_err("the test negative log-likelihood is not finite");
        return FL_ERR_NUMERIC;
    }
    return FL_OK;
}

/* ------------------------------------------------------------------ */
/* Training: the step and the loop's hooks.                             */

/* One run's state; every buffer is allocated before the first step. */
typedef struct density_run {
    fl_density_result res;  /* test_nll, test_se of the last evaluation */
    fl_real *x;             /* B x dim: the step's training batch */
    fl_real *du;            /* B x dim: dloss/du = u / B */
    fl_real *logdet;        /* B: the step's summed log-determinant per row */
    fl_real *dlogdet;       /* B: dloss/dlogdet = -1/B (constant) */
    fl_real *test;          /* n_test x dim: the test split */
    uint64_t n_test;
} density_run;

static void run_free(void *p)
{
    density_run *r = p;
    if (!r) return;
    fl_free(r->test);
    fl_free(r->x);
    fl_free(r->du);
    fl_free(r->logdet);
    fl_free(r->dlogdet);
    free(r);
}

static fl_status run_new(fl_experiment *e, void **out)
{
    const uint32_t d = e->info.dim, B = e->batch;
    density_run *r = calloc(1, sizeof *r);
    *out = r;
    if (!r) return FL_ERR_NOMEM;
    r->x = fl_alloc((size_t)B * d * sizeof(fl_real));
    r->du = fl_alloc((size_t)B * d * sizeof(fl_real));
    r->logdet = fl_alloc(B * sizeof(fl_real));
    r->dlogdet = fl_alloc(B * sizeof(fl_real));
    if (!r->x || !r->du || !r->logdet || !r->dlogdet) return FL_ERR_NOMEM;
    const fl_real inv_b = (fl_real)(1.0 / B);
    for (uint32_t i = 0; i < B; i++) r->dlogdet[i] = -inv_b;
    return fl_experiment_eval_split(e, FL_SPLIT_TEST, &r->test, &r->n_test);
}

/* Points p0 .. p0+n-1 of batch `step`: their share of its mean negative
 * log-likelihood (their sum / B) and its gradient. */
static fl_status density_step(fl_experiment *e, void *p, uint64_t step, uint32_t p0, uint32_t n,
                              double *value)
{
    density_run *r = p;
    const uint32_t d = e->info.dim, B = e->batch;
    const fl_real inv_b = (fl_real)(1.0 / B);
    fl_stack *flows = fl_density_flows(e);
    fl_status st = fl_experiment_train_rows(e, step, B, p0, n, r->x);
    if (st != FL_OK) return st;
    memset(r->logdet, 0, n * sizeof(fl_real));
    const fl_real *u;
    st = fl_stack_forward(flows, n, FL_MODE_TRAIN, r->x, NULL, r->logdet, &u);
    if (st != FL_OK) return st;
    double loss = 0;
    for (uint32_t i = 0; i < n; i++) {
        loss += row_nll(u + (size_t)i * d, d, r->logdet[i]);
        for (uint32_t j = 0; j < d; j++) r->du[(size_t)i * d + j] = u[(size_t)i * d + j] * inv_b;
    }
    loss /= B;
    if (!isfinite(loss)) {
        fl_err("step %llu: the training loss is not finite (%g); lower [train] lr or bound "
               "the flow's scales",
               (unsigned long long)step + 1, loss);
        return FL_ERR_NUMERIC;
    }
    *value = loss;
    return fl_stack_backward(flows, n, FL_MODE_TRAIN, NULL, r->du, r->dlogdet, NULL, NULL);
}

static fl_status density_evaluate(fl_experiment *e, void *p)
{
    density_run *r = p;
    return fl_density_nll(e, r->test, r->n_test, &r->res.test_nll, &r->res.test_se);
}

static const fl_metrics_col columns[] = {
    { "train_nll", "%.6f" }, /* the loop's interval mean (train_col 0) */
    { "test_nll", "%.6f" },
    { "test_nll_se", "%.6f" },
};

static void density_row(fl_experiment *e, void *p, uint64_t done, double *vals)
{
    (void)e;
    (void)done;
    const density_run *r = p;
    vals[1] = r->res.test_nll;
    vals[2] = r->res.test_se;
}

static void density_log(fl_experiment *e, void *p, double train, char *buf, size_t cap)
{
    (void)e;
    const density_run *r = p;
    snprintf(buf, cap, "train NLL %.4f, test NLL %.4f +- %.4f", train, r->res.test_nll,
             r->res.test_se);
}

static void density_status(fl_experiment *e, void *p, uint64_t done, uint64_t steps,
                           double loss, char *buf, size_t cap)
{
    (void)e;
    (void)done;
    (void)steps;
    const density_run *r = p;
    if (r->res.test_nll != 0) snprintf(buf, cap, "loss %.4f  test %.4f", loss, r->res.test_nll);
    else snprintf(buf, cap, "loss %.4f", loss);
}

/* The result of a run: the last evaluation with the loop's summary. */
static fl_density_result result_of(const density_run *r, const fl_train_summary *s)
{
    fl_density_result res = r->res;
    res.train_nll = s->train;
    res.steps = s->steps;
    res.seconds = s->seconds;
    res.steps_per_s = s->session_seconds > 0 ? (double)s->session_steps / s->session_seconds : 0;
    return res;
}

fl_status fl_density_train(fl_experiment *e, const char *rundir, int resume,
                           fl_density_result *res)
{
    memset(res, 0, sizeof *res);
    void *run;
    fl_train_summary s;
    fl_status st = fl_task_train(e, rundir, resume, &run, &s);
    if (run) *res = result_of(run, &s);
    run_free(run);
    return st;
}

fl_status fl_density_write_result(fl_experiment *e, const char *dir, const fl_density_result *res)
{
    fl_buf js = { 0 };
    fl_json w;
    fl_json_begin(&w, &js);
    fl_json_key_str(&w, "task", "density");
    fl_json_key_str(&w, "data", e->data_type);
    fl_json_key_num(&w, "test_nll", res->test_nll, "%.6f");
    fl_json_key_num(&w, "test_nll_se", res->test_se, "%.6f");
    fl_json_key_uint(&w, "test_rows", e->info.n[FL_SPLIT_TEST]);
    fl_json_key_num(&w, "train_nll", res->train_nll, "%.6f");
    fl_json_key_uint(&w, "steps", res->steps);
    fl_json_key_num(&w, "train_seconds", res->seconds, "%.3f");
    fl_json_key_num(&w, "steps_per_second", res->steps_per_s, "%.1f");
    fl_json_key_uint(&w, "parameters", e->arena.count);
    fl_status st = fl_json_end(&w);
    if (st == FL_OK) st = fl_rundir_write(dir, "result.json", js.data, js.len);
    fl_buf_free(&js);
    return st;
}

fl_status fl_density_sample(fl_experiment *e, uint64_t n, fl_rng_key key, fl_real *out)
{
    uint32_t d = e->info.dim, chunk = e->max_rows;
    fl_real *u = fl_alloc((size_t)chunk * d * sizeof(fl_real));
    if (!u) return FL_ERR_NOMEM;
    fl_status st = FL_OK;
    for (uint64_t i = 0; i < n && st == FL_OK; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        fl_rng_normal(key, 0, i * d, (size_t)m * d, u);
        st = fl_stack_inverse(fl_density_flows(e), m, FL_MODE_EVAL, u, NULL, out + i * d, NULL);
    }
    fl_free(u);
    return st;
}

/* ------------------------------------------------------------------ */
/* The table entry.                                                     */

static void density_describe(const fl_experiment *e, char *buf, size_t cap)
{
    snprintf(buf, cap, "density on %s, %zu flow layers", e->data_type, fl_density_flows(e)->n);
}

static fl_status density_result(fl_experiment *e, void *run, const fl_train_summary *s,
                                const char *dir)
{
    fl_density_result res = result_of(run, s);
    return fl_density_write_result(e, dir, &res);
}

static void density_report(const fl_experiment *e, void *run, const fl_train_summary *s,
                           const char *dir)
{
    fl_density_result res = result_of(run, s);
    printf("test NLL %.4f +- %.4f nats (%llu points); %llu steps in %.2f s, %.0f steps/s; run "
           "directory %s\n",
           res.test_nll, res.test_se, (unsigned long long)e->info.n[FL_SPLIT_TEST],
           (unsigned long long)res.steps, res.seconds, res.steps_per_s, dir);
}

static fl_status density_plot(fl_experiment *e, const char *dir, const char **files)
{
    *files = e->info.dim == 2 ? "{density,data,samples,curves}.png" : "curves.png";
    return fl_plot_density(e, dir);
}

static uint32_t density_sample_dim(const fl_experiment *e) { return e->info.dim; }

static fl_status density_sample_cmd(fl_experiment *e, uint64_t n, uint64_t seed, fl_real *out)
{
    return fl_density_sample(e, n, fl_rng_key_make(seed, "sample"), out);
}

static const char *const sections[] = { "data", NULL };

const fl_task fl_task_density = {
    .model = { .name = "density",
               .help = "fit flows to data by exact maximum likelihood",
               .sections = sections,
               .data = 1,
               .build = density_build,
               .free = density_free,
               .flows = density_flows },
    .trainer = { .cols = columns,
                 .n_cols = 3,
                 .train_col = 0,
                 .step = density_step,
                 .evaluate = density_evaluate,
                 .row = density_row,
                 .log = density_log,
                 .status = density_status },
    .run_new = run_new,
    .run_free = run_free,
    .describe = density_describe,
    .write_result = density_result,
    .report = density_report,
    .plot = density_plot,
    .sample_dim = density_sample_dim,
    .sample = density_sample_cmd,
};
