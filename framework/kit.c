/* kit.c - the conformance kit for flow layers. */
#include "kit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hostimpl.h"
#include "params.h"
#include "stack.h"
#include "util.h"

#ifdef FL_REAL_DOUBLE
#define FD_H 1e-5
#define TOL_INV 1e-9
#define TOL_LOGDET 1e-6
#define TOL_GRAD 1e-6
#else
/* float: central differences with h ~ cbrt(eps) balance truncation and
 * rounding; what remains is rounding of O(1e-7 / h). */
#define FD_H 2e-3
#define TOL_INV 2e-4
#define TOL_LOGDET 2e-2
#define TOL_GRAD 2e-2
#endif

typedef struct kit {
    fl_stack *s;
    fl_arena arena;
    const fl_flow_class *cls;
    uint32_t n, d, cd;
    fl_real *x, *c, *y, *ld, *ry, *rl, *dx, *dc, *xi, *tmp;
    const fl_kit_opts *o;
    fl_kit_report *rep;
} kit;

static void report(kit *k, const char *check, const char *what, double err, double tol)
{
    int ok = err <= tol && isfinite(err);
    k->rep->checks++;
    if (!ok) {
        k->rep->failed++;
        if (!k->rep->first_failure[0])
            snprintf(k->rep->first_failure, sizeof k->rep->first_failure,
                     "%s: %s = %.3g exceeds tolerance %.1g", check, what, err, tol);
    }
    if (k->o->out)
        fprintf(k->o->out, "  %-11s %-38s %10.3g  tol %7.1g  %s\n", check, what, err, tol,
                ok ? "ok" : "FAIL");
}

/* L = sum ry . y + sum rl . logdet for the current parameters, in double. */
static fl_status eval_L(kit *k, const fl_real *x, const fl_real *c, double *L)
{
    memset(k->ld, 0, k->n * sizeof(fl_real));
    const fl_real *y;
    fl_status st = fl_stack_forward(k->s, k->n, FL_MODE_TRAIN, x, c, k->ld, &y);
    if (st != FL_OK) return st;
    double acc = 0;
    for (size_t i = 0; i < (size_t)k->n * k->d; i++) acc += (double)k->ry[i] * y[i];
    for (uint32_t r = 0; r < k->n; r++) acc += (double)k->rl[r] * k->ld[r];
    *L = acc;
    return FL_OK;
}

/* log|det A| of a d x d matrix by LU with partial pivoting (A destroyed). */
static double logabsdet(double *a, uint32_t d)
{
    double s = 0;
    for (uint32_t c = 0; c < d; c++) {
        uint32_t p = c;
        for (uint32_t r = c + 1; r < d; r++)
            if (fabs(a[r * d + c]) > fabs(a[p * d + c])) p = r;
        if (a[p * d + c] == 0) return -INFINITY;
        if (p != c)
            for (uint32_t j = 0; j < d; j++) {
                double t = a[c * d + j];
                a[c * d + j] = a[p * d + j];
                a[p * d + j] = t;
            }
        s += log(fabs(a[c * d + c]));
        for (uint32_t r = c + 1; r < d; r++) {
            double f = a[r * d + c] / a[c * d + c];
            for (uint32_t j = c; j < d; j++) a[r * d + j] -= f * a[c * d + j];
        }
    }
    return s;
}

static fl_status check_inverse(kit *k)
{
    if (!(k->cls->flags & FL_FLOW_HAS_INVERSE)) return FL_OK;
    size_t nd = (size_t)k->n * k->d;
    memset(k->ld, 0, k->n * sizeof(fl_real));
    const fl_real *y;
    fl_status st = fl_stack_forward(k->s, k->n, FL_MODE_EVAL, k->x, k->c, k->ld, &y);
    if (st != FL_OK) return st;
    memcpy(k->y, y, nd * sizeof(fl_real));
    fl_real *ldi = k->rl + k->n; /* scratch after rl */
    memset(ldi, 0, k->n * sizeof(fl_real));
    st = fl_stack_inverse(k->s, k->n, FL_MODE_EVAL, k->y, k->c, k->xi, ldi);
    if (st != FL_OK) return st;
    double ex = 0, el = 0;
    for (size_t i = 0; i < nd; i++) {
        double e = fabs((double)k->x[i] - k->xi[i]) / fmax(1.0, fabs((double)k->x[i]));
        ex = fmax(ex, isfinite(e) ? e : INFINITY);
    }
    for (uint32_t r = 0; r < k->n; r++) {
        double e = fabs((double)k->ld[r] + ldi[r]) / fmax(1.0, fabs((double)k->ld[r]));
        el = fmax(el, isfinite(e) ? e : INFINITY);
    }
    report(k, "inverse", "max |x - inverse(forward(x))|", ex, TOL_INV);
    report(k, "inverse", "max |logdet_fwd + logdet_inv|", el, TOL_INV * 10);
    return FL_OK;
}

static fl_status check_logdet(kit *k)
{
    uint32_t d = k->d, rows = k->n < 4 ? k->n : 4;
    double *J = malloc((size_t)d * d * sizeof *J);
    if (!J) return FL_ERR_NOMEM;
    fl_real ld1[1];
    double worst = 0;
    fl_status st = FL_OK;
    for (uint32_t r = 0; r < rows && st == FL_OK; r++) {
        fl_real *xr = k->tmp; /* one row */
        const fl_real *cr = k->cd ? k->c + (size_t)r * k->cd : NULL;
        memcpy(xr, k->x + (size_t)r * d, d * sizeof(fl_real));
        const fl_real *y;
        for (uint32_t j = 0; j < d && st == FL_OK; j++) {
            fl_real keep = xr[j];
            double yp[256], ym[256];
            xr[j] = keep + (fl_real)FD_H;
            ld1[0] = 0;
            st = fl_stack_forward(k->s, 1, FL_MODE_EVAL, xr, cr, ld1, &y);
            for (uint32_t i = 0; i < d && st == FL_OK; i++) yp[i] = y[i];
            xr[j] = keep - (fl_real)FD_H;
            ld1[0] = 0;
            if (st == FL_OK) st = fl_stack_forward(k->s, 1, FL_MODE_EVAL, xr, cr, ld1, &y);
            for (uint32_t i = 0; i < d && st == FL_OK; i++) ym[i] = y[i];
            double hh = ((double)(keep + (fl_real)FD_H) - (double)(keep - (fl_real)FD_H));
            for (uint32_t i = 0; i < d; i++) J[i * d + j] = (yp[i] - ym[i]) / hh;
            xr[j] = keep;
        }
        if (st != FL_OK) break;
        ld1[0] = 0;
        st = fl_stack_forward(k->s, 1, FL_MODE_EVAL, xr, cr, ld1, &y);
        double fd = logabsdet(J, d);
        double e = fabs(fd - (double)ld1[0]) / fmax(1.0, fabs(fd));
        worst = fmax(worst, isfinite(e) ? e : INFINITY);
    }
    free(J);
    if (st == FL_OK) report(k, "logdet", "max |logdet - log|det J_fd||", worst, TOL_LOGDET);
    return st;
}

/* One-sided and central differences of L along unit direction v (applied
 * to p in place) with step h. */
static fl_status diffs(kit *k, fl_real *p, const fl_real *save, size_t len, const fl_real *v,
                       double h, double *left, double *right)
{
    double Lp, L0, Lm;
    fl_status st = eval_L(k, k->x, k->c, &L0);
    for (size_t i = 0; st == FL_OK && i < len; i++) p[i] = save[i] + (fl_real)(h * v[i]);
    if (st == FL_OK) st = eval_L(k, k->x, k->c, &Lp);
    for (size_t i = 0; i < len; i++) p[i] = save[i] - (fl_real)(h * v[i]);
    if (st == FL_OK) st = eval_L(k, k->x, k->c, &Lm);
    memcpy(p, save, len * sizeof *save);
    *left = (L0 - Lm) / h;
    *right = (Lp - L0) / h;
    return st;
}

static double rel(double a, double b) { return fabs(a - b) / fmax(1.0, fmax(fabs(a), fabs(b))); }

/* Compares <g, v> with finite differences of L along v in `p`. Where the
 * left and right differences disagree the step straddles a kink (ReLU):
 * the central difference may be off by half the jump, so the step shrinks
 * once and, if they still disagree, *err = -1 (inconclusive) and the
 * caller draws another direction. */
static fl_status dir_check(kit *k, fl_real *p, size_t len, const fl_real *g, fl_real *v,
                           double *err)
{
    fl_real *save = malloc(len * sizeof *save);
    if (!save) return FL_ERR_NOMEM;
    memcpy(save, p, len * sizeof *save);
    /* A unit direction: the step moves the point by h in total, so the
     * difference stays local however many parameters there are. */
    double nrm = 0, an = 0;
    for (size_t i = 0; i < len; i++) nrm += (double)v[i] * v[i];
    nrm = nrm > 0 ? sqrt(nrm) : 1;
    for (size_t i = 0; i < len; i++) {
        v[i] = (fl_real)(v[i] / nrm);
        an += (double)g[i] * v[i];
    }
    double l, r, h = FD_H;
    fl_status st = diffs(k, p, save, len, v, h, &l, &r);
    if (st == FL_OK && rel(l, r) > TOL_GRAD) {
        h /= 4;
        st = diffs(k, p, save, len, v, h, &l, &r);
    }
    free(save);
    if (rel(l, r) > TOL_GRAD) *err = -1;
    else *err = rel(0.5 * (l + r), an);
    if (*err >= 0 && !isfinite(*err)) *err = INFINITY;
    return st;
}

static fl_status check_grads(kit *k)
{
    size_t nd = (size_t)k->n * k->d, nc = (size_t)k->n * k->cd, np = k->arena.total;
    double L;
    fl_status st = eval_L(k, k->x, k->c, &L);
    if (st != FL_OK) return st;
    fl_arena_zero_grad(&k->arena);
    memset(k->dx, 0, nd * sizeof(fl_real));
    if (k->cd) memset(k->dc, 0, nc * sizeof(fl_real));
    st = fl_stack_backward(k->s, k->n, FL_MODE_TRAIN, k->c, k->ry, k->rl, k->dx,
                           k->cd ? k->dc : NULL);
    if (st != FL_OK) return st;
    fl_real *gth = malloc((np ? np : 1) * sizeof *gth);
    size_t vmax = nd > nc ? nd : nc;
    vmax = vmax > np ? vmax : np;
    fl_real *v = malloc((vmax ? vmax : 1) * sizeof *v);
    if (!gth || !v) {
        free(gth);
        free(v);
        return FL_ERR_NOMEM;
    }
    memcpy(gth, k->arena.grad, np * sizeof *gth);
    fl_rng_key key = fl_rng_key_make(k->o->seed, "kit.directions");
    double ex = 0, et = 0, ec = 0, e;
    int inconclusive = 0;
    /* Up to 12 tries to get 4 conclusive directions per argument. */
    int got[3] = { 0, 0, 0 };
    for (int t = 0; t < 12 && st == FL_OK; t++) {
        if (got[0] < 4) {
            fl_rng_normal(key, 1 + t, 0, nd, v);
            st = dir_check(k, k->x, nd, k->dx, v, &e);
            if (e < 0) inconclusive++;
            else got[0]++, ex = fmax(ex, e);
        }
        if (st == FL_OK && np && got[1] < 4) {
            fl_rng_normal(key, 100 + t, 0, np, v);
            st = dir_check(k, k->arena.theta, np, gth, v, &e);
            if (e < 0) inconclusive++;
            else got[1]++, et = fmax(et, e);
        }
        if (st == FL_OK && nc && got[2] < 4) {
            fl_rng_normal(key, 200 + t, 0, nc, v);
            st = dir_check(k, k->c, nc, k->dc, v, &e);
            if (e < 0) inconclusive++;
            else got[2]++, ec = fmax(ec, e);
        }
    }
    /* Single coordinates catch a missing term that random directions could
     * average away. */
    for (int t = 0; t < 24 && st == FL_OK && np; t++) {
        fl_real u;
        fl_rng_uniform(key, 300, (uint64_t)t, 1, &u);
        size_t idx = (size_t)(u * (fl_real)np);
        if (idx >= np) idx = np - 1;
        memset(v, 0, np * sizeof *v);
        v[idx] = 1;
        st = dir_check(k, k->arena.theta, np, gth, v, &e);
        if (e < 0) inconclusive++;
        else et = fmax(et, e);
    }
    /* Too few conclusive differences is itself a failure: the layer is
     * not smooth enough at these points to be checked. */
    if (got[0] < 4) ex = INFINITY;
    if (np && got[1] < 4) et = INFINITY;
    if (nc && got[2] < 4) ec = INFINITY;
    if (inconclusive && k->o->out)
        fprintf(k->o->out, "  (%d finite differences straddled a kink and were redrawn)\n",
                inconclusive);
    free(gth);
    free(v);
    if (st != FL_OK) return st;
    report(k, "grad x", "max rel. error, 4 directions", ex, TOL_GRAD);
    if (np) report(k, "grad theta", "max rel. error, 4 directions + 24 coords", et, TOL_GRAD);
    if (nc) report(k, "grad c", "max rel. error, 4 directions", ec, TOL_GRAD);
    return FL_OK;
}

fl_status fl_kit_flow(const fl_flow_class *cls, const fl_values *cfg, const fl_kit_opts *o,
                      fl_kit_report *rep)
{
    memset(rep, 0, sizeof *rep);
    kit k = { .cls = cls, .n = o->rows, .d = o->dim, .o = o, .rep = rep };
    k.cd = (cls->flags & FL_FLOW_ACCEPTS_CONTEXT) ? o->ctx_dim : 0;
    if (k.d > 256) {
        fl_err("the kit checks dimensions up to 256");
        return FL_ERR_INVALID;
    }
    fl_values v = { 0 };
    fl_status st;
    if (cfg) {
        /* Copy by re-parsing each value's text against its key. */
        v.section = fl_strdup(cfg->section);
        v.v = calloc(cfg->n + 1, sizeof *v.v);
        if (!v.section || !v.v) return FL_ERR_NOMEM;
        for (size_t i = 0; i < cfg->n; i++) {
            char msg[64];
            fl_value_parse(cfg->v[i].key, cfg->v[i].text, &v.v[i], msg, sizeof msg);
            v.v[i].text = fl_strdup(cfg->v[i].text);
            v.n++;
        }
    } else {
        const fl_key *tabs[2] = { fl_flow_host_keys, cls->base.keys };
        uint32_t ns[2] = { fl_flow_host_nkeys, cls->base.n_keys };
        fl_config *empty = fl_config_new("(defaults)");
        if (!empty) return FL_ERR_NOMEM;
        /* "type" is required; everything else takes its default. */
        st = fl_config_put(empty, "flow", "type", cls->base.name, 0);
        if (st == FL_OK) st = fl_values_resolve(empty, "flow", tabs, ns, 2, &v);
        fl_config_free(empty);
        if (st != FL_OK) return st;
    }
    k.s = fl_stack_new(&k.arena, o->seed, k.d, k.cd, k.n);
    if (!k.s) return FL_ERR_NOMEM;
    st = fl_stack_push(k.s, cls, "flow", &v, 0);
    if (st == FL_OK) st = fl_arena_finalize(&k.arena, o->seed);
    if (st == FL_OK) st = fl_stack_ready(k.s);
    size_t nd = (size_t)k.n * k.d, nc = (size_t)k.n * (k.cd ? k.cd : 1);
    if (st == FL_OK) {
        fl_real **bufs[] = { &k.x, &k.y, &k.dx, &k.xi };
        for (size_t i = 0; i < 4; i++)
            if (!(*bufs[i] = fl_alloc(nd * sizeof(fl_real)))) st = FL_ERR_NOMEM;
        k.ry = fl_alloc(nd * sizeof(fl_real));
        k.c = fl_alloc(nc * sizeof(fl_real));
        k.dc = fl_alloc(nc * sizeof(fl_real));
        k.ld = fl_alloc(k.n * sizeof(fl_real));
        k.rl = fl_alloc(2 * k.n * sizeof(fl_real));
        k.tmp = fl_alloc(k.d * sizeof(fl_real));
        if (!k.ry || !k.c || !k.dc || !k.ld || !k.rl || !k.tmp) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) {
        fl_rng_key key = fl_rng_key_make(o->seed, "kit");
        fl_real *noise = fl_alloc((k.arena.total ? k.arena.total : 1) * sizeof(fl_real));
        if (!noise) st = FL_ERR_NOMEM;
        else {
            fl_rng_normal(key, 1, 0, k.arena.total, noise);
            /* Trained parameters only: state (running statistics) keeps
             * its meaning, e.g. a variance stays positive. */
            for (size_t p = 0; p < k.arena.n; p++) {
                const fl_param_rec *r = &k.arena.p[p];
                if (r->flags & FL_PARAM_STATE) continue;
                for (size_t i = r->offset; i < r->offset + r->size; i++)
                    k.arena.theta[i] += (fl_real)o->theta_noise * noise[i];
            }
            fl_free(noise);
        }
        fl_rng_normal(key, 2, 0, nd, k.x);
        fl_rng_normal(key, 3, 0, (size_t)k.n * k.cd, k.c);
        fl_rng_normal(key, 4, 0, nd, k.ry);
        fl_rng_normal(key, 5, 0, k.n, k.rl);
        if (o->out)
            fprintf(o->out, "%s  dim %u  context %u  rows %u  parameters %zu\n", cls->base.name,
                    k.d, k.cd, k.n, k.arena.count);
    }
    if (st == FL_OK) st = check_inverse(&k);
    if (st == FL_OK && !(cls->flags & FL_FLOW_BATCH_COUPLED)) st = check_logdet(&k);
    if (st == FL_OK) st = check_grads(&k);
    fl_free(k.x);
    fl_free(k.y);
    fl_free(k.dx);
    fl_free(k.xi);
    fl_free(k.ry);
    fl_free(k.c);
    fl_free(k.dc);
    fl_free(k.ld);
    fl_free(k.rl);
    fl_free(k.tmp);
    fl_stack_free(k.s);
    fl_arena_free(&k.arena);
    return st;
}
