/*
 * flowlab/expr.h - the differentiable expression service (since 1.4): a
 * flow layer describes its forward map as a graph, and the host runs the
 * forward, the reverse-mode backward and, given a second graph, the inverse.
 *
 * In create the layer builds a graph over its input x (n x dim), its
 * context c (n x context_dim), slices of its parameters and constants, and
 * compiles it with two outputs: y (n x dim) and the per-row log-determinant
 * (n x 1). Its forward, backward and inverse are then one call each:
 *
 *   fl_ex e = fl_ex_begin(h, cx, sh);                 // in create
 *   fl_node x = fl_ex_x(e), a = fl_ex_param(e, &a_spec), b = fl_ex_param(e, &b_spec);
 *   fl_node y = fl_ex_add(e, fl_ex_mul(e, x, fl_ex_exp(e, a)), b);
 *   fl_status st = fl_ex_compile(e, y, fl_ex_sum(e, a), 0);  // message set on failure
 *   return st == FL_OK ? fl_ex_layer_make(e, e.g, NULL, self) : st;
 *
 * and the class's forward and backward are fl_ex_layer_forward and
 * fl_ex_layer_backward (or the layer's own functions calling
 * host->expr_forward(g, a) and host->expr_backward(g, a)).
 *
 * Nodes. A node is a matrix of `rows` x `width` numbers: rows is n (the
 * call's rows: x, c and what depends on them) or 1 (parameters, constants
 * and what depends only on them; broadcast over the rows). Element-wise
 * binary operations broadcast rows (1 against n) and columns (width 1
 * against width w), numpy style; other widths must match. A node's handle
 * (fl_node) is its index in the graph, from 0 in creation order; an input
 * must exist before the node that uses it, so the graph is acyclic by
 * construction.
 *
 * Errors are reported once. The first failing builder call records a
 * message naming its node ("node 7 (mul): widths 3 and 5 do not
 * broadcast") and returns FL_NODE_NONE; every later call given
 * FL_NODE_NONE returns it too, without a second message, and compile
 * returns FL_ERR_INVALID with the first message set through host->error.
 * So a create builds the whole graph and checks one status.
 *
 * Gradients. Every operation has its reverse-mode derivative, except
 * comparisons (their gradient is zero: they are steps), var and solve
 * (an inverse graph's numerical solve, which compile refuses on the path
 * of a differentiated output). min, max and where pass the gradient to the
 * branch they chose (min/max: to a on ties); abs has gradient 0 at 0.
 *
 * Domains are the user's: log, sqrt, pow, div give NaN or inf outside
 * theirs, as C does (pow(a, b) and its gradient need a > 0).
 *
 * Running. forward, backward and inverse take the flow call's argument
 * structs (flow.h), read theta, x (or the inverse's y) and c from them,
 * store y (the inverse's x), add the log-determinant, and in backward add
 * to dx, dtheta and dc (when not NULL) like a hand-written layer. All
 * buffers are allocated by compile, for the shape's max_rows rows: no call
 * allocates. Element-wise work uses flowlab/vmath.h's functions; rows are
 * split over OpenMP threads, and every sum (over columns, over rows, the
 * gradient of a broadcast input) runs in a fixed order, so results are
 * bit-identical for any thread count. Calls on one graph are serial;
 * distinct graphs may run at once (a graph's MLP or conv node uses that
 * network, so two graphs sharing one network must not run at once).
 *
 * Mixing with hand-written code. A layer may run a graph on its own
 * buffers (a copy of the call struct with x, y or theta pointing
 * elsewhere), read any node's values after a forward (expr_value), and do
 * the rest by hand; the graph's parameters are ordinary slices of theta.
 *
 * Inverses. A closed-form inverse is a second graph over the same
 * parameters (fl_ex_theta with the first graph's offsets, and the same
 * MLPs) whose input x stands for y, whose y output is x and whose
 * log-determinant output is log|det dx/dy|; compile it with
 * FL_EX_NO_BACKWARD and run it with expr_inverse. An element-wise
 * numerical inverse is a solve node in that graph: fl_ex_var(e, w) is an
 * unknown v (n x w), f a graph of v built from element-wise operations
 * only, increasing in v element by element, and fl_ex_solve(e, v, f,
 * target, lo, hi, tol) the v with f(v) = target, found by bisection in the
 * bracket [lo, hi] (widened by doubling where the root lies outside) until
 * the bracket is below tol (1 + |v|) or fl_real's resolution. After the
 * solve, v and the nodes of f hold their values at the solution, so the
 * inverse's log-determinant can reuse f's derivative terms.
 *
 * Thread-safety and tags: see each fl_host member (host.h): building and
 * compiling are [create], running is [any].
 */
#ifndef FLOWLAB_EXPR_H
#define FLOWLAB_EXPR_H

#include <stdlib.h>

#include "flow.h"
#include "host.h"
#include "plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The inline helpers below are C: their casts are not for C++'s cast
 * warnings (as in vmath.h). */
#if defined(__cplusplus) && defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wold-style-cast"
#elif defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wuseless-cast"
#endif

/* fl_node (host.h): a node's index, >= 0, or FL_NODE_NONE after a failure. */
#define FL_NODE_NONE (-1)

/* Leaves (expr_leaf). since 1.4 */
typedef enum fl_expr_leaf {
    FL_EX_INPUT = 1,   /* x: n x dim (the inverse graph's y) */
    FL_EX_CONTEXT = 2, /* c: n x context_dim (needs a context) */
    FL_EX_THETA = 3,   /* theta[offset .. offset+width): 1 x width */
    FL_EX_CONST = 4,   /* 1 x width values, copied */
    FL_EX_VAR = 5      /* the unknown of a solve: n x width (inverse graphs) */
} fl_expr_leaf;

/* Operations (expr_op). a, b, c are its inputs (FL_NODE_NONE where
 * unused); `k` its integer argument. since 1.4 */
typedef enum fl_expr_op {
    /* element-wise, one input a */
    FL_EX_NEG = 1,
    FL_EX_EXP = 2,
    FL_EX_LOG = 3,
    FL_EX_LOG1P = 4,
    FL_EX_EXPM1 = 5,
    FL_EX_TANH = 6,
    FL_EX_SIGMOID = 7,
    FL_EX_SOFTPLUS = 8,   /* log(1 + e^a) */
    FL_EX_LOGSIGMOID = 9, /* log sigmoid(a) = -softplus(-a) */
    FL_EX_ABS = 10,
    FL_EX_SQRT = 11,
    FL_EX_SQUARE = 12,
    FL_EX_RECIP = 13,     /* 1 / a */
    /* element-wise, two inputs a, b, broadcast */
    FL_EX_ADD = 32,
    FL_EX_SUB = 33,
    FL_EX_MUL = 34,
    FL_EX_DIV = 35,
    FL_EX_POW = 36,       /* a^b */
    FL_EX_MIN = 37,
    FL_EX_MAX = 38,
    FL_EX_LT = 39,        /* 1 where a < b, else 0; no gradient */
    FL_EX_LE = 40,
    FL_EX_GT = 41,
    FL_EX_GE = 42,
    /* three inputs: c != 0 ? a : b, broadcast */
    FL_EX_WHERE = 48,
    /* columns */
    FL_EX_CONCAT = 64,    /* [a | b]: widths add, rows broadcast */
    FL_EX_REPEAT = 65,    /* each column of a k times: width w k, column j k + i = a's j */
    FL_EX_TILE = 66,      /* a's row k times: width w k, column i w + j = a's j */
    /* reductions */
    FL_EX_SUM = 80,       /* sums of groups of k consecutive columns (k = 0: the whole
                             row): width w / k */
    FL_EX_LOGSUMEXP = 81, /* log sum exp of groups of k columns, as SUM */
    FL_EX_SUM_ROWS = 82   /* sum over the rows: 1 x w */
} fl_expr_op;

/* Flags of expr_compile. since 1.4 */
enum {
    /* The graph is run by expr_forward or expr_inverse only, never
     * differentiated (an inverse graph): no gradient buffers, and var and
     * solve nodes are allowed. */
    FL_EX_NO_BACKWARD = 1u << 0
};

/* A graph being built by a layer's create: the host table, the create's
 * context and the graph, passed by value to the fl_ex_* helpers below
 * (inline calls of the host members; nothing here is linked). */
typedef struct fl_ex {
    const fl_host *h;
    fl_ctx *cx;
    fl_expr *g;  /* NULL when expr_new failed: every helper then returns FL_NODE_NONE */
} fl_ex;

/* A new graph for the flow layer of `sh` (inside its create). */
static inline fl_ex fl_ex_begin(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh)
{
    fl_ex e;
    e.h = h;
    e.cx = cx;
    e.g = h->expr_new(cx, sh);
    return e;
}

/* Leaves. fl_ex_param requests the parameter (host->param) and returns
 * its node; *off, when given, receives its offset (for fl_ex_theta in an
 * inverse graph, or hand-written code). */
static inline fl_node fl_ex_x(fl_ex e) { return e.h->expr_leaf(e.g, FL_EX_INPUT, 0, 0, NULL); }
static inline fl_node fl_ex_context(fl_ex e)
{
    return e.h->expr_leaf(e.g, FL_EX_CONTEXT, 0, 0, NULL);
}
static inline fl_node fl_ex_theta(fl_ex e, size_t offset, uint32_t width)
{
    return e.h->expr_leaf(e.g, FL_EX_THETA, width, offset, NULL);
}
static inline fl_node fl_ex_param_at(fl_ex e, const fl_param_spec *spec, size_t *off)
{
    size_t o = 0;
    if (!e.g || e.h->param(e.cx, spec, &o) != FL_OK) /* a node that reports the refusal */
        return e.h->expr_leaf(e.g, FL_EX_THETA, 0, 0, NULL);
    if (off) *off = o;
    return e.h->expr_leaf(e.g, FL_EX_THETA, (uint32_t)spec->size, o, NULL);
}
static inline fl_node fl_ex_param(fl_ex e, const fl_param_spec *spec)
{
    return fl_ex_param_at(e, spec, NULL);
}
static inline fl_node fl_ex_consts(fl_ex e, uint32_t width, const fl_real *values)
{
    return e.h->expr_leaf(e.g, FL_EX_CONST, width, 0, values);
}
static inline fl_node fl_ex_const(fl_ex e, double v)
{
    fl_real r = (fl_real)v;
    return e.h->expr_leaf(e.g, FL_EX_CONST, 1, 0, &r);
}
static inline fl_node fl_ex_var(fl_ex e, uint32_t width)
{
    return e.h->expr_leaf(e.g, FL_EX_VAR, width, 0, NULL);
}

/* Operations. */
static inline fl_node fl_ex_op(fl_ex e, fl_expr_op op, fl_node a, fl_node b, fl_node c, uint32_t k)
{
    return e.h->expr_op(e.g, op, a, b, c, k);
}
#define FL_EX_UNARY_(fn, OP)                                                       \
    static inline fl_node fl_ex_##fn(fl_ex e, fl_node a)                           \
    {                                                                              \
        return e.h->expr_op(e.g, OP, a, FL_NODE_NONE, FL_NODE_NONE, 0);            \
    }
#define FL_EX_BINARY_(fn, OP)                                                      \
    static inline fl_node fl_ex_##fn(fl_ex e, fl_node a, fl_node b)                \
    {                                                                              \
        return e.h->expr_op(e.g, OP, a, b, FL_NODE_NONE, 0);                       \
    }
FL_EX_UNARY_(neg, FL_EX_NEG)
FL_EX_UNARY_(exp, FL_EX_EXP)
FL_EX_UNARY_(log, FL_EX_LOG)
FL_EX_UNARY_(log1p, FL_EX_LOG1P)
FL_EX_UNARY_(expm1, FL_EX_EXPM1)
FL_EX_UNARY_(tanh, FL_EX_TANH)
FL_EX_UNARY_(sigmoid, FL_EX_SIGMOID)
FL_EX_UNARY_(softplus, FL_EX_SOFTPLUS)
FL_EX_UNARY_(logsigmoid, FL_EX_LOGSIGMOID)
FL_EX_UNARY_(abs, FL_EX_ABS)
FL_EX_UNARY_(sqrt, FL_EX_SQRT)
FL_EX_UNARY_(square, FL_EX_SQUARE)
FL_EX_UNARY_(recip, FL_EX_RECIP)
FL_EX_UNARY_(sum_rows, FL_EX_SUM_ROWS)
FL_EX_BINARY_(add, FL_EX_ADD)
FL_EX_BINARY_(sub, FL_EX_SUB)
FL_EX_BINARY_(mul, FL_EX_MUL)
FL_EX_BINARY_(div, FL_EX_DIV)
FL_EX_BINARY_(pow, FL_EX_POW)
FL_EX_BINARY_(min, FL_EX_MIN)
FL_EX_BINARY_(max, FL_EX_MAX)
FL_EX_BINARY_(lt, FL_EX_LT)
FL_EX_BINARY_(le, FL_EX_LE)
FL_EX_BINARY_(gt, FL_EX_GT)
FL_EX_BINARY_(ge, FL_EX_GE)
FL_EX_BINARY_(concat, FL_EX_CONCAT)
#undef FL_EX_UNARY_
#undef FL_EX_BINARY_
static inline fl_node fl_ex_where(fl_ex e, fl_node cond, fl_node a, fl_node b)
{
    return e.h->expr_op(e.g, FL_EX_WHERE, a, b, cond, 0);
}
/* log(e^a + e^b), without overflow: max(a, b) + softplus(-|a - b|) */
static inline fl_node fl_ex_logaddexp(fl_ex e, fl_node a, fl_node b)
{
    fl_node m = fl_ex_max(e, a, b);
    return fl_ex_add(e, m, fl_ex_softplus(e, fl_ex_neg(e, fl_ex_abs(e, fl_ex_sub(e, a, b)))));
}
/* min(max(a, lo), hi) */
static inline fl_node fl_ex_clamp(fl_ex e, fl_node a, double lo, double hi)
{
    return fl_ex_min(e, fl_ex_max(e, a, fl_ex_const(e, lo)), fl_ex_const(e, hi));
}
/* Row sums (n x 1), and sums or log-sum-exps of groups of k columns. */
static inline fl_node fl_ex_sum(fl_ex e, fl_node a)
{
    return e.h->expr_op(e.g, FL_EX_SUM, a, FL_NODE_NONE, FL_NODE_NONE, 0);
}
static inline fl_node fl_ex_sum_groups(fl_ex e, fl_node a, uint32_t k)
{
    return e.h->expr_op(e.g, FL_EX_SUM, a, FL_NODE_NONE, FL_NODE_NONE, k);
}
static inline fl_node fl_ex_logsumexp(fl_ex e, fl_node a, uint32_t k)
{
    return e.h->expr_op(e.g, FL_EX_LOGSUMEXP, a, FL_NODE_NONE, FL_NODE_NONE, k);
}
static inline fl_node fl_ex_repeat(fl_ex e, fl_node a, uint32_t k)
{
    return e.h->expr_op(e.g, FL_EX_REPEAT, a, FL_NODE_NONE, FL_NODE_NONE, k);
}
static inline fl_node fl_ex_tile(fl_ex e, fl_node a, uint32_t k)
{
    return e.h->expr_op(e.g, FL_EX_TILE, a, FL_NODE_NONE, FL_NODE_NONE, k);
}
/* Columns: a's columns start .. start+width-1, or cols[0 .. width-1]. */
static inline fl_node fl_ex_slice(fl_ex e, fl_node a, uint32_t start, uint32_t width)
{
    return e.h->expr_gather(e.g, a, width, NULL, start);
}
static inline fl_node fl_ex_gather(fl_ex e, fl_node a, uint32_t width, const uint32_t *cols)
{
    return e.h->expr_gather(e.g, a, width, cols, 0);
}
static inline fl_node fl_ex_mlp(fl_ex e, fl_mlp *m, fl_node in)
{
    return e.h->expr_net(e.g, m, NULL, in);
}
static inline fl_node fl_ex_conv(fl_ex e, fl_conv *c, fl_node in)
{
    return e.h->expr_net(e.g, NULL, c, in);
}
static inline fl_node fl_ex_solve(fl_ex e, fl_node var, fl_node f, fl_node target, double lo,
                                  double hi, double tol)
{
    return e.h->expr_solve(e.g, var, f, target, lo, hi, tol);
}
/* Compiles with outputs y (n x dim) and logdet (one number per row). */
static inline fl_status fl_ex_compile(fl_ex e, fl_node y, fl_node logdet, uint32_t flags)
{
    return e.h->expr_compile(e.g, y, logdet, flags);
}

/* A layer that is all graph: a forward graph (differentiated) and an
 * inverse graph (or NULL). fl_ex_layer_make, in create, allocates the
 * instance; the four functions below are the class's destroy, forward,
 * backward and inverse:
 *
 *   .create = my_create, .destroy = fl_ex_layer_destroy,
 *   .forward = fl_ex_layer_forward, .backward = fl_ex_layer_backward,
 *   .inverse = fl_ex_layer_inverse,
 */
typedef struct fl_ex_layer {
    const fl_host *h;
    fl_expr *fwd, *inv;
} fl_ex_layer;

/* *self = a new fl_ex_layer of the two graphs; FL_ERR_NOMEM (message set). */
static inline fl_status fl_ex_layer_make(fl_ex e, fl_expr *fwd, fl_expr *inv, void **self)
{
    fl_ex_layer *l = (fl_ex_layer *)malloc(sizeof *l);
    if (!l) {
        e.h->error(e.cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    l->h = e.h;
    l->fwd = fwd;
    l->inv = inv;
    *self = l;
    return FL_OK;
}
static inline void fl_ex_layer_destroy(void *self) { free(self); }
static inline fl_status fl_ex_layer_forward(void *self, const fl_flow_fwd *a)
{
    const fl_ex_layer *l = (const fl_ex_layer *)self;
    return l->h->expr_forward(l->fwd, a);
}
static inline fl_status fl_ex_layer_backward(void *self, const fl_flow_bwd *a)
{
    const fl_ex_layer *l = (const fl_ex_layer *)self;
    return l->h->expr_backward(l->fwd, a);
}
static inline fl_status fl_ex_layer_inverse(void *self, const fl_flow_inv *a)
{
    const fl_ex_layer *l = (const fl_ex_layer *)self;
    return l->h->expr_inverse(l->inv, a);
}

/* A whole plugin of one flow layer that is all graph: its class (named
 * name_, with the key table keys_ of n_keys_ keys, FL_FLOW_* flags_ and
 * the create function create_, which ends with fl_ex_layer_make), its init
 * and its entry (FL_PLUGIN(plugin_, version_, ...)). For C plugins. */
#define FL_EX_FLOW_PLUGIN(plugin_, version_, name_, summary_, keys_, n_keys_, flags_, create_) \
    static const fl_flow_class fl_ex_class_ = {                                             \
        { sizeof(fl_flow_class), name_, summary_, keys_, n_keys_ },                        \
        flags_, create_, fl_ex_layer_destroy, fl_ex_layer_forward, fl_ex_layer_backward,   \
        (flags_) & FL_FLOW_HAS_INVERSE ? fl_ex_layer_inverse : NULL, NULL };               \
    static fl_status fl_ex_init_(const fl_host *host_, fl_registrar *r_)                  \
    {                                                                                      \
        (void)host_;                                                                       \
        return r_->add(r_, FL_KIND_FLOW, &fl_ex_class_.base);                              \
    }                                                                                      \
    FL_PLUGIN(plugin_, version_, fl_ex_init_)

#if defined(__cplusplus) && defined(__clang__)
#pragma clang diagnostic pop
#elif defined(__cplusplus) && defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLOWLAB_EXPR_H */
