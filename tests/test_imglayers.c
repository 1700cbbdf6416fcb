/* test_imglayers.c - the image flow layers (issue 15): conv-coupling,
 * invconv, and actnorm / batch-norm per channel, on shaped stacks.
 *
 * Each layer runs in a one- or two-layer stack over c x h x w images (as a
 * run builds it), with noise added to its parameters so zero-initialised
 * parts are not trivially right. Checked here: the inverse round trip; the
 * masks leave the kept part bit for bit; invconv starts orthogonal and its
 * log-determinant is h*w log|det W| with det W by plain Gaussian
 * elimination of the matrix read off the layer; gradients (inputs and
 * parameters) against central differences of a random projection;
 * bit-identical results for 1 and 2 threads; per-channel statistics; and
 * the one-line refusals of masks that leave nothing to transform. */
#include <math.h>
#include <omp.h>

#include "common.h"
#include "kit/kit.h"
#include "model/stack.h"

SUITE(imglayers);

enum { MAXR = 16 };

typedef struct rig {
    fl_registry *reg;
    fl_arena arena;
    fl_stack *s;
    uint32_t c, h, w, dim, rows;
} rig;

/* Resolved values of a [flow] section of `type` with "key=value" settings
 * (NULL-terminated). */
static fl_values flow_values(const fl_registry *r, const char *type, const char *const *kv)
{
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    cr_assert_not_null(c, "flow %s is not registered", type);
    fl_config *cfg = fl_config_new("imglayers-test");
    cr_assert_eq(fl_config_put(cfg, "flow", "type", type, 0), FL_OK);
    for (size_t i = 0; kv && kv[i]; i++) {
        char *assign = fl_strfmt("flow.%s", kv[i]);
        cr_assert_eq(fl_config_set(cfg, assign), FL_OK, "%s", fl_err_msg());
        free(assign);
    }
    const fl_key *tabs[2] = { fl_flow_host_keys, c->cls.base.keys };
    uint32_t ns[2] = { fl_flow_host_nkeys, c->cls.base.n_keys };
    fl_values v;
    cr_assert_eq(fl_values_resolve(cfg, "flow", tabs, ns, 2, &v), FL_OK, "%s", fl_err_msg());
    fl_config_free(cfg);
    return v;
}

/* Tries to build a stack of `layers` layers of `type` (indices 0..) on
 * c x h x w images; returns the status of the first push that fails. */
static fl_status try_rig(rig *g, const char *type, const char *const *kv, uint32_t c, uint32_t h,
                         uint32_t w, uint32_t layers, uint32_t rows)
{
    fl_runtime_init();
    memset(g, 0, sizeof *g);
    g->reg = load_builtin_plugins();
    g->c = c;
    g->h = h;
    g->w = w;
    g->dim = c * h * w;
    g->rows = rows;
    g->s = fl_stack_new(&g->arena, 11, g->dim, 0, rows);
    cr_assert_not_null(g->s);
    cr_assert_eq(fl_stack_set_image(g->s, c, h, w), FL_OK);
    const fl_comp_rec *rec = fl_registry_find(g->reg, FL_KIND_FLOW, type);
    cr_assert_not_null(rec);
    for (uint32_t i = 0; i < layers; i++) {
        fl_values v = flow_values(g->reg, type, kv);
        char path[32];
        snprintf(path, sizeof path, "flow.1.%u", i);
        fl_status st = fl_stack_push(g->s, &rec->cls.flow, path, &v, i);
        if (st != FL_OK) return st;
    }
    return FL_OK;
}

static void rig_free(rig *g)
{
    fl_stack_free(g->s);
    fl_arena_free(&g->arena);
    fl_registry_free(g->reg);
}

/* A ready stack; trained parameters get N(0, noise^2) added (state, such
 * as running variances, keeps its meaning, as in the kit). */
static void make_rig(rig *g, const char *type, const char *const *kv, uint32_t c, uint32_t h,
                     uint32_t w, uint32_t layers, uint32_t rows, double noise)
{
    fl_status st = try_rig(g, type, kv, c, h, w, layers, rows);
    cr_assert_eq(st, FL_OK, "%s on %ux%ux%u: %s", type, c, h, w, fl_err_msg());
    cr_assert_eq(fl_arena_finalize(&g->arena, 11), FL_OK);
    cr_assert_eq(fl_stack_ready(g->s), FL_OK);
    if (noise > 0) {
        fl_real *e = malloc(g->arena.total * sizeof *e);
        fl_rng_normal(fl_rng_key_make(5, "imglayers.noise"), 0, 0, g->arena.total, e);
        for (size_t p = 0; p < g->arena.n; p++) {
            const fl_param_rec *r = &g->arena.p[p];
            if (r->flags & FL_PARAM_STATE) continue;
            for (size_t i = r->offset; i < r->offset + r->size; i++)
                g->arena.theta[i] += (fl_real)(noise * e[i]);
        }
        free(e);
    }
}

static void normal_rows(fl_real *x, size_t n, const char *name)
{
    fl_rng_normal(fl_rng_key_make(3, name), 0, 0, n, x);
}

/* ---- conv-coupling --------------------------------------------------- */

static const char *const variants[][3] = {
    { "transform=affine", "mask=checkerboard", NULL },
    { "transform=affine", "mask=channel", NULL },
    { "transform=additive", "mask=checkerboard", NULL },
    { "transform=additive", "mask=channel", NULL },
};

Test(imglayers, conv_coupling_inverse_round_trip)
{
    static const uint32_t shapes[][3] = { { 2, 4, 4 }, { 3, 2, 2 }, { 1, 4, 4 }, { 4, 2, 3 } };
    for (size_t v = 0; v < 4; v++)
        for (size_t s = 0; s < 4; s++) {
            const uint32_t *sh = shapes[s];
            if (sh[0] == 1 && strstr(variants[v][1], "channel")) continue;
            const char *kv[] = { variants[v][0], variants[v][1], "features=8", "blocks=1", NULL };
            rig g;
            /* two layers: parity 0 then 1 (auto) */
            make_rig(&g, "conv-coupling", kv, sh[0], sh[1], sh[2], 2, MAXR, 0.3);
            size_t nd = (size_t)MAXR * g.dim;
            fl_real *x = malloc(nd * sizeof *x), *back = malloc(nd * sizeof *x);
            fl_real ld[MAXR] = { 0 }, ldi[MAXR] = { 0 };
            normal_rows(x, nd, "imglayers.x");
            const fl_real *y;
            cr_assert_eq(fl_stack_forward(g.s, MAXR, FL_MODE_EVAL, x, NULL, ld, &y), FL_OK);
            double moved = 0;
            for (size_t i = 0; i < nd; i++) moved = fmax(moved, fabs((double)y[i] - x[i]));
            cr_assert_gt(moved, 1e-3, "%s %s: the layer did not move anything", kv[0], kv[1]);
            cr_assert_eq(fl_stack_inverse(g.s, MAXR, FL_MODE_EVAL, y, NULL, back, ldi), FL_OK);
            for (size_t i = 0; i < nd; i++)
                cr_assert_lt(fabs((double)back[i] - x[i]), 1e-4, "%s %s %ux%ux%u: x[%zu] %g -> %g",
                             kv[0], kv[1], sh[0], sh[1], sh[2], i, (double)x[i], (double)back[i]);
            for (int r = 0; r < MAXR; r++) {
                cr_assert_lt(fabs((double)ld[r] + ldi[r]), 1e-4);
                if (strstr(kv[0], "additive")) cr_assert_eq(ld[r], 0);
            }
            free(x);
            free(back);
            rig_free(&g);
        }
}

/* Whether element (ch, i, j) of a c-channel image is kept by the mask. */
static int kept(int channel_mask, uint32_t parity, uint32_t c, uint32_t ch, uint32_t i,
                uint32_t j)
{
    if (channel_mask) return parity ? ch >= (c + 1) / 2 : ch < (c + 1) / 2;
    return (i + j + parity) % 2 == 0;
}

Test(imglayers, masks_leave_the_kept_part_unchanged)
{
    static const uint32_t shapes[][3] = { { 2, 4, 4 }, { 3, 3, 2 }, { 5, 2, 2 } };
    for (int chm = 0; chm < 2; chm++)
        for (uint32_t parity = 0; parity < 2; parity++)
            for (size_t s = 0; s < 3; s++) {
                const uint32_t c = shapes[s][0], h = shapes[s][1], w = shapes[s][2];
                const char *kv[] = { chm ? "mask=channel" : "mask=checkerboard",
                                     parity ? "parity=1" : "parity=0", "features=4", "blocks=1",
                                     NULL };
                rig g;
                make_rig(&g, "conv-coupling", kv, c, h, w, 1, MAXR, 0.5);
                size_t nd = (size_t)MAXR * g.dim;
                fl_real *x = malloc(nd * sizeof *x), ld[MAXR] = { 0 };
                normal_rows(x, nd, "imglayers.mask");
                const fl_real *y;
                cr_assert_eq(fl_stack_forward(g.s, MAXR, FL_MODE_EVAL, x, NULL, ld, &y), FL_OK);
                size_t nk = 0, nt = 0, moved = 0;
                for (uint32_t r = 0; r < MAXR; r++)
                    for (uint32_t i = 0; i < h; i++)
                        for (uint32_t j = 0; j < w; j++)
                            for (uint32_t ch = 0; ch < c; ch++) {
                                size_t e = (size_t)r * g.dim + ((size_t)i * w + j) * c + ch;
                                if (kept(chm, parity, c, ch, i, j)) {
                                    cr_assert_eq(y[e], x[e], "%s %s %ux%ux%u: kept (%u,%u,%u) moved",
                                                 kv[0], kv[1], c, h, w, ch, i, j);
                                    nk++;
                                } else {
                                    nt++;
                                    moved += y[e] != x[e];
                                }
                            }
                cr_assert_gt(nk, 0);
                cr_assert_gt(nt, 0);
                cr_assert_gt(moved, nt / 2, "%s %s: the transformed part hardly moved", kv[0],
                             kv[1]);
                free(x);
                rig_free(&g);
            }
}

Test(imglayers, zero_initialised_conv_coupling_is_the_identity)
{
    for (size_t v = 0; v < 4; v++) {
        const char *kv[] = { variants[v][0], variants[v][1], "features=8", "blocks=2", NULL };
        rig g;
        make_rig(&g, "conv-coupling", kv, 2, 4, 4, 2, MAXR, 0);
        size_t nd = (size_t)MAXR * g.dim;
        fl_real *x = malloc(nd * sizeof *x), ld[MAXR] = { 0 };
        normal_rows(x, nd, "imglayers.id");
        const fl_real *y;
        cr_assert_eq(fl_stack_forward(g.s, MAXR, FL_MODE_EVAL, x, NULL, ld, &y), FL_OK);
        cr_assert_eq(memcmp(y, x, nd * sizeof *x), 0, "%s %s", kv[0], kv[1]);
        for (int r = 0; r < MAXR; r++) cr_assert_eq(ld[r], 0);
        /* the per-channel scales exist (affine only) and start at 1 */
        const fl_param_rec *sc = fl_arena_find(&g.arena, "flow.1.0.scale");
        if (strstr(kv[0], "additive")) {
            cr_assert_null(sc);
        } else {
            cr_assert_not_null(sc);
            cr_assert_eq(sc->size, strstr(kv[1], "channel") ? 1u : 2u);
            for (size_t i = 0; i < sc->size; i++) cr_assert_eq(g.arena.theta[sc->offset + i], 1);
        }
        free(x);
        rig_free(&g);
    }
}

/* ---- gradients against central differences ---------------------------- */

typedef struct proj {
    fl_real *wy, *wl; /* the loss: sum wy . y + sum wl . logdet */
} proj;

static double loss(rig *g, fl_mode mode, const fl_real *x, const proj *p)
{
    fl_real ld[MAXR] = { 0 };
    const fl_real *y;
    cr_assert_eq(fl_stack_forward(g->s, g->rows, mode, x, NULL, ld, &y), FL_OK);
    double L = 0;
    for (size_t i = 0; i < (size_t)g->rows * g->dim; i++) L += (double)p->wy[i] * y[i];
    for (uint32_t r = 0; r < g->rows; r++) L += (double)p->wl[r] * ld[r];
    return L;
}

/* Directional derivatives of the loss along 8 random unit directions of
 * x and of theta, by central differences at step h, against backward;
 * the median relative error (float: a ReLU kink may spoil one difference)
 * or the largest (double) must stay below tol. */
static void check_grads(rig *g, fl_mode mode, const char *what)
{
    const size_t nd = (size_t)g->rows * g->dim, np = g->arena.total;
    proj p = { malloc(nd * sizeof(fl_real)), malloc(g->rows * sizeof(fl_real)) };
    fl_real *x = malloc(nd * sizeof *x), *dx = calloc(nd, sizeof *dx);
    fl_real *gth = malloc(np * sizeof *gth), *v = malloc((nd > np ? nd : np) * sizeof *v);
    normal_rows(x, nd, "imglayers.gx");
    normal_rows(p.wy, nd, "imglayers.wy");
    normal_rows(p.wl, g->rows, "imglayers.wl");
    fl_real ld[MAXR] = { 0 };
    const fl_real *y;
    cr_assert_eq(fl_stack_forward(g->s, g->rows, mode, x, NULL, ld, &y), FL_OK);
    fl_arena_zero_grad(&g->arena);
    cr_assert_eq(fl_stack_backward(g->s, g->rows, mode, NULL, p.wy, p.wl, dx, NULL), FL_OK);
    memcpy(gth, g->arena.grad, np * sizeof *gth);
    const int dbl = sizeof(fl_real) == 8;
    const double h = dbl ? 1e-5 : 1e-2, tol = dbl ? 1e-6 : 2e-2;
    double ex[8], et[8];
    for (int part = 0; part < 2; part++) {
        const size_t len = part ? np : nd;
        fl_real *pt = part ? g->arena.theta : x;
        const fl_real *an = part ? gth : dx;
        for (int d = 0; d < 8; d++) {
            fl_rng_normal(fl_rng_key_make(7, "imglayers.dir"), (uint64_t)(part * 8 + d), 0, len, v);
            double nrm = 0, a = 0;
            for (size_t i = 0; i < len; i++) nrm += (double)v[i] * v[i];
            nrm = sqrt(nrm);
            for (size_t i = 0; i < len; i++) {
                v[i] = (fl_real)(v[i] / nrm);
                a += (double)an[i] * v[i];
            }
            fl_real *save = malloc(len * sizeof *save);
            memcpy(save, pt, len * sizeof *save);
            for (size_t i = 0; i < len; i++) pt[i] = save[i] + (fl_real)h * v[i];
            double lp = loss(g, mode, x, &p);
            for (size_t i = 0; i < len; i++) pt[i] = save[i] - (fl_real)h * v[i];
            double lm = loss(g, mode, x, &p);
            memcpy(pt, save, len * sizeof *save);
            free(save);
            double fd = (lp - lm) / (2 * h);
            (part ? et : ex)[d] = fabs(fd - a) / fmax(1.0, fmax(fabs(fd), fabs(a)));
        }
    }
    for (int part = 0; part < 2; part++) {
        double *e = part ? et : ex, worst = 0;
        for (int i = 1; i < 8; i++) /* sort */
            for (int j = i; j > 0 && e[j - 1] > e[j]; j--) {
                double t = e[j];
                e[j] = e[j - 1];
                e[j - 1] = t;
            }
        worst = dbl ? e[7] : e[4];
        cr_assert_lt(worst, tol, "%s: gradient of %s off by %g (relative)", what,
                     part ? "theta" : "x", worst);
    }
    free(p.wy);
    free(p.wl);
    free(x);
    free(dx);
    free(gth);
    free(v);
}

Test(imglayers, conv_coupling_gradients_match_differences, .timeout = 120)
{
    for (size_t v = 0; v < 4; v++)
        for (uint32_t parity = 0; parity < 2; parity++) {
            const char *kv[] = { variants[v][0], variants[v][1], parity ? "parity=1" : "parity=0",
                                 "features=6", "blocks=1", "act=tanh", NULL };
            rig g;
            make_rig(&g, "conv-coupling", kv, 2, 4, 4, 1, 4, 0.3);
            char what[128];
            snprintf(what, sizeof what, "conv-coupling %s %s %s", kv[0], kv[1], kv[2]);
            check_grads(&g, FL_MODE_TRAIN, what);
            rig_free(&g);
        }
    /* ReLU nets and no weight norm, on an odd channel count */
    const char *kv[] = { "mask=channel", "features=6", "blocks=2", "weight_norm=false", NULL };
    rig g;
    make_rig(&g, "conv-coupling", kv, 3, 4, 4, 1, 4, 0.3);
    check_grads(&g, FL_MODE_TRAIN, "conv-coupling relu, no weight norm, 3x4x4");
    rig_free(&g);
}

/* The state slices (running averages) of the arena, concatenated. */
static size_t state_copy(const rig *g, fl_real *out)
{
    size_t k = 0;
    for (size_t p = 0; p < g->arena.n; p++) {
        const fl_param_rec *r = &g->arena.p[p];
        if (!(r->flags & FL_PARAM_STATE)) continue;
        if (out) memcpy(out + k, g->arena.theta + r->offset, r->size * sizeof *out);
        k += r->size;
    }
    return k;
}

Test(imglayers, conv_coupling_with_batch_norm, .timeout = 120)
{
    for (int chm = 0; chm < 2; chm++) {
        const char *kv[] = { "norm=batch", chm ? "mask=channel" : "mask=checkerboard",
                             "features=6", "blocks=2", "act=tanh", NULL };
        rig g;
        make_rig(&g, "conv-coupling", kv, 2, 4, 4, 1, MAXR, 0.3);
        /* one batch norm per block and one before the last activation,
         * each with a running mean and variance of `features` channels */
        const size_t ns = state_copy(&g, NULL);
        cr_assert_eq(ns, 3 * 2 * 6, "%s: %zu state numbers", kv[1], ns);
        fl_real *s0 = malloc(ns * sizeof *s0), *s1 = malloc(ns * sizeof *s1);
        size_t nd = (size_t)MAXR * g.dim;
        fl_real *x = malloc(nd * sizeof *x), *y = malloc(nd * sizeof *y), *back = malloc(nd * sizeof *x);
        normal_rows(x, nd, "imglayers.bn");
        for (int m = 0; m < 2; m++) {
            const fl_mode mode = m ? FL_MODE_EVAL : FL_MODE_TRAIN;
            fl_real ld[MAXR] = { 0 }, ldi[MAXR] = { 0 };
            state_copy(&g, s0);
            const fl_real *yy;
            cr_assert_eq(fl_stack_forward(g.s, MAXR, mode, x, NULL, ld, &yy), FL_OK);
            memcpy(y, yy, nd * sizeof *y);
            state_copy(&g, s1);
            /* training moves the running averages, evaluation does not */
            cr_assert_eq(memcmp(s0, s1, ns * sizeof *s0) != 0, mode == FL_MODE_TRAIN, "%s mode %d",
                         kv[1], m);
            cr_assert_eq(fl_stack_inverse(g.s, MAXR, mode, y, NULL, back, ldi), FL_OK);
            state_copy(&g, s0);
            cr_assert_eq(memcmp(s0, s1, ns * sizeof *s0), 0, "%s: the inverse moved the averages",
                         kv[1]);
            for (size_t i = 0; i < nd; i++)
                cr_assert_lt(fabs((double)back[i] - x[i]), 1e-4, "%s mode %d: x[%zu]", kv[1], m, i);
            for (int r = 0; r < MAXR; r++) cr_assert_lt(fabs((double)ld[r] + ldi[r]), 1e-4);
        }
        free(s0);
        free(s1);
        free(x);
        free(y);
        free(back);
        rig_free(&g);
        /* the gradient through the batch statistics */
        make_rig(&g, "conv-coupling", kv, 2, 4, 4, 1, 4, 0.3);
        check_grads(&g, FL_MODE_TRAIN, chm ? "norm=batch channel" : "norm=batch checkerboard");
        rig_free(&g);
    }
}

Test(imglayers, conv_coupling_bit_identical_for_1_and_2_threads, .timeout = 120)
{
    /* large enough that the element-wise loops (from 2^17 numbers) and
     * the conv service split their work across threads */
    const uint32_t R = 64;
    const char *const cfgs[][2] = { { "mask=checkerboard", "transform=affine" },
                                    { "mask=channel", "transform=affine" } };
    for (int k = 0; k < 2; k++) {
        const char *kv[] = { cfgs[k][0], cfgs[k][1], "features=8", "blocks=1", NULL };
        fl_real *out[2], *dx[2], *gr[2], *ld[2];
        size_t nd = 0, np = 0;
        for (int t = 0; t < 2; t++) {
            omp_set_num_threads(t + 1);
            rig g;
            make_rig(&g, "conv-coupling", kv, 4, 16, 32, 2, R, 0.3);
            nd = (size_t)R * g.dim;
            np = g.arena.total;
            fl_real *x = malloc(nd * sizeof *x), *dy = malloc(nd * sizeof *dy);
            fl_real *dl = malloc(R * sizeof *dl);
            normal_rows(x, nd, "imglayers.tx");
            normal_rows(dy, nd, "imglayers.tdy");
            normal_rows(dl, R, "imglayers.tdl");
            out[t] = malloc(nd * sizeof(fl_real));
            dx[t] = calloc(nd, sizeof(fl_real));
            ld[t] = calloc(R, sizeof(fl_real));
            gr[t] = malloc(np * sizeof(fl_real));
            const fl_real *y;
            cr_assert_eq(fl_stack_forward(g.s, R, FL_MODE_TRAIN, x, NULL, ld[t], &y), FL_OK);
            memcpy(out[t], y, nd * sizeof *y);
            fl_arena_zero_grad(&g.arena);
            cr_assert_eq(fl_stack_backward(g.s, R, FL_MODE_TRAIN, NULL, dy, dl, dx[t], NULL), FL_OK);
            memcpy(gr[t], g.arena.grad, np * sizeof(fl_real));
            free(x);
            free(dy);
            free(dl);
            rig_free(&g);
        }
        omp_set_num_threads(2);
        cr_assert_eq(memcmp(out[0], out[1], nd * sizeof(fl_real)), 0, "%s: y differs", kv[0]);
        cr_assert_eq(memcmp(ld[0], ld[1], R * sizeof(fl_real)), 0, "%s: logdet differs", kv[0]);
        cr_assert_eq(memcmp(dx[0], dx[1], nd * sizeof(fl_real)), 0, "%s: dx differs", kv[0]);
        cr_assert_eq(memcmp(gr[0], gr[1], np * sizeof(fl_real)), 0, "%s: dtheta differs", kv[0]);
        for (int t = 0; t < 2; t++) {
            free(out[t]);
            free(dx[t]);
            free(ld[t]);
            free(gr[t]);
        }
    }
}

Test(imglayers, masks_that_leave_nothing_to_transform_are_refused)
{
    rig g;
    static const char *const chan[] = { "mask=channel", NULL };
    cr_assert_eq(try_rig(&g, "conv-coupling", chan, 1, 4, 4, 1, MAXR), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "[flow.1.0] conv-coupling");
    assert_contains(fl_err_msg(), "mask = channel on 1 x 4 x 4 input leaves nothing to transform");
    cr_assert_null(strchr(fl_err_msg(), '\n'), "one line: %s", fl_err_msg());
    rig_free(&g);
    static const char *const cb[] = { "mask=checkerboard", NULL };
    cr_assert_eq(try_rig(&g, "conv-coupling", cb, 4, 1, 1, 1, MAXR), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "mask = checkerboard on 4 x 1 x 1 input (1 x 1 images) leaves "
                                  "nothing to transform");
    cr_assert_null(strchr(fl_err_msg(), '\n'), "one line: %s", fl_err_msg());
    rig_free(&g);
}

/* ---- invconv --------------------------------------------------------- */

/* W (c x c, double) read off the layer: forward of unit vectors at pixel 0
 * of an image (row k = e_k); W's column k is pixel 0 of output row k. */
static void read_weight(rig *g, double *W)
{
    const size_t nd = (size_t)g->rows * g->dim;
    fl_real *x = calloc(nd, sizeof *x), ld[MAXR] = { 0 };
    for (uint32_t k = 0; k < g->c; k++) x[(size_t)k * g->dim + k] = 1;
    const fl_real *y;
    cr_assert_eq(fl_stack_forward(g->s, g->rows, FL_MODE_EVAL, x, NULL, ld, &y), FL_OK);
    for (uint32_t k = 0; k < g->c; k++)
        for (uint32_t i = 0; i < g->c; i++) W[i * g->c + k] = y[(size_t)k * g->dim + i];
    free(x);
}

/* log|det A| by Gaussian elimination with partial pivoting (A destroyed). */
static double log_abs_det(uint32_t n, double *A)
{
    double s = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t b = k;
        for (uint32_t i = k + 1; i < n; i++)
            if (fabs(A[i * n + k]) > fabs(A[b * n + k])) b = i;
        for (uint32_t j = 0; j < n; j++) {
            double t = A[k * n + j];
            A[k * n + j] = A[b * n + j];
            A[b * n + j] = t;
        }
        s += log(fabs(A[k * n + k]));
        for (uint32_t i = k + 1; i < n; i++) {
            double f = A[i * n + k] / A[k * n + k];
            for (uint32_t j = k; j < n; j++) A[i * n + j] -= f * A[k * n + j];
        }
    }
    return s;
}

static const char *const lu_on[] = { "lu=true", NULL }, *const lu_off[] = { "lu=false", NULL };

Test(imglayers, invconv_starts_as_a_rotation)
{
    static const uint32_t cs[] = { 1, 3, 4, 12 };
    for (size_t t = 0; t < 8; t++) {
        const uint32_t c = cs[t % 4];
        rig g;
        make_rig(&g, "invconv", t < 4 ? lu_on : lu_off, c, 2, 2, 1, MAXR, 0);
        double *W = malloc((size_t)c * c * sizeof *W);
        read_weight(&g, W);
        double offdiag = 0; /* a rotation, and not the identity */
        for (uint32_t i = 0; i < c; i++)
            for (uint32_t j = 0; j < c; j++) {
                double d = 0;
                for (uint32_t k = 0; k < c; k++) d += W[i * c + k] * W[j * c + k];
                cr_assert_lt(fabs(d - (i == j)), 1e-5, "c=%u: (W W^T)[%u][%u] = %g", c, i, j, d);
                if (i != j) offdiag = fmax(offdiag, fabs(W[i * c + j]));
            }
        if (c > 2) cr_assert_gt(offdiag, 0.1, "c=%u: W is (nearly) a permutation", c);
        free(W);
        rig_free(&g);
    }
}

Test(imglayers, invconv_logdet_is_hw_log_det_w)
{
    static const uint32_t shapes[][3] = { { 3, 2, 2 }, { 4, 3, 2 }, { 12, 2, 2 }, { 5, 1, 1 } };
    for (size_t t = 0; t < 8; t++) {
        const uint32_t c = shapes[t % 4][0], h = shapes[t % 4][1], w = shapes[t % 4][2];
        rig g;
        make_rig(&g, "invconv", t < 4 ? lu_on : lu_off, c, h, w, 1, MAXR, 0.4);
        double *W = malloc((size_t)c * c * sizeof *W);
        read_weight(&g, W);
        size_t nd = (size_t)g.rows * g.dim;
        fl_real *x = malloc(nd * sizeof *x), *back = malloc(nd * sizeof *x);
        fl_real ld[MAXR] = { 0 }, ldi[MAXR] = { 0 };
        normal_rows(x, nd, "imglayers.ic");
        const fl_real *y;
        cr_assert_eq(fl_stack_forward(g.s, g.rows, FL_MODE_EVAL, x, NULL, ld, &y), FL_OK);
        /* every pixel is W x_p */
        for (size_t p = 0; p < (size_t)g.rows * h * w; p++)
            for (uint32_t i = 0; i < c; i++) {
                double s = 0;
                for (uint32_t j = 0; j < c; j++) s += W[i * c + j] * x[p * c + j];
                cr_assert_lt(fabs(s - y[p * c + i]), 1e-4 * (1 + fabs(s)));
            }
        const double want = (double)h * w * log_abs_det(c, W);
        for (uint32_t r = 0; r < g.rows; r++)
            cr_assert_lt(fabs(ld[r] - want), 1e-4 * (1 + fabs(want)), "%ux%ux%u: logdet %g, want %g",
                         c, h, w, (double)ld[r], want);
        cr_assert_eq(fl_stack_inverse(g.s, g.rows, FL_MODE_EVAL, y, NULL, back, ldi), FL_OK);
        for (size_t i = 0; i < nd; i++) cr_assert_lt(fabs((double)back[i] - x[i]), 1e-4);
        for (uint32_t r = 0; r < g.rows; r++) cr_assert_eq(ldi[r], -ld[r]);
        free(W);
        free(x);
        free(back);
        rig_free(&g);
    }
}

Test(imglayers, invconv_parameters)
{
    /* lu: strict parts of L and U packed (c (c - 1) / 2 each) and log_s;
     * plain: W (c x c). All offsets from the initial factors: zero. */
    rig g;
    make_rig(&g, "invconv", lu_on, 4, 2, 2, 1, MAXR, 0);
    const char *names[] = { "flow.1.0.L", "flow.1.0.U", "flow.1.0.log_s" };
    const size_t sizes[] = { 6, 6, 4 };
    for (int i = 0; i < 3; i++) {
        const fl_param_rec *pr = fl_arena_find(&g.arena, names[i]);
        cr_assert_not_null(pr, "%s", names[i]);
        cr_assert_eq(pr->size, sizes[i], "%s: %zu", names[i], pr->size);
        for (size_t j = 0; j < pr->size; j++) cr_assert_eq(g.arena.theta[pr->offset + j], 0);
    }
    cr_assert_null(fl_arena_find(&g.arena, "flow.1.0.W"));
    rig_free(&g);
    make_rig(&g, "invconv", lu_off, 4, 2, 2, 1, MAXR, 0);
    const fl_param_rec *pw = fl_arena_find(&g.arena, "flow.1.0.W");
    cr_assert_not_null(pw);
    cr_assert_eq(pw->size, 16);
    cr_assert_null(fl_arena_find(&g.arena, "flow.1.0.log_s"));
    rig_free(&g);
}

Test(imglayers, invconv_gradients_match_differences)
{
    static const uint32_t shapes[][3] = { { 3, 2, 2 }, { 4, 4, 4 }, { 1, 4, 4 } };
    for (size_t t = 0; t < 6; t++) {
        rig g;
        const uint32_t *sh = shapes[t % 3];
        make_rig(&g, "invconv", t < 3 ? lu_on : lu_off, sh[0], sh[1], sh[2], 1, 4, 0.3);
        check_grads(&g, FL_MODE_TRAIN, t < 3 ? "invconv" : "invconv lu=false");
        rig_free(&g);
    }
}

/* ---- actnorm, batch-norm per channel ----------------------------------- */

/* Mean and variance of channel ch over all rows and pixels of y. */
static void channel_stats(const rig *g, const fl_real *y, uint32_t ch, double *mean, double *var)
{
    const size_t P = (size_t)g->rows * g->h * g->w;
    double m = 0, v = 0;
    for (size_t p = 0; p < P; p++) m += y[p * g->c + ch];
    m /= (double)P;
    for (size_t p = 0; p < P; p++) v += (y[p * g->c + ch] - m) * (y[p * g->c + ch] - m);
    *mean = m;
    *var = v / (double)P;
}

Test(imglayers, actnorm_and_batch_norm_normalise_each_channel)
{
    static const char *const types[] = { "actnorm", "batch-norm" };
    for (int t = 0; t < 2; t++) {
        rig g;
        make_rig(&g, types[t], NULL, 3, 4, 4, 1, MAXR, 0);
        const fl_param_rec *pr =
            fl_arena_find(&g.arena, t ? "flow.1.0.log_gamma" : "flow.1.0.log_s");
        cr_assert_not_null(pr);
        cr_assert_eq(pr->size, 3, "%s: %zu parameters, want one per channel", types[t], pr->size);
        size_t nd = (size_t)MAXR * g.dim;
        fl_real *x = malloc(nd * sizeof *x), ld[MAXR] = { 0 };
        normal_rows(x, nd, "imglayers.an");
        /* channel ch: mean 2 ch - 1, std ch + 1 */
        for (size_t p = 0; p < nd / 3; p++)
            for (uint32_t ch = 0; ch < 3; ch++)
                x[p * 3 + ch] = (fl_real)(x[p * 3 + ch] * (ch + 1) + 2.0 * ch - 1);
        const fl_real *y;
        cr_assert_eq(fl_stack_forward(g.s, MAXR, FL_MODE_TRAIN, x, NULL, ld, &y), FL_OK);
        double want = 0; /* logdet = h w sum_ch -log std_ch (+ eps terms) */
        for (uint32_t ch = 0; ch < 3; ch++) {
            double m, v, xm, xv;
            channel_stats(&g, y, ch, &m, &v);
            cr_assert_lt(fabs(m), 1e-5, "%s ch %u: mean %g", types[t], ch, m);
            cr_assert_lt(fabs(v - 1), 1e-3, "%s ch %u: variance %g", types[t], ch, v);
            channel_stats(&g, x, ch, &xm, &xv);
            want -= 0.5 * log(xv);
        }
        want *= 16;
        for (int r = 0; r < MAXR; r++)
            cr_assert_lt(fabs(ld[r] - want), 1e-3 * (1 + fabs(want)), "%s: logdet %g, want %g",
                         types[t], (double)ld[r], want);
        free(x);
        rig_free(&g);
    }
}

Test(imglayers, per_channel_norm_gradients_match_differences)
{
    rig g;
    static const char *const no_init[] = { "data_init=false", NULL };
    make_rig(&g, "actnorm", no_init, 3, 2, 2, 1, 4, 0.3);
    check_grads(&g, FL_MODE_TRAIN, "actnorm 3x2x2");
    rig_free(&g);
    /* batch-norm in TRAIN mode: through the batch's per-channel statistics
     * (the running averages, which EVAL uses, are state without gradient) */
    make_rig(&g, "batch-norm", NULL, 3, 2, 2, 1, 4, 0.3);
    check_grads(&g, FL_MODE_TRAIN, "batch-norm 3x2x2");
    rig_free(&g);
}

/* ---- the conformance kit on image shapes ------------------------------ */

static const uint32_t kit_shapes[][3] = { { 1, 4, 4 }, { 2, 4, 4 }, { 3, 2, 2 }, { 4, 2, 2 },
                                          { 12, 2, 2 } };

/* fl_kit_flow on `type` with `kv` on every kit image shape it accepts;
 * returns how many it refused (their message must say why). */
static int kit_images(const char *type, const char *const *kv)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    cr_assert_not_null(c);
    cr_assert(c->cls.flow.flags & FL_FLOW_SHAPED, "%s is not FL_FLOW_SHAPED", type);
    fl_values v = flow_values(r, type, kv);
    char what[256] = "";
    for (size_t i = 0; kv && kv[i]; i++)
        snprintf(what + strlen(what), sizeof what - strlen(what), " %s", kv[i]);
    int refused = 0;
    for (size_t i = 0; i < 5; i++) {
        const uint32_t *sh = kit_shapes[i];
        fl_kit_opts o = { sh[0] * sh[1] * sh[2], 0, 8, 40 + i, 0.3, NULL, sh[0], sh[1], sh[2] };
        fl_kit_report rep;
        fl_status st = fl_kit_flow(&c->cls.flow, &v, &o, &rep);
        if (st != FL_OK) {
            assert_contains(fl_err_msg(), "leaves nothing to transform");
            refused++;
            continue;
        }
        cr_assert_gt(rep.checks, 0);
        cr_assert_eq(rep.failed, 0, "%s%s %ux%ux%u: %s", type, what, sh[0], sh[1], sh[2],
                     rep.first_failure);
    }
    fl_values_free(&v);
    fl_registry_free(r);
    return refused;
}

Test(imglayers, kit_conv_coupling_on_images, .timeout = 300)
{
    static const char *const cfgs[][6] = {
        { "features=8", "blocks=1", NULL },
        { "features=8", "blocks=1", "transform=additive", NULL },
        { "features=8", "blocks=1", "mask=channel", NULL },
        { "features=8", "blocks=1", "mask=channel", "parity=1", "transform=additive", NULL },
        { "features=8", "blocks=2", "norm=batch", NULL },
        { "features=8", "blocks=1", "weight_norm=false", "act=elu", NULL },
    };
    for (size_t i = 0; i < 6; i++) {
        int ch = 0;
        for (size_t j = 0; cfgs[i][j]; j++) ch |= !strcmp(cfgs[i][j], "mask=channel");
        /* the channel mask refuses the one-channel image */
        cr_assert_eq(kit_images("conv-coupling", cfgs[i]), ch);
    }
}

Test(imglayers, kit_invconv_and_norms_on_images, .timeout = 120)
{
    static const char *const lu[] = { "lu=false", NULL };
    cr_assert_eq(kit_images("invconv", NULL), 0);
    cr_assert_eq(kit_images("invconv", lu), 0);
    cr_assert_eq(kit_images("actnorm", NULL), 0);
    cr_assert_eq(kit_images("batch-norm", NULL), 0);
}
