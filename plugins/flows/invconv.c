/* invconv.c - Glow's invertible 1x1 convolution, LU-parametrised (Kingma &
 * Dhariwal 2018, section 3.2): `invconv`.
 *
 * Every pixel's c channels are multiplied by one c x c matrix
 *   W = P L (U + diag(sign * exp(log_s))),   y_p = W x_p,
 *   log|det dy/dx| = h * w * sum(log_s),
 * with P a fixed permutation, L unit lower triangular, U strictly upper
 * triangular and sign a fixed vector of +-1. The inverse is
 * x_p = W^-1 y_p with W^-1 from triangular solves (forward substitution
 * with L, back substitution with the upper factor), in double.
 *
 * Initialisation. As in Glow, W starts as a random rotation: Q from a
 * Gram-Schmidt QR of a c x c Gaussian matrix drawn from the layer's
 * stream "rotation" (host->rng_key, so it depends on the seed and the
 * layer's path only), factorised Q = P L0 U0' with partial pivoting; P
 * and sign = sign(diag U0') stay fixed. The host initialises parameters
 * from fixed rules (zero, constant, random), not from values a layer
 * computes, so the trained parameters are offsets from the initial
 * factors: L = L0 + "L", U = U0 + "U", log_s = log|diag U0'| + "log_s",
 * each starting at zero. That is Glow's parametrisation shifted by
 * constants (the same gradients and Adam steps); the constants are
 * recomputed identically by every create with the same seed and path,
 * so checkpoints hold the offsets only.
 *
 * lu = false: W itself is the parameter (Glow's plain 1x1 convolution),
 * an offset "W" from the initial rotation Q, and every call factorises it
 * (LU with partial pivoting, in double, c^3/3 multiply-adds) for
 * log|det W|, W^-1 and the logdet's gradient h w W^-T. Nothing keeps
 * such a W invertible: training may reach a singular one (infinite
 * logdet), which the LU parametrisation rules out.
 *
 * A flat vector (dim x 1 x 1) is one pixel of dim channels, so the layer
 * is then a dense LU-parametrised linear flow. Forward, backward and
 * inverse allocate nothing; each pixel's product is a fixed-order sum in
 * double, and dW is summed over fixed chunks of pixels added in chunk
 * order, so results are bit-identical for any thread count. */
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

#include <flowlab/flowlab.h>

enum { CHUNK_MIN = 1024, MAX_CHUNKS = 64 };
/* Multiply-adds per call below which the loops stay on one thread (a
 * parallel region costs more than ~10^6 multiply-adds when the cores are
 * shared: measured 58 ms instead of 1.4 ms for 64 x 4 x 14 x 14). */
#define PAR_MIN_FMA 1e6

typedef struct invconv {
    uint32_t c, hw;          /* channels, pixels per image */
    int lu;                  /* LU-parametrised (else plain W, key lu = false) */
    size_t w_off;            /* lu = false: offset of "W" (c x c, row-major) */
    double *q0;              /* lu = false: c x c, the initial rotation */
    uint32_t *wpiv;          /* lu = false: c, the pivots of the last LU of W */
    uint32_t nl;             /* c (c - 1) / 2: entries of L's and U's strict parts */
    size_t l_off, u_off, s_off; /* offsets of "L", "U" (packed, nl each), "log_s" (c) */
    uint32_t *piv;           /* c: row i of L U is row piv[i] of W */
    double *l0, *u0;         /* nl each: initial strict parts, packed */
    double *ls0, *sign;      /* c: initial log|diag|, the fixed signs */
    /* c x c scratch, row-major, in double (workspaces) */
    double *L, *M;           /* unit lower L, upper M = U + diag(sign exp(log_s)) */
    double *W, *T;           /* W (forward, backward) or W^-1 (inverse); a temporary */
    double *part;            /* MAX_CHUNKS x c x c: dW partial sums */
} invconv;

/* Packed index of strict-lower entry (i, j), j < i, and of strict-upper
 * entry (i, j), j > i, each in row order. */
static size_t lo_idx(uint32_t i, uint32_t j) { return (size_t)i * (i - 1) / 2 + j; }
static size_t up_idx(uint32_t c, uint32_t i, uint32_t j)
{
    return (size_t)i * c - (size_t)i * (i + 1) / 2 + (j - i - 1);
}

static const fl_key keys[] = {
    { "lu", FL_KEY_BOOL, "true", 0, 0, NULL,
      "LU-parametrised W = P L (U + diag(sign*exp(log_s))); false: W itself, factorised every "
      "call for log|det W|" },
};

static void destroy(void *self)
{
    invconv *v = self;
    if (!v) return;
    free(v->piv);
    free(v->l0);
    free(v->u0);
    free(v->ls0);
    free(v->sign);
    free(v->q0);
    free(v);
}

/* Q (c x c, row-major) orthogonal from Gaussian G by modified Gram-Schmidt
 * on its columns; a column that collapses (probability zero) becomes a
 * unit vector. */
static void orthogonalise(uint32_t c, double *q)
{
    for (uint32_t k = 0; k < c; k++) {
        for (uint32_t j = 0; j < k; j++) {
            double d = 0;
            for (uint32_t i = 0; i < c; i++) d += q[i * c + j] * q[i * c + k];
            for (uint32_t i = 0; i < c; i++) q[i * c + k] -= d * q[i * c + j];
        }
        double nrm = 0;
        for (uint32_t i = 0; i < c; i++) nrm += q[i * c + k] * q[i * c + k];
        nrm = sqrt(nrm);
        for (uint32_t i = 0; i < c; i++) q[i * c + k] = nrm > 1e-12 ? q[i * c + k] / nrm : i == k;
    }
}

/* LU with partial pivoting of a (c x c, overwritten): rows piv[i] of the
 * original form row i of L U; L's strict part below the diagonal of a, U
 * on and above it. */
static void lu(uint32_t c, double *a, uint32_t *piv)
{
    for (uint32_t i = 0; i < c; i++) piv[i] = i;
    for (uint32_t k = 0; k < c; k++) {
        uint32_t best = k;
        for (uint32_t i = k + 1; i < c; i++)
            if (fabs(a[i * c + k]) > fabs(a[best * c + k])) best = i;
        if (best != k) {
            for (uint32_t j = 0; j < c; j++) {
                double t = a[k * c + j];
                a[k * c + j] = a[best * c + j];
                a[best * c + j] = t;
            }
            uint32_t t = piv[k];
            piv[k] = piv[best];
            piv[best] = t;
        }
        for (uint32_t i = k + 1; i < c; i++) {
            double f = a[i * c + k] / a[k * c + k];
            a[i * c + k] = f;
            for (uint32_t j = k + 1; j < c; j++) a[i * c + j] -= f * a[k * c + j];
        }
    }
}

/* lu = true: P, sign and the initial factors from the LU of rotation q
 * (freed here); requests "L", "U" (when c > 1) and "log_s". */
static fl_status lu_params(const fl_host *h, fl_ctx *cx, invconv *v, double *q)
{
    const uint32_t c = v->c;
    lu(c, q, v->piv);
    for (uint32_t i = 0; i < c; i++) {
        for (uint32_t j = 0; j < i; j++) v->l0[lo_idx(i, j)] = q[i * c + j];
        for (uint32_t j = i + 1; j < c; j++) v->u0[up_idx(c, i, j)] = q[i * c + j];
        const double d = q[i * c + i];
        v->sign[i] = d < 0 ? -1 : 1;
        v->ls0[i] = log(fabs(d));
    }
    free(q);
    fl_status st = FL_OK;
    if (v->nl) {
        fl_param_spec L = { "L", v->nl, FL_INIT_ZERO, 0, 0, 0, 0 };
        fl_param_spec U = { "U", v->nl, FL_INIT_ZERO, 0, 0, 0, 0 };
        st = h->param(cx, &L, &v->l_off);
        if (st == FL_OK) st = h->param(cx, &U, &v->u_off);
    }
    fl_param_spec S = { "log_s", c, FL_INIT_ZERO, 0, 0, 0, 0 };
    return st == FL_OK ? h->param(cx, &S, &v->s_off) : st;
}

/* lu = false: W starts as rotation q (kept as q0); requests "W" and the
 * pivots' workspace. */
static fl_status plain_params(const fl_host *h, fl_ctx *cx, invconv *v, double *q)
{
    const uint32_t c = v->c;
    v->q0 = q;
    fl_param_spec W = { "W", (size_t)c * c, FL_INIT_ZERO, 0, 0, 0, 0 };
    fl_status st = h->param(cx, &W, &v->w_off);
    if (st != FL_OK) return st;
    v->wpiv = h->workspace(cx, c * sizeof *v->wpiv);
    if (!v->wpiv) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    return FL_OK;
}

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    invconv *v = calloc(1, sizeof *v);
    if (!v) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    const int shaped = FL_ABI_AT_LEAST(h, 1, 4);
    const uint32_t c = shaped ? sh->c : sh->dim;
    v->c = c;
    v->hw = shaped ? sh->h * sh->w : 1;
    v->lu = h->cfg_bool(cx, "lu");
    v->nl = c * (c - 1) / 2;
    v->piv = calloc(c, sizeof *v->piv);
    v->l0 = calloc(v->nl + 1, sizeof *v->l0);
    v->u0 = calloc(v->nl + 1, sizeof *v->u0);
    v->ls0 = calloc(c, sizeof *v->ls0);
    v->sign = calloc(c, sizeof *v->sign);
    double *a = calloc((size_t)c * c, sizeof *a);
    fl_real *g = calloc((size_t)c * c, sizeof *g);
    if (!v->piv || !v->l0 || !v->u0 || !v->ls0 || !v->sign || !a || !g) {
        free(a);
        free(g);
        destroy(v);
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    fl_rng_normal(h->rng_key(cx, "rotation"), 0, 0, (size_t)c * c, g);
    for (size_t i = 0; i < (size_t)c * c; i++) a[i] = g[i];
    free(g);
    orthogonalise(c, a);
    fl_status st = v->lu ? lu_params(h, cx, v, a) : plain_params(h, cx, v, a);
    if (st != FL_OK) {
        destroy(v);
        return st;
    }
    const size_t cc = (size_t)c * c;
    double *ws = h->workspace(cx, (4 + (size_t)MAX_CHUNKS) * cc * sizeof(double));
    if (!ws) {
        destroy(v);
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    v->L = ws;
    v->M = ws + cc;
    v->W = ws + 2 * cc;
    v->T = ws + 3 * cc;
    v->part = ws + 4 * cc;
    *self = v;
    return FL_OK;
}

/* L and M from theta; returns sum(log_s). */
static double factors(invconv *v, const fl_real *theta)
{
    const uint32_t c = v->c;
    double sls = 0;
    for (uint32_t i = 0; i < c; i++)
        for (uint32_t j = 0; j < c; j++) {
            double l = i == j, m = 0;
            if (j < i) l = v->l0[lo_idx(i, j)] + theta[v->l_off + lo_idx(i, j)];
            if (j > i) m = v->u0[up_idx(c, i, j)] + theta[v->u_off + up_idx(c, i, j)];
            if (j == i) {
                const double ls = v->ls0[i] + theta[v->s_off + i];
                sls += ls;
                m = v->sign[i] * exp(ls);
            }
            v->L[i * c + j] = l;
            v->M[i * c + j] = m;
        }
    return sls;
}

/* v->W = P L M: row piv[i] of W is row i of L M. */
static void weight(invconv *v)
{
    const uint32_t c = v->c;
    for (uint32_t i = 0; i < c; i++)
        for (uint32_t j = 0; j < c; j++) {
            double s = 0;
            for (uint32_t k = 0; k <= i && k <= j; k++) s += v->L[i * c + k] * v->M[k * c + j];
            v->W[v->piv[i] * c + j] = s;
        }
}

/* v->W = W^-1 = M^-1 L^-1 P^T, column by column: column k solves
 * L M x = P^T e_k, where (P^T e_k)[i] = [piv[i] == k]. */
static void weight_inverse(invconv *v, const uint32_t *piv)
{
    const uint32_t c = v->c;
    double *z = v->T; /* one column at a time, in T's first row */
    for (uint32_t k = 0; k < c; k++) {
        for (uint32_t i = 0; i < c; i++) {
            double s = piv[i] == k;
            for (uint32_t j = 0; j < i; j++) s -= v->L[i * c + j] * z[j];
            z[i] = s;
        }
        for (uint32_t i = c; i-- > 0;) {
            double s = z[i];
            for (uint32_t j = i + 1; j < c; j++) s -= v->M[i * c + j] * z[j];
            z[i] = s / v->M[i * c + i];
        }
        for (uint32_t i = 0; i < c; i++) v->W[i * c + k] = z[i];
    }
}

/* lu = false: v->W = W from theta, its LU (pivots v->wpiv) unpacked into
 * v->L and v->M; returns log|det W|. */
static double plain_weight(invconv *v, const fl_real *theta)
{
    const uint32_t c = v->c;
    const size_t cc = (size_t)c * c;
    for (size_t i = 0; i < cc; i++) v->T[i] = v->W[i] = v->q0[i] + theta[v->w_off + i];
    lu(c, v->T, v->wpiv);
    double ld = 0;
    for (uint32_t i = 0; i < c; i++) {
        ld += log(fabs(v->T[i * c + i]));
        for (uint32_t j = 0; j < c; j++) {
            v->L[i * c + j] = j < i ? v->T[i * c + j] : j == i;
            v->M[i * c + j] = j >= i ? v->T[i * c + j] : 0;
        }
    }
    return ld;
}

/* out_p = A in_p for every pixel p of n rows (A = v->W, c x c). */
static void apply(const invconv *v, uint32_t n, const fl_real *in, fl_real *out)
{
    const uint32_t c = v->c;
    const size_t P = (size_t)n * v->hw;
    const double *A = v->W;
#pragma omp parallel for schedule(static) if ((double)P * c * c >= PAR_MIN_FMA)
    for (size_t p = 0; p < P; p++) {
        const fl_real *x = in + p * c;
        fl_real *y = out + p * c;
        for (uint32_t i = 0; i < c; i++) {
            double s = 0;
            for (uint32_t j = 0; j < c; j++) s += A[i * c + j] * x[j];
            y[i] = (fl_real)s;
        }
    }
}

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    invconv *v = self;
    double ld;
    if (v->lu) {
        ld = v->hw * factors(v, a->theta);
        weight(v);
    } else {
        ld = v->hw * plain_weight(v, a->theta);
    }
    apply(v, a->n, a->x, a->y);
    for (uint32_t r = 0; r < a->n; r++) a->logdet[r] += (fl_real)ld;
    return FL_OK;
}

static fl_status inverse(void *self, const fl_flow_inv *a)
{
    invconv *v = self;
    double ld;
    if (v->lu) {
        ld = v->hw * factors(v, a->theta);
        weight_inverse(v, v->piv);
    } else {
        ld = v->hw * plain_weight(v, a->theta);
        weight_inverse(v, v->wpiv);
    }
    apply(v, a->n, a->y, a->x);
    if (a->logdet)
        for (uint32_t r = 0; r < a->n; r++) a->logdet[r] -= (fl_real)ld;
    return FL_OK;
}

static fl_status backward(void *self, const fl_flow_bwd *a)
{
    invconv *v = self;
    const uint32_t c = v->c;
    const size_t cc = (size_t)c * c, P = (size_t)a->n * v->hw;
    if (v->lu) {
        factors(v, a->theta);
        weight(v);
    } else {
        plain_weight(v, a->theta);
    }
    const double *W = v->W;
    /* dx_p += W^T dy_p */
#pragma omp parallel for schedule(static) if ((double)P * cc >= PAR_MIN_FMA)
    for (size_t p = 0; p < P; p++) {
        const fl_real *dy = a->dy + p * c;
        fl_real *dx = a->dx + p * c;
        for (uint32_t j = 0; j < c; j++) {
            double s = 0;
            for (uint32_t i = 0; i < c; i++) s += W[i * c + j] * dy[i];
            dx[j] += (fl_real)s;
        }
    }
    /* dW = sum_p dy_p x_p^T over chunks whose size depends on P only,
     * added in chunk order. */
    size_t chunk = (P + MAX_CHUNKS - 1) / MAX_CHUNKS;
    if (chunk < CHUNK_MIN) chunk = CHUNK_MIN;
    const size_t nch = (P + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if ((double)P * cc >= PAR_MIN_FMA)
    for (size_t q = 0; q < nch; q++) {
        double *d = v->part + q * cc;
        memset(d, 0, cc * sizeof *d);
        const size_t p1 = (q + 1) * chunk < P ? (q + 1) * chunk : P;
        for (size_t p = q * chunk; p < p1; p++) {
            const fl_real *dy = a->dy + p * c, *x = a->x + p * c;
            for (uint32_t i = 0; i < c; i++)
                for (uint32_t j = 0; j < c; j++) d[i * c + j] += (double)dy[i] * x[j];
        }
    }
    double dsum = 0; /* every row's logdet is hw * log|det W| */
    for (uint32_t r = 0; r < a->n; r++) dsum += a->dlogdet[r];
    fl_real *dth = a->dtheta;
    if (!v->lu) {
        /* dW += hw dsum W^-T (d log|det W| / dW = W^-T) */
        weight_inverse(v, v->wpiv);
        for (uint32_t i = 0; i < c; i++)
            for (uint32_t j = 0; j < c; j++) {
                double s = 0;
                for (size_t q = 0; q < nch; q++) s += v->part[q * cc + (size_t)i * c + j];
                dth[v->w_off + (size_t)i * c + j] += (fl_real)(s + v->hw * dsum * v->W[j * c + i]);
            }
        return FL_OK;
    }
    /* dA = P^T dW (row i of dA is row piv[i] of dW), in T */
    double *dA = v->T;
    for (uint32_t i = 0; i < c; i++)
        for (uint32_t j = 0; j < c; j++) {
            double s = 0;
            for (size_t q = 0; q < nch; q++) s += v->part[q * cc + (size_t)v->piv[i] * c + j];
            dA[i * c + j] = s;
        }
    /* every row's logdet is hw * sum(log_s) */
    /* A = L M: dL = dA M^T (strict lower part), dM = L^T dA (upper part). */
    for (uint32_t i = 0; i < c; i++)
        for (uint32_t j = 0; j < c; j++) {
            if (j < i) {
                double s = 0;
                for (uint32_t k = j; k < c; k++) s += dA[i * c + k] * v->M[j * c + k];
                dth[v->l_off + lo_idx(i, j)] += (fl_real)s;
            } else {
                double s = 0;
                for (uint32_t k = i; k < c; k++) s += v->L[k * c + i] * dA[k * c + j];
                if (j > i)
                    dth[v->u_off + up_idx(c, i, j)] += (fl_real)s;
                else /* d M_ii / d log_s_i = M_ii */
                    dth[v->s_off + i] += (fl_real)(s * v->M[i * c + i] + v->hw * dsum);
            }
        }
    return FL_OK;
}

static const fl_flow_class invconv_flow = {
    .base = { sizeof(fl_flow_class), "invconv",
              "Glow invertible 1x1 convolution, LU-parametrised: y = P L (U + diag(sign*exp(log_s))) "
              "x per pixel, log|det| = h*w*sum(log_s); starts as a random rotation",
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
    return r->add(r, FL_KIND_FLOW, &invconv_flow.base);
}

FL_PLUGIN("flows-invconv", "1.0.0", init)
