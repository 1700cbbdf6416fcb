/* nan_flow.c - a flow that yields a non-finite value on purpose, for the
 * tests of non-finite attribution (model/stack.c) and of divergence.
 *
 *   nan-shift: y = x + b (as test-shift), except that it writes NaN into
 *   its output or its log-determinant at one row:
 *     - in its `train_call`-th forward call in training mode (0 = never),
 *     - in every evaluation forward when `eval` is set,
 *     - in every inverse when `inverse` is set;
 *   and writes through a bad pointer (SIGSEGV) in its `crash_call`-th
 *   training forward call (the crash line of core/crash.h).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <flowlab/flowlab.h>

typedef struct nanshift {
    uint32_t dim, row;
    int64_t train_call, crash_call, calls;
    int eval, inverse, logdet;
    size_t b;
} nanshift;

static const fl_key keys[] = {
    { "train_call", FL_KEY_INT, "0", 0, 1e12, NULL,
      "the training forward call (1-based) that yields NaN; 0 = none" },
    { "crash_call", FL_KEY_INT, "0", 0, 1e12, NULL,
      "the training forward call (1-based) that crashes the process; 0 = none" },
    { "eval", FL_KEY_BOOL, "false", 0, 0, NULL, "every evaluation forward yields NaN" },
    { "inverse", FL_KEY_BOOL, "false", 0, 0, NULL, "every inverse yields NaN" },
    { "what", FL_KEY_ENUM, "output", 0, 0, "output|logdet", "where the NaN goes" },
    { "row", FL_KEY_INT, "17", 0, 1e9, NULL, "the row that gets it" },
};

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    nanshift *s = calloc(1, sizeof *s);
    if (!s) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    s->dim = sh->dim;
    s->train_call = h->cfg_int(cx, "train_call");
    s->crash_call = h->cfg_int(cx, "crash_call");
    s->eval = h->cfg_bool(cx, "eval");
    s->inverse = h->cfg_bool(cx, "inverse");
    s->logdet = strcmp(h->cfg_str(cx, "what"), "logdet") == 0;
    s->row = (uint32_t)h->cfg_int(cx, "row");
    fl_param_spec b = { "b", sh->dim, FL_INIT_ZERO, 0, 0, 0, 0 };
    fl_status st = h->param(cx, &b, &s->b);
    if (st != FL_OK) {
        free(s);
        return st;
    }
    *self = s;
    return FL_OK;
}

static void destroy(void *self) { free(self); }

static void poison(const nanshift *s, uint32_t n, fl_real *y, fl_real *logdet)
{
    if (s->row >= n) return;
    if (s->logdet && logdet) logdet[s->row] = (fl_real)NAN;
    else y[(size_t)s->row * s->dim] = (fl_real)NAN;
}

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    nanshift *s = self;
    const fl_real *b = a->theta + s->b;
    for (uint32_t r = 0; r < a->n; r++)
        for (uint32_t j = 0; j < s->dim; j++) {
            size_t i = (size_t)r * s->dim + j;
            a->y[i] = a->x[i] + b[j];
        }
    if (a->mode == FL_MODE_TRAIN && ++s->calls == s->crash_call) {
        /* not NULL: UBSan would stop a store to NULL first; 16 is never mapped */
        volatile int *volatile p = (volatile int *)(uintptr_t)16;
        *p = 1;
    }
    if (a->mode == FL_MODE_TRAIN && s->calls == s->train_call) poison(s, a->n, a->y, a->logdet);
    if (a->mode == FL_MODE_EVAL && s->eval) poison(s, a->n, a->y, a->logdet);
    return FL_OK;
}

static fl_status backward(void *self, const fl_flow_bwd *a)
{
    const nanshift *s = self;
    fl_real *db = a->dtheta + s->b;
    for (uint32_t r = 0; r < a->n; r++)
        for (uint32_t j = 0; j < s->dim; j++) {
            size_t i = (size_t)r * s->dim + j;
            a->dx[i] += a->dy[i];
            db[j] += a->dy[i];
        }
    return FL_OK;
}

static fl_status inverse(void *self, const fl_flow_inv *a)
{
    const nanshift *s = self;
    const fl_real *b = a->theta + s->b;
    for (uint32_t r = 0; r < a->n; r++)
        for (uint32_t j = 0; j < s->dim; j++) {
            size_t i = (size_t)r * s->dim + j;
            a->x[i] = a->y[i] - b[j];
        }
    if (s->inverse) poison(s, a->n, a->x, a->logdet);
    return FL_OK;
}

static const fl_flow_class nan_class = {
    .base = { sizeof(fl_flow_class), "nan-shift",
              "y = x + b, yielding NaN at one row when asked (a test plugin)", keys,
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
    return r->add(r, FL_KIND_FLOW, &nan_class.base);
}

FL_PLUGIN("test-nan", "1.0.0", init)
