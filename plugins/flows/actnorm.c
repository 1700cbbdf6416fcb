/* actnorm.c - activation normalisation (Kingma & Dhariwal 2018, Glow).
 *
 *   y = (x + b) * exp(log_s)   per channel,   logdet = h * w * sum_ch log_s_ch
 *
 * On an image of c x h x w (NHWC) b and log_s have one entry per channel,
 * shared by the h * w pixels; a flat vector is dim channels of one pixel,
 * so there they are per coordinate (and the arithmetic is the same as
 * before shapes existed, loop order included).
 *
 * Data-dependent init (data_init = true): the first FL_MODE_TRAIN forward
 * sets b = -mean(x) and log_s = -log(std(x) + 1e-6) from its batch (biased
 * std, per channel over the batch's rows and pixels), so that batch leaves the layer standardised; the
 * FL_PARAM_STATE scalar "initialized" records it, so a resumed checkpoint
 * does not initialise again. From then on (and always with data_init =
 * false, where the layer starts as the identity) it is a plain element-wise
 * affine flow with trained b and log_s: rows are independent, so it is not
 * batch-coupled. The init is not differentiated through (as in Glow): it
 * only chooses the starting point, and backward of that first call treats
 * b and log_s as the parameters they have become.
 *
 * In the VI sampling direction (forward on base samples z) the same rule
 * standardises the first training batch of z. EVAL calls never initialise. */
#include <stdlib.h>
#include <tgmath.h>

#include <flowlab/flowlab.h>

typedef struct actnorm {
    uint32_t c, hw;                  /* channels, pixels per row (flat: dim, 1) */
    int data_init;
    size_t ls_off, b_off, init_off;  /* offsets in theta */
    double *mean, *var;              /* c: init scratch */
} actnorm;

static const fl_key keys[] = {
    { "data_init", FL_KEY_BOOL, "true", 0, 0, NULL,
      "on the first training forward set b = -mean(x), log_s = -log(std(x) + 1e-6) from that "
      "batch; false starts at the identity" },
};

static void destroy(void *self) { free(self); }

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    actnorm *f = calloc(1, sizeof *f);
    if (!f) return FL_ERR_NOMEM;
    /* per channel; a flat vector (and a pre-1.4 host) is dim x 1 x 1 */
    const int shaped = FL_ABI_AT_LEAST(h, 1, 4);
    uint32_t D = shaped ? sh->c : sh->dim;
    f->c = D;
    f->hw = shaped ? sh->h * sh->w : 1;
    f->data_init = h->cfg_bool(cx, "data_init");
    fl_param_spec ls = { "log_s", D, FL_INIT_ZERO, 0, 0, 0, 0 };
    fl_param_spec b = { "b", D, FL_INIT_ZERO, 0, 0, 0, 0 };
    /* Requested even with data_init = false so checkpoints of both
     * settings have the same layout. */
    fl_param_spec in = { "initialized", 1, FL_INIT_ZERO, 0, 0, 0, FL_PARAM_STATE };
    fl_status st = h->param(cx, &ls, &f->ls_off);
    if (st == FL_OK) st = h->param(cx, &b, &f->b_off);
    if (st == FL_OK) st = h->param(cx, &in, &f->init_off);
    if (st != FL_OK) {
        free(f);
        return st;
    }
    double *ws = h->workspace(cx, 2 * (size_t)D * sizeof(double));
    if (!ws) {
        free(f);
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    f->mean = ws;
    f->var = ws + D;
    *self = f;
    return FL_OK;
}

/* b = -mean, log_s = -log(std + 1e-6) from the batch, in double (two
 * passes so a large mean does not swamp the variance), per channel over
 * the n * hw pixels (the n rows when flat). */
static void data_init(actnorm *f, uint32_t n, const fl_real *x, fl_real *theta)
{
    uint32_t D = f->c;
    size_t P = (size_t)n * f->hw;
    for (uint32_t j = 0; j < D; j++) f->mean[j] = f->var[j] = 0;
    for (size_t r = 0; r < P; r++)
        for (uint32_t j = 0; j < D; j++) f->mean[j] += x[r * D + j];
    for (uint32_t j = 0; j < D; j++) f->mean[j] /= (double)P;
    for (size_t r = 0; r < P; r++)
        for (uint32_t j = 0; j < D; j++) {
            double e = x[r * D + j] - f->mean[j];
            f->var[j] += e * e;
        }
    for (uint32_t j = 0; j < D; j++) {
        theta[f->b_off + j] = (fl_real)-f->mean[j];
        theta[f->ls_off + j] = (fl_real)-log(sqrt(f->var[j] / (double)P) + 1e-6);
    }
    theta[f->init_off] = 1;
}

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    actnorm *f = self;
    uint32_t D = f->c;
    size_t P = (size_t)a->n * f->hw;
    /* > 0.5, not != 0: the conformance kit's finite differences nudge
     * every parameter, state included, by a small step. */
    if (a->mode == FL_MODE_TRAIN && f->data_init && !(a->theta[f->init_off] > (fl_real)0.5))
        data_init(f, a->n, a->x, a->theta);
    const fl_real *ls = a->theta + f->ls_off, *b = a->theta + f->b_off;
    double ld = 0;
    for (uint32_t j = 0; j < D; j++) ld += ls[j];
    ld *= f->hw;
    for (size_t p = 0; p < P; p++) {
        const fl_real *x = a->x + p * D;
        fl_real *y = a->y + p * D;
        for (uint32_t j = 0; j < D; j++) y[j] = (x[j] + b[j]) * exp(ls[j]);
    }
    for (uint32_t r = 0; r < a->n; r++) a->logdet[r] += (fl_real)ld;
    return FL_OK;
}

static fl_status backward(void *self, const fl_flow_bwd *a)
{
    actnorm *f = self;
    uint32_t D = f->c, n = a->n;
    size_t P = (size_t)n * f->hw;
    const fl_real *ls = a->theta + f->ls_off, *b = a->theta + f->b_off;
    fl_real *dls = a->dtheta + f->ls_off, *db = a->dtheta + f->b_off;
    double dsum = 0; /* every row's logdet is hw * sum log_s */
    for (uint32_t r = 0; r < n; r++) dsum += a->dlogdet[r];
    dsum *= f->hw;
    /* Channel by channel so the parameter sums accumulate in double. */
    for (uint32_t j = 0; j < D; j++) {
        fl_real e = exp(ls[j]);
        double sb = 0, ss = 0;
        for (size_t p = 0; p < P; p++) {
            size_t i = p * D + j;
            fl_real g = a->dy[i] * e;
            a->dx[i] += g;
            sb += g;
            ss += (double)g * (a->x[i] + b[j]);
        }
        db[j] += (fl_real)sb;
        dls[j] += (fl_real)(ss + dsum);
    }
    return FL_OK;
}

static fl_status inverse(void *self, const fl_flow_inv *a)
{
    actnorm *f = self;
    uint32_t D = f->c;
    size_t P = (size_t)a->n * f->hw;
    const fl_real *ls = a->theta + f->ls_off, *b = a->theta + f->b_off;
    double ld = 0;
    for (uint32_t j = 0; j < D; j++) ld -= ls[j];
    ld *= f->hw;
    for (size_t p = 0; p < P; p++) {
        const fl_real *y = a->y + p * D;
        fl_real *x = a->x + p * D;
        for (uint32_t j = 0; j < D; j++) x[j] = y[j] * exp(-ls[j]) - b[j];
    }
    if (a->logdet)
        for (uint32_t r = 0; r < a->n; r++) a->logdet[r] += (fl_real)ld;
    return FL_OK;
}

static const fl_flow_class actnorm_flow = {
    .base = { sizeof(fl_flow_class), "actnorm",
              "Glow activation normalisation: y = (x + b)*exp(log_s) per channel, data-dependent init",
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
    return r->add(r, FL_KIND_FLOW, &actnorm_flow.base);
}

FL_PLUGIN("flows-actnorm", "1.0.0", init)
