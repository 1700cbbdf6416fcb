/* test_parts.c - the estimators, Gaussian posteriors, likelihoods and the
 * normal prior, each created through the host as an experiment would
 * create it (fl_ctx, fl_host_table, a parameter arena).
 *
 * Values are checked against direct formulas evaluated in double, and
 * every gradient output against central differences of the scalar it is
 * the gradient of (sum w log p; for posteriors a random linear functional
 * L = sum a.z + sum c log q). The differences are summed in double from the
 * component's own outputs.
 *
 * Tolerances. Double build: h = 1e-5, so truncation (~h^2) and rounding
 * (~1e-16 |f| / h) are both below 1e-9; the bound is 1e-6 (abs + rel).
 * Float build: the outputs carry float rounding, ~6e-8 |f| with |f| up to
 * ~30 here, i.e. ~2e-6 absolute, divided by 2h; with h = 2^-7 that is
 * ~1.5e-4, and the truncation error h^2 f'''/6 is ~1e-5 for the O(1)
 * third derivatives of these smooth functions. The bound is 1e-3 (abs) +
 * 2e-3 (rel): still far below the error of a wrong sign or a missing term
 * (every tested gradient is O(0.1 .. 10)). */
#include <float.h>
#include <math.h>
#include <time.h>

#include "common.h"

SUITE(estimators);
SUITE(posteriors);
SUITE(likelihoods);
SUITE(priors);

#ifdef FL_REAL_DOUBLE
#define FD_H 1e-5
#define FD_ABS 1e-6
#define FD_REL 1e-6
#define VAL_REL 1e-12 /* values against double formulas */
#else
#define FD_H 0.0078125
#define FD_ABS 1e-3
#define FD_REL 2e-3
#define VAL_REL 2e-6
#endif

#define LOG_2PI 1.83787706640934548356

/* ---- creating components outside an experiment ----------------------- */

typedef struct part {
    const fl_comp_rec *rec;
    fl_kind kind;
    fl_values v;
    fl_arena arena;
    fl_ctx *cx;
    void *self;
    fl_real *theta, *dtheta;
} part;

/* Creates component `type` of `kind` with "key=value" settings `kv`
 * (NULL-terminated, may be NULL) and `shape` (the kind's shape struct). */
static void part_new(part *p, const fl_registry *r, fl_kind kind, const char *type,
                     const char *const *kv, const void *shape)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->rec = fl_registry_find(r, kind, type);
    cr_assert_not_null(p->rec, "%s '%s' is not registered", fl_kind_name(kind), type);
    fl_config *cfg = fl_config_new("parts-test");
    cr_assert_not_null(cfg);
    for (size_t i = 0; kv && kv[i]; i++) {
        char key[64];
        const char *eq = strchr(kv[i], '=');
        cr_assert(eq && (size_t)(eq - kv[i]) < sizeof key);
        memcpy(key, kv[i], (size_t)(eq - kv[i]));
        key[eq - kv[i]] = 0;
        cr_assert_eq(fl_config_put(cfg, "part", key, eq + 1, 0), FL_OK);
    }
    const fl_key *tabs[1] = { p->rec->cls.base.keys };
    uint32_t ns[1] = { p->rec->cls.base.n_keys };
    cr_assert_eq(fl_values_resolve(cfg, "part", tabs, ns, 1, &p->v), FL_OK, "%s", fl_err_msg());
    fl_config_free(cfg);
    p->cx = fl_ctx_new("part", &p->v, &p->arena, 7);
    cr_assert_not_null(p->cx);
    const fl_host *h = fl_host_table();
    fl_host_clear_error();
    fl_status st = FL_ERR_INTERNAL;
    switch (kind) {
    case FL_KIND_ESTIMATOR: st = p->rec->cls.estimator.create(h, p->cx, shape, &p->self); break;
    case FL_KIND_POSTERIOR: st = p->rec->cls.posterior.create(h, p->cx, shape, &p->self); break;
    case FL_KIND_LIKELIHOOD: st = p->rec->cls.likelihood.create(h, p->cx, shape, &p->self); break;
    case FL_KIND_PRIOR: st = p->rec->cls.prior.create(h, p->cx, shape, &p->self); break;
    default: break;
    }
    fl_ctx_end_create(p->cx);
    cr_assert_eq(st, FL_OK, "create %s: %s", type, fl_host_last_error());
    cr_assert_eq(fl_arena_finalize(&p->arena, 7), FL_OK);
    p->theta = p->arena.theta + p->cx->block;
    p->dtheta = p->arena.grad + p->cx->block;
}

static void part_free(part *p)
{
    switch (p->kind) {
    case FL_KIND_ESTIMATOR: p->rec->cls.estimator.destroy(p->self); break;
    case FL_KIND_POSTERIOR: p->rec->cls.posterior.destroy(p->self); break;
    case FL_KIND_LIKELIHOOD: p->rec->cls.likelihood.destroy(p->self); break;
    case FL_KIND_PRIOR: p->rec->cls.prior.destroy(p->self); break;
    default: break;
    }
    fl_ctx_free(p->cx);
    fl_values_free(&p->v);
    fl_arena_free(&p->arena);
}

static fl_registry *registry(void)
{
    fl_runtime_init();
    return load_builtin_plugins();
}

static fl_real *vec(size_t n)
{
    fl_real *v = calloc(n ? n : 1, sizeof *v);
    cr_assert_not_null(v);
    return v;
}

/* n numbers shift + scale * N(0, 1) from the stream `name`. */
static fl_real *randn(size_t n, const char *name, double shift, double scale)
{
    fl_real *v = vec(n);
    fl_rng_normal(fl_rng_key_make(11, name), 0, 0, n, v);
    for (size_t i = 0; i < n; i++) v[i] = (fl_real)(shift + scale * v[i]);
    return v;
}

/* Central difference of f with respect to *v; the step is the one the
 * rounded perturbed values actually take. */
static double fd(fl_real *v, double (*f)(void *), void *ctx)
{
    fl_real v0 = *v, vp = (fl_real)(v0 + FD_H), vm = (fl_real)(v0 - FD_H);
    *v = vp;
    double fp = f(ctx);
    *v = vm;
    double fm = f(ctx);
    *v = v0;
    return (fp - fm) / ((double)vp - (double)vm);
}

/* Worst |got - want| / (FD_ABS + FD_REL |want|) over a test, for the log. */
static double g_worst;

#define assert_grad(got, want, ...)                                                         \
    do {                                                                                    \
        double g_ = (got), w_ = (want), r_ = fabs(g_ - w_) / (FD_ABS + FD_REL * fabs(w_));   \
        g_worst = r_ > g_worst ? r_ : g_worst;                                              \
        if (!(r_ <= 1)) {                                                                   \
            fprintf(stderr, "gradient %.9g, finite difference %.9g\n", g_, w_);             \
            cr_assert_fail(__VA_ARGS__);                                                    \
        }                                                                                   \
    } while (0)

#define assert_close(got, want, rel, ...)                                                   \
    do {                                                                                    \
        double g_ = (got), w_ = (want);                                                     \
        if (!(fabs(g_ - w_) <= (rel) * (1 + fabs(w_)))) {                                   \
            fprintf(stderr, "got %.12g, want %.12g\n", g_, w_);                             \
            cr_assert_fail(__VA_ARGS__);                                                    \
        }                                                                                   \
    } while (0)

/* ---- estimators --------------------------------------------------------- */

static const char *const est_names[] = { "elbo", "iwae", "stl", "dreg" };

static part est_new(const fl_registry *r, const char *type, uint32_t n, uint32_t k)
{
    part p;
    fl_estimator_shape sh = { n, k };
    part_new(&p, r, FL_KIND_ESTIMATOR, type, NULL, &sh);
    return p;
}

static fl_status est_run(part *p, uint32_t n, uint32_t k, const fl_real *lw, double *bound,
                         fl_real *wp, fl_real *wq)
{
    fl_est_args a = { n, k, lw, bound, wp, wq };
    fl_host_clear_error();
    return p->rec->cls.estimator.weights(p->self, &a);
}

/* log mean_j exp(lw_j) in double, and the softmax. */
static double ref_iwae(const fl_real *lw, uint32_t k, double *soft)
{
    double m = -INFINITY, s = 0;
    for (uint32_t j = 0; j < k; j++) m = fmax(m, lw[j]);
    if (m == -INFINITY) {
        for (uint32_t j = 0; soft && j < k; j++) soft[j] = 0;
        return -INFINITY;
    }
    for (uint32_t j = 0; j < k; j++) s += exp(lw[j] - m);
    for (uint32_t j = 0; soft && j < k; j++) soft[j] = exp(lw[j] - m) / s;
    return m + log(s) - log((double)k);
}

Test(estimators, bounds_and_weights_match_the_formulas)
{
    fl_registry *r = registry();
    enum { N = 5, K = 7 };
    fl_real *lw = randn(N * K, "est.lw", -40, 3);
    double bound[N], soft[K];
    fl_real wp[N * K], wq[N * K];
    for (int e = 0; e < 4; e++) {
        part p = est_new(r, est_names[e], N, K);
        cr_assert_eq(est_run(&p, N, K, lw, bound, wp, wq), FL_OK, "%s", fl_host_last_error());
        for (uint32_t b = 0; b < N; b++) {
            const fl_real *l = lw + b * K;
            double want = ref_iwae(l, K, soft), mean = 0;
            for (uint32_t j = 0; j < K; j++) mean += l[j];
            mean /= K;
            /* Computed in double from the same inputs in every build. */
            assert_close(bound[b], e == 0 ? mean : want, 1e-12, "%s bound %u", est_names[e], b);
            double sp = 0, sq = 0;
            for (uint32_t j = 0; j < K; j++) {
                double p_ = e == 0 ? 1.0 / K : soft[j], q_ = e == 3 ? p_ * p_ : p_;
                /* one rounding of a double to fl_real */
                cr_assert(fabs(wp[b * K + j] - p_) <= 1.2e-7 * p_ + 1e-300, "%s wp %g vs %g",
                          est_names[e], (double)wp[b * K + j], p_);
                cr_assert(fabs(wq[b * K + j] - q_) <= 1.2e-7 * q_ + 1e-300, "%s wq %g vs %g",
                          est_names[e], (double)wq[b * K + j], q_);
                sp += wp[b * K + j];
                sq += wq[b * K + j];
            }
            assert_close(sp, 1, 1e-6, "%s: generative weights of a point sum to 1", est_names[e]);
            if (e != 3) assert_close(sq, 1, 1e-6, "%s: inference weights sum to 1", est_names[e]);
        }
        part_free(&p);
    }
    free(lw);
    fl_registry_free(r);
}

typedef struct est_fd_ctx {
    part *p;
    uint32_t n, k;
    fl_real *lw;
    double *bound;
} est_fd_ctx;

static double est_sum_bound(void *c)
{
    est_fd_ctx *x = c;
    cr_assert_eq(est_run(x->p, x->n, x->k, x->lw, x->bound, NULL, NULL), FL_OK);
    double s = 0;
    for (uint32_t b = 0; b < x->n; b++) s += x->bound[b];
    return s;
}

Test(estimators, weights_are_the_gradient_of_the_bound)
{
    /* elbo and iwae: wp[b,j] = d(sum_b bound_b)/d logw[b,j]. The bounds are
     * double from exact fl_real inputs, so only truncation (~h^2) counts. */
    fl_registry *r = registry();
    enum { N = 4, K = 6 };
    fl_real *lw = randn(N * K, "est.fd", 0, 1.5);
    double bound[N];
    fl_real wp[N * K], wq[N * K];
    for (int e = 0; e < 2; e++) {
        part p = est_new(r, est_names[e], N, K);
        cr_assert_eq(est_run(&p, N, K, lw, bound, wp, wq), FL_OK);
        est_fd_ctx c = { &p, N, K, lw, bound };
        for (uint32_t i = 0; i < N * K; i++) {
            double g = fd(&lw[i], est_sum_bound, &c);
            cr_assert(fabs(wp[i] - g) <= 2e-5, "%s: wp[%u] = %.9g, d bound / d logw = %.9g",
                      est_names[e], i, (double)wp[i], g);
        }
        part_free(&p);
    }
    free(lw);
    fl_registry_free(r);
}

Test(estimators, stl_and_dreg)
{
    fl_registry *r = registry();
    enum { N = 6, K = 9 };
    fl_real *lw = randn(N * K, "est.dreg", -3, 2);
    double b_iwae[N], b[N];
    fl_real wp_iwae[N * K], wq_iwae[N * K], wp[N * K], wq[N * K];
    part iw = est_new(r, "iwae", N, K);
    cr_assert_eq(est_run(&iw, N, K, lw, b_iwae, wp_iwae, wq_iwae), FL_OK);
    cr_assert_eq(iw.rec->cls.estimator.flags & FL_EST_DETACH_Q, 0u);
    part el = est_new(r, "elbo", N, K);
    cr_assert_eq(el.rec->cls.estimator.flags & FL_EST_DETACH_Q, 0u);
    for (int e = 2; e < 4; e++) {
        part p = est_new(r, est_names[e], N, K);
        cr_assert(p.rec->cls.estimator.flags & FL_EST_DETACH_Q, "%s must detach q", est_names[e]);
        cr_assert_eq(est_run(&p, N, K, lw, b, wp, wq), FL_OK);
        cr_assert_arr_eq(b, b_iwae, sizeof b, "%s: the iwae bound", est_names[e]);
        cr_assert_arr_eq(wp, wp_iwae, sizeof wp, "%s: iwae's generative weights", est_names[e]);
        for (uint32_t i = 0; i < N * K; i++) {
            double want = e == 2 ? wp[i] : (double)wp[i] * wp[i];
            cr_assert(fabs(wq[i] - want) <= 3e-7 * want, "%s wq[%u] = %g, want %g", est_names[e],
                      i, (double)wq[i], want);
        }
        part_free(&p);
    }
    part_free(&el);
    part_free(&iw);
    free(lw);
    fl_registry_free(r);
}

Test(estimators, impossible_samples)
{
    fl_registry *r = registry();
    enum { N = 3, K = 5 };
    const fl_real ninf = -INFINITY;
    fl_real lw[N * K] = { ninf, ninf, ninf, ninf, ninf,     /* every sample impossible */
                          -3, ninf, -1.5, ninf, -2,          /* two impossible */
                          -1, -2, -3, -4, -5 };
    double bound[N], soft[K];
    fl_real wp[N * K], wq[N * K];
    for (int e = 0; e < 4; e++) {
        part p = est_new(r, est_names[e], N, K);
        cr_assert_eq(est_run(&p, N, K, lw, bound, wp, wq), FL_OK, "%s", fl_host_last_error());
        cr_assert(bound[0] == -INFINITY, "%s: all impossible gives -inf", est_names[e]);
        for (uint32_t j = 0; j < K; j++) cr_assert(wp[j] == 0 && wq[j] == 0);
        if (e == 0) {
            cr_assert(bound[1] == -INFINITY, "elbo: one impossible sample gives -inf");
        } else {
            double want = ref_iwae(lw + K, K, soft);
            cr_assert(isfinite(bound[1]));
            assert_close(bound[1], want, 1e-12, "%s: logsumexp over the possible samples",
                         est_names[e]);
        }
        for (uint32_t i = 0; i < N * K; i++) {
            cr_assert(isfinite(wp[i]) && isfinite(wq[i]));
            if (lw[i] == ninf) cr_assert(wp[i] == 0, "%s: an impossible sample weighs 0", est_names[e]);
            if (wp[i] == 0) cr_assert(wq[i] == 0, "%s: wq = 0 wherever wp = 0", est_names[e]);
        }
        for (uint32_t j = 0; j < K; j++)
            if (lw[K + j] != ninf) cr_assert(wp[K + j] > 0);
        cr_assert(isfinite(bound[2]));
        part_free(&p);
    }
    fl_registry_free(r);
}

Test(estimators, nan_and_plus_inf_are_numeric_errors)
{
    fl_registry *r = registry();
    enum { N = 2, K = 3 };
    fl_real lw[N * K] = { -1, -2, -3, -4, NAN, -6 };
    double bound[N];
    fl_real wp[N * K], wq[N * K];
    for (int e = 0; e < 4; e++) {
        part p = est_new(r, est_names[e], N, K);
        lw[4] = NAN;
        cr_assert_eq(est_run(&p, N, K, lw, bound, wp, wq), FL_ERR_NUMERIC, "%s", est_names[e]);
        assert_contains(fl_host_last_error(), "NaN");
        assert_contains(fl_host_last_error(), "data point 1");
        cr_assert_eq(est_run(&p, N, K, lw, bound, NULL, NULL), FL_ERR_NUMERIC);
        lw[4] = INFINITY;
        cr_assert_eq(est_run(&p, N, K, lw, bound, wp, wq), FL_ERR_NUMERIC);
        assert_contains(fl_host_last_error(), "+inf");
        part_free(&p);
    }
    fl_registry_free(r);
}

Test(estimators, one_sample_iwae_is_the_elbo)
{
    fl_registry *r = registry();
    enum { N = 64 };
    fl_real *lw = randn(N, "est.k1", -100, 30);
    double be[N], b[N];
    fl_real wpe[N], wqe[N], wp[N], wq[N];
    part el = est_new(r, "elbo", N, 1);
    cr_assert_eq(est_run(&el, N, 1, lw, be, wpe, wqe), FL_OK);
    for (int e = 1; e < 4; e++) {
        part p = est_new(r, est_names[e], N, 1);
        cr_assert_eq(est_run(&p, N, 1, lw, b, wp, wq), FL_OK);
        cr_assert_arr_eq(b, be, sizeof b, "%s with k = 1: exactly the elbo", est_names[e]);
        cr_assert_arr_eq(wp, wpe, sizeof wp);
        cr_assert_arr_eq(wq, wqe, sizeof wq);
        part_free(&p);
    }
    for (uint32_t i = 0; i < N; i++) cr_assert(be[i] == lw[i] && wpe[i] == 1 && wqe[i] == 1);
    part_free(&el);
    free(lw);
    fl_registry_free(r);
}

Test(estimators, elbo_below_iwae_and_bound_only_calls)
{
    fl_registry *r = registry();
    enum { N = 200, K = 10 };
    fl_real *lw = randn(N * K, "est.order", -90, 4);
    double be[N], bi[N], b2[N];
    fl_real *wp = vec(N * K), *wq = vec(N * K);
    part el = est_new(r, "elbo", N, K), iw = est_new(r, "iwae", N, K);
    cr_assert_eq(est_run(&el, N, K, lw, be, NULL, NULL), FL_OK);
    cr_assert_eq(est_run(&iw, N, K, lw, bi, wp, wq), FL_OK);
    cr_assert_eq(est_run(&iw, N, K, lw, b2, NULL, NULL), FL_OK);
    cr_assert_arr_eq(bi, b2, sizeof bi, "bounds do not depend on whether weights are asked for");
    for (uint32_t b = 0; b < N; b++) {
        cr_assert(be[b] <= bi[b] + 1e-12, "point %u: elbo %g > iwae %g", b, be[b], bi[b]);
        double mx = -INFINITY;
        for (uint32_t j = 0; j < K; j++) mx = fmax(mx, lw[b * K + j]);
        cr_assert(bi[b] <= mx + 1e-12, "iwae bound %g above its largest log weight %g", bi[b], mx);
    }
    part_free(&el);
    part_free(&iw);
    free(lw);
    free(wp);
    free(wq);
    fl_registry_free(r);
}

/* ---- posteriors ---------------------------------------------------------- */

typedef struct post_case {
    part p;
    int full;
    uint32_t d, np, ld, n, k;
    double m;              /* min_log_sigma */
    fl_real *param, *eps, *z, *logq, *dz, *dlogq, *dparam, *param0;
} post_case;

/* The factor's log-scale after the smooth floor (independent of the plugin). */
static double ref_floor(double s, double m) { return s >= m + 1 ? s : m + exp(s - m - 1); }

/* Dense L (d x d, double) of parameter row `prm`. */
static void ref_L(const post_case *c, const fl_real *prm, double *L)
{
    uint32_t d = c->d;
    memset(L, 0, sizeof(double) * d * d);
    if (!c->full) {
        for (uint32_t i = 0; i < d; i++) L[i * d + i] = exp(ref_floor(prm[d + i], c->m));
        return;
    }
    size_t q = d;
    for (uint32_t i = 0; i < d; i++) {
        for (uint32_t j = 0; j < i; j++) L[i * d + j] = prm[q++];
        L[i * d + i] = exp(ref_floor(prm[q++], c->m));
    }
}

/* log N(z; mu, L L^T) by forward substitution L v = z - mu. */
static double ref_logq(const post_case *c, const fl_real *prm, const fl_real *z)
{
    uint32_t d = c->d;
    double L[64 * 64], v[64], s = 0;
    cr_assert(d <= 64);
    ref_L(c, prm, L);
    for (uint32_t i = 0; i < d; i++) {
        double t = (double)z[i] - prm[i];
        for (uint32_t j = 0; j < i; j++) t -= L[i * d + j] * v[j];
        v[i] = t / L[i * d + i];
        s += -0.5 * v[i] * v[i] - log(L[i * d + i]);
    }
    return s - 0.5 * d * LOG_2PI;
}

static void post_new(post_case *c, const fl_registry *r, int full, uint32_t d, uint32_t n,
                     uint32_t k, const char *min_ls, uint32_t pad)
{
    memset(c, 0, sizeof *c);
    char kv0[64];
    snprintf(kv0, sizeof kv0, "min_log_sigma=%s", min_ls ? min_ls : "-10");
    const char *kv[] = { kv0, NULL };
    fl_posterior_shape sh = { d, n, n * k };
    part_new(&c->p, r, FL_KIND_POSTERIOR, full ? "gaussian-full" : "gaussian-diag", kv, &sh);
    c->full = full;
    c->d = d;
    c->n = n;
    c->k = k;
    c->m = min_ls ? atof(min_ls) : -10;
    c->np = c->p.rec->cls.posterior.n_params(c->p.self);
    cr_assert_eq(c->np, full ? d + d * (d + 1) / 2 : 2 * d);
    c->ld = c->np + pad;
    /* mu ~ N(0.3, 1); log-scales ~ N(-0.3, 0.4); off-diagonals ~ N(0, 0.5) */
    c->param = randn((size_t)n * c->ld, full ? "post.pf" : "post.pd", 0, 0.5);
    fl_real *mu = randn((size_t)n * d, "post.mu", 0.3, 1), *ls = randn((size_t)n * d, "post.ls",
                                                                         -0.3, 0.4);
    for (uint32_t b = 0; b < n; b++) {
        fl_real *row = c->param + (size_t)b * c->ld;
        for (uint32_t i = 0; i < d; i++) {
            row[i] = mu[b * d + i];
            size_t di = full ? d + (size_t)i * (i + 1) / 2 + i : d + i;
            row[di] = ls[b * d + i];
        }
    }
    free(mu);
    free(ls);
    c->param0 = vec((size_t)n * c->ld);
    memcpy(c->param0, c->param, sizeof(fl_real) * n * c->ld);
    size_t rows = (size_t)n * k;
    c->eps = randn(rows * d, "post.eps", 0, 1);
    c->z = vec(rows * d);
    c->logq = vec(rows);
    c->dz = randn(rows * d, "post.a", 0, 1);
    c->dlogq = randn(rows, "post.c", 0, 1);
    c->dparam = vec((size_t)n * c->ld);
}

static void post_free(post_case *c)
{
    part_free(&c->p);
    fl_real *bufs[] = { c->param, c->eps, c->z, c->logq, c->dz, c->dlogq, c->dparam, c->param0 };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

static void post_sample(post_case *c)
{
    fl_post_fwd a = { c->n, c->k, c->p.theta, c->param, c->ld, c->eps, c->z, c->logq };
    cr_assert_eq(c->p.rec->cls.posterior.sample(c->p.self, &a), FL_OK, "%s", fl_host_last_error());
}

static void post_backward(post_case *c, int detach)
{
    fl_post_bwd a = { c->n, c->k, c->p.theta, c->p.dtheta, c->param, c->ld, c->eps, c->z,
                      c->dz, c->dlogq, detach, c->dparam };
    cr_assert_eq(c->p.rec->cls.posterior.backward(c->p.self, &a), FL_OK, "%s",
                 fl_host_last_error());
}

Test(posteriors, samples_and_log_density)
{
    fl_registry *r = registry();
    for (int full = 0; full < 2; full++) {
        post_case c;
        post_new(&c, r, full, 5, 4, 3, NULL, 3);
        post_sample(&c);
        double L[25];
        for (uint32_t b = 0; b < c.n; b++) {
            const fl_real *prm = c.param + (size_t)b * c.ld;
            ref_L(&c, prm, L);
            for (uint32_t j = 0; j < c.k; j++) {
                size_t rw = (size_t)b * c.k + j;
                const fl_real *e = c.eps + rw * c.d, *z = c.z + rw * c.d;
                double e2 = 0;
                for (uint32_t i = 0; i < c.d; i++) {
                    double want = prm[i];
                    for (uint32_t t = 0; t <= i; t++) want += L[i * c.d + t] * e[t];
                    assert_close(z[i], want, VAL_REL, "%s z", full ? "full" : "diag");
                    e2 += (double)e[i] * e[i];
                }
                /* log N(z; mu, L L^T) solved from z, independent of eps */
                double lq = ref_logq(&c, prm, z);
                double tol = full ? 50 * VAL_REL : VAL_REL; /* the solve amplifies z's rounding */
                assert_close(c.logq[rw], lq, tol, "%s logq %g vs log N(z) %g",
                             full ? "full" : "diag", (double)c.logq[rw], lq);
                (void)e2;
            }
        }
        post_free(&c);
    }
    fl_registry_free(r);
}

Test(posteriors, zero_noise_gives_the_mean)
{
    fl_registry *r = registry();
    for (int full = 0; full < 2; full++) {
        post_case c;
        post_new(&c, r, full, 4, 3, 2, NULL, 0);
        memset(c.eps, 0, sizeof(fl_real) * c.n * c.k * c.d);
        post_sample(&c);
        for (uint32_t b = 0; b < c.n; b++)
            for (uint32_t j = 0; j < c.k; j++)
                for (uint32_t i = 0; i < c.d; i++)
                    cr_assert(c.z[((size_t)b * c.k + j) * c.d + i] == c.param[b * c.ld + i],
                              "z at eps = 0 must be mu");
        post_free(&c);
    }
    fl_registry_free(r);
}

Test(posteriors, min_log_sigma_floor)
{
    /* s' = s above m + 1, m + exp(s - m - 1) below: sigma never below e^m. */
    fl_registry *r = registry();
    post_case c;
    post_new(&c, r, 0, 4, 1, 1, "-3", 0);
    const fl_real ls[4] = { 0.5f, -2.0f, -4.0f, -40.0f };
    for (int i = 0; i < 4; i++) {
        c.param[i] = 0;
        c.param[4 + i] = ls[i];
        c.eps[i] = 1;
    }
    post_sample(&c);
    double lq = -2 - 2 * LOG_2PI;
    for (int i = 0; i < 4; i++) {
        double want = exp(ref_floor(ls[i], -3));
        assert_close(c.z[i], want, VAL_REL, "sigma of log-scale %g", (double)ls[i]);
        cr_assert(c.z[i] >= (fl_real)exp(-3.0) * (1 - 1e-6));
        lq -= ref_floor(ls[i], -3);
    }
    cr_assert(c.z[0] == (fl_real)exp(0.5) || fabs(c.z[0] - exp(0.5)) < 1e-6 * exp(0.5));
    assert_close(c.logq[0], lq, VAL_REL, "logq with floored scales");
    post_free(&c);
    fl_registry_free(r);
}

typedef struct post_fd_ctx {
    post_case *c;
    int detach;
} post_fd_ctx;

/* L = sum a.z + sum c log q, with log q the plugin's (not detached) or log
 * q0(z; parameters frozen at param0) (detached). */
static double post_L(void *x)
{
    post_fd_ctx *f = x;
    post_case *c = f->c;
    post_sample(c);
    double L = 0;
    for (uint32_t b = 0; b < c->n; b++)
        for (uint32_t j = 0; j < c->k; j++) {
            size_t rw = (size_t)b * c->k + j;
            const fl_real *z = c->z + rw * c->d;
            for (uint32_t i = 0; i < c->d; i++) L += (double)c->dz[rw * c->d + i] * z[i];
            double lq = f->detach ? ref_logq(c, c->param0 + (size_t)b * c->ld, z) : c->logq[rw];
            L += c->dlogq[rw] * lq;
        }
    return L;
}

static void post_fd_check(int full, int detach, const char *min_ls)
{
    fl_registry *r = registry();
    post_case c;
    post_new(&c, r, full, full ? 4 : 5, 3, 4, min_ls, 2);
    if (min_ls) {
        /* push some log-scales under the floor's knee (m + 1), so the
         * smooth part is differentiated too */
        double m = atof(min_ls);
        for (uint32_t b = 0; b < c.n; b++) {
            size_t di = full ? c.d + 0 : c.d + 1;
            c.param[b * c.ld + di] = (fl_real)(m + 0.2 - 0.3 * b);
        }
        memcpy(c.param0, c.param, sizeof(fl_real) * c.n * c.ld);
    }
    const fl_real sentinel = 777;
    for (size_t i = 0; i < (size_t)c.n * c.ld; i++) c.dparam[i] = sentinel;
    post_sample(&c);
    post_backward(&c, detach);
    post_fd_ctx f = { &c, detach };
    g_worst = 0;
    for (uint32_t b = 0; b < c.n; b++) {
        for (uint32_t q = 0; q < c.ld; q++) {
            size_t at = (size_t)b * c.ld + q;
            if (q >= c.np) {
                cr_assert(c.dparam[at] == sentinel, "padding beyond n_params was written");
                continue;
            }
            double g = fd(&c.param[at], post_L, &f);
            assert_grad(c.dparam[at], g, "%s detach=%d min_log_sigma=%s: point %u param %u",
                        full ? "full" : "diag", detach, min_ls ? min_ls : "-10", b, q);
        }
    }
    cr_log_info("%s detach=%d: worst gradient error %.3g of the bound", full ? "full" : "diag",
                detach, g_worst);
    post_free(&c);
    fl_registry_free(r);
}

Test(posteriors, diag_backward) { post_fd_check(0, 0, NULL); }
Test(posteriors, diag_backward_detached) { post_fd_check(0, 1, NULL); }
Test(posteriors, full_backward) { post_fd_check(1, 0, NULL); }
Test(posteriors, full_backward_detached) { post_fd_check(1, 1, NULL); }
Test(posteriors, diag_backward_on_the_floor) { post_fd_check(0, 0, "-1.5"); }
Test(posteriors, diag_backward_detached_on_the_floor) { post_fd_check(0, 1, "-1.5"); }
Test(posteriors, full_backward_on_the_floor) { post_fd_check(1, 0, "-1.5"); }
Test(posteriors, full_backward_detached_on_the_floor) { post_fd_check(1, 1, "-1.5"); }

Test(posteriors, detach_drops_the_direct_term)
{
    /* With dz = 0 the non-detached gradient is the direct term alone:
     * dmu = 0, ds_i = -sum_j dlogq_j; detached it is -dlogq Sigma^-1 eps
     * pushed through z (not zero). */
    fl_registry *r = registry();
    for (int full = 0; full < 2; full++) {
        post_case c;
        post_new(&c, r, full, 3, 2, 5, NULL, 0);
        memset(c.dz, 0, sizeof(fl_real) * c.n * c.k * c.d);
        post_sample(&c);
        post_backward(&c, 0);
        for (uint32_t b = 0; b < c.n; b++) {
            double sc = 0;
            for (uint32_t j = 0; j < c.k; j++) sc += c.dlogq[b * c.k + j];
            for (uint32_t i = 0; i < c.d; i++) {
                cr_assert(fabs(c.dparam[b * c.ld + i]) <= 1e-6, "dmu with dz = 0 must be 0");
                size_t di = full ? c.d + (size_t)i * (i + 1) / 2 + i : c.d + i;
                assert_close(c.dparam[b * c.ld + di], -sc, VAL_REL * 10, "ds = -sum dlogq");
            }
        }
        post_backward(&c, 1);
        double mag = 0;
        for (size_t i = 0; i < (size_t)c.n * c.ld; i++) mag += fabs(c.dparam[i]);
        cr_assert(mag > 0.1, "detached gradient must still flow through z");
        post_free(&c);
    }
    fl_registry_free(r);
}

Test(posteriors, threaded_calls_equal_per_point_calls)
{
    /* n k d above the threading threshold: the same numbers as one point
     * per call (which never threads), bit for bit. */
    fl_registry *r = registry();
    for (int full = 0; full < 2; full++) {
        post_case c;
        post_new(&c, r, full, 16, 40, 64, NULL, 1);
        size_t rows = (size_t)c.n * c.k;
        post_sample(&c);
        post_backward(&c, 1);
        fl_real *z = vec(rows * c.d), *lq = vec(rows), *dp = vec((size_t)c.n * c.ld);
        memcpy(z, c.z, sizeof(fl_real) * rows * c.d);
        memcpy(lq, c.logq, sizeof(fl_real) * rows);
        memcpy(dp, c.dparam, sizeof(fl_real) * c.n * c.ld);
        const fl_posterior_class *cls = &c.p.rec->cls.posterior;
        for (uint32_t b = 0; b < c.n; b++) {
            size_t r0 = (size_t)b * c.k;
            fl_post_fwd a = { 1, c.k, c.p.theta, c.param + b * c.ld, c.ld, c.eps + r0 * c.d,
                              c.z + r0 * c.d, c.logq + r0 };
            cr_assert_eq(cls->sample(c.p.self, &a), FL_OK);
            fl_post_bwd g = { 1, c.k, c.p.theta, c.p.dtheta, c.param + b * c.ld, c.ld,
                              c.eps + r0 * c.d, c.z + r0 * c.d, c.dz + r0 * c.d, c.dlogq + r0, 1,
                              c.dparam + b * c.ld };
            cr_assert_eq(cls->backward(c.p.self, &g), FL_OK);
        }
        cr_assert_arr_eq(z, c.z, sizeof(fl_real) * rows * c.d);
        cr_assert_arr_eq(lq, c.logq, sizeof(fl_real) * rows);
        for (uint32_t b = 0; b < c.n; b++)
            cr_assert_arr_eq(dp + b * c.ld, c.dparam + b * c.ld, sizeof(fl_real) * c.np);
        free(z);
        free(lq);
        free(dp);
        post_free(&c);
    }
    fl_registry_free(r);
}

/* ---- likelihoods --------------------------------------------------------- */

typedef struct lik_case {
    part p;
    uint32_t d, np, n, k;
    fl_real *x, *param, *logp, *w, *dparam, *dx;
} lik_case;

static void lik_new(lik_case *c, const fl_registry *r, const char *type, const char *const *kv,
                    uint32_t d, uint32_t n, uint32_t k)
{
    memset(c, 0, sizeof *c);
    fl_likelihood_shape sh = { d, n };
    part_new(&c->p, r, FL_KIND_LIKELIHOOD, type, kv, &sh);
    c->d = d;
    c->n = n;
    c->k = k;
    c->np = c->p.rec->cls.likelihood.n_params(c->p.self);
    c->x = vec((size_t)(n / k) * d);
    c->param = vec((size_t)n * c->np);
    c->logp = vec(n);
    c->w = randn(n, "lik.w", 0.2, 1); /* both signs */
    c->dparam = vec((size_t)n * c->np);
    c->dx = vec((size_t)n * d);
}

static void lik_free(lik_case *c)
{
    part_free(&c->p);
    fl_real *bufs[] = { c->x, c->param, c->logp, c->w, c->dparam, c->dx };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

static fl_status lik_call(lik_case *c, fl_real *logp, const fl_real *w, fl_real *dparam,
                          fl_real *dx)
{
    fl_lik_args a = { c->n, c->k, c->p.theta, c->p.dtheta, c->x, c->param, logp, w, dparam, dx };
    fl_host_clear_error();
    return c->p.rec->cls.likelihood.log_prob(c->p.self, &a);
}

/* sum_i w_i log p_i, from the plugin's own log p. */
static double lik_sum(void *x)
{
    lik_case *c = x;
    cr_assert_eq(lik_call(c, c->logp, NULL, NULL, NULL), FL_OK);
    double s = 0;
    for (uint32_t i = 0; i < c->n; i++) s += (double)c->w[i] * c->logp[i];
    return s;
}

/* Every gradient output of one call against FD: dparam, dx (k == 1) and
 * dtheta (which must accumulate onto what is there). */
static void lik_fd(lik_case *c, const char *what)
{
    size_t nt = c->p.arena.count; /* global: the log-variances, at the block's start */
    for (size_t i = 0; i < nt; i++) c->p.dtheta[i] = 0.25;
    for (size_t i = 0; i < (size_t)c->n * c->np; i++) c->dparam[i] = 99;
    fl_real *dx = c->k == 1 ? c->dx : NULL;
    cr_assert_eq(lik_call(c, NULL, c->w, c->dparam, dx), FL_OK, "%s", fl_host_last_error());
    g_worst = 0;
    for (size_t i = 0; i < (size_t)c->n * c->np; i++)
        assert_grad(c->dparam[i], fd(&c->param[i], lik_sum, c), "%s dparam[%zu]", what, i);
    if (dx)
        for (size_t i = 0; i < (size_t)c->n * c->d; i++)
            assert_grad(dx[i], fd(&c->x[i], lik_sum, c), "%s dx[%zu]", what, i);
    for (size_t i = 0; i < nt; i++)
        assert_grad(c->p.dtheta[i] - 0.25, fd(&c->p.theta[i], lik_sum, c), "%s dtheta[%zu]",
                    what, i);
    cr_log_info("%s: worst gradient error %.3g of the bound", what, g_worst);
}

/* Logits over the whole useful range, with a few saturated ones: all
 * four sign/label combinations for log p; for gradients (`wrong` = 0) only
 * correctly predicted ones, since a -95 term would make the float FD's
 * rounding noise (ulp(log p) / 2h) the size of the tolerance. */
static void bern_fill(lik_case *c, int binary, int wrong)
{
    fl_real *l = randn((size_t)c->n * c->np, "lik.logits", 0, 3);
    memcpy(c->param, l, sizeof(fl_real) * c->n * c->np);
    free(l);
    c->param[0] = 30;
    c->param[1] = -30;
    c->param[2] = 95;
    c->param[3] = -95;
    fl_real *u = randn((size_t)(c->n / c->k) * c->d, "lik.x", 0, 1);
    for (size_t i = 0; i < (size_t)(c->n / c->k) * c->d; i++)
        c->x[i] = binary ? (u[i] > 0.3f) : (fl_real)(1 / (1 + exp(-2.0 * u[i])));
    c->x[0] = 1;
    c->x[1] = 0;
    c->x[2] = !wrong;
    c->x[3] = wrong ? 1 : 0;
    free(u);
}

Test(likelihoods, bernoulli_log_prob)
{
    fl_registry *r = registry();
    for (int binary = 0; binary < 2; binary++) {
        lik_case c;
        lik_new(&c, r, "bernoulli", NULL, 37, 6, 2); /* 37: not a multiple of the lanes */
        cr_assert_eq(c.np, 37u);
        bern_fill(&c, binary, 1);
        cr_assert_eq(lik_call(&c, c.logp, NULL, NULL, NULL), FL_OK);
        for (uint32_t i = 0; i < c.n; i++) {
            const fl_real *x = c.x + (i / c.k) * c.d, *l = c.param + i * c.d;
            double want = 0, mag = 0;
            for (uint32_t j = 0; j < c.d; j++) {
                double t = x[j] * (double)l[j] - (fmax(l[j], 0) + log1p(exp(-fabs(l[j]))));
                want += t;
                mag += fabs(t);
            }
            cr_assert(fabs(c.logp[i] - want) <= VAL_REL * (1 + mag), "row %u: %.9g vs %.9g", i,
                      (double)c.logp[i], want);
        }
        /* a saturated, correctly predicted pixel costs ~e^-30, not 0 +- ulp(30) */
        lik_case one;
        lik_new(&one, r, "bernoulli", NULL, 1, 1, 1);
        one.x[0] = 1;
        one.param[0] = 30;
        cr_assert_eq(lik_call(&one, one.logp, NULL, NULL, NULL), FL_OK);
        cr_assert(fabs(one.logp[0] + exp(-30.0)) <= 1e-6 * exp(-30.0), "%a", (double)one.logp[0]);
        lik_free(&one);
        lik_free(&c);
    }
    fl_registry_free(r);
}

Test(likelihoods, bernoulli_log_prob_of_large_images)
{
    /* Logits 0 cost log 2 per pixel: the lanes' products reach 2^(dim/16)
     * and, for 1024 pixels and more, overflowed a double when multiplied
     * together (log p was -inf). Also a row past PROD_SPAN per lane. */
    fl_registry *r = registry();
    const uint32_t dims[] = { 784, 1024, 3072, 16 * 896 + 37 };
    for (size_t t = 0; t < sizeof dims / sizeof *dims; t++) {
        lik_case c;
        lik_new(&c, r, "bernoulli", NULL, dims[t], 2, 1);
        for (uint32_t j = 0; j < dims[t]; j++) c.x[j] = (fl_real)(j % 2);
        cr_assert_eq(lik_call(&c, c.logp, NULL, NULL, NULL), FL_OK);
        const double want = -(double)dims[t] * log(2.0);
        for (uint32_t i = 0; i < c.n; i++)
            cr_assert(fabs(c.logp[i] - want) <= VAL_REL * -want, "dim %u: log p %.9g, want %.9g",
                      dims[t], (double)c.logp[i], want);
        lik_free(&c);
    }
    fl_registry_free(r);
}

Test(likelihoods, bernoulli_gradients)
{
    fl_registry *r = registry();
    lik_case c;
    lik_new(&c, r, "bernoulli", NULL, 19, 6, 2);
    bern_fill(&c, 1, 0);
    lik_fd(&c, "bernoulli k=2");
    lik_free(&c);
    lik_new(&c, r, "bernoulli", NULL, 19, 4, 1);
    bern_fill(&c, 0, 0);
    lik_fd(&c, "bernoulli k=1 with dx");
    /* the closed form, too */
    cr_assert_eq(lik_call(&c, NULL, c.w, c.dparam, c.dx), FL_OK);
    for (uint32_t i = 0; i < c.n * c.d; i++) {
        double l = c.param[i], s = 1 / (1 + exp(-l)), w = c.w[i / c.d];
        cr_assert(fabs(c.dparam[i] - w * (c.x[i] - s)) <= 1e-6 * (1 + fabs(w)));
        cr_assert(fabs(c.dx[i] - w * l) <= 1e-6 * (1 + fabs(w * l)));
    }
    lik_free(&c);
    fl_registry_free(r);
}

static void gauss_fill(lik_case *c, int learned)
{
    fl_real *m = randn((size_t)c->n * c->np, "lik.gm", 0.2, 1);
    memcpy(c->param, m, sizeof(fl_real) * c->n * c->np);
    free(m);
    if (learned)
        for (uint32_t i = 0; i < c->n; i++)
            for (uint32_t j = 0; j < c->d; j++)
                c->param[i * c->np + c->d + j] = (fl_real)(0.5 * c->param[i * c->np + c->d + j] - 0.3);
    fl_real *x = randn((size_t)(c->n / c->k) * c->d, "lik.gx", 0, 1.2);
    memcpy(c->x, x, sizeof(fl_real) * (c->n / c->k) * c->d);
    free(x);
}

static void gauss_check(const fl_registry *r, const char *variance, uint32_t k)
{
    char kv0[64];
    snprintf(kv0, sizeof kv0, "variance=%s", variance);
    const char *kv[] = { kv0, "log_var=-0.4", NULL };
    int learned = !strcmp(variance, "learned"), global = !strcmp(variance, "global");
    lik_case c;
    lik_new(&c, r, "gaussian", kv, 21, 6 * k, k);
    cr_assert_eq(c.np, learned ? 42u : 21u);
    gauss_fill(&c, learned);
    if (global) {
        cr_assert_eq(c.p.arena.count, 21u, "global: one log-variance per dimension");
        for (uint32_t j = 0; j < c.d; j++) {
            cr_assert(c.p.theta[j] == (fl_real)-0.4, "initialised to log_var");
            c.p.theta[j] = (fl_real)(-0.4 + 0.3 * sin(j)); /* not all equal */
        }
    } else {
        cr_assert_eq(c.p.arena.count, 0u);
    }
    /* log p against the formula */
    cr_assert_eq(lik_call(&c, c.logp, NULL, NULL, NULL), FL_OK);
    for (uint32_t i = 0; i < c.n; i++) {
        double want = 0;
        for (uint32_t j = 0; j < c.d; j++) {
            double x = c.x[(i / k) * c.d + j], m = c.param[i * c.np + j];
            double lv = learned ? c.param[i * c.np + c.d + j] : global ? c.p.theta[j] : -0.4;
            want += -0.5 * ((x - m) * (x - m) / exp(lv) + lv + LOG_2PI);
        }
        assert_close(c.logp[i], want, VAL_REL * 10, "gaussian %s row %u", variance, i);
    }
    char what[64];
    snprintf(what, sizeof what, "gaussian %s k=%u", variance, k);
    lik_fd(&c, what);
    lik_free(&c);
}

Test(likelihoods, gaussian_learned) { fl_registry *r = registry(); gauss_check(r, "learned", 2); gauss_check(r, "learned", 1); fl_registry_free(r); }
Test(likelihoods, gaussian_fixed) { fl_registry *r = registry(); gauss_check(r, "fixed", 2); gauss_check(r, "fixed", 1); fl_registry_free(r); }
Test(likelihoods, gaussian_global) { fl_registry *r = registry(); gauss_check(r, "global", 2); gauss_check(r, "global", 1); fl_registry_free(r); }

Test(likelihoods, init_bias_and_mean)
{
    fl_registry *r = registry();
    const fl_real mean[6] = { 0, 0.0005f, 0.3f, 0.5f, 0.9995f, 1 };
    fl_real bias[12], back[12];
    lik_case c;
    lik_new(&c, r, "bernoulli", NULL, 6, 2, 1);
    const fl_likelihood_class *cls = &c.p.rec->cls.likelihood;
    cls->init_bias(c.p.self, mean, bias);
    for (int i = 0; i < 6; i++) {
        double m = fmin(fmax(mean[i], 0.001), 0.999);
        assert_close(bias[i], log(m / (1 - m)), 1e-6, "logit of the clipped mean");
    }
    cr_assert_eq(cls->mean(c.p.self, 1, c.p.theta, bias, back), FL_OK);
    for (int i = 0; i < 6; i++)
        assert_close(back[i], fmin(fmax(mean[i], 0.001), 0.999), 1e-6, "sigmoid(logit(m)) = m");
    lik_free(&c);

    const char *kvl[] = { "variance=learned", NULL }, *kvf[] = { "variance=fixed", NULL };
    lik_new(&c, r, "gaussian", kvl, 6, 2, 1);
    cls = &c.p.rec->cls.likelihood;
    for (int i = 0; i < 12; i++) bias[i] = 5;
    cls->init_bias(c.p.self, mean, bias);
    for (int i = 0; i < 6; i++) cr_assert(bias[i] == mean[i] && bias[6 + i] == 0);
    fl_real prm[24];
    for (int i = 0; i < 24; i++) prm[i] = (fl_real)i;
    cr_assert_eq(cls->mean(c.p.self, 2, c.p.theta, prm, back), FL_OK);
    for (int i = 0; i < 6; i++) cr_assert(back[i] == i && back[6 + i] == 12 + i, "mean = m");
    lik_free(&c);
    lik_new(&c, r, "gaussian", kvf, 6, 2, 1);
    cls = &c.p.rec->cls.likelihood;
    cls->init_bias(c.p.self, mean, bias);
    for (int i = 0; i < 6; i++) cr_assert(bias[i] == mean[i]);
    cr_assert_eq(cls->mean(c.p.self, 2, c.p.theta, prm, back), FL_OK);
    for (int i = 0; i < 12; i++) cr_assert(back[i] == i);
    lik_free(&c);
    fl_registry_free(r);
}

Test(likelihoods, bad_calls)
{
    fl_registry *r = registry();
    lik_case c;
    lik_new(&c, r, "bernoulli", NULL, 4, 4, 2);
    cr_assert_eq(lik_call(&c, c.logp, c.w, c.dparam, c.dx), FL_ERR_INVALID, "dx needs k = 1");
    cr_assert_neq(fl_host_last_error()[0], 0);
    c.k = 3;
    cr_assert_eq(lik_call(&c, c.logp, NULL, NULL, NULL), FL_ERR_INVALID, "n not a multiple of k");
    lik_free(&c);
    fl_registry_free(r);
}

Test(likelihoods, bernoulli_large_call_threaded_matches_chunks)
{
    /* The k = 5000 evaluation shape: one call of 5000 x 784, which splits
     * rows over threads; its numbers must equal 50-row calls (which do not),
     * bit for bit. (Its speed is measured in bench/bench_vae.c.) */
    fl_registry *r = registry();
    enum { N = 5000, D = 784, CH = 50 };
    lik_case c;
    lik_new(&c, r, "bernoulli", NULL, D, N, N);
    fl_real *l = randn((size_t)N * D, "lik.big", -1, 3);
    memcpy(c.param, l, sizeof(fl_real) * N * D);
    free(l);
    for (uint32_t j = 0; j < D; j++) c.x[j] = (fl_real)(j % 3 == 0);
    cr_assert_eq(lik_call(&c, c.logp, c.w, c.dparam, NULL), FL_OK);
    fl_real *lp = vec(N), *dp = vec((size_t)N * D);
    memcpy(lp, c.logp, sizeof(fl_real) * N);
    memcpy(dp, c.dparam, sizeof(fl_real) * N * D);
    const fl_likelihood_class *cls = &c.p.rec->cls.likelihood;
    for (uint32_t i = 0; i < N; i += CH) {
        /* k = CH so the chunk's rows all read x's one row, as before */
        fl_lik_args a = { CH, CH, c.p.theta, c.p.dtheta, c.x, c.param + (size_t)i * D,
                          c.logp + i, c.w + i, c.dparam + (size_t)i * D, NULL };
        cr_assert_eq(cls->log_prob(c.p.self, &a), FL_OK);
    }
    cr_assert_arr_eq(lp, c.logp, sizeof(fl_real) * N);
    cr_assert_arr_eq(dp, c.dparam, sizeof(fl_real) * N * D);
    free(lp);
    free(dp);
    lik_free(&c);
    fl_registry_free(r);
}

/* ---- discretized logistic ---------------------------------------------- */

/* P(bin g) in double from the logistic CDF, the edge bins taking the tails. */
static double dlog_ref(uint32_t g, double mu, double ls)
{
    const double s = exp(ls), h = 0.5 / 255, c = g / 255.0;
    double up = g == 255 ? 1 : 1 / (1 + exp(-(c + h - mu) / s));
    double lo = g == 0 ? 0 : 1 / (1 + exp(-(c - h - mu) / s));
    return up - lo;
}

/* One pixel (d = 1) in each of the 256 bins (rows), all with the same mu,
 * log s: the probabilities sum to 1, the edge bins hold the tails. */
Test(likelihoods, discretized_logistic_sums_to_one_over_256_bins)
{
    fl_registry *r = registry();
    const double mus[] = { -0.4, 0.0, 0.37, 0.5, 1.0, 1.6 };
    const double lss[] = { -7, -4.5, -2, 0, 1.5 };
    for (size_t a = 0; a < sizeof mus / sizeof *mus; a++)
        for (size_t b = 0; b < sizeof lss / sizeof *lss; b++) {
            lik_case c;
            lik_new(&c, r, "discretized-logistic", NULL, 1, 256, 1);
            cr_assert_eq(c.np, 2);
            for (uint32_t g = 0; g < 256; g++) {
                c.x[g] = (fl_real)(g / 255.0);
                c.param[2 * g] = (fl_real)mus[a];
                c.param[2 * g + 1] = (fl_real)lss[b];
            }
            cr_assert_eq(lik_call(&c, c.logp, NULL, NULL, NULL), FL_OK, "%s", fl_host_last_error());
            double sum = 0;
            for (uint32_t g = 0; g < 256; g++) {
                double p = exp((double)c.logp[g]), want = dlog_ref(g, (fl_real)mus[a],
                                                                   (fl_real)lss[b]);
                sum += p;
                /* values against the CDF formula where it is well conditioned */
                if (want > 1e-3)
                    cr_expect_leq(fabs(p - want), 1e-5 * want + 1e-9, "mu %g ls %g bin %u: %.9g, want %.9g",
                                  mus[a], lss[b], g, p, want);
            }
            cr_expect_leq(fabs(sum - 1), sizeof(fl_real) == 8 ? 1e-12 : 2e-5,
                          "mu %g, log s %g: the 256 bins sum to %.12g", mus[a], lss[b], sum);
            lik_free(&c);
        }
    fl_registry_free(r);
}

/* The edge bins: far outside [0, 1], nearly all mass sits in the nearest
 * edge bin, with a finite log p for the other (no log 0). */
Test(likelihoods, discretized_logistic_edge_bins)
{
    fl_registry *r = registry();
    lik_case c;
    lik_new(&c, r, "discretized-logistic", NULL, 1, 4, 1);
    const fl_real x[4] = { 0, 1, 0, 1 }, mu[4] = { -3, -3, 4, 4 };
    for (int i = 0; i < 4; i++) {
        c.x[i] = x[i];
        c.param[2 * i] = mu[i];
        c.param[2 * i + 1] = -3;
    }
    cr_assert_eq(lik_call(&c, c.logp, NULL, NULL, NULL), FL_OK);
    cr_expect_gt(c.logp[0], -1e-6, "bin 0 under mu = -3: %g", (double)c.logp[0]);
    cr_expect_gt(c.logp[3], -1e-6, "bin 255 under mu = 4: %g", (double)c.logp[3]);
    /* the other edge: log sigmoid(-(1 - h + 3)/e^-3) ~ -(4 - h) e^3 */
    const double want = -(4 - 0.5 / 255) * exp(3.0);
    cr_expect_leq(fabs(c.logp[1] - want), 1e-4 * fabs(want), "%g against %g", (double)c.logp[1], want);
    cr_expect(isfinite(c.logp[2]) && c.logp[2] < -50);
    lik_free(&c);
    fl_registry_free(r);
}

Test(likelihoods, discretized_logistic_gradients)
{
    fl_registry *r = registry();
    for (uint32_t k = 1; k <= 3; k += 2) {
        lik_case c;
        lik_new(&c, r, "discretized-logistic", NULL, 12, 6, k);
        fl_real *u = randn((size_t)(c.n / k) * c.d, "dlog.x", 0, 1);
        for (size_t i = 0; i < (size_t)(c.n / k) * c.d; i++) {
            double g = floor(256 / (1 + exp(-1.5 * u[i])));
            c.x[i] = (fl_real)((g > 255 ? 255 : g) / 255.0);
        }
        c.x[0] = 0; /* both edge bins */
        c.x[1] = 1;
        fl_real *m = randn((size_t)c.n * c.d, "dlog.mu", 0.5, 0.4);
        fl_real *l = randn((size_t)c.n * c.d, "dlog.ls", -1, 0.3);
        for (uint32_t i = 0; i < c.n; i++)
            for (uint32_t d = 0; d < c.d; d++) {
                c.param[(size_t)i * c.np + d] = m[(size_t)i * c.d + d];
                c.param[(size_t)i * c.np + c.d + d] = l[(size_t)i * c.d + d];
            }
        free(m);
        free(l);
        free(u);
        for (size_t i = 0; i < (size_t)c.n * c.np; i++) c.dparam[i] = 99;
        cr_assert_eq(lik_call(&c, NULL, c.w, c.dparam, NULL), FL_OK, "%s", fl_host_last_error());
        g_worst = 0;
        for (size_t i = 0; i < (size_t)c.n * c.np; i++)
            assert_grad(c.dparam[i], fd(&c.param[i], lik_sum, &c), "k = %u dparam[%zu]", k, i);
        cr_log_info("discretized logistic k = %u: worst gradient error %.3g", k, g_worst);
        lik_free(&c);
    }
    fl_registry_free(r);
}

/* Below min_log_scale the log-scale is clamped: its gradient is zero. */
Test(likelihoods, discretized_logistic_clamps_the_log_scale)
{
    fl_registry *r = registry();
    const char *const kv[] = { "min_log_scale=-3", NULL };
    lik_case c;
    lik_new(&c, r, "discretized-logistic", kv, 1, 2, 1);
    c.x[0] = c.x[1] = (fl_real)(100 / 255.0);
    c.param[0] = c.param[2] = (fl_real)(100 / 255.0);
    c.param[1] = -5;
    c.param[3] = -3;
    c.w[0] = c.w[1] = 1;
    cr_assert_eq(lik_call(&c, c.logp, NULL, NULL, NULL), FL_OK);
    cr_expect_eq(c.logp[0], c.logp[1], "log s = -5 acts as -3: %g against %g", (double)c.logp[0],
                 (double)c.logp[1]);
    cr_assert_eq(lik_call(&c, NULL, c.w, c.dparam, NULL), FL_OK);
    cr_expect_eq(c.dparam[1], 0);
    cr_expect_neq(c.dparam[3], 0);
    lik_free(&c);
    fl_registry_free(r);
}

Test(likelihoods, discretized_logistic_refuses_non_grey_data_and_dx)
{
    fl_registry *r = registry();
    lik_case c;
    lik_new(&c, r, "discretized-logistic", NULL, 2, 2, 1);
    c.x[0] = 0.5f;
    c.x[1] = 1.5f;
    cr_expect_eq(lik_call(&c, c.logp, NULL, NULL, NULL), FL_ERR_INVALID);
    cr_expect(strstr(fl_host_last_error(), "outside [0, 1]"), "%s", fl_host_last_error());
    c.x[1] = 0;
    cr_expect_eq(lik_call(&c, NULL, c.w, c.dparam, c.dx), FL_ERR_UNSUPPORTED);
    lik_free(&c);
    fl_registry_free(r);
}

/* ---- prior --------------------------------------------------------------- */

typedef struct prior_ctx {
    part *p;
    uint32_t n;
    fl_real *z, *logp, *w;
} prior_ctx;

static double prior_sum(void *x)
{
    prior_ctx *c = x;
    fl_prior_args a = { c->n, c->p->theta, c->p->dtheta, c->z, c->logp, NULL, NULL };
    cr_assert_eq(c->p->rec->cls.prior.log_prob(c->p->self, &a), FL_OK);
    double s = 0;
    for (uint32_t i = 0; i < c->n; i++) s += (double)c->w[i] * c->logp[i];
    return s;
}

Test(priors, standard_normal)
{
    fl_registry *r = registry();
    enum { N = 5, D = 11 };
    part p;
    fl_prior_shape sh = { D, N };
    part_new(&p, r, FL_KIND_PRIOR, "normal", NULL, &sh);
    cr_assert_eq(p.arena.count, 0u);
    fl_real *z = randn(N * D, "prior.z", 0.1, 1.3), *w = randn(N, "prior.w", 0, 1);
    fl_real logp[N], dz[N * D];
    fl_prior_args a = { N, p.theta, p.dtheta, z, logp, w, dz };
    cr_assert_eq(p.rec->cls.prior.log_prob(p.self, &a), FL_OK);
    for (uint32_t i = 0; i < N; i++) {
        double want = -0.5 * D * LOG_2PI;
        for (uint32_t j = 0; j < D; j++) want -= 0.5 * (double)z[i * D + j] * z[i * D + j];
        assert_close(logp[i], want, VAL_REL, "log N(z; 0, I)");
    }
    prior_ctx c = { &p, N, z, logp, w };
    g_worst = 0;
    for (uint32_t i = 0; i < N * D; i++)
        assert_grad(dz[i], fd(&z[i], prior_sum, &c), "prior dz[%u]", i);
    /* gradients only: logp may be NULL */
    fl_prior_args b = { N, p.theta, p.dtheta, z, NULL, w, dz };
    cr_assert_eq(p.rec->cls.prior.log_prob(p.self, &b), FL_OK);
    for (uint32_t i = 0; i < N * D; i++) cr_assert(dz[i] == -w[i / D] * z[i]);
    fl_real s[N * D];
    cr_assert_eq(p.rec->cls.prior.sample(p.self, N, p.theta, z, s), FL_OK);
    cr_assert_arr_eq(s, z, sizeof s, "z = eps");
    free(z);
    free(w);
    part_free(&p);
    fl_registry_free(r);
}
