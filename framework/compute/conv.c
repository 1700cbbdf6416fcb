/* conv.c - the host's convolution service: a chain of convolutions
 * ("units": a ResNet block is two of them plus a skip sum) on NHWC images,
 * each one matrix product over all pixels of the batch.
 *
 * Layout. Images are NHWC, so the P = n*h*w pixels of a batch form a
 * P x C matrix. A 1x1 convolution is then Y = X W + b as it stands; a 3x3
 * one is Y = col(X) W + b, where col(X) (P x 9C, im2col) holds each
 * output pixel's 3x3 neighbourhood, taps (ky, kx) then channels, and W is
 * (9 Cin x Cout) row-major with rows in that order. In NCHW the same
 * product needs one GEMM per image (or a transposed output); in NHWC the
 * whole batch is one matrix and the output is already in place
 * (bench_conv measures the two). Backward: dW = col(X)^T D, db = column
 * sums of D, and dX = col2im(D W^T) as a gather: each tile of input
 * pixels computes D W^T for the band of output pixels that read it into
 * a scratch per thread and sums the taps of each of its pixels, so tasks
 * write disjoint outputs and no P x 9C d col matrix is written.
 *
 * 3x3 stride-1 convolutions (all of Real NVP's and Glow's) skip im2col:
 * "direct" units sum the 9 taps of a zero-padded copy of the input in
 * registers (dk_run below: forward, dX with flipped taps, per-tap dW),
 * computing the real pixels only; im2col serves stride 2 and the tests'
 * cross-check (fl_conv_direct = -1).
 *
 * Tasks and threads. Every phase is cut into tasks whose shapes depend on
 * the problem only (TILE pixels of a product or gather; the dW sum over
 * pixels in chunks whose number depends on n only, the partial sums added
 * in chunk order by one task), each task one fl_gemm call (OpenBLAS
 * on one thread) plus element-wise work in a fixed order. So the same
 * calls compute the same numbers whatever the thread count: results are
 * bit-identical for 1 or N threads. One parallel region per forward and
 * per backward (a barrier per phase); small problems, and calls from
 * inside another parallel region, run the same tasks on the calling
 * thread. All buffers are allocated at create, sized for max_rows. */
#include <float.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/vmath.h>

#include "compute/blas.h"
#include "compute/conv.h"
#include "core/hostimpl.h"
#include "core/util.h"

enum {
    TILE = 256,        /* pixels per forward, 1x1 dX and gather task */
    CHUNK = 2048,      /* pixels per dW partial sum, at least */
    MAX_CHUNKS = 16,   /* at most this many dW partials (memory: chunks x |W|) */
};
/* Whether 3x3 stride-1 convolutions run direct (the 9 taps of a
 * zero-padded copy summed by dk_run) instead of im2col + one product
 * (K = 9 cin): 0 = by the rule below, 1 = all, -1 = none. Tests and
 * benchmarks set it before create. */
int fl_conv_direct = 0;
/* The rule (docs/performance.md): every 3x3 stride-1 convolution runs
 * direct, on the register-blocked kernel below (dk_run), which computes
 * only the real pixels and keeps its accumulators over all 9 taps. */
/* Direct tasks cover whole images, about this many padded pixels each. */
#define DIRECT_PIX 256
/* Batch norm: running averages r = (1 - m) r + m batch, and the eps added
 * to the variance (PyTorch's BatchNorm2d defaults, documented in host.h). */
#define BN_MOMENTUM 0.1
#define BN_EPS 1e-5
/* Below this many multiply-adds per call, stay on the calling thread. */
#define PAR_MIN_FMA 1e7
/* Forward products up to this many multiply-adds multiply by a transposed
 * copy of W (NT), larger ones by W (NN). OpenBLAS's SkylakeX small-matrix
 * path (M N K <= 100^3) calls malloc in every NN product (measured: one
 * per call for 256 x 4 x 576, none for 256 x 7 x 576) but not in NT ones;
 * NT also runs a 256 x 64 x 18 first layer 5x faster there, while NN is
 * ~10% faster for the large 3x3 products. */
#define NT_MAX_FMA 2e6

/* What a unit computes. */
enum { UK_CONV = 0, UK_UP = 1, UK_BN = 2 };

typedef struct unit {
    int kind;                /* UK_*: convolution, 2x upsampling, batch norm */
    int direct;              /* 3x3 stride 1 as 9 shifted products (no im2col) */
    int dwt;                 /* direct, few outputs: dW partials as [tap][cout][cin] */
    uint32_t grp;            /* direct: images per task */
    uint32_t idx;            /* its number among the units of its kind (names) */
    uint32_t k, stride;      /* conv: 3 or 1; 1 or 2. Others: 0, 1 */
    uint32_t cin, cout;      /* channels in and out */
    uint32_t hi, wi, ho, wo; /* image size in and out */
    uint32_t kk;             /* rows of W: k*k*cin (0 for UP, BN) */
    fl_act act;              /* after bias and skip; LINEAR = none */
    int skip;                /* buffer added to the output before act, -1 = none */
    int wn;                  /* weight-normalised: W = g v / |v| per column */
    size_t w_off, g_off, b_off; /* W (or v), g, b in the component block;
                                   BN: gamma at w_off, beta at b_off */
    size_t mean_off, var_off;   /* BN: running averages (FL_PARAM_STATE) */
    double *bn;              /* BN: 5 x cout: mu, 1/sqrt(var + eps), gamma /
                                sqrt(var + eps) of the last forward, then
                                the backward's sum d / M, sum d xh / M */
    fl_real *weff;           /* wn: the effective W (kk x cout), per forward */
    fl_real *wt;             /* im2col: W^T (cout x kk), per forward, for NT products;
                                direct: W_t^T per tap (9 x cout x cin), for dX */
    double *inv;             /* wn: 1 / |v_j| (cout), per forward */
    int skip_beta, in_beta;  /* backward: the target already holds a sum */
} unit;

struct fl_conv {
    uint32_t nu;             /* units */
    unit *u;
    uint32_t max_rows;
    /* Buffers b = 0..nu: 0 is the (masked) input, b the output of unit
     * b-1; shape bh x bw x bc per image. */
    uint32_t *bh, *bw, *bc;
    fl_real **a;             /* activations: a[0] the masked input copy or
                                NULL; a[nu] NULL when the last unit is linear
                                (it writes `out`) */
    fl_real **g;             /* d loss / d buffer; g[nu] NULL when linear */
    fl_real *mask;           /* h*w*c copy or NULL */
    int mask_fused;          /* mask applied inside unit 0's im2col */
    fl_real *col;            /* im2col (P x kk of the widest 3x3 unit) */
    fl_real *xp, *dp;        /* direct units: zero-padded input and delta,
                                max_rows x (h+2) x (w+2) x channels */
    fl_real *dscr;           /* per thread: d col of one gather tile's band,
                                or a direct task's output rows */
    size_t dscr_slot;        /* elements per thread */
    int nslots;              /* threads a backward may use (the scratch slots) */
    fl_real *part;           /* dW partial sums: MAX_CHUNKS x |W| at most */
    fl_real *tw;             /* dwt units: their summed dW transposed back */
    double *dbacc;           /* bias gradient sums (max cout) */
    double *bnpart;          /* BN: per tile partial sums, tiles x 2 cout */
    /* the current call (one at a time) */
    uint32_t n;
    fl_mode mode;            /* of the last forward (BN) */
    fl_real *state;          /* TRAIN forward: where BN's averages move, or NULL */
    const fl_real *theta, *in, *dout;
    fl_real *out, *dtheta, *din;
};

void fl_conv_free(fl_conv *c)
{
    if (!c) return;
    for (uint32_t i = 0; c->u && i < c->nu; i++) {
        fl_free(c->u[i].weff);
        fl_free(c->u[i].wt);
        free(c->u[i].inv);
        free(c->u[i].bn);
    }
    for (uint32_t b = 0; b <= c->nu; b++) {
        if (c->a) fl_free(c->a[b]);
        if (c->g) fl_free(c->g[b]);
    }
    free(c->u);
    free(c->bh);
    free(c->bw);
    free(c->bc);
    free(c->a);
    free(c->g);
    fl_free(c->mask);
    fl_free(c->col);
    fl_free(c->xp);
    fl_free(c->dp);
    fl_free(c->dscr);
    fl_free(c->part);
    fl_free(c->tw);
    free(c->dbacc);
    free(c->bnpart);
    free(c);
}

void fl_conv_out_shape(const fl_conv *c, uint32_t *ch, uint32_t *h, uint32_t *w)
{
    *ch = c->bc[c->nu];
    *h = c->bh[c->nu];
    *w = c->bw[c->nu];
}

double fl_conv_fmas(const fl_conv *c, uint32_t n)
{
    double f = 0;
    for (uint32_t i = 0; i < c->nu; i++) {
        const unit *u = &c->u[i];
        f += (double)n * u->ho * u->wo * u->kk * u->cout;
    }
    return f;
}

/* ---- create ------------------------------------------------------------ */

static int act_ok(fl_act a) { return a == FL_ACT_RELU || a == FL_ACT_ELU || a == FL_ACT_TANH; }

/* Appends a unit of `kind` reading buffer nu (shape bh/bw/bc[nu]); the
 * caller has room for it. k and stride are the convolution's (k = 0 for
 * the others); UP and BN keep the channels (cout is ignored). */
static void add_unit(fl_conv *c, int kind, uint32_t k, uint32_t stride, uint32_t cout, int skip)
{
    unit *u = &c->u[c->nu];
    const uint32_t b = c->nu;
    uint32_t idx = 0;
    for (uint32_t i = 0; i < c->nu; i++) idx += c->u[i].kind == kind;
    u->kind = kind;
    u->idx = idx;
    u->k = k;
    u->stride = stride;
    u->cin = c->bc[b];
    if (kind != UK_CONV) cout = u->cin;
    u->cout = cout;
    u->hi = c->bh[b];
    u->wi = c->bw[b];
    u->ho = kind == UK_UP ? 2 * u->hi : stride == 2 ? (u->hi + 1) / 2 : u->hi;
    u->wo = kind == UK_UP ? 2 * u->wi : stride == 2 ? (u->wi + 1) / 2 : u->wi;
    u->kk = k * k * u->cin;
    u->act = FL_ACT_LINEAR;
    u->skip = skip;
    c->bc[b + 1] = cout;
    c->bh[b + 1] = u->ho;
    c->bw[b + 1] = u->wo;
    c->nu++;
}

/* Checks the spec and lays out the units; 0 with the message set. */
static int plan(fl_conv *c, fl_ctx *cx, const fl_conv_spec *s, const char *nm)
{
    const fl_host *h = fl_host_table();
    if (s->c == 0 || s->h == 0 || s->w == 0) {
        h->error(cx, "conv net '%s': input shape c=%u h=%u w=%u has a zero dimension", nm, s->c,
                 s->h, s->w);
        return 0;
    }
    if (s->n_layers == 0 || !s->layers) {
        h->error(cx, "conv net '%s' has no layers", nm);
        return 0;
    }
    if (s->flags & ~(uint32_t)(FL_CONV_WEIGHT_NORM | FL_CONV_ZERO_LAST)) {
        h->error(cx, "conv net '%s': unknown flags 0x%x", nm,
                 s->flags & ~(uint32_t)(FL_CONV_WEIGHT_NORM | FL_CONV_ZERO_LAST));
        return 0;
    }
    uint32_t units = 0;
    for (uint32_t i = 0; i < s->n_layers; i++)
        units += s->layers[i].op == FL_CONV_RESNET ? 2 : 1;
    c->u = calloc(units, sizeof *c->u);
    c->bh = calloc(units + 1, sizeof *c->bh);
    c->bw = calloc(units + 1, sizeof *c->bw);
    c->bc = calloc(units + 1, sizeof *c->bc);
    if (!c->u || !c->bh || !c->bw || !c->bc) {
        h->error(cx, "out of memory creating conv net '%s'", nm);
        return 0;
    }
    c->bc[0] = s->c;
    c->bh[0] = s->h;
    c->bw[0] = s->w;
    int prev_act = 1; /* an activation may not come first, nor twice in a row */
    for (uint32_t i = 0; i < s->n_layers; i++) {
        const fl_conv_layer *L = &s->layers[i];
        const uint32_t cin = c->bc[c->nu];
        const uint32_t stride = L->stride ? L->stride : 1;
        switch (L->op) {
        case FL_CONV_3X3:
        case FL_CONV_1X1:
            if (L->channels == 0) {
                h->error(cx, "conv net '%s', layer %u: a convolution with zero output channels",
                         nm, i);
                return 0;
            }
            if (stride > 2 || (stride == 2 && L->op == FL_CONV_1X1)) {
                h->error(cx, "conv net '%s', layer %u: stride %u (3x3: 1 or 2; 1x1: 1)", nm, i,
                         L->stride);
                return 0;
            }
            if (L->act != FL_ACT_LINEAR) {
                h->error(cx, "conv net '%s', layer %u: a convolution takes no activation; add a "
                             "FL_CONV_ACT layer after it", nm, i);
                return 0;
            }
            add_unit(c, UK_CONV, L->op == FL_CONV_3X3 ? 3 : 1, stride, L->channels, -1);
            prev_act = 0;
            break;
        case FL_CONV_RESNET: {
            if (stride != 1) {
                h->error(cx, "conv net '%s', layer %u: a ResNet block has stride 1", nm, i);
                return 0;
            }
            if (!act_ok(L->act)) {
                h->error(cx, "conv net '%s', layer %u: unknown activation %d for the ResNet block "
                             "(FL_ACT_RELU, FL_ACT_ELU or FL_ACT_TANH)", nm, i, (int)L->act);
                return 0;
            }
            const int src = (int)c->nu;
            add_unit(c, UK_CONV, 3, 1, L->channels ? L->channels : cin, -1);
            c->u[c->nu - 1].act = L->act;
            add_unit(c, UK_CONV, 3, 1, cin, src);
            prev_act = 0;
            break;
        }
        case FL_CONV_ACT:
            if (!act_ok(L->act)) {
                h->error(cx, "conv net '%s', layer %u: unknown activation %d (FL_ACT_RELU, "
                             "FL_ACT_ELU or FL_ACT_TANH)", nm, i, (int)L->act);
                return 0;
            }
            if (prev_act) {
                h->error(cx, "conv net '%s', layer %u: an activation must follow a convolution, a "
                             "ResNet block, an upsampling or a batch norm (%s)", nm, i,
                         i ? "not another activation" : "it is first");
                return 0;
            }
            if (L->channels != 0 || L->stride > 1) {
                h->error(cx, "conv net '%s', layer %u: an activation has no channels or stride", nm,
                         i);
                return 0;
            }
            c->u[c->nu - 1].act = L->act;
            prev_act = 1;
            break;
        case FL_CONV_UPSAMPLE:
        case FL_CONV_BATCHNORM:
            if (L->channels != 0 || L->stride > 1 || L->act != FL_ACT_LINEAR) {
                h->error(cx, "conv net '%s', layer %u: %s has no channels, stride or activation (add "
                             "a FL_CONV_ACT layer after it)", nm, i,
                         L->op == FL_CONV_UPSAMPLE ? "an upsampling" : "a batch norm");
                return 0;
            }
            add_unit(c, L->op == FL_CONV_UPSAMPLE ? UK_UP : UK_BN, 0, 1, 0, -1);
            prev_act = 0;
            break;
        default:
            h->error(cx, "conv net '%s', layer %u: unknown layer type %d (FL_CONV_3X3, FL_CONV_1X1, "
                         "FL_CONV_RESNET, FL_CONV_ACT, FL_CONV_UPSAMPLE or FL_CONV_BATCHNORM)", nm, i,
                     (int)L->op);
            return 0;
        }
    }
    if (s->flags & FL_CONV_ZERO_LAST) {
        const fl_conv_op last = s->layers[s->n_layers - 1].op;
        if (last != FL_CONV_3X3 && last != FL_CONV_1X1) {
            h->error(cx, "conv net '%s': FL_CONV_ZERO_LAST needs a 3x3 or 1x1 convolution as the "
                         "last layer (layer %u is not one)", nm, s->n_layers - 1);
            return 0;
        }
    }
    /* GEMM dimensions are ints */
    for (uint32_t i = 0; i < c->nu; i++) {
        const unit *u = &c->u[i];
        if ((double)c->max_rows * u->ho * u->wo * u->kk > (double)INT_MAX ||
            (double)c->max_rows * u->ho * u->wo * u->cout > (double)INT_MAX ||
            (double)c->max_rows * u->hi * u->wi * u->cin > (double)INT_MAX) {
            h->error(cx, "conv net '%s': %u images of this shape are too large (a buffer exceeds "
                         "2^31 elements); lower the batch", nm, c->max_rows);
            return 0;
        }
    }
    return 1;
}

static uint32_t n_tiles(size_t p) { return (uint32_t)((p + TILE - 1) / TILE); }

static void tile_of(size_t p, uint32_t t, size_t *p0, uint32_t *np)
{
    *p0 = (size_t)t * TILE;
    *np = (uint32_t)(p - *p0 < TILE ? p - *p0 : TILE);
}

/* The output pixels [*q0, *q1) of 3x3 unit u whose taps read input pixels
 * [p0, p0 + np): output row oy reads input rows oy*s - 1 .. oy*s + 1, so
 * input row iy is read by rows ceil((iy - 1) / s) .. floor((iy + 1) / s);
 * whole output rows, from the first input pixel's image to the last's. */
static void band_of(const unit *u, size_t p0, uint32_t np, size_t *q0, size_t *q1)
{
    const size_t hw = (size_t)u->hi * u->wi, a = p0, b = p0 + np - 1;
    const int64_t s = u->stride, ya = (int64_t)((a % hw) / u->wi), yb = (int64_t)((b % hw) / u->wi);
    const int64_t lo = ya >= 1 ? (ya - 1 + s - 1) / s : 0;
    const int64_t hi = (yb + 1) / s < (int64_t)u->ho - 1 ? (yb + 1) / s : (int64_t)u->ho - 1;
    *q0 = ((a / hw) * u->ho + (size_t)lo) * u->wo;
    *q1 = ((b / hw) * u->ho + (size_t)hi + 1) * u->wo;
}

static uint32_t n_chunks(size_t p)
{
    size_t k = (p + CHUNK - 1) / CHUNK;
    return (uint32_t)(k < 1 ? 1 : k > MAX_CHUNKS ? MAX_CHUNKS : k);
}

fl_conv *fl_conv_create(fl_ctx *cx, const fl_conv_spec *s, uint32_t max_rows)
{
    const fl_host *h = fl_host_table();
    fl_runtime_init();
    if (!s) {
        h->error(cx, "conv net: NULL spec");
        return NULL;
    }
    if (s->struct_size < FL_MEMBER_END(fl_conv_spec, mask)) {
        h->error(cx, "conv net: spec struct_size %u is smaller than ABI 1.3's %zu (set it to "
                     "sizeof(fl_conv_spec))", s->struct_size, FL_MEMBER_END(fl_conv_spec, mask));
        return NULL;
    }
    const char *nm = s->name && *s->name ? s->name : NULL;
    if (!nm) {
        h->error(cx, "conv net: the spec has no name (the parameters' prefix)");
        return NULL;
    }
    fl_conv *c = calloc(1, sizeof *c);
    if (!c) {
        h->error(cx, "out of memory creating conv net '%s'", nm);
        return NULL;
    }
    c->max_rows = max_rows ? max_rows : 1;
    if (!plan(c, cx, s, nm)) {
        fl_conv_free(c);
        return NULL;
    }
    const uint32_t nu = c->nu, R = c->max_rows;
    c->a = calloc(nu + 1, sizeof *c->a);
    c->g = calloc(nu + 1, sizeof *c->g);
    if (!c->a || !c->g) goto oom;
    const int wn_all = (s->flags & FL_CONV_WEIGHT_NORM) != 0;
    const int zero_last = (s->flags & FL_CONV_ZERO_LAST) != 0;
    size_t col_max = 0, part_max = 0, bnpart_max = 0, xp_max = 0, dp_max = 0, tw_max = 0;
    uint32_t cout_max = 1;
    for (uint32_t i = 0; i < nu; i++) {
        unit *u = &c->u[i];
        const int last = i + 1 == nu;
        const size_t pout = (size_t)R * u->ho * u->wo;
        if (u->cout > cout_max) cout_max = u->cout;
        if (!last || u->act != FL_ACT_LINEAR) {
            c->a[i + 1] = fl_alloc(pout * u->cout * sizeof(fl_real));
            c->g[i + 1] = fl_alloc(pout * u->cout * sizeof(fl_real));
            if (!c->a[i + 1] || !c->g[i + 1]) goto oom;
        }
        if (u->kind == UK_UP) continue;
        char name[256];
        if (u->kind == UK_BN) {
            const struct { const char *what; size_t *off; fl_init init; uint32_t flags; } bp[4] = {
                { "gamma", &u->w_off, FL_INIT_CONST, 0 },
                { "beta", &u->b_off, FL_INIT_ZERO, 0 },
                { "mean", &u->mean_off, FL_INIT_ZERO, FL_PARAM_STATE },
                { "var", &u->var_off, FL_INIT_CONST, FL_PARAM_STATE },
            };
            for (int k = 0; k < 4; k++) {
                snprintf(name, sizeof name, "%s.%s%u", nm, bp[k].what, u->idx);
                fl_param_spec ps = { name, u->cout, bp[k].init, 0, 0, 1.0, bp[k].flags };
                if (h->param(cx, &ps, bp[k].off) != FL_OK) goto fail;
            }
            if (!(u->bn = calloc(5 * (size_t)u->cout, sizeof(double)))) goto oom;
            const size_t bp_len = (size_t)n_tiles(pout) * 2 * u->cout;
            if (bp_len > bnpart_max) bnpart_max = bp_len;
            continue;
        }
        const int zero = last && zero_last;
        u->wn = wn_all && !zero;
        const double fan = 1.0 / sqrt((double)u->kk);
        snprintf(name, sizeof name, "%s.%c%u", nm, u->wn ? 'v' : 'W', u->idx);
        fl_param_spec w = { name, (size_t)u->kk * u->cout, zero ? FL_INIT_ZERO : FL_INIT_UNIFORM,
                            u->kk, u->cout, fan, 0 };
        if (h->param(cx, &w, &u->w_off) != FL_OK) goto fail;
        if (u->wn) {
            snprintf(name, sizeof name, "%s.g%u", nm, u->idx);
            fl_param_spec g = { name, u->cout, FL_INIT_CONST, 0, 0, 1.0, 0 };
            if (h->param(cx, &g, &u->g_off) != FL_OK) goto fail;
            u->weff = fl_alloc((size_t)u->kk * u->cout * sizeof(fl_real));
            u->inv = calloc(u->cout, sizeof(double));
            if (!u->weff || !u->inv) goto oom;
        }
        if (!(u->wt = fl_alloc((size_t)u->kk * u->cout * sizeof(fl_real)))) goto oom;
        snprintf(name, sizeof name, "%s.b%u", nm, u->idx);
        fl_param_spec b = { name, u->cout, zero ? FL_INIT_ZERO : FL_INIT_UNIFORM, 0, 0, fan, 0 };
        if (h->param(cx, &b, &u->b_off) != FL_OK) goto fail;
        u->direct = u->k == 3 && u->stride == 1 && fl_conv_direct >= 0;
        if (u->direct) {
            const size_t blk = (size_t)(u->hi + 2) * (u->wi + 2);
            /* dW with rows = output channels (a vector of input channels
             * per FMA) when there are few of them */
            u->dwt = u->cout <= 8 && u->cin > u->cout;
            if (u->dwt && (size_t)u->kk * u->cout > tw_max) tw_max = (size_t)u->kk * u->cout;
            u->grp = blk >= DIRECT_PIX ? 1 : (uint32_t)(DIRECT_PIX / blk);
            if (R * blk * u->cin > xp_max) xp_max = R * blk * u->cin;
            if (R * blk * u->cout > dp_max) dp_max = R * blk * u->cout;
        } else if (u->k == 3 && pout * u->kk > col_max) {
            col_max = pout * u->kk;
        }
        const size_t part = (size_t)n_chunks(pout) * u->kk * u->cout;
        if (part > part_max) part_max = part;
    }
    const size_t in_size = (size_t)s->h * s->w * s->c;
    c->g[0] = fl_alloc((size_t)R * in_size * sizeof(fl_real));
    if (!c->g[0]) goto oom;
    if (s->mask) {
        c->mask = fl_alloc(in_size * sizeof(fl_real));
        if (!c->mask) goto oom;
        memcpy(c->mask, s->mask, in_size * sizeof(fl_real));
        int skip0 = 0;
        for (uint32_t i = 0; i < nu; i++) skip0 |= c->u[i].skip == 0;
        /* A 3x3 first layer reads the input only through im2col, which
         * multiplies by the mask as it copies; otherwise a masked copy. */
        c->mask_fused = c->u[0].kind == UK_CONV && c->u[0].k == 3 && !skip0;
        if (!c->mask_fused && !(c->a[0] = fl_alloc((size_t)R * in_size * sizeof(fl_real))))
            goto oom;
    }
    c->dbacc = calloc(cout_max, sizeof(double));
    c->part = fl_alloc((part_max ? part_max : 1) * sizeof(fl_real));
    if (!c->dbacc || !c->part) goto oom;
    if (tw_max && !(c->tw = fl_alloc(tw_max * sizeof(fl_real)))) goto oom;
    if (bnpart_max && !(c->bnpart = malloc(bnpart_max * sizeof(double)))) goto oom;
    if (col_max) {
        c->col = fl_alloc(col_max * sizeof(fl_real));
        if (!c->col) goto oom;
    }
    if (xp_max && (!(c->xp = fl_alloc(xp_max * sizeof(fl_real))) ||
                   !(c->dp = fl_alloc(dp_max * sizeof(fl_real)))))
        goto oom;
    /* d col is computed per gather tile, for the band of output pixels
     * that read the tile, into a scratch per thread (L2-sized, not a
     * P x kk matrix written and read back); a backward runs on at most
     * nslots threads. */
    c->nslots = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    for (uint32_t i = 0; i < nu; i++) {
        const unit *u = &c->u[i];
        if (u->kind != UK_CONV || u->k != 3) continue;
        if (u->direct) continue; /* the kernel writes its outputs in place */
        const size_t P = (size_t)R * u->hi * u->wi;
        for (uint32_t t = 0, nt = n_tiles(P); t < nt; t++) {
            size_t p0, q0, q1;
            uint32_t np;
            tile_of(P, t, &p0, &np);
            band_of(u, p0, np, &q0, &q1);
            if ((q1 - q0) * u->kk > c->dscr_slot) c->dscr_slot = (q1 - q0) * u->kk;
        }
    }
    if (c->dscr_slot) {
        c->dscr_slot = (c->dscr_slot + 15) / 16 * 16; /* 64-byte aligned slots */
        if (!(c->dscr = fl_alloc((size_t)c->nslots * c->dscr_slot * sizeof(fl_real)))) goto oom;
    }
    /* Backward order: units last to first, each first adds its skip, then
     * its input gradient. The first sum into a buffer writes, later ones
     * add. */
    int *written = calloc(nu + 1, sizeof *written);
    if (!written) goto oom;
    for (uint32_t i = nu; i-- > 0;) {
        unit *u = &c->u[i];
        if (u->skip >= 0) {
            u->skip_beta = written[u->skip];
            written[u->skip] = 1;
        }
        u->in_beta = written[i];
        written[i] = 1;
    }
    free(written);
    return c;
oom:
    h->error(cx, "out of memory creating conv net '%s' for %u images", nm, R);
fail:
    fl_conv_free(c);
    return NULL;
}

/* ---- the direct kernel ----------------------------------------------------
 *
 * dk_run: C (m x n, row-major, ldc) = [C +] sum over taps t < nt, rows r <
 * kr, k < kc (in that order) of A(i; t, r, k) B(t, r, k; j), with
 *   A(i; t, r, k) = a[aoff[t] + r sar + k sak + i sai],
 *   B(t, r, k; j) = b[boff[t] + r sbr + k ldb + j].
 * One shape covers the three products of a 3x3 stride-1 convolution on
 * zero-padded NHWC images: the forward (rows = output pixels along an image
 * row, taps = the 9 shifted inputs, k = input channels), dX (the same on the
 * padded delta with the taps flipped and W_t^T) and dW_t (rows = input
 * channels, r and k = image rows and columns of the output pixels). The
 * accumulators stay in registers over all taps, rows and k, so C is written
 * once; each element of C is summed in that fixed order, so the numbers
 * depend on the shapes only. */
typedef struct dk_args {
    uint32_t nt, kr, kc;
    const fl_real *a;
    const ptrdiff_t *aoff;
    size_t sai, sak, sar;
    const fl_real *b;
    const ptrdiff_t *boff;
    size_t ldb, sbr;
    fl_real *c;
    size_t ldc;
    int load;
} dk_args;

#if defined(__AVX512F__) && !defined(FL_REAL_DOUBLE)
#define DK_SIMD 1
#include <immintrin.h>
enum { DK_MR = 14 }; /* 14 rows x 2 vectors: 28 accumulators, 2 of B */

#define DK_ROW(i) __m512 c##i##0 = z, c##i##1 = z;
#define DK_LOAD(i)                                                                         \
    if (mr > i) {                                                                          \
        const float *ci = A->c + (size_t)(i) * A->ldc;                                     \
        c##i##0 = _mm512_maskz_loadu_ps(nv == 1 ? tail : 0xffff, ci);                      \
        if (nv > 1) c##i##1 = _mm512_maskz_loadu_ps(tail, ci + 16);                        \
    }
#define DK_FMA(i)                                                                          \
    if (mr > i) {                                                                          \
        const __m512 av = _mm512_set1_ps(ak[(size_t)(i) * sai]);                           \
        c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0);                                        \
        if (nv > 1) c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);                            \
    }
#define DK_STORE(i)                                                                        \
    if (mr > i) {                                                                          \
        float *ci = A->c + (size_t)(i) * A->ldc;                                           \
        _mm512_mask_storeu_ps(ci, nv == 1 ? tail : 0xffff, c##i##0);                       \
        if (nv > 1) _mm512_mask_storeu_ps(ci + 16, tail, c##i##1);                         \
    }
#define DK_ALL(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)

static inline __attribute__((always_inline)) void dkern(const int mr, const int nv,
                                                        __mmask16 tail, const dk_args *A)
{
    const __m512 z = _mm512_setzero_ps();
    DK_ALL(DK_ROW)
    if (A->load) {
        DK_ALL(DK_LOAD)
    }
    const size_t sai = A->sai, sak = A->sak, ldb = A->ldb;
    for (uint32_t t = 0; t < A->nt; t++)
        for (uint32_t r = 0; r < A->kr; r++) {
            const float *ar = A->a + A->aoff[t] + r * A->sar;
            const float *br = A->b + A->boff[t] + r * A->sbr;
            for (uint32_t k = 0; k < A->kc; k++) {
                const float *ak = ar + k * sak, *bk = br + k * ldb;
                const __m512 b0 = _mm512_maskz_loadu_ps(nv == 1 ? tail : 0xffff, bk);
                const __m512 b1 = nv > 1 ? _mm512_maskz_loadu_ps(tail, bk + 16) : z;
                DK_ALL(DK_FMA)
            }
        }
    DK_ALL(DK_STORE)
}

typedef void (*dk_fn)(__mmask16, const dk_args *);
#define DK(r, v)                                                                           \
    static void dk_##r##_##v(__mmask16 t, const dk_args *A) { dkern(r, v, t, A); }
#define DK_R(r) DK(r, 1) DK(r, 2)
DK_R(1) DK_R(2) DK_R(3) DK_R(4) DK_R(5) DK_R(6) DK_R(7)
DK_R(8) DK_R(9) DK_R(10) DK_R(11) DK_R(12) DK_R(13) DK_R(14)
#define DK_E(r) { dk_##r##_1, dk_##r##_2 }
static const dk_fn dk_fns[DK_MR][2] = { DK_E(1), DK_E(2), DK_E(3), DK_E(4), DK_E(5),
                                        DK_E(6), DK_E(7), DK_E(8), DK_E(9), DK_E(10),
                                        DK_E(11), DK_E(12), DK_E(13), DK_E(14) };
#else
enum { DK_MR = 14 };
#endif

/* C (m x n) as above, m <= DK_MR, any n: panels of 32 columns. */
static void dk_run(uint32_t m, uint32_t n, const dk_args *A0)
{
#ifdef DK_SIMD
    dk_args A = *A0;
    for (uint32_t j0 = 0; j0 < n; j0 += 32) {
        const uint32_t nj = n - j0 < 32 ? n - j0 : 32, nv = (nj + 15) / 16;
        const uint32_t rem = nj - 16 * (nv - 1);
        const __mmask16 tail = (__mmask16)(rem == 16 ? 0xffff : (1u << rem) - 1);
        A.b = A0->b + j0;
        A.c = A0->c + j0;
        dk_fns[m - 1][nv - 1](tail, &A);
    }
#else
    const dk_args *A = A0;
    for (uint32_t i = 0; i < m; i++)
        for (uint32_t j = 0; j < n; j++) {
            fl_real s = A->load ? A->c[(size_t)i * A->ldc + j] : 0;
            for (uint32_t t = 0; t < A->nt; t++)
                for (uint32_t r = 0; r < A->kr; r++) {
                    const fl_real *ar = A->a + A->aoff[t] + r * A->sar + (size_t)i * A->sai;
                    const fl_real *br = A->b + A->boff[t] + r * A->sbr + j;
                    for (uint32_t k = 0; k < A->kc; k++) s += ar[k * A->sak] * br[k * A->ldb];
                }
            A->c[(size_t)i * A->ldc + j] = s;
        }
#endif
}


/* Narrow products (n <= DOT_MAXN outputs: a Real NVP net's last forward,
 * its first dX): per pixel q < m and output j,
 *   c[q n + j] = [c +] sum_t sum_k a[aoff[t] + q ch + k] bd[(t n + j) ch + k],
 * k < ch contiguous in both, 16 lanes at a time, the lanes summed at the
 * end (a fixed order: the numbers depend on the shapes only). The row
 * kernel would spend a whole vector of FMAs per k on n useful lanes. */
enum { DOT_MAXN = 4 };
#ifdef DK_SIMD
static inline __attribute__((always_inline)) void dot_px(const int n, uint32_t ch,
                                                         const float *a, const ptrdiff_t *aoff,
                                                         const float *bd, float *c, int load)
{
    const uint32_t nk = (ch + 15) / 16, rem = ch - 16 * (nk - 1);
    const __mmask16 tail = (__mmask16)(rem == 16 ? 0xffff : (1u << rem) - 1);
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (uint32_t t = 0; t < 9; t++) {
        const float *ap = a + aoff[t], *bt = bd + (size_t)t * n * ch;
        for (uint32_t kb = 0; kb < nk; kb++) {
            const __mmask16 mk = kb + 1 == nk ? tail : 0xffff;
            const __m512 av = _mm512_maskz_loadu_ps(mk, ap + 16 * kb);
            s0 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mk, bt + 16 * kb), s0);
            if (n > 1) s1 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mk, bt + ch + 16 * kb), s1);
            if (n > 2)
                s2 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mk, bt + 2 * ch + 16 * kb), s2);
            if (n > 3)
                s3 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(mk, bt + 3 * ch + 16 * kb), s3);
        }
    }
    const float v[4] = { _mm512_reduce_add_ps(s0), n > 1 ? _mm512_reduce_add_ps(s1) : 0,
                         n > 2 ? _mm512_reduce_add_ps(s2) : 0,
                         n > 3 ? _mm512_reduce_add_ps(s3) : 0 };
    for (int j = 0; j < n; j++) c[j] = load ? c[j] + v[j] : v[j];
}
#endif

static void dot_run(uint32_t m, uint32_t n, uint32_t ch, const fl_real *a, const ptrdiff_t *aoff,
                    const fl_real *bd, fl_real *c, int load)
{
    for (uint32_t q = 0; q < m; q++) {
        const fl_real *aq = a + (size_t)q * ch;
        fl_real *cq = c + (size_t)q * n;
#ifdef DK_SIMD
        switch (n) {
        case 1: dot_px(1, ch, aq, aoff, bd, cq, load); break;
        case 2: dot_px(2, ch, aq, aoff, bd, cq, load); break;
        case 3: dot_px(3, ch, aq, aoff, bd, cq, load); break;
        default: dot_px(4, ch, aq, aoff, bd, cq, load); break;
        }
#else
        for (uint32_t j = 0; j < n; j++) {
            fl_real sum = 0;
            for (uint32_t t = 0; t < 9; t++) {
                const fl_real *ap = aq + aoff[t], *bt = bd + ((size_t)t * n + j) * ch;
                for (uint32_t k = 0; k < ch; k++) sum += ap[k] * bt[k];
            }
            cq[j] = load ? cq[j] + sum : sum;
        }
#endif
    }
}

/* ---- element-wise pieces ------------------------------------------------ */

/* Buffer b as read: the input, its masked copy, an activation, or out. */
static const fl_real *buf(const fl_conv *c, uint32_t b)
{
    if (b == 0) return c->a[0] ? c->a[0] : c->in;
    if (b == c->nu && !c->a[b]) return c->out;
    return c->a[b];
}

static const fl_real *weights(const fl_conv *c, const unit *u)
{
    return u->wn ? u->weff : c->theta + u->w_off;
}

/* Rows [p0, p0 + np) of col(X) for unit u (X = buffer `x`, the mask
 * applied when it is fused): dst row q holds the 3x3 neighbourhood of
 * output pixel p0 + q, taps (ky, kx) in order, cin channels each, zeros
 * outside the image. */
static void im2col(const unit *u, const fl_real *x, const fl_real *mask,
                   size_t p0, uint32_t np, fl_real *restrict dst)
{
    const uint32_t cin = u->cin, s = u->stride;
    const size_t hw = (size_t)u->ho * u->wo;
    for (uint32_t q = 0; q < np; q++) {
        const size_t p = p0 + q, img = p / hw, r = p % hw;
        const uint32_t oy = (uint32_t)(r / u->wo), ox = (uint32_t)(r % u->wo);
        fl_real *row = dst + (size_t)q * u->kk;
        for (uint32_t ky = 0; ky < 3; ky++) {
            const int64_t iy = (int64_t)oy * s + ky - 1;
            for (uint32_t kx = 0; kx < 3; kx++) {
                const int64_t ix = (int64_t)ox * s + kx - 1;
                fl_real *restrict d = row + (ky * 3 + kx) * cin;
                if (iy < 0 || iy >= u->hi || ix < 0 || ix >= u->wi) {
                    memset(d, 0, cin * sizeof *d);
                    continue;
                }
                const size_t pix = (size_t)iy * u->wi + (size_t)ix;
                const fl_real *restrict src = x + (img * u->hi * u->wi + pix) * cin;
                if (mask) {
                    const fl_real *restrict m = mask + pix * cin;
                    for (uint32_t ch = 0; ch < cin; ch++) d[ch] = src[ch] * m[ch];
                } else {
                    memcpy(d, src, cin * sizeof *d);
                }
            }
        }
    }
}

/* y = act(y), elements [0, len). */
static void act_fwd(fl_real *restrict y, size_t len, fl_act act)
{
    switch (act) {
    case FL_ACT_RELU:
        for (size_t i = 0; i < len; i++) y[i] = y[i] > 0 ? y[i] : 0;
        break;
    case FL_ACT_TANH:
        for (size_t i = 0; i < len; i++) y[i] = fl_tanh(y[i]);
        break;
    case FL_ACT_ELU:
        for (size_t i = 0; i < len; i++) y[i] = y[i] > 0 ? y[i] : fl_expm1(y[i]);
        break;
    default:
        break;
    }
}

/* d = g * act'(y), with the derivative written through the output y; d
 * may be g (in place). */
static void act_bwd(fl_real *d, const fl_real *g, const fl_real *restrict y,
                    size_t len, fl_act act)
{
    switch (act) {
    case FL_ACT_RELU:
        for (size_t i = 0; i < len; i++) d[i] = y[i] > 0 ? g[i] : 0;
        break;
    case FL_ACT_TANH:
        for (size_t i = 0; i < len; i++) d[i] = g[i] * (1 - y[i] * y[i]);
        break;
    case FL_ACT_ELU:
        for (size_t i = 0; i < len; i++) d[i] = g[i] * (y[i] > 0 ? 1 : y[i] + 1);
        break;
    default:
        if (d != g) memcpy(d, g, len * sizeof *d);
        break;
    }
}

/* ---- forward ------------------------------------------------------------ */

/* Effective weights of the weight-normalised units: W = g v / |v| per
 * output channel, the norms summed in double in row order; then W^T of
 * every unit. */
static void norm_weights(fl_conv *c)
{
    for (uint32_t i = 0; i < c->nu; i++) {
        unit *u = &c->u[i];
        if (u->kind != UK_CONV) continue;
        if (u->wn) {
            const fl_real *v = c->theta + u->w_off, *g = c->theta + u->g_off;
            for (uint32_t j = 0; j < u->cout; j++) u->inv[j] = 0;
            for (uint32_t k = 0; k < u->kk; k++)
                for (uint32_t j = 0; j < u->cout; j++) {
                    const double x = v[(size_t)k * u->cout + j];
                    u->inv[j] += x * x;
                }
            for (uint32_t j = 0; j < u->cout; j++)
                u->inv[j] = u->inv[j] > 0 ? 1 / sqrt(u->inv[j]) : 0;
            for (uint32_t k = 0; k < u->kk; k++)
                for (uint32_t j = 0; j < u->cout; j++) {
                    const size_t e = (size_t)k * u->cout + j;
                    u->weff[e] = (fl_real)(g[j] * u->inv[j] * v[e]);
                }
        }
        const fl_real *w = weights(c, u);
        if (u->direct) { /* per tap: wt[(t cout + j) cin + ci] = W[(t cin + ci) cout + j] */
            const uint32_t ci_n = u->cin, co_n = u->cout;
            for (uint32_t t = 0; t < 9; t++)
                for (uint32_t ci = 0; ci < ci_n; ci++)
                    for (uint32_t j = 0; j < co_n; j++)
                        u->wt[((size_t)t * co_n + j) * ci_n + ci] =
                            w[((size_t)t * ci_n + ci) * co_n + j];
            continue;
        }
        for (uint32_t k = 0; k < u->kk; k++)
            for (uint32_t j = 0; j < u->cout; j++)
                u->wt[(size_t)j * u->kk + k] = w[(size_t)k * u->cout + j];
    }
}

/* Where unit i writes: its activation buffer, or out for a linear last. */
static fl_real *out_of(const fl_conv *c, uint32_t i)
{
    return c->a[i + 1] ? c->a[i + 1] : c->out;
}

/* The end of output tile [p0, p0 + np) of unit i: its activation, and the
 * copy to out of a last unit that keeps its output for backward. */
static void fwd_finish(fl_conv *c, uint32_t i, size_t p0, uint32_t np)
{
    const unit *u = &c->u[i];
    fl_real *y = out_of(c, i) + p0 * u->cout;
    act_fwd(y, (size_t)np * u->cout, u->act);
    if (i + 1 == c->nu && c->a[i + 1])
        memcpy(c->out + p0 * u->cout, y, (size_t)np * u->cout * sizeof(fl_real));
}

/* Tile t of unit i: im2col, one product, then bias, skip, activation. */
static void fwd_tile(fl_conv *c, uint32_t i, uint32_t t)
{
    const unit *u = &c->u[i];
    const size_t P = (size_t)c->n * u->ho * u->wo;
    size_t p0;
    uint32_t np;
    tile_of(P, t, &p0, &np);
    const fl_real *x = buf(c, i), *a;
    int lda;
    if (u->k == 3) {
        fl_real *col = c->col + p0 * u->kk;
        im2col(u, x, i == 0 && c->mask_fused ? c->mask : NULL, p0, np, col);
        a = col;
        lda = (int)u->kk;
    } else {
        a = x + p0 * u->cin;
        lda = (int)u->cin;
    }
    fl_real *y = out_of(c, i) + p0 * u->cout;
    if ((double)np * u->cout * u->kk <= NT_MAX_FMA)
        fl_gemm(0, 1, (int)np, (int)u->cout, (int)u->kk, 1, a, lda, u->wt, (int)u->kk, 0, y,
                (int)u->cout);
    else
        fl_gemm(0, 0, (int)np, (int)u->cout, (int)u->kk, 1, a, lda, weights(c, u),
                (int)u->cout, 0, y, (int)u->cout);
    const fl_real *b = c->theta + u->b_off;
    const fl_real *sk = u->skip >= 0 ? buf(c, (uint32_t)u->skip) + p0 * u->cout : NULL;
    for (uint32_t q = 0; q < np; q++) {
        fl_real *restrict yr = y + (size_t)q * u->cout;
        if (sk) {
            const fl_real *restrict sr = sk + (size_t)q * u->cout;
            for (uint32_t j = 0; j < u->cout; j++) yr[j] += b[j] + sr[j];
        } else {
            for (uint32_t j = 0; j < u->cout; j++) yr[j] += b[j];
        }
    }
    fwd_finish(c, i, p0, np);
}

/* Zero-padded copies for direct units: images [i0, i1) of src (ch
 * channels, h x w, times mask when given) into dst, which holds each image
 * as (h + 2) x (w + 2) pixels with zero borders. */
static void pad_images(const fl_real *src, const fl_real *mask, uint32_t ch, uint32_t h,
                       uint32_t w, size_t i0, size_t i1, fl_real *dst)
{
    const size_t wp = (size_t)w + 2, row = (size_t)w * ch;
    for (size_t img = i0; img < i1; img++) {
        fl_real *d = dst + img * (h + 2) * wp * ch;
        memset(d, 0, (wp + 1) * ch * sizeof *d); /* top row, left of row 1 */
        for (uint32_t y = 0; y < h; y++) {
            fl_real *restrict dr = d + ((y + 1) * wp + 1) * ch;
            const fl_real *restrict sr = src + (img * h + y) * row;
            if (mask) {
                const fl_real *restrict mr = mask + (size_t)y * row;
                for (size_t e = 0; e < row; e++) dr[e] = sr[e] * mr[e];
            } else {
                memcpy(dr, sr, row * sizeof *dr);
            }
            memset(dr + row, 0, 2 * ch * sizeof *dr); /* right of y, left of y + 1 */
        }
        memset(d + ((h + 1) * wp + 1) * ch, 0, (wp - 1) * ch * sizeof *d); /* bottom row */
    }
}

/* The first image and the number of images of direct task g of unit u. */
static void group_of(const unit *u, uint32_t n, uint32_t g, size_t *i0, size_t *ni)
{
    *i0 = (size_t)g * u->grp;
    *ni = n - *i0 < u->grp ? n - *i0 : u->grp;
}

/* Offset of tap t's source in padded pixels: forward reads (y + ky - 1,
 * x + kx - 1); the input gradient (flip) (y + 1 - ky, x + 1 - kx). */
static ptrdiff_t tap_off(const unit *u, uint32_t t, int flip)
{
    const ptrdiff_t wp = (ptrdiff_t)u->wi + 2, dy = (ptrdiff_t)(t / 3) - 1, dx = (ptrdiff_t)(t % 3) - 1;
    return flip ? -(dy * wp + dx) : dy * wp + dx;
}

/* A row of w pixels cut into kernel blocks of at most DK_MR, as even as
 * possible (28 = 14 + 14, 20 = 10 + 10): block b is [*x0, *x0 + *m). */
static uint32_t row_blocks(uint32_t w) { return (w + DK_MR - 1) / DK_MR; }
static void row_block(uint32_t w, uint32_t b, uint32_t *x0, uint32_t *m)
{
    const uint32_t nb = row_blocks(w), q = w / nb, r = w % nb;
    *x0 = b * q + (b < r ? b : r);
    *m = q + (b < r);
}

/* The same for the rows of a dW tile: cin input channels in tiles of at
 * most DK_MR. */
#define ch_blocks row_blocks
#define ch_block row_block

/* The 9 products of rows of padded pixels (pixel stride ch channels)
 * through per-tap matrices of ch x n: forward (flip 0, B = W_t, Bd = W_t^T)
 * or dX (flip 1, B = W_t^T, Bd = W_t), for ni images of unit u from padded
 * image i0 of `src` into the unpadded rows of `dst` (ldc = n), adding to
 * dst when load. Up to DOT_MAXN outputs per pixel as dot products with Bd
 * (ch x n per tap, transposed), else rows of pixels times B. */
static void direct_product(const unit *u, const fl_real *src, uint32_t ch, const fl_real *B,
                           const fl_real *Bd, uint32_t n, int flip, size_t i0, size_t ni,
                           fl_real *dst, int load)
{
    const uint32_t h = u->hi, w = u->wi;
    const size_t wp = (size_t)w + 2, blk = (h + 2) * wp;
    ptrdiff_t aoff[9], boff[9];
    for (uint32_t t = 0; t < 9; t++) {
        aoff[t] = tap_off(u, t, flip) * (ptrdiff_t)ch;
        boff[t] = (ptrdiff_t)t * ch * n;
    }
    if (n <= DOT_MAXN) {
        for (size_t img = 0; img < ni; img++)
            for (uint32_t r = 0; r < h; r++)
                dot_run(w, n, ch, src + ((i0 + img) * blk + (r + 1) * wp + 1) * ch, aoff, Bd,
                        dst + (img * h + r) * w * n, load);
        return;
    }
    dk_args A = { 9, 1, ch, NULL, aoff, ch, 1, 0, B, boff, n, 0, NULL, n, load };
    const uint32_t nb = row_blocks(w);
    for (size_t img = 0; img < ni; img++)
        for (uint32_t r = 0; r < h; r++)
            for (uint32_t bb = 0; bb < nb; bb++) {
                uint32_t x0, m;
                row_block(w, bb, &x0, &m);
                A.a = src + ((i0 + img) * blk + (r + 1) * wp + x0 + 1) * ch;
                A.c = dst + ((img * h + r) * w + x0) * n;
                dk_run(m, n, &A);
            }
}

/* Direct task g of unit i: pad its images, the 9 tap products into the
 * output (the kernel computes the real pixels only), then bias, skip and
 * the activation in place. */
static void fwd_direct(fl_conv *c, uint32_t i, uint32_t g)
{
    const unit *u = &c->u[i];
    const uint32_t cin = u->cin, cout = u->cout, h = u->hi, w = u->wi;
    size_t i0, ni;
    group_of(u, c->n, g, &i0, &ni);
    pad_images(buf(c, i), i == 0 && c->mask_fused ? c->mask : NULL, cin, h, w, i0, i0 + ni, c->xp);
    const size_t p0 = i0 * h * w, np = ni * h * w;
    fl_real *y = out_of(c, i) + p0 * cout;
    direct_product(u, c->xp, cin, weights(c, u), u->wt, cout, 0, i0, ni, y, 0);
    const fl_real *b = c->theta + u->b_off;
    const fl_real *sk = u->skip >= 0 ? buf(c, (uint32_t)u->skip) + p0 * cout : NULL;
    for (size_t q = 0; q < np; q++) {
        fl_real *restrict yr = y + q * cout;
        if (sk) {
            const fl_real *restrict sr = sk + q * cout;
            for (uint32_t j = 0; j < cout; j++) yr[j] = yr[j] + b[j] + sr[j];
        } else {
            for (uint32_t j = 0; j < cout; j++) yr[j] += b[j];
        }
    }
    fwd_finish(c, i, p0, (uint32_t)np);
}

/* Output tile t of an upsampling unit: each output pixel copies the input
 * pixel it lies in. */
static void up_tile(fl_conv *c, uint32_t i, uint32_t t)
{
    const unit *u = &c->u[i];
    const size_t hw = (size_t)u->ho * u->wo, P = (size_t)c->n * hw;
    size_t p0;
    uint32_t np;
    tile_of(P, t, &p0, &np);
    const fl_real *x = buf(c, i);
    fl_real *y = out_of(c, i) + p0 * u->cout;
    for (uint32_t q = 0; q < np; q++) {
        const size_t p = p0 + q, img = p / hw, r = p % hw;
        const size_t oy = r / u->wo, ox = r % u->wo;
        memcpy(y + (size_t)q * u->cout,
               x + ((img * u->hi + oy / 2) * u->wi + ox / 2) * u->cin, u->cout * sizeof *y);
    }
    fwd_finish(c, i, p0, np);
}

/* Batch norm, TRAIN: tile t's per-channel sum of x (pass 0) or of
 * (x - mu)^2 (pass 1), in double, pixels in order, into its slot of
 * bnpart; bn_stats adds the tiles in order. */
static void bn_sum(fl_conv *c, uint32_t i, uint32_t t, int pass)
{
    const unit *u = &c->u[i];
    const uint32_t C = u->cout;
    size_t p0;
    uint32_t np;
    tile_of((size_t)c->n * u->hi * u->wi, t, &p0, &np);
    double *restrict acc = c->bnpart + (size_t)t * C;
    const double *mu = u->bn;
    const fl_real *x = buf(c, i) + p0 * C;
    for (uint32_t j = 0; j < C; j++) acc[j] = 0;
    for (uint32_t q = 0; q < np; q++) {
        const fl_real *restrict xr = x + (size_t)q * C;
        if (pass == 0)
            for (uint32_t j = 0; j < C; j++) acc[j] += xr[j];
        else
            for (uint32_t j = 0; j < C; j++) {
                const double e = xr[j] - mu[j];
                acc[j] += e * e;
            }
    }
}

/* Batch norm: the statistics of the tiles' sums (pass 0: mu; pass 1:
 * var, the scales, and the running averages when they move). */
static void bn_stats(fl_conv *c, uint32_t i, int pass)
{
    unit *u = &c->u[i];
    const uint32_t C = u->cout;
    const size_t M = (size_t)c->n * u->hi * u->wi;
    const uint32_t nt = n_tiles(M);
    double *mu = u->bn, *inv = u->bn + C, *sc = u->bn + 2 * (size_t)C;
    double *acc = c->dbacc;
    for (uint32_t j = 0; j < C; j++) acc[j] = 0;
    for (uint32_t t = 0; t < nt; t++)
        for (uint32_t j = 0; j < C; j++) acc[j] += c->bnpart[(size_t)t * C + j];
    if (pass == 0) {
        for (uint32_t j = 0; j < C; j++) mu[j] = acc[j] / (double)M;
        return;
    }
    const fl_real *gamma = c->theta + u->w_off;
    for (uint32_t j = 0; j < C; j++) {
        const double var = acc[j] / (double)M, v = var + BN_EPS;
        inv[j] = 1 / sqrt(v > DBL_MIN ? v : DBL_MIN);
        sc[j] = gamma[j] * inv[j];
    }
    if (!c->state) return;
    /* PyTorch's convention: the running variance is the unbiased one */
    const double m = BN_MOMENTUM, unb = M > 1 ? (double)M / (double)(M - 1) : 1;
    fl_real *rm = c->state + u->mean_off, *rv = c->state + u->var_off;
    for (uint32_t j = 0; j < C; j++) {
        rm[j] = (fl_real)((1 - m) * rm[j] + m * mu[j]);
        rv[j] = (fl_real)((1 - m) * rv[j] + m * unb * acc[j] / (double)M);
    }
}

/* Batch norm, EVAL: mu and the scales from the running averages. */
static void bn_eval_stats(fl_conv *c, unit *u)
{
    const uint32_t C = u->cout;
    double *mu = u->bn, *inv = u->bn + C, *sc = u->bn + 2 * (size_t)C;
    const fl_real *gamma = c->theta + u->w_off, *rm = c->theta + u->mean_off,
                  *rv = c->theta + u->var_off;
    for (uint32_t j = 0; j < C; j++) {
        const double v = (double)rv[j] + BN_EPS;
        mu[j] = rm[j];
        inv[j] = 1 / sqrt(v > DBL_MIN ? v : DBL_MIN);
        sc[j] = gamma[j] * inv[j];
    }
}

/* Tile t of a batch norm unit: y = (x - mu) gamma / sqrt(var + eps) + beta. */
static void bn_tile(fl_conv *c, uint32_t i, uint32_t t)
{
    const unit *u = &c->u[i];
    const uint32_t C = u->cout;
    size_t p0;
    uint32_t np;
    tile_of((size_t)c->n * u->hi * u->wi, t, &p0, &np);
    const double *mu = u->bn, *sc = u->bn + 2 * (size_t)C;
    const fl_real *beta = c->theta + u->b_off, *x = buf(c, i) + p0 * C;
    fl_real *y = out_of(c, i) + p0 * C;
    for (uint32_t q = 0; q < np; q++) {
        const fl_real *restrict xr = x + (size_t)q * C;
        fl_real *restrict yr = y + (size_t)q * C;
        for (uint32_t j = 0; j < C; j++) yr[j] = (fl_real)((xr[j] - mu[j]) * sc[j] + beta[j]);
    }
    fwd_finish(c, i, p0, np);
}

static int want_parallel(const fl_conv *c, uint32_t n, double factor)
{
    return !omp_in_parallel() && omp_get_max_threads() > 1 &&
           fl_conv_fmas(c, n) * factor >= PAR_MIN_FMA;
}

void fl_conv_forward(fl_conv *c, const fl_real *theta, uint32_t n, const fl_real *in,
                     fl_real *out)
{
    fl_conv_forward_mode(c, theta, NULL, FL_MODE_EVAL, n, in, out);
}

void fl_conv_forward_mode(fl_conv *c, const fl_real *theta, fl_real *state, fl_mode mode,
                          uint32_t n, const fl_real *in, fl_real *out)
{
    c->n = n;
    c->theta = theta;
    c->in = in;
    c->out = out;
    c->mode = mode == FL_MODE_TRAIN ? FL_MODE_TRAIN : FL_MODE_EVAL;
    c->state = c->mode == FL_MODE_TRAIN ? state : NULL;
    if (n == 0) return;
    norm_weights(c);
    for (uint32_t i = 0; i < c->nu; i++)
        if (c->u[i].kind == UK_BN && c->mode != FL_MODE_TRAIN) bn_eval_stats(c, &c->u[i]);
    const size_t in_size = (size_t)c->bh[0] * c->bw[0] * c->bc[0];
    const int par = want_parallel(c, n, 1);
    /* at most one thread per scratch slot (results do not depend on it) */
    const int nth = omp_get_max_threads() < c->nslots ? omp_get_max_threads() : c->nslots;
    /* if(par): otherwise a team of one, so the loops below never bind to
     * a caller's region */
#pragma omp parallel if (par) num_threads(nth)
    {
        if (c->a[0]) {
            const uint32_t nt = n_tiles((size_t)n * in_size / c->bc[0]);
#pragma omp for schedule(static)
            for (uint32_t t = 0; t < nt; t++) {
                size_t p0;
                uint32_t np;
                tile_of((size_t)n * in_size / c->bc[0], t, &p0, &np);
                const size_t e0 = p0 * c->bc[0], ne = (size_t)np * c->bc[0];
                for (size_t e = e0; e < e0 + ne; e++) c->a[0][e] = in[e] * c->mask[e % in_size];
            }
        }
        for (uint32_t i = 0; i < c->nu; i++) {
            const uint32_t nt = n_tiles((size_t)n * c->u[i].ho * c->u[i].wo);
            switch (c->u[i].kind) {
            case UK_CONV:
                if (c->u[i].direct) {
                    const uint32_t ng = (n + c->u[i].grp - 1) / c->u[i].grp;
#pragma omp for schedule(dynamic, 1)
                    for (uint32_t g = 0; g < ng; g++) fwd_direct(c, i, g);
                    break;
                }
#pragma omp for schedule(dynamic, 1)
                for (uint32_t t = 0; t < nt; t++) fwd_tile(c, i, t);
                break;
            case UK_UP:
#pragma omp for schedule(static)
                for (uint32_t t = 0; t < nt; t++) up_tile(c, i, t);
                break;
            default:
                if (c->mode == FL_MODE_TRAIN)
                    for (int pass = 0; pass < 2; pass++) {
#pragma omp for schedule(static)
                        for (uint32_t t = 0; t < nt; t++) bn_sum(c, i, t, pass);
#pragma omp single
                        bn_stats(c, i, pass);
                    }
#pragma omp for schedule(static)
                for (uint32_t t = 0; t < nt; t++) bn_tile(c, i, t);
                break;
            }
        }
    }
}

/* ---- backward ----------------------------------------------------------- */

/* The delta of unit i (d loss / d its pre-activation sum): dout itself for
 * a linear last unit, else the unit's gradient buffer, made a delta in
 * place by bwd_prep. */
static const fl_real *delta(const fl_conv *c, uint32_t i)
{
    return c->g[i + 1] ? c->g[i + 1] : c->dout;
}

static int prep_needed(const fl_conv *c, uint32_t i)
{
    const unit *u = &c->u[i];
    return u->act != FL_ACT_LINEAR || u->skip >= 0 || (u->kind == UK_CONV && u->k == 3);
}

/* Whether unit i's input gradient is wanted. */
static int need_in(const fl_conv *c, uint32_t i) { return i > 0 || c->din; }

/* Output tile t of unit i: the delta (times act'), its skip sum, and the
 * rows of col(X) for dW. */
static void bwd_prep_px(fl_conv *c, uint32_t i, size_t p0, uint32_t np)
{
    const unit *u = &c->u[i];
    const size_t e0 = p0 * u->cout, ne = (size_t)np * u->cout;
    if (u->act != FL_ACT_LINEAR) {
        const int last = i + 1 == c->nu;
        fl_real *d = c->g[i + 1] + e0;
        act_bwd(d, (last ? c->dout : c->g[i + 1]) + e0, c->a[i + 1] + e0, ne, u->act);
    }
    const fl_real *d = delta(c, i) + e0;
    if (u->skip >= 0 && ((uint32_t)u->skip > 0 || c->din)) {
        fl_real *restrict gs = c->g[u->skip] + e0;
        if (u->skip_beta)
            for (size_t e = 0; e < ne; e++) gs[e] += d[e];
        else
            memcpy(gs, d, ne * sizeof *gs);
    }
    if (u->kind == UK_CONV && u->k == 3 && !u->direct)
        im2col(u, buf(c, i), i == 0 && c->mask_fused ? c->mask : NULL, p0, np,
               c->col + p0 * u->kk);
}

static void bwd_prep(fl_conv *c, uint32_t i, uint32_t t)
{
    size_t p0;
    uint32_t np;
    tile_of((size_t)c->n * c->u[i].ho * c->u[i].wo, t, &p0, &np);
    bwd_prep_px(c, i, p0, np);
}

/* Direct unit i, task g: its images' delta (bwd_prep on their pixels: the
 * same element-wise work as by tiles, so the same numbers), then their
 * input and delta zero-padded (the delta's zero borders are dX's padding). */
static void bwd_pad(fl_conv *c, uint32_t i, uint32_t g)
{
    const unit *u = &c->u[i];
    size_t i0, ni;
    group_of(u, c->n, g, &i0, &ni);
    if (u->act != FL_ACT_LINEAR || u->skip >= 0)
        bwd_prep_px(c, i, i0 * u->ho * u->wo, (uint32_t)(ni * u->ho * u->wo));
    pad_images(buf(c, i), i == 0 && c->mask_fused ? c->mask : NULL, u->cin, u->hi, u->wi, i0,
               i0 + ni, c->xp);
    pad_images(delta(c, i), NULL, u->cout, u->hi, u->wi, i0, i0 + ni, c->dp);
}

/* Direct unit i: dW partial sum k over its chunk of whole images, per tap
 * dW_t = Xp(shifted)^T D (D unpadded: the output pixels only), rows =
 * input channels in tiles of DK_MR, summed over the chunk's images in
 * order by the kernel (r, k = the output pixels' rows and columns). */
static void bwd_direct_dw(fl_conv *c, uint32_t i, uint32_t k, uint32_t nch, fl_real *part)
{
    const unit *u = &c->u[i];
    const uint32_t cin = u->cin, cout = u->cout, h = u->hi, w = u->wi;
    const size_t per = (c->n + nch - 1) / nch, i0 = (size_t)k * per < c->n ? (size_t)k * per : c->n;
    const size_t ni = c->n - i0 < per ? c->n - i0 : per;
    if (ni == 0) {
        memset(part, 0, (size_t)u->kk * cout * sizeof *part);
        return;
    }
    const size_t wp = (size_t)w + 2, blk = (h + 2) * wp;
    const fl_real *d = delta(c, i);
    static const ptrdiff_t zero[1] = { 0 };
    dk_args A = { 1, h, w, NULL, zero, 1, cin, wp * cin, NULL, zero, cout, (size_t)w * cout,
                  NULL, cout, 0 };
    if (u->dwt) { /* rows = output channels: part holds dW_t^T */
        dk_args T = { 1, h, w, NULL, zero, 1, cout, (size_t)w * cout, NULL, zero, cin, wp * cin,
                      NULL, cin, 0 };
        for (uint32_t t = 0; t < 9; t++) {
            T.c = part + (size_t)t * cout * cin;
            for (size_t img = 0; img < ni; img++) {
                T.a = d + (i0 + img) * h * w * cout;
                T.b = c->xp + ((i0 + img) * blk + wp + 1 + tap_off(u, t, 0)) * cin;
                T.load = img > 0;
                dk_run(cout, cin, &T);
            }
        }
        return;
    }
    const uint32_t nb = ch_blocks(cin);
    for (uint32_t t = 0; t < 9; t++)
        for (uint32_t bb = 0; bb < nb; bb++) {
            uint32_t c0, m;
            ch_block(cin, bb, &c0, &m);
            A.c = part + ((size_t)t * cin + c0) * cout;
            for (size_t img = 0; img < ni; img++) {
                A.a = c->xp + ((i0 + img) * blk + wp + 1 + tap_off(u, t, 0)) * cin + c0;
                A.b = d + (i0 + img) * h * w * cout;
                A.load = img > 0;
                dk_run(m, cout, &A);
            }
        }
}

/* Direct unit i, task g: dX of its images, the 9 products of the padded
 * delta (taps flipped) with W_t^T, added to the input gradient or
 * written. */
static void bwd_direct_dx(fl_conv *c, uint32_t i, uint32_t g)
{
    const unit *u = &c->u[i];
    size_t i0, ni;
    group_of(u, c->n, g, &i0, &ni);
    direct_product(u, c->dp, u->cout, u->wt, weights(c, u), u->cin, 1, i0, ni,
                   c->g[i] + i0 * u->hi * u->wi * u->cin, u->in_beta);
}

/* Input tile t of an upsampling unit: each input pixel's gradient is the
 * sum of its 4 output pixels' deltas, in order. */
static void up_bwd(fl_conv *c, uint32_t i, uint32_t t)
{
    const unit *u = &c->u[i];
    const uint32_t C = u->cin;
    const size_t hw = (size_t)u->hi * u->wi;
    size_t p0;
    uint32_t np;
    tile_of((size_t)c->n * hw, t, &p0, &np);
    const fl_real *d = delta(c, i);
    for (uint32_t q = 0; q < np; q++) {
        const size_t p = p0 + q, img = p / hw, r = p % hw, iy = r / u->wi, ix = r % u->wi;
        fl_real *restrict gd = c->g[i] + p * C;
        const fl_real *restrict d00 = d + ((img * u->ho + 2 * iy) * u->wo + 2 * ix) * C;
        const fl_real *restrict d10 = d00 + (size_t)u->wo * C;
        for (uint32_t j = 0; j < C; j++) {
            const fl_real v = d00[j] + d00[C + j] + d10[j] + d10[C + j];
            gd[j] = u->in_beta ? gd[j] + v : v;
        }
    }
}

/* Batch norm backward, tile t: per-channel sums of d and of d xh, xh =
 * (x - mu) / sqrt(var + eps), into the tile's slot of bnpart. */
static void bn_bsum(fl_conv *c, uint32_t i, uint32_t t)
{
    const unit *u = &c->u[i];
    const uint32_t C = u->cout;
    size_t p0;
    uint32_t np;
    tile_of((size_t)c->n * u->hi * u->wi, t, &p0, &np);
    const double *mu = u->bn, *inv = u->bn + C;
    const fl_real *x = buf(c, i) + p0 * C, *d = delta(c, i) + p0 * C;
    double *restrict s1 = c->bnpart + (size_t)t * 2 * C, *restrict s2 = s1 + C;
    for (uint32_t j = 0; j < C; j++) s1[j] = s2[j] = 0;
    for (uint32_t q = 0; q < np; q++) {
        const fl_real *restrict xr = x + (size_t)q * C, *restrict dr = d + (size_t)q * C;
        for (uint32_t j = 0; j < C; j++) {
            s1[j] += dr[j];
            s2[j] += dr[j] * (xr[j] - mu[j]) * inv[j];
        }
    }
}

/* Batch norm backward: the tiles' sums in order; dbeta = sum d, dgamma =
 * sum d xh; their means per pixel kept for bn_bdx. */
static void bn_breduce(fl_conv *c, uint32_t i)
{
    unit *u = &c->u[i];
    const uint32_t C = u->cout;
    const size_t M = (size_t)c->n * u->hi * u->wi;
    const uint32_t nt = n_tiles(M);
    double *m1 = u->bn + 3 * (size_t)C, *m2 = u->bn + 4 * (size_t)C;
    for (uint32_t j = 0; j < C; j++) m1[j] = m2[j] = 0;
    for (uint32_t t = 0; t < nt; t++) {
        const double *s1 = c->bnpart + (size_t)t * 2 * C, *s2 = s1 + C;
        for (uint32_t j = 0; j < C; j++) {
            m1[j] += s1[j];
            m2[j] += s2[j];
        }
    }
    fl_real *dgamma = c->dtheta + u->w_off, *dbeta = c->dtheta + u->b_off;
    for (uint32_t j = 0; j < C; j++) {
        dbeta[j] += (fl_real)m1[j];
        dgamma[j] += (fl_real)m2[j];
        m1[j] /= (double)M;
        m2[j] /= (double)M;
    }
}

/* Batch norm backward, tile t of dX: gamma / sqrt(var + eps) times d in
 * EVAL; in TRAIN also through the batch's mean and variance:
 *   dx = gamma inv (d - mean(d) - xh mean(d xh)). */
static void bn_bdx(fl_conv *c, uint32_t i, uint32_t t)
{
    const unit *u = &c->u[i];
    const uint32_t C = u->cout;
    size_t p0;
    uint32_t np;
    tile_of((size_t)c->n * u->hi * u->wi, t, &p0, &np);
    const double *mu = u->bn, *inv = u->bn + C, *sc = u->bn + 2 * (size_t)C;
    const double *m1 = u->bn + 3 * (size_t)C, *m2 = u->bn + 4 * (size_t)C;
    const int train = c->mode == FL_MODE_TRAIN;
    const fl_real *x = buf(c, i) + p0 * C, *d = delta(c, i) + p0 * C;
    fl_real *gd = c->g[i] + p0 * C;
    for (uint32_t q = 0; q < np; q++) {
        const fl_real *restrict xr = x + (size_t)q * C, *restrict dr = d + (size_t)q * C;
        fl_real *restrict gr = gd + (size_t)q * C;
        for (uint32_t j = 0; j < C; j++) {
            const double v = train ? sc[j] * (dr[j] - m1[j] - (xr[j] - mu[j]) * inv[j] * m2[j])
                                   : sc[j] * dr[j];
            gr[j] = (fl_real)(u->in_beta ? gr[j] + v : v);
        }
    }
}

/* The dW chunks of unit i: pixels [*q0, *q0 + *nq) of chunk k. */
static void chunk_of(size_t P, uint32_t nch, uint32_t k, size_t *q0, size_t *nq)
{
    const size_t per = (P + nch - 1) / nch;
    *q0 = (size_t)k * per < P ? (size_t)k * per : P;
    *nq = P - *q0 < per ? P - *q0 : per;
}

static void bwd_gather(fl_conv *c, uint32_t i, uint32_t t);

/* Task k of unit i's products: [0, nch) dW partial sums, nch the bias
 * gradient, then the input tiles of dX (1x1: a product; 3x3: bwd_gather). */
static void bwd_product(fl_conv *c, uint32_t i, uint32_t k)
{
    const unit *u = &c->u[i];
    const size_t P = (size_t)c->n * u->ho * u->wo;
    const uint32_t nch = n_chunks(P);
    const fl_real *d = delta(c, i);
    if (k < nch) {
        size_t q0, nq;
        chunk_of(P, nch, k, &q0, &nq);
        fl_real *part = c->part + (size_t)k * u->kk * u->cout;
        if (u->direct) {
            bwd_direct_dw(c, i, k, nch, part);
            return;
        }
        if (nq == 0) {
            memset(part, 0, (size_t)u->kk * u->cout * sizeof *part);
            return;
        }
        const fl_real *x = u->k == 3 ? c->col : buf(c, i);
        fl_gemm(1, 0, (int)u->kk, (int)u->cout, (int)nq, 1, x + q0 * u->kk, (int)u->kk,
                d + q0 * u->cout, (int)u->cout, 0, part, (int)u->cout);
        return;
    }
    if (k == nch) { /* bias: column sums in double, rows in order */
        double *acc = c->dbacc;
        for (uint32_t j = 0; j < u->cout; j++) acc[j] = 0;
        for (size_t p = 0; p < P; p++) {
            const fl_real *restrict dr = d + p * u->cout;
            for (uint32_t j = 0; j < u->cout; j++) acc[j] += dr[j];
        }
        fl_real *db = c->dtheta + u->b_off;
        for (uint32_t j = 0; j < u->cout; j++) db[j] += (fl_real)acc[j];
        return;
    }
    if (u->direct) {
        bwd_direct_dx(c, i, k - nch - 1);
        return;
    }
    if (u->k == 3) {
        bwd_gather(c, i, k - nch - 1);
        return;
    }
    size_t p0;
    uint32_t np;
    tile_of(P, k - nch - 1, &p0, &np);
    fl_gemm(0, 1, (int)np, (int)u->cin, (int)u->cout, 1, d + p0 * u->cout, (int)u->cout,
            weights(c, u), (int)u->cout, u->in_beta ? 1 : 0, c->g[i] + p0 * u->cin,
            (int)u->cin);
}

/* dW = the partial sums in chunk order, added to dtheta (W), or through
 * the weight norm to v and g: with w = g v / |v|,
 *   dg = dW . v / |v|,   dv = (g / |v|) (dW - dg v / |v|). */
static void bwd_reduce(fl_conv *c, uint32_t i)
{
    const unit *u = &c->u[i];
    const size_t P = (size_t)c->n * u->ho * u->wo, sz = (size_t)u->kk * u->cout;
    const uint32_t nch = n_chunks(P);
    fl_real *restrict s = c->part;
    for (uint32_t k = 1; k < nch; k++) {
        const fl_real *restrict pk = c->part + (size_t)k * sz;
        for (size_t e = 0; e < sz; e++) s[e] += pk[e];
    }
    if (u->dwt) { /* [t][j][ci] back to W's [t][ci][j] */
        for (uint32_t t = 0; t < 9; t++)
            for (uint32_t ci = 0; ci < u->cin; ci++)
                for (uint32_t j = 0; j < u->cout; j++)
                    c->tw[((size_t)t * u->cin + ci) * u->cout + j] =
                        s[((size_t)t * u->cout + j) * u->cin + ci];
        s = c->tw;
    }
    fl_real *dw = c->dtheta + u->w_off;
    if (!u->wn) {
        for (size_t e = 0; e < sz; e++) dw[e] += s[e];
        return;
    }
    const fl_real *v = c->theta + u->w_off, *g = c->theta + u->g_off;
    fl_real *dg = c->dtheta + u->g_off;
    double *acc = c->dbacc; /* the bias task of this unit has finished */
    for (uint32_t j = 0; j < u->cout; j++) acc[j] = 0;
    for (uint32_t k = 0; k < u->kk; k++)
        for (uint32_t j = 0; j < u->cout; j++) {
            const size_t e = (size_t)k * u->cout + j;
            acc[j] += (double)s[e] * v[e];
        }
    for (uint32_t j = 0; j < u->cout; j++) acc[j] *= u->inv[j];
    for (uint32_t k = 0; k < u->kk; k++)
        for (uint32_t j = 0; j < u->cout; j++) {
            const size_t e = (size_t)k * u->cout + j;
            dw[e] += (fl_real)(g[j] * u->inv[j] * (s[e] - acc[j] * v[e] * u->inv[j]));
        }
    for (uint32_t j = 0; j < u->cout; j++) dg[j] += (fl_real)acc[j];
}

/* Input tile t of a 3x3 unit: d col = D W^T for the band of output pixels
 * that read the tile (one product into this thread's scratch), then each
 * input pixel sums, taps in order, the d col entries of the output pixels
 * that read it (col2im as a gather). The band of a tile is fixed, so the
 * numbers do not depend on which thread runs it. */
static void bwd_gather(fl_conv *c, uint32_t i, uint32_t t)
{
    const unit *u = &c->u[i];
    const size_t hw = (size_t)u->hi * u->wi, P = (size_t)c->n * hw;
    const uint32_t cin = u->cin, s = u->stride;
    size_t p0, q0, q1;
    uint32_t np;
    tile_of(P, t, &p0, &np);
    band_of(u, p0, np, &q0, &q1);
    fl_real *dcol = c->dscr + (size_t)omp_get_thread_num() * c->dscr_slot;
    fl_gemm(0, 1, (int)(q1 - q0), (int)u->kk, (int)u->cout, 1, delta(c, i) + q0 * u->cout,
            (int)u->cout, weights(c, u), (int)u->cout, 0, dcol, (int)u->kk);
    for (uint32_t q = 0; q < np; q++) {
        const size_t p = p0 + q, img = p / hw, r = p % hw;
        const int64_t iy = (int64_t)(r / u->wi), ix = (int64_t)(r % u->wi);
        fl_real *restrict gd = c->g[i] + p * cin;
        if (!u->in_beta) memset(gd, 0, cin * sizeof *gd);
        for (uint32_t ky = 0; ky < 3; ky++) {
            const int64_t ty = iy + 1 - ky; /* = oy * s */
            if (ty < 0 || ty % s) continue;
            const int64_t oy = ty / s;
            if (oy >= u->ho) continue;
            for (uint32_t kx = 0; kx < 3; kx++) {
                const int64_t tx = ix + 1 - kx;
                if (tx < 0 || tx % s) continue;
                const int64_t ox = tx / s;
                if (ox >= u->wo) continue;
                const fl_real *restrict src =
                    dcol + ((img * u->ho + (size_t)oy) * u->wo + (size_t)ox - q0) * u->kk +
                    (ky * 3 + kx) * cin;
                for (uint32_t ch = 0; ch < cin; ch++) gd[ch] += src[ch];
            }
        }
    }
}

void fl_conv_backward(fl_conv *c, const fl_real *theta, fl_real *dtheta, uint32_t n,
                      const fl_real *dout, fl_real *din)
{
    c->theta = theta;
    c->dtheta = dtheta;
    c->dout = dout;
    c->din = din;
    if (n == 0) return;
    c->n = n;
    const size_t in_size = (size_t)c->bh[0] * c->bw[0] * c->bc[0];
    const int par = want_parallel(c, n, 2);
    /* at most one thread per scratch slot (results do not depend on it) */
    const int nth = omp_get_max_threads() < c->nslots ? omp_get_max_threads() : c->nslots;
#pragma omp parallel if (par) num_threads(nth)
    {
        for (uint32_t i = c->nu; i-- > 0;) {
            const unit *u = &c->u[i];
            const size_t P = (size_t)n * u->ho * u->wo;
            const uint32_t nt = n_tiles(P), nch = n_chunks(P);
            if (prep_needed(c, i) && !u->direct) { /* direct: in bwd_pad */
#pragma omp for schedule(dynamic, 1)
                for (uint32_t t = 0; t < nt; t++) bwd_prep(c, i, t);
            }
            const uint32_t nti = n_tiles((size_t)n * u->hi * u->wi);
            if (u->kind == UK_UP) {
                if (need_in(c, i)) {
#pragma omp for schedule(static)
                    for (uint32_t t = 0; t < nti; t++) up_bwd(c, i, t);
                }
                continue;
            }
            if (u->kind == UK_BN) {
#pragma omp for schedule(static)
                for (uint32_t t = 0; t < nti; t++) bn_bsum(c, i, t);
#pragma omp single
                bn_breduce(c, i);
                if (need_in(c, i)) {
#pragma omp for schedule(static)
                    for (uint32_t t = 0; t < nti; t++) bn_bdx(c, i, t);
                }
                continue;
            }
            /* dW chunks (the largest tasks first), bias, dX tiles */
            uint32_t ndx = need_in(c, i) ? nti : 0;
            if (u->direct) {
                const uint32_t ng = (n + u->grp - 1) / u->grp;
#pragma omp for schedule(dynamic, 1)
                for (uint32_t g = 0; g < ng; g++) bwd_pad(c, i, g);
                if (ndx) ndx = ng;
            }
            const uint32_t nb = nch + 1 + ndx;
#pragma omp for schedule(dynamic, 1)
            for (uint32_t k = 0; k < nb; k++) bwd_product(c, i, k);
            /* Without waiting when the next unit starts with a loop (whose
             * barrier comes before anything touches part or dbacc again),
             * or nothing follows. */
            if (i == 0 || (c->u[i - 1].kind == UK_CONV &&
                           (c->u[i - 1].direct || prep_needed(c, i - 1)))) {
#pragma omp single nowait
                bwd_reduce(c, i);
            } else {
#pragma omp single
                bwd_reduce(c, i);
            }
        }
        if (din) {
            const size_t E = (size_t)n * in_size;
            const uint32_t nt = n_tiles(E);
#pragma omp for schedule(static)
            for (uint32_t t = 0; t < nt; t++) {
                size_t e0;
                uint32_t ne;
                tile_of(E, t, &e0, &ne);
                if (c->mask)
                    for (size_t e = e0; e < e0 + ne; e++)
                        din[e] += c->mask[e % in_size] * c->g[0][e];
                else
                    for (size_t e = e0; e < e0 + ne; e++) din[e] += c->g[0][e];
            }
        }
    }
}
