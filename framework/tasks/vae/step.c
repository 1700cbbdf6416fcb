/* step.c - the vae task's forward and backward, and its training step
 * under any estimator (the trainer of train/loop.h).
 *
 * Rows: n data points with k samples each give R = n*k sample rows, row
 * b*k + j. Every buffer is sized once for the largest R (training B*k or
 * an evaluation chunk), so the training step allocates nothing.
 *
 * Gradients: the estimator gives per sample a weight wp on the generative
 * gradient and wq on the inference-path gradient. Both are scaled by
 * -1/B (the loss is minus the mean bound). One backward pass through the
 * decoder with wp gives the decoder's parameter gradient and a z-gradient
 * weighted by wp; rescaling that z-gradient row by wq/wp turns it into the
 * inference weighting (the weights are per-row scalars, so this is exact). */
#include "tasks/vae/vae.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tasks/subset.h"
#include "compute/fastnormal.h"
#include "core/util.h"

/* Standard normals for points p0.., samples j0..j0+k-1: point p's stream
 * is (key, sub0 + p), so the noise of a point does not depend on chunking. */
void fl_vae_draw_noise(fl_rng_key key, uint64_t sub0, uint64_t p0, uint32_t n, uint64_t j0,
                       uint32_t k, uint32_t dim, fl_real *eps)
{
    const size_t per = (size_t)k * dim;
#pragma omp parallel for schedule(static) if ((size_t)n * per > 32768)
    for (uint32_t b = 0; b < n; b++)
        fl_normals(key, sub0 + p0 + b, j0 * dim, per, eps + b * per);
}

/* Training noise of step `step`: numbers first .. first+total-1 of one
 * stream per step (a block of points starts past the points before it),
 * split over threads. */
static void draw_step_noise(fl_rng_key key, uint64_t step, uint64_t first, size_t total,
                            fl_real *eps)
{
    const size_t piece = 8192;
    const size_t np = (total + piece - 1) / piece;
#pragma omp parallel for schedule(static) if (np > 1)
    for (size_t i = 0; i < np; i++) {
        size_t a = i * piece, m = total - a < piece ? total - a : piece;
        fl_normals(key, step, first + a, m, eps + a);
    }
}

/* ------------------------------------------------------------------ */
/* The path derivative (stl, dreg) with flows or two stochastic layers.  */
/*
 * With log q's parameters held fixed (the posterior's, every flow layer's,
 * the context h's and q(z2|z1)'s network's), the inference surrogate is
 * sum_r wq_r [log p(x, z_r) - log q_stop(z_r)] differentiated through the
 * samples z_r(phi) only. Its z-gradient needs grad_z log q at fixed
 * parameters:
 *  - through flows, a_T = grad_zT log q1(zT), from a_0 = grad_z0 log q0
 *    by a_t = J_t^-T (a_{t-1} - grad logdet_t) (model/pathgrad.c, with the
 *    flows' own backward). dz -= wq a_T; the flows then get dlogdet = 0 and
 *    q0 dlogq = 0 (a_T already holds both).
 *  - with two layers, log q(z2|z1) depends on z1 through q(z2|z1)'s
 *    parameters E2 = enc2(z1): that direct term of dE2 (with detach minus
 *    without) goes back through enc2 to z1 with enc2's parameter gradients
 *    discarded (one extra backward pass of the small enc2 network).
 * a_0 comes from q0's own backward (detach, dz = 0, dlogq = 1) over rows
 * given one point each: z0 = param[0..L1) + g(eps; rest) for the Gaussian
 * posteriors, so d/dmu is a_0 itself. */

void fl_vae_path_free(fl_vae *v)
{
    fl_pathgrad_free(&v->pg);
    fl_real *bufs[] = { v->a0, v->score, v->prep, v->dprep, v->ones, v->zero, v->dE2b,
                        v->gscratch };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) fl_free(bufs[i]);
    v->a0 = v->score = v->prep = v->dprep = v->ones = v->zero = v->dE2b = v->gscratch = NULL;
    v->path_ready = 0;
}

fl_status fl_vae_path_setup(fl_experiment *e)
{
    fl_vae *v = fl_vae_of(e);
    if (!v->detach || v->path_ready || (!v->flows->n && !v->two)) return FL_OK;
    const size_t R = v->Rmax, fs = sizeof(fl_real);
    if (v->two && v->enc2.conv) {
        fl_err("[encoder.2] net = conv: the path derivative (stl, dreg) needs an mlp there");
        return FL_ERR_UNSUPPORTED;
    }
    if (v->flows->n) {
        fl_status st = fl_pathgrad_init(&v->pg, v->flows, v->Rmax);
        if (st != FL_OK) return st;
        v->a0 = fl_alloc(R * v->L1 * fs);
        v->score = fl_alloc(R * v->L1 * fs);
        v->prep = fl_alloc(R * v->P1 * fs);
        v->dprep = fl_alloc(R * v->P1 * fs);
        v->ones = fl_alloc(R * fs);
        v->zero = fl_alloc(R * fs);
        for (size_t r = 0; v->ones && v->zero && r < R; r++) {
            v->ones[r] = 1;
            v->zero[r] = 0;
        }
    }
    if (v->two) v->dE2b = fl_alloc(R * v->P2 * fs);
    const size_t G = e->arena.total ? e->arena.total : 1;
    v->gscratch = fl_alloc(G * fs);
    if (v->gscratch) memset(v->gscratch, 0, G * fs);
    if ((v->flows->n && (!v->a0 || !v->score || !v->prep || !v->dprep || !v->ones || !v->zero)) ||
        (v->two && !v->dE2b) || !v->gscratch) {
        fl_vae_path_free(v);
        return FL_ERR_NOMEM;
    }
    v->path_ready = 1;
    return FL_OK;
}

/* v->score = grad_zT log q1(zT | x) at fixed parameters, for the last
 * forward's n points x k samples (see above). */
static fl_status path_score(fl_experiment *e, fl_mode mode, uint32_t n, uint32_t k)
{
    fl_vae *v = fl_vae_of(e);
    const uint32_t R = n * k, W = v->P1 + v->H, L1 = v->L1, P1 = v->P1;
    for (uint32_t b = 0; b < n; b++)
        for (uint32_t j = 0; j < k; j++)
            memcpy(v->prep + ((size_t)b * k + j) * P1, v->E + (size_t)b * W, P1 * sizeof(fl_real));
    memset(v->score, 0, (size_t)R * L1 * sizeof(fl_real)); /* dz = 0 */
    fl_post_bwd pb = { R, 1, fl_vae_theta(e, v->post.cx), v->gscratch + v->post.cx->block, v->prep,
                       P1, v->eps, v->z0, v->score, v->ones, 1, v->dprep };
    fl_part_enter(&v->post, "backward");
    fl_status st = v->pc->backward(v->post.self, &pb);
    fl_crash_leave();
    if (st != FL_OK) return fl_comp_fail(st, "posterior %s", v->post.rec->cls.base.name);
    for (uint32_t r = 0; r < R; r++)
        memcpy(v->a0 + (size_t)r * L1, v->dprep + (size_t)r * P1, L1 * sizeof(fl_real));
    return fl_pathgrad_score_ctx(&v->pg, R, mode, v->a0, v->H ? v->hrep : NULL, v->score);
}

/* log p(x | decoder rows) on the rows [r0, r0 + rn) of a decoder forward,
 * called while they are in cache (fl_mlp_forward_rows). Row r belongs to
 * data row r / k; the range is cut where the data row changes inside a
 * group, so each call is a valid one (n a multiple of its k). */
typedef struct lik_rows_ctx {
    fl_vae *v;
    const fl_lik_args *all; /* the whole call */
    fl_status st;           /* first failure */
    char msg[2048];         /* its message: host->error() text is per thread, and
                               the failing row range may run on a worker */
} lik_rows_ctx;

static void lik_rows(void *c, uint32_t r0, uint32_t rn)
{
    lik_rows_ctx *lr = c;
    const fl_lik_args *A = lr->all;
    const uint32_t k = A->k, r1 = r0 + rn, P = lr->v->Q;
    while (r0 < r1) {
        uint32_t end = r0 % k ? (r0 / k + 1) * k : r0 + (r1 - r0) / k * k;
        if (end > r1 || end == r0) end = r1;
        fl_lik_args a = *A;
        a.n = end - r0;
        a.k = r0 % k || end % k ? a.n : k; /* a partial group: its rows share one x */
        a.x = A->x + (size_t)(r0 / k) * lr->v->D;
        a.param = A->param + (size_t)r0 * P;
        a.logp = A->logp + r0;
        fl_status st = lr->v->lc->log_prob(lr->v->lik.self, &a);
        if (st != FL_OK) {
#pragma omp critical(fl_lik_rows)
            if (lr->st == FL_OK) {
                lr->st = st;
                snprintf(lr->msg, sizeof lr->msg, "%s", fl_host_last_error());
            }
        }
        r0 = end;
    }
}

/* z0 (n points x k samples, from the posterior's sample) through the
 * posterior's flow stack, each point's context h repeated over its k
 * samples; the flows' log-determinants go to logdet, the output to *z. */
fl_status fl_vae_flows_forward(fl_experiment *e, fl_mode mode, uint32_t n, uint32_t k,
                                 const fl_real **z)
{
    fl_vae *v = fl_vae_of(e);
    const uint32_t W = v->P1 + v->H, R = n * k;
    for (uint32_t b = 0; v->H && b < n; b++)
        for (uint32_t j = 0; j < k; j++)
            memcpy(v->hrep + ((size_t)b * k + j) * v->H, v->E + (size_t)b * W + v->P1,
                   v->H * sizeof(fl_real));
    memset(v->logdet, 0, R * sizeof(fl_real));
    return fl_stack_forward(v->flows, R, mode, v->z0, v->H ? v->hrep : NULL, v->logdet, z);
}

/* Forward: fills logw (n*k) and everything backward needs. eps (and eps2)
 * must be filled. */
fl_status fl_vae_forward(fl_experiment *e, fl_mode mode, const fl_real *x, uint32_t n,
                               uint32_t k)
{
    fl_vae *v = fl_vae_of(e);
    const uint32_t R = n * k, W = v->P1 + v->H;
    fl_status st;
    fl_vae_net_forward(e, &v->enc, n, x, v->E);
    fl_host_clear_error();
    fl_post_fwd pf = { n, k, fl_vae_theta(e, v->post.cx), v->E, W, v->eps, v->z0, v->lq };
    fl_part_enter(&v->post, "sample");
    st = v->pc->sample(v->post.self, &pf);
    fl_crash_leave();
    if (st != FL_OK) return fl_comp_fail(st, "posterior %s", v->post.rec->cls.base.name);
    v->zT = v->z0;
    if (v->flows->n) {
        st = fl_vae_flows_forward(e, mode, n, k, &v->zT);
        if (st != FL_OK) return st;
        for (uint32_t r = 0; r < R; r++) v->lq[r] -= v->logdet[r];
    }
    const fl_real *ztop = v->zT;
    if (v->two) {
        fl_vae_net_forward(e, &v->enc2, R, v->zT, v->E2);
        fl_post_fwd p2 = { R, 1, fl_vae_theta(e, v->post2.cx), v->E2, v->P2, v->eps2, v->z2, v->lq2 };
        fl_part_enter(&v->post2, "sample");
        st = v->pc2->sample(v->post2.self, &p2);
        fl_crash_leave();
        if (st != FL_OK) return fl_comp_fail(st, "posterior %s", v->post2.rec->cls.base.name);
        fl_vae_net_forward(e, &v->dec2, R, v->z2, v->G2);
        fl_lik_args l2 = { R, 1, fl_vae_theta(e, v->lik2.cx), NULL, v->zT, v->G2, v->lpz1, NULL, NULL,
                           NULL };
        fl_part_enter(&v->lik2, "log_prob");
        st = v->lc2->log_prob(v->lik2.self, &l2);
        fl_crash_leave();
        if (st != FL_OK) return fl_comp_fail(st, "likelihood %s", v->lik2.rec->cls.base.name);
        ztop = v->z2;
    }
    fl_prior_args pa = { R, fl_vae_theta(e, v->prior.cx), NULL, ztop, v->lpz, NULL, NULL };
    fl_part_enter(&v->prior, "log_prob");
    st = v->prc->log_prob(v->prior.self, &pa);
    fl_crash_leave();
    if (st != FL_OK) return fl_comp_fail(st, "prior %s", v->prior.rec->cls.base.name);
    fl_lik_args la = { R, k, fl_vae_theta(e, v->lik.cx), NULL, x, v->Lg, v->lpx, NULL, NULL, NULL };
    if ((v->lc->flags & FL_LIK_CONCURRENT_LOGP) && !v->dec.conv) {
        lik_rows_ctx lr = { v, &la, FL_OK, "" };
        fl_part_enter(&v->lik, "log_prob"); /* on the decoder's row tiles */
        fl_mlp_forward_rows(v->dec.m, fl_vae_theta(e, v->dec.cx), R, v->zT, v->Lg, lik_rows, &lr);
        fl_crash_leave();
        st = lr.st;
        if (st != FL_OK) fl_host_set_error(lr.msg);
    } else {
        fl_vae_net_forward(e, &v->dec, R, v->zT, v->Lg);
        fl_part_enter(&v->lik, "log_prob");
        st = v->lc->log_prob(v->lik.self, &la);
        fl_crash_leave();
    }
    if (st != FL_OK) return fl_comp_fail(st, "likelihood %s", v->lik.rec->cls.base.name);
    for (uint32_t r = 0; r < R; r++) {
        fl_real lw = v->lpx[r] + v->lpz[r] - v->lq[r];
        if (v->two) lw += v->lpz1[r] - v->lq2[r];
        v->logw[r] = lw;
    }
    return FL_OK;
}

/* Backward of the last forward with loss weights wp, wq (already scaled:
 * the loss is sum_r wp*log p + inference terms). */
static fl_status model_backward(fl_experiment *e, fl_mode mode, const fl_real *x, uint32_t n,
                                uint32_t k)
{
    fl_vae *v = fl_vae_of(e);
    const uint32_t R = n * k, W = v->P1 + v->H, L1 = v->L1;
    fl_status st;
    for (uint32_t r = 0; r < R; r++) {
        v->ratio[r] = v->wp[r] != 0 ? v->wq[r] / v->wp[r] : 0;
        v->neg_wq[r] = -v->wq[r];
    }
    if (v->detach && (v->flows->n || v->two)) {
        if (!v->path_ready || R > v->Rmax) {
            fl_err("vae: the path derivative's buffers are missing (internal)");
            return FL_ERR_INTERNAL;
        }
        /* discarded gradients: kept bounded, never read */
        memset(v->gscratch, 0, (e->arena.total ? e->arena.total : 1) * sizeof(fl_real));
    }
    /* generative: likelihood -> decoder -> dz (weighted by wp) */
    fl_lik_args la = { R, k, fl_vae_theta(e, v->lik.cx), fl_vae_grad(e, v->lik.cx), x, v->Lg, NULL,
                       v->wp, v->dLg, NULL };
    fl_part_enter(&v->lik, "log_prob");
    st = v->lc->log_prob(v->lik.self, &la);
    fl_crash_leave();
    if (st != FL_OK) return fl_comp_fail(st, "likelihood %s", v->lik.rec->cls.base.name);
    memset(v->dz, 0, (size_t)R * L1 * sizeof(fl_real));
    fl_vae_net_backward(e, &v->dec, R, v->dLg, v->dz);
    if (v->two) {
        const uint32_t L2 = v->L2;
        fl_lik_args l2 = { R, 1, fl_vae_theta(e, v->lik2.cx), fl_vae_grad(e, v->lik2.cx), v->zT, v->G2,
                           NULL, v->wp, v->dG2, v->dz1b };
        fl_part_enter(&v->lik2, "log_prob");
        st = v->lc2->log_prob(v->lik2.self, &l2);
        fl_crash_leave();
        if (st != FL_OK) return fl_comp_fail(st, "likelihood %s", v->lik2.rec->cls.base.name);
        for (size_t i = 0; i < (size_t)R * L1; i++) v->dz[i] += v->dz1b[i];
        memset(v->dz2, 0, (size_t)R * L2 * sizeof(fl_real));
        fl_vae_net_backward(e, &v->dec2, R, v->dG2,
                        v->dz2);
        fl_prior_args pa = { R, fl_vae_theta(e, v->prior.cx), fl_vae_grad(e, v->prior.cx), v->z2, NULL,
                             v->wp, v->dzp };
        fl_part_enter(&v->prior, "log_prob");
        st = v->prc->log_prob(v->prior.self, &pa);
        fl_crash_leave();
        if (st != FL_OK) return fl_comp_fail(st, "prior %s", v->prior.rec->cls.base.name);
        for (uint32_t r = 0; r < R; r++)
            for (uint32_t d = 0; d < L2; d++) {
                size_t i = (size_t)r * L2 + d;
                v->dz2[i] = v->ratio[r] * (v->dz2[i] + v->dzp[i]);
            }
        for (uint32_t r = 0; r < R; r++)
            for (uint32_t d = 0; d < L1; d++) v->dz[(size_t)r * L1 + d] *= v->ratio[r];
        fl_post_bwd p2 = { R, 1, fl_vae_theta(e, v->post2.cx), fl_vae_grad(e, v->post2.cx), v->E2, v->P2,
                           v->eps2, v->z2, v->dz2, v->neg_wq, 0, v->dE2 };
        if (v->detach) { /* first without detach: dE2b - dE2 is log q2's direct term */
            p2.dparam = v->dE2b;
            fl_part_enter(&v->post2, "backward");
            st = v->pc2->backward(v->post2.self, &p2);
            fl_crash_leave();
            if (st != FL_OK) return fl_comp_fail(st, "posterior %s", v->post2.rec->cls.base.name);
            p2.dparam = v->dE2;
            p2.detach = 1;
        }
        fl_part_enter(&v->post2, "backward");
        st = v->pc2->backward(v->post2.self, &p2);
        fl_crash_leave();
        if (st != FL_OK) return fl_comp_fail(st, "posterior %s", v->post2.rec->cls.base.name);
        /* q(z2|z1) depends on z1: its gradient joins dz (inference path). */
        fl_vae_net_backward(e, &v->enc2, R, v->dE2,
                        v->dz);
        if (v->detach) {
            /* log q2's direct term reaches z1 through enc2 at fixed weights:
             * their gradient goes to scratch. */
            for (size_t i = 0; i < (size_t)R * v->P2; i++) v->dE2b[i] -= v->dE2[i];
            fl_real *grad = e->arena.grad;
            e->arena.grad = v->gscratch;
            fl_vae_net_backward(e, &v->enc2, R, v->dE2b, v->dz);
            e->arena.grad = grad;
        }
    } else {
        fl_prior_args pa = { R, fl_vae_theta(e, v->prior.cx), fl_vae_grad(e, v->prior.cx), v->zT, NULL,
                             v->wp, v->dzp };
        fl_part_enter(&v->prior, "log_prob");
        st = v->prc->log_prob(v->prior.self, &pa);
        fl_crash_leave();
        if (st != FL_OK) return fl_comp_fail(st, "prior %s", v->prior.rec->cls.base.name);
        for (uint32_t r = 0; r < R; r++) {
            const fl_real s = v->ratio[r];
            fl_real *dz = v->dz + (size_t)r * L1;
            const fl_real *dp = v->dzp + (size_t)r * L1;
            for (uint32_t d = 0; d < L1; d++) dz[d] = s * (dz[d] + dp[d]);
        }
    }
    /* flows: log q = log q0 - sum logdet, so dloss/dlogdet = +wq */
    const fl_real *dz0 = v->dz, *dlogdet = v->wq, *dlogq = v->neg_wq;
    if (v->flows->n) {
        if (v->detach) { /* the path derivative: -wq grad log q1 joins dz (see above) */
            st = path_score(e, mode, n, k);
            if (st != FL_OK) return st;
            for (uint32_t r = 0; r < R; r++)
                for (uint32_t d = 0; d < L1; d++)
                    v->dz[(size_t)r * L1 + d] -= v->wq[r] * v->score[(size_t)r * L1 + d];
            dlogdet = dlogq = v->zero;
        }
        memset(v->dz0, 0, (size_t)R * L1 * sizeof(fl_real));
        if (v->H) memset(v->dh, 0, (size_t)R * v->H * sizeof(fl_real));
        st = fl_stack_backward(v->flows, R, mode, v->H ? v->hrep : NULL, v->dz, dlogdet, v->dz0,
                               v->H ? v->dh : NULL);
        if (st != FL_OK) return st;
        dz0 = v->dz0;
    }
    fl_post_bwd pb = { n, k, fl_vae_theta(e, v->post.cx), fl_vae_grad(e, v->post.cx), v->E, W, v->eps,
                       v->z0, dz0, dlogq, v->detach, v->dE };
    fl_part_enter(&v->post, "backward");
    st = v->pc->backward(v->post.self, &pb);
    fl_crash_leave();
    if (st != FL_OK) return fl_comp_fail(st, "posterior %s", v->post.rec->cls.base.name);
    if (v->H) {
        for (uint32_t b = 0; b < n; b++) {
            fl_real *d = v->dE + (size_t)b * W + v->P1;
            memset(d, 0, v->H * sizeof(fl_real));
            for (uint32_t j = 0; j < k; j++) {
                const fl_real *s = v->dh + ((size_t)b * k + j) * v->H;
                for (uint32_t i = 0; i < v->H; i++) d[i] += s[i];
            }
        }
    }
    fl_vae_net_backward(e, &v->enc, n, v->dE, NULL);
    return FL_OK;
}

/* Estimator weights for the last forward, scaled for the loss -mean bound
 * over `n_total` points. Returns the sum of bounds in *sum. */
static fl_status weigh(fl_experiment *e, const fl_estimator_class *ec, void *eself, uint32_t n,
                       uint32_t k, double scale, double *sum)
{
    fl_vae *v = fl_vae_of(e);
    fl_est_args ea = { n, k, v->logw, v->bound, v->wp, v->wq };
    fl_host_clear_error();
    fl_crash_enter("estimator", ec->base.name, "weights");
    fl_status st = ec->weights(eself, &ea);
    fl_crash_leave();
    if (st != FL_OK) return fl_comp_fail(st, "estimator %s", ec->base.name);
    double s = 0;
    for (uint32_t b = 0; b < n; b++) s += v->bound[b];
    *sum = s;
    const fl_real f = (fl_real)scale;
    for (uint32_t r = 0; r < n * k; r++) {
        v->wp[r] *= f;
        v->wq[r] *= f;
    }
    return FL_OK;
}

fl_status fl_vae_bound(fl_experiment *e, const fl_real *x, uint32_t n, uint64_t noise_sub,
                       int grad, double *bound)
{
    fl_vae *v = fl_vae_of(e);
    if ((size_t)n * v->k > v->Rmax) {
        fl_err("fl_vae_bound: %u points x k = %u exceed the %u rows the model was built for", n,
               v->k, v->Rmax);
        return FL_ERR_INVALID;
    }
    fl_vae_draw_noise(fl_rng_key_make(e->seed, "vae.eps"), noise_sub, 0, n, 0, v->k, v->L1, v->eps);
    if (v->two)
        fl_vae_draw_noise(fl_rng_key_make(e->seed, "vae.eps2"), noise_sub, 0, n, 0, v->k, v->L2, v->eps2);
    fl_status st = fl_vae_forward(e, FL_MODE_EVAL, x, n, v->k);
    double sum;
    if (st == FL_OK) st = weigh(e, v->ec, v->est.self, n, v->k, -1.0 / n, &sum);
    if (st == FL_OK)
        for (uint32_t b = 0; b < n; b++) bound[b] = v->bound[b];
    if (st == FL_OK && grad) st = model_backward(e, FL_MODE_EVAL, x, n, v->k);
    return st;
}

/* ------------------------------------------------------------------ */
/* Training: the step and the loop's hooks.                             */

void fl_vae_run_free(void *p)
{
    fl_vae_run *r = p;
    if (!r) return;
    fl_free(r->vx);
    fl_free(r->x);
    free(r);
}

fl_status fl_vae_run_new(fl_experiment *e, void **out)
{
    fl_vae *v = fl_vae_of(e);
    fl_vae_run *r = calloc(1, sizeof *r);
    *out = r;
    if (!r) return FL_ERR_NOMEM;
    r->x = fl_alloc((size_t)v->B * v->D * sizeof(fl_real));
    if (!r->x) return FL_ERR_NOMEM;
    /* The validation set of the periodic evaluations. */
    r->vs = e->info.n[FL_SPLIT_VALID] ? FL_SPLIT_VALID : FL_SPLIT_TEST;
    fl_status st = fl_experiment_eval_split(e, r->vs, &r->vx, &r->vn);
    uint64_t vmax = (uint64_t)fl_exp_int(&e->eval, "valid_n");
    /* [eval] pick: a random subset unless pick = first (tasks/subset.h) */
    if (st == FL_OK) st = fl_subset_apply(r->vx, &r->vn, v->D, vmax, fl_subset_random(e, NULL), NULL);
    r->vk = (uint64_t)fl_exp_int(&e->eval, "valid_k");
    r->key = fl_rng_key_make(e->seed, "vae.train.eps");
    r->key2 = fl_rng_key_make(e->seed, "vae.train.eps2");
    return st;
}

/* Points p0 .. p0+n-1 of batch `step`: their share of its mean bound
 * under the estimator (their sum / B), and its gradient. */
fl_status fl_vae_step(fl_experiment *e, void *p, uint64_t step, uint32_t p0, uint32_t n,
                      double *value)
{
    fl_vae_run *r = p;
    fl_vae *v = fl_vae_of(e);
    const uint32_t B = v->B, k = v->k;
    fl_status st = fl_experiment_train_rows(e, step, B, p0, n, r->x);
    if (st != FL_OK) return st;
    draw_step_noise(r->key, step, (uint64_t)p0 * k * v->L1, (size_t)n * k * v->L1, v->eps);
    if (v->two)
        draw_step_noise(r->key2, step, (uint64_t)p0 * k * v->L2, (size_t)n * k * v->L2, v->eps2);
    st = fl_vae_forward(e, FL_MODE_TRAIN, r->x, n, k);
    double sum = 0;
    if (st == FL_OK) st = weigh(e, v->ec, v->est.self, n, k, -1.0 / B, &sum);
    if (st != FL_OK) return st;
    double bound = sum / B;
    if (!isfinite(bound)) {
        fl_err("step %llu: the training bound is not finite (%g); lower [train] lr",
               (unsigned long long)step + 1, bound);
        return FL_ERR_NUMERIC;
    }
    *value = bound;
    return model_backward(e, FL_MODE_TRAIN, r->x, n, k);
}

fl_status fl_vae_validate(fl_experiment *e, void *p)
{
    fl_vae_run *r = p;
    return fl_vae_quick_eval(e, r->vx, r->vn, r->vk, &r->valid_elbo, &r->valid_iwae);
}

const char *fl_vae_monitor(const fl_experiment *e, void *p, double *loss)
{
    (void)e;
    const fl_vae_run *r = p;
    if (r->vs != FL_SPLIT_VALID) return NULL; /* never the test split */
    if (loss) *loss = -r->valid_iwae;
    return "valid_iwae";
}

const fl_metrics_col fl_vae_columns[FL_VAE_N_COLS] = {
    { "train_bound", "%.6f" }, /* the loop's interval mean (train_col 0) */
    { "valid_elbo", "%.6f" },
    { "valid_iwae", "%.6f" },
    { "lr", "%.6g" },
};

void fl_vae_row(fl_experiment *e, void *p, uint64_t done, double *vals)
{
    const fl_vae_run *r = p;
    vals[1] = r->valid_elbo;
    vals[2] = r->valid_iwae;
    vals[3] = fl_experiment_lr(e, done ? done - 1 : 0); /* the last step's */
}

void fl_vae_log(fl_experiment *e, void *p, double train, char *buf, size_t cap)
{
    (void)e;
    const fl_vae_run *r = p;
    snprintf(buf, cap, "train bound %.3f, %s ELBO %.3f, IWAE-%llu %.3f", train,
             r->vs == FL_SPLIT_VALID ? "valid" : "test", r->valid_elbo,
             (unsigned long long)r->vk, r->valid_iwae);
}

void fl_vae_status(fl_experiment *e, void *p, uint64_t done, uint64_t steps, double bound,
                   char *buf, size_t cap)
{
    (void)e;
    (void)done;
    (void)steps;
    const fl_vae_run *r = p;
    if (r->valid_iwae != 0) snprintf(buf, cap, "bound %.2f  valid %.2f", bound, r->valid_iwae);
    else snprintf(buf, cap, "bound %.2f", bound);
}

fl_vae_result fl_vae_result_of(const fl_experiment *e, const void *p, const fl_train_summary *s)
{
    const fl_vae_run *r = p;
    fl_vae_result res = { 0 };
    res.train_bound = s->train;
    res.valid_elbo = r->valid_elbo;
    res.valid_iwae = r->valid_iwae;
    res.best_valid_iwae = s->monitor ? -s->best : 0;
    res.best_step = s->monitor ? s->best_step : 0;
    res.stopped_early = s->stopped_early;
    res.steps = s->steps;
    res.seconds = s->seconds;
    res.examples_per_s = s->session_seconds > 0 ? (double)s->session_steps * fl_vae_of(e)->B /
                                                      s->session_seconds
                                                : 0;
    return res;
}

fl_status fl_vae_train(fl_experiment *e, const char *rundir, int resume, fl_vae_result *res)
{
    memset(res, 0, sizeof *res);
    void *run;
    fl_train_summary s;
    fl_status st = fl_task_train(e, rundir, resume, &run, &s);
    if (run) *res = fl_vae_result_of(e, run, &s);
    fl_vae_run_free(run);
    return st;
}
