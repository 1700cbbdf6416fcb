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
#include "tasks/subset.h"
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

static const fl_key data_keys[] = {
    { "dequantize", FL_KEY_ENUM, "auto", 0, 0, "auto|uniform|none",
      "uniform: a level k/255 becomes (k + U(0,1))/256, fresh noise every batch, fixed for "
      "evaluation, and the NLL is the discrete data's (+ D log 256); auto = uniform for image "
      "rows the host does not binarize, else none" },
    { "transform", FL_KEY_ENUM, "none", 0, 0, "logit|scale|none",
      "after dequantization: logit = logit(a + (1 - 2a) u) with a = logit_alpha (Real NVP); "
      "scale = u - 0.5 (Glow); its log-determinant is counted in every NLL" },
    { "logit_alpha", FL_KEY_REAL, "0.05", 1e-6, 0.49, NULL,
      "transform = logit: the alpha keeping logit's argument off 0 and 1" },
};

fl_stack *fl_density_flows(const fl_experiment *e)
{
    return ((const fl_density_model *)e->model)->flows;
}

const fl_density_pre *fl_density_pre_of(const fl_experiment *e)
{
    return &((const fl_density_model *)e->model)->pre;
}

static const fl_stack *density_flows(const fl_experiment *e) { return fl_density_flows(e); }

/* Rows are images when the data set says so and the sizes agree. */
static int image_rows(const fl_experiment *e, uint32_t *c)
{
    const fl_dataset_info *in = &e->info;
    *c = in->image_c ? in->image_c : 1;
    return in->image_h && in->image_w &&
           (uint64_t)*c * in->image_h * in->image_w == in->dim;
}

/* [data] dequantize, transform, logit_alpha. */
static void read_pre(const fl_experiment *e, fl_density_pre *p)
{
    const char *dq = fl_values_get(&e->data.cfg, "dequantize")->text;
    const char *tf = fl_values_get(&e->data.cfg, "transform")->text;
    uint32_t c;
    p->dequantize = strcmp(dq, "uniform") == 0 ||
                    (strcmp(dq, "auto") == 0 && image_rows(e, &c) &&
                     !(e->info.flags & FL_DATA_BINARIZE_DYNAMIC));
    p->transform = strcmp(tf, "logit") == 0   ? FL_PRE_LOGIT
                   : strcmp(tf, "scale") == 0 ? FL_PRE_SCALE
                                              : FL_PRE_NONE;
    p->alpha = fl_values_get(&e->data.cfg, "logit_alpha")->r;
    const double D = e->info.dim;
    p->const_nats = p->dequantize ? D * log(256.0) : 0;
    p->bpd = p->dequantize ? 1.0 / (D * log(2.0)) : 0;
}

static fl_status density_build(fl_experiment *e)
{
    fl_density_model *m = calloc(1, sizeof *m);
    if (!m) return FL_ERR_NOMEM;
    e->model = m;
    read_pre(e, &m->pre);
    if (m->pre.dequantize && (e->info.flags & FL_DATA_BINARIZE_DYNAMIC)) {
        const fl_cfg_section *sec = fl_config_section(e->cfg, "data");
        char where[512];
        fl_config_where(e->cfg, sec, sec ? fl_config_entry(sec, "dequantize") : NULL, where,
                        sizeof where);
        fl_err("%s: [data] dequantize = uniform, but the host binarizes these rows afresh "
               "(binarize = dynamic): set [data] binarize = none for grey levels",
               where);
        return FL_ERR_INVALID;
    }
    m->flows = fl_stack_new(&e->arena, e->seed, e->info.dim, 0, e->max_rows);
    fl_status st = m->flows ? FL_OK : FL_ERR_NOMEM;
    uint32_t c;
    /* before the first push: shaped layers (squeeze, conv-coupling) see the image */
    if (st == FL_OK && image_rows(e, &c))
        st = fl_stack_set_image(m->flows, c, e->info.image_h, e->info.image_w);
    if (st == FL_OK) st = fl_stack_from_config(m->flows, e->reg, e->cfg);
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

fl_status fl_density_preprocess(const fl_experiment *e, fl_real *x, uint32_t n, int noise,
                                fl_rng_key key, uint64_t sub, uint64_t first, double *ldj)
{
    const fl_density_pre *p = fl_density_pre_of(e);
    const uint32_t d = e->info.dim;
    const int dq = p->dequantize && noise;
    const double a = p->alpha, l12a = log(1 - 2 * a);
    for (uint32_t i = 0; i < n; i++) {
        fl_real *row = x + (size_t)i * d;
        double sum = 0;
        for (uint32_t j0 = 0; j0 < d; j0 += 256) {
            const uint32_t m = d - j0 < 256 ? d - j0 : 256;
            fl_real u01[256];
            if (dq) fl_rng_uniform(key, sub, first + (uint64_t)i * d + j0, m, u01);
            for (uint32_t j = 0; j < m; j++) {
                double v = row[j0 + j];
                if (dq) {
                    double k = nearbyint(v * 255.0);
                    if (!(fabs(v * 255.0 - k) < 1e-3) || k < 0 || k > 255) {
                        fl_err("[data] dequantize = uniform: row %llu has %.9g at position %u, "
                               "not a level k/255 in [0, 1] (set [data] dequantize = none for "
                               "continuous values)",
                               (unsigned long long)(first / d + i), v, j0 + j);
                        return FL_ERR_INVALID;
                    }
                    v = (k + (double)u01[j]) / 256.0;
                }
                if (p->transform == FL_PRE_LOGIT) {
                    double q = a + (1 - 2 * a) * v;
                    sum += l12a - log(q) - log1p(-q);
                    v = log(q) - log1p(-q);
                } else if (p->transform == FL_PRE_SCALE) {
                    v -= 0.5;
                }
                row[j0 + j] = (fl_real)v;
            }
        }
        ldj[i] = sum;
    }
    return FL_OK;
}

void fl_density_postprocess(const fl_experiment *e, fl_real *x, uint64_t n)
{
    const fl_density_pre *p = fl_density_pre_of(e);
    if (!p->dequantize && p->transform == FL_PRE_NONE) return;
    const double a = p->alpha;
    const size_t total = (size_t)n * e->info.dim;
    for (size_t i = 0; i < total; i++) {
        double v = x[i];
        if (p->transform == FL_PRE_LOGIT) v = (1 / (1 + exp(-v)) - a) / (1 - 2 * a);
        else if (p->transform == FL_PRE_SCALE) v += 0.5;
        if (p->dequantize) {
            double k = floor(256 * v);
            v = (k < 0 ? 0 : k > 255 ? 255 : k) / 255.0;
        }
        x[i] = (fl_real)v;
    }
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

fl_status fl_density_row_nll(fl_experiment *e, const fl_real *x, uint64_t n, double *nll)
{
    uint32_t d = e->info.dim, chunk = e->eval_batch;
    const fl_density_pre *p = fl_density_pre_of(e);
    const int pre = p->dequantize || p->transform != FL_PRE_NONE;
    fl_real *logdet = fl_alloc(chunk * sizeof(fl_real));
    fl_real *xp = pre ? fl_alloc((size_t)chunk * d * sizeof(fl_real)) : NULL;
    double *ldj = pre ? malloc(chunk * sizeof *ldj) : NULL;
    fl_status st = logdet && (!pre || (xp && ldj)) ? FL_OK : FL_ERR_NOMEM;
    const fl_rng_key key = fl_rng_key_make(0, "data.dequantize.eval");
    /* under mpirun each rank takes whole chunks (train/dist.h) */
    uint64_t mine0, mine1;
    fl_dist_share(n, chunk, &mine0, &mine1);
    for (uint64_t i = mine0; i < mine1 && st == FL_OK; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        const fl_real *in = x + i * d;
        if (pre) {
            memcpy(xp, in, (size_t)m * d * sizeof(fl_real));
            st = fl_density_preprocess(e, xp, m, 1, key, 0, i * d, ldj);
            in = xp;
        }
        memset(logdet, 0, m * sizeof(fl_real));
        const fl_real *u;
        if (st == FL_OK)
            st = fl_stack_forward(fl_density_flows(e), m, FL_MODE_EVAL, in, NULL, logdet, &u);
        for (uint32_t r = 0; st == FL_OK && r < m; r++)
            nll[i + r] = row_nll(u + (size_t)r * d, d, logdet[r]) - (pre ? ldj[r] : 0) +
                         p->const_nats;
    }
    fl_free(logdet);
    fl_free(xp);
    free(ldj);
    return fl_dist_allgather(st, nll, sizeof *nll, n, chunk);
}

fl_status fl_density_nll(fl_experiment *e, const fl_real *x, uint64_t n, double *mean, double *se)
{
    double *nll = malloc((n ? n : 1) * sizeof *nll); /* per row, summed in row order below */
    fl_status st = nll ? fl_density_row_nll(e, x, n, nll) : FL_ERR_NOMEM;
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
    fl_density_result res;  /* test_nll, test_se (and bits/dim) of the last evaluation */
    fl_real *x;             /* B x dim: the step's training batch */
    fl_real *du;            /* B x dim: dloss/du = u / B */
    fl_real *logdet;        /* B: the step's summed log-determinant per row */
    fl_real *dlogdet;       /* B: dloss/dlogdet = -1/B (constant) */
    double *ldj;            /* B: the preprocessing's log-determinant per row */
    fl_real *test;          /* n_test x dim: the test split */
    uint64_t n_test;
    fl_real *valid;         /* n_valid x dim: the validation split (NULL: none) */
    uint64_t n_valid;
} density_run;

static void run_free(void *p)
{
    density_run *r = p;
    if (!r) return;
    fl_free(r->test);
    fl_free(r->valid);
    fl_free(r->x);
    fl_free(r->du);
    fl_free(r->logdet);
    fl_free(r->dlogdet);
    free(r->ldj);
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
    r->ldj = malloc(B * sizeof *r->ldj);
    if (!r->x || !r->du || !r->logdet || !r->dlogdet || !r->ldj) return FL_ERR_NOMEM;
    const fl_real inv_b = (fl_real)(1.0 / B);
    for (uint32_t i = 0; i < B; i++) r->dlogdet[i] = -inv_b;
    fl_status st = fl_experiment_eval_split(e, FL_SPLIT_TEST, &r->test, &r->n_test);
    /* the validation split, when the data set has one: early stopping and
     * best.flc follow it ([train] patience, keep_best) */
    if (st == FL_OK && e->info.n[FL_SPLIT_VALID])
        st = fl_experiment_eval_split(e, FL_SPLIT_VALID, &r->valid, &r->n_valid);
    return st;
}

fl_status fl_density_batch(fl_experiment *e, uint64_t step, uint32_t p0, uint32_t n, fl_real *x,
                           double *ldj)
{
    const fl_density_pre *p = fl_density_pre_of(e);
    fl_status st = fl_experiment_train_rows(e, step, e->batch, p0, n, x);
    if (st != FL_OK) return st;
    if (!p->dequantize && p->transform == FL_PRE_NONE) {
        memset(ldj, 0, n * sizeof *ldj);
        return FL_OK;
    }
    /* point p0 + i's noise does not depend on the block it is computed in */
    return fl_density_preprocess(e, x, n, 1, fl_rng_key_make(e->seed, "data.dequantize"), step,
                                 (uint64_t)p0 * e->info.dim, ldj);
}

/* Points p0 .. p0+n-1 of batch `step`: their share of its mean negative
 * log-likelihood (their sum / B; bits/dim for dequantized runs) and its
 * gradient. */
static fl_status density_step(fl_experiment *e, void *p, uint64_t step, uint32_t p0, uint32_t n,
                              double *value)
{
    density_run *r = p;
    const uint32_t d = e->info.dim, B = e->batch;
    const fl_real inv_b = (fl_real)(1.0 / B);
    const fl_density_pre *pre = fl_density_pre_of(e);
    fl_stack *flows = fl_density_flows(e);
    fl_status st = fl_density_batch(e, step, p0, n, r->x, r->ldj);
    if (st != FL_OK) return st;
    memset(r->logdet, 0, n * sizeof(fl_real));
    const fl_real *u;
    st = fl_stack_forward(flows, n, FL_MODE_TRAIN, r->x, NULL, r->logdet, &u);
    if (st != FL_OK) return st;
    double loss = 0;
    for (uint32_t i = 0; i < n; i++) {
        loss += row_nll(u + (size_t)i * d, d, r->logdet[i]) - r->ldj[i] + pre->const_nats;
        for (uint32_t j = 0; j < d; j++) r->du[(size_t)i * d + j] = u[(size_t)i * d + j] * inv_b;
    }
    loss /= B;
    if (pre->bpd) loss *= pre->bpd;
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
    fl_status st = fl_density_nll(e, r->test, r->n_test, &r->res.test_nll, &r->res.test_se);
    if (st == FL_OK && r->n_valid)
        st = fl_density_nll(e, r->valid, r->n_valid, &r->res.valid_nll, &r->res.valid_se);
    const double k = fl_density_pre_of(e)->bpd;
    r->res.test_bpd = r->res.test_nll * k;
    r->res.test_bpd_se = r->res.test_se * k;
    return st;
}

/* The validation NLL (nats) is what early stopping and best.flc follow. */
static const char *density_monitor(const fl_experiment *e, void *p, double *loss)
{
    (void)e;
    const density_run *r = p;
    if (!r->n_valid) return NULL;
    if (loss) *loss = r->res.valid_nll;
    return "valid_nll";
}

/* The last two columns only when the data set has a validation split
 * (N_COLS + 2 columns; density_trainer). */
#define N_COLS 3
static const fl_metrics_col columns[N_COLS + 2] = {
    { "train_nll", "%.6f" }, /* the loop's interval mean (train_col 0) */
    { "test_nll", "%.6f" },
    { "test_nll_se", "%.6f" },
    { "valid_nll", "%.6f" },
    { "valid_nll_se", "%.6f" },
};

/* Dequantized runs: the step value is in bits/dim. */
#define N_BPD_COLS 5
static const fl_metrics_col bpd_columns[N_BPD_COLS + 2] = {
    { "train_bpd", "%.6f" }, /* the loop's interval mean (train_col 0) */
    { "test_bpd", "%.6f" },
    { "test_bpd_se", "%.6f" },
    { "test_nll", "%.6f" },
    { "test_nll_se", "%.6f" },
    { "valid_bpd", "%.6f" },
    { "valid_bpd_se", "%.6f" },
};

static void density_row(fl_experiment *e, void *p, uint64_t done, double *vals)
{
    (void)done;
    const density_run *r = p;
    const double k = fl_density_pre_of(e)->bpd;
    if (k) {
        vals[1] = r->res.test_bpd;
        vals[2] = r->res.test_bpd_se;
        vals[3] = r->res.test_nll;
        vals[4] = r->res.test_se;
        if (r->n_valid) {
            vals[5] = r->res.valid_nll * k;
            vals[6] = r->res.valid_se * k;
        }
        return;
    }
    vals[1] = r->res.test_nll;
    vals[2] = r->res.test_se;
    if (r->n_valid) {
        vals[3] = r->res.valid_nll;
        vals[4] = r->res.valid_se;
    }
}

static void density_log(fl_experiment *e, void *p, double train, char *buf, size_t cap)
{
    const density_run *r = p;
    const double k = fl_density_pre_of(e)->bpd;
    int len;
    if (k)
        len = snprintf(buf, cap, "train %.4f bits/dim, test %.4f +- %.4f bits/dim (NLL %.2f "
                       "nats)", train, r->res.test_bpd, r->res.test_bpd_se, r->res.test_nll);
    else
        len = snprintf(buf, cap, "train NLL %.4f, test NLL %.4f +- %.4f", train, r->res.test_nll,
                       r->res.test_se);
    if (r->n_valid && len >= 0 && (size_t)len < cap)
        snprintf(buf + len, cap - (size_t)len, k ? ", valid %.4f bits/dim" : ", valid NLL %.4f",
                 k ? r->res.valid_nll * k : r->res.valid_nll);
}

static void density_status(fl_experiment *e, void *p, uint64_t done, uint64_t steps,
                           double loss, char *buf, size_t cap)
{
    (void)done;
    (void)steps;
    const density_run *r = p;
    const int bpd = fl_density_pre_of(e)->bpd != 0;
    double test = bpd ? r->res.test_bpd : r->res.test_nll;
    if (r->res.test_nll != 0)
        snprintf(buf, cap, "loss %.4f  test %.4f%s", loss, test, bpd ? " bits/dim" : "");
    else snprintf(buf, cap, "loss %.4f%s", loss, bpd ? " bits/dim" : "");
}

/* The result of a run: the last evaluation with the loop's summary. */
static fl_density_result result_of(const fl_experiment *e, const density_run *r,
                                   const fl_train_summary *s)
{
    fl_density_result res = r->res;
    const double k = fl_density_pre_of(e)->bpd;
    /* a dequantized run's step values are bits/dim */
    res.train_bpd = k ? s->train : 0;
    res.train_nll = k ? s->train / k : s->train;
    res.steps = s->steps;
    res.seconds = s->seconds;
    res.steps_per_s = s->session_seconds > 0 ? (double)s->session_steps / s->session_seconds : 0;
    res.best_valid_nll = s->monitor ? s->best : 0;
    res.best_step = s->monitor ? s->best_step : 0;
    res.stopped_early = s->stopped_early;
    return res;
}

fl_status fl_density_train(fl_experiment *e, const char *rundir, int resume,
                           fl_density_result *res)
{
    memset(res, 0, sizeof *res);
    void *run;
    fl_train_summary s;
    fl_status st = fl_task_train(e, rundir, resume, &run, &s);
    if (run) *res = result_of(e, run, &s);
    run_free(run);
    return st;
}

fl_status fl_density_write_result(fl_experiment *e, const char *dir, const fl_density_result *res)
{
    const fl_density_pre *p = fl_density_pre_of(e);
    fl_buf js = { 0 };
    fl_json w;
    fl_json_begin(&w, &js);
    fl_json_key_str(&w, "task", "density");
    fl_json_key_str(&w, "data", e->data_type);
    fl_json_key_num(&w, "test_nll", res->test_nll, "%.6f");
    fl_json_key_num(&w, "test_nll_se", res->test_se, "%.6f");
    if (p->bpd) {
        fl_json_key_num(&w, "test_bpd", res->test_bpd, "%.6f");
        fl_json_key_num(&w, "test_bpd_se", res->test_bpd_se, "%.6f");
        fl_json_key_num(&w, "train_bpd", res->train_bpd, "%.6f");
    }
    fl_json_key_uint(&w, "test_rows", e->info.n[FL_SPLIT_TEST]);
    if (res->best_step) { /* a validation split: its last and best figures */
        fl_json_key_num(&w, "valid_nll", res->valid_nll, "%.6f");
        fl_json_key_num(&w, "valid_nll_se", res->valid_se, "%.6f");
        fl_json_key_num(&w, "best_valid_nll", res->best_valid_nll, "%.6f");
        fl_json_key_uint(&w, "best_step", res->best_step);
        fl_json_key_int(&w, "stopped_early", res->stopped_early);
    }
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

const double fl_density_temps[FL_DENSITY_N_TEMPS] = { 0.5, 0.7, 1.0 };

fl_status fl_density_sample_at(fl_experiment *e, uint64_t n, fl_rng_key key, double t,
                               fl_real *out)
{
    uint32_t d = e->info.dim, chunk = e->max_rows;
    fl_real *u = fl_alloc((size_t)chunk * d * sizeof(fl_real));
    if (!u) return FL_ERR_NOMEM;
    fl_status st = FL_OK;
    for (uint64_t i = 0; i < n && st == FL_OK; i += chunk) {
        uint32_t m = (uint32_t)(n - i < chunk ? n - i : chunk);
        fl_rng_normal(key, 0, i * d, (size_t)m * d, u);
        if (t != 1)
            for (size_t j = 0; j < (size_t)m * d; j++) u[j] = (fl_real)(t * u[j]);
        st = fl_stack_inverse(fl_density_flows(e), m, FL_MODE_EVAL, u, NULL, out + i * d, NULL);
    }
    fl_free(u);
    if (st == FL_OK) fl_density_postprocess(e, out, n);
    return st;
}

fl_status fl_density_sample(fl_experiment *e, uint64_t n, fl_rng_key key, fl_real *out)
{
    return fl_density_sample_at(e, n, key, 1.0, out);
}

/* flowlab eval: the exact NLL (and bits/dim) of a split. */
static fl_status density_eval(fl_experiment *e, const fl_task_eval_args *a, const char *dir)
{
    if (a->k > 1) {
        fl_err("flowlab eval: --k does not apply to a density run (its likelihood is exact)");
        return FL_ERR_INVALID;
    }
    fl_real *x = NULL;
    uint64_t n = 0;
    fl_status st = fl_experiment_eval_split(e, a->split, &x, &n);
    if (st != FL_OK) return st;
    const uint64_t all = n;
    const int random = fl_subset_random(e, a->pick);
    /* a random subset unless --pick first (tasks/subset.h) */
    st = fl_subset_apply(x, &n, e->info.dim, a->n, random, NULL);
    double nll = 0, se = 0;
    if (st == FL_OK) st = fl_density_nll(e, x, n, &nll, &se);
    fl_free(x);
    if (st != FL_OK) return st;
    const double k = fl_density_pre_of(e)->bpd;
    const char *sp = a->split == FL_SPLIT_TEST ? "test" : "valid";
    char *name = a->split == FL_SPLIT_TEST && n == e->info.n[FL_SPLIT_TEST]
                     ? fl_strdup("eval.json")
                     : fl_strfmt("eval-%s-n%llu%s.json", sp, (unsigned long long)n,
                                 n < all && !random ? "-first" : "");
    fl_buf js = { 0 };
    fl_json w;
    fl_json_begin(&w, &js);
    fl_json_key_str(&w, "task", "density");
    fl_json_key_str(&w, "split", sp);
    fl_json_key_uint(&w, "rows", n);
    if (n < all) fl_json_key_str(&w, "pick", random ? "random" : "first");
    fl_json_key_num(&w, "nll", nll, "%.6f");
    fl_json_key_num(&w, "nll_se", se, "%.6f");
    if (k) {
        fl_json_key_num(&w, "bpd", nll * k, "%.6f");
        fl_json_key_num(&w, "bpd_se", se * k, "%.6f");
    }
    st = fl_json_end(&w);
    if (st == FL_OK && !name) st = FL_ERR_NOMEM;
    if (st == FL_OK && fl_dist_rank() == 0) st = fl_rundir_write(dir, name, js.data, js.len);
    fl_buf_free(&js);
    if (st == FL_OK) {
        if (k)
            printf("%s split, %llu%s rows: %.4f +- %.4f bits/dim (NLL %.3f +- %.3f nats); %s\n", sp,
                   (unsigned long long)n, n < all ? random ? " random" : " first" : "", nll * k, se * k, nll, se, name);
        else
            printf("%s split, %llu%s rows: NLL %.4f +- %.4f nats; %s\n", sp,
                   (unsigned long long)n, n < all ? random ? " random" : " first" : "", nll, se,
                   name);
    }
    free(name);
    return st;
}

/* The logprob hook: -NLL per row (exact; no k). */
static fl_status density_logprob(fl_experiment *e, const fl_real *x, uint64_t n, uint64_t k,
                                 double *out)
{
    if (k > 1) {
        fl_err("--k does not apply to a density run (its log-likelihood is exact)");
        return FL_ERR_INVALID;
    }
    fl_status st = fl_density_row_nll(e, x, n, out);
    for (uint64_t i = 0; st == FL_OK && i < n; i++) out[i] = -out[i];
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
    fl_density_result res = result_of(e, run, s);
    return fl_density_write_result(e, dir, &res);
}

static void density_report(const fl_experiment *e, void *run, const fl_train_summary *s,
                           const char *dir)
{
    fl_density_result res = result_of(e, run, s);
    if (fl_density_pre_of(e)->bpd)
        printf("test bits/dim %.4f +- %.4f (NLL %.3f +- %.3f nats, %llu images); ",
               res.test_bpd, res.test_bpd_se, res.test_nll, res.test_se,
               (unsigned long long)e->info.n[FL_SPLIT_TEST]);
    else
        printf("test NLL %.4f +- %.4f nats (%llu points); ", res.test_nll, res.test_se,
               (unsigned long long)e->info.n[FL_SPLIT_TEST]);
    printf("%llu steps in %.2f s, %.0f steps/s; run directory %s\n",
           (unsigned long long)res.steps, res.seconds, res.steps_per_s, dir);
}

static fl_status density_plot(fl_experiment *e, const char *dir, const char **files)
{
    uint32_t c;
    *files = e->info.dim == 2    ? "{density,data,samples,curves}.png"
             : image_rows(e, &c) ? "{samples,curves}.png"
                                 : "curves.png";
    return fl_plot_density(e, dir);
}

extern const fl_task fl_task_density;
static const fl_trainer bpd_trainer;

static const fl_trainer valid_trainer, bpd_valid_trainer;

static const fl_trainer *density_trainer(const fl_experiment *e)
{
    const int bpd = fl_density_pre_of(e)->bpd != 0, valid = e->info.n[FL_SPLIT_VALID] > 0;
    return bpd ? (valid ? &bpd_valid_trainer : &bpd_trainer)
               : (valid ? &valid_trainer : &fl_task_density.trainer);
}

static const fl_key *density_section_keys(const char *section, uint32_t *n)
{
    if (strcmp(section, "data") != 0) return NULL;
    *n = FL_NTAB(data_keys);
    return data_keys;
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
               .flows = density_flows,
               .data_keys = data_keys,
               .n_data_keys = FL_NTAB(data_keys) },
    .section_keys = density_section_keys,
    .trainer = { .cols = columns,
                 .n_cols = N_COLS,
                 .train_col = 0,
                 .step = density_step,
                 .evaluate = density_evaluate,
                 .row = density_row,
                 .log = density_log,
                 .status = density_status,
                 .monitor = density_monitor },
    .trainer_of = density_trainer,
    .run_new = run_new,
    .run_free = run_free,
    .describe = density_describe,
    .write_result = density_result,
    .report = density_report,
    .plot = density_plot,
    .sample_dim = density_sample_dim,
    .sample = density_sample_cmd,
    .eval = density_eval,
    .logprob = density_logprob,
};

/* The four trainers differ only in their columns: bits/dim or nats, with
 * or without the validation split's. */
#define DENSITY_TRAINER(COLS, N)                                                              \
    { .cols = COLS, .n_cols = N, .train_col = 0, .step = density_step,                     \
      .evaluate = density_evaluate, .row = density_row, .log = density_log,                \
      .status = density_status, .monitor = density_monitor }
static const fl_trainer bpd_trainer = DENSITY_TRAINER(bpd_columns, N_BPD_COLS);
static const fl_trainer bpd_valid_trainer = DENSITY_TRAINER(bpd_columns, N_BPD_COLS + 2);
static const fl_trainer valid_trainer = DENSITY_TRAINER(columns, N_COLS + 2);
