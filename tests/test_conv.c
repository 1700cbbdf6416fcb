/* test_conv.c - the convolution service (host->conv_create, conv_forward,
 * conv_backward; compute/conv.c), created through the host table as a
 * plugin would create it.
 *
 * The reference is a direct convolution in double written from the
 * documented layout alone (NHWC images, W rows ordered tap (ky, kx) then
 * input channel, weight norm w = g v / |v| per output channel), which
 * interprets the same layer list. Forward outputs are compared with it;
 * every gradient (each parameter entry and each input entry) with central
 * differences of the reference's sum(a . out) in double, h = 1e-6: their
 * error (rounding 1e-16 |L| / h ~ 1e-9, truncation ~h^2) is far below the
 * bounds, so the bounds measure the service's own rounding: none in the
 * double build beyond ~1e-12 (bound 1e-7 abs + rel), and in the float
 * build ~6e-8 relative per operation summed over a few hundred terms of
 * O(1) size, ~1e-5 (bound 2e-4 abs + 2e-4 rel, still far below the error
 * of a wrong tap, sign or missing term: every tested gradient is O(0.1 ..
 * 10)). One smooth net is also checked against differences of the
 * service's own float outputs, with tests/test_parts.c's bounds (h = 2^-7,
 * 1e-3 abs + 2e-3 rel in float; 1e-5, 1e-6 in double). */
#include <math.h>
#include <omp.h>

#include "common.h"
#include "compute/conv.h"

SUITE(conv);

#ifdef FL_REAL_DOUBLE
#define REF_ABS 1e-7
#define REF_REL 1e-7
#define VAL_TOL 1e-10
#define OWN_H 1e-5
#define OWN_ABS 1e-6
#define OWN_REL 1e-6
#else
#define REF_ABS 2e-4
#define REF_REL 2e-4
#define VAL_TOL 2e-5
#define OWN_H 0.0078125
#define OWN_ABS 1e-3
#define OWN_REL 2e-3
#endif

enum { MAXL = 16 };

/* A net created through the host, as in a component's create. */
typedef struct tnet {
    fl_arena arena;
    fl_ctx *cx;
    fl_conv *c;
    fl_conv_spec spec;
    fl_conv_layer layers[MAXL];
    fl_real *mask;
    uint32_t max_rows;
    fl_real *theta, *dtheta;
} tnet;

static fl_conv_layer L3(uint32_t ch) { return (fl_conv_layer){ FL_CONV_3X3, ch, 1, FL_ACT_LINEAR }; }
static fl_conv_layer L3s2(uint32_t ch) { return (fl_conv_layer){ FL_CONV_3X3, ch, 2, FL_ACT_LINEAR }; }
static fl_conv_layer L1(uint32_t ch) { return (fl_conv_layer){ FL_CONV_1X1, ch, 1, FL_ACT_LINEAR }; }
static fl_conv_layer LR(uint32_t ch, fl_act a) { return (fl_conv_layer){ FL_CONV_RESNET, ch, 1, a }; }
static fl_conv_layer LA(fl_act a) { return (fl_conv_layer){ FL_CONV_ACT, 0, 0, a }; }
static fl_conv_layer LU(void) { return (fl_conv_layer){ FL_CONV_UPSAMPLE, 0, 0, FL_ACT_LINEAR }; }
static fl_conv_layer LB(void) { return (fl_conv_layer){ FL_CONV_BATCHNORM, 0, 0, FL_ACT_LINEAR }; }

static fl_real *randn(size_t n, const char *key, double sd)
{
    fl_real *v = calloc(n ? n : 1, sizeof *v);
    cr_assert_not_null(v);
    fl_rng_normal(fl_rng_key_make(11, key), 0, 0, n, v);
    for (size_t i = 0; i < n; i++) v[i] = (fl_real)(v[i] * sd);
    return v;
}

/* Creates the net (c, h, w, layers, flags, mask may be NULL) or, with
 * expect_fail, checks that create refuses it with a message containing
 * `msg`. */
static int tnet_new(tnet *t, uint32_t c, uint32_t h, uint32_t w, const fl_conv_layer *layers,
                    uint32_t nl, uint32_t flags, const fl_real *mask, uint32_t max_rows)
{
    memset(t, 0, sizeof *t);
    fl_runtime_init();
    cr_assert(nl <= MAXL);
    memcpy(t->layers, layers, nl * sizeof *layers);
    t->spec = (fl_conv_spec){ sizeof(fl_conv_spec), "s", c, h, w, nl, t->layers, flags, mask };
    t->max_rows = max_rows;
    t->cx = fl_ctx_new("conv", NULL, &t->arena, 5);
    cr_assert_not_null(t->cx);
    const fl_host *host = fl_host_table();
    fl_host_clear_error();
    t->c = host->conv_create(t->cx, &t->spec, max_rows);
    fl_ctx_end_create(t->cx);
    if (!t->c) return 0;
    cr_assert_eq(fl_arena_finalize(&t->arena, 5), FL_OK);
    t->theta = t->arena.theta + t->cx->block;
    t->dtheta = t->arena.grad + t->cx->block;
    return 1;
}

static void tnet_free(tnet *t)
{
    fl_ctx_free(t->cx);
    fl_arena_free(&t->arena);
}

static const fl_param_rec *prm(const tnet *t, char kind, uint32_t u)
{
    char name[64];
    snprintf(name, sizeof name, "conv.s.%c%u", kind, u);
    return fl_arena_find(&t->arena, name);
}

/* Batch norm k's parameter `what` (gamma, beta, mean, var). */
static const fl_param_rec *prm_bn(const tnet *t, const char *what, uint32_t k)
{
    char name[64];
    snprintf(name, sizeof name, "conv.s.%s%u", what, k);
    return fl_arena_find(&t->arena, name);
}

/* The mode the reference runs batch norm in (the tests set it). */
static fl_mode ref_mode = FL_MODE_EVAL;

/* ---- the reference ------------------------------------------------------ */

typedef struct rshape {
    uint32_t c, h, w;
} rshape;

static double ref_act(double v, fl_act a)
{
    switch (a) {
    case FL_ACT_RELU: return v > 0 ? v : 0;
    case FL_ACT_TANH: return tanh(v);
    case FL_ACT_ELU: return v > 0 ? v : expm1(v);
    default: return v;
    }
}

/* y = conv(x) of unit u: k x k, stride s, same padding, cout channels. */
static double *ref_conv(const tnet *t, const double *th, uint32_t n, const double *x, rshape *sh,
                        uint32_t k, uint32_t s, uint32_t cout, uint32_t u)
{
    const uint32_t cin = sh->c, hi = sh->h, wi = sh->w;
    const uint32_t ho = s == 2 ? (hi + 1) / 2 : hi, wo = s == 2 ? (wi + 1) / 2 : wi;
    const uint32_t kk = k * k * cin, pad = k / 2;
    const int wn = (t->spec.flags & FL_CONV_WEIGHT_NORM) && prm(t, 'v', u);
    const fl_param_rec *W = prm(t, wn ? 'v' : 'W', u), *B = prm(t, 'b', u);
    cr_assert(W && B, "unit %u has no parameters", u);
    cr_assert_eq(W->size, (size_t)kk * cout);
    double *w = calloc((size_t)kk * cout, sizeof *w);
    for (size_t e = 0; e < (size_t)kk * cout; e++) w[e] = th[W->offset + e];
    if (wn) {
        const fl_param_rec *G = prm(t, 'g', u);
        cr_assert_not_null(G);
        for (uint32_t j = 0; j < cout; j++) {
            double nn = 0;
            for (uint32_t r = 0; r < kk; r++) nn += w[(size_t)r * cout + j] * w[(size_t)r * cout + j];
            for (uint32_t r = 0; r < kk; r++) w[(size_t)r * cout + j] *= th[G->offset + j] / sqrt(nn);
        }
    }
    double *y = calloc((size_t)n * ho * wo * cout, sizeof *y);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t oy = 0; oy < ho; oy++)
            for (uint32_t ox = 0; ox < wo; ox++)
                for (uint32_t co = 0; co < cout; co++) {
                    double acc = th[B->offset + co];
                    for (uint32_t ky = 0; ky < k; ky++)
                        for (uint32_t kx = 0; kx < k; kx++) {
                            const int iy = (int)(oy * s + ky) - (int)pad;
                            const int ix = (int)(ox * s + kx) - (int)pad;
                            if (iy < 0 || iy >= (int)hi || ix < 0 || ix >= (int)wi) continue;
                            for (uint32_t ci = 0; ci < cin; ci++)
                                acc += x[(((size_t)i * hi + (size_t)iy) * wi + (size_t)ix) * cin + ci] *
                                       w[(size_t)((ky * k + kx) * cin + ci) * cout + co];
                        }
                    y[(((size_t)i * ho + oy) * wo + ox) * cout + co] = acc;
                }
    free(w);
    sh->c = cout;
    sh->h = ho;
    sh->w = wo;
    return y;
}

/* The net on n images x (double, unmasked), theta th (double, the
 * component block); returns the output (malloc'd) and its shape. */
static double *ref_forward(const tnet *t, const double *th, uint32_t n, const double *x,
                           rshape *out)
{
    rshape sh = { t->spec.c, t->spec.h, t->spec.w };
    const size_t in_len = (size_t)sh.c * sh.h * sh.w;
    double *cur = calloc((size_t)n * in_len, sizeof *cur);
    for (size_t e = 0; e < (size_t)n * in_len; e++)
        cur[e] = x[e] * (t->spec.mask ? (double)t->spec.mask[e % in_len] : 1.0);
    uint32_t u = 0, nb = 0;
    for (uint32_t l = 0; l < t->spec.n_layers; l++) {
        const fl_conv_layer *L = &t->spec.layers[l];
        double *nx = NULL;
        const size_t P = (size_t)n * sh.h * sh.w;
        if (L->op == FL_CONV_UPSAMPLE) {
            nx = calloc(4 * P * sh.c, sizeof *nx);
            for (uint32_t i = 0; i < n; i++)
                for (uint32_t y = 0; y < 2 * sh.h; y++)
                    for (uint32_t x = 0; x < 2 * sh.w; x++)
                        for (uint32_t ch = 0; ch < sh.c; ch++)
                            nx[(((size_t)i * 2 * sh.h + y) * 2 * sh.w + x) * sh.c + ch] =
                                cur[(((size_t)i * sh.h + y / 2) * sh.w + x / 2) * sh.c + ch];
            sh.h *= 2;
            sh.w *= 2;
        } else if (L->op == FL_CONV_BATCHNORM) {
            const fl_param_rec *G = prm_bn(t, "gamma", nb), *B = prm_bn(t, "beta", nb),
                               *RM = prm_bn(t, "mean", nb), *RV = prm_bn(t, "var", nb);
            nb++;
            cr_assert(G && B && RM && RV, "batch norm %u has no parameters", nb - 1);
            nx = calloc(P * sh.c, sizeof *nx);
            for (uint32_t ch = 0; ch < sh.c; ch++) {
                double mu = th[RM->offset + ch], var = th[RV->offset + ch];
                if (ref_mode == FL_MODE_TRAIN) {
                    mu = var = 0;
                    for (size_t p = 0; p < P; p++) mu += cur[p * sh.c + ch];
                    mu /= (double)P;
                    for (size_t p = 0; p < P; p++)
                        var += (cur[p * sh.c + ch] - mu) * (cur[p * sh.c + ch] - mu);
                    var /= (double)P;
                }
                for (size_t p = 0; p < P; p++)
                    nx[p * sh.c + ch] = th[G->offset + ch] * (cur[p * sh.c + ch] - mu) /
                                            sqrt(var + 1e-5) + th[B->offset + ch];
            }
        } else if (L->op == FL_CONV_3X3 || L->op == FL_CONV_1X1) {
            nx = ref_conv(t, th, n, cur, &sh, L->op == FL_CONV_3X3 ? 3 : 1, L->stride ? L->stride : 1,
                          L->channels, u++);
        } else if (L->op == FL_CONV_RESNET) {
            rshape s1 = sh;
            double *h1 = ref_conv(t, th, n, cur, &s1, 3, 1, L->channels ? L->channels : sh.c, u++);
            for (size_t e = 0; e < (size_t)n * s1.c * s1.h * s1.w; e++) h1[e] = ref_act(h1[e], L->act);
            nx = ref_conv(t, th, n, h1, &s1, 3, 1, sh.c, u++);
            for (size_t e = 0; e < (size_t)n * sh.c * sh.h * sh.w; e++) nx[e] += cur[e];
            free(h1);
        } else {
            nx = cur;
            cur = NULL;
            for (size_t e = 0; e < (size_t)n * sh.c * sh.h * sh.w; e++) nx[e] = ref_act(nx[e], L->act);
        }
        free(cur);
        cur = nx;
    }
    *out = sh;
    return cur;
}

static double ref_loss(const tnet *t, const double *th, uint32_t n, const double *x,
                       const fl_real *a)
{
    rshape sh;
    double *y = ref_forward(t, th, n, x, &sh);
    double l = 0;
    for (size_t e = 0; e < (size_t)n * sh.c * sh.h * sh.w; e++) l += a[e] * y[e];
    free(y);
    return l;
}

/* ---- the zoo of nets every check runs on --------------------------------- */

typedef struct zoo_case {
    const char *what;
    uint32_t c, h, w;
    fl_conv_layer layers[MAXL];
    uint32_t nl, flags;
    int mask; /* 0 none, 1 checkerboard, 2 fractional values */
} zoo_case;

static const zoo_case zoo[] = {
    { "3x3 tanh 1x1", 2, 5, 4, { { FL_CONV_3X3, 3, 1, 0 }, { FL_CONV_ACT, 0, 0, FL_ACT_TANH },
                                 { FL_CONV_1X1, 4, 1, 0 } }, 3, 0, 0 },
    { "1x1 elu resnet(tanh) relu 3x3, weight norm", 2, 5, 4,
      { { FL_CONV_1X1, 3, 1, 0 }, { FL_CONV_ACT, 0, 0, FL_ACT_ELU }, { FL_CONV_RESNET, 5, 1, FL_ACT_TANH },
        { FL_CONV_ACT, 0, 0, FL_ACT_RELU }, { FL_CONV_3X3, 4, 1, 0 } }, 5, FL_CONV_WEIGHT_NORM, 0 },
    { "stride 2, odd size", 3, 5, 7, { { FL_CONV_3X3, 3, 2, 0 }, { FL_CONV_ACT, 0, 0, FL_ACT_ELU },
                                       { FL_CONV_3X3, 2, 1, 0 } }, 3, 0, 0 },
    { "resnet first, checkerboard mask, weight norm, zero last", 2, 4, 4,
      { { FL_CONV_RESNET, 0, 1, FL_ACT_ELU }, { FL_CONV_3X3, 4, 1, 0 } }, 2,
      FL_CONV_WEIGHT_NORM | FL_CONV_ZERO_LAST, 1 },
    { "3x3 first with a fractional mask", 2, 4, 5, { { FL_CONV_3X3, 3, 1, 0 }, { FL_CONV_ACT, 0, 0, FL_ACT_RELU },
                                                     { FL_CONV_1X1, 2, 1, 0 } }, 3, 0, 2 },
    { "1x1 first with a mask, two resnets", 1, 4, 4,
      { { FL_CONV_1X1, 3, 1, 0 }, { FL_CONV_ACT, 0, 0, FL_ACT_TANH }, { FL_CONV_RESNET, 4, 1, FL_ACT_RELU },
        { FL_CONV_RESNET, 0, 1, FL_ACT_ELU }, { FL_CONV_ACT, 0, 0, FL_ACT_ELU }, { FL_CONV_3X3, 2, 1, 0 } },
      6, FL_CONV_WEIGHT_NORM, 1 },
    { "batch norm first with a mask, upsampling, resnet, batch norm last", 2, 3, 2,
      { { FL_CONV_BATCHNORM, 0, 0, 0 }, { FL_CONV_3X3, 3, 1, 0 }, { FL_CONV_BATCHNORM, 0, 0, 0 },
        { FL_CONV_ACT, 0, 0, FL_ACT_TANH }, { FL_CONV_UPSAMPLE, 0, 0, 0 },
        { FL_CONV_RESNET, 0, 1, FL_ACT_ELU }, { FL_CONV_BATCHNORM, 0, 0, 0 } },
      7, FL_CONV_WEIGHT_NORM, 2 },
    { "upsampling first, stride 2, batch norm, elu, 1x1", 2, 3, 5,
      { { FL_CONV_UPSAMPLE, 0, 0, 0 }, { FL_CONV_3X3, 3, 2, 0 }, { FL_CONV_BATCHNORM, 0, 0, 0 },
        { FL_CONV_ACT, 0, 0, FL_ACT_ELU }, { FL_CONV_1X1, 2, 1, 0 } }, 5, 0, 0 },
    /* wide enough for every path of the direct kernel: 17 channels (a
     * second, partial vector), rows of 15 pixels (two blocks), dX of one
     * channel (dot products), dW of 5 outputs (rows = output channels) */
    { "wide: 3x3 to 17, relu, 3x3 to 5, checkerboard mask, weight norm", 1, 2, 15,
      { { FL_CONV_3X3, 17, 1, 0 }, { FL_CONV_ACT, 0, 0, FL_ACT_RELU }, { FL_CONV_3X3, 5, 1, 0 } },
      3, FL_CONV_WEIGHT_NORM, 1 },
    { "upsampling last, relu", 3, 2, 3,
      { { FL_CONV_3X3, 2, 1, 0 }, { FL_CONV_UPSAMPLE, 0, 0, 0 }, { FL_CONV_ACT, 0, 0, FL_ACT_RELU } },
      3, 0, 0 },
};
#define N_ZOO (sizeof zoo / sizeof *zoo)

static fl_real *make_mask(uint32_t c, uint32_t h, uint32_t w, int kind)
{
    if (!kind) return NULL;
    fl_real *m = calloc((size_t)c * h * w, sizeof *m);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++)
            for (uint32_t ch = 0; ch < c; ch++)
                m[((size_t)y * w + x) * c + ch] =
                    kind == 1 ? (fl_real)((x + y + ch) % 2) : (fl_real)(0.25 * ((x + 2 * y + ch) % 5));
    return m;
}

static void zoo_new(tnet *t, const zoo_case *z, uint32_t max_rows)
{
    fl_real *mask = make_mask(z->c, z->h, z->w, z->mask);
    cr_assert(tnet_new(t, z->c, z->h, z->w, z->layers, z->nl, z->flags, mask, max_rows),
              "%s: %s", z->what, fl_host_last_error());
    t->mask = mask; /* the host copied it; the reference reads spec.mask */
}

static void zoo_free(tnet *t)
{
    tnet_free(t);
    free(t->mask);
}

/* Moves theta off its initialisation (zero last layers, g = 1) so every
 * gradient is exercised; batch norm's running variances stay positive. */
static void perturb(tnet *t)
{
    fl_real *e = randn(t->arena.total, "perturb", 0.3);
    for (size_t i = 0; i < t->arena.total; i++) t->arena.theta[i] += e[i];
    free(e);
    for (size_t r = 0; r < t->arena.n; r++) {
        const fl_param_rec *p = &t->arena.p[r];
        if ((p->flags & FL_PARAM_STATE) && strstr(p->name, ".var"))
            for (size_t i = p->offset; i < p->offset + p->size; i++)
                t->arena.theta[i] = (fl_real)(0.5 + fabs(t->arena.theta[i]));
    }
}

static int has_bn(const zoo_case *z)
{
    for (uint32_t l = 0; l < z->nl; l++)
        if (z->layers[l].op == FL_CONV_BATCHNORM) return 1;
    return 0;
}

/* The service's forward in `mode` (conv_forward itself for EVAL, which
 * must be the same), the averages left alone. */
static void fwd_mode(tnet *t, fl_mode mode, uint32_t n, const fl_real *x, fl_real *y)
{
    const fl_host *host = fl_host_table();
    if (mode == FL_MODE_EVAL)
        host->conv_forward(t->c, t->theta, n, x, y);
    else
        host->conv_forward_mode(t->c, t->theta, NULL, mode, n, x, y);
}

static size_t out_len(const tnet *t)
{
    uint32_t c, h, w;
    fl_conv_out_shape(t->c, &c, &h, &w);
    return (size_t)c * h * w;
}

static double *to_double(const fl_real *v, size_t n)
{
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

static void assert_near(double got, double want, double abs_tol, double rel_tol, double *worst,
                        const char *what, const char *item, size_t i)
{
    const double bound = abs_tol + rel_tol * fabs(want), err = fabs(got - want);
    if (err / bound > *worst) *worst = err / bound;
    cr_assert(err <= bound, "%s: %s[%zu] = %.9g, reference %.9g", what, item, i, got, want);
}

/* ---- tests -------------------------------------------------------------- */

Test(conv, forward_matches_a_direct_convolution)
{
    const uint32_t n = 3;
    for (size_t zm = 0; zm < 4 * N_ZOO; zm++) {
        const size_t z = zm / 4;
        ref_mode = zm % 2 ? FL_MODE_TRAIN : FL_MODE_EVAL;
        fl_conv_direct = zm % 4 >= 2 ? 1 : -1; /* direct, or im2col */
        if (ref_mode == FL_MODE_TRAIN && !has_bn(&zoo[z])) continue;
        tnet t;
        zoo_new(&t, &zoo[z], n);
        perturb(&t);
        const size_t il = (size_t)zoo[z].c * zoo[z].h * zoo[z].w, ol = out_len(&t);
        fl_real *x = randn(n * il, "x", 1), *y = calloc(n * ol, sizeof *y);
        fwd_mode(&t, ref_mode, n, x, y);
        double *th = to_double(t.theta, t.arena.total - t.cx->block), *xd = to_double(x, n * il);
        rshape sh;
        double *ref = ref_forward(&t, th, n, xd, &sh);
        uint32_t oc, oh, ow;
        fl_conv_out_shape(t.c, &oc, &oh, &ow);
        cr_assert(oc == sh.c && oh == sh.h && ow == sh.w, "%s: shape %ux%ux%u, reference %ux%ux%u",
                  zoo[z].what, oc, oh, ow, sh.c, sh.h, sh.w);
        double worst = 0, mag = 0;
        for (size_t e = 0; e < n * ol; e++) mag = fmax(mag, fabs(ref[e]));
        cr_assert(mag > 0.1, "%s: a trivial output", zoo[z].what);
        for (size_t e = 0; e < n * ol; e++)
            assert_near(y[e], ref[e], VAL_TOL * (1 + mag), VAL_TOL, &worst, zoo[z].what, "out", e);
        cr_log_info("%s (mode %d, direct %d): worst forward error %.3g of the bound", zoo[z].what,
                    (int)ref_mode, fl_conv_direct == 1, worst);
        free(th);
        free(xd);
        free(ref);
        free(x);
        free(y);
        zoo_free(&t);
    }
}

Test(conv, every_gradient_matches_differences_of_the_reference)
{
    const fl_host *host = fl_host_table();
    const uint32_t n = 2;
    for (size_t zm = 0; zm < 4 * N_ZOO; zm++) {
        const size_t z = zm / 4;
        ref_mode = zm % 2 ? FL_MODE_TRAIN : FL_MODE_EVAL;
        fl_conv_direct = zm % 4 >= 2 ? 1 : -1; /* direct, or im2col */
        if (ref_mode == FL_MODE_TRAIN && !has_bn(&zoo[z])) continue;
        tnet t;
        zoo_new(&t, &zoo[z], 4);
        perturb(&t);
        const size_t il = (size_t)zoo[z].c * zoo[z].h * zoo[z].w, ol = out_len(&t);
        const size_t nt = t.arena.total - t.cx->block;
        fl_real *x = randn(n * il, "x", 1), *y = calloc(n * ol, sizeof *y);
        fl_real *a = randn(n * ol, "a", 1), *din = calloc(n * il, sizeof *din);
        /* both outputs accumulate: start them at 0.25 */
        for (size_t i = 0; i < nt; i++) t.dtheta[i] = 0.25;
        for (size_t i = 0; i < n * il; i++) din[i] = 0.25;
        fwd_mode(&t, ref_mode, n, x, y);
        host->conv_backward(t.c, t.theta, t.dtheta, n, a, din);
        double *th = to_double(t.theta, nt), *xd = to_double(x, n * il);
        const double h = 1e-6;
        double worst = 0;
        size_t checked = 0;
        for (size_t r = 0; r < t.arena.n; r++) {
            const fl_param_rec *p = &t.arena.p[r];
            if (p->flags & FL_PARAM_STATE) { /* running averages: no gradient */
                for (size_t i = p->offset; i < p->offset + p->size; i++)
                    cr_assert_eq(t.dtheta[i], 0.25, "%s: %s gets a gradient", zoo[z].what, p->name);
                continue;
            }
            for (size_t i = p->offset; i < p->offset + p->size; i++) {
                const double keep = th[i];
                th[i] = keep + h;
                const double lp = ref_loss(&t, th, n, xd, a);
                th[i] = keep - h;
                const double lm = ref_loss(&t, th, n, xd, a);
                th[i] = keep;
                assert_near(t.dtheta[i] - 0.25, (lp - lm) / (2 * h), REF_ABS, REF_REL, &worst,
                            zoo[z].what, p->name, i - p->offset);
                checked++;
            }
        }
        for (size_t i = 0; i < n * il; i++) {
            const double keep = xd[i];
            xd[i] = keep + h;
            const double lp = ref_loss(&t, th, n, xd, a);
            xd[i] = keep - h;
            const double lm = ref_loss(&t, th, n, xd, a);
            xd[i] = keep;
            assert_near(din[i] - 0.25, (lp - lm) / (2 * h), REF_ABS, REF_REL, &worst, zoo[z].what,
                        "din", i);
        }
        cr_assert(checked > 50);
        cr_log_info("%s (mode %d, direct %d): %zu parameters, worst gradient error %.3g of the "
                    "bound", zoo[z].what, (int)ref_mode, fl_conv_direct == 1, checked, worst);
        free(th);
        free(xd);
        free(x);
        free(y);
        free(a);
        free(din);
        zoo_free(&t);
    }
}

/* sum(a . out) of the service's own forward, in double. */
static double own_loss(tnet *t, uint32_t n, const fl_real *x, const fl_real *a, fl_real *y,
                       size_t ol)
{
    fl_host_table()->conv_forward(t->c, t->theta, n, x, y);
    double l = 0;
    for (size_t e = 0; e < n * ol; e++) l += (double)a[e] * y[e];
    return l;
}

/* A smooth net (tanh, elu) against differences of the service's own
 * outputs, with test_parts.c's bounds. */
Test(conv, gradients_match_differences_of_its_own_outputs)
{
    const fl_host *host = fl_host_table();
    const uint32_t n = 2;
    const fl_conv_layer ls[] = { L3(3), LA(FL_ACT_TANH), LR(4, FL_ACT_TANH), L1(2) };
    tnet t;
    cr_assert(tnet_new(&t, 2, 4, 3, ls, 4, FL_CONV_WEIGHT_NORM, NULL, n), "%s", fl_host_last_error());
    perturb(&t);
    const size_t il = 2 * 4 * 3, ol = out_len(&t), nt = t.arena.total - t.cx->block;
    fl_real *x = randn(n * il, "x", 1), *y = calloc(n * ol, sizeof *y);
    fl_real *a = randn(n * ol, "a", 1), *din = calloc(n * il, sizeof *din);
    host->conv_forward(t.c, t.theta, n, x, y);
    host->conv_backward(t.c, t.theta, t.dtheta, n, a, din);
    fl_real *g = malloc(nt * sizeof *g);
    memcpy(g, t.dtheta, nt * sizeof *g);
    double worst = 0;
#define OWN_LOSS(out) own_loss(&t, n, x, a, out, ol)
    for (size_t r = 0; r < t.arena.n; r++) {
        const fl_param_rec *p = &t.arena.p[r];
        for (size_t i = p->offset; i < p->offset + p->size; i++) {
            const fl_real keep = t.theta[i];
            t.theta[i] = keep + (fl_real)OWN_H;
            const double lp = OWN_LOSS(y);
            t.theta[i] = keep - (fl_real)OWN_H;
            const double lm = OWN_LOSS(y);
            t.theta[i] = keep;
            assert_near(g[i], (lp - lm) / (2 * OWN_H), OWN_ABS, OWN_REL, &worst, "own", p->name,
                        i - p->offset);
        }
    }
    for (size_t i = 0; i < n * il; i++) {
        const fl_real keep = x[i];
        x[i] = keep + (fl_real)OWN_H;
        const double lp = OWN_LOSS(y);
        x[i] = keep - (fl_real)OWN_H;
        const double lm = OWN_LOSS(y);
        x[i] = keep;
        assert_near(din[i], (lp - lm) / (2 * OWN_H), OWN_ABS, OWN_REL, &worst, "own", "din", i);
    }
#undef OWN_LOSS
    cr_log_info("own differences: worst gradient error %.3g of the bound", worst);
    free(g);
    free(x);
    free(y);
    free(a);
    free(din);
    tnet_free(&t);
}

Test(conv, weight_norm_is_per_output_channel)
{
    const fl_host *host = fl_host_table();
    const uint32_t n = 2;
    const fl_conv_layer ls[] = { L3(4), LA(FL_ACT_ELU), L1(3) };
    tnet t;
    cr_assert(tnet_new(&t, 3, 4, 4, ls, 3, FL_CONV_WEIGHT_NORM, NULL, n), "%s", fl_host_last_error());
    cr_assert_null(prm(&t, 'W', 0), "weight-normalised units have v and g, not W");
    const fl_param_rec *v0 = prm(&t, 'v', 0), *g0 = prm(&t, 'g', 0), *v1 = prm(&t, 'v', 1);
    cr_assert(v0 && g0 && v1 && prm(&t, 'g', 1));
    for (uint32_t j = 0; j < 4; j++) cr_assert_eq(t.theta[g0->offset + j], 1, "g starts at 1");
    const size_t il = 3 * 4 * 4, ol = out_len(&t);
    fl_real *x = randn(n * il, "x", 1), *y0 = calloc(n * ol, sizeof *y0),
            *y1 = calloc(n * ol, sizeof *y1), *a = randn(n * ol, "a", 1);
    host->conv_forward(t.c, t.theta, n, x, y0);
    /* scaling v's output channel j by any factor leaves the net unchanged */
    for (uint32_t k = 0; k < 27; k++)
        for (uint32_t j = 0; j < 4; j++) t.theta[v0->offset + k * 4 + j] *= (fl_real)(0.5 + j);
    host->conv_forward(t.c, t.theta, n, x, y1);
    for (size_t e = 0; e < n * ol; e++)
        cr_assert(fabs(y0[e] - y1[e]) <= 10 * VAL_TOL * (1 + fabs(y0[e])), "out[%zu] %g vs %g", e,
                  (double)y0[e], (double)y1[e]);
    /* hence dv is orthogonal to v, per output channel */
    host->conv_backward(t.c, t.theta, t.dtheta, n, a, NULL);
    for (uint32_t j = 0; j < 4; j++) {
        double dot = 0, nv = 0, nd = 0;
        for (uint32_t k = 0; k < 27; k++) {
            const size_t e = v0->offset + k * 4 + j;
            dot += (double)t.theta[e] * t.dtheta[e];
            nv += (double)t.theta[e] * t.theta[e];
            nd += (double)t.dtheta[e] * t.dtheta[e];
        }
        cr_assert(nd > 0, "channel %u has no gradient", j);
        cr_assert(fabs(dot) <= 10 * VAL_TOL * sqrt(nv * nd), "channel %u: v . dv = %g", j, dot);
    }
    free(x);
    free(y0);
    free(y1);
    free(a);
    tnet_free(&t);
}

Test(conv, a_zero_initialised_last_layer_outputs_zero)
{
    const fl_host *host = fl_host_table();
    const uint32_t n = 3;
    const fl_conv_layer ls[] = { L3(4), LA(FL_ACT_RELU), LR(4, FL_ACT_RELU), L3(6) };
    for (int wn = 0; wn < 2; wn++) {
        tnet t;
        cr_assert(tnet_new(&t, 2, 5, 5, ls, 4, FL_CONV_ZERO_LAST | (wn ? FL_CONV_WEIGHT_NORM : 0),
                           NULL, n),
                  "%s", fl_host_last_error());
        cr_assert_not_null(prm(&t, 'W', 3), "the zero layer is never weight-normalised");
        const size_t il = 2 * 5 * 5, ol = out_len(&t);
        cr_assert_eq(ol, 6 * 5 * 5);
        fl_real *x = randn(n * il, "x", 2), *y = randn(n * ol, "junk", 1), *a = randn(n * ol, "a", 1);
        fl_real *din = calloc(n * il, sizeof *din);
        host->conv_forward(t.c, t.theta, n, x, y);
        for (size_t e = 0; e < n * ol; e++) cr_assert_eq(y[e], 0, "out[%zu] = %g", e, (double)y[e]);
        /* the last layer learns; nothing reaches the layers below yet */
        host->conv_backward(t.c, t.theta, t.dtheta, n, a, din);
        double dw = 0, db = 0, below = 0, dx = 0;
        const fl_param_rec *w3 = prm(&t, 'W', 3), *b3 = prm(&t, 'b', 3);
        for (size_t i = 0; i < w3->size; i++) dw += fabs(t.dtheta[w3->offset + i]);
        for (size_t i = 0; i < b3->size; i++) db += fabs(t.dtheta[b3->offset + i]);
        for (size_t i = 0; i < w3->offset; i++) below += fabs(t.dtheta[i]);
        for (size_t i = 0; i < n * il; i++) dx += fabs(din[i]);
        cr_assert(dw > 0 && db > 0, "the zero layer gets a gradient");
        cr_assert(below == 0 && dx == 0, "below the zero layer: %g, input %g", below, dx);
        free(x);
        free(y);
        free(a);
        free(din);
        tnet_free(&t);
    }
}

/* A masked net equals the unmasked net on the masked input, bit for bit,
 * and its input gradient is the mask times the unmasked one: exactly 0
 * where the mask is. Both with a 3x3 first layer (mask applied inside
 * im2col) and a 1x1 one (a masked copy). */
Test(conv, the_mask_multiplies_the_input)
{
    const fl_host *host = fl_host_table();
    const uint32_t n = 3, c = 2, h = 4, w = 6;
    const fl_conv_layer first3[] = { L3(3), LA(FL_ACT_TANH), L1(4) };
    const fl_conv_layer first1[] = { L1(3), LA(FL_ACT_TANH), LR(0, FL_ACT_ELU), L3(4) };
    const fl_conv_layer *nets[2] = { first3, first1 };
    const uint32_t nls[2] = { 3, 4 };
    for (int kd = 0; kd < 4; kd++) {
        const int k = kd % 2;
        fl_conv_direct = kd >= 2 ? 1 : -1; /* direct, or im2col */
        fl_real *mask = make_mask(c, h, w, 1);
        tnet tm, tp;
        cr_assert(tnet_new(&tm, c, h, w, nets[k], nls[k], 0, mask, n), "%s", fl_host_last_error());
        cr_assert(tnet_new(&tp, c, h, w, nets[k], nls[k], 0, NULL, n), "%s", fl_host_last_error());
        cr_assert_eq(tm.arena.total, tp.arena.total);
        memcpy(tp.arena.theta, tm.arena.theta, tm.arena.total * sizeof(fl_real));
        const size_t il = (size_t)c * h * w, ol = out_len(&tm);
        fl_real *x = randn(n * il, "x", 1), *xm = malloc(n * il * sizeof *xm);
        for (size_t e = 0; e < n * il; e++) xm[e] = x[e] * mask[e % il];
        fl_real *ym = calloc(n * ol, sizeof *ym), *yp = calloc(n * ol, sizeof *yp);
        fl_real *a = randn(n * ol, "a", 1);
        fl_real *dm = calloc(n * il, sizeof *dm), *dp = calloc(n * il, sizeof *dp);
        memset(mask, 0, il * sizeof *mask); /* the host kept its own copy */
        host->conv_forward(tm.c, tm.theta, n, x, ym);
        host->conv_forward(tp.c, tp.theta, n, xm, yp);
        cr_assert_arr_eq(ym, yp, n * ol * sizeof *ym, "net %d: masked != premultiplied", k);
        host->conv_backward(tm.c, tm.theta, tm.dtheta, n, a, dm);
        host->conv_backward(tp.c, tp.theta, tp.dtheta, n, a, dp);
        cr_assert_arr_eq(tm.arena.grad, tp.arena.grad, tm.arena.total * sizeof(fl_real));
        fl_real *want = make_mask(c, h, w, 1);
        size_t zeros = 0;
        for (size_t e = 0; e < n * il; e++) {
            cr_assert_eq(dm[e], want[e % il] * dp[e], "din[%zu]", e);
            zeros += want[e % il] == 0 && dm[e] == 0;
        }
        cr_assert_eq(zeros, n * il / 2);
        free(want);
        free(mask);
        free(x);
        free(xm);
        free(ym);
        free(yp);
        free(a);
        free(dm);
        free(dp);
        tnet_free(&tm);
        tnet_free(&tp);
    }
}

/* Forward + backward of a net large enough to thread (and with several dW
 * chunks and partial tiles), with 1 and 2 OpenMP threads, and from inside
 * another parallel region: the same bits. */
static void run_threads(tnet *t, int threads, uint32_t n, const fl_real *x, const fl_real *a,
                        fl_real *y, fl_real *din, int nested)
{
    const fl_host *host = fl_host_table();
    const size_t nt = t->arena.total;
    memset(t->arena.grad, 0, nt * sizeof(fl_real));
    memset(din, 0, (size_t)n * 16 * 12 * 12 * sizeof *din);
    omp_set_num_threads(threads);
    if (nested) {
        int inside = 0;
#pragma omp parallel num_threads(2)
        {
#pragma omp single
            {
                inside = omp_in_parallel();
                host->conv_forward(t->c, t->theta, n, x, y);
                host->conv_backward(t->c, t->theta, t->dtheta, n, a, din);
            }
        }
        cr_assert(inside);
    } else {
        host->conv_forward(t->c, t->theta, n, x, y);
        host->conv_backward(t->c, t->theta, t->dtheta, n, a, din);
    }
}

Test(conv, bit_identical_with_1_and_2_threads, .timeout = 120)
{
    const uint32_t n = 17, il = 16 * 12 * 12; /* 17 * 144 = 2448 pixels: 2 dW chunks, 10 tiles */
    const fl_conv_layer ls[] = { L3(32), LA(FL_ACT_RELU), LR(32, FL_ACT_ELU), LA(FL_ACT_TANH),
                                 L3s2(16), LA(FL_ACT_ELU), L1(8) };
    fl_real *mask = make_mask(16, 12, 12, 1);
    tnet t;
    cr_assert(tnet_new(&t, 16, 12, 12, ls, 7, FL_CONV_WEIGHT_NORM, mask, n), "%s",
              fl_host_last_error());
    cr_assert(fl_conv_fmas(t.c, n) >= 1e7, "too small to thread");
    perturb(&t);
    const size_t ol = out_len(&t), nt = t.arena.total;
    fl_real *x = randn(n * il, "x", 1), *a = randn(n * ol, "a", 1);
    fl_real *y[3], *din[3], *g[3];
    const int saved = omp_get_max_threads();
    for (int r = 0; r < 3; r++) {
        y[r] = calloc(n * ol, sizeof(fl_real));
        din[r] = calloc((size_t)n * il, sizeof(fl_real));
        g[r] = malloc(nt * sizeof(fl_real));
        run_threads(&t, r == 1 ? 2 : 1, n, x, a, y[r], din[r], r == 2);
        memcpy(g[r], t.arena.grad, nt * sizeof(fl_real));
    }
    omp_set_num_threads(saved);
    for (int r = 1; r < 3; r++) {
        cr_assert_arr_eq(y[0], y[r], n * ol * sizeof(fl_real), "out differs (run %d)", r);
        cr_assert_arr_eq(g[0], g[r], nt * sizeof(fl_real), "dtheta differs (run %d)", r);
        cr_assert_arr_eq(din[0], din[r], (size_t)n * il * sizeof(fl_real), "din differs (run %d)", r);
    }
    double s = 0;
    for (size_t i = 0; i < nt; i++) s += fabs(g[0][i]);
    cr_assert(s > 0);
    for (int r = 0; r < 3; r++) {
        free(y[r]);
        free(din[r]);
        free(g[r]);
    }
    free(x);
    free(a);
    free(mask);
    tnet_free(&t);
}

/* A call on n images equals n calls on one image each: outputs per image,
 * input gradients per image, and parameter gradients summed over the
 * images. 9 images of 16 x 16 pixels are 2304 pixels, so the batch's dW
 * is summed in two chunks while each single image's is one, and its dX
 * gathers run over 9 tiles whose bands of output pixels cross image
 * boundaries; the second net does the same with stride 2 and an odd
 * image (20 x 7: tiles end mid-row). */
static void batch_case(uint32_t c, uint32_t h, uint32_t w, const fl_conv_layer *ls, uint32_t nl)
{
    const fl_host *host = fl_host_table();
    const uint32_t n = 9, il = c * h * w;
    tnet t;
    cr_assert(tnet_new(&t, c, h, w, ls, nl, FL_CONV_WEIGHT_NORM, NULL, n), "%s",
              fl_host_last_error());
    perturb(&t);
    const size_t ol = out_len(&t), nt = t.arena.total;
    fl_real *x = randn(n * il, "x", 1), *a = randn(n * ol, "a", 1);
    fl_real *y = calloc(n * ol, sizeof *y), *y1 = calloc(ol, sizeof *y1);
    fl_real *din = calloc(n * il, sizeof *din), *din1 = calloc(il, sizeof *din1);
    fl_real *g = calloc(nt, sizeof *g);
    host->conv_forward(t.c, t.theta, n, x, y);
    host->conv_backward(t.c, t.theta, t.arena.grad, n, a, din);
    memcpy(g, t.arena.grad, nt * sizeof *g);
    memset(t.arena.grad, 0, nt * sizeof *g);
    for (uint32_t r = 0; r < n; r++) {
        memset(din1, 0, il * sizeof *din1);
        host->conv_forward(t.c, t.theta, 1, x + r * il, y1);
        host->conv_backward(t.c, t.theta, t.arena.grad, 1, a + r * ol, din1);
        for (size_t e = 0; e < ol; e++)
            cr_assert(fabs(y1[e] - y[r * ol + e]) <= VAL_TOL * (1 + fabs(y1[e])), "image %u", r);
        for (size_t e = 0; e < il; e++)
            cr_assert(fabs(din1[e] - din[r * il + e]) <= REF_ABS + REF_REL * fabs(din1[e]),
                      "image %u din[%zu]: %g vs %g", r, e, (double)din[r * il + e], (double)din1[e]);
    }
    double worst = 0;
    for (size_t i = 0; i < nt; i++)
        assert_near(g[i], t.arena.grad[i], 10 * REF_ABS, REF_REL, &worst, "batch", "dtheta", i);
    cr_log_info("batch against images: worst dtheta error %.3g of the bound", worst);
    free(x);
    free(a);
    free(y);
    free(y1);
    free(din);
    free(din1);
    free(g);
    tnet_free(&t);
}

Test(conv, a_batch_is_the_sum_of_its_images)
{
    for (int direct = 0; direct < 2; direct++) {
        fl_conv_direct = direct ? 1 : -1;
    const fl_conv_layer ls[] = { L3(4), LA(FL_ACT_ELU), LR(0, FL_ACT_TANH), L1(2) };
    batch_case(2, 16, 16, ls, 4);
    const fl_conv_layer s2[] = { L3s2(3), LA(FL_ACT_ELU), L3(2) };
    batch_case(3, 20, 7, s2, 3);
    }
}

static void refused(const char *what, uint32_t c, uint32_t h, uint32_t w, const fl_conv_layer *ls,
                    uint32_t nl, uint32_t flags, const char *msg)
{
    tnet t;
    cr_assert(!tnet_new(&t, c, h, w, ls, nl, flags, NULL, 4), "%s: accepted", what);
    assert_contains(fl_host_last_error(), msg);
    assert_contains(fl_host_last_error(), "conv net");
    tnet_free(&t);
}

Test(conv, bad_specs_are_refused_with_a_message)
{
    const fl_conv_layer ok[] = { L3(4) };
    refused("zero channels in", 0, 4, 4, ok, 1, 0, "zero dimension");
    refused("zero height", 2, 0, 4, ok, 1, 0, "zero dimension");
    const fl_conv_layer zc[] = { L3(4), LA(FL_ACT_RELU), L1(0) };
    refused("zero channels out", 2, 4, 4, zc, 3, 0, "layer 2: a convolution with zero output channels");
    const fl_conv_layer ua[] = { L3(4), LA((fl_act)42) };
    refused("unknown activation", 2, 4, 4, ua, 2, 0, "layer 1: unknown activation 42");
    const fl_conv_layer sp[] = { L3(4), LA(FL_ACT_SOFTPLUS) };
    refused("softplus", 2, 4, 4, sp, 2, 0, "unknown activation");
    const fl_conv_layer ur[] = { LR(4, FL_ACT_LINEAR) };
    refused("resnet without activation", 2, 4, 4, ur, 1, 0, "ResNet block");
    const fl_conv_layer uo[] = { { (fl_conv_op)9, 4, 1, FL_ACT_LINEAR } };
    refused("unknown op", 2, 4, 4, uo, 1, 0, "unknown layer type 9");
    const fl_conv_layer af[] = { LA(FL_ACT_RELU), L3(4) };
    refused("activation first", 2, 4, 4, af, 2, 0, "it is first");
    const fl_conv_layer aa[] = { L3(4), LA(FL_ACT_RELU), LA(FL_ACT_TANH) };
    refused("two activations", 2, 4, 4, aa, 3, 0, "not another activation");
    const fl_conv_layer ca[] = { { FL_CONV_3X3, 4, 1, FL_ACT_RELU } };
    refused("activation on a conv", 2, 4, 4, ca, 1, 0, "add a FL_CONV_ACT layer");
    const fl_conv_layer s3[] = { { FL_CONV_3X3, 4, 3, FL_ACT_LINEAR } };
    refused("stride 3", 2, 4, 4, s3, 1, 0, "stride 3");
    const fl_conv_layer s1[] = { { FL_CONV_1X1, 4, 2, FL_ACT_LINEAR } };
    refused("strided 1x1", 2, 4, 4, s1, 1, 0, "stride 2");
    refused("no layers", 2, 4, 4, ok, 0, 0, "has no layers");
    const fl_conv_layer za[] = { L3(4), LA(FL_ACT_RELU) };
    refused("zero last on an activation", 2, 4, 4, za, 2, FL_CONV_ZERO_LAST, "FL_CONV_ZERO_LAST");
    refused("unknown flags", 2, 4, 4, ok, 1, 1u << 7, "unknown flags 0x80");

    /* struct_size from an older, smaller spec; no name; after create */
    fl_arena arena = { 0 };
    fl_ctx *cx = fl_ctx_new("conv", NULL, &arena, 1);
    const fl_host *host = fl_host_table();
    fl_conv_spec s = { sizeof(fl_conv_spec), "s", 2, 4, 4, 1, ok, 0, NULL };
    s.struct_size = 8;
    cr_assert_null(host->conv_create(cx, &s, 4));
    assert_contains(fl_host_last_error(), "struct_size 8");
    s.struct_size = sizeof s;
    s.name = NULL;
    cr_assert_null(host->conv_create(cx, &s, 4));
    assert_contains(fl_host_last_error(), "no name");
    s.name = "s";
    fl_ctx_end_create(cx);
    cr_assert_null(host->conv_create(cx, &s, 4));
    assert_contains(fl_host_last_error(), "only during create");
    fl_ctx_free(cx);
    fl_arena_free(&arena);

    /* a data set has no parameter block */
    cx = fl_ctx_new("data", NULL, NULL, 1);
    cr_assert_null(host->conv_create(cx, &s, 4));
    assert_contains(fl_host_last_error(), "cannot own parameters");
    fl_ctx_free(cx);
}

Test(conv, parameters_are_named_and_initialised)
{
    const fl_conv_layer ls[] = { L3(4), LA(FL_ACT_RELU), LR(6, FL_ACT_RELU), L1(3) };
    tnet t;
    cr_assert(tnet_new(&t, 2, 4, 4, ls, 4, 0, NULL, 2), "%s", fl_host_last_error());
    /* units: 3x3 2->4, resnet 4->6->4, 1x1 4->3 */
    const uint32_t kk[4] = { 18, 36, 54, 4 }, co[4] = { 4, 6, 4, 3 };
    for (uint32_t u = 0; u < 4; u++) {
        const fl_param_rec *w = prm(&t, 'W', u), *b = prm(&t, 'b', u);
        cr_assert(w && b, "unit %u", u);
        cr_assert_eq(w->size, (size_t)kk[u] * co[u]);
        cr_assert_eq(b->size, co[u]);
        const double lim = 1 / sqrt((double)kk[u]);
        double mx = 0;
        for (size_t i = 0; i < w->size; i++) mx = fmax(mx, fabs(t.theta[w->offset + i]));
        cr_assert(mx > 0.5 * lim && mx <= lim, "unit %u: max |W| %g, U(+-%g)", u, mx, lim);
    }
    cr_assert_null(prm(&t, 'W', 4));
    uint32_t c, h, w;
    fl_conv_out_shape(t.c, &c, &h, &w);
    cr_assert(c == 3 && h == 4 && w == 4);
    tnet_free(&t);
}

/* ---- upsampling and batch norm (since 1.4) ------------------------------- */

Test(conv, upsampling_copies_each_pixel_to_a_2x2_block)
{
    const fl_host *host = fl_host_table();
    const fl_conv_layer ls[] = { LU(), L1(2) };
    tnet t;
    cr_assert(tnet_new(&t, 2, 2, 3, ls, 2, 0, NULL, 2), "%s", fl_host_last_error());
    uint32_t c, h, w;
    fl_conv_out_shape(t.c, &c, &h, &w);
    cr_assert(c == 2 && h == 4 && w == 6, "%ux%ux%u", c, h, w);
    /* the 1x1 as the identity */
    const fl_param_rec *W = prm(&t, 'W', 0), *b = prm(&t, 'b', 0);
    cr_assert(W && b && !prm(&t, 'W', 1), "the upsampling has no parameters");
    for (uint32_t k = 0; k < 4; k++) t.theta[W->offset + k] = k % 3 == 0;
    t.theta[b->offset] = t.theta[b->offset + 1] = 0;
    fl_real x[24], y[96], a[96], din[24] = { 0 };
    for (int i = 0; i < 24; i++) x[i] = (fl_real)(i + 1);
    for (int i = 0; i < 96; i++) a[i] = (fl_real)(i % 7);
    host->conv_forward(t.c, t.theta, 2, x, y);
    for (uint32_t i = 0; i < 2; i++)
        for (uint32_t yy = 0; yy < 4; yy++)
            for (uint32_t xx = 0; xx < 6; xx++)
                for (uint32_t ch = 0; ch < 2; ch++)
                    cr_assert_eq(y[((i * 4 + yy) * 6 + xx) * 2 + ch],
                                 x[((i * 2 + yy / 2) * 3 + xx / 2) * 2 + ch]);
    host->conv_backward(t.c, t.theta, t.dtheta, 2, a, din);
    for (uint32_t i = 0; i < 2; i++)
        for (uint32_t yy = 0; yy < 2; yy++)
            for (uint32_t xx = 0; xx < 3; xx++)
                for (uint32_t ch = 0; ch < 2; ch++) {
                    double want = 0;
                    for (uint32_t dy = 0; dy < 2; dy++)
                        for (uint32_t dx = 0; dx < 2; dx++)
                            want += a[((i * 4 + 2 * yy + dy) * 6 + 2 * xx + dx) * 2 + ch];
                    cr_assert_eq(din[((i * 2 + yy) * 3 + xx) * 2 + ch], want);
                }
    tnet_free(&t);
}

/* TRAIN with a state block moves the running averages by 0.1 towards the
 * batch's mean and unbiased variance; TRAIN without one and EVAL leave
 * them; the outputs of TRAIN do not depend on them. */
Test(conv, batch_norm_running_averages_move_in_training_only)
{
    const fl_host *host = fl_host_table();
    const uint32_t n = 5, c = 3, h = 4, w = 2, P = n * h * w;
    const fl_conv_layer ls[] = { LB(), LA(FL_ACT_RELU), L3(2) };
    tnet t;
    cr_assert(tnet_new(&t, c, h, w, ls, 3, 0, NULL, n), "%s", fl_host_last_error());
    const fl_param_rec *G = prm_bn(&t, "gamma", 0), *B = prm_bn(&t, "beta", 0),
                       *RM = prm_bn(&t, "mean", 0), *RV = prm_bn(&t, "var", 0);
    cr_assert(G && B && RM && RV);
    cr_assert(!(G->flags & FL_PARAM_STATE) && !(B->flags & FL_PARAM_STATE));
    cr_assert((RM->flags & FL_PARAM_STATE) && (RV->flags & FL_PARAM_STATE));
    for (uint32_t j = 0; j < c; j++) {
        cr_assert_eq(t.theta[G->offset + j], 1);
        cr_assert_eq(t.theta[B->offset + j], 0);
        cr_assert_eq(t.theta[RM->offset + j], 0);
        cr_assert_eq(t.theta[RV->offset + j], 1);
        t.theta[RM->offset + j] = (fl_real)(0.5 * j);
        t.theta[RV->offset + j] = (fl_real)(2 + j);
    }
    fl_real *x = randn((size_t)P * c, "x", 1.5);
    for (size_t e = 0; e < (size_t)P * c; e++) x[e] += (fl_real)(e % c); /* channel means 0, 1, 2 */
    const size_t ol = out_len(&t), nt = t.arena.total;
    fl_real *y0 = calloc(n * ol, sizeof *y0), *y1 = calloc(n * ol, sizeof *y1);
    fl_real *keep = malloc(nt * sizeof *keep);
    memcpy(keep, t.arena.theta, nt * sizeof *keep);
    host->conv_forward_mode(t.c, t.theta, NULL, FL_MODE_TRAIN, n, x, y0);
    cr_assert_arr_eq(keep, t.arena.theta, nt * sizeof *keep, "TRAIN without state wrote theta");
    host->conv_forward_mode(t.c, t.theta, t.theta, FL_MODE_EVAL, n, x, y1);
    cr_assert_arr_eq(keep, t.arena.theta, nt * sizeof *keep, "EVAL wrote theta");
    host->conv_forward_mode(t.c, t.theta, t.theta, FL_MODE_TRAIN, n, x, y1);
    cr_assert_arr_eq(y0, y1, n * ol * sizeof *y0, "TRAIN outputs depend on the averages");
    for (uint32_t j = 0; j < c; j++) {
        double mu = 0, var = 0;
        for (uint32_t p = 0; p < P; p++) mu += x[(size_t)p * c + j];
        mu /= P;
        for (uint32_t p = 0; p < P; p++) var += pow(x[(size_t)p * c + j] - mu, 2);
        var /= P - 1;
        const double m = 0.9 * keep[RM->offset + j] + 0.1 * mu;
        const double v = 0.9 * keep[RV->offset + j] + 0.1 * var;
        cr_assert(fabs(t.theta[RM->offset + j] - m) <= VAL_TOL * 10, "mean %u: %g, want %g", j,
                  (double)t.theta[RM->offset + j], m);
        cr_assert(fabs(t.theta[RV->offset + j] - v) <= VAL_TOL * 10 * v, "var %u: %g, want %g", j,
                  (double)t.theta[RV->offset + j], v);
    }
    free(x);
    free(y0);
    free(y1);
    free(keep);
    tnet_free(&t);
}

/* A batch-norm and upsampling net large enough to thread, in TRAIN (the
 * statistics summed over tiles) and EVAL, with 1 and 2 threads and from
 * inside a parallel region: the same bits, running averages included. */
Test(conv, batch_norm_and_upsampling_bit_identical_with_1_and_2_threads, .timeout = 120)
{
    const fl_host *host = fl_host_table();
    const uint32_t n = 9, c = 4, h = 10, w = 12, il = c * h * w;
    const fl_conv_layer ls[] = { L3(16), LB(), LA(FL_ACT_RELU), LU(), LR(16, FL_ACT_ELU), LB(),
                                 LA(FL_ACT_TANH), L3s2(8), LB() };
    tnet t;
    cr_assert(tnet_new(&t, c, h, w, ls, 9, FL_CONV_WEIGHT_NORM, NULL, n), "%s",
              fl_host_last_error());
    cr_assert(fl_conv_fmas(t.c, n) >= 1e7, "too small to thread");
    perturb(&t);
    const size_t ol = out_len(&t), nt = t.arena.total;
    fl_real *x = randn(n * il, "x", 1), *a = randn(n * ol, "a", 1);
    fl_real *th0 = malloc(nt * sizeof *th0);
    memcpy(th0, t.arena.theta, nt * sizeof *th0);
    const int saved = omp_get_max_threads();
    for (int mode = 0; mode < 2; mode++) {
        fl_real *y[3], *din[3], *g[3], *th[3];
        for (int r = 0; r < 3; r++) {
            y[r] = calloc(n * ol, sizeof(fl_real));
            din[r] = calloc((size_t)n * il, sizeof(fl_real));
            g[r] = malloc(nt * sizeof(fl_real));
            th[r] = malloc(nt * sizeof(fl_real));
            memcpy(t.arena.theta, th0, nt * sizeof *th0);
            memset(t.arena.grad, 0, nt * sizeof(fl_real));
            omp_set_num_threads(r == 1 ? 2 : 1);
#pragma omp parallel num_threads(2) if (r == 2)
            {
#pragma omp single
                {
                    host->conv_forward_mode(t.c, t.theta, t.theta, (fl_mode)mode, n, x, y[r]);
                    host->conv_backward(t.c, t.theta, t.dtheta, n, a, din[r]);
                }
            }
            memcpy(g[r], t.arena.grad, nt * sizeof(fl_real));
            memcpy(th[r], t.arena.theta, nt * sizeof(fl_real));
        }
        omp_set_num_threads(saved);
        for (int r = 1; r < 3; r++) {
            cr_assert_arr_eq(y[0], y[r], n * ol * sizeof(fl_real), "mode %d: out (run %d)", mode, r);
            cr_assert_arr_eq(g[0], g[r], nt * sizeof(fl_real), "mode %d: dtheta (run %d)", mode, r);
            cr_assert_arr_eq(din[0], din[r], (size_t)n * il * sizeof(fl_real), "mode %d: din", mode);
            cr_assert_arr_eq(th[0], th[r], nt * sizeof(fl_real), "mode %d: averages", mode);
        }
        cr_assert_eq(memcmp(th[0], th0, nt * sizeof *th0) != 0, mode == FL_MODE_TRAIN,
                     "the averages move in TRAIN only");
        for (int r = 0; r < 3; r++) {
            free(y[r]);
            free(din[r]);
            free(g[r]);
            free(th[r]);
        }
    }
    free(x);
    free(a);
    free(th0);
    tnet_free(&t);
}

Test(conv, upsampling_and_batch_norm_specs)
{
    const fl_conv_layer uc[] = { { FL_CONV_UPSAMPLE, 4, 0, FL_ACT_LINEAR }, L3(2) };
    refused("upsampling with channels", 2, 4, 4, uc, 2, 0, "layer 0: an upsampling has no channels");
    const fl_conv_layer ba[] = { L3(2), { FL_CONV_BATCHNORM, 0, 0, FL_ACT_RELU } };
    refused("batch norm with an activation", 2, 4, 4, ba, 2, 0,
            "layer 1: a batch norm has no channels, stride or activation");
    const fl_conv_layer bs[] = { { FL_CONV_BATCHNORM, 0, 2, FL_ACT_LINEAR } };
    refused("strided batch norm", 2, 4, 4, bs, 1, 0, "a batch norm has no");
    const fl_conv_layer zl[] = { L3(2), LB() };
    refused("zero last on a batch norm", 2, 4, 4, zl, 2, FL_CONV_ZERO_LAST, "FL_CONV_ZERO_LAST");
    /* convolutions and batch norms are numbered apart; an upsampling has
     * no parameters; an activation may follow either */
    const fl_conv_layer ls[] = { LB(), L3(3), LU(), LA(FL_ACT_RELU), LB(), LA(FL_ACT_ELU), L1(2) };
    tnet t;
    cr_assert(tnet_new(&t, 2, 3, 3, ls, 7, 0, NULL, 2), "%s", fl_host_last_error());
    cr_assert(prm(&t, 'W', 0) && prm(&t, 'W', 1) && !prm(&t, 'W', 2));
    cr_assert_eq(prm(&t, 'W', 1)->size, 3 * 2);
    cr_assert_eq(prm_bn(&t, "gamma", 0)->size, 2);
    cr_assert_eq(prm_bn(&t, "var", 1)->size, 3);
    cr_assert_null(prm_bn(&t, "gamma", 2));
    cr_assert_eq(t.arena.n, 2 * 2 + 2 * 4);
    uint32_t c, h, w;
    fl_conv_out_shape(t.c, &c, &h, &w);
    cr_assert(c == 2 && h == 6 && w == 6);
    tnet_free(&t);
}
