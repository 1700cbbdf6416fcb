/* bench_conv.c - throughput of the host's convolution service, forward +
 * backward, against the GEMM peak measured on the spot.
 *
 *   bench_conv [BATCH [REPS]]
 *
 * Nets (batch 64 by default): a ResNet block (3x3 64->64, relu, 3x3
 * 64->64, + skip) on a 64 x 14 x 14 feature map, and a Real NVP style
 * coupling net on a 2 x 14 x 14 input (3x3 2->64, relu, two ResNet blocks,
 * relu, 3x3 64->4 zero-initialised, weight norm). GFLOP/s counts 2 flops
 * per multiply-add of the convolutions, forward + dW + dX (3x the forward),
 * per wall second; % is of the 1024^3 sgemm peak with as many threads.
 * Also checks that a step allocates nothing (bench/allocs.c).
 *
 * Then the layers of the Real NVP recipe (docs/results.md: 64 images,
 * 1x28x28 -> 32 features, 32 -> 32 at 28x28, 14x14, 7x7, and 64
 * features), each one 3x3 convolution with bias, relu and weight norm,
 * forward and backward (dW and dX) timed apart, by im2col + GEMM and by
 * the direct path (the conv service's own kernel over the 9 taps), with all
 * threads.
 *
 * Then the layout and algorithm choices, single-threaded, on the forward
 * product of one 3x3 64->64 convolution over the batch:
 *   NHWC im2col + one product per 256-pixel tile (the service's way),
 *   NCHW im2col + one product per image (Caffe's way),
 *   NHWC direct: 9 shifted products per image on a zero-padded copy (no
 *   im2col; the 2 border columns of each row are computed and dropped). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocs.h"
#include "compute/blas.h"
#include "compute/conv.h"
#include "core/hostimpl.h"
#include "core/params.h"
#include "core/util.h"
#include "peak.h"

static fl_conv *make(fl_arena *arena, fl_ctx **cx, uint32_t c, uint32_t h, uint32_t w,
                     const fl_conv_layer *ls, uint32_t nl, uint32_t flags, uint32_t batch)
{
    *cx = fl_ctx_new("bench", NULL, arena, 1);
    fl_conv_spec spec = { sizeof(fl_conv_spec), "net", c, h, w, nl, ls, flags, NULL };
    fl_conv *cv = fl_conv_create(*cx, &spec, batch);
    fl_ctx_end_create(*cx);
    if (!cv || fl_arena_finalize(arena, 1) != FL_OK) {
        fprintf(stderr, "bench_conv: %s\n", fl_host_last_error());
        exit(1);
    }
    /* off the zero init, so every product does real work */
    for (size_t i = 0; i < arena->total; i++) arena->theta[i] += (fl_real)(0.01 * ((i % 7) - 3));
    return cv;
}

static void run(const char *what, uint32_t c, uint32_t h, uint32_t w, const fl_conv_layer *ls,
                uint32_t nl, uint32_t flags, uint32_t batch, int reps, const double *peak)
{
    fl_arena arena = { 0 };
    fl_ctx *cx;
    fl_conv *cv = make(&arena, &cx, c, h, w, ls, nl, flags, batch);
    uint32_t oc, oh, ow;
    fl_conv_out_shape(cv, &oc, &oh, &ow);
    const size_t il = (size_t)batch * c * h * w, ol = (size_t)batch * oc * oh * ow;
    fl_real *x = fl_alloc(il * sizeof(fl_real)), *dx = fl_alloc(il * sizeof(fl_real));
    fl_real *y = fl_alloc(ol * sizeof(fl_real)), *dy = fl_alloc(ol * sizeof(fl_real));
    fl_rng_normal(fl_rng_key_make(1, "x"), 0, 0, il, x);
    fl_rng_normal(fl_rng_key_make(1, "dy"), 0, 0, ol, dy);
    const double flops = 3 * 2 * fl_conv_fmas(cv, batch);
    const int maxt = omp_get_max_threads();
    for (int t = 1; t <= maxt; t++) {
        omp_set_num_threads(t);
        for (int i = 0; i < 2; i++) {
            fl_conv_forward(cv, arena.theta, batch, x, y);
            fl_conv_backward(cv, arena.theta, arena.grad, batch, dy, dx);
        }
        long a0 = fl_bench_allocs();
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) { /* best of 3: the machine is shared */
            fl_bench_allocs_arm(1);
            double t0 = fl_now();
            for (int i = 0; i < reps; i++) {
                fl_conv_forward(cv, arena.theta, batch, x, y);
                fl_conv_backward(cv, arena.theta, arena.grad, batch, dy, dx);
            }
            double dt = fl_now() - t0;
            fl_bench_allocs_arm(0);
            if (dt < best) best = dt;
        }
        const double gf = flops * reps / best / 1e9;
        printf("%-40s %5u %7d %10.0f %8.1f %7.1f%% %6ld\n", what, batch, t, batch * reps / best, gf,
               100 * gf / peak[t], fl_bench_allocs() - a0);
    }
    omp_set_num_threads(maxt);
    fl_free(x);
    fl_free(dx);
    fl_free(y);
    fl_free(dy);
    fl_ctx_free(cx);
    fl_arena_free(&arena);
}

/* ---- the Real NVP layers, im2col against direct ----------------------- */

/* One 3x3 cin -> cout layer (bias, relu, weight norm) on batch images of
 * h x w: the fastest forward and backward (dW and dX) in seconds. */
static void layer_times(uint32_t cin, uint32_t cout, uint32_t h, uint32_t w, uint32_t batch,
                        int reps, double *tf, double *tb, long *allocs)
{
    const fl_conv_layer ls[] = { { FL_CONV_3X3, cout, 1, FL_ACT_LINEAR },
                                 { FL_CONV_ACT, 0, 0, FL_ACT_RELU } };
    fl_arena arena = { 0 };
    fl_ctx *cx;
    fl_conv *cv = make(&arena, &cx, cin, h, w, ls, 2, FL_CONV_WEIGHT_NORM, batch);
    const size_t il = (size_t)batch * cin * h * w, ol = (size_t)batch * cout * h * w;
    fl_real *x = fl_alloc(il * sizeof(fl_real)), *dx = fl_alloc(il * sizeof(fl_real));
    fl_real *y = fl_alloc(ol * sizeof(fl_real)), *dy = fl_alloc(ol * sizeof(fl_real));
    fl_rng_normal(fl_rng_key_make(1, "x"), 0, 0, il, x);
    fl_rng_normal(fl_rng_key_make(1, "dy"), 0, 0, ol, dy);
    fl_conv_forward(cv, arena.theta, batch, x, y);
    fl_conv_backward(cv, arena.theta, arena.grad, batch, dy, dx);
    *tf = *tb = 1e30;
    const long a0 = fl_bench_allocs();
    fl_bench_allocs_arm(1);
    /* the fastest single call of 3 x reps: the machine is shared, and a
     * call disturbed by another process only ever gets slower */
    for (int i = 0; i < 3 * reps; i++) {
        double t0 = fl_now();
        fl_conv_forward(cv, arena.theta, batch, x, y);
        double t1 = fl_now();
        fl_conv_backward(cv, arena.theta, arena.grad, batch, dy, dx);
        const double t2 = fl_now();
        if (t1 - t0 < *tf) *tf = t1 - t0;
        if (t2 - t1 < *tb) *tb = t2 - t1;
    }
    fl_bench_allocs_arm(0);
    *allocs = fl_bench_allocs() - a0;
    fl_free(x);
    fl_free(dx);
    fl_free(y);
    fl_free(dy);
    fl_ctx_free(cx);
    fl_arena_free(&arena);
}

static void realnvp_layers(uint32_t batch, int reps, double peak)
{
    static const uint32_t shapes[][4] = { /* cin, cout, h = w */
        { 1, 32, 28, 0 }, { 32, 32, 28, 0 }, { 4, 32, 14, 0 }, { 32, 32, 14, 0 },
        { 32, 32, 7, 0 }, { 64, 64, 28, 0 }, { 64, 64, 14, 0 }, { 64, 64, 7, 0 },
        { 32, 2, 28, 0 }, { 32, 8, 14, 0 },
    };
    const int keep = fl_conv_direct;
    printf("\n# Real NVP layers: 3x3, bias, relu, weight norm, %u images, %d threads; GFLOP/s "
           "(%% of the %.1f GFLOP/s peak with as many threads)\n", batch, omp_get_max_threads(),
           peak);
    printf("%-18s %-7s %9s %9s %8s %8s %8s %8s %6s\n", "layer", "path", "fwd ms", "bwd ms",
           "fwd GF/s", "bwd GF/s", "fwd %", "bwd %", "allocs");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const uint32_t cin = shapes[s][0], cout = shapes[s][1], hw = shapes[s][2];
        const double fl = 2.0 * batch * hw * hw * 9 * cin * cout / 1e9;
        char name[32];
        snprintf(name, sizeof name, "%ux%u %u->%u", hw, hw, cin, cout);
        for (int direct = 0; direct < 2; direct++) {
            fl_conv_direct = direct ? 1 : -1;
            double tf, tb;
            long al;
            layer_times(cin, cout, hw, hw, batch, reps, &tf, &tb, &al);
            printf("%-18s %-7s %9.2f %9.2f %8.1f %8.1f %7.1f%% %7.1f%% %6ld\n", name,
                   direct ? "direct" : "im2col", 1e3 * tf, 1e3 * tb, fl / tf, 2 * fl / tb,
                   100 * fl / tf / peak, 100 * 2 * fl / tb / peak, al);
        }
    }
    fl_conv_direct = keep;
}

/* ---- layouts and algorithms, forward product of one 3x3 C->C layer ----- */

static double best_of(void (*fn)(void *), void *ctx, int reps)
{
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = fl_now();
        for (int i = 0; i < reps; i++) fn(ctx);
        double dt = (fl_now() - t0) / reps;
        if (dt < best) best = dt;
    }
    return best;
}

typedef struct lay {
    uint32_t n, c, h, w;
    fl_real *x, *xp, *col, *wt, *y;
} lay;

/* NHWC: col rows = pixels, (ky, kx, c) columns; a product per 256 pixels. */
static void nhwc_im2col(void *p)
{
    lay *L = p;
    const uint32_t c = L->c, h = L->h, w = L->w, kk = 9 * c;
    for (uint32_t i = 0; i < L->n; i++)
        for (uint32_t oy = 0; oy < h; oy++)
            for (uint32_t ox = 0; ox < w; ox++) {
                fl_real *row = L->col + (((size_t)i * h + oy) * w + ox) * kk;
                for (uint32_t ky = 0; ky < 3; ky++)
                    for (uint32_t kx = 0; kx < 3; kx++) {
                        int iy = (int)oy + (int)ky - 1, ix = (int)ox + (int)kx - 1;
                        fl_real *d = row + (ky * 3 + kx) * c;
                        if (iy < 0 || iy >= (int)h || ix < 0 || ix >= (int)w)
                            memset(d, 0, c * sizeof *d);
                        else
                            memcpy(d, L->x + (((size_t)i * h + (size_t)iy) * w + (size_t)ix) * c,
                                   c * sizeof *d);
                    }
            }
}

static void nhwc_gemm(void *p)
{
    lay *L = p;
    const size_t P = (size_t)L->n * L->h * L->w;
    const int kk = (int)(9 * L->c);
    for (size_t p0 = 0; p0 < P; p0 += 256) {
        int np = (int)(P - p0 < 256 ? P - p0 : 256);
        fl_gemm(0, 0, np, (int)L->c, kk, 1, L->col + p0 * (size_t)kk, kk, L->wt, (int)L->c, 0,
                L->y + p0 * L->c, (int)L->c);
    }
}

/* NCHW: per image, col (9C x HW), rows (c, ky, kx); Y_i = W (C x 9C) col. */
static void nchw_im2col(void *p)
{
    lay *L = p;
    const uint32_t c = L->c, h = L->h, w = L->w, hw = h * w;
    for (uint32_t i = 0; i < L->n; i++)
        for (uint32_t ch = 0; ch < c; ch++)
            for (uint32_t ky = 0; ky < 3; ky++)
                for (uint32_t kx = 0; kx < 3; kx++) {
                    fl_real *row = L->col + ((size_t)i * 9 * c + ch * 9 + ky * 3 + kx) * hw;
                    const fl_real *src = L->x + ((size_t)i * c + ch) * hw;
                    for (uint32_t oy = 0; oy < h; oy++) {
                        int iy = (int)oy + (int)ky - 1;
                        for (uint32_t ox = 0; ox < w; ox++) {
                            int ix = (int)ox + (int)kx - 1;
                            row[oy * w + ox] = (iy < 0 || iy >= (int)h || ix < 0 || ix >= (int)w)
                                                   ? 0
                                                   : src[(size_t)iy * w + (size_t)ix];
                        }
                    }
                }
}

static void nchw_gemm(void *p)
{
    lay *L = p;
    const int hw = (int)(L->h * L->w), kk = (int)(9 * L->c);
    for (uint32_t i = 0; i < L->n; i++)
        fl_gemm(0, 0, (int)L->c, hw, kk, 1, L->wt, kk, L->col + (size_t)i * kk * hw, hw, 0,
                L->y + (size_t)i * L->c * hw, hw);
}

/* NHWC direct: a zero-padded copy (h+2 x w+2), then per image and tap one
 * product over the h x (w+2) pixels of rows 1..h (border columns dropped
 * later), accumulating. */
static void direct_pad(void *p)
{
    lay *L = p;
    const uint32_t c = L->c, h = L->h, w = L->w, wp = w + 2;
    for (uint32_t i = 0; i < L->n; i++)
        for (uint32_t y = 0; y < h; y++)
            memcpy(L->xp + (((size_t)i * (h + 2) + y + 1) * wp + 1) * c,
                   L->x + (((size_t)i * h + y) * w) * c, (size_t)w * c * sizeof(fl_real));
}

static void direct_gemm(void *p)
{
    lay *L = p;
    const uint32_t c = L->c, h = L->h, w = L->w, wp = w + 2;
    const int m = (int)(h * wp - 2); /* from pixel (1,1) to (h, w) of the padded image */
    for (uint32_t i = 0; i < L->n; i++) {
        const fl_real *xi = L->xp + (size_t)i * (h + 2) * wp * c;
        fl_real *yi = L->y + (size_t)i * h * wp * c; /* h x (w+2) outputs, padded rows */
        for (uint32_t t = 0; t < 9; t++) {
            const uint32_t ky = t / 3, kx = t % 3;
            /* output (y, x) at padded (y+1, x+1) reads padded (y+ky, x+kx) */
            fl_gemm(0, 0, m, (int)c, (int)c, 1, xi + ((size_t)ky * wp + kx) * c, (int)c,
                    L->wt + (size_t)t * c * c, (int)c, t ? 1 : 0, yi, (int)c);
        }
    }
}

static void layouts(uint32_t n, uint32_t c, uint32_t h, uint32_t w, double peak1)
{
    lay L = { n, c, h, w, NULL, NULL, NULL, NULL, NULL };
    const size_t P = (size_t)n * h * w;
    L.x = fl_alloc(P * c * sizeof(fl_real));
    L.xp = fl_alloc((size_t)n * (h + 2) * (w + 2) * c * sizeof(fl_real));
    L.col = fl_alloc(P * 9 * c * sizeof(fl_real));
    L.wt = fl_alloc((size_t)9 * c * c * sizeof(fl_real));
    L.y = fl_alloc((size_t)n * h * (w + 2) * c * sizeof(fl_real));
    memset(L.xp, 0, (size_t)n * (h + 2) * (w + 2) * c * sizeof(fl_real));
    fl_rng_normal(fl_rng_key_make(1, "lx"), 0, 0, P * c, L.x);
    fl_rng_normal(fl_rng_key_make(1, "lw"), 0, 0, (size_t)9 * c * c, L.wt);
    const double gfl = 2.0 * P * 9 * c * c / 1e9;
    omp_set_num_threads(1);
    struct {
        const char *name;
        void (*prep)(void *), (*mm)(void *);
    } v[3] = { { "NHWC im2col + GEMM per 256-pixel tile", nhwc_im2col, nhwc_gemm },
               { "NCHW im2col + GEMM per image", nchw_im2col, nchw_gemm },
               { "NHWC direct: 9 shifted GEMMs, padded", direct_pad, direct_gemm } };
    printf("\n# forward product of one 3x3 %u->%u convolution, %u images of %ux%u, 1 thread\n", c, c,
           n, h, w);
    printf("%-40s %10s %10s %10s %8s\n", "", "copy ms", "GEMM ms", "GFLOP/s", "of peak");
    for (int k = 0; k < 3; k++) {
        double tp = best_of(v[k].prep, &L, 5), tm = best_of(v[k].mm, &L, 5);
        printf("%-40s %10.2f %10.2f %10.1f %7.1f%%\n", v[k].name, 1e3 * tp, 1e3 * tm,
               gfl / (tp + tm), 100 * gfl / (tp + tm) / peak1);
    }
    fl_free(L.x);
    fl_free(L.xp);
    fl_free(L.col);
    fl_free(L.wt);
    fl_free(L.y);
}

int main(int argc, char **argv)
{
    fl_runtime_init();
    const uint32_t batch = argc > 1 ? (uint32_t)atoi(argv[1]) : 64;
    const int reps = argc > 2 ? atoi(argv[2]) : 5;
    const int maxt = omp_get_max_threads();
    double peak[65] = { 0 };
    printf("# BLAS core %s, OPENBLAS_CORETYPE=%s, fl_real=%s\n", fl_blas_core(),
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "(unset)", FL_REAL_NAME);
    for (int t = 1; t <= maxt && t <= 64; t++) {
        peak[t] = fl_bench_gemm_peak(t);
        printf("# peak, %d thread(s): 1024^3 GEMM %.1f GFLOP/s\n", t, peak[t]);
    }
    printf("# forward + backward (dW, dX), best of 3 x %d steps; allocations per 3 x %d steps\n",
           reps, reps);
    printf("%-40s %5s %7s %10s %8s %8s %6s\n", "net", "batch", "threads", "images/s", "GFLOP/s",
           "of peak", "allocs");
    const fl_conv_layer block[] = { { FL_CONV_RESNET, 64, 1, FL_ACT_RELU } };
    run("resnet block 64x14x14", 64, 14, 14, block, 1, 0, batch, reps, peak);
    run("resnet block 64x14x14, weight norm", 64, 14, 14, block, 1, FL_CONV_WEIGHT_NORM, batch, reps,
        peak);
    const fl_conv_layer coupling[] = {
        { FL_CONV_3X3, 64, 1, FL_ACT_LINEAR },  { FL_CONV_ACT, 0, 0, FL_ACT_RELU },
        { FL_CONV_RESNET, 64, 1, FL_ACT_RELU }, { FL_CONV_RESNET, 64, 1, FL_ACT_RELU },
        { FL_CONV_ACT, 0, 0, FL_ACT_RELU },     { FL_CONV_3X3, 4, 1, FL_ACT_LINEAR },
    };
    run("coupling net 2x14x14 -> 64 (2 blocks) -> 4", 2, 14, 14, coupling, 6,
        FL_CONV_WEIGHT_NORM | FL_CONV_ZERO_LAST, batch, reps, peak);
    const fl_conv_layer rnvp[] = {
        { FL_CONV_3X3, 32, 1, FL_ACT_LINEAR },
        { FL_CONV_RESNET, 32, 1, FL_ACT_RELU }, { FL_CONV_RESNET, 32, 1, FL_ACT_RELU },
        { FL_CONV_ACT, 0, 0, FL_ACT_RELU },     { FL_CONV_3X3, 2, 1, FL_ACT_LINEAR },
    };
    const fl_conv_layer rnvp8[] = {
        { FL_CONV_3X3, 32, 1, FL_ACT_LINEAR },
        { FL_CONV_RESNET, 32, 1, FL_ACT_RELU }, { FL_CONV_RESNET, 32, 1, FL_ACT_RELU },
        { FL_CONV_ACT, 0, 0, FL_ACT_RELU },     { FL_CONV_3X3, 8, 1, FL_ACT_LINEAR },
    };
    fl_conv_direct = -1; /* before: every 3x3 through im2col */
    run("Real NVP s/t net 1x28x28, im2col only", 1, 28, 28, rnvp, 5,
        FL_CONV_WEIGHT_NORM | FL_CONV_ZERO_LAST, batch, reps, peak);
    fl_conv_direct = 0;
    run("Real NVP s/t net 1x28x28 -> 32 -> 2", 1, 28, 28, rnvp, 5,
        FL_CONV_WEIGHT_NORM | FL_CONV_ZERO_LAST, batch, reps, peak);
    run("Real NVP s/t net 4x14x14 -> 32 -> 8", 4, 14, 14, rnvp8, 5,
        FL_CONV_WEIGHT_NORM | FL_CONV_ZERO_LAST, batch, reps, peak);
    realnvp_layers(batch, reps, peak[maxt]);
    if (getenv("BENCH_CONV_LAYERS_ONLY")) return 0;
    layouts(batch, 64, 14, 14, peak[1]);
    return 0;
}
