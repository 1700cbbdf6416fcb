/* kit.c - the conformance kit for flow layers.
 *
 * Every check compares a measured error with a tolerance; the float build
 * uses tolerances justified by float rounding of central differences, the
 * double build tight ones. */
#define _DEFAULT_SOURCE /* getline */
#include "kit/kit.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/hostimpl.h"
#include "core/params.h"
#include "model/stack.h"
#include "core/util.h"

#ifdef FL_REAL_DOUBLE
#define FD_H 1e-5
#define TOL_INV 1e-9
#define TOL_LOGDET 1e-6
#define TOL_GRAD 1e-6
#define TOL_SAME 1e-12
#else
/* float: central differences with h ~ cbrt(eps) balance truncation and
 * rounding; what remains is rounding of O(1e-7 / h). */
#define FD_H 2e-3
#define TOL_INV 2e-4
#define TOL_LOGDET 2e-2
#define TOL_GRAD 2e-2
#define TOL_SAME 1e-5
#endif

static const struct {
    const char *name, *what, *key; /* key: the dump's name */
} CHECKS[FL_KIT_N] = {
    [FL_KIT_INVERSE] = { "inverse", "max |x - inverse(forward(x))|", "inverse" },
    [FL_KIT_INVERSE_LOGDET] = { "inverse", "max |logdet_fwd + logdet_inv|", "inverse-logdet" },
    [FL_KIT_LOGDET] = { "logdet", "max |logdet - log|det J_fd||", "logdet" },
#ifdef FL_REAL_DOUBLE
    [FL_KIT_GRAD_X] = { "grad x", "max rel. error, 8 directions", "grad-x" },
    [FL_KIT_GRAD_THETA] = { "grad theta", "max rel. error, 8 dirs + 24 coords", "grad-theta" },
    [FL_KIT_GRAD_C] = { "grad c", "max rel. error, 8 directions", "grad-c" },
#else
    [FL_KIT_GRAD_X] = { "grad x", "median rel. error, 8 directions", "grad-x" },
    [FL_KIT_GRAD_THETA] = { "grad theta", "median rel. error, 8 dirs + 24 coords", "grad-theta" },
    [FL_KIT_GRAD_C] = { "grad c", "median rel. error, 8 directions", "grad-c" },
#endif
    [FL_KIT_TRIANGULAR] = { "triangular", "max |J above diagonal| / max |J|", "triangular" },
    [FL_KIT_CONTEXT] = { "context", "no configuration uses the context", "context" },
    [FL_KIT_EXTREME_X] = { "extreme x", "non-finite outputs at x = +-10", "extreme-x" },
    [FL_KIT_LARGE_THETA] = { "large theta", "non-finite outputs, parameters x3 noise",
                             "large-theta" },
    [FL_KIT_BATCH] = { "batch", "max |rows alone - rows in batch|", "batch" },
    [FL_KIT_TRAIN_EVAL] = { "train=eval", "max |eval - train| at converged stats", "train-eval" },
    [FL_KIT_SEED] = { "seed", "max |two builds, same seed|", "seed" },
};

const char *fl_kit_check_name(int id) { return CHECKS[id].name; }
const char *fl_kit_check_key(int id) { return CHECKS[id].key; }

int fl_kit_check_id(const char *key)
{
    for (int i = 0; i < FL_KIT_N; i++)
        if (strcmp(CHECKS[i].key, key) == 0) return i;
    return -1;
}

typedef struct kit {
    fl_stack *s;
    fl_arena arena;
    const fl_flow_class *cls;
    uint32_t n, d, cd;
    fl_real *x, *c, *y, *ld, *ry, *rl, *dx, *dc, *xi, *tmp;
    const fl_kit_opts *o;
    fl_kit_report *rep;
    double labs;   /* sum of |terms| of the last L */
    char shape[48]; /* "dim 5" or "shape 2x4x4", for messages */
    fl_kit_failure *fail; /* where to capture the first failure, or NULL */
    const fl_values *cfg; /* the configuration (for the capture), or NULL */
    fl_real *theta0;      /* arena.theta when the current check started */
    /* What the current check compared, for the capture: set by each check
     * just before report(). */
    int drow;
    double da, db;
    char dwa[64], dwb[64];
} kit;

static void detail(kit *k, int row, double a, const char *wa, double b, const char *wb)
{
    k->drow = row;
    k->da = a;
    k->db = b;
    snprintf(k->dwa, sizeof k->dwa, "%s", wa);
    snprintf(k->dwb, sizeof k->dwb, "%s", wb);
}

/* Capturing is on for this check: a failure struct still empty (and
 * waiting for this check, when it waits for one). */
static int capturing(const kit *k, int id)
{
    const fl_kit_failure *f = k->fail;
    return f && f->check < 0 && k->theta0 && (f->want < 0 || f->want == id);
}

static fl_real *dup_reals(const fl_real *a, size_t n)
{
    fl_real *r = malloc((n ? n : 1) * sizeof *r);
    if (r && n) memcpy(r, a, n * sizeof *r);
    return r;
}

/* Copies the current run's inputs and the check's comparison into
 * k->fail. Out of memory leaves a partial capture (check set, arrays
 * NULL), which prints without the values and is not dumped. */
static void capture(kit *k, int id, double err, double tol)
{
    fl_kit_failure *f = k->fail;
    size_t nd = (size_t)k->n * k->d;
    f->check = id;
    f->err = err;
    f->tol = tol;
    f->row = k->drow;
    f->a = k->da;
    f->b = k->db;
    snprintf(f->a_what, sizeof f->a_what, "%s", k->dwa);
    snprintf(f->b_what, sizeof f->b_what, "%s", k->dwb);
    f->flow = fl_strdup(k->cls->base.name);
    f->dim = k->d;
    f->ctx_dim = k->cd;
    f->rows = k->n;
    f->c = k->o->c;
    f->h = k->o->h;
    f->w = k->o->w;
    f->seed = k->o->seed;
    f->noise = k->o->theta_noise;
    f->x = dup_reals(k->x, nd);
    f->ctx = dup_reals(k->c, (size_t)k->n * k->cd);
    f->ry = dup_reals(k->ry, nd);
    f->rl = dup_reals(k->rl, k->n);
    f->theta = dup_reals(k->theta0, k->arena.total);
    f->n_theta = k->arena.total;
    f->pname = calloc(k->arena.n + 1, sizeof *f->pname);
    f->poff = calloc(k->arena.n + 1, sizeof *f->poff);
    f->psize = calloc(k->arena.n + 1, sizeof *f->psize);
    if (f->pname && f->poff && f->psize)
        for (size_t p = 0; p < k->arena.n; p++) {
            f->pname[p] = fl_strdup(k->arena.p[p].name);
            f->poff[p] = k->arena.p[p].offset;
            f->psize[p] = k->arena.p[p].size;
            f->n_params++;
        }
    if (k->cfg) {
        f->key = calloc(k->cfg->n + 1, sizeof *f->key);
        f->val = calloc(k->cfg->n + 1, sizeof *f->val);
        for (size_t i = 0; f->key && f->val && i < k->cfg->n; i++) {
            if (strcmp(k->cfg->v[i].key->name, "type") == 0) continue;
            f->key[f->n_keys] = fl_strdup(k->cfg->v[i].key->name);
            f->val[f->n_keys++] = fl_strdup(k->cfg->v[i].text);
        }
    }
}

static void report(kit *k, int id, double err, double tol)
{
    int ok = err <= tol && !isnan(err);
    fl_kit_stat *s = &k->rep->stat[id];
    double ratio = tol > 0 ? err / tol : (err > 0 ? INFINITY : 0);
    if (isnan(ratio)) ratio = INFINITY;
    k->rep->checks++;
    s->runs++;
    if (!s->runs || ratio >= s->worst) {
        s->worst = ratio;
        s->worst_err = err;
    }
    s->tol = tol;
    if (!ok) {
        if (capturing(k, id)) capture(k, id, err, tol);
        s->fails++;
        k->rep->failed++;
        if (!s->first_failure[0])
            snprintf(s->first_failure, sizeof s->first_failure, "%s, context %u, rows %u",
                     k->shape, k->cd, k->n);
        if (!k->rep->first_failure[0])
            snprintf(k->rep->first_failure, sizeof k->rep->first_failure,
                     "%s: %s = %.3g exceeds tolerance %.1g (%s, context %u, rows %u)",
                     CHECKS[id].name, CHECKS[id].what, err, tol, k->shape, k->cd, k->n);
    }
    if (k->o->out)
        fprintf(k->o->out, "  %-11s %-38s %10.3g  tol %7.1g  %s\n", CHECKS[id].name,
                CHECKS[id].what, err, tol, ok ? "ok" : "FAIL");
}

/* L = sum ry . y + sum rl . logdet for the current parameters, in double;
 * k->labs gets sum |terms|, the scale of L's rounding error. */
static fl_status eval_L(kit *k, const fl_real *x, const fl_real *c, double *L)
{
    memset(k->ld, 0, k->n * sizeof(fl_real));
    const fl_real *y;
    fl_status st = fl_stack_forward(k->s, k->n, FL_MODE_TRAIN, x, c, k->ld, &y);
    if (st != FL_OK) return st;
    double acc = 0, abs_acc = 0;
    for (size_t i = 0; i < (size_t)k->n * k->d; i++) {
        acc += (double)k->ry[i] * y[i];
        abs_acc += fabs((double)k->ry[i] * y[i]);
    }
    for (uint32_t r = 0; r < k->n; r++) {
        acc += (double)k->rl[r] * k->ld[r];
        abs_acc += fabs((double)k->rl[r] * k->ld[r]);
    }
    *L = acc;
    k->labs = abs_acc;
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
    size_t wi = 0, wr = 0; /* where the worst errors are */
    for (size_t i = 0; i < nd; i++) {
        double e = fabs((double)k->x[i] - k->xi[i]) / fmax(1.0, fabs((double)k->x[i]));
        e = isfinite(e) ? e : INFINITY;
        if (e > ex) ex = e, wi = i;
    }
    for (uint32_t r = 0; r < k->n; r++) {
        double e = fabs((double)k->ld[r] + ldi[r]) / fmax(1.0, fabs((double)k->ld[r]));
        e = isfinite(e) ? e : INFINITY;
        if (e > el) el = e, wr = r;
    }
    char what_x[64], what_xi[64];
    snprintf(what_x, sizeof what_x, "x[%zu]", wi % k->d);
    snprintf(what_xi, sizeof what_xi, "inverse(forward(x))[%zu]", wi % k->d);
    detail(k, (int)(wi / k->d), k->x[wi], what_x, k->xi[wi], what_xi);
    report(k, FL_KIT_INVERSE, ex, TOL_INV);
    detail(k, (int)wr, k->ld[wr], "logdet of forward", -(double)ldi[wr], "-(logdet of inverse)");
    report(k, FL_KIT_INVERSE_LOGDET, el, TOL_INV * 10);
    return FL_OK;
}

/* J (d x d, J[i*d+j] = dy_i/dx_j) of row r by central differences, one
 * row per call (evaluation mode); *ld gets the layer's logdet there. */
static fl_status fd_jacobian(kit *k, uint32_t r, double *J, fl_real *ld)
{
    uint32_t d = k->d;
    fl_real *xr = k->tmp, ld1[1];
    const fl_real *cr = k->cd ? k->c + (size_t)r * k->cd : NULL;
    memcpy(xr, k->x + (size_t)r * d, d * sizeof(fl_real));
    const fl_real *y;
    fl_status st = FL_OK;
    double *yp = malloc(2 * (size_t)d * sizeof *yp);
    if (!yp) return FL_ERR_NOMEM;
    double *ym = yp + d;
    for (uint32_t j = 0; j < d && st == FL_OK; j++) {
        fl_real keep = xr[j];
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
    free(yp);
    ld[0] = 0;
    if (st == FL_OK) st = fl_stack_forward(k->s, 1, FL_MODE_EVAL, xr, cr, ld, &y);
    return st;
}

static fl_status check_logdet(kit *k)
{
    uint32_t d = k->d, rows = k->n < 4 ? k->n : 4;
    double *J = malloc((size_t)d * d * sizeof *J);
    if (!J) return FL_ERR_NOMEM;
    double worst = 0;
    fl_status st = FL_OK;
    detail(k, 0, 0, "", 0, "");
    for (uint32_t r = 0; r < rows && st == FL_OK; r++) {
        fl_real ld;
        st = fd_jacobian(k, r, J, &ld);
        double fd = logabsdet(J, d);
        double e = fabs(fd - (double)ld) / fmax(1.0, fabs(fd));
        e = isfinite(e) ? e : INFINITY;
        if (r == 0 || e > worst)
            detail(k, (int)r, ld, "the layer's logdet", fd, "log|det J|, J by finite differences");
        worst = fmax(worst, e);
    }
    free(J);
    if (st == FL_OK) report(k, FL_KIT_LOGDET, worst, TOL_LOGDET);
    return st;
}

/* Autoregressive layers: y[order[i]] may depend on x[order[j]] only for
 * j <= i, so the Jacobian permuted by the order is lower triangular. A
 * masked weight contributes an exact zero, so the tolerance is tiny. */
static fl_status check_triangular(kit *k)
{
    if (!(k->cls->flags & FL_FLOW_AUTOREGRESSIVE) || !k->cls->order) return FL_OK;
    uint32_t d = k->d;
    double *J = malloc((size_t)d * d * sizeof *J);
    uint32_t *ord = malloc(d * sizeof *ord), *seen = calloc(d, sizeof *seen);
    fl_status st = J && ord && seen ? FL_OK : FL_ERR_NOMEM;
    if (st == FL_OK) st = k->cls->order(k->s->L[0].self, ord);
    double worst = 0;
    for (uint32_t i = 0; st == FL_OK && i < d; i++) {
        if (ord[i] >= d || seen[ord[i]]++) {
            fl_err("[flow] %s: order() is not a permutation of 0..%u", k->cls->base.name, d - 1);
            st = FL_ERR_INVALID;
        }
    }
    detail(k, 0, 0, "", 0, "");
    for (uint32_t r = 0; st == FL_OK && r < (k->n < 2 ? k->n : 2); r++) {
        fl_real ld;
        st = fd_jacobian(k, r, J, &ld);
        double big = 1e-30, up = 0;
        for (uint32_t i = 0; i < d * d; i++) big = fmax(big, fabs(J[i]));
        for (uint32_t i = 0; i < d; i++)
            for (uint32_t j = i + 1; j < d; j++) up = fmax(up, fabs(J[ord[i] * d + ord[j]]));
        if (r == 0 || up / big > worst)
            detail(k, (int)r, up, "max |J| above the diagonal (declared order)", big,
                   "max |J|");
        worst = fmax(worst, up / big);
    }
    free(J);
    free(ord);
    free(seen);
    if (st == FL_OK) report(k, FL_KIT_TRIANGULAR, worst, TOL_SAME);
    return st;
}

/* How much the output moves when the context moves (not pass/fail per
 * run: fl_kit_class requires some configuration to use the context). */
static fl_status measure_context(kit *k)
{
    if (!k->cd) return FL_OK;
    size_t nd = (size_t)k->n * k->d, nc = (size_t)k->n * k->cd;
    fl_real *c2 = malloc(nc * sizeof *c2), *ld2 = k->rl + k->n;
    if (!c2) return FL_ERR_NOMEM;
    for (size_t i = 0; i < nc; i++) c2[i] = k->c[i] + (fl_real)0.5;
    memset(k->ld, 0, k->n * sizeof(fl_real));
    memset(ld2, 0, k->n * sizeof(fl_real));
    const fl_real *y;
    fl_status st = fl_stack_forward(k->s, k->n, FL_MODE_EVAL, k->x, k->c, k->ld, &y);
    if (st == FL_OK) memcpy(k->y, y, nd * sizeof(fl_real));
    if (st == FL_OK) st = fl_stack_forward(k->s, k->n, FL_MODE_EVAL, k->x, c2, ld2, &y);
    double eff = 0;
    for (size_t i = 0; st == FL_OK && i < nd; i++) eff = fmax(eff, fabs((double)y[i] - k->y[i]));
    for (uint32_t r = 0; st == FL_OK && r < k->n; r++) eff = fmax(eff, fabs((double)ld2[r] - k->ld[r]));
    free(c2);
    if (st == FL_OK && eff > k->rep->context_effect) k->rep->context_effect = eff;
    if (st == FL_OK && k->o->out)
        fprintf(k->o->out, "  %-11s %-38s %10.3g\n", "context", "max |y(c) - y(c + 0.5)|", eff);
    return st;
}

static size_t count_nonfinite(const fl_real *a, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(a[i]);
    return bad;
}

/* Forward (train and eval) and inverse stay finite at inputs of +-10. */
static fl_status check_extreme(kit *k)
{
    size_t nd = (size_t)k->n * k->d;
    fl_real *xe = malloc(nd * sizeof *xe);
    if (!xe) return FL_ERR_NOMEM;
    for (size_t i = 0; i < nd; i++) xe[i] = (fl_real)((i / k->d + i) % 3 == 0 ? -10 : 10);
    size_t bad = 0;
    fl_status st = FL_OK;
    for (int mode = 0; mode < 2 && st == FL_OK; mode++) {
        const fl_real *y;
        memset(k->ld, 0, k->n * sizeof(fl_real));
        st = fl_stack_forward(k->s, k->n, mode ? FL_MODE_EVAL : FL_MODE_TRAIN, xe, k->c, k->ld, &y);
        if (st != FL_OK) break;
        bad += count_nonfinite(y, nd) + count_nonfinite(k->ld, k->n);
    }
    if (st == FL_OK && (k->cls->flags & FL_FLOW_HAS_INVERSE)) {
        memset(k->ld, 0, k->n * sizeof(fl_real));
        st = fl_stack_inverse(k->s, k->n, FL_MODE_EVAL, xe, k->c, k->xi, k->ld);
        if (st == FL_OK) bad += count_nonfinite(k->xi, nd) + count_nonfinite(k->ld, k->n);
    }
    free(xe);
    detail(k, -1, (double)bad, "non-finite outputs at x = +-10", 0, "allowed");
    if (st == FL_OK) report(k, FL_KIT_EXTREME_X, (double)bad, 0);
    return st;
}

/* Forward and inverse stay finite with much larger parameter noise. */
static fl_status check_large_theta(kit *k, const fl_real *noise)
{
    size_t nd = (size_t)k->n * k->d, np = k->arena.total;
    fl_real *save = malloc((np ? np : 1) * sizeof *save);
    if (!save) return FL_ERR_NOMEM;
    memcpy(save, k->arena.theta, np * sizeof *save);
    for (size_t p = 0; p < k->arena.n; p++) {
        const fl_param_rec *r = &k->arena.p[p];
        if (r->flags & FL_PARAM_STATE) continue;
        for (size_t i = r->offset; i < r->offset + r->size; i++)
            k->arena.theta[i] += (fl_real)(2 * k->o->theta_noise) * noise[i];
    }
    const fl_real *y;
    memset(k->ld, 0, k->n * sizeof(fl_real));
    fl_status st = fl_stack_forward(k->s, k->n, FL_MODE_EVAL, k->x, k->c, k->ld, &y);
    size_t bad = 0;
    if (st == FL_OK) {
        bad = count_nonfinite(y, nd) + count_nonfinite(k->ld, k->n);
        memcpy(k->y, y, nd * sizeof(fl_real));
    }
    if (st == FL_OK && (k->cls->flags & FL_FLOW_HAS_INVERSE)) {
        memset(k->ld, 0, k->n * sizeof(fl_real));
        st = fl_stack_inverse(k->s, k->n, FL_MODE_EVAL, k->y, k->c, k->xi, k->ld);
        if (st == FL_OK) bad += count_nonfinite(k->xi, nd) + count_nonfinite(k->ld, k->n);
    }
    memcpy(k->arena.theta, save, np * sizeof *save);
    free(save);
    detail(k, -1, (double)bad, "non-finite outputs, parameters with noise x3", 0, "allowed");
    if (st == FL_OK) report(k, FL_KIT_LARGE_THETA, (double)bad, 0);
    return st;
}

/* Rows do not interact in evaluation mode (batch-coupled layers
 * included): the first half alone gives what it gives inside the whole
 * batch, up to the rounding of differently tiled GEMMs. */
static fl_status check_batch(kit *k)
{
    if (k->n < 2) return FL_OK;
    size_t nd = (size_t)k->n * k->d;
    uint32_t h = k->n / 2;
    const fl_real *y;
    memset(k->ld, 0, k->n * sizeof(fl_real));
    fl_status st = fl_stack_forward(k->s, k->n, FL_MODE_EVAL, k->x, k->c, k->ld, &y);
    if (st != FL_OK) return st;
    memcpy(k->y, y, nd * sizeof(fl_real));
    fl_real *ld2 = k->rl + k->n;
    memset(ld2, 0, k->n * sizeof(fl_real));
    st = fl_stack_forward(k->s, h, FL_MODE_EVAL, k->x, k->c, ld2, &y);
    if (st != FL_OK) return st;
    double e = 0;
    detail(k, 0, y[0], "y, first rows alone", k->y[0], "y, in the whole batch");
    for (size_t i = 0; i < (size_t)h * k->d; i++) {
        double ei = fabs((double)y[i] - k->y[i]) / fmax(1.0, fabs((double)k->y[i]));
        if (!(ei <= e))
            detail(k, (int)(i / k->d), y[i], "y, first rows alone", k->y[i],
                   "y, in the whole batch");
        e = fmax(e, ei);
    }
    for (uint32_t r = 0; r < h; r++) {
        double ei = fabs((double)ld2[r] - k->ld[r]) / fmax(1.0, fabs((double)k->ld[r]));
        if (!(ei <= e))
            detail(k, (int)r, ld2[r], "logdet, first rows alone", k->ld[r],
                   "logdet, in the whole batch");
        e = fmax(e, ei);
    }
    if (isnan(e)) e = INFINITY;
    report(k, FL_KIT_BATCH, e, TOL_SAME);
    return FL_OK;
}

/* Batch-coupled layers (batch norm): after many training passes over one
 * batch the running statistics equal the batch's, and then evaluation
 * mode must reproduce training mode. */
static fl_status check_train_eval(kit *k)
{
    if (!(k->cls->flags & FL_FLOW_BATCH_COUPLED)) return FL_OK;
    size_t nd = (size_t)k->n * k->d;
    const fl_real *y;
    fl_status st = FL_OK;
    for (int it = 0; it < 1000 && st == FL_OK; it++) {
        memset(k->ld, 0, k->n * sizeof(fl_real));
        st = fl_stack_forward(k->s, k->n, FL_MODE_TRAIN, k->x, k->c, k->ld, &y);
    }
    if (st != FL_OK) return st;
    memcpy(k->y, y, nd * sizeof(fl_real));
    fl_real *ld2 = k->rl + k->n;
    memset(ld2, 0, k->n * sizeof(fl_real));
    st = fl_stack_forward(k->s, k->n, FL_MODE_EVAL, k->x, k->c, ld2, &y);
    if (st != FL_OK) return st;
    double e = 0;
    detail(k, 0, y[0], "y, evaluation mode", k->y[0], "y, training mode");
    for (size_t i = 0; i < nd; i++) {
        double ei = fabs((double)y[i] - k->y[i]) / fmax(1.0, fabs((double)k->y[i]));
        if (!(ei <= e))
            detail(k, (int)(i / k->d), y[i], "y, evaluation mode", k->y[i], "y, training mode");
        e = fmax(e, ei);
    }
    for (uint32_t r = 0; r < k->n; r++) {
        double ei = fabs((double)ld2[r] - k->ld[r]) / fmax(1.0, fabs((double)k->ld[r]));
        if (!(ei <= e))
            detail(k, (int)r, ld2[r], "logdet, evaluation mode", k->ld[r],
                   "logdet, training mode");
        e = fmax(e, ei);
    }
    if (isnan(e)) e = INFINITY;
    report(k, FL_KIT_TRAIN_EVAL, e, TOL_INV * 10);
    return FL_OK;
}

/* One-sided and central differences of L along unit direction v (applied
 * to p in place) with step h. */
static fl_status diffs(kit *k, fl_real *p, const fl_real *save, size_t len, const fl_real *v,
                       double h, double *left, double *right)
{
    double Lp = 0, L0 = 0, Lm = 0; /* read below even when an evaluation failed */
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


/* Compares <g, v> with finite differences of L along v in `p`.
 *
 * Kinks (ReLU) make finite differences lie: a step straddling one moves the
 * central difference by up to half the jump in slope, whatever the step.
 * The gap between the one-sided differences, D(h) = left - right, tells
 * them apart: for a smooth L it is h L'' and halves with h; across a kink
 * it is the jump and does not. So D is taken at h and h/2, and when
 * D(h/2) is not D(h)/2 the step is shrunk once more, and if that fails too
 * *err = -1 (inconclusive) and the caller draws another direction. */
static fl_status dir_check(kit *k, fl_real *p, size_t len, const fl_real *g, fl_real *v,
                           double *err, double *an_out, double *fd_out)
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
    double h = FD_H, l1, r1, l2, r2, kink = INFINITY, noise_c = 0;
    fl_status st = FL_OK;
    for (int tries = 0; tries < 2 && st == FL_OK && !(kink <= TOL_GRAD / 4); tries++) {
        st = diffs(k, p, save, len, v, h, &l1, &r1);
        if (st == FL_OK) st = diffs(k, p, save, len, v, h / 2, &l2, &r2);
        double scale = fmax(1.0, fmax(fabs(l2), fabs(r2)));
        /* Rounding of L (relative eps per term) bounds how well D is known:
         * |error of D(h)| <= 4 eps sum|terms| / h. */
        const double eps = sizeof(fl_real) == 4 ? 6e-8 : 1.2e-16;
        double noise = 4 * eps * k->labs * (1 / h + 2 / h);
        /* and of the central difference at h/2 */
        noise_c = 2 * eps * k->labs / (h / 2);
        kink = fmax(0.0, fabs((l2 - r2) - 0.5 * (l1 - r1)) - noise) / scale;
        if (isnan(kink)) kink = INFINITY;
        h /= 8;
    }
    free(save);
    if (!(kink <= TOL_GRAD / 4)) *err = -1;
    else {
        /* Only the disagreement beyond the difference's own rounding. */
        double c = 0.5 * (l2 + r2);
        *err = fmax(0.0, fabs(c - an) - noise_c) / fmax(1.0, fmax(fabs(c), fabs(an)));
        if (an_out) *an_out = an;
        if (fd_out) *fd_out = c;
    }
    if (*err >= 0 && !isfinite(*err)) *err = INFINITY;
    return st;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The verdict over several finite-difference errors. In double the worst
 * one. In float the median: a ReLU kink can corrupt one float difference
 * beyond what the kink test sees, while a wrong gradient corrupts them
 * all. Too few conclusive differences is itself a failure: the layer is not
 * smooth enough at these points to be checked. */
static double verdict(double *e, int n, int need)
{
    if (n < need) return INFINITY;
    qsort(e, (size_t)n, sizeof *e, cmp_double);
#ifdef FL_REAL_DOUBLE
    return e[n - 1];
#else
    return e[n / 2];
#endif
}

enum { N_DIRS = 8, N_COORDS = 24 };

/* For the capture of a failed gradient check: the row whose own
 * directional derivative is furthest from its finite difference, and its
 * two numbers. For x and the context the direction lives in row r only;
 * for the parameters L is cut down to row r (ry and rl zero elsewhere) and
 * backward re-run. `v` is scratch of max(n d, n cd, parameters) reals. */
static fl_status localize(kit *k, int id, fl_real *v)
{
    const size_t nd = (size_t)k->n * k->d, np = k->arena.total;
    const int th = id == FL_KIT_GRAD_THETA;
    fl_rng_key key = fl_rng_key_make(k->o->seed, "kit.localize");
    fl_real *ry = th ? dup_reals(k->ry, nd) : NULL, *rl = th ? dup_reals(k->rl, k->n) : NULL;
    fl_real *g = th ? malloc((np ? np : 1) * sizeof *g) : NULL;
    fl_status st = !th || (ry && rl && g) ? FL_OK : FL_ERR_NOMEM;
    double worst = -1;
    detail(k, -1, 0, "backward: <gradient, direction>", 0, "finite difference of L along it");
    for (uint32_t r = 0; r < k->n && st == FL_OK; r++) {
        double e = -1, an = 0, fd = 0;
        if (th) {
            memset(k->ry, 0, nd * sizeof *ry);
            memset(k->rl, 0, k->n * sizeof *rl);
            memcpy(k->ry + (size_t)r * k->d, ry + (size_t)r * k->d, k->d * sizeof *ry);
            k->rl[r] = rl[r];
            double L;
            st = eval_L(k, k->x, k->c, &L);
            fl_arena_zero_grad(&k->arena);
            memset(k->dx, 0, nd * sizeof(fl_real));
            if (k->cd) memset(k->dc, 0, (size_t)k->n * k->cd * sizeof(fl_real));
            if (st == FL_OK)
                st = fl_stack_backward(k->s, k->n, FL_MODE_TRAIN, k->c, k->ry, k->rl, k->dx,
                                       k->cd ? k->dc : NULL);
            if (st != FL_OK) break;
            memcpy(g, k->arena.grad, np * sizeof *g);
            fl_rng_normal(key, 1 + r, 0, np, v);
            for (size_t p = 0; p < k->arena.n; p++)
                if (k->arena.p[p].flags & FL_PARAM_STATE)
                    memset(v + k->arena.p[p].offset, 0, k->arena.p[p].size * sizeof *v);
            st = dir_check(k, k->arena.theta, np, g, v, &e, &an, &fd);
        } else {
            const int isx = id == FL_KIT_GRAD_X;
            const size_t w = isx ? k->d : k->cd, len = (size_t)k->n * w;
            memset(v, 0, len * sizeof *v);
            fl_rng_normal(key, 1 + r, 0, w, v + (size_t)r * w);
            st = dir_check(k, isx ? k->x : k->c, len, isx ? k->dx : k->dc, v, &e, &an, &fd);
        }
        if (st == FL_OK && e > worst) {
            worst = e;
            detail(k, (int)r, an, "backward: <gradient, direction>", fd,
                   "finite difference of L along it");
        }
    }
    if (th && ry && rl) {
        memcpy(k->ry, ry, nd * sizeof *ry);
        memcpy(k->rl, rl, k->n * sizeof *rl);
    }
    free(ry);
    free(rl);
    free(g);
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
    double ex[N_DIRS], et[N_DIRS], ec[N_DIRS], e;
    int got[3] = { 0, 0, 0 }, inconclusive = 0;
    /* Up to 3x as many tries as conclusive directions needed. */
    for (int t = 0; t < 3 * N_DIRS && st == FL_OK; t++) {
        if (got[0] < N_DIRS) {
            fl_rng_normal(key, 1 + t, 0, nd, v);
            st = dir_check(k, k->x, nd, k->dx, v, &e, NULL, NULL);
            if (e < 0) inconclusive++;
            else ex[got[0]++] = e;
        }
        if (st == FL_OK && np && got[1] < N_DIRS) {
            fl_rng_normal(key, 100 + t, 0, np, v);
            /* State (running statistics) is not a parameter: no gradient,
             * not perturbed. */
            for (size_t p = 0; p < k->arena.n; p++)
                if (k->arena.p[p].flags & FL_PARAM_STATE)
                    memset(v + k->arena.p[p].offset, 0, k->arena.p[p].size * sizeof *v);
            st = dir_check(k, k->arena.theta, np, gth, v, &e, NULL, NULL);
            if (e < 0) inconclusive++;
            else et[got[1]++] = e;
        }
        if (st == FL_OK && nc && got[2] < N_DIRS) {
            fl_rng_normal(key, 200 + t, 0, nc, v);
            st = dir_check(k, k->c, nc, k->dc, v, &e, NULL, NULL);
            if (e < 0) inconclusive++;
            else ec[got[2]++] = e;
        }
    }
    /* Single coordinates catch a missing term that random directions could
     * average away; they join the parameter directions' verdict. */
    /* Coordinates are drawn among trained entries only: not padding, not
     * state. */
    size_t ntrained = 0;
    for (size_t p = 0; p < k->arena.n; p++)
        if (!(k->arena.p[p].flags & FL_PARAM_STATE)) ntrained += k->arena.p[p].size;
    int ncoord = 0;
    double ecoord[N_COORDS];
    for (int t = 0; t < N_COORDS && st == FL_OK && ntrained; t++) {
        fl_real u;
        fl_rng_uniform(key, 300, (uint64_t)t, 1, &u);
        size_t pick = (size_t)(u * (fl_real)ntrained), idx = 0;
        if (pick >= ntrained) pick = ntrained - 1;
        for (size_t p = 0; p < k->arena.n; p++) {
            const fl_param_rec *r = &k->arena.p[p];
            if (r->flags & FL_PARAM_STATE) continue;
            if (pick < r->size) {
                idx = r->offset + pick;
                break;
            }
            pick -= r->size;
        }
        memset(v, 0, np * sizeof *v);
        v[idx] = 1;
        st = dir_check(k, k->arena.theta, np, gth, v, &e, NULL, NULL);
        if (e < 0) inconclusive++;
        else ecoord[ncoord++] = e;
    }
    free(gth);
    if (st != FL_OK) {
        free(v);
        return st;
    }
    if (inconclusive && k->o->out)
        fprintf(k->o->out, "  (%d finite differences straddled a kink and were redrawn)\n",
                inconclusive);
    /* Directions and single coordinates are judged separately: a term
     * missing from a few parameters shows in every direction, a term
     * missing from many parameters in most coordinates. */
    double vx = verdict(ex, got[0], N_DIRS / 2), vc = nc ? verdict(ec, got[2], N_DIRS / 2) : 0;
    double vt = np ? fmax(verdict(et, got[1], N_DIRS / 2),
                          ntrained ? verdict(ecoord, ncoord, N_COORDS / 2) : 0.0)
                   : 0;
    /* Localising re-runs backward (for theta), so it follows the report
     * order and stops at the first capture. */
    if (!(vx <= TOL_GRAD) && capturing(k, FL_KIT_GRAD_X)) st = localize(k, FL_KIT_GRAD_X, v);
    if (st == FL_OK) report(k, FL_KIT_GRAD_X, vx, TOL_GRAD);
    if (st == FL_OK && np && !(vt <= TOL_GRAD) && capturing(k, FL_KIT_GRAD_THETA))
        st = localize(k, FL_KIT_GRAD_THETA, v);
    if (st == FL_OK && np) report(k, FL_KIT_GRAD_THETA, vt, TOL_GRAD);
    if (st == FL_OK && nc && !(vc <= TOL_GRAD) && capturing(k, FL_KIT_GRAD_C))
        st = localize(k, FL_KIT_GRAD_C, v);
    if (st == FL_OK && nc) report(k, FL_KIT_GRAD_C, vc, TOL_GRAD);
    free(v);
    return st;
}

static void kit_free(kit *k)
{
    fl_real *bufs[] = { k->x, k->y, k->dx, k->xi, k->ry, k->c, k->dc, k->ld, k->rl, k->tmp };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) fl_free(bufs[i]);
    fl_stack_free(k->s);
    fl_arena_free(&k->arena);
}

/* Copies resolved values (fl_stack_push takes ownership of its copy). */
static fl_status copy_values(const fl_values *src, fl_values *v)
{
    memset(v, 0, sizeof *v);
    v->section = fl_strdup(src->section);
    v->v = calloc(src->n + 1, sizeof *v->v);
    if (!v->section || !v->v) {
        fl_values_free(v);
        return FL_ERR_NOMEM;
    }
    for (size_t i = 0; i < src->n; i++) {
        char msg[64];
        fl_value_parse(src->v[i].key, src->v[i].text, &v->v[i], msg, sizeof msg);
        v->v[i].text = fl_strdup(src->v[i].text);
        v->n++;
        if (!v->v[i].text) {
            fl_values_free(v);
            return FL_ERR_NOMEM;
        }
    }
    return FL_OK;
}

/* The class's values with the "KEY=VALUE" pairs `set` (already
 * validated) and then `key` = `value` (both NULL: none). */
static fl_status variant_values(const fl_flow_class *cls, const char *const *set, size_t n_set,
                                const char *key, const char *value, fl_values *v)
{
    const fl_key *tabs[2] = { fl_flow_host_keys, cls->base.keys };
    uint32_t ns[2] = { fl_flow_host_nkeys, cls->base.n_keys };
    fl_config *c = fl_config_new("(kit)");
    if (!c) return FL_ERR_NOMEM;
    fl_status st = fl_config_put(c, "flow", "type", cls->base.name, 0);
    for (size_t i = 0; st == FL_OK && i < n_set; i++) {
        const char *eq = strchr(set[i], '=');
        char name[128];
        if (!eq || (size_t)(eq - set[i]) >= sizeof name) {
            fl_err("--set '%s': expected KEY=VALUE", set[i]);
            st = FL_ERR_INVALID;
            break;
        }
        memcpy(name, set[i], (size_t)(eq - set[i]));
        name[eq - set[i]] = 0;
        st = fl_config_put(c, "flow", name, eq + 1, 0);
    }
    if (st == FL_OK && key) st = fl_config_put(c, "flow", key, value, 0);
    if (st == FL_OK) st = fl_values_resolve(c, "flow", tabs, ns, 2, v);
    fl_config_free(c);
    return st;
}

/* Creates the layer, its parameters (initial values plus N(0, s^2) noise
 * so zero-initialised layers are not trivially right) and the inputs. */
static fl_status kit_build(kit *k, const fl_flow_class *cls, const fl_values *cfg,
                           const fl_kit_opts *o, fl_kit_report *rep, fl_real **noise_out)
{
    memset(k, 0, sizeof *k);
    k->cls = cls;
    k->n = o->rows;
    k->d = o->c ? (uint32_t)((uint64_t)o->c * o->h * o->w > 256 ? 257 : o->c * o->h * o->w)
                : o->dim;
    k->o = o;
    if (o->c) snprintf(k->shape, sizeof k->shape, "shape %ux%ux%u", o->c, o->h, o->w);
    else snprintf(k->shape, sizeof k->shape, "dim %u", o->dim);
    k->rep = rep;
    k->cd = (cls->flags & FL_FLOW_ACCEPTS_CONTEXT) ? o->ctx_dim : 0;
    if (k->d > 256 || k->d == 0 || k->n == 0) {
        fl_err("the kit checks dimensions 1..256 on at least one row");
        return FL_ERR_INVALID;
    }
    fl_values v;
    fl_status st = cfg ? copy_values(cfg, &v) : variant_values(cls, NULL, 0, NULL, NULL, &v);
    if (st != FL_OK) return st;
    k->s = fl_stack_new(&k->arena, o->seed, k->d, k->cd, k->n);
    if (!k->s) {
        fl_values_free(&v);
        return FL_ERR_NOMEM;
    }
    if (o->c) st = fl_stack_set_image(k->s, o->c, o->h, o->w);
    if (st == FL_OK) st = fl_stack_push(k->s, cls, "flow", &v, 0);
    else fl_values_free(&v);
    if (st == FL_OK) st = fl_arena_finalize(&k->arena, o->seed);
    if (st == FL_OK) st = fl_stack_ready(k->s);
    if (st != FL_OK) return st;
    size_t nd = (size_t)k->n * k->d, nc = (size_t)k->n * (k->cd ? k->cd : 1);
    fl_real **nbufs[] = { &k->x, &k->y, &k->dx, &k->xi, &k->ry };
    for (size_t i = 0; i < 5; i++)
        if (!(*nbufs[i] = fl_alloc(nd * sizeof(fl_real)))) st = FL_ERR_NOMEM;
    k->c = fl_alloc(nc * sizeof(fl_real));
    k->dc = fl_alloc(nc * sizeof(fl_real));
    k->ld = fl_alloc(k->n * sizeof(fl_real));
    k->rl = fl_alloc(2 * k->n * sizeof(fl_real));
    k->tmp = fl_alloc(k->d * sizeof(fl_real));
    fl_real *noise = fl_alloc((k->arena.total ? k->arena.total : 1) * sizeof(fl_real));
    if (!k->c || !k->dc || !k->ld || !k->rl || !k->tmp || !noise) st = FL_ERR_NOMEM;
    if (st != FL_OK) {
        fl_free(noise);
        return st;
    }
    fl_rng_key key = fl_rng_key_make(o->seed, "kit");
    fl_rng_normal(key, 1, 0, k->arena.total, noise);
    /* Trained parameters only: state (running statistics) keeps its
     * meaning, e.g. a variance stays positive. The noise of a weight with
     * fan-in m shrinks by min(1, 3 / sqrt(m)): the same absolute noise on
     * every weight of a deep unnormalised net (a conv net with 576 inputs
     * per unit and ten layers) multiplies activations by ~7 per layer
     * until float loses x, which tests the kit's noise, not the layer. */
    for (size_t p = 0; p < k->arena.n; p++) {
        const fl_param_rec *r = &k->arena.p[p];
        if (r->flags & FL_PARAM_STATE) continue;
        const double sc = r->fan_in > 9 ? 3.0 / sqrt((double)r->fan_in) : 1.0;
        for (size_t i = r->offset; i < r->offset + r->size; i++) {
            noise[i] *= (fl_real)sc;
            k->arena.theta[i] += (fl_real)o->theta_noise * noise[i];
        }
    }
    fl_rng_normal(key, 2, 0, nd, k->x);
    fl_rng_normal(key, 3, 0, (size_t)k->n * k->cd, k->c);
    fl_rng_normal(key, 4, 0, nd, k->ry);
    fl_rng_normal(key, 5, 0, k->n, k->rl);
    if (noise_out) *noise_out = noise;
    else fl_free(noise);
    return FL_OK;
}

/* Two instances built from the same seed compute the same numbers. */
static fl_status check_seed(kit *k, const fl_values *cfg)
{
    kit k2;
    fl_kit_report scratch;
    memset(&scratch, 0, sizeof scratch);
    fl_status st = kit_build(&k2, k->cls, cfg, k->o, &scratch, NULL);
    size_t nd = (size_t)k->n * k->d;
    const fl_real *y;
    double e = 0;
    if (st == FL_OK) {
        memset(k->ld, 0, k->n * sizeof(fl_real));
        st = fl_stack_forward(k->s, k->n, FL_MODE_EVAL, k->x, k->c, k->ld, &y);
        if (st == FL_OK) memcpy(k->y, y, nd * sizeof(fl_real));
    }
    if (st == FL_OK) {
        memset(k2.ld, 0, k2.n * sizeof(fl_real));
        st = fl_stack_forward(k2.s, k2.n, FL_MODE_EVAL, k2.x, k2.c, k2.ld, &y);
    }
    detail(k, 0, 0, "y, first build", 0, "y, second build");
    for (size_t i = 0; st == FL_OK && i < nd; i++) {
        double ei = fabs((double)y[i] - k->y[i]);
        if (!(ei <= e)) detail(k, (int)(i / k->d), k->y[i], "y, first build", y[i], "y, second build");
        e = fmax(e, ei);
    }
    for (uint32_t r = 0; st == FL_OK && r < k->n; r++) {
        double ei = fabs((double)k2.ld[r] - k->ld[r]);
        if (!(ei <= e))
            detail(k, (int)r, k->ld[r], "logdet, first build", k2.ld[r], "logdet, second build");
        e = fmax(e, ei);
    }
    kit_free(&k2);
    if (st == FL_OK) report(k, FL_KIT_SEED, isnan(e) ? INFINITY : e, 0);
    return st;
}

/* The parameters as the next check starts, for the capture. */
static void snapshot(kit *k)
{
    if (k->theta0) memcpy(k->theta0, k->arena.theta, k->arena.total * sizeof(fl_real));
}

/* Runs the check function that measures check `id` (the two inverse
 * checks share one, as do the three gradient checks). */
static fl_status run_check(kit *k, int id, const fl_values *cfg, const fl_real *noise)
{
    snapshot(k);
    switch (id) {
    case FL_KIT_SEED: return check_seed(k, cfg);
    case FL_KIT_INVERSE:
    case FL_KIT_INVERSE_LOGDET: return check_inverse(k);
    case FL_KIT_LOGDET: return check_logdet(k);
    case FL_KIT_TRIANGULAR: return check_triangular(k);
    case FL_KIT_GRAD_X:
    case FL_KIT_GRAD_THETA:
    case FL_KIT_GRAD_C: return check_grads(k);
    case FL_KIT_CONTEXT: return measure_context(k);
    case FL_KIT_BATCH: return check_batch(k);
    case FL_KIT_EXTREME_X: return check_extreme(k);
    case FL_KIT_LARGE_THETA: return check_large_theta(k, noise);
    case FL_KIT_TRAIN_EVAL: return check_train_eval(k);
    default: return FL_ERR_INVALID;
    }
}

static fl_status kit_flow(const fl_flow_class *cls, const fl_values *cfg, const fl_kit_opts *o,
                          fl_kit_failure *fail, fl_kit_report *rep)
{
    memset(rep, 0, sizeof *rep);
    kit k;
    fl_real *noise = NULL;
    fl_status st = kit_build(&k, cls, cfg, o, rep, &noise);
    if (st == FL_OK && fail && fail->check < 0) {
        k.fail = fail;
        k.cfg = cfg;
        k.theta0 = malloc((k.arena.total ? k.arena.total : 1) * sizeof(fl_real));
        if (!k.theta0) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK && o->out)
        fprintf(o->out, "%s  %s  context %u  rows %u  parameters %zu\n", cls->base.name,
                k.shape, k.cd, k.n, k.arena.count);
    /* Evaluation mode treats rows independently even for batch-coupled
     * layers, so logdet, triangular and batch run (in eval mode) for every
     * layer. */
    static const int order[] = { FL_KIT_SEED,  FL_KIT_INVERSE, FL_KIT_LOGDET,
                                 FL_KIT_TRIANGULAR, FL_KIT_GRAD_X, FL_KIT_CONTEXT,
                                 FL_KIT_BATCH, FL_KIT_EXTREME_X, FL_KIT_LARGE_THETA,
                                 FL_KIT_TRAIN_EVAL };
    for (size_t i = 0; i < sizeof order / sizeof *order && st == FL_OK; i++)
        st = run_check(&k, order[i], cfg, noise);
    free(k.theta0);
    fl_free(noise);
    kit_free(&k);
    return st;
}

fl_status fl_kit_flow(const fl_flow_class *cls, const fl_values *cfg, const fl_kit_opts *o,
                      fl_kit_report *rep)
{
    return kit_flow(cls, cfg, o, NULL, rep);
}

static void merge(fl_kit_report *t, const fl_kit_report *r, const char *label)
{
    t->checks += r->checks;
    t->failed += r->failed;
    if (r->context_effect > t->context_effect) t->context_effect = r->context_effect;
    if (!t->first_failure[0] && r->first_failure[0])
        snprintf(t->first_failure, sizeof t->first_failure, "%s%s%s", r->first_failure,
                 label[0] ? ", " : "", label);
    for (int i = 0; i < FL_KIT_N; i++) {
        const fl_kit_stat *s = &r->stat[i];
        fl_kit_stat *d = &t->stat[i];
        if (!s->runs) continue;
        if (!d->runs || s->worst >= d->worst) {
            d->worst = s->worst;
            d->worst_err = s->worst_err;
        }
        d->tol = s->tol;
        d->runs += s->runs;
        d->fails += s->fails;
        if (!d->first_failure[0] && s->first_failure[0])
            snprintf(d->first_failure, sizeof d->first_failure, "%s%s%s", s->first_failure,
                     label[0] ? ", " : "", label);
    }
}

fl_status fl_kit_class(const fl_flow_class *cls, const fl_kit_opts *base, FILE *out,
                       fl_kit_report *total)
{
    return fl_kit_class_debug(cls, base, NULL, out, total);
}

/* Is `name` among the keys of the "KEY=VALUE" pairs? */
static int in_set(const char *name, const char *const *set, size_t n_set)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n_set; i++)
        if (strncmp(set[i], name, len) == 0 && set[i][len] == '=') return 1;
    return 0;
}

fl_status fl_kit_class_debug(const fl_flow_class *cls, const fl_kit_opts *base,
                             const fl_kit_debug *dbg, FILE *out, fl_kit_report *total)
{
    memset(total, 0, sizeof *total);
    const char *const *set = dbg ? dbg->set : NULL;
    const size_t n_set = dbg ? dbg->n_set : 0;
    fl_kit_failure *fail = dbg ? dbg->fail : NULL;
    /* Configurations: the defaults, each boolean flipped, each other choice
     * of each enum. */
    enum { MAXV = 16 };
    const char *vkey[MAXV] = { NULL }, *vval[MAXV] = { NULL };
    char vbuf[MAXV][64];
    int nv = 1;
    for (uint32_t i = 0; i < cls->base.n_keys && nv < MAXV; i++) {
        const fl_key *key = &cls->base.keys[i];
        if (in_set(key->name, set, n_set)) continue; /* --set fixes it */
        if (key->type == FL_KEY_BOOL) {
            fl_value val;
            char msg[64];
            int on = key->def && !fl_value_parse(key, key->def, &val, msg, sizeof msg) && val.i;
            vkey[nv] = key->name;
            vval[nv++] = on ? "false" : "true";
        } else if (key->type == FL_KEY_ENUM) {
            for (const char *p = key->choices; p && *p && nv < MAXV;) {
                const char *bar = strchr(p, '|');
                size_t n = bar ? (size_t)(bar - p) : strlen(p);
                if (n < 64 && !(key->def && strlen(key->def) == n && !strncmp(key->def, p, n))) {
                    memcpy(vbuf[nv], p, n);
                    vbuf[nv][n] = 0;
                    vkey[nv] = key->name;
                    vval[nv] = vbuf[nv];
                    nv++;
                }
                p = bar ? bar + 1 : p + n;
            }
        }
    }
    /* Shapes: flat rows (base->dim, or 2, 5, 8), and for shaped layers
     * small images; base->c alone asks for that image only. */
    enum { MAXS = 8 };
    static const uint32_t images[][3] = { { 1, 4, 4 }, { 2, 4, 4 }, { 3, 2, 2 }, { 4, 2, 2 },
                                          { 12, 2, 2 } };
    uint32_t shapes[MAXS][4]; /* dim, c, h, w (c == 0: flat) */
    int ns = 0;
    if (base->dim) shapes[ns++][0] = base->dim;
    else if (!base->c)
        for (uint32_t d = 2; d <= 8; d += 3) shapes[ns++][0] = d;
    for (int i = 0; i < ns; i++) shapes[i][1] = shapes[i][2] = shapes[i][3] = 0;
    const int shaped = (cls->flags & FL_FLOW_SHAPED) != 0;
    if (shaped || base->c) {
        const uint32_t given[1][3] = { { base->c, base->h, base->w } };
        const uint32_t(*im)[3] = base->c ? given : images;
        const int nim = base->c ? 1 : 5;
        for (int i = 0; i < nim; i++) {
            shapes[ns][0] = im[i][0] * im[i][1] * im[i][2];
            shapes[ns][1] = im[i][0];
            shapes[ns][2] = im[i][1];
            shapes[ns][3] = im[i][2];
            ns++;
        }
    }
    int nctx = (cls->flags & FL_FLOW_ACCEPTS_CONTEXT) ? 2 : 1;
    int runs = 0, refused = 0, default_runs = 0;
    char refusal[512] = "";
    fl_status st = FL_OK;
    for (int v = 0; v < nv && st == FL_OK; v++) {
        fl_values vals;
        st = variant_values(cls, set, n_set, vkey[v], vval[v], &vals);
        if (st != FL_OK) break;
        char label[160], given[120] = "defaults";
        for (size_t i = 0, len = 0; i < n_set && len < sizeof given; i++)
            len += (size_t)snprintf(given + len, sizeof given - len, "%s%s", i ? ", " : "",
                                    set[i]);
        if (v) snprintf(label, sizeof label, "%s%s%s = %s", n_set ? given : "",
                        n_set ? ", " : "", vkey[v], vval[v]);
        else snprintf(label, sizeof label, "%s", given);
        for (int di = 0; di < ns && st == FL_OK; di++)
            for (int ci = 0; ci < nctx && st == FL_OK; ci++) {
                fl_kit_opts o = *base;
                o.dim = shapes[di][0];
                o.c = shapes[di][1];
                o.h = shapes[di][2];
                o.w = shapes[di][3];
                o.ctx_dim = ci ? (base->ctx_dim ? base->ctx_dim : 3) : 0;
                o.seed = base->seed + (uint64_t)(100 * v + 10 * di + ci);
                fl_kit_report rep;
                fl_err_clear();
                const int had = !fail || fail->check >= 0;
                fl_status rs = kit_flow(cls, &vals, &o, fail, &rep);
                if (!had && fail->check >= 0) snprintf(fail->label, sizeof fail->label, "%s", label);
                char where[256];
                if (o.c)
                    snprintf(where, sizeof where, "%s, shape %ux%ux%u, context %u", label, o.c,
                             o.h, o.w, o.ctx_dim);
                else
                    snprintf(where, sizeof where, "%s, dim %u, context %u", label, o.dim,
                             o.ctx_dim);
                if (rs != FL_OK) {
                    /* A variant may refuse a shape (e.g. needs context); the
                     * defaults without context must work on every flat dim,
                     * and a shaped layer's on at least one shape. */
                    if (v == 0 && ci == 0 && !shaped) {
                        total->checks++;
                        total->failed++;
                        if (!total->first_failure[0])
                            snprintf(total->first_failure, sizeof total->first_failure,
                                     "create: %s (%s)", fl_err_msg(), where);
                    } else {
                        refused++;
                        if (v == 0 && ci == 0 && !refusal[0])
                            snprintf(refusal, sizeof refusal, "%s (%s)", fl_err_msg(), where);
                        if (out)
                            fprintf(out, "  (%s: %s: %s)\n", where,
                                    shaped ? "not applicable" : "not checked", fl_err_msg());
                    }
                    continue;
                }
                runs++;
                default_runs += v == 0 && ci == 0;
                merge(total, &rep, label);
            }
        fl_values_free(&vals);
    }
    if (st == FL_OK && shaped && !default_runs) {
        total->checks++;
        total->failed++;
        if (!total->first_failure[0])
            snprintf(total->first_failure, sizeof total->first_failure,
                     "create: the defaults refused every shape, e.g. %s", refusal);
    }
    if (st != FL_OK) return st;
    if (cls->flags & FL_FLOW_ACCEPTS_CONTEXT) {
        fl_kit_stat *s = &total->stat[FL_KIT_CONTEXT];
        int unused = !(total->context_effect > 1e-7);
        s->runs = 1;
        s->tol = 0;
        s->worst_err = total->context_effect;
        s->worst = unused ? INFINITY : 0;
        total->checks++;
        if (unused) {
            s->fails = 1;
            total->failed++;
            if (!total->first_failure[0])
                snprintf(total->first_failure, sizeof total->first_failure,
                         "context: declares FL_FLOW_ACCEPTS_CONTEXT but no configuration's output "
                         "depends on the context");
        }
    }
    total->skipped = refused;
    if (out) {
        fprintf(out, "%s: %d configurations, %d runs (%d shapes %s)\n", cls->base.name, nv,
                runs, refused, shaped ? "not applicable" : "refused");
        fprintf(out, "  %-11s %-38s %10s %9s %5s  %s\n", "check", "measure", "worst", "tol",
                "runs", "result");
        for (int i = 0; i < FL_KIT_N; i++) {
            const fl_kit_stat *s = &total->stat[i];
            if (!s->runs) continue;
            if (i == FL_KIT_CONTEXT)
                fprintf(out, "  %-11s %-38s %10.3g %9s %5d  %s\n", CHECKS[i].name,
                        "max |y(c) - y(c + 0.5)| over configs", s->worst_err, "> 1e-07", s->runs,
                        s->fails ? "FAIL" : "ok");
            else
                fprintf(out, "  %-11s %-38s %10.3g %9.1g %5d  %s\n", CHECKS[i].name,
                        CHECKS[i].what, s->worst_err, s->tol, s->runs,
                        s->fails ? "FAIL" : "ok");
        }
        for (int i = 0; i < FL_KIT_N; i++)
            if (total->stat[i].fails && total->stat[i].first_failure[0])
                fprintf(out, "  -> %s failed %d of %d times, first at %s\n", CHECKS[i].name,
                        total->stat[i].fails, total->stat[i].runs, total->stat[i].first_failure);
        if (total->failed && total->first_failure[0])
            fprintf(out, "  -> FAILED: %s\n", total->first_failure);
        if (fail && fail->check >= 0) fl_kit_failure_print(fail, out);
    }
    return FL_OK;
}

/* ---- the kit as a debugger: --set, the failure, dump and replay ---- */

void fl_kit_failure_init(fl_kit_failure *f)
{
    memset(f, 0, sizeof *f);
    f->check = -1;
    f->want = -1;
    f->row = -1;
}

void fl_kit_failure_free(fl_kit_failure *f)
{
    for (size_t i = 0; i < f->n_keys; i++) {
        free(f->key[i]);
        free(f->val[i]);
    }
    for (size_t i = 0; f->pname && i < f->n_params; i++) free(f->pname[i]);
    free(f->key);
    free(f->val);
    free(f->pname);
    free(f->poff);
    free(f->psize);
    free(f->flow);
    free(f->plugin);
    free(f->x);
    free(f->ctx);
    free(f->ry);
    free(f->rl);
    free(f->theta);
    fl_kit_failure_init(f);
}

fl_status fl_kit_check_set(const fl_flow_class *cls, const char *const *set, size_t n_set)
{
    const char *name = cls->base.name;
    for (size_t i = 0; i < n_set; i++) {
        const char *eq = strchr(set[i], '=');
        char key[128];
        if (!eq || eq == set[i] || (size_t)(eq - set[i]) >= sizeof key) {
            fl_err("--set '%s': expected KEY=VALUE, KEY one of flow %s's keys", set[i], name);
            return FL_ERR_INVALID;
        }
        memcpy(key, set[i], (size_t)(eq - set[i]));
        key[eq - set[i]] = 0;
        const fl_key *k = NULL;
        for (uint32_t j = 0; j < cls->base.n_keys && !k; j++)
            if (strcmp(cls->base.keys[j].name, key) == 0) k = &cls->base.keys[j];
        for (uint32_t j = 0; j < fl_flow_host_nkeys && !k; j++)
            if (strcmp(fl_flow_host_keys[j].name, key) == 0 && strcmp(key, "type") != 0)
                k = &fl_flow_host_keys[j];
        if (!k) {
            const char *names[64];
            size_t nn = 0;
            char list[512] = "";
            for (uint32_t j = 0; j < cls->base.n_keys && nn < 64; j++) {
                names[nn++] = cls->base.keys[j].name;
                size_t len = strlen(list);
                snprintf(list + len, sizeof list - len, "%s%s", j ? ", " : "",
                         cls->base.keys[j].name);
            }
            const char *near = fl_closest(key, names, nn);
            fl_err("--set %s: flow %s has no key '%s'%s%s%s (its keys: %s)", key, name, key,
                   near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "",
                   nn ? list : "none besides repeat and permute");
            return FL_ERR_INVALID;
        }
        fl_value val;
        char msg[160];
        const char *why = fl_value_parse(k, eq + 1, &val, msg, sizeof msg);
        free(val.list);
        if (why) {
            fl_err("--set %s: flow %s: '%s': %s", key, name, eq + 1, why);
            return FL_ERR_INVALID;
        }
    }
    fl_values v;
    fl_status st = variant_values(cls, set, n_set, NULL, NULL, &v);
    if (st != FL_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", fl_err_msg());
        fl_err("--set: flow %s: %s", name, why);
        return st;
    }
    fl_values_free(&v);
    return FL_OK;
}

#ifdef FL_REAL_DOUBLE
#define RFMT "%.17g" /* enough digits to read back the same fl_real */
#define read_real strtod
#else
#define RFMT "%.9g"
#define read_real strtof
#endif

/* Up to `max` values of a[0..n) as "[a, b, c, ...]". */
static void print_vec(FILE *out, const fl_real *a, size_t n, size_t max)
{
    fputc('[', out);
    for (size_t i = 0; i < n && i < max; i++) fprintf(out, "%s%.7g", i ? ", " : "", (double)a[i]);
    if (n > max) fprintf(out, ", ... %zu more", n - max);
    fputs("]\n", out);
}

void fl_kit_failure_print(const fl_kit_failure *f, FILE *out)
{
    if (f->check < 0) return;
    char shape[48];
    if (f->c) snprintf(shape, sizeof shape, "shape %ux%ux%u", f->c, f->h, f->w);
    else snprintf(shape, sizeof shape, "dim %u", f->dim);
    fprintf(out, "  -> what failed: %s, %s (%s, %s, context %u, rows %u, seed %llu):\n",
            CHECKS[f->check].name, CHECKS[f->check].what, f->label[0] ? f->label : "defaults",
            shape, f->ctx_dim, f->rows, (unsigned long long)f->seed);
    fprintf(out, "       %s = %.9g\n       %s = %.9g\n", f->a_what, f->a, f->b_what, f->b);
    fprintf(out, "       error %.3g, tolerance %.1g\n", f->err, f->tol);
    if (f->row >= 0 && f->x) {
        fprintf(out, "       row %d of x: ", f->row);
        print_vec(out, f->x + (size_t)f->row * f->dim, f->dim, 16);
        if (f->ctx_dim && f->ctx) {
            fprintf(out, "       row %d of the context: ", f->row);
            print_vec(out, f->ctx + (size_t)f->row * f->ctx_dim, f->ctx_dim, 16);
        }
    } else if (f->x) {
        fprintf(out, "       (no single row: the whole batch of %u rows)\n", f->rows);
    }
    for (size_t p = 0; f->theta && p < f->n_params; p++) {
        fprintf(out, "       %s = ", f->pname[p]);
        print_vec(out, f->theta + f->poff[p], f->psize[p], 8);
    }
}

fl_status fl_kit_dump_write(const fl_kit_failure *f, const char *path)
{
    if (f->check < 0 || !f->x || !f->ry || !f->rl || !f->theta || !f->flow) {
        fl_err("%s: nothing to dump (no failure captured)", path);
        return FL_ERR_INVALID;
    }
    FILE *o = fopen(path, "w");
    if (!o) {
        fl_err("%s: cannot write: %s", path, strerror(errno));
        return FL_ERR_IO;
    }
    fprintf(o, "# flowlab check --dump: one failed conformance check and its inputs\n"
               "# (format: docs/writing-a-layer.md). Re-run it: flowlab check --replay FILE\n");
    fprintf(o, "flowlab-kit-dump 1\nreal %s\nflow %s\n", FL_REAL_NAME, f->flow);
    if (f->plugin) fprintf(o, "plugin %s\n", f->plugin);
    fprintf(o, "config %s\n", f->label[0] ? f->label : "defaults");
    for (size_t i = 0; i < f->n_keys; i++) fprintf(o, "key %s %s\n", f->key[i], f->val[i]);
    fprintf(o, "shape %u %u %u %u\ncontext %u\nrows %u\nseed %llu\nnoise %.17g\n", f->dim, f->c,
            f->h, f->w, f->ctx_dim, f->rows, (unsigned long long)f->seed, f->noise);
    fprintf(o, "check %s\nerror %.17g\ntolerance %.17g\nrow %d\n", CHECKS[f->check].key, f->err,
            f->tol, f->row);
    fprintf(o, "measured %.17g %s\nreference %.17g %s\n", f->a, f->a_what, f->b, f->b_what);
    for (uint32_t r = 0; r < f->rows; r++) {
        fprintf(o, "x %u", r);
        for (uint32_t j = 0; j < f->dim; j++)
            fprintf(o, " " RFMT, (double)f->x[(size_t)r * f->dim + j]);
        fputc('\n', o);
    }
    for (uint32_t r = 0; f->ctx && r < f->rows && f->ctx_dim; r++) {
        fprintf(o, "c %u", r);
        for (uint32_t j = 0; j < f->ctx_dim; j++)
            fprintf(o, " " RFMT, (double)f->ctx[(size_t)r * f->ctx_dim + j]);
        fputc('\n', o);
    }
    for (uint32_t r = 0; r < f->rows; r++) {
        fprintf(o, "ry %u", r);
        for (uint32_t j = 0; j < f->dim; j++)
            fprintf(o, " " RFMT, (double)f->ry[(size_t)r * f->dim + j]);
        fputc('\n', o);
    }
    fprintf(o, "rl");
    for (uint32_t r = 0; r < f->rows; r++) fprintf(o, " " RFMT, (double)f->rl[r]);
    fprintf(o, "\ntheta %zu\n", f->n_theta);
    for (size_t p = 0; p < f->n_params; p++) {
        fprintf(o, "param %s %zu %zu", f->pname[p], f->poff[p], f->psize[p]);
        for (size_t i = 0; i < f->psize[p]; i++)
            fprintf(o, " " RFMT, (double)f->theta[f->poff[p] + i]);
        fputc('\n', o);
    }
    fprintf(o, "end\n");
    int bad = ferror(o);
    if (fclose(o) != 0 || bad) {
        fl_err("%s: cannot write: %s", path, strerror(errno));
        return FL_ERR_IO;
    }
    return FL_OK;
}

/* Parsing state of one dump line: the words after the first. */
typedef struct dline {
    const char *path;
    size_t no;
    char *p;              /* the rest of the line */
    size_t nx, nc, nry;   /* x, c and ry lines read so far */
} dline;

static fl_status dbad(const dline *l, const char *what)
{
    fl_err("%s:%zu: %s", l->path, l->no, what);
    return FL_ERR_INVALID;
}

static int next_u64(dline *l, unsigned long long *v)
{
    char *end;
    while (*l->p == ' ') l->p++;
    if (*l->p < '0' || *l->p > '9') return 0;
    errno = 0;
    *v = strtoull(l->p, &end, 10);
    if (errno || (*end && *end != ' ')) return 0;
    l->p = end;
    return 1;
}

static int next_real(dline *l, fl_real *v)
{
    char *end;
    while (*l->p == ' ') l->p++;
    if (!*l->p) return 0;
    *v = (fl_real)read_real(l->p, &end);
    if (end == l->p || (*end && *end != ' ')) return 0;
    l->p = end;
    return 1;
}

static int next_double(dline *l, double *v)
{
    char *end;
    while (*l->p == ' ') l->p++;
    if (!*l->p) return 0;
    *v = strtod(l->p, &end);
    if (end == l->p || (*end && *end != ' ')) return 0;
    l->p = end;
    return 1;
}

static int line_done(dline *l)
{
    while (*l->p == ' ') l->p++;
    return *l->p == 0;
}

/* `n` reals into a (allocated here when NULL) from the rest of the line. */
static fl_status read_reals(dline *l, fl_real **a, size_t n)
{
    if (!*a && !(*a = calloc(n ? n : 1, sizeof **a))) return FL_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        if (!next_real(l, &(*a)[i])) return dbad(l, "expected one number per column");
    return line_done(l) ? FL_OK : dbad(l, "more numbers than columns");
}

static fl_status dump_line(dline *l, char *word, fl_kit_failure *f, int *seen_end)
{
    unsigned long long u, v[4];
    if (!strcmp(word, "flowlab-kit-dump")) {
        return next_u64(l, &u) && u == 1 && line_done(l) ? FL_OK
                                                         : dbad(l, "not a version 1 kit dump");
    } else if (!strcmp(word, "real")) {
        while (*l->p == ' ') l->p++;
        if (strcmp(l->p, FL_REAL_NAME) != 0) {
            char m[160];
            snprintf(m, sizeof m, "dumped by a build computing in %s; this flowlab computes in %s",
                     l->p, FL_REAL_NAME);
            return dbad(l, m);
        }
    } else if (!strcmp(word, "flow") || !strcmp(word, "plugin") || !strcmp(word, "config")) {
        while (*l->p == ' ') l->p++;
        if (!*l->p) return dbad(l, "expected a value");
        if (!strcmp(word, "config")) snprintf(f->label, sizeof f->label, "%s", l->p);
        else {
            char **dst = !strcmp(word, "flow") ? &f->flow : &f->plugin;
            free(*dst);
            if (!(*dst = fl_strdup(l->p))) return FL_ERR_NOMEM;
        }
    } else if (!strcmp(word, "key")) {
        while (*l->p == ' ') l->p++;
        char *sp = strchr(l->p, ' ');
        if (!sp || sp == l->p) return dbad(l, "expected 'key NAME VALUE'");
        *sp = 0;
        char **k2 = realloc(f->key, (f->n_keys + 1) * sizeof *k2);
        if (!k2) return FL_ERR_NOMEM;
        f->key = k2;
        char **v2 = realloc(f->val, (f->n_keys + 1) * sizeof *v2);
        if (!v2) return FL_ERR_NOMEM;
        f->val = v2;
        f->key[f->n_keys] = fl_strdup(l->p);
        f->val[f->n_keys] = fl_strdup(sp + 1);
        f->n_keys++;
        if (!f->key[f->n_keys - 1] || !f->val[f->n_keys - 1]) return FL_ERR_NOMEM;
    } else if (!strcmp(word, "shape")) {
        for (int i = 0; i < 4; i++)
            if (!next_u64(l, &v[i]) || v[i] > 256) return dbad(l, "expected 'shape DIM C H W'");
        if (!line_done(l) || !v[0] || (v[1] && v[1] * v[2] * v[3] != v[0]))
            return dbad(l, "expected 'shape DIM C H W' with DIM = C*H*W or C = 0");
        f->dim = (uint32_t)v[0];
        f->c = (uint32_t)v[1];
        f->h = (uint32_t)v[2];
        f->w = (uint32_t)v[3];
    } else if (!strcmp(word, "context") || !strcmp(word, "rows") || !strcmp(word, "seed")) {
        if (!next_u64(l, &u) || !line_done(l)) return dbad(l, "expected a whole number");
        if (!strcmp(word, "seed")) f->seed = u;
        else if (u > (!strcmp(word, "rows") ? 100000u : 256u) || (!strcmp(word, "rows") && !u))
            return dbad(l, "out of range");
        else if (!strcmp(word, "rows")) f->rows = (uint32_t)u;
        else f->ctx_dim = (uint32_t)u;
    } else if (!strcmp(word, "noise") || !strcmp(word, "error") || !strcmp(word, "tolerance")) {
        double d;
        if (!next_double(l, &d) || !line_done(l)) return dbad(l, "expected a number");
        *(!strcmp(word, "noise") ? &f->noise : !strcmp(word, "error") ? &f->err : &f->tol) = d;
    } else if (!strcmp(word, "check")) {
        while (*l->p == ' ') l->p++;
        if ((f->check = fl_kit_check_id(l->p)) < 0) return dbad(l, "no such check");
    } else if (!strcmp(word, "row")) {
        while (*l->p == ' ') l->p++;
        char *end;
        long r = strtol(l->p, &end, 10);
        if (end == l->p || *end || r < -1 || r > 100000) return dbad(l, "expected a row or -1");
        f->row = (int)r;
    } else if (!strcmp(word, "measured") || !strcmp(word, "reference")) {
        const int a = !strcmp(word, "measured");
        if (!next_double(l, a ? &f->a : &f->b)) return dbad(l, "expected a number");
        while (*l->p == ' ') l->p++;
        snprintf(a ? f->a_what : f->b_what, sizeof f->a_what, "%s", l->p);
    } else if (!strcmp(word, "x") || !strcmp(word, "c") || !strcmp(word, "ry")) {
        const int isc = !strcmp(word, "c");
        const uint32_t w = isc ? f->ctx_dim : f->dim;
        if (!f->rows || !w) return dbad(l, "rows and widths ('shape', 'context', 'rows') first");
        if (!next_u64(l, &u) || u >= f->rows) return dbad(l, "expected a row number below 'rows'");
        fl_real **a = isc ? &f->ctx : !strcmp(word, "x") ? &f->x : &f->ry;
        if (!*a && !(*a = calloc((size_t)f->rows * w, sizeof **a))) return FL_ERR_NOMEM;
        fl_real *row = *a + (size_t)u * w;
        *(isc ? &l->nc : !strcmp(word, "x") ? &l->nx : &l->nry) += 1;
        return read_reals(l, &row, w);
    } else if (!strcmp(word, "rl")) {
        if (!f->rows) return dbad(l, "'rows' first");
        return read_reals(l, &f->rl, f->rows);
    } else if (!strcmp(word, "theta")) {
        if (!next_u64(l, &u) || !line_done(l) || u > ((size_t)1 << 32))
            return dbad(l, "expected 'theta LENGTH'");
        f->n_theta = (size_t)u;
        free(f->theta);
        if (!(f->theta = calloc(f->n_theta ? f->n_theta : 1, sizeof *f->theta)))
            return FL_ERR_NOMEM;
    } else if (!strcmp(word, "param")) {
        while (*l->p == ' ') l->p++;
        char *sp = strchr(l->p, ' ');
        if (!f->theta || !sp) return dbad(l, "expected 'param NAME OFFSET SIZE VALUES' after 'theta'");
        *sp = 0;
        char *name = fl_strdup(l->p);
        l->p = sp + 1;
        if (!name) return FL_ERR_NOMEM;
        if (!next_u64(l, &v[0]) || !next_u64(l, &v[1]) || v[0] + v[1] > f->n_theta) {
            free(name);
            return dbad(l, "the slice is outside theta");
        }
        size_t n = f->n_params + 1;
        char **pn = realloc(f->pname, n * sizeof *pn);
        if (pn) f->pname = pn;
        size_t *po = pn ? realloc(f->poff, n * sizeof *po) : NULL;
        if (po) f->poff = po;
        size_t *ps = po ? realloc(f->psize, n * sizeof *ps) : NULL;
        if (!ps) {
            free(name);
            return FL_ERR_NOMEM;
        }
        f->psize = ps;
        f->pname[f->n_params] = name;
        f->poff[f->n_params] = (size_t)v[0];
        f->psize[f->n_params++] = (size_t)v[1];
        fl_real *dst = f->theta + v[0];
        return read_reals(l, &dst, (size_t)v[1]);
    } else if (!strcmp(word, "end")) {
        *seen_end = 1;
    } else {
        char m[128];
        snprintf(m, sizeof m, "unknown line '%.40s'", word);
        return dbad(l, m);
    }
    return FL_OK;
}

fl_status fl_kit_dump_read(const char *path, fl_kit_failure *f)
{
    FILE *in = fopen(path, "r");
    if (!in) {
        fl_err("%s: cannot read: %s", path, strerror(errno));
        return FL_ERR_IO;
    }
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    dline l = { path, 0, NULL, 0, 0, 0 };
    int end = 0;
    fl_status st = FL_OK;
    while (st == FL_OK && !end && (len = getline(&buf, &cap, in)) >= 0) {
        l.no++;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = 0;
        if (!len || buf[0] == '#') continue;
        char *sp = strchr(buf, ' ');
        l.p = sp ? sp + 1 : buf + len;
        if (sp) *sp = 0;
        st = dump_line(&l, buf, f, &end);
    }
    free(buf);
    fclose(in);
    if (st != FL_OK) return st;
    const char *missing = !f->flow ? "flow" : f->check < 0 ? "check" : !f->dim ? "shape"
                        : !f->rows ? "rows" : !f->x ? "x" : !f->ry ? "ry" : !f->rl ? "rl"
                        : !f->theta ? "theta" : (f->ctx_dim && !f->ctx) ? "c" : !end ? "end" : NULL;
    if (missing) {
        fl_err("%s: not a complete kit dump: no '%s' line", path, missing);
        return FL_ERR_INVALID;
    }
    if (l.nx != f->rows || l.nry != f->rows || (f->ctx_dim && l.nc != f->rows)) {
        fl_err("%s: not a complete kit dump: %zu 'x', %zu 'ry' and %zu 'c' lines for %u rows",
               path, l.nx, l.nry, l.nc, f->rows);
        return FL_ERR_INVALID;
    }
    return FL_OK;
}

fl_status fl_kit_replay(const fl_flow_class *cls, const fl_kit_failure *d,
                        fl_kit_failure *again, fl_kit_report *rep)
{
    memset(rep, 0, sizeof *rep);
    if (d->check == FL_KIT_CONTEXT) {
        fl_err("the context check is a verdict over every configuration, not one run: "
               "there is nothing to replay");
        return FL_ERR_INVALID;
    }
    char **set = calloc(d->n_keys + 1, sizeof *set);
    fl_status st = set ? FL_OK : FL_ERR_NOMEM;
    for (size_t i = 0; st == FL_OK && i < d->n_keys; i++)
        if (!(set[i] = fl_strfmt("%s=%s", d->key[i], d->val[i]))) st = FL_ERR_NOMEM;
    fl_values vals = { 0 };
    if (st == FL_OK) st = fl_kit_check_set(cls, (const char *const *)set, d->n_keys);
    if (st == FL_OK)
        st = variant_values(cls, (const char *const *)set, d->n_keys, NULL, NULL, &vals);
    for (size_t i = 0; set && i < d->n_keys; i++) free(set[i]);
    free(set);
    if (st != FL_OK) return st;
    fl_kit_opts o = { d->dim, d->ctx_dim, d->rows, d->seed, d->noise, NULL, d->c, d->h, d->w };
    kit k;
    fl_real *noise = NULL;
    st = kit_build(&k, cls, &vals, &o, rep, &noise);
    int same = st == FL_OK && k.d == d->dim && k.cd == d->ctx_dim && k.n == d->rows &&
               k.arena.total == d->n_theta && k.arena.n == d->n_params;
    for (size_t p = 0; same && p < d->n_params; p++)
        same = !strcmp(k.arena.p[p].name, d->pname[p]) && k.arena.p[p].offset == d->poff[p] &&
               k.arena.p[p].size == d->psize[p];
    if (st == FL_OK && !same) {
        fl_err("flow %s does not have the dump's shape or parameters (%zu parameter slices, "
               "theta of %zu; the dump has %zu, %zu): was the layer changed since?",
               cls->base.name, k.arena.n, k.arena.total, d->n_params, d->n_theta);
        st = FL_ERR_INVALID;
    }
    if (st == FL_OK) {
        size_t nd = (size_t)k.n * k.d;
        memcpy(k.x, d->x, nd * sizeof(fl_real));
        if (k.cd) memcpy(k.c, d->ctx, (size_t)k.n * k.cd * sizeof(fl_real));
        memcpy(k.ry, d->ry, nd * sizeof(fl_real));
        memcpy(k.rl, d->rl, k.n * sizeof(fl_real));
        memcpy(k.arena.theta, d->theta, k.arena.total * sizeof(fl_real));
        again->want = d->check;
        k.fail = again;
        k.cfg = &vals;
        k.theta0 = malloc((k.arena.total ? k.arena.total : 1) * sizeof(fl_real));
        st = k.theta0 ? run_check(&k, d->check, &vals, noise) : FL_ERR_NOMEM;
        if (again->check >= 0) snprintf(again->label, sizeof again->label, "%s", d->label);
        free(k.theta0);
    }
    fl_free(noise);
    kit_free(&k);
    fl_values_free(&vals);
    return st;
}
