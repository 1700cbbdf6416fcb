/* mlp.c - the host's MLP service: one GEMM per layer over all rows.
 *
 * Weights are stored (fan_in x fan_out) row-major so a layer is
 * Z = A W + b with A (n x fan_in): a single NoTrans GEMM. Hidden outputs are
 * cached for backward; activation derivatives are computed from outputs,
 * which saves keeping pre-activations. MADE masks multiply a pre-masked copy
 * of W, refreshed at each forward, so masked layers are still one GEMM.
 *
 * Threads: BLAS runs single-threaded and the work is cut into tiles whose
 * shape depends only on the problem, never on the thread count: forward
 * and the input gradient in blocks of ROW_TILE rows, the weight gradient
 * in blocks of W_TILE rows of W (each summing over all rows of the batch).
 * Each tile is always the same GEMM call, so results are bit-identical
 * with 1 or N threads, and small GEMMs avoid BLAS's threading overhead. */
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include "hostimpl.h"
#include "util.h"

enum { ROW_TILE = 256, W_TILE = 32 };

struct fl_mlp {
    uint32_t nl;            /* layers = hidden + 1 */
    uint32_t *width;        /* nl + 1 widths: in, hidden..., out */
    size_t *w_off, *b_off;  /* offsets in the component block */
    fl_act act;
    uint32_t max_rows, max_w;
    fl_real **a;            /* nl - 1 cached hidden outputs */
    fl_real **delta;        /* nl - 1 hidden-layer deltas (the last is dout) */
    uint8_t **mask;         /* per layer or NULL */
    fl_real **wm;           /* masked weight copies */
    const fl_real *in;      /* input of the last forward (caller-owned) */
};

void fl_mlp_free(fl_mlp *m)
{
    if (!m) return;
    for (uint32_t l = 0; l < m->nl; l++) {
        if (l + 1 < m->nl && m->a) fl_free(m->a[l]);
        if (l + 1 < m->nl && m->delta) fl_free(m->delta[l]);
        if (m->mask) free(m->mask[l]);
        if (m->wm) fl_free(m->wm[l]);
    }
    free(m->a);
    free(m->delta);
    free(m->mask);
    free(m->wm);
    free(m->width);
    free(m->w_off);
    free(m->b_off);
    free(m);
}

fl_mlp *fl_mlp_create(fl_ctx *cx, const fl_mlp_spec *s, uint32_t max_rows)
{
    const fl_host *h = fl_host_table();
    fl_runtime_init();
    fl_mlp *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->nl = s->n_hidden + 1;
    m->act = s->act;
    m->max_rows = max_rows ? max_rows : 1;
    m->width = calloc(m->nl + 1, sizeof *m->width);
    m->w_off = calloc(m->nl, sizeof *m->w_off);
    m->b_off = calloc(m->nl, sizeof *m->b_off);
    m->a = calloc(m->nl, sizeof *m->a);
    m->delta = calloc(m->nl, sizeof *m->delta);
    if (!m->width || !m->w_off || !m->b_off || !m->a || !m->delta) goto oom;
    m->width[0] = s->in;
    for (uint32_t l = 0; l < s->n_hidden; l++) m->width[l + 1] = s->hidden[l];
    m->width[m->nl] = s->out;
    if (s->init != FL_INIT_GLOROT && s->init != FL_INIT_FANIN) {
        h->error(cx, "MLP '%s': init must be FL_INIT_GLOROT or FL_INIT_FANIN", s->name);
        fl_mlp_free(m);
        return NULL;
    }
    for (uint32_t l = 0; l <= m->nl; l++) {
        if (m->width[l] == 0) {
            h->error(cx, "MLP '%s' has a zero-width layer", s->name);
            fl_mlp_free(m);
            return NULL;
        }
        if (m->width[l] > m->max_w) m->max_w = m->width[l];
    }
    for (uint32_t l = 0; l < m->nl; l++) {
        uint32_t fi = m->width[l], fo = m->width[l + 1];
        int last = l + 1 == m->nl;
        char name[256];
        snprintf(name, sizeof name, "%s.W%u", s->name, l);
        /* Weights and biases: the spec's scheme, or zero for an identity
         * start of the last layer. */
        int zero = last && s->out_init == FL_INIT_ZERO;
        int fanin = s->init == FL_INIT_FANIN;
        double fan = 1.0 / sqrt((double)fi);
        fl_param_spec w = { name, (size_t)fi * fo,
                            zero ? FL_INIT_ZERO : fanin ? FL_INIT_UNIFORM : FL_INIT_GLOROT, fi, fo,
                            fan, 0 };
        if (h->param(cx, &w, &m->w_off[l]) != FL_OK) goto fail;
        snprintf(name, sizeof name, "%s.b%u", s->name, l);
        fl_param_spec b = { name, fo, (zero || !fanin) ? FL_INIT_ZERO : FL_INIT_UNIFORM, 0, 0,
                            fan, 0 };
        if (last && s->out_bias) {
            char *full = fl_strfmt("%s.%s", cx->path, name);
            size_t abs;
            fl_status st = full ? fl_arena_request(cx->arena, full, &b, s->out_bias, &abs)
                                : FL_ERR_NOMEM;
            free(full);
            if (st != FL_OK) {
                h->error(cx, "%s", fl_err_msg());
                goto fail;
            }
            m->b_off[l] = abs - cx->block;
        } else if (h->param(cx, &b, &m->b_off[l]) != FL_OK) {
            goto fail;
        }
        if (!last) {
            m->a[l] = fl_alloc((size_t)m->max_rows * fo * sizeof(fl_real));
            m->delta[l] = fl_alloc((size_t)m->max_rows * fo * sizeof(fl_real));
            if (!m->a[l] || !m->delta[l]) goto oom;
        }
    }
    if (s->masks) {
        m->mask = calloc(m->nl, sizeof *m->mask);
        m->wm = calloc(m->nl, sizeof *m->wm);
        if (!m->mask || !m->wm) goto oom;
        for (uint32_t l = 0; l < m->nl; l++) {
            if (!s->masks[l]) continue;
            size_t sz = (size_t)m->width[l] * m->width[l + 1];
            m->mask[l] = malloc(sz);
            m->wm[l] = fl_alloc(sz * sizeof(fl_real));
            if (!m->mask[l] || !m->wm[l]) goto oom;
            memcpy(m->mask[l], s->masks[l], sz);
        }
    }
    return m;
oom:
    h->error(cx, "out of memory creating MLP '%s'", s->name);
fail:
    fl_mlp_free(m);
    return NULL;
}

static void bias_act(fl_real *restrict z, const fl_real *restrict b, uint32_t n, uint32_t w,
                     fl_act act)
{
    for (uint32_t r = 0; r < n; r++) {
        fl_real *restrict row = z + (size_t)r * w;
        switch (act) {
        case FL_ACT_LINEAR:
#pragma omp simd
            for (uint32_t j = 0; j < w; j++) row[j] += b[j];
            break;
        case FL_ACT_RELU:
#pragma omp simd
            for (uint32_t j = 0; j < w; j++) {
                fl_real v = row[j] + b[j];
                row[j] = v > 0 ? v : 0;
            }
            break;
        case FL_ACT_TANH:
            for (uint32_t j = 0; j < w; j++) row[j] = tanh(row[j] + b[j]);
            break;
        case FL_ACT_ELU:
            for (uint32_t j = 0; j < w; j++) {
                fl_real v = row[j] + b[j];
                row[j] = v > 0 ? v : expm1(v);
            }
            break;
        case FL_ACT_SOFTPLUS:
            for (uint32_t j = 0; j < w; j++) {
                fl_real v = row[j] + b[j];
                row[j] = v > 0 ? v + log1p(exp(-v)) : log1p(exp(v));
            }
            break;
        case FL_ACT_SIGMOID:
            for (uint32_t j = 0; j < w; j++) row[j] = 1 / (1 + exp(-(row[j] + b[j])));
            break;
        }
    }
}

/* delta *= act'(a), with the derivative written in terms of the output a. */
static void act_grad(fl_real *restrict d, const fl_real *restrict a, size_t total, fl_act act)
{
    switch (act) {
    case FL_ACT_LINEAR:
        break;
    case FL_ACT_RELU:
#pragma omp simd
        for (size_t i = 0; i < total; i++) d[i] = a[i] > 0 ? d[i] : 0;
        break;
    case FL_ACT_TANH:
#pragma omp simd
        for (size_t i = 0; i < total; i++) d[i] *= 1 - a[i] * a[i];
        break;
    case FL_ACT_ELU:
#pragma omp simd
        for (size_t i = 0; i < total; i++) d[i] *= a[i] > 0 ? 1 : a[i] + 1;
        break;
    case FL_ACT_SOFTPLUS:
        for (size_t i = 0; i < total; i++) d[i] *= -expm1(-a[i]);
        break;
    case FL_ACT_SIGMOID:
#pragma omp simd
        for (size_t i = 0; i < total; i++) d[i] *= a[i] * (1 - a[i]);
        break;
    }
}

static void mask_weights(fl_mlp *m, const fl_real *theta)
{
    for (uint32_t l = 0; m->mask && l < m->nl; l++) {
        if (!m->mask[l]) continue;
        size_t sz = (size_t)m->width[l] * m->width[l + 1];
        const fl_real *w = theta + m->w_off[l];
        const uint8_t *mk = m->mask[l];
        fl_real *wm = m->wm[l];
        for (size_t i = 0; i < sz; i++) wm[i] = mk[i] ? w[i] : 0;
    }
}

/* W of layer l as used by forward: the masked copy for MADE layers. */
static const fl_real *weights(const fl_mlp *m, const fl_real *theta, uint32_t l)
{
    return (m->mask && m->mask[l]) ? m->wm[l] : theta + m->w_off[l];
}

static uint32_t n_tiles(uint32_t n, uint32_t t) { return (n + t - 1) / t; }

void fl_mlp_forward(fl_mlp *m, const fl_real *theta, uint32_t n, const fl_real *in, fl_real *out)
{
    m->in = in;
    mask_weights(m, theta);
    const uint32_t tiles = n_tiles(n, ROW_TILE);
#pragma omp parallel for schedule(dynamic, 1) if (tiles > 1)
    for (uint32_t t = 0; t < tiles; t++) {
        const uint32_t r0 = t * ROW_TILE, rn = n - r0 < ROW_TILE ? n - r0 : ROW_TILE;
        const fl_real *x = in + (size_t)r0 * m->width[0];
        for (uint32_t l = 0; l < m->nl; l++) {
            const uint32_t fi = m->width[l], fo = m->width[l + 1];
            const int last = l + 1 == m->nl;
            fl_real *z = (last ? out : m->a[l]) + (size_t)r0 * fo;
            fl_gemm(0, 0, (int)rn, (int)fo, (int)fi, 1, x, (int)fi, weights(m, theta, l), (int)fo,
                    0, z, (int)fo);
            bias_act(z, theta + m->b_off[l], rn, fo, last ? FL_ACT_LINEAR : m->act);
            x = z;
        }
    }
}

void fl_mlp_backward(fl_mlp *m, const fl_real *theta, fl_real *dtheta, uint32_t n,
                     const fl_real *dout, fl_real *din)
{
    const uint32_t nl = m->nl;
    /* Phase 1, row tiles: deltas of every layer, and din. */
    const uint32_t tiles = n_tiles(n, ROW_TILE);
#pragma omp parallel for schedule(dynamic, 1) if (tiles > 1)
    for (uint32_t t = 0; t < tiles; t++) {
        const uint32_t r0 = t * ROW_TILE, rn = n - r0 < ROW_TILE ? n - r0 : ROW_TILE;
        for (uint32_t l = nl; l-- > 0;) {
            const uint32_t fi = m->width[l], fo = m->width[l + 1];
            const fl_real *d = (l + 1 == nl ? dout : m->delta[l]) + (size_t)r0 * fo;
            if (l > 0) {
                fl_real *prev = m->delta[l - 1] + (size_t)r0 * fi;
                fl_gemm(0, 1, (int)rn, (int)fi, (int)fo, 1, d, (int)fo, weights(m, theta, l),
                        (int)fo, 0, prev, (int)fi);
                act_grad(prev, m->a[l - 1] + (size_t)r0 * fi, (size_t)rn * fi, m->act);
            } else if (din) {
                fl_gemm(0, 1, (int)rn, (int)fi, (int)fo, 1, d, (int)fo, weights(m, theta, 0),
                        (int)fo, 1, din + (size_t)r0 * fi, (int)fi);
            }
        }
    }
    /* Phase 2, tiles of W_TILE rows of each W (plus one bias task per
     * layer): dW += A^T delta over all n rows. */
    uint32_t total = 0;
    for (uint32_t l = 0; l < nl; l++) total += n_tiles(m->width[l], W_TILE) + 1;
#pragma omp parallel for schedule(dynamic, 1) if (total > 2 && n >= 64)
    for (uint32_t task = 0; task < total; task++) {
        uint32_t l = 0, t = task;
        while (t >= n_tiles(m->width[l], W_TILE) + 1) t -= n_tiles(m->width[l++], W_TILE) + 1;
        const uint32_t fi = m->width[l], fo = m->width[l + 1];
        const fl_real *d = l + 1 == nl ? dout : m->delta[l];
        if (t == n_tiles(fi, W_TILE)) { /* the bias task */
            fl_real *db = dtheta + m->b_off[l];
            for (uint32_t r = 0; r < n; r++) {
                const fl_real *row = d + (size_t)r * fo;
#pragma omp simd
                for (uint32_t j = 0; j < fo; j++) db[j] += row[j];
            }
            continue;
        }
        const uint32_t i0 = t * W_TILE, ni = fi - i0 < W_TILE ? fi - i0 : W_TILE;
        const fl_real *x = l ? m->a[l - 1] : m->in;
        fl_real *dw = dtheta + m->w_off[l] + (size_t)i0 * fo;
        fl_gemm(1, 0, (int)ni, (int)fo, (int)n, 1, x + i0, (int)fi, d, (int)fo, 1, dw, (int)fo);
        if (m->mask && m->mask[l]) {
            const uint8_t *mk = m->mask[l] + (size_t)i0 * fo;
            for (size_t i = 0; i < (size_t)ni * fo; i++)
                if (!mk[i]) dw[i] = 0;
        }
    }
}
