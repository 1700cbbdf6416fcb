/* test_expr.c - the expression service (flowlab/expr.h, compute/expr.c):
 * every operation's backward against central finite differences, with
 * broadcasting over rows and columns; forward values of broadcasting;
 * bit-identical results for 1, 2 and 3 threads; the numerical inverse;
 * the build errors (one message naming the node); and the graph-built
 * planar-expr and affine-coupling-expr layers against the hand-written
 * planar and affine-coupling on the same parameters. */
#include <math.h>
#include <omp.h>

#include "common.h"
#include "compute/expr.h"
#include "compute/mlp.h"
#include "core/params.h"
#include "model/stack.h"

SUITE(ops);
SUITE(errors);
SUITE(layers);

enum { D = 3, CD = 2 };

/* A graph under test: a flow-layer context with an arena, x (n x D), a
 * context (n x CD) and two parameters p (1 x D) and q (1 x 1). */
typedef struct gt {
    fl_arena arena;
    fl_ctx *cx;
    fl_flow_shape sh;
    fl_ex e;
    fl_node x, c, p, q;
} gt;

static void gt_begin(gt *t, uint32_t dim, uint32_t rows)
{
    memset(t, 0, sizeof *t);
    fl_runtime_init();
    t->cx = fl_ctx_new("flow.1", NULL, &t->arena, 5);
    cr_assert_not_null(t->cx);
    fl_ctx_flow_shape(t->cx, dim, 1, 1);
    t->sh = (fl_flow_shape){ dim, CD, rows, 0, 0, dim, 1, 1 };
    fl_host_clear_error();
    t->e = fl_ex_begin(fl_host_table(), t->cx, &t->sh);
    cr_assert_not_null(t->e.g);
    fl_param_spec p = { "p", dim, FL_INIT_UNIFORM, 0, 0, 0.5, 0 };
    fl_param_spec q = { "q", 1, FL_INIT_UNIFORM, 0, 0, 0.5, 0 };
    t->x = fl_ex_x(t->e);
    t->c = fl_ex_context(t->e);
    t->p = fl_ex_param(t->e, &p);
    t->q = fl_ex_param(t->e, &q);
}

/* Compiles (must succeed) and allocates the parameters: p, q in [0.75, 1.25]. */
static void gt_compile(gt *t, fl_node y, fl_node ld, uint32_t flags)
{
    fl_status st = fl_ex_compile(t->e, y, ld, flags);
    cr_assert_eq(st, FL_OK, "%s", fl_host_last_error());
    fl_ctx_end_create(t->cx);
    cr_assert_eq(fl_arena_finalize(&t->arena, 5), FL_OK);
    for (size_t i = 0; i < t->arena.total; i++) t->arena.theta[i] += 1;
}

static void gt_end(gt *t)
{
    fl_ctx_free(t->cx);
    fl_arena_free(&t->arena);
}

/* Inputs in [0.5, 1.5]: inside every operation's domain. */
static void fill(fl_real *v, size_t n, const char *name, double lo)
{
    fl_rng_uniform(fl_rng_key_make(11, name), 0, 0, n, v);
    for (size_t i = 0; i < n; i++) v[i] = (fl_real)lo + v[i];
}

enum { N = 5 };

enum { DMAX = 48 }; /* the widest test graph */

/* y and logdet (zeroed first) at the given x, c, theta. */
static void fwd(gt *t, const fl_real *x, const fl_real *c, fl_real *y, fl_real *ld)
{
    memset(ld, 0, N * sizeof *ld);
    fl_flow_fwd a = { N, FL_MODE_TRAIN, t->arena.theta, x, y, ld, c, NULL };
    cr_assert_eq(fl_host_table()->expr_forward(t->e.g, &a), FL_OK, "%s", fl_host_last_error());
}

/* Backward against central differences in every coordinate of x, c and
 * theta, of L = sum(w_y . y) + sum(w_l . logdet) summed as differences
 * element by element (the outputs a coordinate does not reach cancel
 * exactly, so wide graphs add no rounding noise). The float build
 * differentiates with a larger step. */
static void check_grad(gt *t, const char *what)
{
    const uint32_t dim = t->sh.dim;
    fl_real x[N * DMAX], c[N * CD], wy[N * DMAX], wl[N], dx[N * DMAX] = { 0 }, dc[N * CD] = { 0 },
                                                            y[N * DMAX], ld[N] = { 0 };
    fill(x, (size_t)N * dim, "x", 0.5);
    fill(c, N * CD, "c", 0.5);
    fill(wy, (size_t)N * dim, "wy", -0.5);
    fill(wl, N, "wl", -0.5);
    fl_real *g = calloc(t->arena.total, sizeof *g);
    fl_flow_fwd f = { N, FL_MODE_TRAIN, t->arena.theta, x, y, ld, c, NULL };
    const fl_host *h = fl_host_table();
    cr_assert_eq(h->expr_forward(t->e.g, &f), FL_OK);
    fl_flow_bwd b = { N, FL_MODE_TRAIN, t->arena.theta, g, x, y, c, wy, wl, dx, dc, NULL, NULL };
    cr_assert_eq(h->expr_backward(t->e.g, &b), FL_OK, "%s", fl_host_last_error());
#ifdef FL_REAL_DOUBLE
    const double eps = 1e-6, tol = 1e-6;
#else
    const double eps = 2e-3, tol = 3e-3;
#endif
    struct {
        fl_real *v, *grad;
        size_t n;
        const char *name;
    } sets[3] = { { x, dx, (size_t)N * dim, "x" },
                  { c, dc, N * CD, "c" },
                  { t->arena.theta, g, t->arena.total, "theta" } };
    for (int s = 0; s < 3; s++)
        for (size_t i = 0; i < sets[s].n; i++) {
            fl_real keep = sets[s].v[i];
            fl_real yp[N * DMAX], ym[N * DMAX], lp[N], lm[N];
            sets[s].v[i] = keep + (fl_real)eps;
            fwd(t, x, c, yp, lp);
            sets[s].v[i] = keep - (fl_real)eps;
            fwd(t, x, c, ym, lm);
            sets[s].v[i] = keep;
            double dl = 0;
            for (size_t k = 0; k < (size_t)N * dim; k++) dl += (double)wy[k] * (yp[k] - ym[k]);
            for (size_t r = 0; r < N; r++) dl += (double)wl[r] * (lp[r] - lm[r]);
            double fd = dl / (2 * eps), an = sets[s].grad[i];
            cr_assert(fabs(fd - an) <= tol * (1 + fabs(fd)),
                      "%s: d/d%s[%zu]: backward %.8g, finite differences %.8g", what,
                      sets[s].name, i, an, fd);
        }
    free(g);
}

/* y = x + r gathered to width dim (columns j % w of r), logdet = sum (or
 * mean, when wide) of r's row: every column of r reaches both outputs. */
static void finish_and_check(gt *t, fl_node r, const char *what)
{
    fl_ex e = t->e;
    cr_assert_neq(r, FL_NODE_NONE, "%s: the build failed", what);
    uint32_t cols[DMAX], w = fl_expr_width(e.g, r), dim = t->sh.dim;
    for (uint32_t j = 0; j < dim; j++) cols[j] = j % w;
    fl_node y = fl_ex_add(e, t->x, fl_ex_gather(e, r, dim, cols)), ld = fl_ex_sum(e, r);
    if (w > 8) /* a row sum of order 1: float rounding of a large one swamps the differences */
        ld = fl_ex_mul(e, ld, fl_ex_const(e, 1.0 / w));
    gt_compile(t, y, ld, 0);
    check_grad(t, what);
}

/* One test graph per case: BUILD(t, e) returns the node r; x is n x dim. */
#define OP_TEST_DIM(name, dim, BUILD)                                                  \
    Test(ops, name)                                                                    \
    {                                                                                  \
        gt t;                                                                          \
        gt_begin(&t, dim, N);                                                          \
        fl_ex e = t.e;                                                                 \
        fl_node x = t.x, c = t.c, p = t.p, q = t.q;                                    \
        (void)x, (void)c, (void)p, (void)q;                                            \
        fl_node r = (BUILD);                                                           \
        finish_and_check(&t, r, #name);                                                \
        gt_end(&t);                                                                    \
    }
#define OP_TEST(name, BUILD) OP_TEST_DIM(name, D, BUILD)

/* unary operations of a = x * p (a shared row broadcast over the rows) */
#define A fl_ex_mul(e, x, p)
OP_TEST(neg, fl_ex_neg(e, A))
OP_TEST(exp, fl_ex_exp(e, A))
OP_TEST(log, fl_ex_log(e, A))
OP_TEST(log1p, fl_ex_log1p(e, A))
OP_TEST(expm1, fl_ex_expm1(e, fl_ex_sub(e, A, fl_ex_const(e, 1))))
OP_TEST(tanh, fl_ex_tanh(e, A))
OP_TEST(sigmoid, fl_ex_sigmoid(e, A))
OP_TEST(softplus, fl_ex_softplus(e, fl_ex_sub(e, A, fl_ex_const(e, 1))))
OP_TEST(logsigmoid, fl_ex_logsigmoid(e, fl_ex_sub(e, A, fl_ex_const(e, 1))))
OP_TEST(abs, fl_ex_abs(e, fl_ex_sub(e, A, fl_ex_const(e, 1))))
OP_TEST(sqrt, fl_ex_sqrt(e, A))
OP_TEST(square, fl_ex_square(e, A))
OP_TEST(recip, fl_ex_recip(e, A))
/* binary operations, each broadcast four ways: full x full, x against a
 * shared row, against a shared scalar, against a per-row scalar */
#define BIN4(fn)                                                                       \
    fl_ex_add(e, fl_ex_add(e, fn(e, x, fl_ex_exp(e, x)), fn(e, x, p)),                 \
              fl_ex_add(e, fn(e, q, x), fn(e, fl_ex_sum(e, x), x)))
OP_TEST(add, BIN4(fl_ex_add))
OP_TEST(sub, BIN4(fl_ex_sub))
OP_TEST(mul, BIN4(fl_ex_mul))
OP_TEST(div, BIN4(fl_ex_div))
OP_TEST(pow, BIN4(fl_ex_pow))
OP_TEST(min, BIN4(fl_ex_min))
OP_TEST(max, BIN4(fl_ex_max))
/* comparisons select, and carry no gradient themselves */
OP_TEST(where_compare,
        fl_ex_add(e, fl_ex_where(e, fl_ex_gt(e, x, p), fl_ex_mul(e, x, x), p),
                  fl_ex_where(e, fl_ex_le(e, x, fl_ex_const(e, 1)), q, fl_ex_exp(e, x))))
OP_TEST(clamp, fl_ex_clamp(e, fl_ex_mul(e, x, p), 0.6, 1.6))
OP_TEST(concat, fl_ex_concat(e, fl_ex_mul(e, x, p), fl_ex_exp(e, c)))
OP_TEST(concat_shared, fl_ex_concat(e, p, fl_ex_mul(e, c, q)))
OP_TEST(repeat, fl_ex_mul(e, fl_ex_repeat(e, x, 2), fl_ex_tile(e, p, 2)))
OP_TEST(tile, fl_ex_mul(e, fl_ex_tile(e, x, 2), fl_ex_repeat(e, p, 2)))
OP_TEST(sum_groups, fl_ex_sum_groups(e, fl_ex_mul(e, fl_ex_repeat(e, x, 2), fl_ex_tile(e, p, 2)), 3))
OP_TEST(sum_row, fl_ex_mul(e, fl_ex_sum(e, fl_ex_square(e, x)), p))
OP_TEST(logsumexp, fl_ex_add(e, fl_ex_logsumexp(e, fl_ex_mul(e, x, p), 0), x))
OP_TEST(logsumexp_groups,
        fl_ex_logsumexp(e, fl_ex_mul(e, fl_ex_repeat(e, x, 2), fl_ex_tile(e, p, 2)), 2))
OP_TEST(sum_rows, fl_ex_mul(e, fl_ex_sum_rows(e, fl_ex_square(e, x)), x))
OP_TEST(slice, fl_ex_mul(e, fl_ex_slice(e, x, 1, 2), fl_ex_slice(e, p, 0, 2)))
OP_TEST(gather_duplicates,
        fl_ex_mul(e, fl_ex_gather(e, x, 4, (const uint32_t[]){ 2, 0, 2, 1 }),
                  fl_ex_gather(e, c, 4, (const uint32_t[]){ 1, 1, 0, 1 })))

/* The run-time kernels take other paths for other widths: narrow
 * broadcasts (a shared row, a per-row column) are expanded into flat
 * loops below 32 columns and looped per row from 32 on; sums over rows use
 * lanes of whole rows up to 16 columns; sums of more than 8 columns use
 * 16 lanes. Each binary operation at widths 16, 20 and 40. */
#define M_(a) fl_ex_mul(e, (a), fl_ex_const(e, 1.0 / 16)) /* row sums of order 1 */
#define BIN4W(fn)                                                                      \
    fl_ex_add(e, fl_ex_add(e, fn(e, x, fl_ex_exp(e, x)), fn(e, x, p)),                 \
              fl_ex_add(e, fn(e, q, x), fn(e, M_(fl_ex_sum(e, x)), x)))
OP_TEST_DIM(mul_w16, 16, BIN4W(fl_ex_mul))
OP_TEST_DIM(div_w20, 20, BIN4W(fl_ex_div))
OP_TEST_DIM(mul_w40, 40, BIN4W(fl_ex_mul))
OP_TEST_DIM(sub_w40, 40, BIN4W(fl_ex_sub))
OP_TEST_DIM(div_w40, 40, BIN4W(fl_ex_div))
OP_TEST_DIM(pow_w40, 40, BIN4W(fl_ex_pow))
/* (against a shared row and a scalar moved clear of x, so that no pair of
 * the 200 is closer than the difference step) */
OP_TEST_DIM(max_w40, 40,
            fl_ex_add(e, fl_ex_add(e, fl_ex_max(e, x, fl_ex_exp(e, x)),
                                   fl_ex_max(e, x, fl_ex_add(e, p, fl_ex_const(e, 1)))),
                      fl_ex_add(e, fl_ex_max(e, fl_ex_sub(e, q, fl_ex_const(e, 1)), x),
                                fl_ex_max(e, M_(fl_ex_sum(e, x)), x))))
OP_TEST_DIM(sum_row_w40, 40, fl_ex_mul(e, M_(fl_ex_sum(e, fl_ex_square(e, x))), p))
OP_TEST_DIM(sum_groups_w48, 48, fl_ex_sum_groups(e, fl_ex_mul(e, x, p), 12))
OP_TEST_DIM(repeat_w20, 20, fl_ex_mul(e, fl_ex_repeat(e, fl_ex_slice(e, x, 0, 5), 4), p))
/* a node whose only consumer is a comparison gets no gradient (it is
 * skipped), and a gradient passed on unchanged is shared, not copied */
OP_TEST(compare_only_consumer,
        fl_ex_where(e, fl_ex_gt(e, fl_ex_exp(e, fl_ex_mul(e, x, p)), fl_ex_const(e, 2)), x,
                    fl_ex_neg(e, fl_ex_neg(e, fl_ex_add(e, x, q)))))

Test(ops, mlp_node)
{
    gt t;
    gt_begin(&t, D, N);
    uint32_t hid = 4;
    fl_mlp_spec s = { "net", D + CD, 2, 1, &hid, FL_ACT_TANH, FL_INIT_GLOROT, FL_INIT_GLOROT,
                      NULL, NULL };
    fl_mlp *m = fl_host_table()->mlp_create(t.cx, &s, N);
    cr_assert_not_null(m);
    fl_node r = fl_ex_mlp(t.e, m, fl_ex_concat(t.e, fl_ex_mul(t.e, t.x, t.p), t.c));
    finish_and_check(&t, fl_ex_tanh(t.e, r), "mlp");
    gt_end(&t);
}

Test(ops, conv_node)
{
    gt t;
    gt_begin(&t, 4, N); /* one channel of 2 x 2 */
    fl_conv_layer L[2] = { { FL_CONV_3X3, 2, 1, FL_ACT_LINEAR }, { FL_CONV_ACT, 0, 0, FL_ACT_TANH } };
    fl_conv_spec s = { sizeof s, "cv", 1, 2, 2, 2, L, 0, NULL };
    fl_conv *cv = fl_host_table()->conv_create(t.cx, &s, N);
    cr_assert_not_null(cv, "%s", fl_host_last_error());
    fl_node r = fl_ex_conv(t.e, cv, fl_ex_mul(t.e, t.x, fl_ex_slice(t.e, fl_ex_tile(t.e, t.p, 2), 0, 4)));
    cr_assert_neq(r, FL_NODE_NONE, "%s", t.e.g ? "conv node refused" : "");
    /* 8 outputs: y = x + the first 4, logdet the sum of all */
    fl_node y = fl_ex_add(t.e, t.x, fl_ex_slice(t.e, r, 0, 4));
    gt_compile(&t, y, fl_ex_sum(t.e, r), 0);
    check_grad(&t, "conv");
    gt_end(&t);
}

/* Broadcast shapes give the numpy values. */
Test(ops, broadcasting_values)
{
    gt t;
    gt_begin(&t, D, N);
    fl_ex e = t.e;
    fl_node a = fl_ex_add(e, t.x, t.p);                    /* n x D + 1 x D */
    fl_node b = fl_ex_mul(e, t.x, t.q);                    /* n x D * 1 x 1 */
    fl_node s = fl_ex_sum(e, t.x);                         /* n x 1 */
    fl_node cc = fl_ex_sub(e, t.x, s);                     /* n x D - n x 1 */
    fl_node pr = fl_ex_mul(e, t.p, t.q);                   /* shared 1 x D */
    fl_node y = fl_ex_add(e, fl_ex_add(e, a, b), fl_ex_add(e, cc, pr));
    gt_compile(&t, y, fl_ex_sum(e, fl_ex_sum_rows(e, t.x)), 0);
    fl_real x[N * D], c[N * CD], yv[N * D], ld[N] = { 0 };
    fill(x, N * D, "x", -1);
    fill(c, N * CD, "c", -1);
    fl_flow_fwd f = { N, FL_MODE_TRAIN, t.arena.theta, x, yv, ld, c, NULL };
    cr_assert_eq(fl_host_table()->expr_forward(e.g, &f), FL_OK);
    const fl_real *P = fl_expr_value(e.g, t.p, NULL), *Q = fl_expr_value(e.g, t.q, NULL);
    size_t lds;
    cr_assert_eq(fl_expr_value(e.g, s, &lds) != NULL, 1);
    cr_assert_eq(lds, 1);
    fl_expr_value(e.g, pr, &lds);
    cr_assert_eq(lds, 0, "a node of parameters only is shared by the rows");
    double total = 0;
    for (int i = 0; i < N * D; i++) total += x[i];
    for (int r = 0; r < N; r++) {
        double rs = 0;
        for (int j = 0; j < D; j++) rs += x[r * D + j];
        for (int j = 0; j < D; j++) {
            double xv = x[r * D + j];
            double want = (xv + P[j]) + xv * Q[0] + (xv - rs) + P[j] * Q[0];
            cr_assert(fabs(yv[r * D + j] - want) < 1e-5, "row %d col %d: %g, want %g", r, j,
                      (double)yv[r * D + j], want);
        }
        cr_assert(fabs(ld[r] - total) < 1e-5, "logdet row %d: %g, want %g", r, (double)ld[r],
                  total);
    }
    gt_end(&t);
}

/* The same bits for 1, 2 and 3 threads, on enough rows that every
 * element-wise pass and reduction is split. */
Test(ops, thread_count_bit_identity)
{
    enum { R = 4096, W = 8 };
    fl_real *out[3][4];
    for (int k = 0; k < 3; k++) {
        omp_set_num_threads(k + 1);
        gt t;
        gt_begin(&t, W, R);
        fl_ex e = t.e;
        uint32_t hid = 16;
        fl_mlp_spec s = { "net", W, W, 1, &hid, FL_ACT_RELU, FL_INIT_GLOROT, FL_INIT_GLOROT,
                          NULL, NULL };
        fl_mlp *m = fl_host_table()->mlp_create(t.cx, &s, R);
        s.name = "net2";
        fl_mlp *m2 = fl_host_table()->mlp_create(t.cx, &s, R);
        /* two nets on one input: they run side by side */
        fl_node in = fl_ex_mul(e, t.x, t.p), o1 = fl_ex_mlp(e, m, in), o2 = fl_ex_mlp(e, m2, in);
        fl_node h = fl_ex_tanh(e, o1);
        fl_node z = fl_ex_add(e, fl_ex_mul(e, t.x, fl_ex_exp(e, h)), fl_ex_sum_rows(e, h));
        z = fl_ex_add(e, z, o2);
        fl_node ld = fl_ex_add(e, fl_ex_sum(e, h), fl_ex_logsumexp(e, fl_ex_repeat(e, z, 2), 0));
        gt_compile(&t, fl_ex_add(e, z, t.q), ld, 0);
        for (int j = 0; j < 4; j++) out[k][j] = calloc((size_t)R * W + t.arena.total, sizeof(fl_real));
        fl_real *x = out[k][0], *y = out[k][1], *ld_ = out[k][2], *dx = out[k][3];
        fl_real *g = dx + (size_t)R * W, *dy = calloc((size_t)R * W, sizeof *dy);
        fl_real *dl = calloc(R, sizeof *dl);
        fill(x, (size_t)R * W, "x", -1);
        fill(dy, (size_t)R * W, "dy", -0.5);
        fill(dl, R, "dl", -0.5);
        fl_flow_fwd f = { R, FL_MODE_TRAIN, t.arena.theta, x, y, ld_, NULL, NULL };
        cr_assert_eq(fl_host_table()->expr_forward(e.g, &f), FL_OK);
        fl_flow_bwd b = { R, FL_MODE_TRAIN, t.arena.theta, g, x, y, NULL, dy, dl, dx, NULL, NULL, NULL };
        cr_assert_eq(fl_host_table()->expr_backward(e.g, &b), FL_OK);
        if (k == 0) { /* a second backward into zeroed arrays: the same bits (no state kept) */
            size_t cnt = (size_t)R * W + t.arena.total;
            fl_real *dx2 = calloc(cnt, sizeof *dx2);
            fl_flow_bwd b2 = b;
            b2.dx = dx2;
            b2.dtheta = dx2 + (size_t)R * W;
            cr_assert_eq(fl_host_table()->expr_backward(e.g, &b2), FL_OK);
            cr_assert(!memcmp(dx2, dx, cnt * sizeof *dx2), "a second backward differs");
            free(dx2);
        }
        free(dy);
        free(dl);
        if (k) {
            cr_assert(!memcmp(out[k][1], out[0][1], (size_t)R * W * sizeof(fl_real)), "y differs with %d threads", k + 1);
            cr_assert(!memcmp(out[k][2], out[0][2], (size_t)R * sizeof(fl_real)), "logdet differs with %d threads", k + 1);
            cr_assert(!memcmp(out[k][3], out[0][3], ((size_t)R * W + t.arena.total) * sizeof(fl_real)),
                      "dx or dtheta differs with %d threads", k + 1);
        }
        gt_end(&t);
    }
    for (int k = 0; k < 3; k++)
        for (int j = 0; j < 4; j++) free(out[k][j]);
    omp_set_num_threads(omp_get_num_procs());
}

/* y = x + 0.5 tanh(p x) + q^2 x^3 (increasing) into *y; returns log dy/dx. */
static fl_node cubic(fl_ex e, fl_node x, fl_node p, fl_node q, fl_node *y)
{
    fl_node k = fl_ex_square(e, q), th = fl_ex_tanh(e, fl_ex_mul(e, p, x)), half = fl_ex_const(e, 0.5);
    fl_node x2 = fl_ex_square(e, x);
    *y = fl_ex_add(e, fl_ex_add(e, x, fl_ex_mul(e, half, th)), fl_ex_mul(e, k, fl_ex_mul(e, x, x2)));
    fl_node sech2 = fl_ex_sub(e, fl_ex_const(e, 1), fl_ex_square(e, th));
    fl_node d = fl_ex_add(e, fl_ex_const(e, 1), fl_ex_mul(e, fl_ex_mul(e, half, p), sech2));
    return fl_ex_log(e, fl_ex_add(e, d, fl_ex_mul(e, fl_ex_mul(e, fl_ex_const(e, 3), k), x2)));
}

/* A graph and its inverse by a bisection solve over the same parameters:
 * forward then inverse is the identity, and the log-determinants cancel,
 * also for roots outside the first bracket [-1, 1]. */
Test(ops, solve_inverse)
{
    gt t;
    gt_begin(&t, D, N);
    fl_ex e = t.e;
    fl_node y, ld = cubic(e, t.x, t.p, t.q, &y);
    cr_assert_eq(fl_ex_compile(e, y, fl_ex_sum(e, ld), 0), FL_OK, "%s", fl_host_last_error());
    fl_ex f = fl_ex_begin(fl_host_table(), t.cx, &t.sh);
    fl_node P = fl_ex_theta(f, fl_arena_find(&t.arena, "flow.1.p")->offset, D);
    fl_node Q = fl_ex_theta(f, fl_arena_find(&t.arena, "flow.1.q")->offset, 1);
    fl_node v = fl_ex_var(f, D), fv, lv = cubic(f, v, P, Q, &fv);
    fl_node sol = fl_ex_solve(f, v, fv, fl_ex_x(f), -1, 1, 1e-12);
    cr_assert_eq(fl_ex_compile(f, sol, fl_ex_neg(f, fl_ex_sum(f, lv)), FL_EX_NO_BACKWARD), FL_OK,
                 "%s", fl_host_last_error());
    fl_ctx_end_create(t.cx);
    cr_assert_eq(fl_arena_finalize(&t.arena, 5), FL_OK);
    for (size_t i = 0; i < t.arena.total; i++) t.arena.theta[i] += 1;
    fl_real x[N * D], yv[N * D], xb[N * D], l[N] = { 0 }, li[N] = { 0 };
    fill(x, N * D, "x", -2);
    for (int i = 0; i < N * D; i++) x[i] *= 3; /* [-6, -3) */
    x[0] = 4;
    fl_flow_fwd a = { N, FL_MODE_EVAL, t.arena.theta, x, yv, l, NULL, NULL };
    cr_assert_eq(fl_host_table()->expr_forward(e.g, &a), FL_OK);
    fl_flow_inv b = { N, FL_MODE_EVAL, t.arena.theta, yv, xb, li, NULL, NULL };
    cr_assert_eq(fl_host_table()->expr_inverse(f.g, &b), FL_OK);
#ifdef FL_REAL_DOUBLE
    const double tol = 1e-9;
#else
    const double tol = 2e-6;
#endif
    for (int i = 0; i < N * D; i++)
        cr_assert(fabs(xb[i] - x[i]) <= tol * (1 + fabs(x[i])), "x[%d] = %.9g, inverse %.9g", i,
                  (double)x[i], (double)xb[i]);
    for (int r = 0; r < N; r++)
        cr_assert(fabs(l[r] + li[r]) <= 10 * tol, "row %d: logdets %g and %g", r, (double)l[r],
                  (double)li[r]);
    gt_end(&t);
}

/* The solve stops at its stated tolerance: with tol = 1e-2 every element
 * is within tol (1 + |x|) of the root, and coarser than the 1e-12 solve
 * somewhere (the bisection did stop early). */
Test(ops, solve_tolerance)
{
    const double coarse = 1e-2;
    gt t;
    gt_begin(&t, D, N);
    fl_ex e = t.e;
    fl_node y, ld = cubic(e, t.x, t.p, t.q, &y);
    cr_assert_eq(fl_ex_compile(e, y, fl_ex_sum(e, ld), 0), FL_OK, "%s", fl_host_last_error());
    size_t po = fl_arena_find(&t.arena, "flow.1.p")->offset;
    size_t qo = fl_arena_find(&t.arena, "flow.1.q")->offset;
    fl_expr *inv[2];
    for (int k = 0; k < 2; k++) {
        fl_ex f = fl_ex_begin(fl_host_table(), t.cx, &t.sh);
        fl_node v = fl_ex_var(f, D), fv, lv = cubic(f, v, fl_ex_theta(f, po, D), fl_ex_theta(f, qo, 1), &fv);
        fl_node sol = fl_ex_solve(f, v, fv, fl_ex_x(f), -1, 1, k ? coarse : 1e-12);
        cr_assert_eq(fl_ex_compile(f, sol, fl_ex_neg(f, fl_ex_sum(f, lv)), FL_EX_NO_BACKWARD),
                     FL_OK, "%s", fl_host_last_error());
        inv[k] = f.g;
    }
    fl_ctx_end_create(t.cx);
    cr_assert_eq(fl_arena_finalize(&t.arena, 5), FL_OK);
    for (size_t i = 0; i < t.arena.total; i++) t.arena.theta[i] += 1;
    fl_real x[N * D], yv[N * D], xi[2][N * D], l[N] = { 0 };
    fill(x, N * D, "x", -2);
    for (int i = 0; i < N * D; i++) x[i] *= 3;
    fl_flow_fwd a = { N, FL_MODE_EVAL, t.arena.theta, x, yv, l, NULL, NULL };
    cr_assert_eq(fl_host_table()->expr_forward(e.g, &a), FL_OK);
    double worst = 0;
    for (int k = 0; k < 2; k++) {
        fl_flow_inv b = { N, FL_MODE_EVAL, t.arena.theta, yv, xi[k], NULL, NULL, NULL };
        cr_assert_eq(fl_host_table()->expr_inverse(inv[k], &b), FL_OK);
    }
    for (int i = 0; i < N * D; i++) {
        double err = fabs(xi[1][i] - xi[0][i]) / (1 + fabs(xi[0][i]));
        cr_assert(err <= coarse, "x[%d]: %.9g with tol %g, %.9g with 1e-12", i, (double)xi[1][i],
                  coarse, (double)xi[0][i]);
        worst = err > worst ? err : worst;
    }
    cr_assert(worst > 1e-5, "tol %g gave every element to %g: the tolerance was not used", coarse,
              worst);
    gt_end(&t);
}

/* ---- errors ---------------------------------------------------------- */

/* Builds with BUILD, expects compile to fail with `msg` in the message. */
static void expect_error(fl_node y, fl_node ld, uint32_t flags, gt *t, const char *msg)
{
    fl_status st = fl_ex_compile(t->e, y, ld, flags);
    cr_assert_eq(st, FL_ERR_INVALID);
    assert_contains(fl_host_last_error(), msg);
    gt_end(t);
}

Test(errors, width_mismatch_names_the_node)
{
    gt t;
    gt_begin(&t, D, N);
    fl_ex e = t.e;
    fl_node bad = fl_ex_add(e, t.x, t.c); /* node 4: 3 against 2 */
    /* later calls pass the failure on without a second message */
    fl_node y = fl_ex_exp(e, fl_ex_mul(e, bad, t.x));
    cr_assert_eq(y, FL_NODE_NONE);
    expect_error(y, fl_ex_sum(e, t.x), 0, &t,
                 "expression node 4 (add): widths 3 and 2 do not broadcast");
}

Test(errors, used_before_defined)
{
    gt t;
    gt_begin(&t, D, N);
    fl_node y = fl_ex_add(t.e, t.x, 17);
    expect_error(y, fl_ex_sum(t.e, t.x), 0, &t,
                 "expression node 4 (add): input 17 is not a node of this graph (it has 4 "
                 "nodes): used before it is defined");
}

Test(errors, logdet_width)
{
    gt t;
    gt_begin(&t, D, N);
    expect_error(fl_ex_exp(t.e, t.x), t.x, 0, &t,
                 "expression node 0 (x): the log-determinant output has width 3: it must be "
                 "one number per row");
}

Test(errors, y_width)
{
    gt t;
    gt_begin(&t, D, N);
    expect_error(t.c, fl_ex_sum(t.e, t.x), 0, &t,
                 "expression node 1 (context): the y output has width 2, the layer's dim is 3");
}

Test(errors, solve_on_the_gradient_path)
{
    gt t;
    gt_begin(&t, D, N);
    fl_ex e = t.e;
    fl_node v = fl_ex_var(e, D);
    fl_node s = fl_ex_solve(e, v, fl_ex_exp(e, v), t.x, -1, 1, 1e-6); /* node 6 */
    expect_error(fl_ex_add(e, s, t.x), fl_ex_sum(e, t.x), 0, &t,
                 "expression node 6 (solve): not differentiable, and on the path of the y "
                 "output");
}

Test(errors, solve_of_a_row_sum)
{
    gt t;
    gt_begin(&t, D, N);
    fl_ex e = t.e;
    fl_node v = fl_ex_var(e, D);
    fl_node f = fl_ex_add(e, v, fl_ex_sum(e, v)); /* node 5 mixes the columns */
    fl_node s = fl_ex_solve(e, v, f, t.x, -1, 1, 1e-6);
    expect_error(s, fl_ex_sum(e, t.x), FL_EX_NO_BACKWARD, &t,
                 "expression node 5 (sum): depends on the var 4 of a solve");
}

Test(errors, var_never_solved)
{
    gt t;
    gt_begin(&t, D, N);
    fl_node v = fl_ex_var(t.e, D);
    expect_error(fl_ex_add(t.e, v, t.x), fl_ex_sum(t.e, t.x), FL_EX_NO_BACKWARD, &t,
                 "expression node 4 (var): this var is never solved");
}

Test(errors, mlp_shape)
{
    gt t;
    gt_begin(&t, D, N);
    fl_mlp_spec s = { "net", 5, 2, 0, NULL, FL_ACT_TANH, FL_INIT_GLOROT, FL_INIT_GLOROT, NULL, NULL };
    fl_mlp *m = fl_host_table()->mlp_create(t.cx, &s, N);
    fl_node r = fl_ex_mlp(t.e, m, t.x);
    expect_error(r, fl_ex_sum(t.e, t.x), 0, &t,
                 "expression node 4 (mlp): input of width 3, the network takes 5");
}

/* A plugin's broken graph: the stack's message names the layer and the node. */
Test(errors, through_the_stack)
{
    fl_runtime_init();
    fl_registry *r = fl_registry_new();
    char path[4096];
    snprintf(path, sizeof path, "%s/bad_graph.so", test_env("FLOWLAB_TEST_DIR"));
    cr_assert_eq(fl_registry_load(r, path), FL_OK, "%s", fl_err_msg());
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, "bad-graph");
    cr_assert_not_null(c);
    fl_config *cfg = fl_config_new("t");
    fl_config_put(cfg, "flow", "type", "bad-graph", 0);
    const fl_key *tabs[2] = { fl_flow_host_keys, c->cls.base.keys };
    uint32_t ns[2] = { fl_flow_host_nkeys, c->cls.base.n_keys };
    fl_values v;
    cr_assert_eq(fl_values_resolve(cfg, "flow", tabs, ns, 2, &v), FL_OK);
    fl_config_free(cfg);
    fl_arena a = { 0 };
    fl_stack *s = fl_stack_new(&a, 1, 4, 0, 8);
    cr_assert_eq(fl_stack_push(s, &c->cls.flow, "flow.2", &v, 0), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "flow.2");
    assert_contains(fl_err_msg(), "expression node 3 (mul): widths 4 and 2 do not broadcast");
    fl_stack_free(s);
    fl_arena_free(&a);
    fl_registry_free(r);
}

/* Each kind of graph error in a layer's create, through the stack: one
 * line naming the layer (its path) and the node. */
static int bad_kind;

static fl_status bad_create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    fl_ex e = fl_ex_begin(h, cx, sh);
    fl_node x = fl_ex_x(e), y = x, ld = fl_ex_sum(e, x); /* nodes 0, 1 */
    switch (bad_kind) {
    case 0: y = fl_ex_mul(e, x, fl_ex_slice(e, x, 0, 2)); break; /* node 3: 4 against 2 */
    case 1: y = fl_ex_add(e, x, 9); break;                      /* node 2: no node 9 yet */
    case 2: {                                                   /* a solve on y's path */
        fl_node v = fl_ex_var(e, sh->dim);                      /* node 2 */
        y = fl_ex_add(e, x, fl_ex_solve(e, v, fl_ex_exp(e, v), x, -1, 1, 1e-6)); /* solve: 4 */
        break;
    }
    default: ld = fl_ex_exp(e, x); break;                       /* node 2: 4 wide */
    }
    fl_status st = fl_ex_compile(e, y, ld, 0);
    return st == FL_OK ? fl_ex_layer_make(e, e.g, NULL, self) : st;
}

Test(errors, each_kind_names_layer_and_node)
{
    static const fl_flow_class cls = { { sizeof(fl_flow_class), "bad", "graph errors", NULL, 0 },
                                       0, bad_create, fl_ex_layer_destroy, fl_ex_layer_forward,
                                       fl_ex_layer_backward, NULL, NULL };
    static const char *const want[] = {
        "expression node 3 (mul): widths 4 and 2 do not broadcast",
        "expression node 2 (add): input 9 is not a node of this graph",
        "expression node 4 (solve): not differentiable, and on the path of the y output",
        "expression node 2 (exp): the log-determinant output has width 4",
    };
    fl_runtime_init();
    for (bad_kind = 0; bad_kind < 4; bad_kind++) {
        fl_config *cfg = fl_config_new("t");
        fl_config_put(cfg, "flow", "type", "bad", 0);
        const fl_key *tabs[1] = { fl_flow_host_keys };
        uint32_t ns[1] = { fl_flow_host_nkeys };
        fl_values v;
        cr_assert_eq(fl_values_resolve(cfg, "flow", tabs, ns, 1, &v), FL_OK, "%s", fl_err_msg());
        fl_config_free(cfg);
        fl_arena a = { 0 };
        fl_stack *s = fl_stack_new(&a, 1, 4, 0, 8);
        cr_assert_eq(fl_stack_push(s, &cls, "flow.2", &v, 0), FL_ERR_INVALID, "kind %d", bad_kind);
        const char *m = fl_err_msg();
        assert_contains(m, "flow.2");
        assert_contains(m, want[bad_kind]);
        cr_assert_null(strchr(m, '\n'), "kind %d: not one line: %s", bad_kind, m);
        fl_stack_free(s);
        fl_arena_free(&a);
    }
}

/* ---- the graph-built layers against the hand-written ones ---------------- */

/* One layer of `type` at flow.1 (same path and seed: the same initial
 * parameters for layers that request the same names), parameters x3. */
static fl_stack *one_layer(const fl_registry *r, fl_arena *a, const char *type,
                           const char *const *kv, uint32_t dim, uint32_t cd, uint32_t index)
{
    const fl_comp_rec *c = fl_registry_find(r, FL_KIND_FLOW, type);
    cr_assert_not_null(c, "%s", type);
    fl_config *cfg = fl_config_new("t");
    fl_config_put(cfg, "flow", "type", type, 0);
    for (size_t i = 0; kv && kv[i]; i++) {
        char *as = fl_strfmt("flow.%s", kv[i]);
        cr_assert_eq(fl_config_set(cfg, as), FL_OK, "%s", fl_err_msg());
        free(as);
    }
    const fl_key *tabs[2] = { fl_flow_host_keys, c->cls.base.keys };
    uint32_t ns[2] = { fl_flow_host_nkeys, c->cls.base.n_keys };
    fl_values v;
    cr_assert_eq(fl_values_resolve(cfg, "flow", tabs, ns, 2, &v), FL_OK, "%s", fl_err_msg());
    fl_config_free(cfg);
    fl_stack *s = fl_stack_new(a, 3, dim, cd, 16);
    cr_assert_eq(fl_stack_push(s, &c->cls.flow, "flow.1", &v, index), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_arena_finalize(a, 3), FL_OK);
    cr_assert_eq(fl_stack_ready(s), FL_OK);
    for (size_t i = 0; i < a->total; i++) a->theta[i] *= 3;
    return s;
}

static void agree(const char *hand, const char *graph, const char *const *kv, uint32_t dim,
                  uint32_t cd, uint32_t index)
{
    enum { R = 16 };
    fl_runtime_init();
    fl_registry *reg = load_builtin_plugins();
    fl_arena a[2] = { { 0 }, { 0 } };
    fl_stack *s[2] = { one_layer(reg, &a[0], hand, kv, dim, cd, index),
                       one_layer(reg, &a[1], graph, kv, dim, cd, index) };
    cr_assert_eq(a[0].total, a[1].total, "%s and %s: parameter layouts differ", hand, graph);
    cr_assert(!memcmp(a[0].theta, a[1].theta, a[0].total * sizeof(fl_real)),
              "%s and %s: different initial parameters", hand, graph);
    fl_real x[R * 8], c[R * 4], du[R * 8], dl[R], y[2][R * 8], ld[2][R], dx[2][R * 8], dc[2][R * 4];
    fill(x, (size_t)R * dim, "x", -1);
    fill(c, (size_t)R * 4, "c", -1);
    fill(du, (size_t)R * dim, "du", -0.5);
    fill(dl, R, "dl", -0.5);
#ifdef FL_REAL_DOUBLE
    const double tol = 1e-10;
#else
    const double tol = 2e-5;
#endif
    for (int k = 0; k < 2; k++) {
        const fl_real *u;
        memset(ld[k], 0, sizeof ld[k]);
        memset(dx[k], 0, sizeof dx[k]);
        memset(dc[k], 0, sizeof dc[k]);
        fl_arena_zero_grad(&a[k]);
        cr_assert_eq(fl_stack_forward(s[k], R, FL_MODE_TRAIN, x, cd ? c : NULL, ld[k], &u), FL_OK,
                     "%s", fl_err_msg());
        memcpy(y[k], u, sizeof(fl_real) * R * dim);
        cr_assert_eq(fl_stack_backward(s[k], R, FL_MODE_TRAIN, cd ? c : NULL, du, dl, dx[k],
                                       cd ? dc[k] : NULL),
                     FL_OK);
    }
#define CLOSE(v0, v1, what, i)                                                         \
    cr_assert(fabs((double)(v0) - (double)(v1)) <= tol * (1 + fabs((double)(v0))),      \
              "%s vs %s (dim %u, context %u, index %u) %s[%zu]: %.9g vs %.9g", hand, graph, \
              dim, cd, index, what, (size_t)(i), (double)(v0), (double)(v1))
    for (size_t i = 0; i < (size_t)R * dim; i++) CLOSE(y[0][i], y[1][i], "y", i);
    for (size_t i = 0; i < R; i++) CLOSE(ld[0][i], ld[1][i], "logdet", i);
    for (size_t i = 0; i < (size_t)R * dim; i++) CLOSE(dx[0][i], dx[1][i], "dx", i);
    for (size_t i = 0; i < (size_t)R * cd; i++) CLOSE(dc[0][i], dc[1][i], "dc", i);
    for (size_t i = 0; i < a[0].total; i++) CLOSE(a[0].grad[i], a[1].grad[i], "dtheta", i);
    /* and the inverses */
    fl_real xi[2][R * 8];
    for (int k = 0; k < 2; k++)
        cr_assert_eq(fl_stack_inverse(s[k], R, FL_MODE_EVAL, y[0], cd ? c : NULL, xi[k], NULL),
                     FL_OK);
    for (size_t i = 0; i < (size_t)R * dim; i++) CLOSE(xi[0][i], xi[1][i], "inverse", i);
#undef CLOSE
    for (int k = 0; k < 2; k++) {
        fl_stack_free(s[k]);
        fl_arena_free(&a[k]);
    }
    fl_registry_free(reg);
}

Test(layers, planar_expr_agrees_with_planar)
{
    for (uint32_t dim = 2; dim <= 6; dim += 4) agree("planar", "planar-expr", NULL, dim, 0, 0);
}

Test(layers, coupling_expr_agrees_with_affine_coupling)
{
    static const char *const sep[] = { "hidden=16,16", "zero_init=false", NULL };
    static const char *const shared[] = { "hidden=16", "zero_init=false", "net=shared",
                                          "mask=checkerboard", "scale_bound=2", NULL };
    static const char *const rnd[] = { "hidden=8", "zero_init=false", "mask=random",
                                       "activation=tanh", "init=glorot", "scale_bound=0", NULL };
    for (uint32_t index = 0; index < 2; index++) {
        agree("affine-coupling", "affine-coupling-expr", sep, 5, 0, index);
        agree("affine-coupling", "affine-coupling-expr", sep, 4, 3, index);
        agree("affine-coupling", "affine-coupling-expr", shared, 5, 2, index);
        agree("affine-coupling", "affine-coupling-expr", rnd, 6, 0, index);
    }
}
