/* expr.c - the differentiable expression service (flowlab/expr.h): graphs
 * built node by node in a flow layer's create, compiled once (every buffer
 * sized for max_rows), run forward, backward (reverse mode) and inverse
 * (with bisection solves) over whole batches.
 *
 * A node's values are `rows x w` numbers, rows = n (rowwise) or 1 (shared
 * by every row). Leaves x, c and theta point into the call's arrays; their
 * gradients are added straight into dx, dc and dtheta. Every other node
 * owns a value buffer and, when differentiated, a gradient buffer (not
 * zeroed per call: the first contribution stores, the later ones add; a
 * gradient passed on unchanged to a node of one consumer is shared). A
 * contribution of the input's shape goes straight into its gradient;
 * others are computed in the output's shape into `tmp`, and `give`
 * reduces them to the input's shape: over columns (a width-1 input), over
 * rows (a shared input, in double, in lanes of whole rows), every sum in
 * an order fixed by the widths, so the result does not depend on the
 * thread count; element-wise passes split rows over OpenMP threads. */
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/expr.h>
#include <flowlab/flow.h>
#include <flowlab/vmath.h>

#include "compute/conv.h"
#include "compute/expr.h"
#include "compute/mlp.h"
#include "core/hostimpl.h"
#include "core/util.h"

enum { LEAF = 0 };
/* Operations of the other builder members, after fl_expr_op's. */
enum { FX_GATHER = 200, FX_NET = 201, FX_SOLVE = 202 };
/* Row blocks of the element-wise passes: split over threads above PAR_MIN
 * numbers (below it a parallel region costs more than it saves). */
enum { BLOCK = 32, PAR_MIN = 32768 };

typedef struct node {
    int leaf;                 /* FL_EX_INPUT.. for a leaf, else LEAF */
    int op;                   /* FL_EX_* operation (0 for a leaf) */
    fl_node in[3];
    uint32_t k;               /* REPEAT, TILE, SUM, LOGSUMEXP argument */
    uint32_t w;               /* width */
    int rowwise;              /* n rows (1) or one shared row (0) */
    size_t off;               /* THETA: offset in theta */
    fl_real *cval;            /* CONST: its values (owned) */
    uint32_t *cols;           /* gather: its columns (owned) */
    fl_mlp *mlp;              /* net node: one of them */
    fl_conv *conv;
    uint32_t net_in;          /* net node: the network's input width */
    double lo, hi, tol;       /* solve */
    fl_node cone;             /* >= 0: evaluated only inside the solve of this var */
    uint32_t cm;              /* cone node: its columns per column of the var */
    fl_node solved_by;        /* var: its solve node */
    fl_node nondiff;          /* the var or solve this node depends on, or -1 */
    int grad;                 /* depends on x, c or theta: carries a gradient */
    int live;                 /* an output depends on it (compile): backward visits it */
    int uses_ctx;
    fl_real *val, *gbuf;      /* values and gradient (planned by compile) */
    fl_real *netin;           /* net node whose input is a leaf: a copy of it */
    int pair;                 /* net node followed by an independent net: the two run
                                 side by side (one thread each, as affine-coupling's) */
    fl_real *pdin;            /* the second net of a pair: its input gradient, added after */
    int gset;                 /* backward: its gradient is set this call (the first
                                 contribution stores: gradients are not zeroed per call) */
    fl_real *gp;              /* backward: its gradient, gbuf or (gradient of a node of one
                                 consumer, passed on unchanged) that consumer's, read only */
    uint32_t users;           /* consumers of its gradient (compile): inputs and outputs */
} node;

struct fl_expr {
    fl_ctx *cx;
    uint32_t dim, cd, max_rows;
    node *nd;
    uint32_t n, cap;
    char err[512];            /* the first failure, "" when none */
    int compiled, backward;
    fl_node y, ld;
    int y_alias;              /* y's buffer is the call's output array */
    uint32_t maxw;
    fl_real *tmp;             /* max_rows x maxw: backward contributions */
    fl_real *sc[2];           /* max_rows x maxw each: narrow broadcast operands, expanded */
    double *acc;              /* max(maxw, 2 LANES): sums over rows */
    fl_real *slo, *shi, *sst; /* max_rows x (widest solve): brackets, steps */
    fl_real **bufs;           /* every buffer compile allocated */
    size_t n_bufs;
    /* the current call */
    uint32_t rows;
    const fl_real *theta;
    fl_real *dtheta;
};

static const char *op_name(const node *d)
{
    switch (d->leaf) {
    case FL_EX_INPUT: return "x";
    case FL_EX_CONTEXT: return "context";
    case FL_EX_THETA: return "theta";
    case FL_EX_CONST: return "const";
    case FL_EX_VAR: return "var";
    default: break;
    }
    switch (d->op) {
    case FL_EX_NEG: return "neg";
    case FL_EX_EXP: return "exp";
    case FL_EX_LOG: return "log";
    case FL_EX_LOG1P: return "log1p";
    case FL_EX_EXPM1: return "expm1";
    case FL_EX_TANH: return "tanh";
    case FL_EX_SIGMOID: return "sigmoid";
    case FL_EX_SOFTPLUS: return "softplus";
    case FL_EX_LOGSIGMOID: return "logsigmoid";
    case FL_EX_ABS: return "abs";
    case FL_EX_SQRT: return "sqrt";
    case FL_EX_SQUARE: return "square";
    case FL_EX_RECIP: return "recip";
    case FL_EX_ADD: return "add";
    case FL_EX_SUB: return "sub";
    case FL_EX_MUL: return "mul";
    case FL_EX_DIV: return "div";
    case FL_EX_POW: return "pow";
    case FL_EX_MIN: return "min";
    case FL_EX_MAX: return "max";
    case FL_EX_LT: return "lt";
    case FL_EX_LE: return "le";
    case FL_EX_GT: return "gt";
    case FL_EX_GE: return "ge";
    case FL_EX_WHERE: return "where";
    case FL_EX_CONCAT: return "concat";
    case FL_EX_REPEAT: return "repeat";
    case FL_EX_TILE: return "tile";
    case FL_EX_SUM: return "sum";
    case FL_EX_LOGSUMEXP: return "logsumexp";
    case FL_EX_SUM_ROWS: return "sum_rows";
    case FX_GATHER: return "gather";
    case FX_NET: return d->mlp ? "mlp" : "conv";
    case FX_SOLVE: return "solve";
    default: return "?";
    }
}

/* Records the first failure ("node ID (OP): ...") and returns FL_NODE_NONE. */
static fl_node fail(fl_expr *g, fl_node id, const char *opname, const char *fmt, ...)
    FL_PRINTF_FORMAT(4, 5);
static fl_node fail(fl_expr *g, fl_node id, const char *opname, const char *fmt, ...)
{
    if (g->err[0]) return FL_NODE_NONE;
    int k = snprintf(g->err, sizeof g->err, "expression node %d (%s): ", (int)id, opname);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err + k, sizeof g->err - (size_t)k, fmt, ap);
    va_end(ap);
    return FL_NODE_NONE;
}

fl_expr *fl_expr_new(fl_ctx *cx, const fl_flow_shape *sh)
{
    fl_expr *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->cx = cx;
    g->dim = sh->dim;
    g->cd = sh->context_dim;
    g->max_rows = sh->max_rows ? sh->max_rows : 1;
    g->y = g->ld = FL_NODE_NONE;
    return g;
}

void fl_expr_free(fl_expr *g)
{
    if (!g) return;
    for (uint32_t i = 0; i < g->n; i++) {
        free(g->nd[i].cval);
        free(g->nd[i].cols);
    }
    for (size_t i = 0; i < g->n_bufs; i++) fl_free(g->bufs[i]);
    free(g->bufs);
    free(g->acc);
    free(g->nd);
    free(g);
}

/* Appends a node; FL_NODE_NONE (message set) when the graph is closed or
 * full memory. */
static fl_node push(fl_expr *g, const node *d)
{
    fl_node id = (fl_node)g->n;
    if (g->compiled) return fail(g, id, op_name(d), "the graph is compiled already");
    if (!g->cx->creating) return fail(g, id, op_name(d), "graphs are built only in create");
    if (g->n == g->cap) {
        uint32_t cap = g->cap ? 2 * g->cap : 32;
        node *nn = realloc(g->nd, cap * sizeof *nn);
        if (!nn) return fail(g, id, op_name(d), "out of memory");
        g->nd = nn;
        g->cap = cap;
    }
    g->nd[g->n] = *d;
    return (fl_node)g->n++;
}

/* Checks input `a` of the node about to be created: FL_NODE_NONE passes
 * silently (an earlier failure), anything else must be a node already. */
static int bad_input(fl_expr *g, fl_node a, const char *opname)
{
    if (g->err[0]) return 1;
    if (a == FL_NODE_NONE) {
        fail(g, (fl_node)g->n, opname, "an input is FL_NODE_NONE");
        return 1;
    }
    if (a < 0 || (uint32_t)a >= g->n) {
        fail(g, (fl_node)g->n, opname,
             "input %d is not a node of this graph (it has %u nodes): used before it is "
             "defined, or from another graph",
             (int)a, g->n);
        return 1;
    }
    return 0;
}

/* A node's dependence flags from its inputs. */
static void inherit(fl_expr *g, node *d, int n_in)
{
    d->nondiff = -1;
    d->cone = -1;
    d->solved_by = -1;
    for (int i = 0; i < n_in; i++) {
        const node *s = &g->nd[d->in[i]];
        d->grad |= s->grad;
        d->uses_ctx |= s->uses_ctx;
        if (d->nondiff < 0) d->nondiff = s->nondiff;
    }
}

fl_node fl_expr_add_leaf(fl_expr *g, int kind, uint32_t width, size_t offset, const fl_real *values)
{
    if (!g || g->err[0]) return FL_NODE_NONE;
    node d = { .leaf = kind, .in = { -1, -1, -1 }, .nondiff = -1, .cone = -1, .solved_by = -1 };
    fl_node id = (fl_node)g->n;
    switch (kind) {
    case FL_EX_INPUT:
        d.w = g->dim;
        d.rowwise = d.grad = 1;
        break;
    case FL_EX_CONTEXT:
        if (!g->cd) return fail(g, id, "context", "the layer has no context (context_dim 0)");
        d.w = g->cd;
        d.rowwise = d.grad = d.uses_ctx = 1;
        break;
    case FL_EX_THETA:
        if (!width) /* fl_ex_param after a refused request: its message */
            return fail(g, id, "theta", "%s",
                        fl_host_last_error()[0] ? fl_host_last_error() : "a slice of width 0");
        d.w = width;
        d.off = offset;
        d.grad = 1;
        break;
    case FL_EX_CONST:
        if (!width || !values) return fail(g, id, "const", "constants need width > 0 and values");
        d.w = width;
        d.cval = malloc(width * sizeof *d.cval);
        if (!d.cval) return fail(g, id, "const", "out of memory");
        memcpy(d.cval, values, width * sizeof *d.cval);
        break;
    case FL_EX_VAR:
        if (!width) return fail(g, id, "var", "a var of width 0");
        d.w = width;
        d.rowwise = 1;
        d.nondiff = id;
        break;
    default: return fail(g, id, "leaf", "unknown leaf kind %d", kind);
    }
    fl_node r = push(g, &d);
    if (r == FL_NODE_NONE) free(d.cval);
    return r;
}

static int is_unary(int op) { return op >= FL_EX_NEG && op <= FL_EX_RECIP; }
static int is_binary(int op) { return op >= FL_EX_ADD && op <= FL_EX_GE; }
static int is_compare(int op) { return op >= FL_EX_LT && op <= FL_EX_GE; }
static int is_elementwise(int op) { return is_unary(op) || is_binary(op) || op == FL_EX_WHERE; }

/* The broadcast width of widths a and b, or 0. */
static uint32_t bwidth(uint32_t a, uint32_t b) { return a == b || b == 1 ? a : a == 1 ? b : 0; }

fl_node fl_expr_add_op(fl_expr *g, int op, fl_node a, fl_node b, fl_node c, uint32_t k)
{
    if (!g || g->err[0]) return FL_NODE_NONE;
    node d = { .op = op, .in = { a, b, c }, .k = k };
    fl_node id = (fl_node)g->n;
    const char *nm = op_name(&d);
    int n_in = is_binary(op) || op == FL_EX_CONCAT ? 2 : op == FL_EX_WHERE ? 3 : 1;
    if (!strcmp(nm, "?") || op >= FX_GATHER) return fail(g, id, "op", "unknown operation %d", op);
    for (int i = 0; i < n_in; i++)
        if (bad_input(g, d.in[i], nm)) return FL_NODE_NONE;
    for (int i = n_in; i < 3; i++) d.in[i] = FL_NODE_NONE;
    const node *A = &g->nd[a], *B = n_in > 1 ? &g->nd[b] : NULL, *C = n_in > 2 ? &g->nd[c] : NULL;
    inherit(g, &d, n_in);
    d.rowwise = A->rowwise || (B && B->rowwise) || (C && C->rowwise);
    if (is_unary(op)) {
        d.w = A->w;
    } else if (is_binary(op)) {
        d.w = bwidth(A->w, B->w);
        if (!d.w) return fail(g, id, nm, "widths %u and %u do not broadcast", A->w, B->w);
        if (is_compare(op)) {
            d.grad = 0;
            d.nondiff = -1; /* a step: no gradient flows through it */
        }
    } else if (op == FL_EX_WHERE) {
        d.w = bwidth(bwidth(A->w, B->w), C->w);
        if (!d.w || !bwidth(A->w, B->w))
            return fail(g, id, nm, "widths %u, %u and condition %u do not broadcast", A->w, B->w,
                        C->w);
    } else if (op == FL_EX_CONCAT) {
        d.w = A->w + B->w;
    } else if (op == FL_EX_REPEAT || op == FL_EX_TILE) {
        if (!k) return fail(g, id, nm, "k = 0 copies");
        d.w = A->w * k;
    } else if (op == FL_EX_SUM || op == FL_EX_LOGSUMEXP) {
        if (!k) d.k = k = A->w;
        if (A->w % k)
            return fail(g, id, nm, "width %u is not a multiple of the group size %u", A->w, k);
        d.w = A->w / k;
    } else { /* FL_EX_SUM_ROWS */
        if (!A->rowwise) return fail(g, id, nm, "its input is shared by every row already");
        d.w = A->w;
        d.rowwise = 0;
    }
    return push(g, &d);
}

fl_node fl_expr_gather(fl_expr *g, fl_node a, uint32_t width, const uint32_t *cols,
                       uint32_t start)
{
    if (!g || g->err[0]) return FL_NODE_NONE;
    node d = { .op = FX_GATHER, .in = { a, -1, -1 }, .w = width };
    fl_node id = (fl_node)g->n;
    if (bad_input(g, a, "gather")) return FL_NODE_NONE;
    const node *A = &g->nd[a];
    if (!width) return fail(g, id, "gather", "width 0");
    d.cols = malloc(width * sizeof *d.cols);
    if (!d.cols) return fail(g, id, "gather", "out of memory");
    for (uint32_t i = 0; i < width; i++) {
        d.cols[i] = cols ? cols[i] : start + i;
        if (d.cols[i] >= A->w) {
            free(d.cols);
            return fail(g, id, "gather", "column %u of an input of width %u",
                        cols ? cols[i] : start + i, A->w);
        }
    }
    inherit(g, &d, 1);
    d.rowwise = A->rowwise;
    fl_node r = push(g, &d);
    if (r == FL_NODE_NONE) free(d.cols);
    return r;
}

fl_node fl_expr_net(fl_expr *g, fl_mlp *m, fl_conv *c, fl_node in)
{
    if (!g || g->err[0]) return FL_NODE_NONE;
    node d = { .op = FX_NET, .in = { in, -1, -1 }, .mlp = m, .conv = c };
    fl_node id = (fl_node)g->n;
    const char *nm = m ? "mlp" : "conv";
    if (bad_input(g, in, nm)) return FL_NODE_NONE;
    if (!m == !c) return fail(g, id, "net", "give exactly one of an MLP and a conv net");
    for (uint32_t i = 0; i < g->n; i++)
        if (g->nd[i].op == FX_NET && g->nd[i].mlp == m && g->nd[i].conv == c)
            return fail(g, id, nm, "this network is node %u already: a network caches its "
                                   "last call, so it may appear once per graph",
                        i);
    uint32_t win, wout;
    if (m) {
        fl_mlp_io(m, &win, &wout);
    } else {
        uint32_t oc, oh, ow;
        fl_conv_out_shape(c, &oc, &oh, &ow);
        wout = oc * oh * ow;
        win = fl_ctx_conv_in(g->cx, c);
        if (!win) return fail(g, id, nm, "not a conv net of this component");
    }
    const node *A = &g->nd[in];
    if (A->w != win) return fail(g, id, nm, "input of width %u, the network takes %u", A->w, win);
    if (!A->rowwise) return fail(g, id, nm, "its input must have a row per example");
    inherit(g, &d, 1);
    d.grad = 1;
    d.w = wout;
    d.net_in = win;
    d.rowwise = 1;
    return push(g, &d);
}

fl_node fl_expr_solve(fl_expr *g, fl_node var, fl_node f, fl_node target, double lo, double hi,
                      double tol)
{
    if (!g || g->err[0]) return FL_NODE_NONE;
    fl_node id = (fl_node)g->n;
    if (bad_input(g, var, "solve") || bad_input(g, f, "solve") || bad_input(g, target, "solve"))
        return FL_NODE_NONE;
    node *V = &g->nd[var];
    if (V->leaf != FL_EX_VAR) return fail(g, id, "solve", "node %d is not a var", (int)var);
    if (V->solved_by >= 0)
        return fail(g, id, "solve", "var %d is solved by node %d already", (int)var,
                    (int)V->solved_by);
    if (!(hi > lo) || !(tol > 0))
        return fail(g, id, "solve", "needs lo < hi and tol > 0 (got [%g, %g], tol %g)", lo, hi,
                    tol);
    /* The nodes after var that depend on it, evaluated inside the solve
     * only. Column c of each must depend on var's column c / cm alone
     * (cm: its columns per var column), so that the solve is element by
     * element: element-wise operations, repeats, and sums or
     * log-sum-exps of groups inside one var column's block. */
    const uint32_t wv = V->w;
    V->cm = 1;
    for (uint32_t i = (uint32_t)var + 1; i < g->n; i++) {
        node *d = &g->nd[i];
        const node *cin = NULL;
        int mixed = 0;
        for (int j = 0; j < 3; j++)
            if (d->in[j] >= 0 && (d->in[j] == var || g->nd[d->in[j]].cone == var)) {
                const node *s = &g->nd[d->in[j]];
                mixed |= cin && cin->w != s->w;
                cin = s;
            }
        if (!cin) continue;
        int ok = 0;
        if (mixed) ok = 0;
        else if (is_elementwise(d->op)) ok = cin->w == d->w || (cin->w == 1 && wv == 1);
        else if (d->op == FL_EX_REPEAT) ok = 1;
        else if (d->op == FL_EX_SUM || d->op == FL_EX_LOGSUMEXP) ok = cin->cm % d->k == 0;
        if (!ok)
            return fail(g, (fl_node)i, op_name(d),
                        "depends on the var %d of a solve, whose function must map each var "
                        "column to its own columns (element-wise operations, repeat, sums of "
                        "groups within one column's copies)",
                        (int)var);
        d->cone = var;
        d->cm = d->w / wv;
    }
    const node *F = &g->nd[f], *T = &g->nd[target];
    if (g->nd[f].cone != var)
        return fail(g, id, "solve", "f (node %d) does not depend on var %d", (int)f, (int)var);
    if (F->w != V->w) return fail(g, id, "solve", "f has width %u, its var %u", F->w, V->w);
    if (T->cone == var) return fail(g, id, "solve", "the target depends on the var");
    if (!bwidth(F->w, T->w) || bwidth(F->w, T->w) != F->w)
        return fail(g, id, "solve", "target of width %u for f of width %u", T->w, F->w);
    node d = { .op = FX_SOLVE, .in = { var, f, target }, .w = V->w, .rowwise = 1, .lo = lo,
               .hi = hi, .tol = tol };
    inherit(g, &d, 3);
    d.nondiff = id;
    d.grad = 0;
    fl_node r = push(g, &d);
    if (r != FL_NODE_NONE) g->nd[var].solved_by = r;
    return r;
}

/* ---- compile ------------------------------------------------------------ */

static fl_real *buffer(fl_expr *g, size_t count)
{
    fl_real **nb = realloc(g->bufs, (g->n_bufs + 1) * sizeof *nb);
    if (!nb) return NULL;
    g->bufs = nb;
    fl_real *p = fl_alloc((count ? count : 1) * sizeof(fl_real));
    if (!p) return NULL;
    memset(p, 0, (count ? count : 1) * sizeof(fl_real));
    g->bufs[g->n_bufs++] = p;
    return p;
}

static int is_param_leaf(const node *d)
{
    return d->leaf == FL_EX_INPUT || d->leaf == FL_EX_CONTEXT || d->leaf == FL_EX_THETA;
}

fl_status fl_expr_compile(fl_expr *g, fl_node y, fl_node ld, uint32_t flags)
{
    if (!g) return FL_ERR_INVALID;
    if (g->compiled) fail(g, (fl_node)g->n, "compile", "the graph is compiled already");
    if (!g->err[0] && y != FL_NODE_NONE && ld != FL_NODE_NONE &&
        !bad_input(g, y, "compile") && !bad_input(g, ld, "compile")) {
        const node *Y = &g->nd[y], *L = &g->nd[ld];
        g->backward = !(flags & FL_EX_NO_BACKWARD);
        if (Y->w != g->dim)
            fail(g, y, op_name(Y), "the y output has width %u, the layer's dim is %u", Y->w,
                 g->dim);
        else if (L->w != 1)
            fail(g, ld, op_name(L),
                 "the log-determinant output has width %u: it must be one number per row "
                 "(sum its terms with fl_ex_sum)",
                 L->w);
        for (uint32_t i = 0; i < g->n && !g->err[0]; i++)
            if (g->nd[i].leaf == FL_EX_VAR && g->nd[i].solved_by < 0)
                fail(g, (fl_node)i, "var", "this var is never solved");
        if (g->backward && !g->err[0]) {
            fl_node bad = Y->nondiff >= 0 ? Y->nondiff : L->nondiff;
            if (bad >= 0)
                fail(g, bad, op_name(&g->nd[bad]),
                     "not differentiable, and on the path of the %s output (node %d): "
                     "compile an inverse graph with FL_EX_NO_BACKWARD",
                     Y->nondiff >= 0 ? "y" : "log-determinant", Y->nondiff >= 0 ? (int)y : (int)ld);
        }
    } else if (!g->err[0]) {
        fail(g, (fl_node)g->n, "compile", "an output is missing (FL_NODE_NONE)");
    }
    if (g->err[0]) {
        fl_host_table()->error(g->cx, "%s", g->err);
        return FL_ERR_INVALID;
    }
    g->y = y;
    g->ld = ld;
    g->y_alias = !g->nd[y].leaf && g->nd[y].rowwise && g->nd[y].op != FX_SOLVE;
    /* live: what an output or a solve (whose function's nodes an output
     * may read) depends on; the runs skip the rest */
    g->nd[y].live = g->nd[ld].live = 1;
    for (uint32_t i = 0; i < g->n; i++) g->nd[i].live |= g->nd[i].op == FX_SOLVE;
    for (uint32_t i = g->n; i-- > 0;)
        for (int j = 0; j < 3 && g->nd[i].live; j++)
            if (g->nd[i].in[j] >= 0) g->nd[g->nd[i].in[j]].live = 1;
    for (uint32_t i = 0; i < g->n; i++) g->nd[i].grad &= g->nd[i].live;
    /* users: a node with one takes a gradient passed on unchanged by
     * reference instead of a copy (backward's give) */
    for (uint32_t i = 0; i < g->n; i++) {
        const node *d = &g->nd[i];
        for (int j = 0; j < (d->op == FL_EX_WHERE ? 2 : 3) && d->grad && !d->leaf; j++)
            if (d->in[j] >= 0 && g->nd[d->in[j]].grad) g->nd[d->in[j]].users++;
    }
    g->nd[y].users++;
    g->nd[ld].users++;
    size_t R = g->max_rows, maxsolve = 0;
    g->maxw = 1;
    for (uint32_t i = 0; i < g->n; i++) {
        node *d = &g->nd[i];
        size_t rows = d->rowwise ? R : 1;
        if (d->w > g->maxw) g->maxw = d->w;
        if (d->op == FX_SOLVE && d->w > maxsolve) maxsolve = d->w;
        if (d->leaf == FL_EX_CONST) d->val = d->cval;
        else if (!is_param_leaf(d) && !((fl_node)i == y && g->y_alias)) {
            if (!(d->val = buffer(g, rows * d->w))) goto nomem;
        }
        if (d->op == FX_NET && g->nd[d->in[0]].leaf &&
            !(d->netin = buffer(g, R * d->net_in)))
            goto nomem;
        if (g->backward && d->grad && !is_param_leaf(d) && !(d->gbuf = buffer(g, rows * d->w)))
            goto nomem;
    }
    for (uint32_t i = 0; i + 1 < g->n; i++) {
        node *d = &g->nd[i], *e = d + 1;
        if (d->op != FX_NET || e->op != FX_NET || !d->live || !e->live || e->in[0] == (fl_node)i ||
            d->pair || (i > 0 && g->nd[i - 1].pair))
            continue;
        d->pair = 1;
        if (g->backward && g->nd[e->in[0]].grad && !(e->pdin = buffer(g, R * e->net_in)))
            goto nomem;
    }
    g->tmp = buffer(g, R * g->maxw);
    g->sc[0] = buffer(g, R * g->maxw);
    g->sc[1] = buffer(g, R * g->maxw);
    g->acc = calloc(g->maxw > 32 ? g->maxw : 32, sizeof *g->acc);
    if (!g->tmp || !g->sc[0] || !g->sc[1] || !g->acc) goto nomem;
    if (maxsolve && (!(g->slo = buffer(g, R * maxsolve)) || !(g->shi = buffer(g, R * maxsolve)) ||
                     !(g->sst = buffer(g, R * maxsolve))))
        goto nomem;
    g->compiled = 1;
    return FL_OK;
nomem:
    fl_host_table()->error(g->cx, "expression graph: out of memory for %u nodes x %u rows", g->n,
                           g->max_rows);
    return FL_ERR_NOMEM;
}

/* ---- kernels ------------------------------------------------------------ */

#define ROW(d, r) ((d)->rowwise ? (d)->val + (size_t)(r) * (d)->w : (d)->val)

/* Lanes of the long sums: one 512-bit vector of floats. Every sum's order
 * depends on the widths alone (never on the rows' split over threads). */
enum { LANES = 16 };
/* Below this width a broadcast operand (a shared row, a per-row column) is
 * expanded into a scratch so that the operation is one flat loop; from it
 * on, a loop per row is as fast. */
enum { NARROW = 32 };

/* out[i] = (or += when add) the sum of src[i k .. i k + k), i < m: in
 * order for k <= 8 (the loop over i vectorises), else in LANES lanes. */
static void sum_groups_k(const fl_real *restrict src, size_t m, uint32_t k, fl_real *restrict out,
                         int add)
{
#define SUMK_(K)                                                                      \
    for (size_t i = 0; i < m; i++) {                                                  \
        const fl_real *p = src + i * (K);                                             \
        fl_real s = p[0];                                                             \
        for (uint32_t q = 1; q < (K); q++) s += p[q];                                 \
        out[i] = add ? out[i] + s : s;                                                \
    }                                                                                 \
    break
    switch (k) {
    case 1: SUMK_(1);
    case 2: SUMK_(2);
    case 3: SUMK_(3);
    case 4: SUMK_(4);
    case 5: SUMK_(5);
    case 6: SUMK_(6);
    case 7: SUMK_(7);
    case 8: SUMK_(8);
    default:
        for (size_t i = 0; i < m; i++) {
            const fl_real *p = src + i * k;
            fl_real acc[LANES] = { 0 };
            uint32_t q = 0;
            for (; q + LANES <= k; q += LANES)
                for (uint32_t l = 0; l < LANES; l++) acc[l] += p[q + l];
            for (uint32_t l = 0; q + l < k; l++) acc[l] += p[q + l];
            fl_real s = acc[0];
            for (uint32_t l = 1; l < LANES; l++) s += acc[l];
            out[i] = add ? out[i] + s : s;
        }
        break;
    }
#undef SUMK_
}

/* out[i k + q] = (or +=) src[i], i < m, q < k. */
static void repeat_k(const fl_real *restrict src, size_t m, uint32_t k, fl_real *restrict out,
                     int add)
{
#define REPK_(K)                                                                      \
    for (size_t i = 0; i < m; i++)                                                    \
        for (uint32_t q = 0; q < (K); q++)                                            \
            out[i * (K) + q] = add ? out[i * (K) + q] + src[i] : src[i];              \
    break
    switch (k) {
    case 1: REPK_(1);
    case 2: REPK_(2);
    case 3: REPK_(3);
    case 4: REPK_(4);
    default: REPK_(k);
    }
#undef REPK_
}

/* m copies of the row `row` (W numbers) into out, by doubling. */
static void tile_rows(const fl_real *row, size_t m, uint32_t W, fl_real *out)
{
    if (!m) return;
    memcpy(out, row, W * sizeof *out);
    for (size_t have = 1; have < m;) {
        size_t c = have < m - have ? have : m - have;
        memcpy(out + have * W, out, c * W * sizeof *out);
        have += c;
    }
}

/* out[j] = (or +=) the sum over rows r < n of src[r lds + j], j < W, in
 * double and a fixed order (lanes of whole rows for narrow contiguous
 * rows); to_one sums the W results too (in order) into out[0]. */
static void sum_over_rows(fl_expr *g, const fl_real *restrict src, uint32_t n, uint32_t W,
                          size_t lds, int to_one, fl_real *restrict out, int add)
{
    double *restrict acc = g->acc;
    if (lds == W && W <= LANES) {
        const uint32_t L = W * ((LANES + W - 1) / W); /* a multiple of W: lane l is column l % W */
        const size_t cnt = (size_t)n * W;
        size_t i = 0;
        for (uint32_t l = 0; l < L; l++) acc[l] = 0;
        if (L == LANES)
            for (; i + LANES <= cnt; i += LANES)
                for (uint32_t l = 0; l < LANES; l++) acc[l] += src[i + l];
        else
            for (; i + L <= cnt; i += L)
                for (uint32_t l = 0; l < L; l++) acc[l] += src[i + l];
        for (uint32_t l = 0; i + l < cnt; l++) acc[l] += src[i + l];
        for (uint32_t j = 0; j < W; j++) {
            double s = acc[j];
            for (uint32_t l = j + W; l < L; l += W) s += acc[l];
            acc[j] = s;
        }
    } else {
        for (uint32_t j = 0; j < W; j++) acc[j] = 0;
        for (uint32_t r = 0; r < n; r++) {
            const fl_real *restrict s = src + (size_t)r * lds;
            for (uint32_t j = 0; j < W; j++) acc[j] += s[j];
        }
    }
    if (to_one) {
        double s = acc[0];
        for (uint32_t j = 1; j < W; j++) s += acc[j];
        out[0] = add ? out[0] + (fl_real)s : (fl_real)s;
        return;
    }
    for (uint32_t j = 0; j < W; j++) out[j] = add ? out[j] + (fl_real)acc[j] : (fl_real)acc[j];
}

/* Element-wise binary loops over W outputs, inputs of stride 1 or 0; EXPR
 * of A_ and B_ stored (or added, STORE_) into py[j]. */
#define BIN_LOOP_(EXPR, STORE_)                                                        \
    do {                                                                               \
        if (sa && sb) {                                                                \
            for (size_t j = 0; j < W; j++) {                                           \
                fl_real A_ = pa[j], B_ = pb[j];                                        \
                STORE_(py[j], (EXPR));                                                 \
            }                                                                          \
        } else if (sa) {                                                               \
            fl_real B_ = pb[0];                                                        \
            for (size_t j = 0; j < W; j++) {                                           \
                fl_real A_ = pa[j];                                                    \
                STORE_(py[j], (EXPR));                                                 \
            }                                                                          \
        } else if (sb) {                                                               \
            fl_real A_ = pa[0];                                                        \
            for (size_t j = 0; j < W; j++) {                                           \
                fl_real B_ = pb[j];                                                    \
                STORE_(py[j], (EXPR));                                                 \
            }                                                                          \
        } else {                                                                       \
            fl_real A_ = pa[0], B_ = pb[0];                                            \
            for (size_t j = 0; j < W; j++) STORE_(py[j], (EXPR));                      \
        }                                                                              \
    } while (0)
#define SET_(dst, v) (dst) = (v)
#define ADD_(dst, v) (dst) += (v)
#define BIN_ROW(EXPR) BIN_LOOP_(EXPR, SET_)

static inline fl_real log1p_(fl_real a)
{
    fl_real u = 1 + a, d = u - 1;
    return d == 0 ? a : fl_log(u) * (a / d);
}

static void unary_fwd(int op, size_t n, const fl_real *restrict a, fl_real *restrict y)
{
    switch (op) {
    case FL_EX_NEG: for (size_t i = 0; i < n; i++) y[i] = -a[i]; break;
    case FL_EX_EXP: for (size_t i = 0; i < n; i++) y[i] = fl_exp(a[i]); break;
    case FL_EX_LOG: for (size_t i = 0; i < n; i++) y[i] = fl_log(a[i]); break;
    case FL_EX_LOG1P: for (size_t i = 0; i < n; i++) y[i] = log1p_(a[i]); break;
    case FL_EX_EXPM1: for (size_t i = 0; i < n; i++) y[i] = fl_expm1(a[i]); break;
    case FL_EX_TANH: for (size_t i = 0; i < n; i++) y[i] = fl_tanh(a[i]); break;
    case FL_EX_SIGMOID: for (size_t i = 0; i < n; i++) y[i] = fl_sigmoid(a[i]); break;
    case FL_EX_SOFTPLUS: for (size_t i = 0; i < n; i++) y[i] = fl_softplus(a[i]); break;
    case FL_EX_LOGSIGMOID: for (size_t i = 0; i < n; i++) y[i] = -fl_softplus(-a[i]); break;
    case FL_EX_ABS: for (size_t i = 0; i < n; i++) y[i] = fabs(a[i]); break;
    case FL_EX_SQRT: for (size_t i = 0; i < n; i++) y[i] = sqrt(a[i]); break;
    case FL_EX_SQUARE: for (size_t i = 0; i < n; i++) y[i] = a[i] * a[i]; break;
    case FL_EX_RECIP: for (size_t i = 0; i < n; i++) y[i] = 1 / a[i]; break;
    default: break;
    }
}

static void binary_row(int op, size_t W, const fl_real *restrict pa, int sa,
                       const fl_real *restrict pb, int sb, fl_real *restrict py)
{
    switch (op) {
    case FL_EX_ADD: BIN_ROW(A_ + B_); break;
    case FL_EX_SUB: BIN_ROW(A_ - B_); break;
    case FL_EX_MUL: BIN_ROW(A_ * B_); break;
    case FL_EX_DIV: BIN_ROW(A_ / B_); break;
    case FL_EX_POW: BIN_ROW(pow(A_, B_)); break;
    case FL_EX_MIN: BIN_ROW(A_ <= B_ ? A_ : B_); break;
    case FL_EX_MAX: BIN_ROW(A_ >= B_ ? A_ : B_); break;
    case FL_EX_LT: BIN_ROW((fl_real)(A_ < B_)); break;
    case FL_EX_LE: BIN_ROW((fl_real)(A_ <= B_)); break;
    case FL_EX_GT: BIN_ROW((fl_real)(A_ > B_)); break;
    case FL_EX_GE: BIN_ROW((fl_real)(A_ >= B_)); break;
    default: break;
    }
}

/* binary_row over rows [r0, r1) of broadcast inputs, the operation chosen
 * once (not per row). */
#define BIN_ROWS(EXPR)                                                                 \
    for (uint32_t r = r0; r < r1; r++) {                                               \
        const fl_real *restrict pa = ROW(A, r), *restrict pb = ROW(B, r);              \
        fl_real *restrict py = ROW(d, r);                                              \
        BIN_ROW(EXPR);                                                                 \
    }

static void binary_rows(const node *d, const node *A, const node *B, uint32_t r0, uint32_t r1)
{
    const uint32_t W = d->w;
    const int sa = A->w != 1 || W == 1, sb = B->w != 1 || W == 1;
    switch (d->op) {
    case FL_EX_ADD: BIN_ROWS(A_ + B_); break;
    case FL_EX_SUB: BIN_ROWS(A_ - B_); break;
    case FL_EX_MUL: BIN_ROWS(A_ * B_); break;
    case FL_EX_DIV: BIN_ROWS(A_ / B_); break;
    default:
        for (uint32_t r = r0; r < r1; r++)
            binary_row(d->op, W, ROW(A, r), sa, ROW(B, r), sb, ROW(d, r));
        break;
    }
}

/* Input X of a node of W columns (rowwise: rowwise) over its rows [r0, r1)
 * as one flat array: element i of the rows' row-major block is p[i * *s].
 * A shared scalar has stride 0; a shared row or a per-row column is
 * expanded into scr (a scratch of the node's shape, same rows) when W <
 * NARROW; NULL (loop per row) otherwise. */
static const fl_real *flat_in(const node *X, uint32_t W, int rowwise, uint32_t r0, uint32_t r1,
                              fl_real *scr, int *s)
{
    *s = 1;
    if (X->w == W && (X->rowwise || !rowwise)) return ROW(X, r0);
    if (X->w == 1 && !X->rowwise) {
        *s = 0;
        return X->val;
    }
    if (W >= NARROW) return NULL;
    fl_real *p = scr + (size_t)r0 * W;
    if (X->w == W) tile_rows(X->val, r1 - r0, W, p);            /* a shared row */
    else repeat_k(ROW(X, r0), r1 - r0, W, p, 0);                /* a per-row column */
    return p;
}

/* Rows [r0, r1) of node i (for a shared node, r0 = 0, r1 = 1). */
static void eval_rows(fl_expr *g, uint32_t i, uint32_t r0, uint32_t r1)
{
    node *d = &g->nd[i];
    const node *A = d->in[0] >= 0 ? &g->nd[d->in[0]] : NULL;
    const node *B = d->in[1] >= 0 ? &g->nd[d->in[1]] : NULL;
    const uint32_t W = d->w;
    const size_t m = (size_t)(r1 - r0);
    if (is_unary(d->op)) {
        unary_fwd(d->op, m * W, ROW(A, r0), ROW(d, r0));
        return;
    }
    if (is_binary(d->op)) {
        int sa, sb;
        const fl_real *pa = flat_in(A, W, d->rowwise, r0, r1, g->sc[0], &sa);
        const fl_real *pb = pa ? flat_in(B, W, d->rowwise, r0, r1, g->sc[1], &sb) : NULL;
        if (pa && pb) binary_row(d->op, m * W, pa, sa, pb, sb, ROW(d, r0));
        else binary_rows(d, A, B, r0, r1);
        return;
    }
    switch (d->op) { /* column operations on whole blocks of rows */
    case FL_EX_REPEAT: repeat_k(ROW(A, r0), m * A->w, d->k, ROW(d, r0), 0); return;
    case FL_EX_SUM: sum_groups_k(ROW(A, r0), m * W, d->k, ROW(d, r0), 0); return;
    default: break;
    }
    for (uint32_t r = r0; r < r1; r++) {
        const fl_real *pa = A ? ROW(A, r) : NULL;
        fl_real *py = ROW(d, r);
        switch (d->op) {
        case FL_EX_WHERE: {
            const node *C = &g->nd[d->in[2]];
            const fl_real *pb = ROW(B, r), *pc = ROW(C, r);
            uint32_t ma = A->w == 1 ? 0 : 1, mb = B->w == 1 ? 0 : 1, mc = C->w == 1 ? 0 : 1;
            for (uint32_t j = 0; j < W; j++) py[j] = pc[j * mc] != 0 ? pa[j * ma] : pb[j * mb];
            break;
        }
        case FL_EX_CONCAT:
            memcpy(py, pa, A->w * sizeof *py);
            memcpy(py + A->w, ROW(B, r), B->w * sizeof *py);
            break;
        case FL_EX_TILE:
            for (uint32_t q = 0; q < d->k; q++) memcpy(py + q * A->w, pa, A->w * sizeof *py);
            break;
        case FL_EX_LOGSUMEXP:
            for (uint32_t j = 0; j < W; j++) {
                const fl_real *p = pa + j * d->k;
                fl_real mx = p[0], s = 0;
                for (uint32_t q = 1; q < d->k; q++) mx = p[q] > mx ? p[q] : mx;
                if (isinf(mx)) {
                    py[j] = mx;
                    continue;
                }
                for (uint32_t q = 0; q < d->k; q++) s += fl_exp(p[q] - mx);
                py[j] = mx + fl_log(s);
            }
            break;
        case FX_GATHER:
            for (uint32_t j = 0; j < W; j++) py[j] = pa[d->cols[j]];
            break;
        default: break;
        }
    }
}

/* Node i over all its rows: split in blocks over threads when large. */
static void eval(fl_expr *g, uint32_t i)
{
    node *d = &g->nd[i];
    if (!d->rowwise) {
        if (d->op == FL_EX_SUM_ROWS) {
            const node *A = &g->nd[d->in[0]];
            sum_over_rows(g, A->val, g->rows, d->w, d->w, 0, d->val, 0);
            return;
        }
        eval_rows(g, i, 0, 1);
        return;
    }
    uint32_t n = g->rows;
    if ((size_t)n * d->w < PAR_MIN || omp_in_parallel()) {
        eval_rows(g, i, 0, n);
        return;
    }
    uint32_t nb = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (uint32_t b = 0; b < nb; b++) {
        uint32_t r1 = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
        eval_rows(g, i, b * BLOCK, r1);
    }
}

static void eval_net(fl_expr *g, node *d)
{
    const node *A = &g->nd[d->in[0]];
    const fl_real *in = A->val;
    if (d->netin) { /* a leaf's array belongs to the caller: the net keeps its own copy */
        memcpy(d->netin, in, (size_t)g->rows * d->net_in * sizeof *in);
        in = d->netin;
    }
    if (d->mlp) fl_mlp_forward(d->mlp, g->theta, g->rows, in, d->val);
    else fl_conv_forward(d->conv, g->theta, g->rows, in, d->val);
}

/* The nodes of var v's function, at v's current values. */
static void eval_cone(fl_expr *g, fl_node v, fl_node s)
{
    for (uint32_t i = (uint32_t)v + 1; i < (uint32_t)s; i++)
        if (g->nd[i].cone == v) eval(g, i);
}

/* Bisection of f(v) = target, element by element; each element stops on
 * its own (so the result does not depend on the others, nor on threads). */
static void solve(fl_expr *g, node *s)
{
    fl_node v = s->in[0], si = (fl_node)(s - g->nd);
    node *V = &g->nd[v];
    const node *F = &g->nd[s->in[1]], *T = &g->nd[s->in[2]];
    const uint32_t W = s->w, n = g->rows;
    const size_t cnt = (size_t)n * W;
    fl_real *lo = g->slo, *hi = g->shi, *st = g->sst, *x = V->val;
    const fl_real *f = F->val;
    const fl_real tol = (fl_real)s->tol;
#define TGT(i) (T->val[(T->rowwise ? ((i) / W) * T->w : 0) + (T->w == 1 ? 0 : (i) % W)])
    for (size_t i = 0; i < cnt; i++) {
        lo[i] = (fl_real)s->lo;
        hi[i] = (fl_real)s->hi;
        st[i] = hi[i] - lo[i];
    }
    /* widen: lo down while f(lo) > target, hi up while f(hi) < target */
    for (int side = 0; side < 2; side++) {
        fl_real *e = side ? hi : lo;
        for (size_t i = 0; i < cnt; i++) st[i] = (fl_real)(s->hi - s->lo);
        for (int it = 0; it < 64; it++) {
            memcpy(x, e, cnt * sizeof *x);
            eval_cone(g, v, si);
            int moved = 0;
            for (size_t i = 0; i < cnt; i++) {
                fl_real t = TGT(i);
                if (side == 0 && f[i] > t) {
                    hi[i] = lo[i];
                    lo[i] -= st[i];
                    st[i] *= 2;
                    moved = 1;
                } else if (side == 1 && f[i] < t) {
                    lo[i] = hi[i];
                    hi[i] += st[i];
                    st[i] *= 2;
                    moved = 1;
                }
            }
            if (!moved) break;
        }
    }
    for (int it = 0; it < 300; it++) {
        int moved = 0;
        for (size_t i = 0; i < cnt; i++) x[i] = lo[i] + (hi[i] - lo[i]) / 2;
        eval_cone(g, v, si);
        for (size_t i = 0; i < cnt; i++) {
            fl_real m = x[i];
            if (hi[i] - lo[i] <= tol * (1 + fabs(m)) || m <= lo[i] || m >= hi[i]) continue;
            if (f[i] > TGT(i)) hi[i] = m;
            else lo[i] = m;
            moved = 1;
        }
        if (!moved) break;
    }
#undef TGT
    for (size_t i = 0; i < cnt; i++) x[i] = lo[i] + (hi[i] - lo[i]) / 2;
    eval_cone(g, v, si);
    memcpy(s->val, x, cnt * sizeof *x);
}

/* Binds the call's arrays and runs every node; the y output goes to `out`. */
static fl_status run(fl_expr *g, uint32_t n, const fl_real *theta, const fl_real *x,
                     const fl_real *c, fl_real *out, fl_real *logdet)
{
    if (!g->compiled) {
        fl_host_table()->error(g->cx, "expression graph run before it was compiled");
        return FL_ERR_INVALID;
    }
    if (n > g->max_rows) {
        fl_host_table()->error(g->cx, "expression graph called with %u rows, planned for %u", n,
                               g->max_rows);
        return FL_ERR_INVALID;
    }
    g->rows = n;
    g->theta = theta;
    for (uint32_t i = 0; i < g->n; i++) {
        node *d = &g->nd[i];
        if (d->leaf == FL_EX_INPUT) d->val = (fl_real *)x;
        else if (d->leaf == FL_EX_CONTEXT) {
            if (!c && d->live) {
                fl_host_table()->error(g->cx, "the expression graph reads the context, and the "
                                              "call has none");
                return FL_ERR_INVALID;
            }
            d->val = (fl_real *)c;
        } else if (d->leaf == FL_EX_THETA) d->val = (fl_real *)theta + d->off;
    }
    if (g->y_alias) g->nd[g->y].val = out;
    if (n == 0) return FL_OK;
    for (uint32_t i = 0; i < g->n; i++) {
        node *d = &g->nd[i];
        if (d->leaf || d->cone >= 0 || !d->live) continue;
        if (d->pair) {
#pragma omp parallel sections if (n >= 64)
            {
#pragma omp section
                eval_net(g, d);
#pragma omp section
                eval_net(g, d + 1);
            }
            i++;
        } else if (d->op == FX_NET) eval_net(g, d);
        else if (d->op == FX_SOLVE) solve(g, d);
        else eval(g, i);
    }
    const node *Y = &g->nd[g->y], *L = &g->nd[g->ld];
    if (!g->y_alias)
        for (uint32_t r = 0; r < n; r++)
            memcpy(out + (size_t)r * g->dim, ROW(Y, r), g->dim * sizeof *out);
    if (logdet)
        for (uint32_t r = 0; r < n; r++) logdet[r] += *ROW(L, r);
    return FL_OK;
}

fl_status fl_expr_forward(fl_expr *g, const fl_flow_fwd *a)
{
    return run(g, a->n, a->theta, a->x, a->c, a->y, a->logdet);
}

fl_status fl_expr_inverse(fl_expr *g, const fl_flow_inv *a)
{
    return run(g, a->n, a->theta, a->y, a->c, a->x, a->logdet);
}

const fl_real *fl_expr_value(fl_expr *g, fl_node node_id, size_t *ld)
{
    if (!g || node_id < 0 || (uint32_t)node_id >= g->n) return NULL;
    const node *d = &g->nd[node_id];
    if (ld) *ld = d->rowwise ? d->w : 0;
    return d->val;
}

uint32_t fl_expr_width(const fl_expr *g, fl_node node_id)
{
    return g && node_id >= 0 && (uint32_t)node_id < g->n ? g->nd[node_id].w : 0;
}

/* ---- backward ----------------------------------------------------------- */

/* Where node d's gradient goes: its own buffer, or the call's dx, dc or
 * dtheta for a leaf; NULL when nothing wants it. */
static fl_real *gdst(const node *d, const fl_flow_bwd *a)
{
    switch (d->leaf) {
    case FL_EX_INPUT: return a->dx;
    case FL_EX_CONTEXT: return a->dc;
    case FL_EX_THETA: return a->dtheta + d->off;
    case LEAF: return d->grad ? (d->gset ? d->gp : d->gbuf) : NULL;
    default: return NULL;
    }
}

/* Whether the next contribution to X's gradient adds (a leaf's dx, dc,
 * dtheta, or a buffer written already this call) or stores (the first:
 * the buffers are not zeroed per call); marks it written. */
static int first_or_add(node *X)
{
    int add = X->leaf || X->gset;
    if (!add) X->gp = X->gbuf;
    X->gset = 1;
    return add;
}

/* dst[i] = (or +=) src[i], i < cnt; split over threads when large. */
static void flat_give(fl_real *restrict dst, const fl_real *restrict src, size_t cnt, int add)
{
    if (cnt >= PAR_MIN && !omp_in_parallel()) {
        size_t nb = (cnt + PAR_MIN / 8 - 1) / (PAR_MIN / 8);
#pragma omp parallel for schedule(static)
        for (size_t b = 0; b < nb; b++) {
            size_t i0 = b * (PAR_MIN / 8), i1 = i0 + PAR_MIN / 8 < cnt ? i0 + PAR_MIN / 8 : cnt;
            for (size_t i = i0; i < i1; i++) dst[i] = add ? dst[i] + src[i] : src[i];
        }
        return;
    }
    for (size_t i = 0; i < cnt; i++) dst[i] = add ? dst[i] + src[i] : src[i];
}

/* Gives X the contribution src (srow ? rows : 1 rows of W, stride lds):
 * reduced over the columns when X has width 1, over the rows (in double,
 * in a fixed order) when X is shared; so the result does not depend on
 * the thread count. A src that is stable (a node's gradient, or the
 * call's dy or dlogdet: not written again this call) becomes X's gradient
 * by reference when it is X's only one and of its shape. */
static void give(fl_expr *g, node *X, fl_real *dst, const fl_real *src, int srow, uint32_t W,
                 size_t lds, int stable)
{
    if (!dst) return;
    const uint32_t n = srow ? g->rows : 1;
    if (stable && !X->leaf && !X->gset && X->users == 1 && X->w == W && lds == W &&
        X->rowwise == srow) {
        X->gp = (fl_real *)src;
        X->gset = 1;
        return;
    }
    const int add = first_or_add(X);
    if (X->rowwise || !srow) {
        if (X->w == W && lds == W) flat_give(dst, src, (size_t)n * W, add);
        else if (X->w == W)
            for (uint32_t r = 0; r < n; r++)
                for (uint32_t j = 0; j < W; j++)
                    dst[(size_t)r * W + j] = add ? dst[(size_t)r * W + j] + src[r * lds + j]
                                                 : src[r * lds + j];
        else if (lds == W) sum_groups_k(src, n, W, dst, add);
        else
            for (uint32_t r = 0; r < n; r++) sum_groups_k(src + r * lds, 1, W, dst + r, add);
        return;
    }
    sum_over_rows(g, src, n, W, lds, X->w == 1 && W > 1, dst, add);
}

/* t[i] = (or +=) G * d(unary)/da over cnt elements. */
static void unary_bwd(int op, size_t cnt, const fl_real *restrict a, const fl_real *restrict y,
                      const fl_real *restrict G, fl_real *restrict t, int add)
{
#define UB_(EXPR)                                                                      \
    do {                                                                               \
        if (add)                                                                       \
            for (size_t i = 0; i < cnt; i++) t[i] += (EXPR);                           \
        else                                                                           \
            for (size_t i = 0; i < cnt; i++) t[i] = (EXPR);                            \
    } while (0)
    switch (op) {
    case FL_EX_NEG: UB_(-G[i]); break;
    case FL_EX_EXP: UB_(G[i] * y[i]); break;
    case FL_EX_LOG: UB_(G[i] / a[i]); break;
    case FL_EX_LOG1P: UB_(G[i] / (1 + a[i])); break;
    case FL_EX_EXPM1: UB_(G[i] * (y[i] + 1)); break;
    case FL_EX_TANH: UB_(G[i] * (1 - y[i] * y[i])); break;
    case FL_EX_SIGMOID: UB_(G[i] * y[i] * (1 - y[i])); break;
    case FL_EX_SOFTPLUS: UB_(G[i] * fl_sigmoid(a[i])); break;
    case FL_EX_LOGSIGMOID: UB_(G[i] * fl_sigmoid(-a[i])); break;
    case FL_EX_ABS: UB_(a[i] > 0 ? G[i] : a[i] < 0 ? -G[i] : 0); break;
    case FL_EX_SQRT: UB_(G[i] * (fl_real)0.5 / y[i]); break;
    case FL_EX_SQUARE: UB_(2 * G[i] * a[i]); break;
    case FL_EX_RECIP: UB_(-G[i] * y[i] * y[i]); break;
    default: break;
    }
#undef UB_
}

/* A binary node's contribution to input `which` (0: a, 1: b) over W
 * elements of flat inputs (stride sa, sb), its gradient G and values Y,
 * stored (or added) into py. */
#define GJ G[j]
#define YJ Y[j]
#define BWD_ALL_(STORE_)                                                               \
    do {                                                                               \
        if (which == 0) {                                                              \
            switch (op) {                                                              \
            case FL_EX_MUL: BIN_LOOP_(((void)A_, GJ * B_), STORE_); break;             \
            case FL_EX_DIV: BIN_LOOP_(((void)A_, GJ / B_), STORE_); break;             \
            case FL_EX_POW: BIN_LOOP_(GJ * B_ * YJ / A_, STORE_); break;               \
            case FL_EX_MIN: BIN_LOOP_(A_ <= B_ ? GJ : 0, STORE_); break;               \
            case FL_EX_MAX: BIN_LOOP_(A_ >= B_ ? GJ : 0, STORE_); break;               \
            default: break;                                                            \
            }                                                                          \
        } else {                                                                       \
            switch (op) {                                                              \
            case FL_EX_SUB: BIN_LOOP_(((void)A_, (void)B_, -GJ), STORE_); break;       \
            case FL_EX_MUL: BIN_LOOP_(((void)B_, GJ * A_), STORE_); break;             \
            case FL_EX_DIV: BIN_LOOP_(((void)A_, -GJ * YJ / B_), STORE_); break;       \
            case FL_EX_POW: BIN_LOOP_(((void)B_, GJ * YJ * log(A_)), STORE_); break;   \
            case FL_EX_MIN: BIN_LOOP_(A_ <= B_ ? 0 : GJ, STORE_); break;               \
            case FL_EX_MAX: BIN_LOOP_(A_ >= B_ ? 0 : GJ, STORE_); break;               \
            default: break;                                                            \
            }                                                                          \
        }                                                                              \
    } while (0)

static void binary_bwd_flat(int op, int which, size_t W, const fl_real *restrict pa, int sa,
                            const fl_real *restrict pb, int sb, const fl_real *restrict G,
                            const fl_real *restrict Y, fl_real *restrict py, int add)
{
    (void)Y;
    if (add) BWD_ALL_(ADD_);
    else BWD_ALL_(SET_);
}

/* The same over node d's rows, row by row (wide broadcasts), stored into
 * t (rows of W). */
static void binary_bwd_rows(const node *d, const node *A, const node *B, int which, uint32_t n,
                            const fl_real *Gm, fl_real *t)
{
    const size_t W = d->w;
    const int sa = A->w != 1 || W == 1, sb = B->w != 1 || W == 1, op = d->op;
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *restrict pa = ROW(A, r), *restrict pb = ROW(B, r);
        const fl_real *restrict Y = ROW(d, r), *restrict G = Gm + (size_t)r * W;
        fl_real *restrict py = t + (size_t)r * W;
        (void)Y;
        BWD_ALL_(SET_);
    }
}
#undef GJ
#undef YJ

/* A binary node's contributions to its inputs. */
static void back_binary(fl_expr *g, node *d, const fl_flow_bwd *a)
{
    node *in[2] = { &g->nd[d->in[0]], &g->nd[d->in[1]] };
    const uint32_t n = d->rowwise ? g->rows : 1, W = d->w;
    const size_t cnt = (size_t)n * W;
    const fl_real *G = d->gp;
    int sa = 1, sb = 1;
    const fl_real *pa = NULL, *pb = NULL;
    int flat = -1; /* inputs expanded (1), or row by row (0); -1: not yet */
    for (int which = 0; which < 2; which++) {
        node *X = in[which];
        fl_real *dst = X->grad ? gdst(X, a) : NULL;
        if (!dst) continue;
        if (d->op == FL_EX_ADD || (d->op == FL_EX_SUB && !which)) {
            give(g, X, dst, G, d->rowwise, W, W, 1); /* the gradient itself */
            continue;
        }
        if (flat < 0) {
            pa = flat_in(in[0], W, d->rowwise, 0, n, g->sc[0], &sa);
            pb = pa ? flat_in(in[1], W, d->rowwise, 0, n, g->sc[1], &sb) : NULL;
            flat = pa && pb;
        }
        /* an input of the node's shape takes its contribution directly */
        int direct = flat && X->w == W && (X->rowwise || !d->rowwise);
        if (direct) {
            int add = first_or_add(X);
            if (cnt >= PAR_MIN && !omp_in_parallel()) {
                uint32_t nb = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
                for (uint32_t b = 0; b < nb; b++) {
                    size_t r0 = (size_t)b * BLOCK, r1 = r0 + BLOCK < n ? r0 + BLOCK : n;
                    binary_bwd_flat(d->op, which, (r1 - r0) * W, pa + r0 * W * (size_t)sa, sa,
                                    pb + r0 * W * (size_t)sb, sb, G + r0 * W, d->val + r0 * W,
                                    dst + r0 * W, add);
                }
            } else {
                binary_bwd_flat(d->op, which, cnt, pa, sa, pb, sb, G, d->val, dst, add);
            }
            continue;
        }
        if (flat) binary_bwd_flat(d->op, which, cnt, pa, sa, pb, sb, G, d->val, g->tmp, 0);
        else binary_bwd_rows(d, in[0], in[1], which, n, G, g->tmp);
        give(g, X, dst, g->tmp, d->rowwise, W, W, 0);
    }
}

/* The input gradient a network node adds to: zeroed on its first use
 * this call (a leaf's dx or dc is added to as it is). */
static fl_real *net_din(node *A, const fl_flow_bwd *a, size_t count)
{
    fl_real *din = A->grad ? gdst(A, a) : NULL;
    if (din && !first_or_add(A)) memset(din, 0, count * sizeof *din);
    return din;
}

/* Node i's contributions to its inputs' gradients. */
static void back_node(fl_expr *g, uint32_t i, const fl_flow_bwd *a)
{
    node *d = &g->nd[i];
    const uint32_t n = d->rowwise ? g->rows : 1, W = d->w;
    const fl_real *G = d->gp;
    fl_real *t = g->tmp;
    node *A = d->in[0] >= 0 ? &g->nd[d->in[0]] : NULL;
    node *B = d->in[1] >= 0 ? &g->nd[d->in[1]] : NULL;
    fl_real *ga = A && A->grad ? gdst(A, a) : NULL;
    fl_real *gb = B && B->grad ? gdst(B, a) : NULL;
    if (is_compare(d->op)) return;
    if (is_binary(d->op)) {
        back_binary(g, d, a);
        return;
    }
    if (is_unary(d->op)) { /* same shape as its input: straight into its gradient */
        if (!ga) return;
        const size_t cnt = (size_t)n * W;
        const int add = first_or_add(A);
        if (cnt >= PAR_MIN && d->rowwise && !omp_in_parallel()) {
            uint32_t nb = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
            for (uint32_t b = 0; b < nb; b++) {
                size_t r0 = (size_t)b * BLOCK, r1 = r0 + BLOCK < n ? r0 + BLOCK : n;
                unary_bwd(d->op, (r1 - r0) * W, A->val + r0 * W, d->val + r0 * W, G + r0 * W,
                          ga + r0 * W, add);
            }
        } else {
            unary_bwd(d->op, cnt, A->val, d->val, G, ga, add);
        }
        return;
    }
    switch (d->op) {
    case FL_EX_WHERE: {
        const node *C = &g->nd[d->in[2]];
        uint32_t mc = C->w == 1 ? 0 : 1;
        for (int which = 0; which < 2; which++) {
            fl_real *dst = which ? gb : ga;
            if (!dst) continue;
            for (uint32_t r = 0; r < n; r++) {
                const fl_real *pc = ROW(C, r), *gr = G + (size_t)r * W;
                fl_real *tr = t + (size_t)r * W;
                for (uint32_t j = 0; j < W; j++) tr[j] = (pc[j * mc] != 0) != which ? gr[j] : 0;
            }
            give(g, which ? B : A, dst, t, d->rowwise, W, W, 0);
        }
        return;
    }
    case FL_EX_CONCAT:
        give(g, A, ga, G, d->rowwise, A->w, W, 1);
        give(g, B, gb, G + A->w, d->rowwise, B->w, W, 1);
        return;
    case FL_EX_SUM: /* its input has its rows: each group's gradient, repeated */
        if (ga) repeat_k(G, (size_t)n * W, d->k, ga, first_or_add(A));
        return;
    case FL_EX_REPEAT:
        if (ga) sum_groups_k(G, (size_t)n * A->w, d->k, ga, first_or_add(A));
        return;
    case FL_EX_TILE:
    case FL_EX_LOGSUMEXP:
    case FX_GATHER: {
        if (!ga) return;
        const uint32_t wa = A->w, k = d->k;
        for (uint32_t r = 0; r < n; r++) {
            const fl_real *gr = G + (size_t)r * W, *pa = ROW(A, r), *yr = ROW(d, r);
            fl_real *tr = t + (size_t)r * wa;
            switch (d->op) {
            case FL_EX_TILE:
                for (uint32_t j = 0; j < wa; j++) tr[j] = gr[j];
                for (uint32_t q = 1; q < k; q++)
                    for (uint32_t j = 0; j < wa; j++) tr[j] += gr[q * wa + j];
                break;
            case FL_EX_LOGSUMEXP:
                for (uint32_t j = 0; j < wa; j++) tr[j] = gr[j / k] * fl_exp(pa[j] - yr[j / k]);
                break;
            default: /* gather: a scatter-add */
                memset(tr, 0, wa * sizeof *tr);
                for (uint32_t j = 0; j < W; j++) tr[d->cols[j]] += gr[j];
                break;
            }
        }
        give(g, A, ga, t, d->rowwise, wa, wa, 0);
        return;
    }
    case FL_EX_SUM_ROWS: {
        if (!ga) return;
        const int add = first_or_add(A);
        for (uint32_t r = 0; r < g->rows; r++) {
            fl_real *q = ga + (size_t)r * A->w;
            for (uint32_t j = 0; j < W; j++) q[j] = add ? q[j] + G[j] : G[j];
        }
        return;
    }
    case FX_NET: {
        /* a net adds to din itself; a leaf input's gradient is dx or dc */
        fl_real *din = net_din(A, a, (size_t)g->rows * d->net_in);
        if (d->mlp) fl_mlp_backward(d->mlp, a->theta, a->dtheta, g->rows, G, din);
        else fl_conv_backward(d->conv, a->theta, a->dtheta, g->rows, G, din);
        return;
    }
    default: return;
    }
}

/* Nets i and i + 1 backward at once, one thread each; the second adds
 * its input gradient to its own buffer, summed into the input's after, so
 * the result is the same as one after the other. */
static void back_pair(fl_expr *g, uint32_t i, const fl_flow_bwd *a)
{
    node *d1 = &g->nd[i], *d2 = d1 + 1;
    node *A1 = &g->nd[d1->in[0]], *A2 = &g->nd[d2->in[0]];
    const uint32_t n = g->rows;
    for (node *d = d1; d <= d2; d++) /* one without a gradient this call: zero */
        if (!first_or_add(d)) memset(d->gbuf, 0, (size_t)n * d->w * sizeof *d->gbuf);
    fl_real *ga1 = net_din(A1, a, (size_t)n * d1->net_in);
    fl_real *ga2 = net_din(A2, a, (size_t)n * d2->net_in);
    fl_real *din2 = ga2 ? d2->pdin : NULL;
    if (din2) memset(din2, 0, (size_t)n * d2->net_in * sizeof *din2);
#pragma omp parallel sections if (n >= 64)
    {
#pragma omp section
        {
            if (d1->mlp) fl_mlp_backward(d1->mlp, a->theta, a->dtheta, n, d1->gp, ga1);
            else fl_conv_backward(d1->conv, a->theta, a->dtheta, n, d1->gp, ga1);
        }
#pragma omp section
        {
            if (d2->mlp) fl_mlp_backward(d2->mlp, a->theta, a->dtheta, n, d2->gp, din2);
            else fl_conv_backward(d2->conv, a->theta, a->dtheta, n, d2->gp, din2);
        }
    }
    if (din2)
        for (size_t k = 0; k < (size_t)n * d2->net_in; k++) ga2[k] += din2[k];
}

fl_status fl_expr_backward(fl_expr *g, const fl_flow_bwd *a)
{
    if (!g->compiled || !g->backward) {
        fl_host_table()->error(g->cx, "expression graph: backward of a graph compiled without "
                                      "it (FL_EX_NO_BACKWARD) or not compiled");
        return FL_ERR_INVALID;
    }
    if (a->n > g->max_rows) {
        fl_host_table()->error(g->cx, "expression graph called with %u rows, planned for %u",
                               a->n, g->max_rows);
        return FL_ERR_INVALID;
    }
    const uint32_t n = a->n;
    g->rows = n;
    g->theta = a->theta;
    for (uint32_t i = 0; i < g->n; i++) {
        node *d = &g->nd[i];
        if (d->leaf == FL_EX_INPUT) d->val = (fl_real *)a->x;
        else if (d->leaf == FL_EX_CONTEXT) d->val = (fl_real *)a->c;
        else if (d->leaf == FL_EX_THETA) d->val = (fl_real *)a->theta + d->off;
        d->gset = 0; /* no gradient yet: the first contribution stores */
    }
    if (n == 0) return FL_OK;
    if (g->y_alias) g->nd[g->y].val = (fl_real *)a->y;
    node *Y = &g->nd[g->y], *L = &g->nd[g->ld];
    if (Y->grad) give(g, Y, gdst(Y, a), a->dy, 1, g->dim, g->dim, 1);
    if (L->grad) give(g, L, gdst(L, a), a->dlogdet, 1, 1, 1, 1);
    for (uint32_t i = g->n; i-- > 0;) {
        node *d = &g->nd[i];
        if (d->leaf || !d->grad) continue;
        if (i > 0 && g->nd[i - 1].pair) { /* a pair of nets: side by side */
            if (d->gset || g->nd[i - 1].gset) back_pair(g, i - 1, a);
            i--;
        } else if (d->gset) { /* else nothing reached it: its gradient is zero */
            back_node(g, i, a);
        }
    }
    return FL_OK;
}
