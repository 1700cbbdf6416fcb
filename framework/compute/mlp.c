/* mlp.c - the host's MLP service: one matrix product per layer over all
 * rows, cut into tasks; mlp_kernel.c computes the products.
 *
 * Weights are stored (fan_in x fan_out) row-major so a layer is
 * Z = A W + b with A (n x fan_in). Hidden outputs are cached for backward;
 * activation derivatives are computed from outputs, which saves keeping
 * pre-activations. MADE masks multiply a pre-masked copy of W, refreshed at
 * each forward, so masked layers are still one product.
 *
 * Threads: work is cut into tasks whose shape depends only on the problem
 * (ROW_TILE rows x a block of columns of an output, or blocks of W rows for
 * the weight gradient, each summing over all rows of the batch in order).
 * The same tasks run whatever the thread count, and every output element is
 * summed in a fixed order inside one task, so results are bit-identical
 * with 1 or N threads. One parallel region per forward and per backward.
 * The forward has a barrier per layer. The backward is pipelined (two
 * threads, or few rows): thread 0 runs the chain of deltas without a
 * barrier while the others take the weight gradients of each layer as soon
 * as its delta is there (a flag per layer); with more threads and many rows
 * it has a barrier per layer. Small problems (or calls from inside another
 * parallel region, e.g. a coupling layer's two nets) run on the calling
 * thread without any region. */
#include <omp.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/vmath.h>

#include "compute/blas.h"
#include "compute/mlp.h"
#include "compute/mlp_kernel.h"
#include "core/hostimpl.h"
#include "core/util.h"

enum {
    ROW_TILE = 126,    /* rows per forward / delta task: whole MR-row kernel tiles */
    W_ROWS = 48,       /* rows of W per weight-gradient task (a multiple of MR) */
    MR = FL_MLPK_MR, NVMAX = FL_MLPK_NVMAX, /* kernel: MR rows x NVMAX 16-float vectors of C */
};
/* Below this many multiply-adds per call (all layers), stay on one thread:
 * a parallel region costs more than it saves. */
#define PAR_MIN_FMA 1e7

/* The tasks of one layer's backward (plan_layer). */
typedef struct bwd_plan {
    uint32_t nw_r, nw_c, nw, nd, fo1; /* fo1: dW of a one-column W in one task */
} bwd_plan;

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
    /* Masked layers: for 16-column group g of W, the rows [klo, khi) that
     * hold its nonzero entries (forward); for 16-row group g, the columns
     * [jlo, jhi) (backward). A MADE whose units are sorted by degree has a
     * staircase mask, so these cut its products by about half. */
    uint32_t **klo, **khi, **jlo, **jhi;
    fl_real **wt;           /* transposed weights (fan_out x fan_in), for backward */
    fl_real *ones;          /* max_rows ones: bias gradients are ones^T delta */
    const fl_real *in;      /* input of the last forward (caller-owned) */
    /* The pipelined backward (few rows): per layer, its plan, the index of
     * its first weight-gradient task, and flags set once its delta (d_ready)
     * and its W^T (wt_ready) are there; `next` hands out gradient tasks. */
    bwd_plan *plan;
    uint32_t *first;
    atomic_int *d_ready, *wt_ready;
    atomic_uint next;
};

void fl_mlp_io(const fl_mlp *m, uint32_t *in, uint32_t *out)
{
    *in = m->width[0];
    *out = m->width[m->nl];
}

void fl_mlp_free(fl_mlp *m)
{
    if (!m) return;
    for (uint32_t l = 0; l < m->nl; l++) {
        if (l + 1 < m->nl && m->a) fl_free(m->a[l]);
        if (l + 1 < m->nl && m->delta) fl_free(m->delta[l]);
        if (m->mask) free(m->mask[l]);
        if (m->klo) free(m->klo[l]), free(m->khi[l]), free(m->jlo[l]), free(m->jhi[l]);
        if (m->wm) fl_free(m->wm[l]);
        if (m->wt) fl_free(m->wt[l]);
    }
    free(m->a);
    free(m->delta);
    free(m->mask);
    free(m->klo);
    free(m->khi);
    free(m->jlo);
    free(m->jhi);
    free(m->wm);
    free(m->wt);
    free(m->plan);
    free(m->first);
    free(m->d_ready);
    free(m->wt_ready);
    fl_free(m->ones);
    free(m->width);
    free(m->w_off);
    free(m->b_off);
    free(m);
}

/* The row range of each 16-column group and the column range of each
 * 16-row group of every masked W (empty ranges as [0, 0)). */
static fl_status mask_ranges(fl_mlp *m)
{
    m->klo = calloc(m->nl, sizeof *m->klo);
    m->khi = calloc(m->nl, sizeof *m->khi);
    m->jlo = calloc(m->nl, sizeof *m->jlo);
    m->jhi = calloc(m->nl, sizeof *m->jhi);
    if (!m->klo || !m->khi || !m->jlo || !m->jhi) return FL_ERR_NOMEM;
    for (uint32_t l = 0; l < m->nl; l++) {
        if (!m->mask[l]) continue;
        const uint32_t fi = m->width[l], fo = m->width[l + 1];
        const uint32_t gc = (fo + 15) / 16, gr = (fi + 15) / 16;
        m->klo[l] = calloc(gc, sizeof(uint32_t));
        m->khi[l] = calloc(gc, sizeof(uint32_t));
        m->jlo[l] = calloc(gr, sizeof(uint32_t));
        m->jhi[l] = calloc(gr, sizeof(uint32_t));
        if (!m->klo[l] || !m->khi[l] || !m->jlo[l] || !m->jhi[l]) return FL_ERR_NOMEM;
        for (uint32_t g = 0; g < gc; g++) m->klo[l][g] = fi;
        for (uint32_t g = 0; g < gr; g++) m->jlo[l][g] = fo;
        const uint8_t *mk = m->mask[l];
        for (uint32_t i = 0; i < fi; i++)
            for (uint32_t j = 0; j < fo; j++) {
                if (!mk[(size_t)i * fo + j]) continue;
                uint32_t g = j / 16, h = i / 16;
                if (i < m->klo[l][g]) m->klo[l][g] = i;
                if (i + 1 > m->khi[l][g]) m->khi[l][g] = i + 1;
                if (j < m->jlo[l][h]) m->jlo[l][h] = j;
                if (j + 1 > m->jhi[l][h]) m->jhi[l][h] = j + 1;
            }
        for (uint32_t g = 0; g < gc; g++)
            if (m->khi[l][g] == 0) m->klo[l][g] = 0;
        for (uint32_t g = 0; g < gr; g++)
            if (m->jhi[l][g] == 0) m->jlo[l][g] = 0;
    }
    return FL_OK;
}

/* The union of the ranges of groups [g0, g1) (lo, hi arrays), or all of
 * [0, full) without a mask. */
static void range_of(const uint32_t *lo, const uint32_t *hi, uint32_t g0, uint32_t g1,
                     uint32_t full, uint32_t *a, uint32_t *b)
{
    if (!lo) {
        *a = 0;
        *b = full;
        return;
    }
    uint32_t x = full, y = 0;
    for (uint32_t g = g0; g < g1; g++)
        if (hi[g] > lo[g]) {
            if (lo[g] < x) x = lo[g];
            if (hi[g] > y) y = hi[g];
        }
    *a = y > x ? x : 0;
    *b = y > x ? y : 0;
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
    m->wt = calloc(m->nl, sizeof *m->wt);
    m->ones = fl_alloc((size_t)m->max_rows * sizeof(fl_real));
    m->plan = calloc(m->nl, sizeof *m->plan);
    m->first = calloc(m->nl, sizeof *m->first);
    m->d_ready = calloc(m->nl, sizeof *m->d_ready);
    m->wt_ready = calloc(m->nl, sizeof *m->wt_ready);
    if (!m->width || !m->w_off || !m->b_off || !m->a || !m->delta || !m->wt || !m->ones ||
        !m->plan || !m->first || !m->d_ready || !m->wt_ready)
        goto oom;
    for (uint32_t r = 0; r < m->max_rows; r++) m->ones[r] = 1;
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
        if (fi > 1 && fo > 1 && !(m->wt[l] = fl_alloc((size_t)fi * fo * sizeof(fl_real))))
            goto oom;
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
        if (mask_ranges(m) != FL_OK) goto oom;
    }
    return m;
oom:
    h->error(cx, "out of memory creating MLP '%s'", s->name);
fail:
    fl_mlp_free(m);
    return NULL;
}

static void mask_weights(fl_mlp *m, const fl_real *theta)
{
    for (uint32_t l = 0; m->mask && l < m->nl; l++) {
        if (!m->mask[l]) continue;
        size_t sz = (size_t)m->width[l] * m->width[l + 1];
        const fl_real *restrict w = theta + m->w_off[l];
        const uint8_t *restrict mk = m->mask[l];
        fl_real *restrict wm = m->wm[l];
        for (size_t i = 0; i < sz; i++) wm[i] = mk[i] ? w[i] : 0;
    }
}

/* W of layer l as used by forward: the masked copy for MADE layers. */
static const fl_real *weights(const fl_mlp *m, const fl_real *theta, uint32_t l)
{
    return (m->mask && m->mask[l]) ? m->wm[l] : theta + m->w_off[l];
}

/* wt (fo x fi) = w^T, in 16 x 16 blocks. */
static void transpose(const fl_real *restrict w, fl_real *restrict wt, uint32_t fi, uint32_t fo)
{
    for (uint32_t i0 = 0; i0 < fi; i0 += 16)
        for (uint32_t j0 = 0; j0 < fo; j0 += 16) {
            uint32_t ie = fi - i0 < 16 ? fi : i0 + 16, je = fo - j0 < 16 ? fo : j0 + 16;
            for (uint32_t j = j0; j < je; j++)
                for (uint32_t i = i0; i < ie; i++) wt[(size_t)j * fi + i] = w[(size_t)i * fo + j];
        }
}

/* ---- tasks ------------------------------------------------------------- */

static uint32_t n_tiles(uint32_t n, uint32_t t) { return (n + t - 1) / t; }

/* How an n x w output (forward) or delta is cut into tasks: row tiles of
 * `rows` rows x `nc` column blocks, task t = (row tile t / nc, column block
 * t % nc). Many rows: ROW_TILE rows, whole rows. Fewer: column blocks as
 * wide as the kernel (NVMAX vectors: fewer loads per multiply-add than
 * narrow ones) and row tiles (whole MR-row kernel tiles) until there are
 * about 8 tasks to share. Depends on the problem only, never on the thread
 * count. */
typedef struct tiling {
    uint32_t rows, nr, nc;
} tiling;

static tiling tile_out(uint32_t n, uint32_t w)
{
    tiling g;
    if (n_tiles(n, ROW_TILE) >= 8) {
        g.rows = ROW_TILE;
        g.nr = n_tiles(n, ROW_TILE);
        g.nc = 1;
        return g;
    }
    g.nc = fl_mlpk_n_blocks(w, NVMAX);
    uint32_t want = (8 + g.nc - 1) / g.nc, most = n / (2 * MR);
    if (want > most) want = most;
    if (want < 1) want = 1;
    g.rows = (n_tiles(n, want) + MR - 1) / MR * MR;
    if (g.rows == 0) g.rows = MR;
    g.nr = n_tiles(n, g.rows);
    return g;
}

/* Rows [*r0, *r0 + *rn) and columns [*c0, *c0 + *cn) of task t. */
static void task_box(const tiling *g, uint32_t n, uint32_t w, uint32_t t, uint32_t *r0,
                     uint32_t *rn, uint32_t *c0, uint32_t *cn)
{
    *r0 = (t / g->nc) * g->rows;
    *rn = n - *r0 < g->rows ? n - *r0 : g->rows;
    fl_mlpk_split(w, g->nc, t % g->nc, c0, cn);
}

static double fmas(const fl_mlp *m, uint32_t n)
{
    double f = 0;
    for (uint32_t l = 0; l < m->nl; l++) f += (double)m->width[l] * m->width[l + 1];
    return f * n;
}

/* Threads for a call: none beyond the caller inside another region or for
 * a small problem. */
static int want_parallel(const fl_mlp *m, uint32_t n, double factor)
{
    return !omp_in_parallel() && omp_get_max_threads() > 1 && fmas(m, n) * factor >= PAR_MIN_FMA;
}

/* Forward task t of layer l (tile_out). */
static void fwd_task(fl_mlp *m, const fl_real *theta, uint32_t n, fl_real *out, uint32_t l,
                     uint32_t t)
{
    const uint32_t fi = m->width[l], fo = m->width[l + 1];
    const tiling g = tile_out(n, fo);
    uint32_t r0, rn, c0, cn;
    task_box(&g, n, fo, t, &r0, &rn, &c0, &cn);
    const int last = l + 1 == m->nl;
    const fl_real *x = (l ? m->a[l - 1] : m->in) + (size_t)r0 * fi;
    fl_real *z = (last ? out : m->a[l]) + (size_t)r0 * fo + c0;
    const fl_mlpk_ep ep = { 0, last ? FL_ACT_LINEAR : m->act, theta + m->b_off[l] + c0, NULL, 0 };
    /* the rows of W these columns can use (all, without a mask) */
    uint32_t k0, k1;
    range_of(m->klo ? m->klo[l] : NULL, m->klo ? m->khi[l] : NULL, c0 / 16, (c0 + cn + 15) / 16,
             fi, &k0, &k1);
    fl_mlpk_mmc(0, rn, cn, k1 - k0, x + k0, fi, weights(m, theta, l) + (size_t)k0 * fo + c0, fo,
                z, fo, 0, &ep);
}

static uint32_t fwd_tasks(const fl_mlp *m, uint32_t n, uint32_t l)
{
    const tiling g = tile_out(n, m->width[l + 1]);
    return g.nr * g.nc;
}

/* Runs fn on the rows of task t of the last layer once they are final:
 * after its last column block (the serial order, or nc = 1). */
static void rows_done(const fl_mlp *m, uint32_t n, uint32_t t, fl_mlp_rows_fn fn, void *ctx)
{
    if (!fn) return;
    const tiling g = tile_out(n, m->width[m->nl]);
    const uint32_t r0 = (t / g.nc) * g.rows;
    if (t % g.nc == g.nc - 1) fn(ctx, r0, n - r0 < g.rows ? n - r0 : g.rows);
}

void fl_mlp_forward_rows(fl_mlp *m, const fl_real *theta, uint32_t n, const fl_real *in,
                         fl_real *out, fl_mlp_rows_fn fn, void *ctx)
{
    m->in = in;
    mask_weights(m, theta);
    const uint32_t last = m->nl - 1;
    const tiling g = tile_out(n, m->width[m->nl]);
    /* With whole rows per task (many rows), a row tile is handed to fn as
     * soon as it is computed, while it is still in this core's cache. */
    const int fused = fn && g.nc == 1;
    if (!want_parallel(m, n, 1)) {
        for (uint32_t l = 0; l < m->nl; l++)
            for (uint32_t t = 0, nt = fwd_tasks(m, n, l); t < nt; t++) {
                fwd_task(m, theta, n, out, l, t);
                if (l == last) rows_done(m, n, t, fn, ctx);
            }
        return;
    }
#pragma omp parallel
    {
        for (uint32_t l = 0; l < m->nl; l++) {
            const uint32_t nt = fwd_tasks(m, n, l);
#pragma omp for schedule(dynamic, 1)
            for (uint32_t t = 0; t < nt; t++) {
                fwd_task(m, theta, n, out, l, t);
                if (l == last && fused) rows_done(m, n, t, fn, ctx);
            }
        }
        if (fn && !fused) { /* blocks of 32 rows, so a few rows still share out */
            const uint32_t nb = n_tiles(n, 32);
#pragma omp for schedule(dynamic, 1)
            for (uint32_t t = 0; t < nb; t++) fn(ctx, t * 32, n - t * 32 < 32 ? n - t * 32 : 32);
        }
    }
}

void fl_mlp_forward(fl_mlp *m, const fl_real *theta, uint32_t n, const fl_real *in, fl_real *out)
{
    fl_mlp_forward_rows(m, theta, n, in, out, NULL, NULL);
}

/* Backward of layer l (dout of layer l is d, n x fo) is a list of tasks:
 *   [0, nw)           dW += X^T d in blocks of W_ROWS rows of W x <= 64 columns
 *   nw                db += column sums of d, rows in order
 *   (nw, nw + 1 + nd) d_prev = (d W^T) * act'(a_prev) (or din += d W^T for
 *                     l = 0), ROW_TILE rows x one column block */

static bwd_plan plan_layer(const fl_mlp *m, uint32_t n, uint32_t l, int din)
{
    const uint32_t fi = m->width[l], fo = m->width[l + 1];
    bwd_plan p = { 0 };
    p.fo1 = fo == 1;
    p.nw_r = p.fo1 ? 1 : n_tiles(fi, W_ROWS);
    p.nw_c = p.fo1 ? 1 : fl_mlpk_n_blocks(fo, NVMAX);
    p.nw = p.nw_r * p.nw_c;
    if (l > 0 || din) {
        const tiling g = tile_out(n, fi);
        p.nd = g.nr * g.nc;
    }
    return p;
}

static void bwd_task(fl_mlp *m, const fl_real *theta, fl_real *dtheta, uint32_t n,
                     const fl_real *dout, fl_real *din, uint32_t l, const bwd_plan *p,
                     uint32_t t)
{
    const uint32_t fi = m->width[l], fo = m->width[l + 1];
    const fl_real *d = l + 1 == m->nl ? dout : m->delta[l];
    if (t < p->nw) {
        const fl_real *x = l ? m->a[l - 1] : m->in;
        fl_real *dw = dtheta + m->w_off[l];
        uint32_t i0 = 0, ni = fi, j0 = 0, nj = fo;
        if (!p->fo1) {
            i0 = (t / p->nw_c) * W_ROWS;
            ni = fi - i0 < W_ROWS ? fi - i0 : W_ROWS;
            fl_mlpk_split(fo, p->nw_c, t % p->nw_c, &j0, &nj);
        }
        fl_real *c = dw + (size_t)i0 * fo + j0;
        if (m->klo && m->klo[l]) {
            /* a block of W the mask zeroes entirely keeps its zero gradient */
            uint32_t a, b;
            range_of(m->jlo[l], m->jhi[l], i0 / 16, (i0 + ni + 15) / 16, fo, &a, &b);
            if (b <= j0 || a >= j0 + nj) return;
        }
        fl_mlpk_mmc(1, ni, nj, n, x + i0, fi, d + j0, fo, c, fo, 1, NULL);
        if (m->mask && m->mask[l]) {
            const uint8_t *mk = m->mask[l];
            for (uint32_t i = i0; i < i0 + ni; i++)
                for (uint32_t j = j0; j < j0 + nj; j++)
                    if (!mk[(size_t)i * fo + j]) dw[(size_t)i * fo + j] = 0;
        }
        return;
    }
    if (t == p->nw) { /* db += ones^T d: column sums, rows in order */
        fl_real *db = dtheta + m->b_off[l];
        if (fo == 1) fl_mlpk_mm(0, 1, 1, n, d, n, m->ones, 1, db, 1, 1, NULL);
        else fl_mlpk_mm(1, 1, fo, n, m->ones, 1, d, fo, db, fo, 1, NULL);
        return;
    }
    t -= p->nw + 1;
    const tiling g = tile_out(n, fi);
    uint32_t r0, rn, c0, cn;
    task_box(&g, n, fi, t, &r0, &rn, &c0, &cn);
    /* W^T (fo x fi): the transposed copy, or W itself when it is a row or a
     * column (then W^T has the same layout). */
    const fl_real *wt = (fi > 1 && fo > 1) ? m->wt[l] : weights(m, theta, l);
    /* the columns of W (units of this layer) these inputs feed */
    uint32_t k0, k1;
    range_of(m->jlo ? m->jlo[l] : NULL, m->jlo ? m->jhi[l] : NULL, c0 / 16, (c0 + cn + 15) / 16,
             fo, &k0, &k1);
    const fl_real *dr = d + (size_t)r0 * fo + k0;
    wt += (size_t)k0 * fi;
    if (l > 0) {
        fl_real *prev = m->delta[l - 1] + (size_t)r0 * fi + c0;
        const fl_mlpk_ep ep = { 1, m->act, NULL, m->a[l - 1] + (size_t)r0 * fi + c0, fi };
        fl_mlpk_mmc(0, rn, cn, k1 - k0, dr, fo, wt + c0, fi, prev, fi, 0, &ep);
    } else {
        fl_mlpk_mmc(0, rn, cn, k1 - k0, dr, fo, wt + c0, fi, din + (size_t)r0 * fi + c0, fi, 1,
                    NULL);
    }
}

static void refresh_wt(fl_mlp *m, const fl_real *theta, uint32_t l)
{
    const uint32_t fi = m->width[l], fo = m->width[l + 1];
    if (fi > 1 && fo > 1) transpose(weights(m, theta, l), m->wt[l], fi, fo);
}

/* Waits for a flag set by another thread of the region. */
static void wait_flag(atomic_int *f)
{
    for (unsigned spin = 0; !atomic_load_explicit(f, memory_order_acquire); spin++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (spin > 4096) sched_yield(); /* the other thread may not be running */
    }
}

/* The backward for few rows, where a barrier per layer costs as much as
 * the layer: thread 0 runs the chain of deltas from the top layer down with
 * no barrier; thread 1 transposes the lower layers' W, then every thread
 * takes weight- and bias-gradient tasks, top layer first, each as soon as
 * its layer's delta is there (thread 0 joins when its chain is done).
 * Every task is the one of the layered schedule, so are the numbers. */
static void bwd_pipelined(fl_mlp *m, const fl_real *theta, fl_real *dtheta, uint32_t n,
                          const fl_real *dout, fl_real *din)
{
    const uint32_t nl = m->nl;
    uint32_t total = 0;
    for (uint32_t l = nl; l-- > 0;) {
        m->plan[l] = plan_layer(m, n, l, din != NULL);
        m->first[l] = total;
        total += m->plan[l].nw + 1;
        atomic_store_explicit(&m->d_ready[l], l + 1 == nl, memory_order_relaxed);
        atomic_store_explicit(&m->wt_ready[l], 0, memory_order_relaxed);
    }
    atomic_store_explicit(&m->next, 0, memory_order_relaxed);
#pragma omp parallel
    {
        const int me = omp_get_thread_num(), nth = omp_get_num_threads();
        if (me == (nth > 1 ? 1 : 0)) /* W^T of the layers below the top */
            for (uint32_t l = nl - 1; l-- > 0;)
                if (m->plan[l].nd) {
                    refresh_wt(m, theta, l);
                    atomic_store_explicit(&m->wt_ready[l], 1, memory_order_release);
                }
        if (me == 0) {
            for (uint32_t l = nl; l-- > 0;) {
                const bwd_plan *p = &m->plan[l];
                if (!p->nd) continue;
                if (l + 1 == nl) refresh_wt(m, theta, l);
                else wait_flag(&m->wt_ready[l]);
                for (uint32_t t = 0; t < p->nd; t++)
                    bwd_task(m, theta, dtheta, n, dout, din, l, p, p->nw + 1 + t);
                if (l > 0) atomic_store_explicit(&m->d_ready[l - 1], 1, memory_order_release);
            }
        }
        for (;;) {
            const uint32_t k = atomic_fetch_add_explicit(&m->next, 1, memory_order_relaxed);
            if (k >= total) break;
            uint32_t l = nl - 1;
            while (k >= m->first[l] + m->plan[l].nw + 1) l--;
            wait_flag(&m->d_ready[l]);
            bwd_task(m, theta, dtheta, n, dout, din, l, &m->plan[l], k - m->first[l]);
        }
    }
}

void fl_mlp_backward(fl_mlp *m, const fl_real *theta, fl_real *dtheta, uint32_t n,
                     const fl_real *dout, fl_real *din)
{
    const uint32_t nl = m->nl;
    const int par = want_parallel(m, n, 2);
    /* Measured at batch 100 (VAE 67-71k against 60-66k examples/s, IAF
     * +6-14%); with two threads the chain and the weight gradients are
     * about the same work at any row count. */
    if (par && (omp_get_max_threads() == 2 || n < 8 * ROW_TILE)) {
        bwd_pipelined(m, theta, dtheta, n, dout, din);
        return;
    }
    if (!par) {
        for (uint32_t l = nl; l-- > 0;) {
            bwd_plan p = plan_layer(m, n, l, din != NULL);
            if (p.nd) refresh_wt(m, theta, l);
            for (uint32_t t = 0, nt = p.nw + 1 + p.nd; t < nt; t++)
                bwd_task(m, theta, dtheta, n, dout, din, l, &p, t);
        }
        return;
    }
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (uint32_t l = 0; l < nl; l++)
            if (l > 0 || din) refresh_wt(m, theta, l);
        for (uint32_t l = nl; l-- > 0;) {
            bwd_plan p = plan_layer(m, n, l, din != NULL);
            const uint32_t nt = p.nw + 1 + p.nd;
            /* delta tasks first: the next layer waits for them */
#pragma omp for schedule(dynamic, 1)
            for (uint32_t k = 0; k < nt; k++) {
                uint32_t t = k < p.nd ? p.nw + 1 + k : k - p.nd;
                bwd_task(m, theta, dtheta, n, dout, din, l, &p, t);
            }
        }
    }
}
