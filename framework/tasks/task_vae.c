/* task_vae.c - variational autoencoders: model assembly, the training step
 * under any estimator, and the evaluation suite.
 *
 * Rows: n data points with k samples each give R = n*k sample rows, row
 * b*k + j. Every buffer is sized once for the largest R (training B*k or
 * an evaluation chunk), so the training step allocates nothing.
 *
 * Gradients: the estimator gives per sample a weight wp on the generative
 * gradient and wq on the inference-path gradient. Both are scaled by
 * -1/B (the loss is minus the mean bound). One backward pass through the
 * decoder with wp gives the decoder's parameter gradient and a z-gradient
 * weighted by wp; rescaling that z-gradient row by wq/wp turns it into the
 * inference weighting (the weights are per-row scalars, so this is exact). */
#include "tasks/task_vae.h"
#include "compute/logmeanexp.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/checkpoint.h"
#include "compute/fastnormal.h"
#include "compute/mlp.h"
#include "core/hostimpl.h"
#include "core/log.h"
#include "train/optim.h"
#include "train/resume.h"
#include "output/rundir.h"
#include "core/util.h"

typedef struct mlp_part {
    fl_values cfg;      /* the section (owned) */
    fl_ctx *cx;         /* owned; owns the MLP */
    fl_mlp *m;
} mlp_part;

typedef struct fl_vae fl_vae;
struct fl_vae {
    uint32_t D, L1, L2, H, P1, P2, Q, k, B, Rmax;
    int two, detach;
    mlp_part enc, dec, enc2, dec2;
    fl_part post, lik, prior, est, post2, lik2;
    const fl_posterior_class *pc, *pc2;
    const fl_likelihood_class *lc, *lc2;
    const fl_prior_class *prc;
    const fl_estimator_class *ec;

    /* layer 1 */
    fl_real *E, *dE;              /* Rmax x (P1 + H): encoder outputs */
    fl_real *eps, *z0, *lq, *hrep, *logdet, *dlogdet, *dz0, *dh, *dz, *dzp;
    const fl_real *zT;            /* z0 or the flow stack's output */
    fl_real *Lg, *dLg;            /* Rmax x Q: decoder outputs */
    fl_real *lpx, *lpz, *logw, *wp, *wq, *ratio, *neg_wq;
    double *bound;
    /* layer 2 */
    fl_real *E2, *dE2, *eps2, *z2, *lq2, *G2, *dG2, *lpz1, *dz2, *dz1b;
};

#define NTAB(t) ((uint32_t)(sizeof(t) / sizeof((t)[0])))

static const fl_key enc_keys[] = {
    { "latent", FL_KEY_INT, "50", 1, 65536, NULL, "dimension of the latent z this encoder parameterises" },
    { "hidden", FL_KEY_INT_LIST, "200,200", 1, 65536, NULL, "hidden layer widths" },
    { "act", FL_KEY_ENUM, "tanh", 0, 0, "tanh|relu|elu|softplus", "hidden activation" },
    { "init", FL_KEY_ENUM, "glorot", 0, 0, "glorot|fanin",
      "weight init: glorot (uniform, zero biases) or fanin (PyTorch's Linear default)" },
    { "context", FL_KEY_INT, "0", 0, 65536, NULL,
      "width of the context h the encoder also outputs for the posterior's flow layers "
      "(IAF's h); 0 = none" },
};
static const fl_key enc2_keys[] = {
    { "latent", FL_KEY_INT, "50", 1, 65536, NULL, "dimension of the second latent z2" },
    { "hidden", FL_KEY_INT_LIST, "100,100", 1, 65536, NULL, "hidden widths of q(z2|z1)" },
    { "act", FL_KEY_ENUM, "tanh", 0, 0, "tanh|relu|elu|softplus", "hidden activation" },
    { "init", FL_KEY_ENUM, "glorot", 0, 0, "glorot|fanin", "weight init" },
};
static const fl_key dec_keys[] = {
    { "hidden", FL_KEY_INT_LIST, "200,200", 1, 65536, NULL, "hidden layer widths" },
    { "act", FL_KEY_ENUM, "tanh", 0, 0, "tanh|relu|elu|softplus", "hidden activation" },
    { "init", FL_KEY_ENUM, "glorot", 0, 0, "glorot|fanin", "weight init" },
};
static const fl_key dec2_keys[] = {
    { "hidden", FL_KEY_INT_LIST, "100,100", 1, 65536, NULL, "hidden widths of p(z1|z2)" },
    { "act", FL_KEY_ENUM, "tanh", 0, 0, "tanh|relu|elu|softplus", "hidden activation" },
    { "init", FL_KEY_ENUM, "glorot", 0, 0, "glorot|fanin", "weight init" },
};

const fl_key *fl_vae_section_keys(const char *section, uint32_t *n)
{
    static const struct { const char *name; const fl_key *keys; uint32_t n; } t[] = {
        { "encoder", enc_keys, NTAB(enc_keys) },       { "decoder", dec_keys, NTAB(dec_keys) },
        { "encoder.2", enc2_keys, NTAB(enc2_keys) },   { "decoder.2", dec2_keys, NTAB(dec2_keys) },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (strcmp(section, t[i].name) == 0) {
            *n = t[i].n;
            return t[i].keys;
        }
    return NULL;
}

static fl_status check_detach(fl_experiment *e);

static fl_act act_of(const fl_values *v)
{
    const char *a = fl_values_get(v, "act")->text;
    return strcmp(a, "relu") == 0 ? FL_ACT_RELU
         : strcmp(a, "elu") == 0 ? FL_ACT_ELU
         : strcmp(a, "softplus") == 0 ? FL_ACT_SOFTPLUS
                                     : FL_ACT_TANH;
}

static fl_status make_mlp(fl_experiment *e, mlp_part *p, const char *section, const fl_key *keys,
                          uint32_t nkeys, uint32_t in, uint32_t out, const fl_real *out_bias,
                          uint32_t max_rows)
{
    fl_status st = fl_experiment_section(e, section, keys, nkeys, &p->cfg);
    if (st != FL_OK) return st;
    const fl_value *hv = fl_values_get(&p->cfg, "hidden");
    enum { MAX_HIDDEN = 64 };
    if (hv->nlist > MAX_HIDDEN) {
        const fl_cfg_section *sec = fl_config_section(e->cfg, section);
        const fl_cfg_entry *ce = sec ? fl_config_entry(sec, "hidden") : NULL;
        char where[512];
        if (ce) fl_config_where(e->cfg, sec, ce, where, sizeof where);
        else snprintf(where, sizeof where, "%s", e->cfg->path);
        fl_err("%s: [%s] hidden: %zu hidden layers; at most %d", where, section,
               hv->nlist, MAX_HIDDEN);
        return FL_ERR_INVALID;
    }
    uint32_t hidden[MAX_HIDDEN], nh = (uint32_t)hv->nlist;
    for (uint32_t i = 0; i < nh; i++) hidden[i] = (uint32_t)hv->list[i];
    p->cx = fl_ctx_new(section, &p->cfg, &e->arena, e->seed);
    if (!p->cx) return FL_ERR_NOMEM;
    fl_mlp_spec spec = { "net", in, out, nh, hidden, act_of(&p->cfg),
                         strcmp(fl_values_get(&p->cfg, "init")->text, "fanin") == 0
                             ? FL_INIT_FANIN
                             : FL_INIT_GLOROT,
                         FL_INIT_GLOROT, NULL, out_bias };
    fl_host_clear_error();
    p->m = fl_host_table()->mlp_create(p->cx, &spec, max_rows); /* owned by the ctx */
    fl_ctx_end_create(p->cx);
    if (!p->m) {
        const char *m = fl_host_last_error();
        fl_err("[%s] %s", section, m[0] ? m : "cannot create the MLP");
        return FL_ERR_INVALID;
    }
    return FL_OK;
}

static void free_mlp(mlp_part *p)
{
    fl_ctx_free(p->cx); /* frees the MLP */
    p->cx = NULL;
    fl_values_free(&p->cfg);
}

static fl_real *theta_of(fl_experiment *e, fl_ctx *cx) { return e->arena.theta + cx->block; }
static fl_real *grad_of(fl_experiment *e, fl_ctx *cx) { return e->arena.grad + cx->block; }

/* The training mean of x (for the decoder's initial output bias). */
static fl_status train_mean(fl_experiment *e, fl_real *mean)
{
    const uint32_t D = e->info.dim, chunk = 1024;
    double *acc = calloc(D, sizeof *acc);
    fl_real *x = fl_alloc((size_t)chunk * D * sizeof(fl_real));
    uint64_t idx[1024];
    fl_status st = acc && x ? FL_OK : FL_ERR_NOMEM;
    uint64_t N = 0;
    if (st == FL_OK && !(e->info.drawn & 1u)) {
        N = e->info.n[FL_SPLIT_TRAIN];
        for (uint64_t i = 0; i < N && st == FL_OK; i += chunk) {
            uint32_t m = (uint32_t)(N - i < chunk ? N - i : chunk);
            for (uint32_t j = 0; j < m; j++) idx[j] = i + j;
            st = e->dcls->read(e->dself, FL_SPLIT_TRAIN, idx, m, x);
            for (uint32_t r = 0; st == FL_OK && r < m; r++)
                for (uint32_t d = 0; d < D; d++) acc[d] += x[(size_t)r * D + d];
        }
    } else if (st == FL_OK) {
        N = 8 * (uint64_t)chunk;
        fl_rng_key key = fl_rng_key_make(e->seed, "data.mean");
        for (uint64_t i = 0; i < N && st == FL_OK; i += chunk) {
            st = e->dcls->draw(e->dself, FL_SPLIT_TRAIN, key, i, chunk, x);
            for (uint32_t r = 0; st == FL_OK && r < chunk; r++)
                for (uint32_t d = 0; d < D; d++) acc[d] += x[(size_t)r * D + d];
        }
    }
    if (st == FL_OK)
        for (uint32_t d = 0; d < D; d++) mean[d] = (fl_real)(acc[d] / (double)(N ? N : 1));
    else if (st != FL_ERR_NOMEM) {
        const char *m = fl_host_last_error();
        fl_err("[data] %s: %s", e->data_type, m[0] ? m : fl_status_str(st));
    }
    free(acc);
    fl_free(x);
    return st;
}

static fl_status make_part(fl_experiment *e, fl_part *p, fl_kind kind, const char *section,
                           const char *def_type, const void *shape)
{
    fl_status st = fl_part_prepare(e, kind, section, def_type, p);
    if (st != FL_OK) return st;
    const fl_host *h = fl_host_table();
    switch (kind) {
    case FL_KIND_POSTERIOR:
        st = p->rec->cls.posterior.create(h, p->cx, shape, &p->self);
        break;
    case FL_KIND_LIKELIHOOD:
        st = p->rec->cls.likelihood.create(h, p->cx, shape, &p->self);
        break;
    case FL_KIND_PRIOR: st = p->rec->cls.prior.create(h, p->cx, shape, &p->self); break;
    case FL_KIND_ESTIMATOR: st = p->rec->cls.estimator.create(h, p->cx, shape, &p->self); break;
    default: st = FL_ERR_INTERNAL; break;
    }
    return fl_part_created(e, p, st);
}

#define ALLOC(ptr, n)                                                                     \
    do {                                                                                  \
        (ptr) = fl_alloc((size_t)(n) * sizeof *(ptr));                                    \
        if (!(ptr)) return FL_ERR_NOMEM;                                                  \
    } while (0)

static fl_status alloc_buffers(fl_vae *v)
{
    const size_t R = v->Rmax;
    ALLOC(v->E, R * (v->P1 + v->H));
    ALLOC(v->dE, R * (v->P1 + v->H));
    ALLOC(v->eps, R * v->L1);
    ALLOC(v->z0, R * v->L1);
    ALLOC(v->dz0, R * v->L1);
    ALLOC(v->dz, R * v->L1);
    ALLOC(v->dzp, R * (v->L1 > v->L2 ? v->L1 : v->L2));
    ALLOC(v->lq, R);
    ALLOC(v->logdet, R);
    ALLOC(v->dlogdet, R);
    if (v->H) {
        ALLOC(v->hrep, R * v->H);
        ALLOC(v->dh, R * v->H);
    }
    ALLOC(v->Lg, R * v->Q);
    ALLOC(v->dLg, R * v->Q);
    ALLOC(v->lpx, R);
    ALLOC(v->lpz, R);
    ALLOC(v->logw, R);
    ALLOC(v->wp, R);
    ALLOC(v->wq, R);
    ALLOC(v->ratio, R);
    ALLOC(v->neg_wq, R);
    ALLOC(v->bound, R);
    if (v->two) {
        ALLOC(v->E2, R * v->P2);
        ALLOC(v->dE2, R * v->P2);
        ALLOC(v->eps2, R * v->L2);
        ALLOC(v->z2, R * v->L2);
        ALLOC(v->lq2, R);
        ALLOC(v->G2, R * 2 * v->L1);
        ALLOC(v->dG2, R * 2 * v->L1);
        ALLOC(v->lpz1, R);
        ALLOC(v->dz2, R * v->L2);
        ALLOC(v->dz1b, R * v->L1);
    }
    return FL_OK;
}

fl_status fl_vae_build(fl_experiment *e)
{
    fl_vae *v = calloc(1, sizeof *v);
    if (!v) return FL_ERR_NOMEM;
    e->vae = v;
    fl_status st;
    v->D = e->info.dim;
    v->B = e->batch;

    /* The estimator first: its k sizes everything. */
    st = fl_part_prepare(e, FL_KIND_ESTIMATOR, "estimator", "elbo", &v->est);
    if (st != FL_OK) return st;
    v->k = (uint32_t)fl_values_get(&v->est.cfg, "k")->i;
    v->ec = &v->est.rec->cls.estimator;
    v->Rmax = v->B * v->k > e->eval_batch ? v->B * v->k : e->eval_batch;
    fl_estimator_shape es = { v->Rmax, v->k };
    st = fl_part_created(e, &v->est, v->ec->create(fl_host_table(), v->est.cx, &es, &v->est.self));
    if (st != FL_OK) return st;

    /* Encoder shape: latent and context come from [encoder]. */
    fl_values encv;
    st = fl_values_resolve(e->cfg, "encoder", (const fl_key *const[]){ enc_keys },
                           (const uint32_t[]){ NTAB(enc_keys) }, 1, &encv);
    if (st != FL_OK) return st;
    v->L1 = (uint32_t)fl_values_get(&encv, "latent")->i;
    v->H = (uint32_t)fl_values_get(&encv, "context")->i;
    fl_values_free(&encv);
    v->two = fl_config_section(e->cfg, "encoder.2") || fl_config_section(e->cfg, "decoder.2");
    if (v->two) {
        st = fl_values_resolve(e->cfg, "encoder.2", (const fl_key *const[]){ enc2_keys },
                               (const uint32_t[]){ NTAB(enc2_keys) }, 1, &encv);
        if (st != FL_OK) return st;
        v->L2 = (uint32_t)fl_values_get(&encv, "latent")->i;
        fl_values_free(&encv);
    }

    const uint32_t R = v->Rmax;
    st = make_part(e, &v->post, FL_KIND_POSTERIOR, "posterior", "gaussian-diag",
                   &(fl_posterior_shape){ v->L1, R, R });
    if (st != FL_OK) return st;
    v->pc = &v->post.rec->cls.posterior;
    v->P1 = v->pc->n_params(v->post.self);
    st = make_part(e, &v->lik, FL_KIND_LIKELIHOOD, "likelihood", "bernoulli",
                   &(fl_likelihood_shape){ v->D, R });
    if (st != FL_OK) return st;
    v->lc = &v->lik.rec->cls.likelihood;
    v->Q = v->lc->n_params(v->lik.self);
    st = make_part(e, &v->prior, FL_KIND_PRIOR, "prior", "normal",
                   &(fl_prior_shape){ v->two ? v->L2 : v->L1, R });
    if (st != FL_OK) return st;
    v->prc = &v->prior.rec->cls.prior;

    /* Decoder output bias from the data mean (e.g. the logit for Bernoulli). */
    fl_real *mean = fl_alloc((size_t)v->D * sizeof(fl_real));
    fl_real *bias = fl_alloc((size_t)v->Q * sizeof(fl_real));
    st = mean && bias ? FL_OK : FL_ERR_NOMEM;
    if (st == FL_OK && v->lc->init_bias) {
        st = train_mean(e, mean);
        if (st == FL_OK) v->lc->init_bias(v->lik.self, mean, bias);
    }
    if (st == FL_OK)
        st = make_mlp(e, &v->enc, "encoder", enc_keys, NTAB(enc_keys), v->D, v->P1 + v->H, NULL,
                      R);
    if (st == FL_OK)
        st = make_mlp(e, &v->dec, "decoder", dec_keys, NTAB(dec_keys), v->L1, v->Q,
                      v->lc->init_bias ? bias : NULL, R);
    fl_free(mean);
    fl_free(bias);
    if (st != FL_OK) return st;

    if (v->two) {
        /* q(z2|z1) and p(z1|z2): diagonal Gaussians by construction. */
        fl_config_put(e->cfg, "posterior.2", "type", "gaussian-diag", 0);
        fl_config_put(e->cfg, "likelihood.2", "type", "gaussian", 0);
        st = make_part(e, &v->post2, FL_KIND_POSTERIOR, "posterior.2", "gaussian-diag",
                       &(fl_posterior_shape){ v->L2, R, R });
        if (st != FL_OK) return st;
        v->pc2 = &v->post2.rec->cls.posterior;
        v->P2 = v->pc2->n_params(v->post2.self);
        st = make_part(e, &v->lik2, FL_KIND_LIKELIHOOD, "likelihood.2", "gaussian",
                       &(fl_likelihood_shape){ v->L1, R });
        if (st != FL_OK) return st;
        v->lc2 = &v->lik2.rec->cls.likelihood;
        if (v->lc2->n_params(v->lik2.self) != 2 * v->L1) {
            fl_err("likelihood 'gaussian' must take a mean and a log-variance per dimension "
                   "for p(z1|z2)");
            return FL_ERR_INVALID;
        }
        st = make_mlp(e, &v->enc2, "encoder.2", enc2_keys, NTAB(enc2_keys), v->L1, v->P2, NULL, R);
        if (st == FL_OK)
            st = make_mlp(e, &v->dec2, "decoder.2", dec2_keys, NTAB(dec2_keys), v->L2,
                          2 * v->L1, NULL, R);
        if (st != FL_OK) return st;
    }

    /* The posterior's flows, fed the context h. */
    e->stack = fl_stack_new(&e->arena, e->seed, v->L1, v->H, R);
    if (!e->stack) return FL_ERR_NOMEM;
    st = fl_stack_from_config(e->stack, e->reg, e->cfg);
    if (st != FL_OK) return st;
    st = check_detach(e);
    if (st != FL_OK) return st;
    for (size_t i = 0; i < e->stack->n; i++)
        if ((e->stack->L[i].cls->flags & FL_FLOW_BATCH_COUPLED)) {
            fl_err("[%s] %s couples the rows of a batch; posterior flows must treat every "
                   "sample independently",
                   e->stack->L[i].cx->path, e->stack->L[i].cls->base.name);
            return FL_ERR_INVALID;
        }
    if (v->H && e->stack->n == 0)
        fl_log(FL_LOG_WARN, "[encoder] context = %u but the posterior has no flow layers to "
               "use it", v->H);

    st = fl_arena_finalize(&e->arena, e->seed);
    if (st == FL_OK) st = fl_stack_ready(e->stack);
    if (st == FL_OK) st = alloc_buffers(v);
    return st;
}

void fl_vae_free(fl_experiment *e)
{
    fl_vae *v = e->vae;
    if (!v) return;
    fl_part_free(&v->est, v->ec ? v->ec->destroy : NULL);
    fl_part_free(&v->post, v->pc ? v->pc->destroy : NULL);
    fl_part_free(&v->lik, v->lc ? v->lc->destroy : NULL);
    fl_part_free(&v->prior, v->prc ? v->prc->destroy : NULL);
    fl_part_free(&v->post2, v->pc2 ? v->pc2->destroy : NULL);
    fl_part_free(&v->lik2, v->lc2 ? v->lc2->destroy : NULL);
    free_mlp(&v->enc);
    free_mlp(&v->dec);
    free_mlp(&v->enc2);
    free_mlp(&v->dec2);
    fl_real *bufs[] = { v->E, v->dE, v->eps, v->z0, v->lq, v->hrep, v->logdet, v->dlogdet,
                        v->dz0, v->dh, v->dz, v->dzp, v->Lg, v->dLg, v->lpx, v->lpz, v->logw,
                        v->wp, v->wq, v->ratio, v->neg_wq, v->E2, v->dE2, v->eps2, v->z2,
                        v->lq2, v->G2, v->dG2, v->lpz1, v->dz2, v->dz1b };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) fl_free(bufs[i]);
    fl_free(v->bound);
    free(v);
    e->vae = NULL;
}

/* ------------------------------------------------------------------ */
/* The model's forward and backward over n points x k samples.         */

static fl_status comp_fail(const char *what, const char *name, fl_status st)
{
    const char *m = fl_host_last_error();
    fl_err("%s %s: %s", what, name, m[0] ? m : fl_status_str(st));
    return st;
}

/* Standard normals for points p0.., samples j0..j0+k-1: point p's stream
 * is (key, sub0 + p), so the noise of a point does not depend on chunking. */
static void draw_noise(fl_rng_key key, uint64_t sub0, uint64_t p0, uint32_t n, uint64_t j0,
                       uint32_t k, uint32_t dim, fl_real *eps)
{
    const size_t per = (size_t)k * dim;
#pragma omp parallel for schedule(static) if ((size_t)n * per > 32768)
    for (uint32_t b = 0; b < n; b++)
        fl_normals(key, sub0 + p0 + b, j0 * dim, per, eps + b * per);
}

/* Training noise of step `step`: one stream per step, split over threads. */
static void draw_step_noise(fl_rng_key key, uint64_t step, size_t total, fl_real *eps)
{
    const size_t piece = 8192;
    const size_t np = (total + piece - 1) / piece;
#pragma omp parallel for schedule(static) if (np > 1)
    for (size_t i = 0; i < np; i++) {
        size_t a = i * piece, m = total - a < piece ? total - a : piece;
        fl_normals(key, step, a, m, eps + a);
    }
}

/* log p(x | decoder rows) on the rows [r0, r0 + rn) of a decoder forward,
 * called while they are in cache (fl_mlp_forward_rows). Row r belongs to
 * data row r / k; the range is cut where the data row changes inside a
 * group, so each call is a valid one (n a multiple of its k). */
typedef struct lik_rows_ctx {
    fl_vae *v;
    const fl_lik_args *all; /* the whole call */
    fl_status st;           /* first failure */
} lik_rows_ctx;

static void lik_rows(void *c, uint32_t r0, uint32_t rn)
{
    lik_rows_ctx *lr = c;
    const fl_lik_args *A = lr->all;
    const uint32_t k = A->k, r1 = r0 + rn, P = lr->v->Q;
    while (r0 < r1) {
        uint32_t end = r0 % k ? (r0 / k + 1) * k : r0 + (r1 - r0) / k * k;
        if (end > r1 || end == r0) end = r1;
        fl_lik_args a = *A;
        a.n = end - r0;
        a.k = r0 % k || end % k ? a.n : k; /* a partial group: its rows share one x */
        a.x = A->x + (size_t)(r0 / k) * lr->v->D;
        a.param = A->param + (size_t)r0 * P;
        a.logp = A->logp + r0;
        fl_status st = lr->v->lc->log_prob(lr->v->lik.self, &a);
        if (st != FL_OK) {
#pragma omp critical(fl_lik_rows)
            if (lr->st == FL_OK) lr->st = st;
        }
        r0 = end;
    }
}

/* z0 (n points x k samples, from the posterior's sample) through the
 * posterior's flow stack, each point's context h repeated over its k
 * samples; the flows' log-determinants go to logdet, the output to *z. */
static fl_status posterior_flows(fl_experiment *e, fl_mode mode, uint32_t n, uint32_t k,
                                 const fl_real **z)
{
    fl_vae *v = e->vae;
    const uint32_t W = v->P1 + v->H, R = n * k;
    for (uint32_t b = 0; v->H && b < n; b++)
        for (uint32_t j = 0; j < k; j++)
            memcpy(v->hrep + ((size_t)b * k + j) * v->H, v->E + (size_t)b * W + v->P1,
                   v->H * sizeof(fl_real));
    memset(v->logdet, 0, R * sizeof(fl_real));
    return fl_stack_forward(e->stack, R, mode, v->z0, v->H ? v->hrep : NULL, v->logdet, z);
}

/* Forward: fills logw (n*k) and everything backward needs. eps (and eps2)
 * must be filled. */
static fl_status model_forward(fl_experiment *e, fl_mode mode, const fl_real *x, uint32_t n,
                               uint32_t k)
{
    fl_vae *v = e->vae;
    const uint32_t R = n * k, W = v->P1 + v->H;
    fl_status st;
    fl_mlp_forward(v->enc.m, theta_of(e, v->enc.cx), n, x, v->E);
    fl_host_clear_error();
    fl_post_fwd pf = { n, k, theta_of(e, v->post.cx), v->E, W, v->eps, v->z0, v->lq };
    st = v->pc->sample(v->post.self, &pf);
    if (st != FL_OK) return comp_fail("posterior", v->post.rec->cls.base.name, st);
    v->zT = v->z0;
    if (e->stack->n) {
        st = posterior_flows(e, mode, n, k, &v->zT);
        if (st != FL_OK) return st;
        for (uint32_t r = 0; r < R; r++) v->lq[r] -= v->logdet[r];
    }
    const fl_real *ztop = v->zT;
    if (v->two) {
        fl_mlp_forward(v->enc2.m, theta_of(e, v->enc2.cx), R, v->zT, v->E2);
        fl_post_fwd p2 = { R, 1, theta_of(e, v->post2.cx), v->E2, v->P2, v->eps2, v->z2, v->lq2 };
        st = v->pc2->sample(v->post2.self, &p2);
        if (st != FL_OK) return comp_fail("posterior", v->post2.rec->cls.base.name, st);
        fl_mlp_forward(v->dec2.m, theta_of(e, v->dec2.cx), R, v->z2, v->G2);
        fl_lik_args l2 = { R, 1, theta_of(e, v->lik2.cx), NULL, v->zT, v->G2, v->lpz1, NULL, NULL,
                           NULL };
        st = v->lc2->log_prob(v->lik2.self, &l2);
        if (st != FL_OK) return comp_fail("likelihood", v->lik2.rec->cls.base.name, st);
        ztop = v->z2;
    }
    fl_prior_args pa = { R, theta_of(e, v->prior.cx), NULL, ztop, v->lpz, NULL, NULL };
    st = v->prc->log_prob(v->prior.self, &pa);
    if (st != FL_OK) return comp_fail("prior", v->prior.rec->cls.base.name, st);
    fl_lik_args la = { R, k, theta_of(e, v->lik.cx), NULL, x, v->Lg, v->lpx, NULL, NULL, NULL };
    if (v->lc->flags & FL_LIK_CONCURRENT_LOGP) {
        lik_rows_ctx lr = { v, &la, FL_OK };
        fl_mlp_forward_rows(v->dec.m, theta_of(e, v->dec.cx), R, v->zT, v->Lg, lik_rows, &lr);
        st = lr.st;
    } else {
        fl_mlp_forward(v->dec.m, theta_of(e, v->dec.cx), R, v->zT, v->Lg);
        st = v->lc->log_prob(v->lik.self, &la);
    }
    if (st != FL_OK) return comp_fail("likelihood", v->lik.rec->cls.base.name, st);
    for (uint32_t r = 0; r < R; r++) {
        fl_real lw = v->lpx[r] + v->lpz[r] - v->lq[r];
        if (v->two) lw += v->lpz1[r] - v->lq2[r];
        v->logw[r] = lw;
    }
    return FL_OK;
}

/* Backward of the last forward with loss weights wp, wq (already scaled:
 * the loss is sum_r wp*log p + inference terms). */
static fl_status model_backward(fl_experiment *e, fl_mode mode, const fl_real *x, uint32_t n,
                                uint32_t k)
{
    fl_vae *v = e->vae;
    const uint32_t R = n * k, W = v->P1 + v->H, L1 = v->L1;
    fl_status st;
    for (uint32_t r = 0; r < R; r++) {
        v->ratio[r] = v->wp[r] != 0 ? v->wq[r] / v->wp[r] : 0;
        v->neg_wq[r] = -v->wq[r];
    }
    /* generative: likelihood -> decoder -> dz (weighted by wp) */
    fl_lik_args la = { R, k, theta_of(e, v->lik.cx), grad_of(e, v->lik.cx), x, v->Lg, NULL,
                       v->wp, v->dLg, NULL };
    st = v->lc->log_prob(v->lik.self, &la);
    if (st != FL_OK) return comp_fail("likelihood", v->lik.rec->cls.base.name, st);
    memset(v->dz, 0, (size_t)R * L1 * sizeof(fl_real));
    fl_mlp_backward(v->dec.m, theta_of(e, v->dec.cx), grad_of(e, v->dec.cx), R, v->dLg, v->dz);
    if (v->two) {
        const uint32_t L2 = v->L2;
        fl_lik_args l2 = { R, 1, theta_of(e, v->lik2.cx), grad_of(e, v->lik2.cx), v->zT, v->G2,
                           NULL, v->wp, v->dG2, v->dz1b };
        st = v->lc2->log_prob(v->lik2.self, &l2);
        if (st != FL_OK) return comp_fail("likelihood", v->lik2.rec->cls.base.name, st);
        for (size_t i = 0; i < (size_t)R * L1; i++) v->dz[i] += v->dz1b[i];
        memset(v->dz2, 0, (size_t)R * L2 * sizeof(fl_real));
        fl_mlp_backward(v->dec2.m, theta_of(e, v->dec2.cx), grad_of(e, v->dec2.cx), R, v->dG2,
                        v->dz2);
        fl_prior_args pa = { R, theta_of(e, v->prior.cx), grad_of(e, v->prior.cx), v->z2, NULL,
                             v->wp, v->dzp };
        st = v->prc->log_prob(v->prior.self, &pa);
        if (st != FL_OK) return comp_fail("prior", v->prior.rec->cls.base.name, st);
        for (uint32_t r = 0; r < R; r++)
            for (uint32_t d = 0; d < L2; d++) {
                size_t i = (size_t)r * L2 + d;
                v->dz2[i] = v->ratio[r] * (v->dz2[i] + v->dzp[i]);
            }
        for (uint32_t r = 0; r < R; r++)
            for (uint32_t d = 0; d < L1; d++) v->dz[(size_t)r * L1 + d] *= v->ratio[r];
        fl_post_bwd p2 = { R, 1, theta_of(e, v->post2.cx), grad_of(e, v->post2.cx), v->E2, v->P2,
                           v->eps2, v->z2, v->dz2, v->neg_wq, 0, v->dE2 };
        st = v->pc2->backward(v->post2.self, &p2);
        if (st != FL_OK) return comp_fail("posterior", v->post2.rec->cls.base.name, st);
        /* q(z2|z1) depends on z1: its gradient joins dz (inference path). */
        fl_mlp_backward(v->enc2.m, theta_of(e, v->enc2.cx), grad_of(e, v->enc2.cx), R, v->dE2,
                        v->dz);
    } else {
        fl_prior_args pa = { R, theta_of(e, v->prior.cx), grad_of(e, v->prior.cx), v->zT, NULL,
                             v->wp, v->dzp };
        st = v->prc->log_prob(v->prior.self, &pa);
        if (st != FL_OK) return comp_fail("prior", v->prior.rec->cls.base.name, st);
        for (uint32_t r = 0; r < R; r++) {
            const fl_real s = v->ratio[r];
            fl_real *dz = v->dz + (size_t)r * L1;
            const fl_real *dp = v->dzp + (size_t)r * L1;
            for (uint32_t d = 0; d < L1; d++) dz[d] = s * (dz[d] + dp[d]);
        }
    }
    /* flows: log q = log q0 - sum logdet, so dloss/dlogdet = +wq */
    const fl_real *dz0 = v->dz;
    if (e->stack->n) {
        memset(v->dz0, 0, (size_t)R * L1 * sizeof(fl_real));
        if (v->H) memset(v->dh, 0, (size_t)R * v->H * sizeof(fl_real));
        st = fl_stack_backward(e->stack, R, mode, v->H ? v->hrep : NULL, v->dz, v->wq, v->dz0,
                               v->H ? v->dh : NULL);
        if (st != FL_OK) return st;
        dz0 = v->dz0;
    }
    fl_post_bwd pb = { n, k, theta_of(e, v->post.cx), grad_of(e, v->post.cx), v->E, W, v->eps,
                       v->z0, dz0, v->neg_wq, v->detach, v->dE };
    st = v->pc->backward(v->post.self, &pb);
    if (st != FL_OK) return comp_fail("posterior", v->post.rec->cls.base.name, st);
    if (v->H) {
        for (uint32_t b = 0; b < n; b++) {
            fl_real *d = v->dE + (size_t)b * W + v->P1;
            memset(d, 0, v->H * sizeof(fl_real));
            for (uint32_t j = 0; j < k; j++) {
                const fl_real *s = v->dh + ((size_t)b * k + j) * v->H;
                for (uint32_t i = 0; i < v->H; i++) d[i] += s[i];
            }
        }
    }
    fl_mlp_backward(v->enc.m, theta_of(e, v->enc.cx), grad_of(e, v->enc.cx), n, v->dE, NULL);
    return FL_OK;
}

/* Estimator weights for the last forward, scaled for the loss -mean bound
 * over `n_total` points. Returns the sum of bounds in *sum. */
static fl_status weigh(fl_experiment *e, const fl_estimator_class *ec, void *eself, uint32_t n,
                       uint32_t k, double scale, double *sum)
{
    fl_vae *v = e->vae;
    fl_est_args ea = { n, k, v->logw, v->bound, v->wp, v->wq };
    fl_host_clear_error();
    fl_status st = ec->weights(eself, &ea);
    if (st != FL_OK) return comp_fail("estimator", ec->base.name, st);
    double s = 0;
    for (uint32_t b = 0; b < n; b++) s += v->bound[b];
    *sum = s;
    const fl_real f = (fl_real)scale;
    for (uint32_t r = 0; r < n * k; r++) {
        v->wp[r] *= f;
        v->wq[r] *= f;
    }
    return FL_OK;
}

fl_status fl_vae_bound(fl_experiment *e, const fl_real *x, uint32_t n, uint64_t noise_sub,
                       int grad, double *bound)
{
    fl_vae *v = e->vae;
    if ((size_t)n * v->k > v->Rmax) {
        fl_err("fl_vae_bound: %u points x k = %u exceed the %u rows the model was built for", n,
               v->k, v->Rmax);
        return FL_ERR_INVALID;
    }
    draw_noise(fl_rng_key_make(e->seed, "vae.eps"), noise_sub, 0, n, 0, v->k, v->L1, v->eps);
    if (v->two)
        draw_noise(fl_rng_key_make(e->seed, "vae.eps2"), noise_sub, 0, n, 0, v->k, v->L2, v->eps2);
    fl_status st = model_forward(e, FL_MODE_EVAL, x, n, v->k);
    double sum;
    if (st == FL_OK) st = weigh(e, v->ec, v->est.self, n, v->k, -1.0 / n, &sum);
    if (st == FL_OK)
        for (uint32_t b = 0; b < n; b++) bound[b] = v->bound[b];
    if (st == FL_OK && grad) st = model_backward(e, FL_MODE_EVAL, x, n, v->k);
    return st;
}

/* ------------------------------------------------------------------ */
/* Evaluation.                                                          */

typedef struct point_acc {
    fl_lme w;           /* log-mean-exp of the log weights */
    double sum_lw, sum_kl;
} point_acc;

static void acc_add(point_acc *a, double lw, double kl)
{
    a->sum_lw += lw;
    a->sum_kl += kl;
    fl_lme_add(&a->w, lw);
}

/* Runs k samples for each of n points of x, chunked by [eval] batch. */
static fl_status eval_points(fl_experiment *e, const fl_real *x, uint64_t n, uint64_t k,
                             const char *stream, point_acc *acc, fl_progress *prog)
{
    fl_vae *v = e->vae;
    const uint64_t S = e->eval_batch < v->Rmax ? e->eval_batch : v->Rmax;
    const uint64_t g = k <= S ? S / k : 1, kb = k <= S ? k : S;
    fl_rng_key key = fl_rng_key_make(e->seed, stream);
    char s2[128];
    snprintf(s2, sizeof s2, "%s.2", stream);
    fl_rng_key key2 = fl_rng_key_make(e->seed, s2);
    fl_status st = FL_OK;
    for (uint64_t i = 0; i < n; i++) {
        fl_lme_init(&acc[i].w);
        acc[i].sum_lw = acc[i].sum_kl = 0;
    }
    for (uint64_t p0 = 0; p0 < n && st == FL_OK; p0 += g) {
        const uint32_t m = (uint32_t)(n - p0 < g ? n - p0 : g);
        for (uint64_t j0 = 0; j0 < k && st == FL_OK; j0 += kb) {
            const uint32_t kk = (uint32_t)(k - j0 < kb ? k - j0 : kb);
            draw_noise(key, 0, p0, m, j0, kk, v->L1, v->eps);
            if (v->two) draw_noise(key2, 0, p0, m, j0, kk, v->L2, v->eps2);
            st = model_forward(e, FL_MODE_EVAL, x + p0 * v->D, m, kk);
            for (uint32_t b = 0; st == FL_OK && b < m; b++)
                for (uint32_t j = 0; j < kk; j++) {
                    size_t r = (size_t)b * kk + j;
                    double kl = (double)v->lq[r] - v->lpz[r];
                    if (v->two) kl += (double)v->lq2[r] - v->lpz1[r];
                    if (isnan(v->logw[r])) {
                        fl_err("evaluation: a log weight is NaN (point %llu)",
                               (unsigned long long)(p0 + b));
                        return FL_ERR_NUMERIC;
                    }
                    acc_add(&acc[p0 + b], v->logw[r], kl);
                }
            if (prog) fl_progress_update(prog, p0 * k + j0 + (uint64_t)m * kk, "");
        }
    }
    return st;
}

static double point_ll(const point_acc *a, uint64_t k) { return fl_lme_log_mean(&a->w, k); }

static void mean_se(const double *v, uint64_t n, double *mean, double *se)
{
    double s = 0, s2 = 0;
    for (uint64_t i = 0; i < n; i++) s += v[i];
    double mu = s / (double)n;
    for (uint64_t i = 0; i < n; i++) s2 += (v[i] - mu) * (v[i] - mu);
    *mean = mu;
    *se = n > 1 ? sqrt(s2 / (double)(n - 1) / (double)n) : 0;
}

/* ELBO and IWAE-k of n points (periodic validation). */
static fl_status quick_eval(fl_experiment *e, const fl_real *x, uint64_t n, uint64_t k,
                            double *elbo, double *iwae)
{
    point_acc *acc = malloc(n * sizeof *acc);
    if (!acc) return FL_ERR_NOMEM;
    fl_status st = eval_points(e, x, n, k, "vae.valid", acc, NULL);
    double se = 0, si = 0;
    for (uint64_t i = 0; i < n; i++) {
        se += acc[i].sum_lw / (double)k;
        si += point_ll(&acc[i], k);
    }
    *elbo = se / (double)n;
    *iwae = si / (double)n;
    free(acc);
    return st;
}

/* Posterior means E_q[z1|x] of n points (exact for a posterior without
 * flows: the sample at eps = 0; else Monte Carlo with `samples`). */
static fl_status posterior_means(fl_experiment *e, const fl_real *x, uint64_t n, uint32_t samples,
                                 fl_real *means)
{
    fl_vae *v = e->vae;
    const uint32_t L = v->L1, W = v->P1 + v->H;
    const int exact = e->stack->n == 0;
    const uint32_t kk = exact ? 1 : samples;
    const uint64_t g = v->Rmax / kk ? v->Rmax / kk : 1;
    fl_rng_key key = fl_rng_key_make(e->seed, "vae.au");
    fl_status st = FL_OK;
    for (uint64_t p0 = 0; p0 < n && st == FL_OK; p0 += g) {
        uint32_t m = (uint32_t)(n - p0 < g ? n - p0 : g);
        fl_mlp_forward(v->enc.m, theta_of(e, v->enc.cx), m, x + p0 * v->D, v->E);
        if (exact) memset(v->eps, 0, (size_t)m * L * sizeof(fl_real));
        else draw_noise(key, 0, p0, m, 0, kk, L, v->eps);
        fl_post_fwd pf = { m, kk, theta_of(e, v->post.cx), v->E, W, v->eps, v->z0, v->lq };
        st = v->pc->sample(v->post.self, &pf);
        if (st != FL_OK) return comp_fail("posterior", v->post.rec->cls.base.name, st);
        const fl_real *z = v->z0;
        if (!exact) st = posterior_flows(e, FL_MODE_EVAL, m, kk, &z);
        for (uint32_t b = 0; st == FL_OK && b < m; b++)
            for (uint32_t d = 0; d < L; d++) {
                double s = 0;
                for (uint32_t j = 0; j < kk; j++) s += z[((size_t)b * kk + j) * L + d];
                means[(p0 + b) * L + d] = (fl_real)(s / kk);
            }
    }
    return st;
}

/* Per-dimension KL(q(z_d|x) || N(0,1)) for an affine posterior without
 * flows (z = mu + A eps): mu = z(0), marginal variance = sum_j (z(e_j) -
 * z(0))_d^2. Accumulates the mean over the n points into kl (L). */
static fl_status kl_per_dim(fl_experiment *e, const fl_real *x, uint64_t n, double *kl)
{
    fl_vae *v = e->vae;
    const uint32_t L = v->L1, W = v->P1 + v->H, kk = L + 1;
    const uint64_t g = v->Rmax / kk ? v->Rmax / kk : 1;
    fl_status st = FL_OK;
    memset(kl, 0, L * sizeof *kl);
    for (uint64_t p0 = 0; p0 < n && st == FL_OK; p0 += g) {
        uint32_t m = (uint32_t)(n - p0 < g ? n - p0 : g);
        fl_mlp_forward(v->enc.m, theta_of(e, v->enc.cx), m, x + p0 * v->D, v->E);
        memset(v->eps, 0, (size_t)m * kk * L * sizeof(fl_real));
        for (uint32_t b = 0; b < m; b++)
            for (uint32_t j = 1; j < kk; j++) v->eps[((size_t)b * kk + j) * L + (j - 1)] = 1;
        fl_post_fwd pf = { m, kk, theta_of(e, v->post.cx), v->E, W, v->eps, v->z0, v->lq };
        st = v->pc->sample(v->post.self, &pf);
        if (st != FL_OK) return comp_fail("posterior", v->post.rec->cls.base.name, st);
        for (uint32_t b = 0; b < m; b++) {
            const fl_real *z = v->z0 + (size_t)b * kk * L;
            for (uint32_t d = 0; d < L; d++) {
                double mu = z[d], var = 0;
                for (uint32_t j = 1; j < kk; j++) {
                    double c = (double)z[(size_t)j * L + d] - mu;
                    var += c * c;
                }
                if (var < 1e-300) var = 1e-300;
                kl[d] += 0.5 * (mu * mu + var - 1 - log(var));
            }
        }
    }
    for (uint32_t d = 0; d < L; d++) kl[d] /= (double)n;
    return st;
}

/* Writes dir/STEM SUFFIX (atomically). */
static fl_status write_eval_file(const char *dir, const char *stem, const char *suffix,
                                 const fl_buf *b)
{
    char name[128];
    snprintf(name, sizeof name, "%s%s", stem, suffix);
    return fl_rundir_write(dir, name, b->data, b->len);
}

void fl_vae_eval_stem(const fl_experiment *e, fl_split split, uint64_t k, uint64_t n,
                      char *buf, size_t cap)
{
    uint64_t own_n = (uint64_t)fl_exp_int(&e->eval, "n"), all = e->info.n[FL_SPLIT_TEST];
    if (own_n == 0 || own_n > all) own_n = all;
    if (split == FL_SPLIT_TEST && k == (uint64_t)fl_exp_int(&e->eval, "k") && n == own_n)
        snprintf(buf, cap, "eval");
    else
        snprintf(buf, cap, "eval-%s-k%llu-n%llu",
                 split == FL_SPLIT_TEST ? "test" : split == FL_SPLIT_VALID ? "valid" : "train",
                 (unsigned long long)k, (unsigned long long)n);
}

fl_status fl_vae_evaluate(fl_experiment *e, fl_split split, uint64_t k, uint64_t n_max,
                          const char *dir, fl_vae_eval *out)
{
    fl_vae *v = e->vae;
    memset(out, 0, sizeof *out);
    fl_real *x = NULL;
    uint64_t n = 0;
    fl_status st = fl_experiment_eval_split(e, split, &x, &n);
    if (st != FL_OK) return st;
    if (n_max && n_max < n) n = n_max;
    const uint32_t L = v->L1;
    point_acc *acc = malloc(n * sizeof *acc);
    double *ll = malloc(n * sizeof *ll), *el = malloc(n * sizeof *el);
    fl_real *means = fl_alloc(n * L * sizeof(fl_real));
    double *var = calloc(L, sizeof *var), *kl = calloc(L, sizeof *kl);
    if (!acc || !ll || !el || !means || !var || !kl) st = FL_ERR_NOMEM;
    double t0 = fl_now();
    fl_progress prog;
    fl_progress_start(&prog, "eval", n * k, 0);
    if (st == FL_OK) st = eval_points(e, x, n, k, "vae.eval", acc, &prog);
    fl_progress_end(&prog);
    double ess = 0, klsum = 0;
    if (st == FL_OK) {
        for (uint64_t i = 0; i < n; i++) {
            ll[i] = point_ll(&acc[i], k);
            el[i] = acc[i].sum_lw / (double)k;
            ess += fl_lme_ess(&acc[i].w);
            klsum += acc[i].sum_kl / (double)k;
        }
        mean_se(ll, n, &out->ll, &out->ll_se);
        mean_se(el, n, &out->elbo, &out->elbo_se);
        out->ess = ess / (double)n;
        out->kl = klsum / (double)n;
        out->n = n;
        out->k = k;
        out->latent = L;
        if (!isfinite(out->ll)) {
            fl_err("evaluation: the log-likelihood estimate is not finite");
            st = FL_ERR_NUMERIC;
        }
    }
    /* Active units (Burda et al.): Var_x E_q[z_d|x] > threshold. */
    const double thr = fl_exp_real(&e->eval, "au_threshold");
    if (st == FL_OK)
        st = posterior_means(e, x, n, (uint32_t)fl_exp_int(&e->eval, "au_samples"), means);
    if (st == FL_OK) {
        for (uint32_t d = 0; d < L; d++) {
            double s = 0, s2 = 0;
            for (uint64_t i = 0; i < n; i++) s += means[i * L + d];
            double mu = s / (double)n;
            for (uint64_t i = 0; i < n; i++) {
                double c = means[i * L + d] - mu;
                s2 += c * c;
            }
            var[d] = n > 1 ? s2 / (double)(n - 1) : 0;
            if (var[d] > thr) out->active_units++;
        }
    }
    const int have_kl = e->stack->n == 0;
    if (st == FL_OK && have_kl) st = kl_per_dim(e, x, n, kl);
    out->seconds = fl_now() - t0;
    char stem[96];
    fl_vae_eval_stem(e, split, k, n, stem, sizeof stem);
    if (st == FL_OK && dir) {
        fl_buf b = { 0 };
        fl_buf_printf(&b, "point,log_likelihood,elbo,ess\n");
        for (uint64_t i = 0; i < n; i++)
            fl_buf_printf(&b, "%llu,%.6f,%.6f,%.3f\n", (unsigned long long)i, ll[i], el[i],
                          fl_lme_ess(&acc[i].w));
        st = b.failed ? FL_ERR_NOMEM : write_eval_file(dir, stem, "_points.csv", &b);
        fl_buf_free(&b);
        fl_buf u = { 0 };
        fl_buf_printf(&u, "dim,var_posterior_mean,active,kl\n");
        for (uint32_t d = 0; d < L; d++) {
            fl_buf_printf(&u, "%u,%.6g,%d,", d, var[d], var[d] > thr);
            if (have_kl) fl_buf_printf(&u, "%.6f\n", kl[d]);
            else fl_buf_printf(&u, "\n");
        }
        if (st == FL_OK)
            st = u.failed ? FL_ERR_NOMEM : write_eval_file(dir, stem, "_units.csv", &u);
        fl_buf_free(&u);
        fl_buf j = { 0 };
        fl_buf_printf(&j,
                      "{\n  \"split\": \"%s\",\n  \"points\": %llu,\n  \"k\": %llu,\n"
                      "  \"log_likelihood\": %.6f,\n  \"log_likelihood_se\": %.6f,\n"
                      "  \"elbo\": %.6f,\n  \"elbo_se\": %.6f,\n  \"gap\": %.6f,\n"
                      "  \"kl\": %.6f,\n  \"ess\": %.3f,\n  \"ess_fraction\": %.6f,\n"
                      "  \"active_units\": %u,\n  \"latent\": %u,\n  \"au_threshold\": %g,\n"
                      "  \"seconds\": %.3f\n}\n",
                      split == FL_SPLIT_TEST ? "test" : split == FL_SPLIT_VALID ? "valid" : "train",
                      (unsigned long long)n, (unsigned long long)k, out->ll, out->ll_se,
                      out->elbo, out->elbo_se, out->ll - out->elbo, out->kl, out->ess,
                      out->ess / (double)k, out->active_units, L, thr, out->seconds);
        if (st == FL_OK)
            st = j.failed ? FL_ERR_NOMEM : write_eval_file(dir, stem, ".json", &j);
        fl_buf_free(&j);
    }
    free(acc);
    free(ll);
    free(el);
    fl_free(means);
    free(var);
    free(kl);
    fl_free(x);
    return st;
}

/* ------------------------------------------------------------------ */
/* Training.                                                            */

fl_status fl_vae_train(fl_experiment *e, const char *rundir, int resume, fl_vae_result *res)
{
    fl_vae *v = e->vae;
    memset(res, 0, sizeof *res);
    const uint32_t B = v->B, k = v->k, D = v->D;
    const uint64_t steps = fl_experiment_steps(e);
    const uint64_t eval_every = (uint64_t)fl_exp_int(&e->train, "eval_every");
    const uint64_t ckpt_every = (uint64_t)fl_exp_int(&e->train, "checkpoint_every");
    fl_adam opt;
    fl_ema ema;
    fl_real *live;
    fl_status st = fl_run_optim_init(e, &opt, &ema, &live);
    if (st != FL_OK) return st;
    fl_real *x = fl_alloc((size_t)B * D * sizeof(fl_real));
    if (!x) st = FL_ERR_NOMEM;

    fl_buf metrics = { 0 };
    uint64_t step0 = 0;
    double time0 = 0; /* train_seconds before this session (resumed) */
    if (st == FL_OK && resume && rundir)
        st = fl_resume_load(e, rundir, &opt, &ema, &step0, &metrics, &time0);
    if (metrics.len == 0)
        fl_buf_printf(&metrics, "step,train_bound,valid_elbo,valid_iwae,lr,train_seconds\n");

    /* The validation set of the periodic evaluations. */
    fl_real *vx = NULL;
    uint64_t vn = 0;
    fl_split vs = e->info.n[FL_SPLIT_VALID] ? FL_SPLIT_VALID : FL_SPLIT_TEST;
    if (st == FL_OK) st = fl_experiment_eval_split(e, vs, &vx, &vn);
    uint64_t vmax = (uint64_t)fl_exp_int(&e->eval, "valid_n");
    if (vmax && vmax < vn) vn = vmax;
    const uint64_t vk = (uint64_t)fl_exp_int(&e->eval, "valid_k");

    fl_arena_zero_grad(&e->arena); /* then each Adam step clears it (fl_adam_step_zero) */
    fl_rng_key key = fl_rng_key_make(e->seed, "vae.train.eps");
    fl_rng_key key2 = fl_rng_key_make(e->seed, "vae.train.eps2");
    double interval_sum = 0, train_time = time0;
    uint64_t interval_n = 0;
    fl_progress prog;
    fl_progress_start(&prog, "train", steps, (uint64_t)fl_exp_int(&e->train, "log_every"));
    char status[160] = "";
    const double scale = -1.0 / B;
    uint64_t evaluated = UINT64_MAX; /* the step of this session's last evaluation */
    for (uint64_t step = step0; st == FL_OK && step < steps; step++) {
        double t0 = fl_now();
        opt.lr = fl_experiment_lr(e, step);
        st = fl_experiment_train_batch(e, step, B, x);
        if (st != FL_OK) break;
        draw_step_noise(key, step, (size_t)B * k * v->L1, v->eps);
        if (v->two) draw_step_noise(key2, step, (size_t)B * k * v->L2, v->eps2);
        st = model_forward(e, FL_MODE_TRAIN, x, B, k);
        double sum = 0;
        if (st == FL_OK) st = weigh(e, v->ec, v->est.self, B, k, scale, &sum);
        if (st != FL_OK) break;
        double bound = sum / B;
        if (!isfinite(bound)) {
            fl_err("step %llu: the training bound is not finite (%g); lower [train] lr",
                   (unsigned long long)step + 1, bound);
            st = FL_ERR_NUMERIC;
            break;
        }
        st = model_backward(e, FL_MODE_TRAIN, x, B, k);
        if (st != FL_OK) break;
        fl_adam_step_zero(&opt, e->arena.theta, e->arena.grad);
        fl_ema_update(&ema, e->arena.theta);
        train_time += fl_now() - t0;
        interval_sum += bound;
        interval_n++;

        const uint64_t done = step + 1;
        const int eval_now = done == steps || (eval_every && done % eval_every == 0);
        if (eval_now) {
            fl_run_use_average(e, &ema, live, 1);
            st = quick_eval(e, vx, vn, vk, &res->valid_elbo, &res->valid_iwae);
            fl_run_use_average(e, &ema, live, 0);
            if (st != FL_OK) break;
            evaluated = done;
            res->train_bound = interval_sum / (double)interval_n;
            fl_buf_printf(&metrics, "%llu,%.6f,%.6f,%.6f,%.6g,%.3f\n", (unsigned long long)done,
                          res->train_bound, res->valid_elbo, res->valid_iwae, opt.lr, train_time);
            interval_sum = 0;
            interval_n = 0;
            if (rundir) st = fl_rundir_write(rundir, "metrics.csv", metrics.data, metrics.len);
            if (!prog.tty)
                fl_log(FL_LOG_INFO, "step %llu: train bound %.3f, %s ELBO %.3f, IWAE-%llu %.3f",
                       (unsigned long long)done, res->train_bound,
                       vs == FL_SPLIT_VALID ? "valid" : "test", res->valid_elbo,
                       (unsigned long long)vk, res->valid_iwae);
        }
        if (st == FL_OK && rundir && ckpt_every && done % ckpt_every == 0 && done != steps)
            st = fl_run_save(e, rundir, &opt, &ema, done);
        if (res->valid_iwae != 0)
            snprintf(status, sizeof status, "bound %.2f  valid %.2f", bound, res->valid_iwae);
        else snprintf(status, sizeof status, "bound %.2f", bound);
        fl_progress_update(&prog, done, status);
    }
    fl_progress_end(&prog);
    if (st == FL_OK && evaluated != steps) {
        /* No evaluation at `steps` in this session: steps = 0 (the untrained
         * model), or resumed from a checkpoint at the last step (saved
         * before the final test evaluation, which a kill may interrupt). */
        fl_run_use_average(e, &ema, live, 1);
        st = quick_eval(e, vx, vn, vk, &res->valid_elbo, &res->valid_iwae);
        fl_run_use_average(e, &ema, live, 0);
        if (st == FL_OK && !isnan(fl_metrics_field(&metrics, steps, 0))) {
            /* the row is there (the killed run wrote it): its training bound */
            double tr = fl_metrics_field(&metrics, steps, 1);
            res->train_bound = isnan(tr) ? 0 : tr;
        } else if (st == FL_OK) {
            fl_buf_printf(&metrics, "%llu,,%.6f,%.6f,%.6g,%.3f\n", (unsigned long long)steps,
                          res->valid_elbo, res->valid_iwae,
                          fl_experiment_lr(e, steps ? steps - 1 : 0), train_time);
            if (rundir) st = fl_rundir_write(rundir, "metrics.csv", metrics.data, metrics.len);
        }
    }
    res->steps = opt.t;
    res->seconds = train_time;
    res->examples_per_s =
        train_time > time0 ? (double)(opt.t - step0) * B / (train_time - time0) : 0;
    if (st == FL_OK && rundir) st = fl_run_save(e, rundir, &opt, &ema, opt.t);
    if (st == FL_OK) fl_run_use_average(e, &ema, live, 1); /* leave the evaluated model */
    fl_buf_free(&metrics);
    fl_free(vx);
    fl_free(x);
    fl_run_optim_free(&opt, &ema, live);
    return st;
}

/* ------------------------------------------------------------------ */
/* Pictures.                                                            */

fl_status fl_vae_sample(fl_experiment *e, uint32_t n, fl_rng_key key, fl_real *out)
{
    fl_vae *v = e->vae;
    if (n > v->Rmax) n = v->Rmax;
    const uint32_t Lt = v->two ? v->L2 : v->L1;
    fl_real *eps = v->two ? v->eps2 : v->eps, *z = v->two ? v->z2 : v->z0;
    fl_rng_normal(key, 0, 0, (size_t)n * Lt, eps);
    fl_status st = v->prc->sample(v->prior.self, n, theta_of(e, v->prior.cx), eps, z);
    if (st != FL_OK) return comp_fail("prior", v->prior.rec->cls.base.name, st);
    const fl_real *z1 = z;
    if (v->two) {
        /* z1 = mean of p(z1|z2) */
        fl_mlp_forward(v->dec2.m, theta_of(e, v->dec2.cx), n, z, v->G2);
        st = v->lc2->mean(v->lik2.self, n, theta_of(e, v->lik2.cx), v->G2, v->dz1b);
        if (st != FL_OK) return comp_fail("likelihood", v->lik2.rec->cls.base.name, st);
        z1 = v->dz1b;
    }
    fl_mlp_forward(v->dec.m, theta_of(e, v->dec.cx), n, z1, v->Lg);
    st = v->lc->mean(v->lik.self, n, theta_of(e, v->lik.cx), v->Lg, out);
    if (st != FL_OK) return comp_fail("likelihood", v->lik.rec->cls.base.name, st);
    return FL_OK;
}

fl_status fl_vae_reconstruct(fl_experiment *e, const fl_real *x, uint32_t n, fl_real *out)
{
    fl_vae *v = e->vae;
    if (n > v->Rmax) n = v->Rmax;
    fl_real *means = fl_alloc((size_t)n * v->L1 * sizeof(fl_real));
    if (!means) return FL_ERR_NOMEM;
    fl_status st = posterior_means(e, x, n, (uint32_t)fl_exp_int(&e->eval, "au_samples"), means);
    if (st == FL_OK) {
        fl_mlp_forward(v->dec.m, theta_of(e, v->dec.cx), n, means, v->Lg);
        st = v->lc->mean(v->lik.self, n, theta_of(e, v->lik.cx), v->Lg, out);
        if (st != FL_OK) st = comp_fail("likelihood", v->lik.rec->cls.base.name, st);
    }
    fl_free(means);
    return st;
}

const char *fl_vae_estimator(const fl_experiment *e, uint32_t *k)
{
    *k = e->vae->k;
    return e->vae->est.rec->cls.base.name;
}

uint32_t fl_vae_max_rows(const fl_experiment *e) { return e->vae->Rmax; }

const fl_real *fl_vae_logw(const fl_experiment *e) { return e->vae->logw; }

static fl_status check_detach(fl_experiment *e)
{
    fl_vae *v = e->vae;
    v->detach = (v->ec->flags & FL_EST_DETACH_Q) != 0;
    if (v->detach && (e->stack->n || v->two)) {
        fl_err("%s: [estimator] type = %s detaches the posterior's parameters inside log q, "
               "which flowlab supports for a posterior without flow layers and with one "
               "stochastic layer only (the path derivative through flows needs their inverse "
               "Jacobians); use elbo or iwae here",
               e->cfg->path, v->est.rec->cls.base.name);
        return FL_ERR_INVALID;
    }
    return FL_OK;
}

fl_status fl_vae_use_estimator(fl_experiment *e, const char *type, uint32_t k)
{
    fl_vae *v = e->vae;
    char kb[32];
    snprintf(kb, sizeof kb, "%u", k);
    fl_part_free(&v->est, v->ec ? v->ec->destroy : NULL);
    v->ec = NULL;
    fl_status st = fl_config_put(e->cfg, "estimator", "type", type, 0);
    if (st == FL_OK) st = fl_config_put(e->cfg, "estimator", "k", kb, 0);
    if (st == FL_OK) st = fl_part_prepare(e, FL_KIND_ESTIMATOR, "estimator", type, &v->est);
    if (st != FL_OK) return st;
    v->ec = &v->est.rec->cls.estimator;
    v->k = k;
    fl_estimator_shape es = { v->Rmax, k };
    st = fl_part_created(e, &v->est, v->ec->create(fl_host_table(), v->est.cx, &es, &v->est.self));
    return st == FL_OK ? check_detach(e) : st;
}

fl_status fl_vae_write_result(fl_experiment *e, const char *dir, const fl_vae_result *res,
                              const fl_vae_eval *ev)
{
    fl_vae *v = e->vae;
    fl_buf js = { 0 };
    fl_buf_printf(&js,
                  "{\n  \"task\": \"vae\",\n  \"data\": \"%s\",\n  \"estimator\": \"%s\",\n"
                  "  \"k\": %u,\n  \"train_bound\": %.6f,\n  \"valid_elbo\": %.6f,\n"
                  "  \"valid_iwae\": %.6f,\n  \"valid_k\": %lld,\n  \"steps\": %llu,\n"
                  "  \"train_seconds\": %.3f,\n  \"examples_per_second\": %.1f,\n"
                  "  \"parameters\": %zu",
                  e->data_type, v->est.rec->cls.base.name, v->k, res->train_bound,
                  res->valid_elbo, res->valid_iwae, (long long)fl_exp_int(&e->eval, "valid_k"),
                  (unsigned long long)res->steps, res->seconds, res->examples_per_s,
                  e->arena.count);
    if (ev)
        fl_buf_printf(&js,
                      ",\n  \"test_k\": %llu,\n  \"test_points\": %llu,\n"
                      "  \"test_log_likelihood\": %.6f,\n  \"test_log_likelihood_se\": %.6f,\n"
                      "  \"test_elbo\": %.6f,\n  \"test_kl\": %.6f,\n  \"test_ess\": %.3f,\n"
                      "  \"active_units\": %u,\n  \"eval_seconds\": %.3f",
                      (unsigned long long)ev->k, (unsigned long long)ev->n, ev->ll, ev->ll_se,
                      ev->elbo, ev->kl, ev->ess, ev->active_units, ev->seconds);
    fl_buf_printf(&js, "\n}\n");
    fl_status st = js.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "result.json", js.data, js.len);
    fl_buf_free(&js);
    return st;
}
