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
 * The decoder runs as levels + 1 conv nets (segments) with the upsampling
 * between them done here (upsample_fwd/bwd): the conv service had no
 * upsampling op when this was written. An upsampling op in the service
 * would make the decoder one net with the same layers.
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

/* Nearest-neighbour 2x upsampling of n NHWC images c x h x w -> c x 2h x 2w. */
static void upsample_fwd(uint32_t n, uint32_t c, uint32_t h, uint32_t w, const fl_real *in,
                         fl_real *out)
{
    const size_t ip = (size_t)c * h * w, op = 4 * ip;
#pragma omp parallel for schedule(static) if ((size_t)n * op > 65536)
    for (uint32_t b = 0; b < n; b++)
        for (uint32_t y = 0; y < 2 * h; y++)
            for (uint32_t x = 0; x < 2 * w; x++)
                memcpy(out + b * op + ((size_t)y * 2 * w + x) * c,
                       in + b * ip + ((size_t)(y / 2) * w + x / 2) * c, c * sizeof(fl_real));
}

/* Its backward: din (written) = the sum of each input pixel's 4 copies. */
static void upsample_bwd(uint32_t n, uint32_t c, uint32_t h, uint32_t w, const fl_real *dout,
                         fl_real *din)
{
    const size_t ip = (size_t)c * h * w, op = 4 * ip;
#pragma omp parallel for schedule(static) if ((size_t)n * op > 65536)
    for (uint32_t b = 0; b < n; b++)
        for (uint32_t y = 0; y < h; y++)
            for (uint32_t x = 0; x < w; x++) {
                fl_real *d = din + b * ip + ((size_t)y * w + x) * c;
                const fl_real *s = dout + b * op;
                const size_t W2 = 2 * (size_t)w;
                const size_t o[4] = { (2 * y * W2 + 2 * x) * c, (2 * y * W2 + 2 * x + 1) * c,
                                      ((2 * y + 1) * W2 + 2 * x) * c,
                                      ((2 * y + 1) * W2 + 2 * x + 1) * c };
                for (uint32_t ch = 0; ch < c; ch++)
                    d[ch] = s[o[0] + ch] + s[o[1] + ch] + s[o[2] + ch] + s[o[3] + ch];
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
    p->seg[0] = H->conv_create(p->cx, &cs, max_rows);
    if (!p->seg[0]) return fl_comp_fail(FL_ERR_INVALID, "[%s] cannot create the conv net", section);
    p->nseg = 1;
    uint32_t oc, oh, ow;
    fl_conv_out_shape(p->seg[0], &oc, &oh, &ow);
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
    NET_ALLOC(p->df, (size_t)max_rows * p->feat); /* activated: segment 0's input */
    size_t gmax = p->feat;
    for (uint32_t s = 0; s <= lv; s++) {
        fl_conv_layer L[FL_VAE_MAX_BLOCKS + 2];
        uint32_t nl = 0;
        for (uint32_t b = 0; b < nb; b++) L[nl++] = (fl_conv_layer){ FL_CONV_RESNET, 0, 1, p->act };
        if (s == lv) {
            L[nl++] = (fl_conv_layer){ FL_CONV_ACT, 0, 0, p->act };
            L[nl++] = (fl_conv_layer){ FL_CONV_3X3, p->qc, 1, FL_ACT_LINEAR };
        }
        char name[16];
        snprintf(name, sizeof name, "conv%u", s);
        const uint32_t hs = h0 << s, ws = w0 << s;
        fl_conv_spec cs = { sizeof cs, name, C, hs, ws, nl, L,
                            p->wn ? FL_CONV_WEIGHT_NORM : 0u, NULL };
        p->seg[s] = H->conv_create(p->cx, &cs, max_rows);
        if (!p->seg[s])
            return fl_comp_fail(FL_ERR_INVALID, "[%s] cannot create conv net %u", section, s);
        const size_t px = (size_t)C * hs * ws;
        if (s < lv) {
            NET_ALLOC(p->y[s], (size_t)max_rows * px);        /* segment s's output */
            NET_ALLOC(p->x[s + 1], (size_t)max_rows * 4 * px); /* upsampled: s+1's input */
            if (4 * px > gmax) gmax = 4 * px;
        }
    }
    p->nseg = lv + 1;
    p->x[0] = p->df;
    if (p->qc > 1) NET_ALLOC(p->y[lv], (size_t)max_rows * p->out);
    NET_ALLOC(p->g0, (size_t)max_rows * gmax);
    NET_ALLOC(p->g1, (size_t)max_rows * gmax);
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
    fl_free(p->g1);
    for (uint32_t s = 0; s <= FL_VAE_MAX_LEVELS; s++) {
        fl_free(p->y[s]);
        if (s > 0) fl_free(p->x[s]);
    }
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
        fl_conv_forward(p->seg[0], th, n, in, p->f);
        fl_mlp_forward(p->m, th, n, p->f, out);
        return;
    }
    fl_mlp_forward(p->m, th, n, in, p->f);
    act_fwd(p->act, (size_t)n * p->feat, p->f, p->df);
    const uint32_t lv = p->levels, C = p->ch;
    for (uint32_t s = 0; s < lv; s++) {
        fl_conv_forward(p->seg[s], th, n, p->x[s], p->y[s]);
        upsample_fwd(n, C, p->img_h >> (lv - s), p->img_w >> (lv - s), p->y[s], p->x[s + 1]);
    }
    const uint32_t D = p->out / p->qc, qc = p->qc;
    const fl_real *bias = th + p->bias_off;
    fl_real *y = qc > 1 ? p->y[lv] : out;
    fl_conv_forward(p->seg[lv], th, n, p->x[lv], y);
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
        fl_conv_backward(p->seg[0], th, dth, n, p->df, din);
        return;
    }
    const uint32_t lv = p->levels, C = p->ch, D = p->out / p->qc, qc = p->qc;
    fl_real *db = dth + p->bias_off;
    for (uint32_t b = 0; b < n; b++) /* in row order: the same sum for any thread count */
        for (uint32_t i = 0; i < p->out; i++) db[i] += dout[(size_t)b * p->out + i];
    const fl_real *dy = dout;
    if (qc > 1) {
        fl_real *t = p->y[lv]; /* its forward values are no longer needed */
        for (uint32_t b = 0; b < n; b++)
            for (uint32_t i = 0; i < D; i++)
                for (uint32_t c = 0; c < qc; c++)
                    t[(size_t)b * p->out + (size_t)i * qc + c] =
                        dout[(size_t)b * p->out + (size_t)c * D + i];
        dy = t;
    }
    /* g0: d/d(segment input); g1: d/d(previous segment's output) */
    for (uint32_t s = lv + 1; s-- > 0;) {
        const uint32_t hs = p->img_h >> (lv - s), ws = p->img_w >> (lv - s);
        memset(p->g0, 0, (size_t)n * C * hs * ws * sizeof(fl_real));
        fl_conv_backward(p->seg[s], th, dth, n, dy, p->g0);
        if (s > 0) {
            upsample_bwd(n, C, hs / 2, ws / 2, p->g0, p->g1);
            dy = p->g1;
        }
    }
    act_bwd(p->act, (size_t)n * p->feat, p->f, p->df, p->g0, p->g0);
    fl_mlp_backward(p->m, th, dth, n, p->g0, din);
}
