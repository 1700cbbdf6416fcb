/* broken.c - flow layers that are wrong on purpose, one bug per build
 * (-DBUG_...), so the conformance kit's own tests can show each bug is
 * caught by the check that should catch it.
 *
 * The correct layer is a small MADE-style shift flow: y = x + m(x), with m
 * an MLP whose masks let m_i see only x_{<i} (natural order); its
 * Jacobian is unit lower triangular, so logdet = 0, plus an element-wise
 * scale y = (x + m(x)) * exp(a) with logdet = sum a.
 *   BUG_LOGDET_SIGN   logdet = -sum a
 *   BUG_BACKWARD      backward forgets the path through m (dx misses J_m)
 *   BUG_INVERSE       "inverse" undoes the scale but not the shift
 *   BUG_MASK          the output mask uses >= : m_i sees x_i (the diagonal)
 *   BUG_ORDER         order() declares the reversed order */
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/flowlab.h>

enum { HID = 16 };

typedef struct made_shift {
    const fl_host *h;
    uint32_t d;
    size_t a_off;
    fl_mlp *m;
    fl_real *mo, *dm, *tmp; /* n x d */
} made_shift;

static void destroy(void *self) { free(self); }

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    made_shift *f = calloc(1, sizeof *f);
    if (!f) return FL_ERR_NOMEM;
    f->h = h;
    f->d = sh->dim;
    uint32_t d = sh->dim, hid = HID;
    uint8_t *m0 = malloc((size_t)d * hid), *m1 = malloc((size_t)hid * d);
    if (!m0 || !m1) {
        free(m0);
        free(m1);
        free(f);
        return FL_ERR_NOMEM;
    }
    /* Degrees: input i has i+1, hidden j has 1 + j % max(d-1, 1). */
    for (uint32_t i = 0; i < d; i++)
        for (uint32_t j = 0; j < hid; j++) {
            uint32_t dh = 1 + j % (d > 1 ? d - 1 : 1);
            m0[i * hid + j] = dh >= i + 1;
#ifdef BUG_MASK
            m1[j * d + i] = i + 1 >= dh;
#else
            m1[j * d + i] = i + 1 > dh;
#endif
        }
    const uint8_t *masks[2] = { m0, m1 };
    uint32_t hw[1] = { hid };
    fl_mlp_spec spec = { "m", d, d, 1, hw, FL_ACT_TANH, FL_INIT_GLOROT, FL_INIT_FANIN, masks, NULL };
    f->m = h->mlp_create(cx, &spec, sh->max_rows);
    free(m0);
    free(m1);
    fl_param_spec a = { "a", d, FL_INIT_ZERO, 0, 0, 0, 0 };
    size_t R = (size_t)sh->max_rows * d * sizeof(fl_real);
    f->mo = h->workspace(cx, R);
    f->dm = h->workspace(cx, R);
    f->tmp = h->workspace(cx, R);
    if (!f->m || h->param(cx, &a, &f->a_off) != FL_OK || !f->mo || !f->dm || !f->tmp) {
        free(f);
        return FL_ERR_NOMEM;
    }
    *self = f;
    return FL_OK;
}

static fl_status forward(void *self, const fl_flow_fwd *p)
{
    made_shift *f = self;
    const fl_real *a = p->theta + f->a_off;
    f->h->mlp_forward(f->m, p->theta, p->n, p->x, f->mo);
    fl_real ld = 0;
    for (uint32_t j = 0; j < f->d; j++) ld += a[j];
#ifdef BUG_LOGDET_SIGN
    ld = -ld;
#endif
    for (uint32_t r = 0; r < p->n; r++) {
        for (uint32_t j = 0; j < f->d; j++) {
            size_t i = (size_t)r * f->d + j;
            p->y[i] = (p->x[i] + f->mo[i]) * exp(a[j]);
        }
        p->logdet[r] += ld;
    }
    return FL_OK;
}

static fl_status backward(void *self, const fl_flow_bwd *p)
{
    made_shift *f = self;
    const fl_real *a = p->theta + f->a_off;
    fl_real *da = p->dtheta + f->a_off;
    for (uint32_t r = 0; r < p->n; r++)
        for (uint32_t j = 0; j < f->d; j++) {
            size_t i = (size_t)r * f->d + j;
            fl_real e = exp(a[j]);
            f->dm[i] = p->dy[i] * e;          /* dL/d(x + m) */
            p->dx[i] += f->dm[i];
            da[j] += p->dy[i] * p->y[i];
#ifdef BUG_LOGDET_SIGN
            da[j] -= p->dlogdet[r];
#else
            da[j] += p->dlogdet[r];
#endif
        }
#ifdef BUG_BACKWARD
    /* the path x -> m -> y is forgotten for x (parameters still get it) */
    memset(f->tmp, 0, (size_t)p->n * f->d * sizeof(fl_real));
    f->h->mlp_backward(f->m, p->theta, p->dtheta, p->n, f->dm, f->tmp);
#else
    f->h->mlp_backward(f->m, p->theta, p->dtheta, p->n, f->dm, p->dx);
#endif
    return FL_OK;
}

/* x_i = y_i exp(-a_i) - m_i(x_{<i}): one coordinate at a time. */
static fl_status inverse(void *self, const fl_flow_inv *p)
{
    made_shift *f = self;
    const fl_real *a = p->theta + f->a_off;
    size_t nd = (size_t)p->n * f->d;
    for (size_t i = 0; i < nd; i++) p->x[i] = p->y[i] * exp(-a[i % f->d]);
#ifndef BUG_INVERSE
    for (uint32_t k = 0; k < f->d; k++) {
        f->h->mlp_forward(f->m, p->theta, p->n, p->x, f->mo);
        for (uint32_t r = 0; r < p->n; r++) {
            size_t i = (size_t)r * f->d + k;
            p->x[i] = p->y[i] * exp(-a[k]) - f->mo[i];
        }
    }
#endif
    if (p->logdet) {
        fl_real ld = 0;
        for (uint32_t j = 0; j < f->d; j++) ld -= a[j];
        for (uint32_t r = 0; r < p->n; r++) p->logdet[r] += ld;
    }
    return FL_OK;
}

static fl_status order(void *self, uint32_t *o)
{
    made_shift *f = self;
#ifdef BUG_ORDER
    for (uint32_t j = 0; j < f->d; j++) o[j] = f->d - 1 - j;
#else
    for (uint32_t j = 0; j < f->d; j++) o[j] = j;
#endif
    return FL_OK;
}

static const fl_flow_class made_shift_class = {
    .base = { sizeof(fl_flow_class), "made-shift", "test layer: y = (x + m(x_<i)) exp(a)", NULL,
              0 },
    .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_AUTOREGRESSIVE,
    .create = create,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
    .order = order,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_FLOW, &made_shift_class.base);
}

FL_PLUGIN("test-made-shift", "1.0.0", init)
