/* test_multiscale.c - the stack's factor-out (model/stack.c) and the
 * multi-scale layers squeeze and split (plugins/flows/multiscale.c).
 *
 * A two-scale stack on 2x4x4 images (squeeze -> coupling -> split(learned)
 * -> coupling -> squeeze -> split -> coupling) must round-trip, its logdet
 * must be the sum of its layers', its output row must be [z of the first
 * split | z of the second | y of the last layer], and backward must match
 * finite differences through both splits; the kit passes squeeze and split
 * on the image shapes; bad shapes give one clear line. */
#include <math.h>

#include "common.h"
#include "kit/kit.h"
#include "model/pathgrad.h"
#include "model/stack.h"

SUITE(multiscale);

#ifdef FL_REAL_DOUBLE
#define TOL_INV 1e-10
#define FD_H 1e-5
#define TOL_FD 1e-6
#else
#define TOL_INV 1e-4
#define FD_H 1e-2
#define TOL_FD 1e-2
#endif

enum { ROWS = 6, C = 2, H = 4, W = 4, DIM = C * H * W };

/* Resolved values of a [flow] section of `type` with "key=value" settings
 * (NULL-terminated, may be NULL). */
static fl_values values_of(const fl_registry *r, const char *type, const char *const *kv)
{
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    cr_assert_not_null(c, "flow %s is not registered", type);
    fl_config *cfg = fl_config_new("multiscale-test");
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

/* Pushes `type` at position `i`; returns the status (message in fl_err). */
static fl_status push(const fl_registry *r, fl_stack *s, const char *type,
                      const char *const *kv, uint32_t i)
{
    fl_values v = values_of(r, type, kv);
    char path[32];
    snprintf(path, sizeof path, "flow.%u", i);
    return fl_stack_push(s, &fl_registry_find(r, FL_KIND_FLOW, type)->cls.flow, path, &v, 0);
}

/* tanh: no ReLU kinks for the finite differences to straddle */
static const char *const coupling[] = { "zero_init=false", "hidden=8", "activation=tanh",
                                        NULL };
static const char *const learned[] = { "prior=learned", NULL };

/* The two-scale stack on 2x4x4, with N(0, 0.3^2) added to its parameters
 * (the learned prior starts at zero). Layer outputs: 8x2x2, 8x2x2,
 * 4x2x2 (+16 out), 4x2x2, 16x1x1, 8x1x1 (+8 out), 8x1x1. */
static fl_stack *two_scales(const fl_registry *r, fl_arena *a)
{
    fl_stack *s = fl_stack_new(a, 5, DIM, 0, ROWS);
    cr_assert_not_null(s);
    cr_assert_eq(fl_stack_set_image(s, C, H, W), FL_OK);
    const char *types[] = { "squeeze", "affine-coupling", "split", "affine-coupling",
                            "squeeze", "split", "affine-coupling" };
    const char *const *kvs[] = { NULL, coupling, learned, coupling, NULL, NULL, coupling };
    for (uint32_t i = 0; i < 7; i++)
        cr_assert_eq(push(r, s, types[i], kvs[i], i), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_arena_finalize(a, 5), FL_OK);
    cr_assert_eq(fl_stack_ready(s), FL_OK);
    fl_real *noise = malloc(a->total * sizeof *noise);
    fl_rng_normal(fl_rng_key_make(5, "noise"), 0, 0, a->total, noise);
    for (size_t i = 0; i < a->total; i++) a->theta[i] += (fl_real)0.3 * noise[i];
    free(noise);
    return s;
}

Test(multiscale, stack_shapes_and_factor_out)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    fl_arena a = { 0 };
    fl_stack *s = two_scales(r, &a);
    const uint32_t outs[7][3] = { { 8, 2, 2 }, { 8, 2, 2 }, { 4, 2, 2 }, { 4, 2, 2 },
                                  { 16, 1, 1 }, { 8, 1, 1 }, { 8, 1, 1 } };
    const uint32_t zdims[7] = { 0, 0, 16, 0, 0, 8, 0 };
    for (int i = 0; i < 7; i++) {
        cr_assert_eq(s->L[i].out_c, outs[i][0], "layer %d", i);
        cr_assert_eq(s->L[i].out_h, outs[i][1], "layer %d", i);
        cr_assert_eq(s->L[i].zdim, zdims[i], "layer %d", i);
    }
    cr_assert_eq(s->zdim, 24);
    cr_assert_eq(s->L[5].zoff, 16);
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}

/* Forward then inverse gives x back; the logdets cancel; the logdet is the
 * sum of the layers' own; the output row is [z | z | y]. */
Test(multiscale, round_trip_and_logdet_sum)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    fl_arena a = { 0 };
    fl_stack *s = two_scales(r, &a);
    fl_real x[ROWS * DIM], xi[ROWS * DIM], u[ROWS * DIM], ld[ROWS] = { 0 }, ldi[ROWS] = { 0 };
    fl_rng_normal(fl_rng_key_make(7, "x"), 0, 0, ROWS * DIM, x);
    const fl_real *out;
    cr_assert_eq(fl_stack_forward(s, ROWS, FL_MODE_EVAL, x, NULL, ld, &out), FL_OK, "%s",
                 fl_err_msg());
    memcpy(u, out, sizeof u);
    /* Each layer alone on the input the stack gave it. */
    fl_real ysc[ROWS * DIM], zsc[ROWS * DIM], sum[ROWS] = { 0 };
    for (size_t i = 0; i < s->n; i++) {
        const fl_layer *l = &s->L[i];
        fl_real ldl[ROWS] = { 0 };
        fl_flow_fwd f = { ROWS, FL_MODE_EVAL, a.theta + l->block, s->act[i], ysc, ldl, NULL,
                          l->zdim ? zsc : NULL };
        cr_assert_eq(l->cls->forward(l->self, &f), FL_OK);
        for (int q = 0; q < ROWS; q++) sum[q] += ldl[q];
        for (size_t k = 0; k < (size_t)ROWS * l->out_dim; k++)
            cr_assert_eq(ysc[k], s->act[i + 1][k], "layer %zu", i);
        for (int q = 0; q < ROWS; q++)
            for (uint32_t k = 0; k < l->zdim; k++) /* its z sits at zoff in the row */
                cr_assert_eq(u[q * DIM + l->zoff + k], zsc[q * l->zdim + k], "layer %zu", i);
    }
    for (int q = 0; q < ROWS; q++) {
        cr_assert_float_eq(ld[q], sum[q], 1e-5 * fmax(1, fabs(ld[q])), "row %d", q);
        cr_assert(fabs(ld[q]) > 1e-3, "the learned prior and couplings move the logdet");
        for (int k = 0; k < 8; k++) /* the last layer's y closes the row */
            cr_assert_eq(u[q * DIM + 24 + k], s->act[7][q * 8 + k]);
    }
    cr_assert_eq(fl_stack_inverse(s, ROWS, FL_MODE_EVAL, u, NULL, xi, ldi), FL_OK, "%s",
                 fl_err_msg());
    for (int k = 0; k < ROWS * DIM; k++)
        cr_assert_float_eq(xi[k], x[k], TOL_INV * fmax(1, fabs(x[k])), "x[%d]", k);
    for (int q = 0; q < ROWS; q++)
        cr_assert_float_eq(ld[q] + ldi[q], 0, TOL_INV * 10 * fmax(1, fabs(ld[q])), "row %d", q);
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}

/* L = ry . u + rl . logdet, in double. */
static double L_of(fl_stack *s, const fl_real *x, const fl_real *ry, const fl_real *rl)
{
    fl_real ld[ROWS] = { 0 };
    const fl_real *u;
    cr_assert_eq(fl_stack_forward(s, ROWS, FL_MODE_TRAIN, x, NULL, ld, &u), FL_OK, "%s",
                 fl_err_msg());
    double L = 0;
    for (int k = 0; k < ROWS * DIM; k++) L += (double)ry[k] * u[k];
    for (int q = 0; q < ROWS; q++) L += (double)rl[q] * ld[q];
    return L;
}

/* Central difference of L along v applied to p (len numbers), in place;
 * v is scaled to unit length first (the step moves p by FD_H in all). */
static double fd(fl_stack *s, fl_real *p, size_t len, fl_real *v, const fl_real *x,
                 const fl_real *ry, const fl_real *rl)
{
    double nrm = 0;
    for (size_t i = 0; i < len; i++) nrm += (double)v[i] * v[i];
    for (size_t i = 0; i < len; i++) v[i] = (fl_real)(v[i] / sqrt(nrm));
    fl_real *save = malloc(len * sizeof *save);
    memcpy(save, p, len * sizeof *save);
    for (size_t i = 0; i < len; i++) p[i] = save[i] + (fl_real)FD_H * v[i];
    double Lp = L_of(s, x, ry, rl);
    for (size_t i = 0; i < len; i++) p[i] = save[i] - (fl_real)FD_H * v[i];
    double Lm = L_of(s, x, ry, rl);
    memcpy(p, save, len * sizeof *save);
    free(save);
    return (Lp - Lm) / (2 * FD_H);
}

/* Backward (dx and dtheta) against finite differences, with dL/du on
 * every part of the row, so the gradient flows back through both z's. */
Test(multiscale, backward_matches_finite_differences)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    fl_arena a = { 0 };
    fl_stack *s = two_scales(r, &a);
    fl_real x[ROWS * DIM], dx[ROWS * DIM] = { 0 }, ry[ROWS * DIM], rl[ROWS];
    fl_rng_key key = fl_rng_key_make(11, "grad");
    fl_rng_normal(key, 0, 0, ROWS * DIM, x);
    fl_rng_normal(key, 1, 0, ROWS * DIM, ry);
    fl_rng_normal(key, 2, 0, ROWS, rl);
    L_of(s, x, ry, rl);
    fl_arena_zero_grad(&a);
    cr_assert_eq(fl_stack_backward(s, ROWS, FL_MODE_TRAIN, NULL, ry, rl, dx, NULL), FL_OK, "%s",
                 fl_err_msg());
    fl_real *g = malloc(a.total * sizeof *g), *v = malloc(a.total * sizeof *v);
    memcpy(g, a.grad, a.total * sizeof *g);
    /* the split prior's conv got a gradient (its parameters follow the
     * first coupling's in the arena) */
    size_t lo = s->L[2].block, hi = s->L[3].block;
    double gp = 0;
    for (size_t i = lo; i < hi; i++) gp += fabs((double)g[i]);
    cr_assert(hi > lo && gp > 0, "no gradient reached the learned prior");
    for (int t = 0; t < 4; t++) {
        fl_real vx[ROWS * DIM];
        fl_rng_normal(key, 10 + t, 0, ROWS * DIM, vx);
        double num = fd(s, x, ROWS * DIM, vx, x, ry, rl), an = 0;
        for (int k = 0; k < ROWS * DIM; k++) an += (double)dx[k] * vx[k];
        cr_assert(fabs(an - num) <= TOL_FD * fmax(1, fabs(num)), "dx: %g vs %g", an, num);
        /* parameters: everything, then the prior's block alone */
        fl_rng_normal(key, 20 + t, 0, a.total, v);
        if (t % 2)
            for (size_t i = 0; i < a.total; i++)
                if (i < lo || i >= hi) v[i] = 0;
        num = fd(s, a.theta, a.total, v, x, ry, rl);
        an = 0;
        for (size_t i = 0; i < a.total; i++) an += (double)g[i] * v[i];
        cr_assert(fabs(an - num) <= TOL_FD * fmax(1, fabs(num)), "dtheta (%s): %g vs %g",
                  t % 2 ? "prior" : "all", an, num);
    }
    free(g);
    free(v);
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}

/* The kit runs squeeze and split on the image shapes: every check passes,
 * and the shapes they refuse are not applicable, not failures. */
static void kit_passes(const char *type, int refused)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    cr_assert_not_null(c);
    cr_assert(c->cls.flow.flags & FL_FLOW_SHAPED);
    fl_kit_opts o = { 0, 0, 8, 1, 0.3, NULL, 0, 0, 0 };
    fl_kit_report rep;
    cr_assert_eq(fl_kit_class(&c->cls.flow, &o, NULL, &rep), FL_OK, "%s", fl_err_msg());
    cr_assert_gt(rep.checks, 0);
    cr_assert_eq(rep.failed, 0, "%s: %s", type, rep.first_failure);
    cr_assert_eq(rep.skipped, refused, "%s: %d shapes not applicable", type, rep.skipped);
    cr_assert_gt(rep.stat[FL_KIT_LOGDET].runs, 0);
    fl_registry_free(r);
}

/* squeeze: the 3 flat dims (h = 1); split: 1x4x4 in both priors */
Test(multiscale, kit_passes_squeeze, .timeout = 120) { kit_passes("squeeze", 3); }
Test(multiscale, kit_passes_split, .timeout = 120) { kit_passes("split", 2); }

/* One image shape only: a refused one fails the class (no shape ran). */
Test(multiscale, kit_needs_one_shape)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, "squeeze");
    fl_kit_opts o = { 0, 0, 4, 1, 0.3, NULL, 3, 3, 2 };
    fl_kit_report rep;
    cr_assert_eq(fl_kit_class(&c->cls.flow, &o, NULL, &rep), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(rep.failed, 1);
    assert_contains(rep.first_failure, "refused every shape");
    assert_contains(rep.first_failure, "3x3x2");
    fl_registry_free(r);
}

/* Pushes `type` onto a stack of c x h x w (after `pre` squeezes) and
 * expects FL_ERR_INVALID with every string of `want` in the message. */
static void refused(const char *type, uint32_t c, uint32_t h, uint32_t w, int pre,
                    const char *const *want)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    fl_arena a = { 0 };
    fl_stack *s = fl_stack_new(&a, 1, c * h * w, 0, 4);
    cr_assert_eq(fl_stack_set_image(s, c, h, w), FL_OK);
    for (int i = 0; i < pre; i++) cr_assert_eq(push(r, s, "squeeze", NULL, (uint32_t)i), FL_OK);
    cr_assert_eq(push(r, s, type, NULL, (uint32_t)pre), FL_ERR_INVALID);
    for (size_t i = 0; want[i]; i++) assert_contains(fl_err_msg(), want[i]);
    cr_assert_null(strchr(fl_err_msg(), '\n'), "one line: %s", fl_err_msg());
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}

Test(multiscale, squeeze_on_odd_size)
{
    static const char *const want[] = { "[flow.0] squeeze", "1x5x4", "even", NULL };
    refused("squeeze", 1, 5, 4, 0, want);
}

Test(multiscale, squeeze_follows_the_shape)
{
    /* 1x6x4 -> 4x3x2: the second squeeze meets the odd height */
    static const char *const want[] = { "[flow.1] squeeze", "4x3x2", "even", NULL };
    refused("squeeze", 1, 6, 4, 1, want);
}

Test(multiscale, split_of_one_channel)
{
    static const char *const want[] = { "[flow.0] split", "1x4x4", "2 channels", NULL };
    refused("split", 1, 4, 4, 0, want);
}

/* The path gradient solves square Jacobians layer by layer: a factoring
 * layer is refused with one line naming it. */
Test(multiscale, pathgrad_refuses_factor_out)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    fl_arena a = { 0 };
    fl_stack *s = two_scales(r, &a);
    fl_pathgrad p;
    cr_assert_eq(fl_pathgrad_init(&p, s, ROWS), FL_ERR_UNSUPPORTED);
    assert_contains(fl_err_msg(), "[flow.2] split factors out");
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}

/* The stack's non-finite check looks at the factored-out part too and
 * names the layer: a learned prior whose log sigma is -1e30 makes
 * z' = (z - mu) exp(1e30) infinite while y stays finite. */
Test(multiscale, nonfinite_z_names_the_split)
{
    fl_runtime_init();
    fl_registry *r = load_builtin_plugins();
    fl_arena a = { 0 };
    fl_stack *s = fl_stack_new(&a, 1, DIM, 0, ROWS);
    cr_assert_eq(fl_stack_set_image(s, C, H, W), FL_OK);
    cr_assert_eq(push(r, s, "split", learned, 3), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_arena_finalize(&a, 1), FL_OK);
    cr_assert_eq(fl_stack_ready(s), FL_OK);
    s->check = 1;
    int found = 0;
    for (size_t p = 0; p < a.n; p++)
        if (strstr(a.p[p].name, "prior.b")) { /* [mu | log sigma], one channel each */
            a.theta[a.p[p].offset + 1] = (fl_real)-1e30;
            found = 1;
        }
    cr_assert(found, "no prior.b parameter");
    fl_real x[ROWS * DIM], ld[ROWS] = { 0 };
    fl_rng_normal(fl_rng_key_make(2, "x"), 0, 0, ROWS * DIM, x);
    const fl_real *u;
    cr_assert_eq(fl_stack_forward(s, ROWS, FL_MODE_EVAL, x, NULL, ld, &u), FL_ERR_NUMERIC);
    assert_contains(fl_err_msg(), "[flow.3] split: non-finite factored-out output (z)");
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}
