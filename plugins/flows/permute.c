/* permute.c - coordinate permutations: reverse, and a seeded random one.
 *
 * Volume-preserving (logdet 0) and exactly invertible. Interleaved between
 * coupling or autoregressive layers so every coordinate gets transformed
 * and conditioned on (IAF's order reversal between steps). */
#include <stdlib.h>

#include <flowlab/flowlab.h>

typedef struct permute {
    uint32_t dim;
    uint32_t *to;   /* y[j] = x[to[j]] */
    uint32_t *from; /* x[j] = y[from[j]] */
} permute;

static void destroy(void *self)
{
    permute *p = self;
    if (!p) return;
    free(p->to);
    free(p->from);
    free(p);
}

static fl_status make(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, int random,
                      void **self)
{
    permute *p = calloc(1, sizeof *p);
    if (!p) return FL_ERR_NOMEM;
    p->dim = sh->dim;
    p->to = calloc(sh->dim, sizeof *p->to);
    p->from = calloc(sh->dim, sizeof *p->from);
    if (!p->to || !p->from) {
        destroy(p);
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    for (uint32_t j = 0; j < sh->dim; j++) p->to[j] = random ? j : sh->dim - 1 - j;
    if (random) {
        fl_rng_key key = h->rng_key(cx, "permutation");
        for (uint32_t j = sh->dim - 1; j > 0; j--) {
            fl_real u;
            fl_rng_uniform(key, 0, j, 1, &u);
            uint32_t k = (uint32_t)(u * (fl_real)(j + 1));
            if (k > j) k = j;
            uint32_t t = p->to[j];
            p->to[j] = p->to[k];
            p->to[k] = t;
        }
    }
    for (uint32_t j = 0; j < sh->dim; j++) p->from[p->to[j]] = j;
    *self = p;
    return FL_OK;
}

static fl_status create_reverse(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    return make(h, cx, sh, 0, self);
}

static fl_status create_random(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    return make(h, cx, sh, 1, self);
}

static void apply(const uint32_t *idx, uint32_t dim, uint32_t n, const fl_real *in, fl_real *out)
{
    for (uint32_t r = 0; r < n; r++) {
        const fl_real *a = in + (size_t)r * dim;
        fl_real *b = out + (size_t)r * dim;
        for (uint32_t j = 0; j < dim; j++) b[j] = a[idx[j]];
    }
}

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    permute *p = self;
    apply(p->to, p->dim, a->n, a->x, a->y);
    return FL_OK;
}

static fl_status backward(void *self, const fl_flow_bwd *a)
{
    permute *p = self;
    for (uint32_t r = 0; r < a->n; r++) {
        const fl_real *dy = a->dy + (size_t)r * p->dim;
        fl_real *dx = a->dx + (size_t)r * p->dim;
        for (uint32_t j = 0; j < p->dim; j++) dx[p->to[j]] += dy[j];
    }
    return FL_OK;
}

static fl_status inverse(void *self, const fl_flow_inv *a)
{
    permute *p = self;
    apply(p->from, p->dim, a->n, a->y, a->x);
    return FL_OK;
}

#define PERM_FLAGS (FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE)

static const fl_flow_class reverse = {
    .base = { sizeof(fl_flow_class), "reverse", "reverses the order of the coordinates", NULL, 0 },
    .flags = PERM_FLAGS,
    .create = create_reverse,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
};

static const fl_flow_class random_perm = {
    .base = { sizeof(fl_flow_class), "permute",
              "a fixed random permutation of the coordinates, seeded by the experiment", NULL, 0 },
    .flags = PERM_FLAGS,
    .create = create_random,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_FLOW, &reverse.base);
    return st == FL_OK ? r->add(r, FL_KIND_FLOW, &random_perm.base) : st;
}

FL_PLUGIN("flows-permute", "1.0.0", init)
