/* good_flow.c - an out-of-tree flow plugin, built against include/ only.
 *
 *   shift:  y = x + b,  b a learned vector of size dim,  log|det| = 0
 *
 * It uses only what the ABI offers (config through the host table, a
 * parameter block, no framework headers), so the tests can check that a
 * plugin built outside the tree loads, passes the conformance kit and
 * trains in a real run:
 *
 *   cc -std=c11 -O2 -shared -fPIC -fvisibility=hidden -I include good_flow.c -o shift.so
 */
#include <stdlib.h>

#include <flowlab/flowlab.h>

typedef struct shift {
    uint32_t dim;
    size_t b;  /* offset of b in this instance's parameter block */
} shift;

static const fl_key keys[] = {
    { "init", FL_KEY_REAL, "0", -10, 10, NULL, "initial value of every b_j" },
};

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    shift *s = calloc(1, sizeof *s);
    if (!s) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    s->dim = sh->dim;
    double init = h->cfg_real(cx, "init");
    fl_param_spec b = { "b", sh->dim, init != 0 ? FL_INIT_CONST : FL_INIT_ZERO, 0, 0, init, 0 };
    fl_status st = h->param(cx, &b, &s->b);
    if (st != FL_OK) {
        free(s);
        return st;
    }
    *self = s;
    return FL_OK;
}

static void destroy(void *self) { free(self); }

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    const shift *s = self;
    const fl_real *b = a->theta + s->b;
    for (uint32_t r = 0; r < a->n; r++)
        for (uint32_t j = 0; j < s->dim; j++) {
            size_t i = (size_t)r * s->dim + j;
            a->y[i] = a->x[i] + b[j];
        }
    return FL_OK; /* logdet += 0 */
}

static fl_status backward(void *self, const fl_flow_bwd *a)
{
    const shift *s = self;
    fl_real *db = a->dtheta + s->b;
    for (uint32_t r = 0; r < a->n; r++)
        for (uint32_t j = 0; j < s->dim; j++) {
            size_t i = (size_t)r * s->dim + j;
            a->dx[i] += a->dy[i];
            db[j] += a->dy[i];
        }
    return FL_OK; /* the logdet does not depend on x or b */
}

static fl_status inverse(void *self, const fl_flow_inv *a)
{
    const shift *s = self;
    const fl_real *b = a->theta + s->b;
    for (uint32_t r = 0; r < a->n; r++)
        for (uint32_t j = 0; j < s->dim; j++) {
            size_t i = (size_t)r * s->dim + j;
            a->x[i] = a->y[i] - b[j];
        }
    return FL_OK;
}

static const fl_flow_class shift_class = {
    .base = { sizeof(fl_flow_class), "shift", "y = x + b (a learned translation)", keys,
              sizeof keys / sizeof keys[0] },
    .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE,
    .create = create,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_FLOW, &shift_class.base);
}

#ifdef OLD_MINOR
/* The same plugin as built against the ABI 1.2 headers (before the conv
 * service): the entry written out by hand with that minor. A newer host
 * must load and run it unchanged. */
FL_EXPORT extern const fl_plugin_entry flowlab_plugin_entry;
FL_EXPORT const fl_plugin_entry flowlab_plugin_entry = {
    1, 2, (uint32_t)sizeof(fl_real), "test-shift", "1.0.0", init,
};
#else
FL_PLUGIN("test-shift", "1.0.0", init)
#endif
