/* planar_expr.c - the planar flow of planar.c (Rezende & Mohamed 2015),
 * global parameters only, written on the host's expression service: the
 * host derives the backward pass, and the inverse is a bisection solve.
 *
 *   y = x + u^ tanh(w.x + b),  u^ = u + (m - w.u) w/|w|^2,  m = softplus(w.u) - 1
 *   logdet = log(tanh^2 a + softplus(w.u) sech^2 a),  a = w.x + b
 *
 * The inverse solves s + m tanh(s + b) = w.y for s = w.x (increasing in s
 * since m > -1), then x = y - u^ tanh(s + b). */
#include <math.h>

#include <flowlab/flowlab.h>

/* u^ (1 x d) and softplus(w.u) from the parameters at off[0..2]. */
static fl_node params(fl_ex e, const size_t *off, uint32_t d, fl_node *w, fl_node *b,
                      fl_node *mp1)
{
    fl_node u = fl_ex_theta(e, off[0], d), one = fl_ex_const(e, 1);
    *w = fl_ex_theta(e, off[1], d);
    *b = fl_ex_theta(e, off[2], 1);
    fl_node wu = fl_ex_sum(e, fl_ex_mul(e, u, *w));
    fl_node ww = fl_ex_max(e, fl_ex_sum(e, fl_ex_square(e, *w)), fl_ex_const(e, 1e-30));
    *mp1 = fl_ex_softplus(e, wu);
    fl_node k = fl_ex_div(e, fl_ex_sub(e, fl_ex_softplus(e, fl_ex_neg(e, wu)), one), ww);
    return fl_ex_add(e, u, fl_ex_mul(e, k, *w));
}

/* tanh(a) = p - q into *t; returns log(t^2 + mp1 sech^2 a), sech^2 a = 4 p q, where
 * p = sigmoid(2a), q = sigmoid(-2a) (two exps, no cancellation in q or p for large |a|). */
static fl_node logdet(fl_ex e, fl_node a, fl_node mp1, fl_node *t)
{
    fl_node a2 = fl_ex_add(e, a, a), p = fl_ex_sigmoid(e, a2), q = fl_ex_sigmoid(e, fl_ex_neg(e, a2));
    *t = fl_ex_sub(e, p, q);
    fl_node s4 = fl_ex_mul(e, fl_ex_mul(e, fl_ex_const(e, 4), mp1), fl_ex_mul(e, p, q));
    return fl_ex_log(e, fl_ex_add(e, fl_ex_square(e, *t), s4));
}

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    uint32_t d = sh->dim;
    /* initial values as planar.c's (the same names give the same numbers) */
    fl_param_spec spec[3] = { { "u", d, FL_INIT_NORMAL, 0, 0, 0.1, 0 },
                              { "w", d, FL_INIT_NORMAL, 0, 0, 2 / sqrt(d), 0 },
                              { "b", 1, FL_INIT_NORMAL, 0, 0, 1, 0 } };
    size_t off[3];
    fl_status st = FL_OK;
    for (int i = 0; i < 3 && st == FL_OK; i++) st = h->param(cx, &spec[i], &off[i]);
    fl_ex e = fl_ex_begin(h, cx, sh), v = fl_ex_begin(h, cx, sh);
    fl_node w, b, mp1, t, wv, bv, mv, tv;
    fl_node uh = params(e, off, d, &w, &b, &mp1), x = fl_ex_x(e);
    fl_node ld = logdet(e, fl_ex_add(e, fl_ex_sum(e, fl_ex_mul(e, w, x)), b), mp1, &t);
    if (st == FL_OK) st = fl_ex_compile(e, fl_ex_add(e, x, fl_ex_mul(e, uh, t)), ld, 0);
    /* the inverse graph: s solves s + (mp1 - 1) tanh(s + b) = w.y */
    fl_node uv = params(v, off, d, &wv, &bv, &mv), y = fl_ex_x(v), s = fl_ex_var(v, 1);
    fl_node lv = logdet(v, fl_ex_add(v, s, bv), mv, &tv);
    fl_node m = fl_ex_sub(v, mv, fl_ex_const(v, 1));
    fl_node sol = fl_ex_solve(v, s, fl_ex_add(v, s, fl_ex_mul(v, m, tv)),
                              fl_ex_sum(v, fl_ex_mul(v, wv, y)), -1, 1, 1e-12);
    (void)sol; /* tv and lv hold their values at the solution */
    if (st == FL_OK)
        st = fl_ex_compile(v, fl_ex_sub(v, y, fl_ex_mul(v, uv, tv)), fl_ex_neg(v, lv),
                           FL_EX_NO_BACKWARD);
    return st == FL_OK ? fl_ex_layer_make(e, e.g, v.g, self) : st;
}

FL_EX_FLOW_PLUGIN("flows-planar-expr", "1.0.0", "planar-expr",
                  "planar flow on the expression service (as planar, global parameters)", NULL, 0,
                  FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD, create)
