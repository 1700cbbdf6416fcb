/* net.c - the vae task's encoder and decoder networks: an MLP ([encoder]
 * net = mlp, the default) or a convolutional ResNet through the host's
 * conv service (net = conv), the architecture of the IAF paper's image
 * models.
 *
 * Conv encoder, on the data set's c x h x w images (NHWC rows):
 *   3x3 (c -> C), then per level: `blocks` ResNet blocks, 3x3 stride 2
 *   (C -> C); an activation; one dense layer (features -> out).
 * Conv decoder, from z:
 *   dense (z -> C x h0 x w0, h0 = h / 2^levels), an activation, then per
 *   level: `blocks` ResNet blocks and a nearest-neighbour 2x upsampling;
 *   at full resolution `blocks` ResNet blocks, an activation and a 3x3
 *   convolution to Q/D channels; plus one trained bias per output (Q),
 *   which starts at the likelihood's init_bias of the data mean, as the MLP
 *   decoder's output bias does.
 * Each is one conv net of the service (the decoder's upsampling is its
 * FL_CONV_UPSAMPLE, ABI 1.4); the dense layers are MLPs of the MLP service.
 *
 * Output layout: the conv decoder's last convolution gives Q/D channels per
 * pixel (NHWC); likelihoods take their parameters in blocks of D (all
 * means, then all log-scales), so with Q/D > 1 the channels are transposed
 * into blocks (and back in the backward). */
#include "tasks/vae/vae.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute/conv.h"
#include "core/log.h"
#include "core/util.h"

/* A user error about `key` of [section], with the file and line. */
static fl_status key_error(fl_experiment *e, const char *section, const char *key,
                           const char *msg)
{
    const fl_cfg_section *sec = fl_config_section(e->cfg, section);
    const fl_cfg_entry *ce = sec ? fl_config_entry(sec, key) : NULL;
    char where[512];
    if (ce) fl_config_where(e->cfg, sec, ce, where, sizeof where);
    else snprintf(where, sizeof where, "%s", e->cfg->path);
    fl_err("%s: [%s] %s: %s", where, section, key, msg);
    return FL_ERR_INVALID;
}

static fl_act act_of(const fl_values *v)
{
    const char *a = fl_values_get(v, "act")->text;
    return strcmp(a, "relu") == 0 ? FL_ACT_RELU
         : strcmp(a, "elu") == 0 ? FL_ACT_ELU
         : strcmp(a, "softplus") == 0 ? FL_ACT_SOFTPLUS
                                     : FL_ACT_TANH;
}

/* y = act(x) over m numbers (relu, elu, tanh: the conv nets' activations). */
static void act_fwd(fl_act a, size_t m, const fl_real *x, fl_real *y)
{
#pragma omp parallel for schedule(static) if (m > 65536)
    for (size_t i = 0; i < m; i++) {
        fl_real t = x[i];
        y[i] = a == FL_ACT_RELU ? (t > 0 ? t : 0)
             : a == FL_ACT_ELU ? (t > 0 ? t : expm1(t))
                               : tanh(t);
    }
}

/* dx = dy * act'(x), y = act(x) (written). */
static void act_bwd(fl_act a, size_t m, const fl_real *x, const fl_real *y, const fl_real *dy,
                    fl_real *dx)
{
#pragma omp parallel for schedule(static) if (m > 65536)
    for (size_t i = 0; i < m; i++) {
        fl_real d = a == FL_ACT_RELU ? (x[i] > 0 ? 1 : 0)
                  : a == FL_ACT_ELU ? (x[i] > 0 ? 1 : y[i] + 1)
                                    : 1 - y[i] * y[i];
        dx[i] = dy[i] * d;
    }
}

#define NET_ALLOC(ptr, count)                                                             \
    do {                                                                                  \
        (ptr) = fl_alloc((size_t)(count) * sizeof(fl_real));                              \
        if (!(ptr)) return FL_ERR_NOMEM;                                                  \
    } while (0)

static fl_status make_conv_enc(fl_vae_net *p, const char *section, uint32_t max_rows)
{
    const fl_host *H = fl_host_table();
    const uint32_t C = p->ch, lv = p->levels, nb = p->blocks;
    fl_conv_layer L[2 + FL_VAE_MAX_LEVELS * (FL_VAE_MAX_BLOCKS + 1)];
    uint32_t nl = 0;
    L[nl++] = (fl_conv_layer){ FL_CONV_3X3, C, 1, FL_ACT_LINEAR };
    for (uint32_t l = 0; l < lv; l++) {
        for (uint32_t b = 0; b < nb; b++) L[nl++] = (fl_conv_layer){ FL_CONV_RESNET, 0, 1, p->act };
        L[nl++] = (fl_conv_layer){ FL_CONV_3X3, C, 2, FL_ACT_LINEAR };
    }
    L[nl++] = (fl_conv_layer){ FL_CONV_ACT, 0, 0, p->act };
    fl_conv_spec cs = { sizeof cs, "conv", p->img_c, p->img_h, p->img_w, nl, L,
                        p->wn ? FL_CONV_WEIGHT_NORM : 0u, NULL };
    p->conv_net = H->conv_create(p->cx, &cs, max_rows);
    if (!p->conv_net) return fl_comp_fail(FL_ERR_INVALID, "[%s] cannot create the conv net", section);
    uint32_t oc, oh, ow;
    fl_conv_out_shape(p->conv_net, &oc, &oh, &ow);
    p->feat = oc * oh * ow;
    fl_mlp_spec ms = { "head", p->feat, p->out, 0, NULL, FL_ACT_LINEAR, FL_INIT_GLOROT,
                       FL_INIT_GLOROT, NULL, NULL };
    p->m = H->mlp_create(p->cx, &ms, max_rows);
    if (!p->m) return fl_comp_fail(FL_ERR_INVALID, "[%s] cannot create the dense layer", section);
    NET_ALLOC(p->f, (size_t)max_rows * p->feat);
    NET_ALLOC(p->df, (size_t)max_rows * p->feat);
    return FL_OK;
}

static fl_status make_conv_dec(fl_experiment *e, fl_vae_net *p, const char *section,
                               const fl_real *out_bias, uint32_t max_rows)
{
    const fl_host *H = fl_host_table();
    const uint32_t C = p->ch, lv = p->levels, nb = p->blocks, D = p->img_c * p->img_h * p->img_w;
    if (p->out % D)
        return key_error(e, section, "net",
                         "a conv decoder needs a likelihood whose parameters come in whole "
                         "images (a multiple of the data dimension)");
    p->qc = p->out / D;
    const uint32_t h0 = p->img_h >> lv, w0 = p->img_w >> lv;
    if ((h0 << lv) != p->img_h || (w0 << lv) != p->img_w || h0 == 0 || w0 == 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "the images (%u x %u) do not halve %u times (levels = %u); "
                 "lower levels", p->img_h, p->img_w, lv, lv);
        return key_error(e, section, "levels", msg);
    }
    p->feat = C * h0 * w0;
    fl_mlp_spec ms = { "head", p->in, p->feat, 0, NULL, FL_ACT_LINEAR, FL_INIT_GLOROT,
                       FL_INIT_GLOROT, NULL, NULL };
    p->m = H->mlp_create(p->cx, &ms, max_rows);
    if (!p->m) return fl_comp_fail(FL_ERR_INVALID, "[%s] cannot create the dense layer", section);
    NET_ALLOC(p->f, (size_t)max_rows * p->feat);  /* pre-activation */
    NET_ALLOC(p->df, (size_t)max_rows * p->feat); /* activated: the conv net's input */
    NET_ALLOC(p->g0, (size_t)max_rows * p->feat); /* its gradient */
    fl_conv_layer L[(FL_VAE_MAX_LEVELS + 1) * (FL_VAE_MAX_BLOCKS + 1) + 2];
    uint32_t nl = 0;
    for (uint32_t s = 0; s <= lv; s++) {
        for (uint32_t b = 0; b < nb; b++) L[nl++] = (fl_conv_layer){ FL_CONV_RESNET, 0, 1, p->act };
        if (s < lv) L[nl++] = (fl_conv_layer){ FL_CONV_UPSAMPLE, 0, 0, FL_ACT_LINEAR };
    }
    L[nl++] = (fl_conv_layer){ FL_CONV_ACT, 0, 0, p->act };
    L[nl++] = (fl_conv_layer){ FL_CONV_3X3, p->qc, 1, FL_ACT_LINEAR };
    fl_conv_spec cs = { sizeof cs, "conv", C, h0, w0, nl, L, p->wn ? FL_CONV_WEIGHT_NORM : 0u,
                        NULL };
    p->conv_net = H->conv_create(p->cx, &cs, max_rows);
    if (!p->conv_net) return fl_comp_fail(FL_ERR_INVALID, "[%s] cannot create the conv net", section);
    if (p->qc > 1) NET_ALLOC(p->y, (size_t)max_rows * p->out);
    /* One bias per output, in the likelihood's layout. */
    char *full = fl_strfmt("%s.bias", p->cx->path);
    fl_param_spec bs = { "bias", p->out, FL_INIT_ZERO, 0, 0, 0, 0 };
    size_t abs;
    fl_status st = full ? fl_arena_request(p->cx->arena, full, &bs, out_bias, &abs) : FL_ERR_NOMEM;
    free(full);
    if (st != FL_OK) return st;
    p->bias_off = abs - p->cx->block;
    return FL_OK;
}

fl_status fl_vae_net_make(fl_experiment *e, fl_vae_net *p, const char *section, const fl_key *keys,
                          uint32_t nkeys, uint32_t in, uint32_t out, const fl_real *out_bias,
                          uint32_t max_rows, int decoder)
{
    fl_status st = fl_experiment_section(e, section, keys, nkeys, &p->cfg);
    if (st != FL_OK) return st;
    p->in = in;
    p->out = out;
    p->decoder = decoder;
    p->act = act_of(&p->cfg);
    const fl_value *nv = fl_values_get(&p->cfg, "net");
    p->conv = nv && strcmp(nv->text, "conv") == 0;
    if (p->conv) {
        /* A run's config.ini lists every key, so the default is allowed. */
        const fl_value *hv = fl_values_get(&p->cfg, "hidden");
        if (strcmp(hv->text, hv->key->def) != 0)
            return key_error(e, section, "hidden",
                             "applies to net = mlp; a conv net's dense part is one layer");
        if (p->act == FL_ACT_SOFTPLUS)
            return key_error(e, section, "act", "a conv net takes relu, elu or tanh");
        if (e->info.image_h == 0 || e->info.image_w == 0)
            return key_error(e, section, "net",
                             "net = conv needs a data set of images; this one has no image shape");
        p->img_c = e->info.image_c ? e->info.image_c : 1;
        p->img_h = e->info.image_h;
        p->img_w = e->info.image_w;
        p->ch = (uint32_t)fl_values_get(&p->cfg, "channels")->i;
        p->blocks = (uint32_t)fl_values_get(&p->cfg, "blocks")->i;
        p->levels = (uint32_t)fl_values_get(&p->cfg, "levels")->i;
        p->wn = fl_values_get(&p->cfg, "weight_norm")->i != 0;
        if (decoder && p->blocks == 0)
            return key_error(e, section, "blocks",
                             "a conv decoder needs at least one ResNet block per level");
    }
    p->cx = fl_ctx_new(section, &p->cfg, &e->arena, e->seed);
    if (!p->cx) return FL_ERR_NOMEM;
    fl_host_clear_error();
    if (!p->conv) {
        const fl_value *hv = fl_values_get(&p->cfg, "hidden");
        enum { MAX_HIDDEN = 64 };
        if (hv->nlist > MAX_HIDDEN) {
            fl_ctx_end_create(p->cx);
            char msg[128];
            snprintf(msg, sizeof msg, "%zu hidden layers; at most %d", hv->nlist, MAX_HIDDEN);
            return key_error(e, section, "hidden", msg);
        }
        uint32_t hidden[MAX_HIDDEN], nh = (uint32_t)hv->nlist;
        for (uint32_t i = 0; i < nh; i++) hidden[i] = (uint32_t)hv->list[i];
        fl_mlp_spec spec = { "net", in, out, nh, hidden, p->act,
                             strcmp(fl_values_get(&p->cfg, "init")->text, "fanin") == 0
                                 ? FL_INIT_FANIN
                                 : FL_INIT_GLOROT,
                             FL_INIT_GLOROT, NULL, out_bias };
        p->m = fl_host_table()->mlp_create(p->cx, &spec, max_rows); /* owned by the ctx */
        st = p->m ? FL_OK : fl_comp_fail(FL_ERR_INVALID, "[%s] cannot create the MLP", section);
    } else {
        st = decoder ? make_conv_dec(e, p, section, out_bias, max_rows)
                     : make_conv_enc(p, section, max_rows);
    }
    fl_ctx_end_create(p->cx);
    return st;
}

void fl_vae_net_free(fl_vae_net *p)
{
    fl_ctx_free(p->cx); /* frees the MLP and the conv nets */
    p->cx = NULL;
    fl_free(p->f);
    fl_free(p->df);
    fl_free(p->g0);
    fl_free(p->y);
    fl_values_free(&p->cfg);
    memset(p, 0, sizeof *p);
}

void fl_vae_net_forward(fl_experiment *e, fl_vae_net *p, uint32_t n, const fl_real *in,
                        fl_real *out)
{
    const fl_real *th = fl_vae_theta(e, p->cx);
    if (!p->conv) {
        fl_mlp_forward(p->m, th, n, in, out);
        return;
    }
    if (!p->decoder) {
        fl_conv_forward(p->conv_net, th, n, in, p->f);
        fl_mlp_forward(p->m, th, n, p->f, out);
        return;
    }
    fl_mlp_forward(p->m, th, n, in, p->f);
    act_fwd(p->act, (size_t)n * p->feat, p->f, p->df);
    const uint32_t D = p->out / p->qc, qc = p->qc;
    const fl_real *bias = th + p->bias_off;
    fl_real *y = qc > 1 ? p->y : out;
    fl_conv_forward(p->conv_net, th, n, p->df, y);
#pragma omp parallel for schedule(static) if ((size_t)n * p->out > 65536)
    for (uint32_t b = 0; b < n; b++) {
        fl_real *o = out + (size_t)b * p->out;
        const fl_real *yb = y + (size_t)b * p->out;
        if (qc == 1)
            for (uint32_t i = 0; i < D; i++) o[i] += bias[i];
        else
            for (uint32_t i = 0; i < D; i++)
                for (uint32_t c = 0; c < qc; c++)
                    o[(size_t)c * D + i] = yb[(size_t)i * qc + c] + bias[(size_t)c * D + i];
    }
}

void fl_vae_net_backward(fl_experiment *e, fl_vae_net *p, uint32_t n, const fl_real *dout,
                         fl_real *din)
{
    const fl_real *th = fl_vae_theta(e, p->cx);
    fl_real *dth = fl_vae_grad(e, p->cx);
    if (!p->conv) {
        fl_mlp_backward(p->m, th, dth, n, dout, din);
        return;
    }
    if (!p->decoder) {
        memset(p->df, 0, (size_t)n * p->feat * sizeof(fl_real));
        fl_mlp_backward(p->m, th, dth, n, dout, p->df);
        fl_conv_backward(p->conv_net, th, dth, n, p->df, din);
        return;
    }
    const uint32_t D = p->out / p->qc, qc = p->qc;
    fl_real *db = dth + p->bias_off;
    for (uint32_t b = 0; b < n; b++) /* in row order: the same sum for any thread count */
        for (uint32_t i = 0; i < p->out; i++) db[i] += dout[(size_t)b * p->out + i];
    const fl_real *dy = dout;
    if (qc > 1) {
        fl_real *t = p->y; /* its forward values are no longer needed */
        for (uint32_t b = 0; b < n; b++)
            for (uint32_t i = 0; i < D; i++)
                for (uint32_t c = 0; c < qc; c++)
                    t[(size_t)b * p->out + (size_t)i * qc + c] =
                        dout[(size_t)b * p->out + (size_t)c * D + i];
        dy = t;
    }
    memset(p->g0, 0, (size_t)n * p->feat * sizeof(fl_real));
    fl_conv_backward(p->conv_net, th, dth, n, dy, p->g0);
    act_bwd(p->act, (size_t)n * p->feat, p->f, p->df, p->g0, p->g0);
    fl_mlp_backward(p->m, th, dth, n, p->g0, din);
}
