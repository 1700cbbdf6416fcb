/* planar.c - planar and radial flows (Rezende & Mohamed 2015).
 *
 *   planar  y = z + u^ tanh(w.z + b),           logdet = log|1 + u^.psi|,
 *           psi = (1 - tanh^2(w.z + b)) w
 *   radial  y = z + beta (z - z0) / (alpha + r),  r = |z - z0|
 *
 * Both are kept invertible by reparameterisation: u^ = u + (m(w.u) - w.u)
 * w/|w|^2 with m(a) = softplus(a) - 1 makes w.u^ = m > -1; alpha =
 * softplus(alpha_raw) > 0 and beta = softplus(beta_raw) - alpha > -alpha.
 * Neither inverse is closed-form in z, but each reduces to one monotone
 * scalar equation per row: planar's in w.z (safeguarded Newton), radial's
 * in r (a quadratic).
 *
 * With amortized = true the P flow parameters of a row are c_row A + a0
 * (one GEMM for the batch), as for a VAE posterior; a0 lives in the same
 * slices the global parameters use. Per-row arithmetic is in double. */
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/flowlab.h>
#include <flowlab/vmath.h>

enum { PLANAR, RADIAL };

typedef struct flow {
    const fl_host *h;
    fl_ctx *cx;                 /* kept for error messages */
    int kind, amort;
    uint32_t dim, cd, np;       /* np = P: flow parameters per row */
    uint32_t sz[3], poff[3];    /* the three parameter groups: sizes, positions in a row of P */
    size_t off[3];              /* their slices in theta (a0 when amortised) */
    size_t a_off;               /* A: cd x np, amortised only */
    double *vec;                /* dim: u^ (planar) or z - z0 (radial) */
    double *g, *acc;            /* np: one row's parameter gradient; the sum over rows */
    fl_real *prm, *dprm;        /* max_rows x np: per-row parameters, their gradients */
    fl_real *ones, *sum;        /* max_rows ones; np column sums (da0) */
} flow;

/* The planar layer in 2D with global parameters (the vi task's U1-U4
 * setting: 256 rows x 32 layers per step) has its own branch-free loops
 * over the rows, which the compiler vectorises with vmath.h's exp and log:
 * per row, e = exp(-2|a|) gives tanh(a) = sign(a)(1 - e)/(1 + e) and
 * sech^2(a) = 4e/(1 + e)^2 without cancellation. Other dims and the
 * amortised layer take the per-row double code below it. */

static const fl_key keys[] = {
    { "amortized", FL_KEY_BOOL, "false", 0, 0, NULL,
      "parameters per row from the context, c A + a0 (needs a context); else global" },
};

/* log(1 + e^x) without overflow or loss for large |x|. */
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

static double sigmoid(double x)
{
    if (x >= 0) return 1 / (1 + exp(-x));
    double e = exp(x);
    return e / (1 + e);
}

static void destroy(void *self) { free(self); }

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, int kind,
                        void **self)
{
    int amort = h->cfg_bool(cx, "amortized");
    if (amort && sh->context_dim == 0) {
        h->error(cx, "amortized = true needs a context (context_dim > 0), and this model has "
                     "none");
        return FL_ERR_INVALID;
    }
    flow *f = calloc(1, sizeof *f);
    if (!f) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    uint32_t d = sh->dim;
    f->h = h;
    f->cx = cx;
    f->kind = kind;
    f->amort = amort;
    f->dim = d;
    f->cd = amort ? sh->context_dim : 0;
    fl_param_spec spec[3];
    if (kind == PLANAR) {
        /* Random, not zero: w = 0 leaves u^ undefined. At w.u ~ 0 the layer
         * contracts along w (w.u^ = m(0) = log 2 - 1), so it is not the
         * identity whatever the scale; w.z ~ N(0, 4) for unit-scale z keeps
         * tanh curved across the data (a tiny w makes u^ ~ w/|w|^2 huge and
         * ill-conditioned), and b ~ N(0, 1) spreads the hyperplanes. */
        double ws = 2 / sqrt((double)(d ? d : 1));
        spec[0] = (fl_param_spec){ .name = "u", .size = d, .init = FL_INIT_NORMAL, .value = 0.1 };
        spec[1] = (fl_param_spec){ .name = "w", .size = d, .init = FL_INIT_NORMAL, .value = ws };
        spec[2] = (fl_param_spec){ .name = "b", .size = 1, .init = FL_INIT_NORMAL, .value = 1 };
    } else {
        /* Centres spread over unit-scale data; alpha_raw = beta_raw = 0
         * gives beta = 0, the identity, from which beta_raw moves first. */
        spec[0] = (fl_param_spec){ .name = "z0", .size = d, .init = FL_INIT_NORMAL, .value = 1 };
        spec[1] = (fl_param_spec){ .name = "alpha_raw", .size = 1, .init = FL_INIT_ZERO };
        spec[2] = (fl_param_spec){ .name = "beta_raw", .size = 1, .init = FL_INIT_ZERO };
    }
    fl_status st = FL_OK;
    for (int i = 0; i < 3 && st == FL_OK; i++) {
        f->sz[i] = (uint32_t)spec[i].size;
        f->poff[i] = i ? f->poff[i - 1] + f->sz[i - 1] : 0;
        st = h->param(cx, &spec[i], &f->off[i]);
    }
    f->np = f->poff[2] + f->sz[2];
    if (st == FL_OK && amort) {
        fl_param_spec A = { .name = "A", .size = (size_t)f->cd * f->np, .init = FL_INIT_NORMAL,
                            .fan_in = f->cd, .fan_out = f->np, .value = 0.01 };
        st = h->param(cx, &A, &f->a_off);
    }
    if (st != FL_OK) {
        free(f);
        return st;
    }
    size_t R = sh->max_rows, fs = sizeof(fl_real);
    f->vec = h->workspace(cx, (d ? d : 1) * sizeof(double));
    f->g = h->workspace(cx, f->np * sizeof(double));
    f->acc = h->workspace(cx, f->np * sizeof(double));
    int ok = f->vec && f->g && f->acc;
    if (ok && amort) {
        f->prm = h->workspace(cx, R * f->np * fs);
        f->dprm = h->workspace(cx, R * f->np * fs);
        f->ones = h->workspace(cx, R * fs);
        f->sum = h->workspace(cx, f->np * fs);
        ok = f->prm && f->dprm && f->ones && f->sum;
        for (size_t r = 0; ok && r < R; r++) f->ones[r] = 1;
    }
    if (!ok) {
        h->error(cx, "out of memory");
        free(f);
        return FL_ERR_NOMEM;
    }
    *self = f;
    return FL_OK;
}

static fl_status create_planar(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    return create(h, cx, sh, PLANAR, self);
}

static fl_status create_radial(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    return create(h, cx, sh, RADIAL, self);
}

/* Parameter group i of row r: the row of P when amortised, else theta's. */
static const fl_real *group(const flow *f, const fl_real *th, uint32_t r, int i)
{
    return f->amort ? f->prm + (size_t)r * f->np + f->poff[i] : th + f->off[i];
}

/* P = 1 a0^T + c A: every row's parameters in one GEMM. */
static fl_status amortize(flow *f, const fl_real *th, uint32_t n, const fl_real *c)
{
    if (!f->amort) return FL_OK;
    if (!c) {
        f->h->error(f->cx, "amortized layer called without a context");
        return FL_ERR_INVALID;
    }
    for (uint32_t r = 0; r < n; r++)
        for (int i = 0; i < 3; i++)
            memcpy(f->prm + (size_t)r * f->np + f->poff[i], th + f->off[i],
                   f->sz[i] * sizeof(fl_real));
    f->h->gemm(0, 0, (int)n, (int)f->np, (int)f->cd, 1, c, (int)f->cd, th + f->a_off,
               (int)f->np, 1, f->prm, (int)f->np);
    return FL_OK;
}

/* Row r's parameter gradient (f->g): summed in double when global, else
 * stored as row r of dP for the GEMMs in finish. */
static void put_grad(flow *f, uint32_t r)
{
    if (f->amort) {
        fl_real *dp = f->dprm + (size_t)r * f->np;
        for (uint32_t j = 0; j < f->np; j++) dp[j] = (fl_real)f->g[j];
    } else {
        for (uint32_t j = 0; j < f->np; j++) f->acc[j] += f->g[j];
    }
}

/* Hands the parameter gradients to dtheta (and dc): global, the row sums;
 * amortised, dA += c^T dP, da0 += 1^T dP, dc += dP A^T. */
static void finish(flow *f, const fl_flow_bwd *a)
{
    uint32_t P = f->np, n = a->n;
    if (!f->amort) {
        for (int i = 0; i < 3; i++)
            for (uint32_t j = 0; j < f->sz[i]; j++)
                a->dtheta[f->off[i] + j] += (fl_real)f->acc[f->poff[i] + j];
        return;
    }
    int cd = (int)f->cd;
    f->h->gemm(1, 0, cd, (int)P, (int)n, 1, a->c, cd, f->dprm, (int)P, 1, a->dtheta + f->a_off,
               (int)P);
    f->h->gemm(0, 0, 1, (int)P, (int)n, 1, f->ones, (int)n, f->dprm, (int)P, 0, f->sum, (int)P);
    for (int i = 0; i < 3; i++)
        for (uint32_t j = 0; j < f->sz[i]; j++)
            a->dtheta[f->off[i] + j] += f->sum[f->poff[i] + j];
    if (a->dc)
        f->h->gemm(0, 1, (int)n, cd, (int)P, 1, f->dprm, (int)P, a->theta + f->a_off, (int)P, 1,
                   a->dc, cd);
}

/* ---- planar ---------------------------------------------------------- */

/* One row's planar parameters; u^ goes to f->vec. mp1 = 1 + m = 1 + w.u^
 * = softplus(w.u) is kept separately because m = -1 + tiny rounds to -1. */
typedef struct planar_p {
    const fl_real *u, *w;
    double b, wu, ww, mp1, m, k;
} planar_p;

static void planar_params(const flow *f, const fl_real *th, uint32_t r, planar_p *p)
{
    p->u = group(f, th, r, 0);
    p->w = group(f, th, r, 1);
    p->b = group(f, th, r, 2)[0];
    double wu = 0, ww = 0;
    for (uint32_t j = 0; j < f->dim; j++) {
        wu += (double)p->u[j] * p->w[j];
        ww += (double)p->w[j] * p->w[j];
    }
    p->wu = wu;
    /* w = 0 (measure zero) would divide by 0; there the layer is a shift. */
    p->ww = fmax(ww, DBL_MIN);
    p->mp1 = softplus(wu);
    p->m = p->mp1 - 1;
    p->k = (softplus(-wu) - 1) / p->ww; /* (m - w.u)/|w|^2; softplus(a) - a = softplus(-a) */
    for (uint32_t j = 0; j < f->dim; j++) f->vec[j] = p->u[j] + p->k * p->w[j];
}

/* tanh(a), sech^2(a) and 1 + m sech^2(a) = tanh^2(a) + (1 + m) sech^2(a):
 * the second form is a sum of non-negative terms, so no cancellation. */
static void planar_act(double a, double mp1, double *t, double *s, double *D)
{
    double ch = cosh(a);
    *t = tanh(a);
    *s = 1 / (ch * ch);
    *D = *t * *t + *s * mp1;
}

static void planar_forward(flow *f, const fl_flow_fwd *a)
{
    uint32_t d = f->dim;
    planar_p p;
    for (uint32_t r = 0; r < a->n; r++) {
        if (f->amort || r == 0) planar_params(f, a->theta, r, &p);
        const fl_real *x = a->x + (size_t)r * d;
        fl_real *y = a->y + (size_t)r * d;
        double z = p.b, t, s, D;
        for (uint32_t j = 0; j < d; j++) z += (double)p.w[j] * x[j];
        planar_act(z, p.mp1, &t, &s, &D);
        for (uint32_t j = 0; j < d; j++) y[j] = (fl_real)(x[j] + f->vec[j] * t);
        a->logdet[r] += (fl_real)log(D);
    }
}

/* L = dy.y + dl log D. With a = w.z + b, t = tanh a, s = 1 - t^2:
 *   dL/da = (dy.u^) s - 2 dl m t s / D          (D = 1 + m s, dD/da = -2mts)
 *   dz = dy + dL/da w,  db = dL/da
 * and through u^ = u + k w, k = (m(wu) - wu)/ww, D's dependence on m(wu):
 *   dL/du^ = t dy, dL/dk = t dy.w, dL/dm = dl s / D
 *   dL/dwu = dL/dk (sigmoid(wu) - 1)/ww + dL/dm sigmoid(wu)
 *   dL/dww = -dL/dk k / ww
 *   du = t dy + dL/dwu w,  dw = dL/da z + k t dy + dL/dwu u + 2 dL/dww w. */
static void planar_backward(flow *f, const fl_flow_bwd *a)
{
    uint32_t d = f->dim;
    planar_p p;
    double *g = f->g, *gu = g, *gw = g + d;
    for (uint32_t r = 0; r < a->n; r++) {
        if (f->amort || r == 0) planar_params(f, a->theta, r, &p);
        const fl_real *x = a->x + (size_t)r * d, *dy = a->dy + (size_t)r * d;
        fl_real *dx = a->dx + (size_t)r * d;
        double dl = a->dlogdet[r], z = p.b, t, s, D, gy_uh = 0, gy_w = 0;
        for (uint32_t j = 0; j < d; j++) {
            z += (double)p.w[j] * x[j];
            gy_uh += (double)dy[j] * f->vec[j];
            gy_w += (double)dy[j] * p.w[j];
        }
        planar_act(z, p.mp1, &t, &s, &D);
        double ga = gy_uh * s - 2 * dl * p.m * t * s / D;
        double gk = t * gy_w, gm = dl * s / D;
        double gwu = -gk * sigmoid(-p.wu) / p.ww + gm * sigmoid(p.wu);
        double gww = -gk * p.k / p.ww;
        for (uint32_t j = 0; j < d; j++) {
            dx[j] += (fl_real)(dy[j] + ga * p.w[j]);
            gu[j] = t * dy[j] + gwu * p.w[j];
            gw[j] = ga * x[j] + p.k * t * dy[j] + gwu * p.u[j] + 2 * gww * p.w[j];
        }
        g[2 * d] = ga;
        put_grad(f, r);
    }
}

/* The root of h(x) = x + m tanh(x + b) - c, increasing since h' = 1 + m
 * sech^2 > 0 (m > -1). |m tanh| <= |m| brackets it in c -+ |m|; Newton
 * falls back to bisection whenever it would leave the bracket. */
static double planar_solve(double c, double m, double mp1, double b)
{
    double lo = c - fabs(m), hi = c + fabs(m);
    double x = c - m * tanh(c + b);
    for (int it = 0; it < 200; it++) {
        double t, s, D;
        planar_act(x + b, mp1, &t, &s, &D);
        double hx = x + m * t - c;
        if (hx == 0) return x;
        if (hx < 0) lo = x;
        else hi = x;
        double xn = x - hx / D;
        if (!(xn > lo && xn < hi)) xn = 0.5 * (lo + hi);
        if (fabs(xn - x) <= 2 * DBL_EPSILON * (1 + fabs(xn)) || !(hi > lo)) return xn;
        x = xn;
    }
    return x;
}

static void planar_inverse(flow *f, const fl_flow_inv *a)
{
    uint32_t d = f->dim;
    planar_p p;
    for (uint32_t r = 0; r < a->n; r++) {
        if (f->amort || r == 0) planar_params(f, a->theta, r, &p);
        const fl_real *y = a->y + (size_t)r * d;
        fl_real *x = a->x + (size_t)r * d;
        /* w.y = w.z + m tanh(w.z + b), since w.u^ = m. */
        double wy = 0, t, s, D;
        for (uint32_t j = 0; j < d; j++) wy += (double)p.w[j] * y[j];
        double wz = planar_solve(wy, p.m, p.mp1, p.b);
        planar_act(wz + p.b, p.mp1, &t, &s, &D);
        for (uint32_t j = 0; j < d; j++) x[j] = (fl_real)(y[j] - f->vec[j] * t);
        if (a->logdet) a->logdet[r] -= (fl_real)log(D);
    }
}

/* ---- radial ---------------------------------------------------------- */

/* One row's radial parameters: alpha, spb = softplus(beta_raw) = alpha +
 * beta (> 0, so beta > -alpha), and the softplus derivatives. */
typedef struct radial_p {
    const fl_real *z0;
    double al, spb, be, sa, sb;
} radial_p;

static void radial_params(const flow *f, const fl_real *th, uint32_t r, radial_p *p)
{
    p->z0 = group(f, th, r, 0);
    double ar = group(f, th, r, 1)[0], br = group(f, th, r, 2)[0];
    p->al = softplus(ar);
    p->spb = softplus(br);
    p->be = p->spb - p->al;
    p->sa = sigmoid(ar);
    p->sb = sigmoid(br);
}

/* v = x - z0 into f->vec; returns r = |v|. */
static double radial_v(flow *f, const radial_p *p, const fl_real *x)
{
    double rr = 0;
    for (uint32_t j = 0; j < f->dim; j++) {
        f->vec[j] = (double)x[j] - p->z0[j];
        rr += f->vec[j] * f->vec[j];
    }
    return sqrt(rr);
}

/* log det at radius r, with S = alpha + r:
 *   1 + beta h = (r + spb) / S
 *   1 + beta h + beta h' r = 1 + alpha beta / S^2 = (r (2 alpha + r) + spb alpha) / S^2,
 * numerators sums of positive terms, so both logs are safe as beta -> -alpha. */
static double radial_logdet(const flow *f, const radial_p *p, double r)
{
    double S = p->al + r;
    return (double)(f->dim - 1) * (log(r + p->spb) - log(S)) +
           log(r * (2 * p->al + r) + p->spb * p->al) - 2 * log(S);
}

static void radial_forward(flow *f, const fl_flow_fwd *a)
{
    uint32_t d = f->dim;
    radial_p p;
    for (uint32_t r = 0; r < a->n; r++) {
        if (f->amort || r == 0) radial_params(f, a->theta, r, &p);
        const fl_real *x = a->x + (size_t)r * d;
        fl_real *y = a->y + (size_t)r * d;
        double rad = radial_v(f, &p, x), bh = p.be / (p.al + rad);
        for (uint32_t j = 0; j < d; j++) y[j] = (fl_real)(x[j] + bh * f->vec[j]);
        a->logdet[r] += (fl_real)radial_logdet(f, &p, rad);
    }
}

/* L = dy.y + dl [(d-1) log q + log E], y = z0 + q v, v = z - z0, with
 * q = (r + spb)/S, E = 1 + alpha beta/S^2, S = alpha + r, beta = spb - alpha:
 *   dq/dr = -beta/S^2,  dq/dalpha = -q/S,  dq/dspb = 1/S
 *   dE/dr = -2 alpha beta/S^3,  dE/dspb = alpha/S^2,
 *   dE/dalpha = (spb - 2 alpha)/S^2 - 2 alpha beta/S^3
 *   dz = q dy + (dL/dr / r) v,  dz0 = dy - dz,
 * alpha_raw and beta_raw through the softplus derivatives (sigmoids). */
static void radial_backward(flow *f, const fl_flow_bwd *a)
{
    uint32_t d = f->dim;
    radial_p p;
    double *g = f->g, *gz0 = g;
    for (uint32_t r = 0; r < a->n; r++) {
        if (f->amort || r == 0) radial_params(f, a->theta, r, &p);
        const fl_real *x = a->x + (size_t)r * d, *dy = a->dy + (size_t)r * d;
        fl_real *dx = a->dx + (size_t)r * d;
        double rad = radial_v(f, &p, x), dl = a->dlogdet[r];
        double S = p.al + rad, S2 = S * S, q = (rad + p.spb) / S;
        double E = (rad * (2 * p.al + rad) + p.spb * p.al) / S2, gv = 0;
        for (uint32_t j = 0; j < d; j++) gv += (double)dy[j] * f->vec[j];
        double gq = gv + dl * (double)(d - 1) / q, gE = dl / E;
        double gr = -gq * p.be / S2 - gE * 2 * p.al * p.be / (S2 * S);
        double gal = -gq * q / S + gE * ((p.spb - 2 * p.al) / S2 - 2 * p.al * p.be / (S2 * S));
        double gspb = gq / S + gE * p.al / S2;
        /* |v| is not differentiable at v = 0: take the zero subgradient. */
        double gvr = rad > 0 ? gr / rad : 0;
        for (uint32_t j = 0; j < d; j++) {
            double gz = q * dy[j] + gvr * f->vec[j];
            dx[j] += (fl_real)gz;
            gz0[j] = dy[j] - gz;
        }
        g[d] = gal * p.sa;
        g[d + 1] = gspb * p.sb;
        put_grad(f, r);
    }
}

/* |y - z0| = r q(r) = r (r + spb)/(alpha + r), increasing in r (slope E):
 * r^2 + (spb - r_y) r - r_y alpha = 0, positive root in the form without
 * cancellation. Then z - z0 = (y - z0)/q, i.e. z = y - beta/(r + spb) (y - z0). */
static void radial_inverse(flow *f, const fl_flow_inv *a)
{
    uint32_t d = f->dim;
    radial_p p;
    for (uint32_t r = 0; r < a->n; r++) {
        if (f->amort || r == 0) radial_params(f, a->theta, r, &p);
        const fl_real *y = a->y + (size_t)r * d;
        fl_real *x = a->x + (size_t)r * d;
        double ry = radial_v(f, &p, y), bq = p.spb - ry;
        double disc = sqrt(bq * bq + 4 * ry * p.al);
        double rad = bq >= 0 ? 2 * ry * p.al / (bq + disc) : 0.5 * (disc - bq);
        double c = p.be / (rad + p.spb);
        for (uint32_t j = 0; j < d; j++) x[j] = (fl_real)(y[j] - c * f->vec[j]);
        if (a->logdet) a->logdet[r] -= (fl_real)radial_logdet(f, &p, rad);
    }
}

/* ---- planar, 2D, global parameters: vectorised ----------------------- */

/* tanh(a), sech^2(a) and D = t^2 + (1 + m) s from one exp. */
#define PLANAR2_ACT(a, mp1, t, s, D)                                                     \
    do {                                                                                 \
        fl_real e_ = fl_exp(-2 * fabs(a)), i_ = 1 / (1 + e_);                            \
        t = copysign((1 - e_) * i_, a);                                                  \
        s = 4 * e_ * i_ * i_;                                                            \
        D = t * t + s * mp1;                                                             \
    } while (0)

static void planar2_forward(flow *f, const fl_flow_fwd *a)
{
    planar_p p;
    planar_params(f, a->theta, 0, &p);
    const fl_real w0 = p.w[0], w1 = p.w[1], b = (fl_real)p.b, mp1 = (fl_real)p.mp1;
    const fl_real u0 = (fl_real)f->vec[0], u1 = (fl_real)f->vec[1];
    const fl_real *restrict x = a->x;
    fl_real *restrict y = a->y, *restrict ld = a->logdet;
    const size_t n = a->n; /* size_t: 2 * r must not wrap, or nothing vectorises */
#pragma omp simd
    for (size_t r = 0; r < n; r++) {
        fl_real x0 = x[2 * r], x1 = x[2 * r + 1], z = b + w0 * x0 + w1 * x1, t, s, D;
        PLANAR2_ACT(z, mp1, t, s, D);
        y[2 * r] = x0 + u0 * t;
        y[2 * r + 1] = x1 + u1 * t;
        ld[r] += fl_log(D);
    }
}

/* As planar_backward, with the row sums of the parameter gradient formed
 * in double: du = sum t dy + gwu w, dw = sum ga x + k sum t dy + gwu u +
 * 2 gww w, db = sum ga. */
static void planar2_backward(flow *f, const fl_flow_bwd *a)
{
    planar_p p;
    planar_params(f, a->theta, 0, &p);
    const fl_real w0 = p.w[0], w1 = p.w[1], b = (fl_real)p.b, mp1 = (fl_real)p.mp1;
    const fl_real m2 = (fl_real)(2 * p.m);
    const fl_real u0 = (fl_real)f->vec[0], u1 = (fl_real)f->vec[1];
    const fl_real *restrict x = a->x, *restrict dy = a->dy, *restrict dl = a->dlogdet;
    fl_real *restrict dx = a->dx;
    const size_t n = a->n;
    double s_ga = 0, s_gk = 0, s_gm = 0, s_t0 = 0, s_t1 = 0, s_x0 = 0, s_x1 = 0;
#pragma omp simd reduction(+ : s_ga, s_gk, s_gm, s_t0, s_t1, s_x0, s_x1)
    for (size_t r = 0; r < n; r++) {
        fl_real x0 = x[2 * r], x1 = x[2 * r + 1], z = b + w0 * x0 + w1 * x1, t, s, D;
        PLANAR2_ACT(z, mp1, t, s, D);
        fl_real d0 = dy[2 * r], d1 = dy[2 * r + 1], sd = s / D;
        fl_real ga = (d0 * u0 + d1 * u1) * s - m2 * dl[r] * t * sd;
        dx[2 * r] += d0 + ga * w0;
        dx[2 * r + 1] += d1 + ga * w1;
        s_ga += ga;
        s_gk += t * (d0 * w0 + d1 * w1);
        s_gm += dl[r] * sd;
        s_t0 += t * d0;
        s_t1 += t * d1;
        s_x0 += ga * x0;
        s_x1 += ga * x1;
    }
    double gwu = -s_gk * sigmoid(-p.wu) / p.ww + s_gm * sigmoid(p.wu);
    double gww = -s_gk * p.k / p.ww;
    fl_real *du = a->dtheta + f->off[0], *dw = a->dtheta + f->off[1], *db = a->dtheta + f->off[2];
    du[0] += (fl_real)(s_t0 + gwu * w0);
    du[1] += (fl_real)(s_t1 + gwu * w1);
    dw[0] += (fl_real)(s_x0 + p.k * s_t0 + gwu * p.u[0] + 2 * gww * w0);
    dw[1] += (fl_real)(s_x1 + p.k * s_t1 + gwu * p.u[1] + 2 * gww * w1);
    db[0] += (fl_real)s_ga;
}

/* ---- the ABI calls ----------------------------------------------------- */

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    flow *f = self;
    if (a->n == 0) return FL_OK;
    if (f->kind == PLANAR && f->dim == 2 && !f->amort) {
        planar2_forward(f, a);
        return FL_OK;
    }
    fl_status st = amortize(f, a->theta, a->n, a->c);
    if (st != FL_OK) return st;
    if (f->kind == PLANAR) planar_forward(f, a);
    else radial_forward(f, a);
    return FL_OK;
}

/* Reuses the per-row parameters of the forward it follows (the ABI
 * guarantees the same rows, theta and c). */
static fl_status backward(void *self, const fl_flow_bwd *a)
{
    flow *f = self;
    if (a->n == 0) return FL_OK;
    if (f->amort && !a->c) {
        f->h->error(f->cx, "amortized layer called without a context");
        return FL_ERR_INVALID;
    }
    if (f->kind == PLANAR && f->dim == 2 && !f->amort) {
        planar2_backward(f, a);
        return FL_OK;
    }
    memset(f->acc, 0, f->np * sizeof *f->acc);
    if (f->kind == PLANAR) planar_backward(f, a);
    else radial_backward(f, a);
    finish(f, a);
    return FL_OK;
}

static fl_status inverse(void *self, const fl_flow_inv *a)
{
    flow *f = self;
    if (a->n == 0) return FL_OK;
    fl_status st = amortize(f, a->theta, a->n, a->c);
    if (st != FL_OK) return st;
    if (f->kind == PLANAR) planar_inverse(f, a);
    else radial_inverse(f, a);
    return FL_OK;
}

#define FLAGS \
    (FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE | FL_FLOW_ACCEPTS_CONTEXT)

static const fl_flow_class planar = {
    .base = { sizeof(fl_flow_class), "planar",
              "planar flow: y = z + u^ tanh(w.z + b), w.u^ > -1 (Rezende & Mohamed 2015)", keys,
              sizeof keys / sizeof keys[0] },
    .flags = FLAGS,
    .create = create_planar,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
};

static const fl_flow_class radial = {
    .base = { sizeof(fl_flow_class), "radial",
              "radial flow: y = z + beta (z - z0)/(alpha + |z - z0|), beta > -alpha "
              "(Rezende & Mohamed 2015)",
              keys, sizeof keys / sizeof keys[0] },
    .flags = FLAGS,
    .create = create_radial,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_FLOW, &planar.base);
    return st == FL_OK ? r->add(r, FL_KIND_FLOW, &radial.base) : st;
}

FL_PLUGIN("flows-planar", "1.0.0", init)
