/* conv_coupling.c - Real NVP coupling on images (Dinh et al. 2017,
 * section 3.4-3.6): `conv-coupling`.
 *
 * A binary mask b on the c x h x w input (NHWC) keeps part of it:
 *   checkerboard  b = 1 on pixels (i, j) with i + j + parity even, every
 *                 channel of them;
 *   channel       b = 1 on the first ceil(c/2) channels (parity 0) or on
 *                 the other floor(c/2) (parity 1), at every pixel.
 * One ResNet (host->conv_*) reads the kept part x * b and gives raw_s and t
 * for every transformed element:
 *   affine    y = b x + (1 - b) (x exp(s) + t),  s = scale * tanh(raw_s),
 *             logdet = sum of s over the transformed elements;
 *   additive  y = b x + (1 - b) (x + t),  logdet = 0.
 * `scale` is a learned per-channel parameter (one per transformed channel,
 * initialised to 1), so exp(s) starts in [1/e, e] and the net's last
 * layer, zero-initialised, starts the layer at the identity.
 *
 * The net: conv3x3 c_in -> F, `blocks` ResNet blocks of F channels (act
 * between their convolutions), act, conv3x3 F -> 2 c_t (raw_s then t for
 * each pixel; additive: c_t), weight norm on all but the last. With the
 * checkerboard mask it reads all c channels through the conv service's
 * input mask (zeros on the transformed pixels) and writes 2c outputs per
 * pixel, of which the transformed pixels' are used; with the channel mask
 * it reads only the kept channels (gathered) and writes 2 c_t per pixel,
 * as chrischute/real-nvp and the PyTorch reference do.
 *
 * norm = batch puts the conv service's batch normalisation (per channel;
 * batch statistics in training, running averages, FL_PARAM_STATE, in
 * evaluation) before every ResNet block and before the last activation:
 * conv3x3, [BN, block] x blocks, BN, act, conv3x3 (Real NVP normalises
 * inside its ResNets). The layer's rows then interact in training mode,
 * which a class cannot declare per configuration (FL_FLOW_BATCH_COUPLED
 * is a class flag): training it with [train] grad_blocks > 1 normalises
 * each block of rows by its own statistics, and over MPI the ranks' running
 * averages then differ (the loop's parameter check stops such a run). An
 * inverse in training mode recomputes the batch statistics from the kept
 * part, which forward and inverse share, without moving the averages.
 *
 * Forward, backward and inverse allocate nothing (workspaces from
 * create); the element-wise work is split by rows and every sum over rows
 * runs in row order, so results are bit-identical for any thread count
 * (as the conv service's). */
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/flowlab.h>
#include <flowlab/vmath.h>

enum { MASK_CHECKERBOARD, MASK_CHANNEL };
enum { PARITY_AUTO, PARITY_0, PARITY_1 };
/* Rows x elements below which the element-wise loops stay on one thread:
 * they cost ~10 ns an element, and a parallel region on shared cores can
 * cost milliseconds (bench_imglayers, 64 x 4 x 14 x 14). */
#define PAR_MIN_ELEMS 131072

typedef struct ccoup {
    const fl_host *h;
    uint32_t c, hw, dim;   /* channels, pixels per image, c * hw */
    int additive;          /* no s: logdet 0 */
    int chan;              /* channel mask (else checkerboard) */
    int bn;                /* norm = batch: the net has batch norm layers */
    uint32_t k0, ck;       /* kept channels [k0, k0 + ck) (channel mask) */
    uint32_t t0, ct;       /* transformed channels [t0, t0 + ct) (checkerboard: all) */
    uint32_t nout;         /* net output channels: 2 ct, additive ct */
    uint8_t *keep;         /* hw: pixel kept (checkerboard), else NULL */
    fl_conv *net;
    size_t scale_off;      /* ct per-channel scales in theta (affine) */
    fl_real *xin, *dxin;   /* channel mask: max_rows x hw x ck gathered input, its gradient */
    fl_real *out, *dout;   /* max_rows x hw x nout: net output and its gradient */
    double *dsc;           /* max_rows x ct: per-row partial sums of dscale */
} ccoup;

static const fl_key keys[] = {
    { "transform", FL_KEY_ENUM, "affine", 0, 0, "affine|additive",
      "affine: y = x*exp(s) + t with s = scale*tanh(raw); additive: y = x + t (logdet 0)" },
    { "mask", FL_KEY_ENUM, "checkerboard", 0, 0, "checkerboard|channel",
      "checkerboard: keep pixels with i + j + parity even; channel: keep the first ceil(c/2) "
      "channels (parity 0) or the others (parity 1)" },
    { "parity", FL_KEY_ENUM, "auto", 0, 0, "auto|0|1",
      "which part the mask keeps; auto alternates with the layer's index in its repeat group" },
    { "features", FL_KEY_INT, "64", 1, 1 << 16, NULL, "channels inside the s/t ResNet" },
    { "blocks", FL_KEY_INT, "4", 0, 1024, NULL, "ResNet blocks of the s/t network" },
    { "act", FL_KEY_ENUM, "relu", 0, 0, "relu|elu|tanh",
      "activation inside the ResNet blocks and before its last convolution" },
    { "weight_norm", FL_KEY_BOOL, "true", 0, 0, NULL,
      "weight normalisation of every convolution but the zero-initialised last one" },
    { "norm", FL_KEY_ENUM, "none", 0, 0, "none|batch",
      "batch: batch norm in the s/t net before each ResNet block and the last activation "
      "(batch statistics in training, running averages in evaluation; rows then interact in "
      "training)" },
};

static void destroy(void *self)
{
    ccoup *k = self;
    if (!k) return;
    free(k->keep);
    free(k);
}

static fl_status fail(ccoup *k, fl_status st)
{
    destroy(k);
    return st;
}

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    if (!FL_HOST_HAS(h, conv_create) || !FL_ABI_AT_LEAST(h, 1, 4)) {
        h->error(cx, "needs a host with ABI 1.4 or later (conv nets and shaped flows)");
        return FL_ERR_UNSUPPORTED;
    }
    ccoup *k = calloc(1, sizeof *k);
    if (!k) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    k->h = h;
    k->c = sh->c;
    k->hw = sh->h * sh->w;
    k->dim = sh->dim;
    k->additive = h->cfg_int(cx, "transform") == 1;
    k->chan = h->cfg_int(cx, "mask") == MASK_CHANNEL;
    int64_t pk = h->cfg_int(cx, "parity");
    const uint32_t parity = pk == PARITY_AUTO ? sh->index & 1u : pk == PARITY_1;
    if (k->chan) {
        if (k->c < 2) {
            h->error(cx, "mask = channel on %u x %u x %u input leaves nothing to transform (it "
                         "needs 2 or more channels; use mask = checkerboard or squeeze first)",
                     sh->c, sh->h, sh->w);
            return fail(k, FL_ERR_INVALID);
        }
        const uint32_t half = (k->c + 1) / 2;
        k->k0 = parity ? half : 0;
        k->ck = parity ? k->c - half : half;
        k->t0 = parity ? 0 : half;
        k->ct = k->c - k->ck;
    } else {
        if (k->hw < 2) {
            h->error(cx, "mask = checkerboard on %u x %u x %u input (1 x 1 images) leaves "
                         "nothing to transform (it needs 2 or more pixels; use mask = channel)",
                     sh->c, sh->h, sh->w);
            return fail(k, FL_ERR_INVALID);
        }
        k->keep = malloc(k->hw);
        if (!k->keep) {
            h->error(cx, "out of memory");
            return fail(k, FL_ERR_NOMEM);
        }
        for (uint32_t i = 0; i < sh->h; i++)
            for (uint32_t j = 0; j < sh->w; j++)
                k->keep[i * sh->w + j] = (i + j + parity) % 2 == 0;
        k->ck = k->c;
        k->t0 = 0;
        k->ct = k->c;
    }
    k->nout = k->additive ? k->ct : 2 * k->ct;
    k->bn = h->cfg_int(cx, "norm") == 1;
    if (k->bn && !FL_HOST_HAS(h, conv_forward_mode)) {
        h->error(cx, "norm = batch needs a host whose conv service has batch norm (ABI 1.4 with "
                     "conv_forward_mode)");
        return fail(k, FL_ERR_UNSUPPORTED);
    }

    static const fl_act acts[] = { FL_ACT_RELU, FL_ACT_ELU, FL_ACT_TANH };
    const fl_act act = acts[h->cfg_int(cx, "act")];
    const uint32_t F = (uint32_t)h->cfg_int(cx, "features");
    const uint32_t B = (uint32_t)h->cfg_int(cx, "blocks");
    fl_conv_layer *layers = calloc(2 * (size_t)B + 4, sizeof *layers);
    fl_real *mask = k->chan ? NULL : malloc((size_t)k->dim * sizeof *mask);
    if (!layers || (!k->chan && !mask)) {
        free(layers);
        free(mask);
        h->error(cx, "out of memory");
        return fail(k, FL_ERR_NOMEM);
    }
    uint32_t nl = 0;
    layers[nl++] = (fl_conv_layer){ FL_CONV_3X3, F, 1, FL_ACT_LINEAR };
    for (uint32_t b = 0; b < B; b++) {
        if (k->bn) layers[nl++] = (fl_conv_layer){ FL_CONV_BATCHNORM, 0, 0, FL_ACT_LINEAR };
        layers[nl++] = (fl_conv_layer){ FL_CONV_RESNET, F, 1, act };
    }
    if (k->bn) layers[nl++] = (fl_conv_layer){ FL_CONV_BATCHNORM, 0, 0, FL_ACT_LINEAR };
    layers[nl++] = (fl_conv_layer){ FL_CONV_ACT, 0, 0, act };
    layers[nl++] = (fl_conv_layer){ FL_CONV_3X3, k->nout, 1, FL_ACT_LINEAR };
    if (mask)
        for (uint32_t p = 0; p < k->hw; p++)
            for (uint32_t ch = 0; ch < k->c; ch++) mask[(size_t)p * k->c + ch] = k->keep[p];
    fl_conv_spec spec = { sizeof(fl_conv_spec), "st", k->chan ? k->ck : k->c, sh->h, sh->w, nl,
                          layers, FL_CONV_ZERO_LAST, mask };
    if (h->cfg_bool(cx, "weight_norm")) spec.flags |= FL_CONV_WEIGHT_NORM;
    k->net = h->conv_create(cx, &spec, sh->max_rows);
    free(layers);
    free(mask);
    if (!k->net) return fail(k, FL_ERR_INVALID); /* message set by the host */
    if (!k->additive) {
        fl_param_spec sc = { "scale", k->ct, FL_INIT_CONST, 0, 0, 1, 0 };
        fl_status st = h->param(cx, &sc, &k->scale_off);
        if (st != FL_OK) return fail(k, st);
    }
    const size_t R = sh->max_rows, fs = sizeof(fl_real);
    k->out = h->workspace(cx, R * k->hw * k->nout * fs);
    k->dout = h->workspace(cx, R * k->hw * k->nout * fs);
    if (!k->additive) k->dsc = h->workspace(cx, R * k->ct * sizeof(double));
    if (k->chan) {
        k->xin = h->workspace(cx, R * k->hw * k->ck * fs);
        k->dxin = h->workspace(cx, R * k->hw * k->ck * fs);
    }
    if (!k->out || !k->dout || (!k->additive && !k->dsc) ||
        (k->chan && (!k->xin || !k->dxin))) {
        h->error(cx, "out of memory");
        return fail(k, FL_ERR_NOMEM);
    }
    *self = k;
    return FL_OK;
}

/* The net's input for rows `in`: the rows themselves (checkerboard: the
 * conv service applies the mask) or their kept channels, gathered. */
static const fl_real *net_input(const ccoup *k, uint32_t n, const fl_real *in)
{
    if (!k->chan) return in;
    const size_t P = (size_t)n * k->hw;
    for (size_t p = 0; p < P; p++)
        memcpy(k->xin + p * k->ck, in + p * k->c + k->k0, k->ck * sizeof(fl_real));
    return k->xin;
}

/* One direction of the coupling on n rows, from `in` to `res`, given the
 * net output k->out: sign +1 forward (res = y), -1 inverse (res = x).
 * logdet (may be NULL) += sign * sum s per row. */
static void couple(const ccoup *k, const fl_real *theta, uint32_t n, const fl_real *in,
                   fl_real *res, fl_real *logdet, int sign)
{
    const uint32_t c = k->c, hw = k->hw, ct = k->ct, nout = k->nout;
    const fl_real *scale = k->additive ? NULL : theta + k->scale_off;
#pragma omp parallel for schedule(static) if ((size_t)n * k->dim >= PAR_MIN_ELEMS)
    for (uint32_t r = 0; r < n; r++) {
        double ld = 0;
        for (uint32_t p = 0; p < hw; p++) {
            const size_t e0 = ((size_t)r * hw + p) * c;
            const fl_real *u = in + e0;
            fl_real *v = res + e0;
            if (!k->chan && k->keep[p]) {
                memcpy(v, u, c * sizeof *v);
                continue;
            }
            if (k->chan) memcpy(v + k->k0, u + k->k0, k->ck * sizeof *v);
            const fl_real *o = k->out + ((size_t)r * hw + p) * nout;
            const fl_real *ui = u + k->t0;
            fl_real *vi = v + k->t0;
            if (k->additive) {
                for (uint32_t j = 0; j < ct; j++) vi[j] = sign > 0 ? ui[j] + o[j] : ui[j] - o[j];
                continue;
            }
            for (uint32_t j = 0; j < ct; j++) {
                const fl_real s = scale[j] * fl_tanh(o[j]);
                vi[j] = sign > 0 ? ui[j] * fl_exp(s) + o[ct + j] : (ui[j] - o[ct + j]) * fl_exp(-s);
                ld += s;
            }
        }
        if (logdet && !k->additive) logdet[r] += (fl_real)(sign * ld);
    }
}

/* The net on n rows of `in` (forward: x; inverse: y, whose kept part is
 * x's). With batch norm, in `mode`, moving the running averages in
 * `state` (theta made writable; NULL = leave them). */
static void run_net(ccoup *k, const fl_real *theta, fl_real *state, fl_mode mode, uint32_t n,
                    const fl_real *in)
{
    const fl_real *nin = net_input(k, n, in);
    if (k->bn) k->h->conv_forward_mode(k->net, theta, state, mode, n, nin, k->out);
    else k->h->conv_forward(k->net, theta, n, nin, k->out);
}

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    ccoup *k = self;
    run_net(k, a->theta, a->mode == FL_MODE_TRAIN ? a->theta : NULL, a->mode, a->n, a->x);
    couple(k, a->theta, a->n, a->x, a->y, a->logdet, 1);
    return FL_OK;
}

static fl_status inverse(void *self, const fl_flow_inv *a)
{
    ccoup *k = self;
    /* The kept part of y is the kept part of x: the same net input. */
    run_net(k, a->theta, NULL, a->mode, a->n, a->y);
    couple(k, a->theta, a->n, a->y, a->x, a->logdet, -1);
    return FL_OK;
}

static fl_status backward(void *self, const fl_flow_bwd *a)
{
    ccoup *k = self;
    const uint32_t n = a->n, c = k->c, hw = k->hw, ct = k->ct, nout = k->nout;
    const fl_real *scale = k->additive ? NULL : a->theta + k->scale_off;
    /* Element-wise part: dx of the identity and of x*exp(s), the net
     * outputs' gradients (zero where unused), per-row dscale sums. */
#pragma omp parallel for schedule(static) if ((size_t)n * k->dim >= PAR_MIN_ELEMS)
    for (uint32_t r = 0; r < n; r++) {
        const fl_real dl = a->dlogdet[r];
        double *dsc = k->dsc ? k->dsc + (size_t)r * ct : NULL;
        if (dsc)
            for (uint32_t j = 0; j < ct; j++) dsc[j] = 0;
        for (uint32_t p = 0; p < hw; p++) {
            const size_t e0 = ((size_t)r * hw + p) * c, o0 = ((size_t)r * hw + p) * nout;
            const fl_real *x = a->x + e0, *dy = a->dy + e0, *o = k->out + o0;
            fl_real *dx = a->dx + e0, *dout = k->dout + o0;
            if (!k->chan && k->keep[p]) {
                for (uint32_t ch = 0; ch < c; ch++) dx[ch] += dy[ch];
                memset(dout, 0, nout * sizeof *dout);
                continue;
            }
            if (k->chan)
                for (uint32_t i = k->k0; i < k->k0 + k->ck; i++) dx[i] += dy[i];
            const fl_real *xi = x + k->t0, *dyi = dy + k->t0;
            fl_real *dxi = dx + k->t0;
            if (k->additive) {
                for (uint32_t j = 0; j < ct; j++) {
                    dxi[j] += dyi[j];
                    dout[j] = dyi[j];
                }
                continue;
            }
            for (uint32_t j = 0; j < ct; j++) {
                const fl_real th = fl_tanh(o[j]), s = scale[j] * th, e = fl_exp(s);
                const fl_real ds = dyi[j] * xi[j] * e + dl;
                dxi[j] += dyi[j] * e;
                dout[j] = ds * scale[j] * (1 - th * th);
                dout[ct + j] = dyi[j];
                dsc[j] += (double)ds * th;
            }
        }
    }
    if (!k->additive) {
        fl_real *dscale = a->dtheta + k->scale_off;
        for (uint32_t j = 0; j < ct; j++) {
            double g = 0;
            for (uint32_t r = 0; r < n; r++) g += k->dsc[(size_t)r * ct + j];
            dscale[j] += (fl_real)g;
        }
    }
    if (!k->chan) {
        /* The conv service's din includes the mask: it adds to dx only on
         * the kept pixels. */
        k->h->conv_backward(k->net, a->theta, a->dtheta, n, k->dout, a->dx);
        return FL_OK;
    }
    const size_t P = (size_t)n * hw;
    memset(k->dxin, 0, P * k->ck * sizeof(fl_real));
    k->h->conv_backward(k->net, a->theta, a->dtheta, n, k->dout, k->dxin);
    for (size_t p = 0; p < P; p++) {
        fl_real *dx = a->dx + p * c + k->k0;
        const fl_real *g = k->dxin + p * k->ck;
        for (uint32_t i = 0; i < k->ck; i++) dx[i] += g[i];
    }
    return FL_OK;
}

static const fl_flow_class conv_coupling = {
    .base = { sizeof(fl_flow_class), "conv-coupling",
              "Real NVP coupling on images: checkerboard or channel mask, y = x_kept + "
              "(1-mask)*(x*exp(s) + t) (or additive) with s, t from a ResNet of the kept part",
              keys, sizeof keys / sizeof keys[0] },
    .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE | FL_FLOW_SHAPED,
    .create = create,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_FLOW, &conv_coupling.base);
}

FL_PLUGIN("flows-conv-coupling", "1.0.0", init)
