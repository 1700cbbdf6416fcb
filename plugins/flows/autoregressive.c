/* autoregressive.c - MADE-based autoregressive flows: IAF (Kingma et al.
 * 2016) and MAF (Papamakarios et al. 2017).
 *
 *   [m, s] = MADE([a, h]),  m_k and s_k depend on a_j only for j before k
 *   iaf (gated):  z' = sigma(s)*z + (1 - sigma(s))*m,  logdet = sum log sigma(s)
 *   iaf (affine): z' = m + exp(s)*z,                    logdet = sum s
 *   maf:          u  = (x - m)*exp(-s),                 logdet = -sum s
 *
 * The MADE (Germain et al. 2015) is the host MLP with masks, so each layer
 * stays one GEMM over all rows. Degrees: variable order[i] has degree i+1,
 * context inputs degree 0 (they reach every hidden unit), hidden units
 * degrees in [lo, dim-1]; a hidden unit sees the previous layer's units of
 * degree <= its own, an output of variable k sees units of degree < k's.
 * The forward direction is one parallel pass; the inverse needs dim
 * sequential passes, each fixing one more variable in order.
 *
 * s is soft-bounded by default (scale_bound): unbounded, exp(s) overflows
 * at large inputs, and in the sequential inverse each variable's scale is
 * driven by the already amplified earlier ones. */
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/flowlab.h>

enum { ORDER_NATURAL, ORDER_REVERSED, ORDER_RANDOM };
enum { GATE_GATED, GATE_AFFINE };
/* The element-wise transform of the forward direction. */
enum { T_MAF, T_IAF_GATED, T_IAF_AFFINE };

typedef struct ar {
    const fl_host *h;
    uint32_t dim, ctx_dim, in;  /* in = dim + ctx_dim */
    int kind;                   /* T_* */
    fl_real bound;              /* soft bound on s (bound_s); 0 = unbounded */
    uint32_t *order;            /* order[i] = the variable of degree i+1 */
    fl_mlp *made;
    fl_real *xin;               /* n x in: MADE input [a | h] */
    fl_real *out;               /* n x 2dim: [m | s], s bounded in place */
    fl_real *dout;              /* n x 2dim: d[m | raw s] */
    fl_real *din;               /* n x in */
} ar;

#define COMMON_KEYS                                                                          \
    { "hidden", FL_KEY_INT_LIST, "64,64", 1, 1 << 20, NULL,                                  \
      "hidden widths of the MADE; widths below dim-1 leave some dependencies out" },         \
    { "activation", FL_KEY_ENUM, "relu", 0, 0, "relu|tanh|elu", "hidden activation" },       \
    { "order", FL_KEY_ENUM, "natural", 0, 0, "natural|reversed|random",                     \
      "variable order of the MADE: 0..dim-1, dim-1..0, or a seeded random permutation "      \
      "(random also draws the hidden degrees)" },                                            \
    { "init", FL_KEY_ENUM, "glorot", 0, 0, "fanin|glorot",                                   \
      "MADE init: glorot = Glorot-uniform weights, zero biases; fanin = weights and "        \
      "biases U(+-1/sqrt(fan_in)) (PyTorch's default)" },                                    \
    { "zero_init", FL_KEY_BOOL, "false", 0, 0, NULL,                                         \
      "start the MADE's output layer at zero (m = 0, s = its initial bias)" }

static const fl_key iaf_keys[] = {
    COMMON_KEYS,
    { "gate", FL_KEY_ENUM, "gated", 0, 0, "gated|affine",
      "gated: z' = sigma(s)*z + (1-sigma(s))*m (the paper's LSTM-like update); "
      "affine: z' = m + exp(s)*z" },
    { "forget_bias", FL_KEY_REAL, "1.5", -20, 20, NULL,
      "initial bias of the s outputs when gated, so sigma starts near sigmoid(1.5) = 0.82" },
    { "scale_bound", FL_KEY_REAL, "3", 0, 1e6, NULL,
      "gated: s = -b + softplus(raw + b), so sigma >= sigmoid(-b); affine: s = b*tanh(raw/b); "
      "keeps the sequential inverse finite and well conditioned; 0 = unbounded" },
};

static const fl_key maf_keys[] = {
    COMMON_KEYS,
    { "scale_bound", FL_KEY_REAL, "3", 0, 1e6, NULL,
      "s = b*tanh(raw/b) keeps the log-scale in [-b, b], so exp(-s) cannot overflow and the "
      "sequential inverse stays finite; 0 = unbounded" },
};

static void destroy(void *self)
{
    ar *f = self;
    if (!f) return;
    free(f->order);
    free(f);
}

static fl_act act_of(int64_t i)
{
    static const fl_act a[] = { FL_ACT_RELU, FL_ACT_TANH, FL_ACT_ELU };
    return a[i];
}

/* Seeded Fisher-Yates, drawing number j of `key` for step j (as permute.c). */
static void shuffle(fl_rng_key key, uint32_t *p, uint32_t n)
{
    for (uint32_t j = n - 1; n > 1 && j > 0; j--) {
        fl_real u;
        fl_rng_uniform(key, 0, j, 1, &u);
        uint32_t k = (uint32_t)(u * (fl_real)(j + 1));
        if (k > j) k = j;
        uint32_t t = p[j];
        p[j] = p[k];
        p[k] = t;
    }
}

/* Builds the n_hidden+1 masks into one block (caller frees *block).
 * Hidden degrees live in [lo, dim-1]: lo = 1 without context (degree-0
 * units would see nothing), lo = 0 with context, so the first variable's
 * m and s can still depend on h. dim 1 without context has an empty range:
 * its hidden units get degree 0 and see no input, so m and s are learned
 * constants (the output of degree 1 sees all of them). */
static fl_status build_masks(const fl_host *h, fl_ctx *cx, const ar *f, int random,
                             uint32_t nh, const uint32_t *hw, uint8_t **block,
                             const uint8_t **masks)
{
    uint32_t D = f->dim, maxw = f->in;
    size_t total = 0;
    for (uint32_t l = 0; l <= nh; l++) {
        uint32_t fi = l ? hw[l - 1] : f->in, fo = l < nh ? hw[l] : 2 * D;
        total += (size_t)fi * fo;
        if (fo > maxw) maxw = fo;
    }
    uint8_t *mk = malloc(total ? total : 1);
    uint32_t *prev = malloc(maxw * sizeof *prev), *cur = malloc(maxw * sizeof *cur);
    if (!mk || !prev || !cur) {
        free(mk);
        free(prev);
        free(cur);
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    /* Input degrees: variable order[i] has degree i+1, context 0. */
    for (uint32_t i = 0; i < D; i++) prev[f->order[i]] = i + 1;
    for (uint32_t j = D; j < f->in; j++) prev[j] = 0;
    uint32_t hi = D - 1, lo = f->ctx_dim ? 0 : 1;
    if (lo > hi) lo = hi; /* dim 1, no context */
    uint32_t pmin = f->ctx_dim ? 0 : 1, pw = f->in; /* smallest degree of the layer below */
    fl_rng_key key = h->rng_key(cx, "degrees");
    uint64_t drawn = 0;
    size_t off = 0;
    for (uint32_t l = 0; l <= nh; l++) {
        uint32_t fo = l < nh ? hw[l] : 2 * D, cmin = hi;
        if (l < nh) {
            for (uint32_t j = 0; j < fo; j++) {
                if (random) {
                    /* MADE's rule: at least the previous layer's smallest
                     * degree, so no unit is cut off from every input. */
                    uint32_t a = pmin > lo ? pmin : lo;
                    if (a > hi) a = hi;
                    fl_real u;
                    fl_rng_uniform(key, l, drawn++, 1, &u);
                    uint32_t d = a + (uint32_t)(u * (fl_real)(hi - a + 1));
                    cur[j] = d > hi ? hi : d;
                } else {
                    cur[j] = lo + j % (hi - lo + 1);
                }
                if (cur[j] < cmin) cmin = cur[j];
            }
        } else {
            /* Outputs m_k (column k) and s_k (column D+k): k's degree. */
            for (uint32_t i = 0; i < D; i++) cur[f->order[i]] = cur[D + f->order[i]] = i + 1;
        }
        uint8_t *m = mk + off;
        for (uint32_t i = 0; i < pw; i++)
            for (uint32_t j = 0; j < fo; j++)
                m[(size_t)i * fo + j] = l < nh ? cur[j] >= prev[i] : cur[j] > prev[i];
        masks[l] = m;
        off += (size_t)pw * fo;
        memcpy(prev, cur, fo * sizeof *cur);
        pw = fo;
        pmin = cmin;
    }
    free(prev);
    free(cur);
    *block = mk;
    return FL_OK;
}

static fl_status create_any(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, int iaf,
                            void **self)
{
    if (sh->dim < 1) {
        h->error(cx, "needs dim >= 1");
        return FL_ERR_INVALID;
    }
    ar *f = calloc(1, sizeof *f);
    if (!f) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    f->h = h;
    f->dim = sh->dim;
    f->ctx_dim = sh->context_dim;
    f->in = f->dim + f->ctx_dim;
    uint32_t D = f->dim;
    int gated = iaf && h->cfg_int(cx, "gate") == GATE_GATED;
    f->kind = !iaf ? T_MAF : gated ? T_IAF_GATED : T_IAF_AFFINE;
    f->bound = (fl_real)h->cfg_real(cx, "scale_bound");
    f->order = malloc(D * sizeof *f->order);
    if (!f->order) {
        destroy(f);
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    int64_t ord = h->cfg_int(cx, "order");
    for (uint32_t i = 0; i < D; i++) f->order[i] = ord == ORDER_REVERSED ? D - 1 - i : i;
    if (ord == ORDER_RANDOM) shuffle(h->rng_key(cx, "order"), f->order, D);

    int64_t hid[64];
    size_t nh = h->cfg_int_list(cx, "hidden", hid, 64);
    if (nh > 64) {
        h->error(cx, "at most 64 hidden layers (got %zu)", nh);
        destroy(f);
        return FL_ERR_INVALID;
    }
    uint32_t hw[64];
    /* Fewer units than hidden degrees leaves some degrees out, and with
     * them some dependencies. (h->log) is parenthesised because <tgmath.h>
     * defines a function-like macro `log`. */
    uint32_t ndeg = f->ctx_dim ? D : D - 1;
    for (size_t i = 0; i < nh; i++) {
        hw[i] = (uint32_t)hid[i];
        if (D > 1 && hw[i] < ndeg)
            (h->log)(cx, FL_LOG_WARN,
                     "hidden width %u < %u hidden degrees: some dependencies are left out",
                     hw[i], ndeg);
    }

    const uint8_t *masks[65];
    uint8_t *block = NULL;
    fl_status st = build_masks(h, cx, f, ord == ORDER_RANDOM, (uint32_t)nh, hw, &block, masks);
    if (st != FL_OK) {
        destroy(f);
        return st;
    }
    /* IAF: m starts at 0 and s at the forget-gate bias (gated) or 0, the
     * paper's initialisation; MAF leaves the output biases to `init`. */
    fl_real *bias = NULL;
    if (iaf) {
        bias = calloc(2 * D, sizeof *bias);
        if (!bias) {
            free(block);
            destroy(f);
            h->error(cx, "out of memory");
            return FL_ERR_NOMEM;
        }
        for (uint32_t k = 0; k < D; k++)
            bias[D + k] = gated ? (fl_real)h->cfg_real(cx, "forget_bias") : 0;
    }
    fl_init init = h->cfg_int(cx, "init") == 0 ? FL_INIT_FANIN : FL_INIT_GLOROT;
    fl_mlp_spec spec = { "made", f->in, 2 * D, (uint32_t)nh, hw,
                         act_of(h->cfg_int(cx, "activation")), init,
                         h->cfg_bool(cx, "zero_init") ? FL_INIT_ZERO : init, masks, bias };
    uint32_t rows = sh->max_rows ? sh->max_rows : 1;
    f->made = h->mlp_create(cx, &spec, rows);
    free(block); /* the host copied masks and biases */
    free(bias);
    if (!f->made) {
        destroy(f);
        return FL_ERR_INVALID;
    }
    size_t R = rows, fs = sizeof(fl_real);
    f->xin = h->workspace(cx, R * f->in * fs);
    f->out = h->workspace(cx, R * 2 * D * fs);
    f->dout = h->workspace(cx, R * 2 * D * fs);
    f->din = h->workspace(cx, R * f->in * fs);
    if (!f->xin || !f->out || !f->dout || !f->din) {
        destroy(f);
        h->error(cx, "out of memory for workspaces");
        return FL_ERR_NOMEM;
    }
    *self = f;
    return FL_OK;
}

static fl_status create_iaf(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    return create_any(h, cx, sh, 1, self);
}

static fl_status create_maf(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    return create_any(h, cx, sh, 0, self);
}

/* MADE input rows [a | h]. */
static void gather(ar *f, uint32_t n, const fl_real *a, const fl_real *c)
{
    for (uint32_t r = 0; r < n; r++) {
        fl_real *dst = f->xin + (size_t)r * f->in;
        if (a) memcpy(dst, a + (size_t)r * f->dim, f->dim * sizeof *dst);
        else memset(dst, 0, f->dim * sizeof *dst);
        if (f->ctx_dim) memcpy(dst + f->dim, c + (size_t)r * f->ctx_dim, f->ctx_dim * sizeof *dst);
    }
}

/* Bounded log-scale. Affine forms: s = b*tanh(raw/b) in [-b, b]. Gated:
 * only sigma -> 0 hurts (the inverse divides by sigma), so a one-sided
 * soft floor s = -b + softplus(raw + b) >= -b leaves sigma free up to 1
 * and the forget bias nearly intact. */
static fl_real bound_s(int kind, fl_real b, fl_real raw)
{
    if (kind != T_IAF_GATED) return b * tanh(raw / b);
    fl_real t = raw + b;
    return -b + (t > 0 ? t + log1p(exp(-t)) : log1p(exp(t)));
}

/* ds/draw of bound_s, written in terms of the bounded s. */
static fl_real bound_grad(int kind, fl_real b, fl_real s)
{
    if (kind != T_IAF_GATED) return 1 - (s / b) * (s / b);
    return -expm1(-(s + b)); /* sigmoid(raw + b) = 1 - exp(-softplus(raw + b)) */
}

/* One MADE pass over xin; bounds s in place so out holds [m | s]. */
static void made(ar *f, const fl_real *theta, uint32_t n)
{
    f->h->mlp_forward(f->made, theta, n, f->xin, f->out);
    if (f->bound > 0) {
        const fl_real b = f->bound;
        for (uint32_t r = 0; r < n; r++) {
            fl_real *s = f->out + (size_t)r * 2 * f->dim + f->dim;
            for (uint32_t k = 0; k < f->dim; k++) s[k] = bound_s(f->kind, b, s[k]);
        }
    }
}

/* sigmoid(s) and log sigmoid(s) without overflow for large |s|. */
static fl_real sigm(fl_real s)
{
    if (s >= 0) return 1 / (1 + exp(-s));
    fl_real e = exp(s);
    return e / (1 + e);
}

static fl_real log_sigm(fl_real s) { return s >= 0 ? -log1p(exp(-s)) : s - log1p(exp(s)); }

/* Forward direction, element-wise: b = T(a; m, s); returns log|db/da|. */
static fl_real fwd_elem(int kind, fl_real a, fl_real m, fl_real s, fl_real *b)
{
    switch (kind) {
    case T_MAF:
        *b = (a - m) * exp(-s);
        return -s;
    case T_IAF_GATED: {
        fl_real g = sigm(s);
        *b = g * a + sigm(-s) * m; /* 1 - sigma as sigmoid(-s): no cancellation */
        return log_sigm(s);
    }
    default:
        *b = m + exp(s) * a;
        return s;
    }
}

/* Inverse of fwd_elem: a from b; returns log|da/db|. */
static fl_real inv_elem(int kind, fl_real b, fl_real m, fl_real s, fl_real *a)
{
    switch (kind) {
    case T_MAF:
        *a = b * exp(s) + m;
        return s;
    case T_IAF_GATED:
        *a = (b - sigm(-s) * m) / sigm(s);
        return -log_sigm(s);
    default:
        *a = (b - m) * exp(-s);
        return -s;
    }
}

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    ar *f = self;
    const uint32_t D = f->dim;
    gather(f, a->n, a->x, a->c);
    made(f, a->theta, a->n);
    for (uint32_t r = 0; r < a->n; r++) {
        const fl_real *x = a->x + (size_t)r * D, *m = f->out + (size_t)r * 2 * D, *s = m + D;
        fl_real *y = a->y + (size_t)r * D, ld = 0;
        for (uint32_t k = 0; k < D; k++) ld += fwd_elem(f->kind, x[k], m[k], s[k], &y[k]);
        a->logdet[r] += ld;
    }
    return FL_OK;
}

/* Direct terms of y_k = T(x_k; m_k, s_k) and logdet, then the MADE's
 * vector-Jacobian product for the indirect ones through m and s. */
static fl_status backward(void *self, const fl_flow_bwd *a)
{
    ar *f = self;
    const uint32_t D = f->dim, n = a->n;
    const fl_real b = f->bound;
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *x = a->x + (size_t)r * D, *dy = a->dy + (size_t)r * D;
        const fl_real *m = f->out + (size_t)r * 2 * D, *s = m + D;
        fl_real *dx = a->dx + (size_t)r * D, *dm = f->dout + (size_t)r * 2 * D, *ds = dm + D;
        const fl_real dl = a->dlogdet[r];
        for (uint32_t k = 0; k < D; k++) {
            switch (f->kind) {
            case T_MAF: {
                fl_real e = exp(-s[k]), u = (x[k] - m[k]) * e;
                dx[k] += dy[k] * e;
                dm[k] = -dy[k] * e;
                ds[k] = -dy[k] * u - dl;
                break;
            }
            case T_IAF_GATED: {
                fl_real g = sigm(s[k]), g1 = sigm(-s[k]);
                dx[k] += dy[k] * g;
                dm[k] = dy[k] * g1;
                ds[k] = dy[k] * g * g1 * (x[k] - m[k]) + dl * g1;
                break;
            }
            default: {
                fl_real e = exp(s[k]);
                dx[k] += dy[k] * e;
                dm[k] = dy[k];
                ds[k] = dy[k] * e * x[k] + dl;
                break;
            }
            }
            if (b > 0) ds[k] *= bound_grad(f->kind, b, s[k]);
        }
    }
    memset(f->din, 0, (size_t)n * f->in * sizeof(fl_real));
    f->h->mlp_backward(f->made, a->theta, a->dtheta, n, f->dout, f->din);
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *g = f->din + (size_t)r * f->in;
        fl_real *dx = a->dx + (size_t)r * D;
        for (uint32_t k = 0; k < D; k++) dx[k] += g[k];
        if (a->dc && f->ctx_dim) {
            fl_real *dc = a->dc + (size_t)r * f->ctx_dim;
            for (uint32_t j = 0; j < f->ctx_dim; j++) dc[j] += g[D + j];
        }
    }
    return FL_OK;
}

/* dim sequential passes: pass i runs the MADE on the current estimate
 * (variables order[<i] final, the rest 0) and fixes variable order[i],
 * whose m and s depend on order[<i] only. After the last pass every m_k,
 * s_k saw final inputs, so that pass also gives the exact log-determinant. */
static fl_status inverse(void *self, const fl_flow_inv *a)
{
    ar *f = self;
    const uint32_t D = f->dim, n = a->n;
    gather(f, n, NULL, a->c);
    for (uint32_t i = 0; i < D; i++) {
        made(f, a->theta, n);
        const uint32_t k = f->order[i];
        for (uint32_t r = 0; r < n; r++) {
            const fl_real *m = f->out + (size_t)r * 2 * D;
            fl_real *xr = f->xin + (size_t)r * f->in;
            inv_elem(f->kind, a->y[(size_t)r * D + k], m[k], m[D + k], &xr[k]);
        }
    }
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *y = a->y + (size_t)r * D, *m = f->out + (size_t)r * 2 * D, *s = m + D;
        fl_real *x = a->x + (size_t)r * D, ld = 0;
        for (uint32_t k = 0; k < D; k++) ld += inv_elem(f->kind, y[k], m[k], s[k], &x[k]);
        if (a->logdet) a->logdet[r] += ld;
    }
    return FL_OK;
}

static fl_status order(void *self, uint32_t *out)
{
    const ar *f = self;
    memcpy(out, f->order, f->dim * sizeof *out);
    return FL_OK;
}

#define AR_FLAGS \
    (FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_ACCEPTS_CONTEXT | FL_FLOW_AUTOREGRESSIVE)

static const fl_flow_class iaf = {
    .base = { sizeof(fl_flow_class), "iaf",
              "IAF: z' = sigma(s)*z + (1-sigma(s))*m, [m,s] = MADE(z,h); forward (sampling) "
              "one parallel pass, inverse (density) dim sequential passes",
              iaf_keys, sizeof iaf_keys / sizeof iaf_keys[0] },
    .flags = AR_FLAGS,
    .create = create_iaf,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
    .order = order,
};

static const fl_flow_class maf = {
    .base = { sizeof(fl_flow_class), "maf",
              "MAF: u = (x - m)*exp(-s), [m,s] = MADE(x,h); forward (density) one parallel "
              "pass, inverse (sampling) dim sequential passes",
              maf_keys, sizeof maf_keys / sizeof maf_keys[0] },
    .flags = AR_FLAGS,
    .create = create_maf,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
    .order = order,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_FLOW, &iaf.base);
    return st == FL_OK ? r->add(r, FL_KIND_FLOW, &maf.base) : st;
}

FL_PLUGIN("flows-autoregressive", "1.0.0", init)
