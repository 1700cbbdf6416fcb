/* coupling.c - Real NVP affine coupling (Dinh et al. 2017) and NICE
 * additive coupling (Dinh et al. 2015).
 *
 *   y_c = x_c,   y_t = x_t * exp(s(x_c, h)) + t(x_c, h),   logdet = sum s
 *   additive:    y_t = x_t + t(x_c, h),                    logdet = 0
 *
 * x_c are the conditioning coordinates, x_t the transformed ones, chosen by
 * a mask that alternates with the layer's position in its repeat group.
 * s and t come from MLPs (host service); s is soft-bounded,
 * s = b * tanh(raw / b), so exp(s) stays in [e^-b, e^b]. Both directions
 * are one parallel pass. Element-wise work uses flowlab/vmath.h (the
 * float build's exp and tanh are inline and vectorise). */
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/flowlab.h>
#include <flowlab/vmath.h>

enum { MASK_ALTERNATE, MASK_CHECKERBOARD, MASK_RANDOM };
enum { NET_SEPARATE, NET_SHARED };

typedef struct coupling {
    const fl_host *h;
    uint32_t dim, ctx_dim, dc, dt, in;
    uint32_t *cond, *trans;     /* coordinate indices */
    double bound;
    int shared;
    int additive;               /* NICE: no s network, s = 0 */
    fl_mlp *snet, *tnet;        /* tnet == NULL when shared; snet == NULL when additive */
    fl_real *cin;               /* n x in: conditioner input */
    fl_real *dcin;              /* n x in */
    fl_real *dcin_t;            /* n x in: the t net's share, summed after */
    fl_real *st;                /* n x 2dt: raw net outputs (shared: s | t per row;
                                   separate: raw s (n x dt) then t (n x dt)) */
    fl_real *s;                 /* n x dt: bounded s, cached for backward */
    fl_real *dst;               /* n x 2dt: gradients of raw outputs, laid out as st */
    const fl_real *tout;        /* t of the last conditioner call, row stride ldt */
    size_t ldt;
} coupling;

static const fl_key keys[] = {
    { "hidden", FL_KEY_INT_LIST, "64,64", 1, 1 << 20, NULL,
      "hidden widths of the s and t networks" },
    { "activation", FL_KEY_ENUM, "relu", 0, 0, "relu|tanh|elu|softplus", "hidden activation" },
    { "mask", FL_KEY_ENUM, "alternate", 0, 0, "alternate|checkerboard|random",
      "conditioning split: halves swapping each layer, even/odd coordinates, or a seeded "
      "random half" },
    { "net", FL_KEY_ENUM, "separate", 0, 0, "separate|shared",
      "separate s and t networks, or one network with both outputs" },
    { "scale_bound", FL_KEY_REAL, "1", 0, 1e6, NULL,
      "s = b*tanh(raw/b) keeps the log-scale in [-b, b]; 0 = unbounded" },
    { "init", FL_KEY_ENUM, "fanin", 0, 0, "fanin|glorot",
      "network init: fanin = weights and biases U(+-1/sqrt(fan_in)) (PyTorch's default), "
      "glorot = Glorot-uniform weights, zero biases" },
    { "zero_init", FL_KEY_BOOL, "true", 0, 0, NULL,
      "start the networks' last layers at zero, so the layer starts as the identity" },
};

/* The additive layer has no scale: no 'net' or 'scale_bound'. */
static const fl_key additive_keys[] = {
    { "hidden", FL_KEY_INT_LIST, "64,64", 1, 1 << 20, NULL, "hidden widths of the t network" },
    { "activation", FL_KEY_ENUM, "relu", 0, 0, "relu|tanh|elu|softplus", "hidden activation" },
    { "mask", FL_KEY_ENUM, "alternate", 0, 0, "alternate|checkerboard|random",
      "conditioning split: halves swapping each layer, even/odd coordinates, or a seeded "
      "random half" },
    { "init", FL_KEY_ENUM, "fanin", 0, 0, "fanin|glorot",
      "network init: fanin = weights and biases U(+-1/sqrt(fan_in)) (PyTorch's default), "
      "glorot = Glorot-uniform weights, zero biases" },
    { "zero_init", FL_KEY_BOOL, "true", 0, 0, NULL,
      "start the network's last layer at zero, so the layer starts as the identity" },
};

static void destroy(void *self)
{
    coupling *c = self;
    if (!c) return;
    free(c->cond);
    free(c->trans);
    free(c);
}

static fl_act act_of(int64_t i)
{
    static const fl_act a[] = { FL_ACT_RELU, FL_ACT_TANH, FL_ACT_ELU, FL_ACT_SOFTPLUS };
    return a[i];
}

static fl_status create_any(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, int additive,
                            void **self)
{
    if (sh->dim < 2) {
        h->error(cx, "coupling needs dim >= 2 (got %u)", sh->dim);
        return FL_ERR_INVALID;
    }
    coupling *c = calloc(1, sizeof *c);
    if (!c) return FL_ERR_NOMEM;
    c->h = h;
    c->dim = sh->dim;
    c->ctx_dim = sh->context_dim;
    c->additive = additive;
    c->bound = additive ? 0 : h->cfg_real(cx, "scale_bound");
    c->shared = !additive && h->cfg_int(cx, "net") == NET_SHARED;
    c->cond = calloc(sh->dim, sizeof *c->cond);
    c->trans = calloc(sh->dim, sizeof *c->trans);
    uint32_t *perm = calloc(sh->dim, sizeof *perm);
    if (!c->cond || !c->trans || !perm) {
        free(perm);
        destroy(c);
        return FL_ERR_NOMEM;
    }
    uint32_t D = sh->dim, half = D / 2, odd = sh->index & 1;
    switch (h->cfg_int(cx, "mask")) {
    case MASK_ALTERNATE:
        /* Even layers condition on [0, half); odd ones on [half, D). */
        for (uint32_t j = 0; j < D; j++)
            perm[j] = !odd ? j : j < D - half ? j + half : j - (D - half);
        c->dc = odd ? D - half : half;
        break;
    case MASK_CHECKERBOARD: {
        uint32_t k = 0;
        for (uint32_t j = 0; j < D; j++)
            if ((j + odd) % 2 == 0) perm[k++] = j;
        c->dc = k;
        for (uint32_t j = 0; j < D; j++)
            if ((j + odd) % 2 == 1) perm[k++] = j;
        break;
    }
    default: { /* seeded random half: Fisher-Yates from this layer's stream */
        fl_rng_key key = h->rng_key(cx, "mask");
        for (uint32_t j = 0; j < D; j++) perm[j] = j;
        for (uint32_t j = D - 1; j > 0; j--) {
            fl_real u;
            fl_rng_uniform(key, 0, j, 1, &u);
            uint32_t k = (uint32_t)(u * (fl_real)(j + 1));
            if (k > j) k = j;
            uint32_t t = perm[j];
            perm[j] = perm[k];
            perm[k] = t;
        }
        c->dc = half;
        break;
    }
    }
    c->dt = D - c->dc;
    for (uint32_t j = 0; j < c->dc; j++) c->cond[j] = perm[j];
    for (uint32_t j = 0; j < c->dt; j++) c->trans[j] = perm[c->dc + j];
    free(perm);

    int64_t hid[64];
    size_t nh = h->cfg_int_list(cx, "hidden", hid, 64);
    if (nh > 64) {
        h->error(cx, "at most 64 hidden layers (got %zu)", nh);
        destroy(c);
        return FL_ERR_INVALID;
    }
    uint32_t hw[64];
    for (size_t i = 0; i < nh; i++) hw[i] = (uint32_t)hid[i];
    c->in = c->dc + c->ctx_dim;
    int zero = h->cfg_bool(cx, "zero_init");
    fl_mlp_spec spec = { "s", c->in, c->shared ? 2 * c->dt : c->dt, (uint32_t)nh, hw,
                         act_of(h->cfg_int(cx, "activation")),
                         h->cfg_int(cx, "init") == 0 ? FL_INIT_FANIN : FL_INIT_GLOROT,
                         zero ? FL_INIT_ZERO : FL_INIT_FANIN, NULL, NULL };
    uint32_t rows = sh->max_rows;
    if (!additive) c->snet = h->mlp_create(cx, &spec, rows);
    if ((additive || c->snet) && !c->shared) {
        spec.name = "t";
        c->tnet = h->mlp_create(cx, &spec, rows);
    }
    size_t R = rows, fs = sizeof(fl_real);
    c->cin = h->workspace(cx, R * c->in * fs);
    c->dcin = h->workspace(cx, R * c->in * fs);
    c->dcin_t = h->workspace(cx, R * c->in * fs);
    c->st = h->workspace(cx, R * 2 * c->dt * fs);
    c->s = h->workspace(cx, R * c->dt * fs);
    c->dst = h->workspace(cx, R * 2 * c->dt * fs);
    if (!c->dst) {
        destroy(c);
        return FL_ERR_NOMEM;
    }
    if ((!additive && !c->snet) || (!c->shared && !c->tnet) || !c->cin || !c->dcin || !c->dcin_t || !c->st || !c->s || !c->dst) {
        destroy(c);
        return FL_ERR_NOMEM;
    }
    *self = c;
    return FL_OK;
}

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    return create_any(h, cx, sh, 0, self);
}

static fl_status create_additive(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh,
                                 void **self)
{
    return create_any(h, cx, sh, 1, self);
}

/* Conditioner input rows [x_c | h]. */
static void gather(const coupling *c, uint32_t n, const fl_real *x, const fl_real *ctx)
{
    for (uint32_t r = 0; r < n; r++) {
        fl_real *dst = c->cin + (size_t)r * c->in;
        const fl_real *xr = x + (size_t)r * c->dim;
        for (uint32_t j = 0; j < c->dc; j++) dst[j] = xr[c->cond[j]];
        if (c->ctx_dim) memcpy(dst + c->dc, ctx + (size_t)r * c->ctx_dim, c->ctx_dim * sizeof *dst);
    }
}

/* Runs the nets on cin; leaves t in c->tout (row stride c->ldt) and the
 * bounded s in c->s (zero for the additive layer). */
static void conditioner(coupling *c, const fl_real *theta, uint32_t n)
{
    const uint32_t dt = c->dt;
    const fl_real *sraw;
    size_t lds;
    if (c->additive) {
        c->h->mlp_forward(c->tnet, theta, n, c->cin, c->st);
        memset(c->s, 0, (size_t)n * dt * sizeof(fl_real));
        c->tout = c->st;
        c->ldt = dt;
        return;
    } else if (c->shared) {
        c->h->mlp_forward(c->snet, theta, n, c->cin, c->st);
        sraw = c->st;
        lds = 2 * (size_t)dt;
        c->tout = c->st + dt;
        c->ldt = 2 * (size_t)dt;
    } else {
        /* The two nets are independent: one thread each (their own work
         * then runs serially inside), which beats splitting small products. */
        fl_real *s_out = c->st, *t_out = c->st + (size_t)n * dt;
#pragma omp parallel sections if (n >= 64)
        {
#pragma omp section
            c->h->mlp_forward(c->snet, theta, n, c->cin, s_out);
#pragma omp section
            c->h->mlp_forward(c->tnet, theta, n, c->cin, t_out);
        }
        sraw = s_out;
        lds = dt;
        c->tout = t_out;
        c->ldt = dt;
    }
    const fl_real b = (fl_real)c->bound;
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *restrict raw = sraw + r * lds;
        fl_real *restrict s = c->s + (size_t)r * dt;
        if (b > 0)
            for (uint32_t j = 0; j < dt; j++) s[j] = b * fl_tanh(raw[j] / b);
        else
            for (uint32_t j = 0; j < dt; j++) s[j] = raw[j];
    }
}

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    coupling *c = self;
    gather(c, a->n, a->x, a->c);
    conditioner(c, a->theta, a->n);
    const uint32_t D = c->dim, dt = c->dt;
    for (uint32_t r = 0; r < a->n; r++) {
        const fl_real *x = a->x + (size_t)r * D, *s = c->s + (size_t)r * dt;
        const fl_real *t = c->tout + r * c->ldt;
        fl_real *y = a->y + (size_t)r * D, ld = 0;
        for (uint32_t j = 0; j < c->dc; j++) y[c->cond[j]] = x[c->cond[j]];
        for (uint32_t j = 0; j < dt; j++) {
            uint32_t k = c->trans[j];
            y[k] = x[k] * fl_exp(s[j]) + t[j];
            ld += s[j];
        }
        a->logdet[r] += ld;
    }
    return FL_OK;
}

static fl_status backward(void *self, const fl_flow_bwd *a)
{
    coupling *c = self;
    const uint32_t D = c->dim, dt = c->dt, n = a->n;
    const fl_real b = (fl_real)c->bound;
    /* d(raw s) and d(t) for every row, written where the nets' backward
     * reads them: one n x 2dt matrix (s | t) for the shared net, else two
     * n x dt blocks. Identity part of dx. */
    fl_real *ds = c->dst, *dtt = c->shared ? c->dst + dt : c->dst + (size_t)n * dt;
    const size_t ldd = c->shared ? 2 * (size_t)dt : dt;
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *x = a->x + (size_t)r * D, *dy = a->dy + (size_t)r * D;
        const fl_real *s = c->s + (size_t)r * dt;
        fl_real *dx = a->dx + (size_t)r * D, dl = a->dlogdet[r];
        fl_real *dsr = ds + r * ldd, *dtr = dtt + r * ldd;
        for (uint32_t j = 0; j < c->dc; j++) dx[c->cond[j]] += dy[c->cond[j]];
        for (uint32_t j = 0; j < dt; j++) {
            uint32_t k = c->trans[j];
            fl_real e = fl_exp(s[j]);
            dx[k] += dy[k] * e;
            fl_real g = dy[k] * x[k] * e + dl;
            if (b > 0) g *= 1 - (s[j] / b) * (s[j] / b);
            if (!c->additive) dsr[j] = g;
            dtr[j] = dy[k];
        }
    }
    memset(c->dcin, 0, (size_t)n * c->in * sizeof(fl_real));
    if (c->additive) {
        c->h->mlp_backward(c->tnet, a->theta, a->dtheta, n, dtt, c->dcin);
    } else if (c->shared) {
        c->h->mlp_backward(c->snet, a->theta, a->dtheta, n, c->dst, c->dcin);
    } else {
        memset(c->dcin_t, 0, (size_t)n * c->in * sizeof(fl_real));
#pragma omp parallel sections if (n >= 64)
        {
#pragma omp section
            c->h->mlp_backward(c->snet, a->theta, a->dtheta, n, ds, c->dcin);
#pragma omp section
            c->h->mlp_backward(c->tnet, a->theta, a->dtheta, n, dtt, c->dcin_t);
        }
        fl_real *restrict g = c->dcin;
        const fl_real *restrict gt = c->dcin_t;
        for (size_t i = 0; i < (size_t)n * c->in; i++) g[i] += gt[i];
    }
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *g = c->dcin + (size_t)r * c->in;
        fl_real *dx = a->dx + (size_t)r * D;
        for (uint32_t j = 0; j < c->dc; j++) dx[c->cond[j]] += g[j];
        if (a->dc && c->ctx_dim) {
            fl_real *dc = a->dc + (size_t)r * c->ctx_dim;
            for (uint32_t j = 0; j < c->ctx_dim; j++) dc[j] += g[c->dc + j];
        }
    }
    return FL_OK;
}

static fl_status inverse(void *self, const fl_flow_inv *a)
{
    coupling *c = self;
    gather(c, a->n, a->y, a->c);
    conditioner(c, a->theta, a->n);
    const uint32_t D = c->dim, dt = c->dt;
    for (uint32_t r = 0; r < a->n; r++) {
        const fl_real *y = a->y + (size_t)r * D, *s = c->s + (size_t)r * dt;
        const fl_real *t = c->tout + r * c->ldt;
        fl_real *x = a->x + (size_t)r * D, ld = 0;
        for (uint32_t j = 0; j < c->dc; j++) x[c->cond[j]] = y[c->cond[j]];
        for (uint32_t j = 0; j < dt; j++) {
            uint32_t k = c->trans[j];
            x[k] = (y[k] - t[j]) * fl_exp(-s[j]);
            ld -= s[j];
        }
        if (a->logdet) a->logdet[r] += ld;
    }
    return FL_OK;
}

static const fl_flow_class affine_coupling = {
    .base = { sizeof(fl_flow_class), "affine-coupling",
              "Real NVP affine coupling: y_t = x_t*exp(s(x_c,h)) + t(x_c,h)", keys,
              sizeof keys / sizeof keys[0] },
    .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE |
             FL_FLOW_ACCEPTS_CONTEXT,
    .create = create,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
};

static const fl_flow_class additive_coupling = {
    .base = { sizeof(fl_flow_class), "additive-coupling",
              "NICE additive coupling: y_t = x_t + t(x_c,h), volume-preserving", additive_keys,
              sizeof additive_keys / sizeof additive_keys[0] },
    .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE |
             FL_FLOW_ACCEPTS_CONTEXT,
    .create = create_additive,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_FLOW, &affine_coupling.base);
    return st == FL_OK ? r->add(r, FL_KIND_FLOW, &additive_coupling.base) : st;
}

FL_PLUGIN("flows-coupling", "1.0.0", init)
