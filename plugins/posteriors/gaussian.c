/* gaussian.c - Gaussian base posteriors q0(z | x), reparameterised by
 * standard-normal noise eps.
 *
 *   gaussian-diag  param = [mu (d), s (d)],  sigma = exp(s')
 *                  z = mu + sigma * eps
 *                  log q = sum_i (-eps_i^2/2 - s'_i) - d/2 log 2 pi
 *   gaussian-full  param = [mu (d), L packed row-major lower-triangular
 *                  (d(d+1)/2: row i holds L_i0 .. L_ii), diagonal stored as
 *                  s_i with L_ii = exp(s'_i)]
 *                  z = mu + L eps
 *                  log q = sum_i (-eps_i^2/2 - s'_i) - d/2 log 2 pi
 *
 * s' is the log-scale after a smooth floor at m = min_log_sigma:
 *     s' = s                        for s >= m + 1
 *     s' = m + exp(s - m - 1)       below
 * It is the identity where the encoder normally works, C1 at m + 1, never
 * below m, and its derivative exp(s - m - 1) never drops to exactly 0 for
 * moderate s, so a unit that strays low can come back (a hard clamp would
 * leave it with a zero gradient). It keeps sigma, 1/sigma (the detached
 * gradient) and log q finite.
 *
 * backward: dparam = d/dparam [sum dz.z + sum dlogq log q] summed over the
 * k samples of each data point, with eps fixed. Without detach, log q as a
 * function of the parameters is -sum s' + const (its dependence through z
 * and its explicit one cancel). With detach, log q is log q0(z; params
 * frozen), whose gradient flows only through z:
 *     d log q0 / dz = -Sigma^-1 (z - mu) = -L^-T eps   (diag: -eps/sigma)
 * so dz += dlogq * that, and the -sum s' term is dropped.
 *
 * Work is split over data points with OpenMP when a call has more than
 * PAR_MIN elements; each thread uses its own scratch slot. gaussian-full
 * does one GEMM per data point (Z = E L^T over the k samples; dL = dZ^T E). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <flowlab/flowlab.h>
#include <flowlab/vmath.h>

/* n*k*dim above which a call is split over threads (below, thread start-up
 * costs more than the work). */
#define PAR_MIN 32768
#define HALF_LOG_2PI 0.91893853320467274178

typedef struct post {
    const fl_host *h;
    fl_ctx *cx;
    int full;
    uint32_t dim, np;       /* np = d (diag: 2d; full: d + d(d+1)/2) */
    uint32_t max_rows;
    fl_real min_ls;
    int slots;              /* scratch slots = most threads a call uses */
    size_t slot_r, slot_d;  /* fl_real and double elements per slot */
    fl_real *sr;            /* slots x slot_r */
    double *sd;             /* slots x slot_d */
    fl_real *vbuf;          /* full only: max_rows x d, dlogq * L^-T eps (detach) */
} post;

static const fl_key keys[] = {
    { "min_log_sigma", FL_KEY_REAL, "-10", -60, 5, NULL,
      "smooth floor m of the log-scales: the log-scale used is s where s >= m+1, else "
      "m + exp(s-m-1), so sigma > e^m (default -10: sigma > 4.5e-5)" },
};

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

static void destroy(void *self) { free(self); }

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_posterior_shape *sh, int full,
                        void **self)
{
    if (sh->dim == 0) {
        h->error(cx, "the latent dimension must be at least 1");
        return FL_ERR_INVALID;
    }
    post *p = calloc(1, sizeof *p);
    if (!p) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    size_t d = sh->dim;
    p->h = h;
    p->cx = cx;
    p->full = full;
    p->dim = sh->dim;
    p->np = (uint32_t)(full ? d + d * (d + 1) / 2 : 2 * d);
    p->max_rows = sh->max_rows;
    p->min_ls = (fl_real)h->cfg_real(cx, "min_log_sigma");
    p->slots = 1;
#ifdef _OPENMP
    /* The host may raise the thread count after create ([experiment]
     * threads): size for the larger of that and the cores, and never run
     * more threads than there are slots. */
    int t = omp_get_max_threads(), c = omp_get_num_procs();
    p->slots = t > c ? t : c;
    p->slots = p->slots > 256 ? 256 : p->slots;
#endif
    /* Slots are multiples of 16 elements (64 bytes) apart: no false sharing. */
    p->slot_r = round16(full ? 2 * d * d + 3 * d : 4 * d);
    p->slot_d = round16(3 * d);
    p->sr = h->workspace(cx, p->slot_r * p->slots * sizeof(fl_real));
    p->sd = h->workspace(cx, p->slot_d * p->slots * sizeof(double));
    int ok = p->sr && p->sd;
    if (ok && full) ok = (p->vbuf = h->workspace(cx, (size_t)sh->max_rows * d * sizeof(fl_real))) != NULL;
    if (!ok) {
        h->error(cx, "out of memory");
        free(p);
        return FL_ERR_NOMEM;
    }
    *self = p;
    return FL_OK;
}

static fl_status create_diag(const fl_host *h, fl_ctx *cx, const fl_posterior_shape *sh, void **self)
{
    return create(h, cx, sh, 0, self);
}

static fl_status create_full(const fl_host *h, fl_ctx *cx, const fl_posterior_shape *sh, void **self)
{
    return create(h, cx, sh, 1, self);
}

static uint32_t n_params(void *self) { return ((post *)self)->np; }

/* sum x_i^2 in double over 8 independent lanes, so the loop vectorises
 * (a single running sum must be added in order and would not). */
static inline double sum_sq(const fl_real *x, uint32_t n)
{
    double acc[8] = { 0 }, s = 0;
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += (double)x[i + l] * x[i + l];
    for (; i < n; i++) s += (double)x[i] * x[i];
    for (int l = 0; l < 8; l++) s += acc[l];
    return s;
}

/* The smooth floor of the n log-scales s (stride `st`): s' (fe), ds'/ds
 * (fp) and exp(s') (sig); returns -sum s' - n/2 log 2 pi, the part of
 * log q that does not depend on eps. */
static double floor_scales(fl_real m, const fl_real *s, size_t st, uint32_t n, fl_real *fe,
                           fl_real *fp, fl_real *sig)
{
    const fl_real t = m + 1;
    for (uint32_t i = 0; i < n; i++) {
        fl_real si = s[i * st];
        fl_real e = fl_exp(si < t ? si - t : 0);
        /* selects on si < t, so a NaN log-scale stays NaN */
        fe[i] = si < t ? m + e : si;
        fp[i] = si < t ? e : 1;
        sig[i] = fl_exp(fe[i]);
    }
    double c = 0;
    for (uint32_t i = 0; i < n; i++) c -= fe[i];
    return c - n * HALF_LOG_2PI;
}

static int slot_of(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static fl_status check_call(const post *p, uint32_t n, uint32_t k, uint32_t ld)
{
    if (ld < p->np || (size_t)n * k > p->max_rows || (n && !k)) {
        p->h->error(p->cx, "called with n*k = %zu rows (max_rows %u), k = 0, or row stride "
                    "%u < %u", (size_t)n * k, p->max_rows, ld, p->np);
        return FL_ERR_INVALID;
    }
    return FL_OK;
}

/* ---- gaussian-diag ------------------------------------------------------ */

static void diag_sample_point(post *p, const fl_post_fwd *a, uint32_t b)
{
    const uint32_t d = p->dim;
    fl_real *fe = p->sr + p->slot_r * slot_of(), *fp = fe + d, *sig = fp + d;
    const fl_real *mu = a->param + (size_t)b * a->ld;
    double c = floor_scales(p->min_ls, mu + d, 1, d, fe, fp, sig);
    for (uint32_t j = 0; j < a->k; j++) {
        size_t r = (size_t)b * a->k + j;
        const fl_real *e = a->eps + r * d;
        fl_real *z = a->z + r * d;
        for (uint32_t i = 0; i < d; i++) z[i] = mu[i] + sig[i] * e[i];
        a->logq[r] = (fl_real)(c - 0.5 * sum_sq(e, d));
    }
}

/* dz_eff = dz (+ dlogq * -eps/sigma with detach); dmu = sum_j dz_eff,
 * ds = (sigma sum_j dz_eff eps - [no detach] sum_j dlogq) ds'/ds. */
static void diag_backward_point(post *p, const fl_post_bwd *a, uint32_t b)
{
    const uint32_t d = p->dim;
    int s = slot_of();
    fl_real *fe = p->sr + p->slot_r * s, *fp = fe + d, *sig = fp + d, *isig = sig + d;
    double *am = p->sd + p->slot_d * s, *as = am + d;
    const fl_real *mu = a->param + (size_t)b * a->ld;
    fl_real *dmu = a->dparam + (size_t)b * a->ld, *ds = dmu + d;
    floor_scales(p->min_ls, mu + d, 1, d, fe, fp, sig);
    for (uint32_t i = 0; i < d; i++) {
        isig[i] = 1 / sig[i];
        am[i] = as[i] = 0;
    }
    double sdl = 0;
    for (uint32_t j = 0; j < a->k; j++) {
        size_t r = (size_t)b * a->k + j;
        const fl_real *e = a->eps + r * d, *dz = a->dz + r * d;
        fl_real c = a->dlogq[r];
        sdl += c;
        if (a->detach) {
            for (uint32_t i = 0; i < d; i++) {
                fl_real g = dz[i] - c * e[i] * isig[i];
                am[i] += g;
                as[i] += (double)g * e[i];
            }
        } else {
            for (uint32_t i = 0; i < d; i++) {
                am[i] += dz[i];
                as[i] += (double)dz[i] * e[i];
            }
        }
    }
    if (a->detach) sdl = 0;
    for (uint32_t i = 0; i < d; i++) {
        dmu[i] = (fl_real)am[i];
        ds[i] = (fl_real)((as[i] * sig[i] - sdl) * fp[i]);
    }
}

/* ---- gaussian-full ------------------------------------------------------ */

/* Unpacks data point b's factor into dense row-major L (d x d, zero above
 * the diagonal, floored exp on it); returns the constant of log q. */
static double full_unpack(const post *p, const fl_real *prm, fl_real *L, fl_real *fe,
                          fl_real *fp, fl_real *dg)
{
    const uint32_t d = p->dim;
    const fl_real *tri = prm + d;
    /* diagonal entry i sits at i(i+1)/2 + i; stride differs per row, so
     * gather it first */
    for (uint32_t i = 0; i < d; i++) fe[i] = tri[(size_t)i * (i + 1) / 2 + i];
    double c = floor_scales(p->min_ls, fe, 1, d, fe, fp, dg);
    for (uint32_t i = 0; i < d; i++) {
        const fl_real *row = tri + (size_t)i * (i + 1) / 2;
        fl_real *Li = L + (size_t)i * d;
        for (uint32_t j = 0; j < i; j++) Li[j] = row[j];
        Li[i] = dg[i];
        for (uint32_t j = i + 1; j < d; j++) Li[j] = 0;
    }
    return c;
}

static void full_sample_point(post *p, const fl_post_fwd *a, uint32_t b)
{
    const uint32_t d = p->dim, k = a->k;
    fl_real *L = p->sr + p->slot_r * slot_of(), *fe = L + 2 * (size_t)d * d, *fp = fe + d,
            *dg = fp + d;
    const fl_real *mu = a->param + (size_t)b * a->ld;
    double c = full_unpack(p, mu, L, fe, fp, dg);
    size_t r0 = (size_t)b * k;
    /* Z = E L^T for the k samples at once */
    p->h->gemm(0, 1, (int)k, (int)d, (int)d, 1, a->eps + r0 * d, (int)d, L, (int)d, 0,
               a->z + r0 * d, (int)d);
    for (uint32_t j = 0; j < k; j++) {
        fl_real *z = a->z + (r0 + j) * d;
        for (uint32_t i = 0; i < d; i++) z[i] += mu[i];
        a->logq[r0 + j] = (fl_real)(c - 0.5 * sum_sq(a->eps + (r0 + j) * d, d));
    }
}

/* dmu = sum_j dz_eff; dL_ij = sum_j dz_eff_i eps_j (below the diagonal);
 * ds_i = (dL_ii L_ii - [no detach] sum_j dlogq) ds'/ds, where with detach
 * dz_eff = dz - dlogq L^-T eps, L^-T eps by back substitution. */
static void full_backward_point(post *p, const fl_post_bwd *a, uint32_t b)
{
    const uint32_t d = p->dim, k = a->k;
    int s = slot_of();
    fl_real *L = p->sr + p->slot_r * s, *G = L + (size_t)d * d, *fe = G + (size_t)d * d,
            *fp = fe + d, *dg = fp + d;
    double *acc = p->sd + p->slot_d * s, *rr = acc + d;
    const fl_real *prm = a->param + (size_t)b * a->ld;
    fl_real *dmu = a->dparam + (size_t)b * a->ld, *dtri = dmu + d;
    full_unpack(p, prm, L, fe, fp, dg);
    size_t r0 = (size_t)b * k;
    const fl_real *E = a->eps + r0 * d, *DZ = a->dz + r0 * d;
    fl_real *VS = p->vbuf + r0 * d;
    for (uint32_t i = 0; i < d; i++) acc[i] = 0;
    double sdl = 0;
    for (uint32_t j = 0; j < k; j++) {
        const fl_real *dz = DZ + (size_t)j * d;
        for (uint32_t i = 0; i < d; i++) acc[i] += dz[i];
        sdl += a->dlogq[r0 + j];
    }
    if (a->detach) {
        for (uint32_t j = 0; j < k; j++) {
            /* rr = L^-T eps: solve L^T v = eps from the last unknown up;
             * row t of L is contiguous, so each step is an axpy. */
            const fl_real *e = E + (size_t)j * d;
            for (uint32_t i = 0; i < d; i++) rr[i] = e[i];
            for (uint32_t t = d; t-- > 0;) {
                const fl_real *Lt = L + (size_t)t * d;
                double v = rr[t] / dg[t];
                rr[t] = v;
                for (uint32_t i = 0; i < t; i++) rr[i] -= Lt[i] * v;
            }
            double c = a->dlogq[r0 + j];
            fl_real *vs = VS + (size_t)j * d;
            for (uint32_t i = 0; i < d; i++) {
                vs[i] = (fl_real)(c * rr[i]);
                acc[i] -= vs[i];
            }
        }
        sdl = 0;
    }
    /* G = dZ^T E (- VS^T E with detach): the gradient of dense L */
    p->h->gemm(1, 0, (int)d, (int)d, (int)k, 1, DZ, (int)d, E, (int)d, 0, G, (int)d);
    if (a->detach)
        p->h->gemm(1, 0, (int)d, (int)d, (int)k, -1, VS, (int)d, E, (int)d, 1, G, (int)d);
    for (uint32_t i = 0; i < d; i++) {
        dmu[i] = (fl_real)acc[i];
        fl_real *row = dtri + (size_t)i * (i + 1) / 2;
        const fl_real *Gi = G + (size_t)i * d;
        for (uint32_t j = 0; j < i; j++) row[j] = Gi[j];
        row[i] = (fl_real)(((double)Gi[i] * dg[i] - sdl) * fp[i]);
    }
}

/* ---- calls ---------------------------------------------------------------- */

/* Threads for a call of n points, k samples: 1 below PAR_MIN elements,
 * else the current OpenMP thread count ([experiment] threads), at most the
 * slots. */
static int threads_for(const post *p, uint32_t n, uint32_t k)
{
    size_t work = (size_t)n * k * p->dim;
    if (work <= PAR_MIN || n <= 1) return 1;
#ifdef _OPENMP
    int t = omp_get_max_threads();
    return t < p->slots ? t : p->slots;
#else
    return 1;
#endif
}

static fl_status sample(void *self, const fl_post_fwd *a)
{
    post *p = self;
    fl_status st = check_call(p, a->n, a->k, a->ld);
    if (st != FL_OK) return st;
    int nt = threads_for(p, a->n, a->k);
    (void)nt;
    if (p->full) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (uint32_t b = 0; b < a->n; b++) full_sample_point(p, a, b);
    } else {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (uint32_t b = 0; b < a->n; b++) diag_sample_point(p, a, b);
    }
    return FL_OK;
}

static fl_status backward(void *self, const fl_post_bwd *a)
{
    post *p = self;
    fl_status st = check_call(p, a->n, a->k, a->ld);
    if (st != FL_OK) return st;
    int nt = threads_for(p, a->n, a->k);
    (void)nt;
    if (p->full) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (uint32_t b = 0; b < a->n; b++) full_backward_point(p, a, b);
    } else {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (uint32_t b = 0; b < a->n; b++) diag_backward_point(p, a, b);
    }
    return FL_OK;
}

static const fl_posterior_class diag_class = {
    .base = { sizeof(fl_posterior_class), "gaussian-diag",
              "diagonal Gaussian: param = [mu (dim), log sigma (dim)], z = mu + sigma eps "
              "(log sigma softly floored at min_log_sigma)",
              keys, sizeof keys / sizeof keys[0] },
    .flags = 0,
    .create = create_diag,
    .destroy = destroy,
    .n_params = n_params,
    .sample = sample,
    .backward = backward,
};

static const fl_posterior_class full_class = {
    .base = { sizeof(fl_posterior_class), "gaussian-full",
              "full-covariance Gaussian: param = [mu (dim), Cholesky factor L (dim(dim+1)/2, "
              "lower triangle row by row, diagonal as log)], z = mu + L eps",
              keys, sizeof keys / sizeof keys[0] },
    .flags = 0,
    .create = create_full,
    .destroy = destroy,
    .n_params = n_params,
    .sample = sample,
    .backward = backward,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    fl_status st = r->add(r, FL_KIND_POSTERIOR, &diag_class.base);
    return st == FL_OK ? r->add(r, FL_KIND_POSTERIOR, &full_class.base) : st;
}

FL_PLUGIN("posteriors-gaussian", "1.0.0", init)
