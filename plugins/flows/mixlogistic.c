/* mixlogistic.c - Flow++'s logistic-mixture-CDF coupling (Ho et al. 2019),
 * on the host's expression service. With x_c the conditioning half (halves
 * swapping each layer) and, per transformed coordinate, K components:
 *   y_t = exp(a) logit(F(x_t)) + b,  F(x) = sum_k pi_k sigmoid((x - mu_k) exp(-l_k))
 * (+ x_t/20, below), pi (softmax), mu, l in [-5, 5], a = tanh(a_raw) and b from one
 * MLP of [x_c | context]. The inverse solves for x_t by bisection. */
#include <flowlab/flowlab.h>

static const fl_key keys[] = {
    { "components", FL_KEY_INT, "4", 1, 256, NULL, "logistics in each coordinate's mixture" },
    { "hidden", FL_KEY_INT_LIST, "64,64", 1, 1 << 20, NULL, "hidden widths of the network" },
};

/* z = logit F(v) + v/20 into *z (the small linear leak keeps z strictly increasing where
 * separated steep components would leave float plateaus); returns log dz/dv. */
static fl_node mixture(fl_ex e, fl_node v, fl_node lpi, fl_node mu, fl_node l, uint32_t K,
                       fl_node *z)
{
    fl_node u = fl_ex_mul(e, fl_ex_sub(e, fl_ex_repeat(e, v, K), mu),
                          fl_ex_exp(e, fl_ex_neg(e, l)));
    fl_node lp = fl_ex_logsigmoid(e, u), ln = fl_ex_logsigmoid(e, fl_ex_neg(e, u));
    fl_node lF = fl_ex_logsumexp(e, fl_ex_add(e, lpi, lp), K);
    fl_node l1F = fl_ex_logsumexp(e, fl_ex_add(e, lpi, ln), K);
    fl_node lpdf = fl_ex_logsumexp(e, fl_ex_sub(e, fl_ex_add(e, lpi, fl_ex_add(e, lp, ln)), l), K);
    *z = fl_ex_add(e, fl_ex_sub(e, lF, l1F), fl_ex_mul(e, v, fl_ex_const(e, 0.05)));
    fl_node d = fl_ex_sub(e, lpdf, fl_ex_add(e, lF, l1F));
    return fl_ex_logaddexp(e, d, fl_ex_const(e, -2.99573227)); /* log(e^d + 1/20) */
}

/* x_c = x[c0, c0 + dc), x_t the rest: the first or the second half. */
static fl_status build(fl_ex e, const fl_flow_shape *sh, uint32_t c0, uint32_t dc, fl_mlp *m,
                       uint32_t K, int inv)
{
    uint32_t D = sh->dim, dt = D - dc, dk = dt * K;
    fl_node x = fl_ex_x(e), xc = fl_ex_slice(e, x, c0, dc);
    fl_node xt = fl_ex_slice(e, x, c0 ? 0 : dc, dt), z, ld, yt;
    fl_node p = fl_ex_mlp(e, m, sh->context_dim ? fl_ex_concat(e, xc, fl_ex_context(e)) : xc);
    fl_node lg = fl_ex_slice(e, p, 0, dk), mu = fl_ex_slice(e, p, dk, dk);
    fl_node l = fl_ex_clamp(e, fl_ex_slice(e, p, 2 * dk, dk), -5, 5);
    fl_node a = fl_ex_tanh(e, fl_ex_slice(e, p, 3 * dk, dt));
    fl_node b = fl_ex_slice(e, p, 3 * dk + dt, dt);
    fl_node lpi = fl_ex_sub(e, lg, fl_ex_repeat(e, fl_ex_logsumexp(e, lg, K), K));
    if (!inv) {
        ld = fl_ex_add(e, mixture(e, xt, lpi, mu, l, K, &z), a);
        yt = fl_ex_add(e, fl_ex_mul(e, z, fl_ex_exp(e, a)), b);
    } else {
        fl_node v = fl_ex_var(e, dt);
        fl_node t = fl_ex_mul(e, fl_ex_sub(e, xt, b), fl_ex_exp(e, fl_ex_neg(e, a)));
        ld = fl_ex_neg(e, fl_ex_add(e, mixture(e, v, lpi, mu, l, K, &z), a));
        yt = fl_ex_solve(e, v, z, t, -8, 8, 1e-12);
    }
    fl_node y = c0 ? fl_ex_concat(e, yt, xc) : fl_ex_concat(e, xc, yt);
    return fl_ex_compile(e, y, fl_ex_sum(e, ld), inv ? FL_EX_NO_BACKWARD : 0);
}

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    uint32_t D = sh->dim, half = D / 2, odd = sh->index & 1, dc = odd ? D - half : half, hw[64];
    uint32_t K = (uint32_t)h->cfg_int(cx, "components"), c0 = odd ? half : 0;
    int64_t hid[64];
    size_t nh = h->cfg_int_list(cx, "hidden", hid, 64);
    for (size_t i = 0; i < nh && i < 64; i++) hw[i] = (uint32_t)hid[i];
    fl_mlp_spec spec = { "net", dc + sh->context_dim, (D - dc) * (3 * K + 2),
                         nh > 64 ? 64 : (uint32_t)nh, hw, FL_ACT_RELU, FL_INIT_FANIN,
                         FL_INIT_ZERO, NULL, NULL };
    if (D < 2) h->error(cx, "a coupling needs dim >= 2 (got %u)", D);
    fl_mlp *m = D < 2 ? NULL : h->mlp_create(cx, &spec, sh->max_rows);
    if (!m) return FL_ERR_INVALID;
    fl_ex e = fl_ex_begin(h, cx, sh), v = fl_ex_begin(h, cx, sh);
    fl_status st = build(e, sh, c0, dc, m, K, 0);
    if (st == FL_OK) st = build(v, sh, c0, dc, m, K, 1);
    return st == FL_OK ? fl_ex_layer_make(e, e.g, v.g, self) : st;
}

FL_EX_FLOW_PLUGIN("flows-mixlogistic", "1.0.0", "mixlogistic-coupling",
                  "Flow++ coupling: y_t = exp(a) logit(mixture of K logistic CDFs of x_t) + b",
                  keys, 2, FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_ACCEPTS_CONTEXT,
                  create)
