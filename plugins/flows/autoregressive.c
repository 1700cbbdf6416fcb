/* autoregressive.c - MADE-based autoregressive flows: IAF (Kingma et al.
 * 2016) and MAF (Papamakarios et al. 2017).
 *
 *   [m, s] = MADE([h, a]),  m_k and s_k depend on a_j only for j before k
 *   iaf (gated):  z' = sigma(s)*z + (1 - sigma(s))*m,  logdet = sum log sigma(s)
 *   iaf (affine): z' = m + exp(s)*z,                    logdet = sum s
 *   maf:          u  = (x - m)*exp(-s),                 logdet = -sum s
 *
 * The MADE (Germain et al. 2015) is the host MLP with masks, so each layer
 * stays one GEMM over all rows. Degrees: variable order[i] has degree i+1,
 * context inputs degree 0 (they reach every hidden unit), hidden units
 * degrees in [lo, dim-1], in increasing order along each layer; a hidden
 * unit sees the previous layer's units of degree <= its own, an output of
 * variable k sees units of degree < k's. Sorted degrees (and the context
 * before the variables) make each mask a staircase, whose all-zero blocks
 * the host's products skip.
 * The forward direction is one parallel pass; the inverse needs dim
 * sequential passes, each fixing one more variable in order.
 *
 * s is soft-bounded by default (scale_bound): unbounded, exp(s) overflows
 * at large inputs, and in the sequential inverse each variable's scale is
 * driven by the already amplified earlier ones. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <flowlab/flowlab.h>
#include <flowlab/vmath.h>

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
    fl_real *xin;               /* n x in: MADE input [h | a] */
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

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
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
    /* Input degrees: context 0 (first), variable order[i] degree i+1. */
    const uint32_t C = f->ctx_dim;
    for (uint32_t j = 0; j < C; j++) prev[j] = 0;
    for (uint32_t i = 0; i < D; i++) prev[C + f->order[i]] = i + 1;
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
                    cur[j] = lo + (uint32_t)((uint64_t)j * (hi - lo + 1) / fo);
                }
                if (cur[j] < cmin) cmin = cur[j];
            }
            /* Units in increasing degree: the same network up to the order
             * of its units, but each mask becomes a staircase whose zero
             * blocks the host's products skip (about half of the work). */
            if (random) qsort(cur, fo, sizeof *cur, cmp_u32);
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
     * them some dependencies. */
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

/* MADE input rows [h | a]: context first, so with the natural order the
 * input degrees increase along the row too. */
static void gather(ar *f, uint32_t n, const fl_real *a, const fl_real *c)
{
    const uint32_t C = f->ctx_dim;
    for (uint32_t r = 0; r < n; r++) {
        fl_real *dst = f->xin + (size_t)r * f->in;
        if (C) memcpy(dst, c + (size_t)r * C, C * sizeof *dst);
        if (a) memcpy(dst + C, a + (size_t)r * f->dim, f->dim * sizeof *dst);
        else memset(dst + C, 0, f->dim * sizeof *dst);
    }
}

/* ---- element-wise ------------------------------------------------------
 *
 * Straight-line code over flowlab/vmath.h, one row of D variables at a
 * time, so the compiler vectorises it (the libm version cost 10-20 ns per
 * element, more than the MADE's products at batch 100). Rows split over
 * threads only when there are many (a region costs more than 5000
 * elements); each row's numbers are the same either way. */
#define ELEM_PAR_MIN 65536

/* Bounded log-scale. Affine forms: s = b*tanh(raw/b) in [-b, b]. Gated:
 * only sigma -> 0 hurts (the inverse divides by sigma), so a one-sided
 * soft floor s = -b + softplus(raw + b) >= -b leaves sigma free up to 1
 * and the forget bias nearly intact. */
static inline fl_real bound_s(int gated, fl_real b, fl_real raw)
{
    return gated ? -b + fl_softplus(raw + b) : b * fl_tanh(raw / b);
}

/* ds/draw of bound_s, written in terms of the bounded s; gated:
 * sigmoid(raw + b) = 1 - exp(-softplus(raw + b)). */
static inline fl_real bound_grad(int gated, fl_real b, fl_real s)
{
    return gated ? -fl_expm1(-(s + b)) : 1 - (s / b) * (s / b);
}

/* log sigmoid(s) = -softplus(-s). */
static inline fl_real log_sigm(fl_real s) { return -fl_softplus(-s); }

/* One MADE pass over xin; bounds s in place so out holds [m | s]. */
static void made(ar *f, const fl_real *theta, uint32_t n)
{
    f->h->mlp_forward(f->made, theta, n, f->xin, f->out);
    if (f->bound <= 0) return;
    const fl_real b = f->bound;
    const uint32_t D = f->dim;
    const int gated = f->kind == T_IAF_GATED;
#pragma omp parallel for schedule(static) if ((size_t)n * D > ELEM_PAR_MIN)
    for (uint32_t r = 0; r < n; r++) {
        fl_real *restrict s = f->out + (size_t)r * 2 * D + D;
        for (uint32_t k = 0; k < D; k++) s[k] = bound_s(gated, b, s[k]);
    }
}

/* Forward direction on one row: y = T(x; m, s); returns log|dy/dx| summed
 * over the row (terms into t, then added in order). */
static fl_real fwd_row(int kind, uint32_t D, const fl_real *restrict x, const fl_real *restrict m,
                       const fl_real *restrict s, fl_real *restrict y, fl_real *restrict t)
{
    switch (kind) {
    case T_MAF:
        for (uint32_t k = 0; k < D; k++) {
            y[k] = (x[k] - m[k]) * fl_exp(-s[k]);
            t[k] = -s[k];
        }
        break;
    case T_IAF_GATED:
        /* 1 - sigma as sigmoid(-s): no cancellation */
        for (uint32_t k = 0; k < D; k++) {
            y[k] = fl_sigmoid(s[k]) * x[k] + fl_sigmoid(-s[k]) * m[k];
            t[k] = log_sigm(s[k]);
        }
        break;
    default:
        for (uint32_t k = 0; k < D; k++) {
            y[k] = m[k] + fl_exp(s[k]) * x[k];
            t[k] = s[k];
        }
        break;
    }
    fl_real ld = 0;
    for (uint32_t k = 0; k < D; k++) ld += t[k];
    return ld;
}

/* Inverse on one row: x from y; returns log|dx/dy| (as fwd_row). */
static fl_real inv_row(int kind, uint32_t D, const fl_real *restrict y, const fl_real *restrict m,
                       const fl_real *restrict s, fl_real *restrict x, fl_real *restrict t)
{
    switch (kind) {
    case T_MAF:
        for (uint32_t k = 0; k < D; k++) {
            x[k] = y[k] * fl_exp(s[k]) + m[k];
            t[k] = s[k];
        }
        break;
    case T_IAF_GATED:
        for (uint32_t k = 0; k < D; k++) {
            x[k] = (y[k] - fl_sigmoid(-s[k]) * m[k]) / fl_sigmoid(s[k]);
            t[k] = -log_sigm(s[k]);
        }
        break;
    default:
        for (uint32_t k = 0; k < D; k++) {
            x[k] = (y[k] - m[k]) * fl_exp(-s[k]);
            t[k] = -s[k];
        }
        break;
    }
    fl_real ld = 0;
    for (uint32_t k = 0; k < D; k++) ld += t[k];
    return ld;
}

/* One variable of the inverse (the sequential passes). */
static fl_real inv_one(int kind, fl_real y, fl_real m, fl_real s)
{
    switch (kind) {
    case T_MAF: return y * fl_exp(s) + m;
    case T_IAF_GATED: return (y - fl_sigmoid(-s) * m) / fl_sigmoid(s);
    default: return (y - m) * fl_exp(-s);
    }
}

enum { ROW_MAX = 256 }; /* variables per stack buffer; wider rows go in pieces */

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    ar *f = self;
    const uint32_t D = f->dim, n = a->n;
    gather(f, n, a->x, a->c);
    made(f, a->theta, n);
#pragma omp parallel for schedule(static) if ((size_t)n * D > ELEM_PAR_MIN)
    for (uint32_t r = 0; r < n; r++) {
        fl_real buf[ROW_MAX];
        const fl_real *m = f->out + (size_t)r * 2 * D;
        fl_real *y = a->y + (size_t)r * D;
        fl_real ld = 0; /* ROW_MAX variables at a time */
        for (uint32_t k0 = 0; k0 < D; k0 += ROW_MAX) {
            uint32_t w = D - k0 < ROW_MAX ? D - k0 : ROW_MAX;
            ld += fwd_row(f->kind, w, a->x + (size_t)r * D + k0, m + k0, m + D + k0, y + k0, buf);
        }
        a->logdet[r] += ld;
    }
    return FL_OK;
}

/* Direct terms of y_k = T(x_k; m_k, s_k) and logdet on one row. */
static void bwd_row(int kind, fl_real b, uint32_t D, const fl_real *restrict x,
                    const fl_real *restrict dy, const fl_real *restrict m,
                    const fl_real *restrict s, fl_real dl, fl_real *restrict dx,
                    fl_real *restrict dm, fl_real *restrict ds)
{
    const int gated = kind == T_IAF_GATED;
    switch (kind) {
    case T_MAF:
        for (uint32_t k = 0; k < D; k++) {
            fl_real e = fl_exp(-s[k]), u = (x[k] - m[k]) * e;
            dx[k] += dy[k] * e;
            dm[k] = -dy[k] * e;
            ds[k] = -dy[k] * u - dl;
        }
        break;
    case T_IAF_GATED:
        for (uint32_t k = 0; k < D; k++) {
            fl_real g = fl_sigmoid(s[k]), g1 = fl_sigmoid(-s[k]);
            dx[k] += dy[k] * g;
            dm[k] = dy[k] * g1;
            ds[k] = dy[k] * g * g1 * (x[k] - m[k]) + dl * g1;
        }
        break;
    default:
        for (uint32_t k = 0; k < D; k++) {
            fl_real e = fl_exp(s[k]);
            dx[k] += dy[k] * e;
            dm[k] = dy[k];
            ds[k] = dy[k] * e * x[k] + dl;
        }
        break;
    }
    if (b > 0)
        for (uint32_t k = 0; k < D; k++) ds[k] *= bound_grad(gated, b, s[k]);
}

/* The direct terms, then the MADE's vector-Jacobian product for the
 * indirect ones through m and s. */
static fl_status backward(void *self, const fl_flow_bwd *a)
{
    ar *f = self;
    const uint32_t D = f->dim, n = a->n, C = f->ctx_dim;
    const fl_real b = f->bound;
#pragma omp parallel for schedule(static) if ((size_t)n * D > ELEM_PAR_MIN)
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *m = f->out + (size_t)r * 2 * D;
        fl_real *dm = f->dout + (size_t)r * 2 * D;
        bwd_row(f->kind, b, D, a->x + (size_t)r * D, a->dy + (size_t)r * D, m, m + D,
                a->dlogdet[r], a->dx + (size_t)r * D, dm, dm + D);
    }
    memset(f->din, 0, (size_t)n * f->in * sizeof(fl_real));
    f->h->mlp_backward(f->made, a->theta, a->dtheta, n, f->dout, f->din);
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *restrict g = f->din + (size_t)r * f->in;
        fl_real *restrict dx = a->dx + (size_t)r * D;
        for (uint32_t k = 0; k < D; k++) dx[k] += g[C + k];
        if (a->dc && C) {
            fl_real *restrict dc = a->dc + (size_t)r * C;
            for (uint32_t j = 0; j < C; j++) dc[j] += g[j];
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
            f->xin[(size_t)r * f->in + f->ctx_dim + k] = inv_one(f->kind, a->y[(size_t)r * D + k], m[k], m[D + k]);
        }
    }
#pragma omp parallel for schedule(static) if ((size_t)n * D > ELEM_PAR_MIN)
    for (uint32_t r = 0; r < n; r++) {
        fl_real buf[ROW_MAX];
        const fl_real *m = f->out + (size_t)r * 2 * D;
        fl_real ld = 0;
        for (uint32_t k0 = 0; k0 < D; k0 += ROW_MAX) {
            uint32_t w = D - k0 < ROW_MAX ? D - k0 : ROW_MAX;
            ld += inv_row(f->kind, w, a->y + (size_t)r * D + k0, m + k0, m + D + k0,
                          a->x + (size_t)r * D + k0, buf);
        }
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
