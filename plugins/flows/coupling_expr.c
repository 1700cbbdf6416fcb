/* coupling_expr.c - Real NVP affine coupling (coupling.c's affine-coupling,
 * same keys and parameters) written on the host's expression service:
 *
 *   y_c = x_c,  y_t = x_t exp(s) + t,  s = b tanh(raw_s / b),  logdet = sum s
 *
 * with raw_s and t from MLPs of [x_c | context]. The host derives the
 * backward pass; the inverse is a second graph, x_t = (y_t - t) exp(-s). */
#include <stdlib.h>

#include <flowlab/flowlab.h>

static const fl_key keys[] = {
    { "hidden", FL_KEY_INT_LIST, "64,64", 1, 1 << 20, NULL,
      "hidden widths of the s and t networks" },
    { "activation", FL_KEY_ENUM, "relu", 0, 0, "relu|tanh|elu|softplus", "hidden activation" },
    { "mask", FL_KEY_ENUM, "alternate", 0, 0, "alternate|checkerboard|random",
      "conditioning split: halves swapping each layer, even/odd coordinates, or a seeded "
      "random half" },
    { "net", FL_KEY_ENUM, "separate", 0, 0, "separate|shared",
      "separate s and t networks, or one network with both outputs" },
    { "scale_bound", FL_KEY_REAL, "1", 0, 1e6, NULL,
      "s = b*tanh(raw/b) keeps the log-scale in [-b, b]; 0 = unbounded" },
    { "init", FL_KEY_ENUM, "fanin", 0, 0, "fanin|glorot", "network init (as affine-coupling)" },
    { "zero_init", FL_KEY_BOOL, "true", 0, 0, NULL, "start the networks' last layers at zero" },
};

/* perm = [conditioning coordinates | transformed ones], as coupling.c; returns their count. */
static uint32_t split(const fl_host *h, fl_ctx *cx, uint32_t D, uint32_t odd, uint32_t *perm)
{
    uint32_t k = 0, half = D / 2;
    int64_t mask = h->cfg_int(cx, "mask");
    for (uint32_t j = 0; j < D; j++) perm[j] = mask || !odd ? j : (j + half) % D;
    if (mask == 1) {
        for (uint32_t j = 0; j < D; j++)
            if ((j + odd) % 2 == 0) perm[k++] = j;
        for (uint32_t j = 0, c = k; j < D; j++)
            if ((j + odd) % 2 == 1) perm[c++] = j;
        return k;
    }
    fl_rng_key key = h->rng_key(cx, "mask");
    for (uint32_t j = D - 1; mask == 2 && j > 0; j--) { /* Fisher-Yates, as coupling.c */
        fl_real u;
        fl_rng_uniform(key, 0, j, 1, &u);
        uint32_t r = (uint32_t)(u * (fl_real)(j + 1)), t = perm[j];
        r = r > j ? j : r;
        perm[j] = perm[r];
        perm[r] = t;
    }
    return odd && !mask ? D - half : half;
}

/* One direction: y_t = x_t exp(s) + t forward, x_t = (y_t - t) exp(-s) inverse. */
static fl_status build(fl_ex e, const fl_flow_shape *sh, const uint32_t *perm, const uint32_t *back,
                       uint32_t dc, fl_mlp *snet, fl_mlp *tnet, double bound, int inv)
{
    uint32_t D = sh->dim, dt = D - dc;
    fl_node x = fl_ex_x(e), xc = fl_ex_gather(e, x, dc, perm);
    fl_node xt = fl_ex_gather(e, x, dt, perm + dc);
    fl_node in = sh->context_dim ? fl_ex_concat(e, xc, fl_ex_context(e)) : xc;
    fl_node s = fl_ex_mlp(e, snet, in);
    fl_node t = tnet ? fl_ex_mlp(e, tnet, in) : fl_ex_slice(e, s, dt, dt);
    s = tnet ? s : fl_ex_slice(e, s, 0, dt);
    if (bound > 0) /* s = b tanh(s / b) */
        s = fl_ex_mul(e, fl_ex_tanh(e, fl_ex_mul(e, s, fl_ex_const(e, 1 / bound))),
                      fl_ex_const(e, bound));
    fl_node yt = inv ? fl_ex_mul(e, fl_ex_sub(e, xt, t), fl_ex_exp(e, fl_ex_neg(e, s)))
                     : fl_ex_add(e, fl_ex_mul(e, xt, fl_ex_exp(e, s)), t);
    fl_node ld = fl_ex_sum(e, inv ? fl_ex_neg(e, s) : s);
    return fl_ex_compile(e, fl_ex_gather(e, fl_ex_concat(e, xc, yt), D, back), ld,
                         inv ? FL_EX_NO_BACKWARD : 0);
}

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    if (sh->dim < 2) {
        h->error(cx, "coupling needs dim >= 2 (got %u)", sh->dim);
        return FL_ERR_INVALID;
    }
    uint32_t *perm = calloc(2 * (size_t)sh->dim, sizeof *perm), *back = perm + sh->dim, hw[64];
    if (!perm) return FL_ERR_NOMEM;
    uint32_t dc = split(h, cx, sh->dim, sh->index & 1, perm), dt = sh->dim - dc;
    for (uint32_t j = 0; j < sh->dim; j++) back[perm[j]] = j;
    int64_t hid[64];
    size_t nh = h->cfg_int_list(cx, "hidden", hid, 64);
    for (size_t i = 0; i < nh && i < 64; i++) hw[i] = (uint32_t)hid[i];
    static const fl_act acts[] = { FL_ACT_RELU, FL_ACT_TANH, FL_ACT_ELU, FL_ACT_SOFTPLUS };
    int shared = h->cfg_int(cx, "net") == 1;
    fl_mlp_spec spec = { "s", dc + sh->context_dim, shared ? 2 * dt : dt,
                         nh > 64 ? 64 : (uint32_t)nh, hw,
                         acts[h->cfg_int(cx, "activation")],
                         h->cfg_int(cx, "init") == 0 ? FL_INIT_FANIN : FL_INIT_GLOROT,
                         h->cfg_bool(cx, "zero_init") ? FL_INIT_ZERO : FL_INIT_FANIN, NULL, NULL };
    fl_mlp *snet = h->mlp_create(cx, &spec, sh->max_rows), *tnet = NULL;
    spec.name = "t";
    if (snet && !shared) tnet = h->mlp_create(cx, &spec, sh->max_rows);
    double bound = h->cfg_real(cx, "scale_bound");
    fl_ex e = fl_ex_begin(h, cx, sh), v = fl_ex_begin(h, cx, sh);
    fl_status st = !snet || (!shared && !tnet) ? FL_ERR_INVALID
                   : build(e, sh, perm, back, dc, snet, tnet, bound, 0);
    if (st == FL_OK) st = build(v, sh, perm, back, dc, snet, tnet, bound, 1);
    free(perm);
    return st == FL_OK ? fl_ex_layer_make(e, e.g, v.g, self) : st;
}

FL_EX_FLOW_PLUGIN("flows-coupling-expr", "1.0.0", "affine-coupling-expr",
                  "affine-coupling on the expression service (same keys and parameters)", keys,
                  sizeof keys / sizeof keys[0],
                  FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE |
                      FL_FLOW_ACCEPTS_CONTEXT,
                  create)
