/* model.c - the vae task's model: its keys and sections, the assembly of
 * encoder, posterior (and flows), prior, decoder, likelihood and estimator,
 * and its buffers (vae.h comments every one). */
#include "tasks/vae/vae.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/util.h"


/* The vae task's [eval] (besides the host's batch key, its own meaning). */
const fl_key fl_vae_eval_keys[FL_VAE_N_EVAL_KEYS] = {
    { "batch", FL_KEY_INT, "10000", 1, 1 << 24, NULL,
      "samples per evaluation chunk (rows through the decoder at once; bounds memory)" },
    { "k", FL_KEY_INT, "5000", 1, 1 << 24, NULL,
      "importance samples per test point for the log-likelihood estimate (Burda et al.: 5000)" },
    { "valid_k", FL_KEY_INT, "50", 1, 1 << 20, NULL,
      "samples per validation point at each periodic evaluation (ELBO and IWAE-k from the "
      "same samples)" },
    { "valid_n", FL_KEY_INT, "1000", 0, 1e9, NULL,
      "validation points per periodic evaluation (0 = all; which ones: pick)" },
    { "at_end", FL_KEY_BOOL, "true", 0, 0, NULL,
      "run the full evaluation (`flowlab eval`) on the test split after training" },
    { "n", FL_KEY_INT, "0", 0, 1e9, NULL, "test points in the full evaluation (0 = all; which ones: pick)" },
    { "pick", FL_KEY_ENUM, "random", 0, 0, "first|random",
      "which points n and valid_n take: a uniform random subset (the same for every run, "
      "seed and model: keyed by the split's size alone), or the split's first rows" },
    { "au_threshold", FL_KEY_REAL, "0.01", 0, 1e9, NULL,
      "active units: a latent dimension is active when Var_x E_q[z_d|x] exceeds this" },
    { "au_samples", FL_KEY_INT, "100", 1, 1e6, NULL,
      "samples per point for E_q[z|x] when the posterior has flows (else the exact mean)" },
};

const fl_stack *fl_vae_flows(const fl_experiment *e) { return fl_vae_of(e)->flows; }

static const fl_key enc_keys[] = {
    { "latent", FL_KEY_INT, "50", 1, 65536, NULL, "dimension of the latent z this encoder parameterises" },
    { "hidden", FL_KEY_INT_LIST, "200,200", 1, 65536, NULL, "hidden layer widths" },
    { "act", FL_KEY_ENUM, "tanh", 0, 0, "tanh|relu|elu|softplus", "hidden activation" },
    { "init", FL_KEY_ENUM, "glorot", 0, 0, "glorot|fanin",
      "weight init: glorot (uniform, zero biases) or fanin (PyTorch's Linear default)" },
    { "net", FL_KEY_ENUM, "mlp", 0, 0, "mlp|conv",
      "mlp (dense layers) or conv (a convolutional ResNet on image data; keys channels, "
      "blocks, levels, weight_norm)" },
    { "channels", FL_KEY_INT, "32", 1, 4096, NULL, "net = conv: channels of every convolution" },
    { "blocks", FL_KEY_INT, "1", 0, FL_VAE_MAX_BLOCKS, NULL,
      "net = conv: ResNet blocks per resolution level" },
    { "levels", FL_KEY_INT, "2", 0, FL_VAE_MAX_LEVELS, NULL,
      "net = conv: resolution halvings (encoder: 3x3 stride 2; decoder: nearest 2x upsampling)" },
    { "weight_norm", FL_KEY_BOOL, "true", 0, 0, NULL,
      "net = conv: weight normalization of the convolutions (Salimans & Kingma)" },
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
    { "net", FL_KEY_ENUM, "mlp", 0, 0, "mlp|conv",
      "mlp (dense layers) or conv (a convolutional ResNet on image data; keys channels, "
      "blocks, levels, weight_norm)" },
    { "channels", FL_KEY_INT, "32", 1, 4096, NULL, "net = conv: channels of every convolution" },
    { "blocks", FL_KEY_INT, "1", 0, FL_VAE_MAX_BLOCKS, NULL,
      "net = conv: ResNet blocks per resolution level" },
    { "levels", FL_KEY_INT, "2", 0, FL_VAE_MAX_LEVELS, NULL,
      "net = conv: resolution halvings (encoder: 3x3 stride 2; decoder: nearest 2x upsampling)" },
    { "weight_norm", FL_KEY_BOOL, "true", 0, 0, NULL,
      "net = conv: weight normalization of the convolutions (Salimans & Kingma)" },
};
static const fl_key dec2_keys[] = {
    { "hidden", FL_KEY_INT_LIST, "100,100", 1, 65536, NULL, "hidden widths of p(z1|z2)" },
    { "act", FL_KEY_ENUM, "tanh", 0, 0, "tanh|relu|elu|softplus", "hidden activation" },
    { "init", FL_KEY_ENUM, "glorot", 0, 0, "glorot|fanin", "weight init" },
};

const fl_key *fl_vae_section_keys(const char *section, uint32_t *n)
{
    static const struct { const char *name; const fl_key *keys; uint32_t n; } t[] = {
        { "encoder", enc_keys, FL_NTAB(enc_keys) },       { "decoder", dec_keys, FL_NTAB(dec_keys) },
        { "encoder.2", enc2_keys, FL_NTAB(enc2_keys) },   { "decoder.2", dec2_keys, FL_NTAB(dec2_keys) },
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (strcmp(section, t[i].name) == 0) {
            *n = t[i].n;
            return t[i].keys;
        }
    return NULL;
}

static fl_status check_detach(fl_experiment *e);

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
            fl_part_enter(&e->data, "read");
            st = e->dcls->read(e->dself, FL_SPLIT_TRAIN, idx, m, x);
            fl_crash_leave();
            for (uint32_t r = 0; st == FL_OK && r < m; r++)
                for (uint32_t d = 0; d < D; d++) acc[d] += x[(size_t)r * D + d];
        }
    } else if (st == FL_OK) {
        N = 8 * (uint64_t)chunk;
        fl_rng_key key = fl_rng_key_make(e->seed, "data.mean");
        for (uint64_t i = 0; i < N && st == FL_OK; i += chunk) {
            fl_part_enter(&e->data, "draw");
            st = e->dcls->draw(e->dself, FL_SPLIT_TRAIN, key, i, chunk, x);
            fl_crash_leave();
            for (uint32_t r = 0; st == FL_OK && r < chunk; r++)
                for (uint32_t d = 0; d < D; d++) acc[d] += x[(size_t)r * D + d];
        }
    }
    if (st == FL_OK)
        for (uint32_t d = 0; d < D; d++) mean[d] = (fl_real)(acc[d] / (double)(N ? N : 1));
    else if (st != FL_ERR_NOMEM)
        fl_comp_fail(st, "[data] %s", e->data_type);
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

fl_status fl_vae_prepare(fl_experiment *e)
{
    fl_vae *v = calloc(1, sizeof *v);
    if (!v) return FL_ERR_NOMEM;
    e->model = v;
    v->B = e->batch;

    /* The estimator first: its k sizes everything, and it needs no data. */
    fl_status st = fl_part_prepare(e, FL_KIND_ESTIMATOR, "estimator", "elbo", &v->est);
    if (st != FL_OK) return st;
    v->k = (uint32_t)fl_values_get(&v->est.cfg, "k")->i;
    v->ec = &v->est.rec->cls.estimator;
    v->Rmax = v->B * v->k > e->eval_batch ? v->B * v->k : e->eval_batch;
    fl_estimator_shape es = { v->Rmax, v->k };
    return fl_part_created(e, &v->est, v->ec->create(fl_host_table(), v->est.cx, &es, &v->est.self));
}

fl_status fl_vae_build(fl_experiment *e)
{
    fl_vae *v = e->model; /* started by fl_vae_prepare */
    fl_status st;
    v->D = e->info.dim;

    /* Encoder shape: latent and context come from [encoder]. */
    fl_values encv;
    st = fl_values_resolve(e->cfg, "encoder", (const fl_key *const[]){ enc_keys },
                           (const uint32_t[]){ FL_NTAB(enc_keys) }, 1, &encv);
    if (st != FL_OK) return st;
    v->L1 = (uint32_t)fl_values_get(&encv, "latent")->i;
    v->H = (uint32_t)fl_values_get(&encv, "context")->i;
    fl_values_free(&encv);
    v->two = fl_config_section(e->cfg, "encoder.2") || fl_config_section(e->cfg, "decoder.2");
    if (v->two) {
        st = fl_values_resolve(e->cfg, "encoder.2", (const fl_key *const[]){ enc2_keys },
                               (const uint32_t[]){ FL_NTAB(enc2_keys) }, 1, &encv);
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
        fl_part_enter(&v->lik, "init_bias");
        if (st == FL_OK) v->lc->init_bias(v->lik.self, mean, bias);
        fl_crash_leave();
    }
    if (st == FL_OK)
        st = fl_vae_net_make(e, &v->enc, "encoder", enc_keys, FL_NTAB(enc_keys), v->D,
                             v->P1 + v->H, NULL, R, 0);
    if (st == FL_OK)
        st = fl_vae_net_make(e, &v->dec, "decoder", dec_keys, FL_NTAB(dec_keys), v->L1, v->Q,
                             v->lc->init_bias ? bias : NULL, R, 1);
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
        st = fl_vae_net_make(e, &v->enc2, "encoder.2", enc2_keys, FL_NTAB(enc2_keys), v->L1, v->P2,
                             NULL, R, 0);
        if (st == FL_OK)
            st = fl_vae_net_make(e, &v->dec2, "decoder.2", dec2_keys, FL_NTAB(dec2_keys), v->L2,
                                 2 * v->L1, NULL, R, 0);
        if (st != FL_OK) return st;
    }

    /* The posterior's flows, fed the context h. */
    v->flows = fl_stack_new(&e->arena, e->seed, v->L1, v->H, R);
    if (!v->flows) return FL_ERR_NOMEM;
    st = fl_stack_from_config(v->flows, e->reg, e->cfg);
    if (st != FL_OK) return st;
    st = check_detach(e);
    if (st != FL_OK) return st;
    for (size_t i = 0; i < v->flows->n; i++)
        if ((v->flows->L[i].cls->flags & FL_FLOW_BATCH_COUPLED)) {
            fl_err("[%s] %s couples the rows of a batch; posterior flows must treat every "
                   "sample independently",
                   v->flows->L[i].cx->path, v->flows->L[i].cls->base.name);
            return FL_ERR_INVALID;
        }
    if (v->H && v->flows->n == 0)
        fl_log(FL_LOG_WARN, "[encoder] context = %u but the posterior has no flow layers to "
               "use it", v->H);
    /* IAF's Algorithm 1 feeds the encoder's h to every step: a layer that
     * can use it but gets none is most likely a forgotten key. */
    size_t takers = 0, first = 0;
    for (size_t i = v->flows->n; i-- > 0;)
        if (v->flows->L[i].cls->flags & FL_FLOW_ACCEPTS_CONTEXT) {
            takers++;
            first = i;
        }
    if (!v->H && takers)
        fl_log(FL_LOG_WARN, "[%s] %s%s can use a context h from the encoder, but [encoder] "
               "context = 0, so it gets none (IAF feeds h to every step: set [encoder] context, "
               "e.g. 50)", v->flows->L[first].cx->path, v->flows->L[first].cls->base.name,
               takers > 1 ? " (and the other context-taking layers)" : "");

    st = fl_arena_finalize(&e->arena, e->seed);
    if (st == FL_OK) st = fl_stack_ready(v->flows);
    if (st == FL_OK) st = alloc_buffers(v);
    if (st == FL_OK) st = fl_vae_path_setup(e);
    return st;
}

void fl_vae_free(void *model)
{
    fl_vae *v = model;
    if (!v) return;
    fl_vae_path_free(v);
    fl_stack_free(v->flows);
    fl_part_free(&v->est, v->ec ? v->ec->destroy : NULL);
    fl_part_free(&v->post, v->pc ? v->pc->destroy : NULL);
    fl_part_free(&v->lik, v->lc ? v->lc->destroy : NULL);
    fl_part_free(&v->prior, v->prc ? v->prc->destroy : NULL);
    fl_part_free(&v->post2, v->pc2 ? v->pc2->destroy : NULL);
    fl_part_free(&v->lik2, v->lc2 ? v->lc2->destroy : NULL);
    fl_vae_net_free(&v->enc);
    fl_vae_net_free(&v->dec);
    fl_vae_net_free(&v->enc2);
    fl_vae_net_free(&v->dec2);
    fl_real *bufs[] = { v->E, v->dE, v->eps, v->z0, v->lq, v->hrep, v->logdet,
                        v->dz0, v->dh, v->dz, v->dzp, v->Lg, v->dLg, v->lpx, v->lpz, v->logw,
                        v->wp, v->wq, v->ratio, v->neg_wq, v->E2, v->dE2, v->eps2, v->z2,
                        v->lq2, v->G2, v->dG2, v->lpz1, v->dz2, v->dz1b };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) fl_free(bufs[i]);
    fl_free(v->bound);
    free(v);
}

const char *fl_vae_estimator(const fl_experiment *e, uint32_t *k)
{
    *k = fl_vae_of(e)->k;
    return fl_vae_of(e)->est.rec->cls.base.name;
}

uint32_t fl_vae_max_rows(const fl_experiment *e) { return fl_vae_of(e)->Rmax; }

const fl_real *fl_vae_logw(const fl_experiment *e) { return fl_vae_of(e)->logw; }

static fl_status check_detach(fl_experiment *e)
{
    fl_vae *v = fl_vae_of(e);
    v->detach = (v->ec->flags & FL_EST_DETACH_Q) != 0;
    /* Before the arena exists (build) fl_vae_build sets the path up later. */
    return e->arena.theta ? fl_vae_path_setup(e) : FL_OK;
}

fl_status fl_vae_use_estimator(fl_experiment *e, const char *type, uint32_t k)
{
    fl_vae *v = fl_vae_of(e);
    char kb[32];
    snprintf(kb, sizeof kb, "%u", k);
    fl_part_free(&v->est, v->ec ? v->ec->destroy : NULL);
    v->ec = NULL;
    fl_status st = fl_config_put(e->cfg, "estimator", "type", type, 0);
    if (st == FL_OK) st = fl_config_put(e->cfg, "estimator", "k", kb, 0);
    if (st != FL_OK) return st;
    /* Keys of [estimator] that `type` does not declare (another type's: a
     * renyi run's alpha while gradvar tries iwae) are set aside while it is
     * resolved, so that any type can be tried on any run; the run's own
     * type keeps its values. A stable partition: declared keys first. */
    fl_cfg_section *sec = fl_config_section(e->cfg, "estimator");
    const fl_comp_rec *rec = fl_registry_find(e->reg, FL_KIND_ESTIMATOR, type);
    const size_t n_all = sec->n;
    if (rec) {
        fl_cfg_entry *aside = malloc(n_all * sizeof *aside);
        if (!aside) return FL_ERR_NOMEM;
        size_t kept = 0, n_aside = 0;
        for (size_t i = 0; i < n_all; i++) {
            const char *key = sec->e[i].key;
            int declared = strcmp(key, "type") == 0 || strcmp(key, "k") == 0;
            for (uint32_t j = 0; j < rec->cls.base.n_keys && !declared; j++)
                declared = strcmp(key, rec->cls.base.keys[j].name) == 0;
            if (declared) sec->e[kept++] = sec->e[i];
            else aside[n_aside++] = sec->e[i];
        }
        memcpy(sec->e + kept, aside, n_aside * sizeof *aside);
        free(aside);
        sec->n = kept;
    }
    st = fl_part_prepare(e, FL_KIND_ESTIMATOR, "estimator", type, &v->est);
    sec->n = n_all;
    if (st != FL_OK) return st;
    v->ec = &v->est.rec->cls.estimator;
    v->k = k;
    fl_estimator_shape es = { v->Rmax, k };
    st = fl_part_created(e, &v->est, v->ec->create(fl_host_table(), v->est.cx, &es, &v->est.self));
    return st == FL_OK ? check_detach(e) : st;
}

