/* multiscale.c - the multi-scale layers of Real NVP and Glow (ABI 1.4).
 *
 * squeeze: c x h x w -> 4c x h/2 x w/2. Each 2x2 block of pixels becomes
 *   one pixel with four times the channels: channel (dy*2 + dx)*c + ch of
 *   output pixel (i, j) is channel ch of input pixel (2i + dy, 2j + dx).
 *   A permutation: logdet 0, exact inverse.
 *
 * split: keeps the first ceil(c/2) channels (y: c_keep x h x w) and factors
 *   out the rest (z: c_z x h x w), which leave the flow (flow.h: the stack
 *   hands them to the base density).
 *     prior = standard   z goes to the base as is (logdet 0);
 *     prior = learned    Glow's split prior: a zero-initialised 3x3
 *                        convolution of y gives mu and log sigma per
 *                        factored channel (its output channels
 *                        [mu | log sigma] per pixel), and the layer emits
 *                        z' = (z - mu) exp(-log sigma), logdet -= sum log
 *                        sigma, so the base's N(0, I) on z' is the learned
 *                        N(mu, sigma^2) on z. It starts as `standard`.
 *
 * Rows are NHWC (flow.h): element (ch, y, x) at (y * w + x) * c + ch. */
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/flowlab.h>

/* Shaped layers need the 1.4 host (input shape, flow_output). */
static int host_ok(const fl_host *h, fl_ctx *cx, const char *what)
{
    if (FL_ABI_AT_LEAST(h, 1, 4) && FL_HOST_HAS(h, flow_output)) return 1;
    h->error(cx, "%s needs a host with ABI 1.4 or later (shaped flows)", what);
    return 0;
}

/* ---- squeeze ---- */

typedef struct squeeze {
    uint32_t c, h, w, dim;
} squeeze;

static void sq_destroy(void *self) { free(self); }

static fl_status sq_create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    if (!host_ok(h, cx, "squeeze")) return FL_ERR_UNSUPPORTED;
    if (sh->h % 2 || sh->w % 2) {
        h->error(cx, "cannot squeeze a %ux%ux%u input (c x h x w): height and width must be "
                     "even",
                 sh->c, sh->h, sh->w);
        return FL_ERR_INVALID;
    }
    squeeze *q = calloc(1, sizeof *q);
    if (!q) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    *q = (squeeze){ sh->c, sh->h, sh->w, sh->dim };
    fl_status st = h->flow_output(cx, 4 * sh->c, sh->h / 2, sh->w / 2);
    if (st != FL_OK) {
        free(q);
        return st;
    }
    *self = q;
    return FL_OK;
}

/* Moves one row between the two layouts: to_sq != 0 squeezes a (c x h x w)
 * into b (4c x h/2 x w/2), else unsqueezes b into a; add != 0 adds instead
 * of copying (backward). */
static void sq_row(const squeeze *q, const fl_real *src, fl_real *dst, int to_sq, int add)
{
    const uint32_t c = q->c, w = q->w, h2 = q->h / 2, w2 = q->w / 2;
    for (uint32_t i = 0; i < h2; i++)
        for (uint32_t j = 0; j < w2; j++)
            for (uint32_t d = 0; d < 4; d++) {
                const size_t in = ((size_t)(2 * i + d / 2) * w + 2 * j + d % 2) * c;
                const size_t out = ((size_t)i * w2 + j) * 4 * c + (size_t)d * c;
                const size_t from = to_sq ? in : out, to = to_sq ? out : in;
                if (add)
                    for (uint32_t ch = 0; ch < c; ch++) dst[to + ch] += src[from + ch];
                else
                    memcpy(dst + to, src + from, c * sizeof *dst);
            }
}

static fl_status sq_forward(void *self, const fl_flow_fwd *a)
{
    const squeeze *q = self;
    for (uint32_t r = 0; r < a->n; r++)
        sq_row(q, a->x + (size_t)r * q->dim, a->y + (size_t)r * q->dim, 1, 0);
    return FL_OK;
}

static fl_status sq_backward(void *self, const fl_flow_bwd *a)
{
    const squeeze *q = self;
    for (uint32_t r = 0; r < a->n; r++)
        sq_row(q, a->dy + (size_t)r * q->dim, a->dx + (size_t)r * q->dim, 0, 1);
    return FL_OK;
}

static fl_status sq_inverse(void *self, const fl_flow_inv *a)
{
    const squeeze *q = self;
    for (uint32_t r = 0; r < a->n; r++)
        sq_row(q, a->y + (size_t)r * q->dim, a->x + (size_t)r * q->dim, 0, 0);
    return FL_OK;
}

static const fl_flow_class squeeze_class = {
    .base = { sizeof(fl_flow_class), "squeeze",
              "c x h x w -> 4c x h/2 x w/2: each 2x2 block of pixels becomes one pixel "
              "(Real NVP); logdet 0",
              NULL, 0 },
    .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE |
             FL_FLOW_SHAPED,
    .create = sq_create,
    .destroy = sq_destroy,
    .forward = sq_forward,
    .backward = sq_backward,
    .inverse = sq_inverse,
};

/* ---- split ---- */

enum { PRIOR_STANDARD, PRIOR_LEARNED };

static const fl_key split_keys[] = {
    { "prior", FL_KEY_ENUM, "standard", 0, 0, "standard|learned",
      "standard: the factored-out half goes to the base as is; learned (Glow): a "
      "zero-initialised 3x3 conv of the kept half gives its mean and log sigma" },
};

typedef struct split {
    const fl_host *h;
    uint32_t c, ck, cz, hw, dim;   /* channels: all, kept, factored out; pixels */
    fl_conv *net;                  /* learned prior: y (ck) -> [mu | log sigma] (2 cz) */
    fl_real *ms;                   /* max_rows x hw x 2cz: the net's output */
    fl_real *dms;                  /* the same, its gradient */
    fl_real *dyk;                  /* max_rows x hw x ck: d/dy through the net */
} split;

static void sp_destroy(void *self) { free(self); }

static fl_status sp_create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    if (!host_ok(h, cx, "split")) return FL_ERR_UNSUPPORTED;
    if (sh->c < 2) {
        h->error(cx, "cannot split a %ux%ux%u input (c x h x w): it needs at least 2 channels "
                     "(squeeze first)",
                 sh->c, sh->h, sh->w);
        return FL_ERR_INVALID;
    }
    split *p = calloc(1, sizeof *p);
    if (!p) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    p->h = h;
    p->c = sh->c;
    p->ck = (sh->c + 1) / 2;
    p->cz = sh->c - p->ck;
    p->hw = sh->h * sh->w;
    p->dim = sh->dim;
    fl_status st = h->flow_output(cx, p->ck, sh->h, sh->w);
    if (st == FL_OK && h->cfg_int(cx, "prior") == PRIOR_LEARNED) {
        const fl_conv_layer conv = { FL_CONV_3X3, 2 * p->cz, 1, FL_ACT_LINEAR };
        const fl_conv_spec spec = { sizeof(fl_conv_spec), "prior", p->ck, sh->h, sh->w, 1,
                                    &conv, FL_CONV_ZERO_LAST, NULL };
        const size_t R = sh->max_rows, fs = sizeof(fl_real);
        p->net = h->conv_create(cx, &spec, sh->max_rows);
        p->ms = h->workspace(cx, R * p->hw * 2 * p->cz * fs);
        p->dms = h->workspace(cx, R * p->hw * 2 * p->cz * fs);
        p->dyk = h->workspace(cx, R * p->hw * p->ck * fs);
        if (!p->net) st = FL_ERR_INVALID; /* message set by conv_create */
        else if (!p->ms || !p->dms || !p->dyk) {
            h->error(cx, "out of memory");
            st = FL_ERR_NOMEM;
        }
    }
    if (st != FL_OK) {
        free(p);
        return st;
    }
    *self = p;
    return FL_OK;
}

static fl_status sp_forward(void *self, const fl_flow_fwd *a)
{
    const split *p = self;
    const uint32_t ck = p->ck, cz = p->cz, c = p->c;
    for (size_t q = 0; q < (size_t)a->n * p->hw; q++) { /* pixels of all rows */
        memcpy(a->y + q * ck, a->x + q * c, ck * sizeof(fl_real));
        memcpy(a->z + q * cz, a->x + q * c + ck, cz * sizeof(fl_real));
    }
    if (!p->net) return FL_OK;
    p->h->conv_forward(p->net, a->theta, a->n, a->y, p->ms);
    for (uint32_t r = 0; r < a->n; r++) {
        fl_real *z = a->z + (size_t)r * p->hw * cz;
        const fl_real *ms = p->ms + (size_t)r * p->hw * 2 * cz;
        fl_real sum = 0;
        for (uint32_t px = 0; px < p->hw; px++)
            for (uint32_t k = 0; k < cz; k++) {
                const fl_real mu = ms[px * 2 * cz + k], ls = ms[px * 2 * cz + cz + k];
                z[px * cz + k] = (z[px * cz + k] - mu) * exp(-ls);
                sum += ls;
            }
        a->logdet[r] -= sum;
    }
    return FL_OK;
}

static fl_status sp_backward(void *self, const fl_flow_bwd *a)
{
    const split *p = self;
    const uint32_t ck = p->ck, cz = p->cz, c = p->c;
    if (!p->net) {
        for (size_t q = 0; q < (size_t)a->n * p->hw; q++) {
            fl_real *dx = a->dx + q * c;
            for (uint32_t k = 0; k < ck; k++) dx[k] += a->dy[q * ck + k];
            for (uint32_t k = 0; k < cz; k++) dx[ck + k] += a->dz[q * cz + k];
        }
        return FL_OK;
    }
    /* z' = (z - mu) e^-ls:  dz = dz' e^-ls,  dmu = -dz' e^-ls,
     * dls = -dz' z' - dlogdet. The net's ms is still forward's. */
    for (uint32_t r = 0; r < a->n; r++) {
        const size_t zr = (size_t)r * p->hw * cz, mr = 2 * zr;
        const fl_real dld = a->dlogdet[r];
        for (uint32_t px = 0; px < p->hw; px++) {
            fl_real *dx = a->dx + ((size_t)r * p->hw + px) * c;
            for (uint32_t k = 0; k < cz; k++) {
                const size_t iz = zr + (size_t)px * cz + k, im = mr + (size_t)px * 2 * cz + k;
                const fl_real g = a->dz[iz] * exp(-p->ms[im + cz]);
                dx[ck + k] += g;
                p->dms[im] = -g;
                p->dms[im + cz] = -a->dz[iz] * a->z[iz] - dld;
            }
        }
    }
    const size_t nk = (size_t)a->n * p->hw * ck;
    memcpy(p->dyk, a->dy, nk * sizeof(fl_real));
    p->h->conv_backward(p->net, a->theta, a->dtheta, a->n, p->dms, p->dyk);
    for (size_t q = 0; q < (size_t)a->n * p->hw; q++)
        for (uint32_t k = 0; k < ck; k++) a->dx[q * c + k] += p->dyk[q * ck + k];
    return FL_OK;
}

static fl_status sp_inverse(void *self, const fl_flow_inv *a)
{
    const split *p = self;
    const uint32_t ck = p->ck, cz = p->cz, c = p->c;
    if (p->net) p->h->conv_forward(p->net, a->theta, a->n, a->y, p->ms);
    for (uint32_t r = 0; r < a->n; r++) {
        fl_real sum = 0;
        for (uint32_t px = 0; px < p->hw; px++) {
            const size_t q = (size_t)r * p->hw + px;
            fl_real *x = a->x + q * c;
            const fl_real *z = a->z + q * cz;
            memcpy(x, a->y + q * ck, ck * sizeof(fl_real));
            if (!p->net) {
                memcpy(x + ck, z, cz * sizeof(fl_real));
                continue;
            }
            const fl_real *ms = p->ms + q * 2 * cz;
            for (uint32_t k = 0; k < cz; k++) {
                x[ck + k] = z[k] * exp(ms[cz + k]) + ms[k];
                sum += ms[cz + k];
            }
        }
        if (a->logdet) a->logdet[r] += sum;
    }
    return FL_OK;
}

static const fl_flow_class split_class = {
    .base = { sizeof(fl_flow_class), "split",
              "factor-out: keeps the first ceil(c/2) channels, the rest leave the flow for the "
              "base density (prior = learned: Glow's conditional Gaussian)",
              split_keys, 1 },
    .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE |
             FL_FLOW_SHAPED,
    .create = sp_create,
    .destroy = sp_destroy,
    .forward = sp_forward,
    .backward = sp_backward,
    .inverse = sp_inverse,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_FLOW, &squeeze_class.base);
    return st == FL_OK ? r->add(r, FL_KIND_FLOW, &split_class.base) : st;
}

FL_PLUGIN("flows-multiscale", "1.0.0", init)
