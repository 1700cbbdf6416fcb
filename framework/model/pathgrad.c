/* pathgrad.c - grad_z log q(z) of a flow posterior at its own samples. */
#include "model/pathgrad.h"

#include <math.h>
#include <string.h>

#include "core/crash.h"
#include "core/hostimpl.h"
#include "core/util.h"

fl_status fl_pathgrad_init(fl_pathgrad *p, fl_stack *s, uint32_t max_rows)
{
    memset(p, 0, sizeof *p);
    p->s = s;
    p->max_rows = max_rows;
    p->dim = s->dim;
    for (size_t i = 0; i < s->n; i++)
        if (s->L[i].zdim) {
            /* The score is solved layer by layer on square Jacobians. */
            fl_err("[%s] %s factors out part of its input: the path gradient (stl, dreg) needs "
                   "layers that keep every number",
                   s->L[i].cx->path, s->L[i].cls->base.name);
            return FL_ERR_UNSUPPORTED;
        } else if (s->L[i].cls->flags & FL_FLOW_BATCH_COUPLED) {
            fl_err("[%s] %s couples the rows of a batch: the path gradient (stl, dreg) needs "
                   "row-wise layers",
                   s->L[i].cx->path, s->L[i].cls->base.name);
            return FL_ERR_UNSUPPORTED;
        }
    size_t R = max_rows, d = s->dim, fs = sizeof(fl_real);
    p->dtheta = fl_alloc((s->arena->total ? s->arena->total : 1) * fs);
    p->J = fl_alloc(R * d * d * fs);
    p->gld = fl_alloc(R * d * fs);
    p->dy = fl_alloc(R * d * fs);
    p->ld0 = fl_alloc(R * fs);
    p->ld1 = fl_alloc(R * fs);
    p->a = fl_alloc(R * d * sizeof(double));
    p->lu = fl_alloc((d * d + d) * sizeof(double));
    if (!p->dtheta || !p->J || !p->gld || !p->dy || !p->ld0 || !p->ld1 || !p->a || !p->lu) {
        fl_pathgrad_free(p);
        return FL_ERR_NOMEM;
    }
    for (size_t r = 0; r < R; r++) p->ld1[r] = 1;
    return FL_OK;
}

void fl_pathgrad_free(fl_pathgrad *p)
{
    fl_free(p->dtheta);
    fl_free(p->J);
    fl_free(p->gld);
    fl_free(p->dy);
    fl_free(p->ld0);
    fl_free(p->ld1);
    fl_free(p->a);
    fl_free(p->lu);
    memset(p, 0, sizeof *p);
}

/* Solves A x = b in place (b becomes x) for the d x d row-major A, by LU
 * with partial pivoting. Returns 0 when A is singular. */
static int solve(double *A, double *b, uint32_t d)
{
    for (uint32_t k = 0; k < d; k++) {
        uint32_t piv = k;
        for (uint32_t i = k + 1; i < d; i++)
            if (fabs(A[i * d + k]) > fabs(A[piv * d + k])) piv = i;
        if (!(A[piv * d + k] != 0)) return 0;
        if (piv != k) {
            for (uint32_t j = 0; j < d; j++) {
                double t = A[k * d + j];
                A[k * d + j] = A[piv * d + j];
                A[piv * d + j] = t;
            }
            double t = b[k];
            b[k] = b[piv];
            b[piv] = t;
        }
        for (uint32_t i = k + 1; i < d; i++) {
            double f = A[i * d + k] / A[k * d + k];
            for (uint32_t j = k; j < d; j++) A[i * d + j] -= f * A[k * d + j];
            b[i] -= f * b[k];
        }
    }
    for (uint32_t k = d; k-- > 0;) {
        double v = b[k];
        for (uint32_t j = k + 1; j < d; j++) v -= A[k * d + j] * b[j];
        b[k] = v / A[k * d + k];
    }
    return 1;
}

/* One backward call of layer `l` (its last forward) into dx (zeroed here). */
static fl_status layer_vjp(fl_pathgrad *p, const fl_layer *l, size_t i, uint32_t n, fl_mode mode,
                           const fl_real *c, const fl_real *dy, const fl_real *dlogdet, fl_real *dx)
{
    fl_stack *s = p->s;
    memset(dx, 0, (size_t)n * p->dim * sizeof(fl_real));
    fl_flow_bwd a = { n, mode, s->arena->theta + l->block, p->dtheta + l->block, s->act[i],
                      s->act[i + 1], c, dy, dlogdet, dx, NULL, NULL, NULL };
    fl_host_clear_error();
    fl_crash_enter(l->cx->path, l->cls->base.name, "backward");
    fl_status st = l->cls->backward(l->self, &a);
    fl_crash_leave();
    if (st != FL_OK)
        fl_comp_fail(st, "[%s] %s backward failed in the path gradient", l->cx->path,
                     l->cls->base.name);
    return st;
}

fl_status fl_pathgrad_score(fl_pathgrad *p, uint32_t n, fl_mode mode, const fl_real *a0,
                            fl_real *out)
{
    return fl_pathgrad_score_ctx(p, n, mode, a0, NULL, out);
}

fl_status fl_pathgrad_score_ctx(fl_pathgrad *p, uint32_t n, fl_mode mode, const fl_real *a0,
                                const fl_real *c, fl_real *out)
{
    const uint32_t d = p->dim;
    fl_stack *s = p->s;
    if (n > p->max_rows) {
        fl_err("path gradient: %u rows, more than the %u it was sized for", n, p->max_rows);
        return FL_ERR_INTERNAL;
    }
    for (size_t k = 0; k < (size_t)n * d; k++) p->a[k] = a0[k];
    double *A = p->lu, *b = p->lu + (size_t)d * d;
    for (size_t i = 0; i < s->n; i++) {
        const fl_layer *l = &s->L[i];
        memset(p->dy, 0, (size_t)n * d * sizeof(fl_real));
        fl_status st = layer_vjp(p, l, i, n, mode, c, p->dy, p->ld1, p->gld);
        /* Row j of every row's Jacobian, from dy = e_j. */
        for (uint32_t j = 0; j < d && st == FL_OK; j++) {
            memset(p->dy, 0, (size_t)n * d * sizeof(fl_real));
            for (uint32_t r = 0; r < n; r++) p->dy[(size_t)r * d + j] = 1;
            fl_real *row = p->J + (size_t)j * n * d; /* n x d block for output j */
            st = layer_vjp(p, l, i, n, mode, c, p->dy, p->ld0, row);
        }
        if (st != FL_OK) return st;
        for (uint32_t r = 0; r < n; r++) {
            /* A = J^T: A[c][j] = J[j][c] = d y_j / d x_c. */
            for (uint32_t j = 0; j < d; j++)
                for (uint32_t c = 0; c < d; c++)
                    A[c * d + j] = p->J[(size_t)j * n * d + (size_t)r * d + c];
            double *ar = p->a + (size_t)r * d;
            for (uint32_t c = 0; c < d; c++) b[c] = ar[c] - (double)p->gld[(size_t)r * d + c];
            if (!solve(A, b, d)) {
                fl_err("[%s] %s: singular Jacobian at row %u in the path gradient", l->cx->path,
                       l->cls->base.name, r);
                return FL_ERR_NUMERIC;
            }
            for (uint32_t c = 0; c < d; c++) ar[c] = b[c];
        }
    }
    for (size_t k = 0; k < (size_t)n * d; k++) {
        if (!isfinite(p->a[k])) {
            fl_err("path gradient: non-finite score");
            return FL_ERR_NUMERIC;
        }
        out[k] = (fl_real)p->a[k];
    }
    return FL_OK;
}
