/* batchnorm.c - batch normalisation as a flow (Dinh et al. 2017, Real NVP
 * section 3.7; as used between the layers of MAF).
 *
 *   y = (x - mu) / sqrt(var + eps) * exp(log_gamma) + beta    per channel
 *   logdet = h w sum_ch log_gamma_ch - 0.5 log(var_ch + eps)  every row alike
 *
 * On an image of c x h x w (NHWC) every statistic and parameter has one
 * entry per channel, over the batch's rows and pixels (Real NVP's batch
 * norm on images); a flat vector is dim channels of one pixel, so there
 * they are per coordinate, with the same arithmetic as before shapes.
 *
 * FL_MODE_TRAIN: mu, var are the batch's own statistics (biased variance),
 * and the running averages (FL_PARAM_STATE: running_mean, running_var) move
 * towards them, r = (1 - momentum) r + momentum * batch. The layer is then
 * batch-coupled: a row's y depends on every row, and backward differentiates
 * through mu and var, including the logdet's dependence on var.
 * FL_MODE_EVAL: mu, var are the running averages; rows are independent and
 * the layer is a plain element-wise affine map.
 *
 * Log-determinant convention. In TRAIN mode the logdet reported per row is
 * the one of the element-wise map with the batch's statistics held fixed,
 * not 1/n of log|det| of the full (n*dim) x (n*dim) Jacobian of the batch.
 * This is the standard convention (Real NVP, MAF, Glow): it is exact in
 * EVAL mode, and in TRAIN mode it is what the published models optimise.
 *
 * Inverse. It uses the statistics forward would use in the same mode: in
 * EVAL the running averages; in TRAIN the statistics of the last TRAIN
 * forward of this instance (not saved in checkpoints; before any TRAIN
 * forward, the running averages). So the inverse exactly undoes the last
 * training forward; sampling after training runs in EVAL mode and uses the
 * running averages. Placed with forward on base samples (the VI direction),
 * the layer normalises z batches instead. */
#include <float.h>
#include <stdlib.h>
#include <tgmath.h>

#include <flowlab/flowlab.h>

typedef struct bnorm {
    uint32_t dim;            /* channels (flat: the row width) */
    uint32_t hw;             /* pixels per row (flat: 1) */
    double momentum, eps;
    size_t lg_off, beta_off, rm_off, rv_off;  /* offsets in theta */
    double *mu, *var;        /* dim: statistics of the last TRAIN forward */
    double *rmu, *rvar;      /* dim: running averages widened to double */
    double *scale, *gam;     /* dim: per-call scratch */
    double *s1, *s2;         /* dim: backward column sums */
    int have_batch;          /* mu/var hold a TRAIN forward's statistics */
} bnorm;

static const fl_key keys[] = {
    { "momentum", FL_KEY_REAL, "0.05", 0, 1, NULL,
      "running averages move by r = (1 - momentum) r + momentum * batch each training call" },
    { "eps", FL_KEY_REAL, "1e-5", 0, 1, NULL,
      "added to the variance before the square root (keep > 0 unless columns never collapse)" },
};

static void destroy(void *self) { free(self); }

static fl_status create(const fl_host *h, fl_ctx *cx, const fl_flow_shape *sh, void **self)
{
    bnorm *b = calloc(1, sizeof *b);
    if (!b) return FL_ERR_NOMEM;
    /* per channel; a flat vector (and a pre-1.4 host) is dim x 1 x 1 */
    const int shaped = FL_ABI_AT_LEAST(h, 1, 4);
    uint32_t D = shaped ? sh->c : sh->dim;
    b->dim = D;
    b->hw = shaped ? sh->h * sh->w : 1;
    b->momentum = h->cfg_real(cx, "momentum");
    b->eps = h->cfg_real(cx, "eps");
    fl_param_spec lg = { "log_gamma", D, FL_INIT_ZERO, 0, 0, 0, 0 };
    fl_param_spec be = { "beta", D, FL_INIT_ZERO, 0, 0, 0, 0 };
    fl_param_spec rm = { "running_mean", D, FL_INIT_ZERO, 0, 0, 0, FL_PARAM_STATE };
    fl_param_spec rv = { "running_var", D, FL_INIT_CONST, 0, 0, 1, FL_PARAM_STATE };
    fl_status st = h->param(cx, &lg, &b->lg_off);
    if (st == FL_OK) st = h->param(cx, &be, &b->beta_off);
    if (st == FL_OK) st = h->param(cx, &rm, &b->rm_off);
    if (st == FL_OK) st = h->param(cx, &rv, &b->rv_off);
    if (st != FL_OK) {
        free(b);
        return st;
    }
    /* Only per-coordinate state: nothing scales with max_rows, because
     * backward recomputes the normalised inputs from x. */
    double *ws = h->workspace(cx, 8 * (size_t)D * sizeof(double));
    if (!ws) {
        free(b);
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    b->mu = ws;
    b->var = ws + D;
    b->rmu = ws + 2 * (size_t)D;
    b->rvar = ws + 3 * (size_t)D;
    b->scale = ws + 4 * (size_t)D;
    b->gam = ws + 5 * (size_t)D;
    b->s1 = ws + 6 * (size_t)D;
    b->s2 = ws + 7 * (size_t)D;
    *self = b;
    return FL_OK;
}

/* var + eps, kept above DBL_MIN so that eps = 0 with a collapsed column
 * gives large but finite numbers rather than NaN. */
static double vpe(const bnorm *b, double var)
{
    double v = var + b->eps;
    return v > DBL_MIN ? v : DBL_MIN;
}

/* Biased batch statistics per channel over the n * hw pixels, in double,
 * two passes (mean first) so float inputs with a large mean keep their
 * variance. */
static void batch_stats(bnorm *b, uint32_t n, const fl_real *x)
{
    uint32_t D = b->dim;
    size_t P = (size_t)n * b->hw;
    for (uint32_t j = 0; j < D; j++) b->mu[j] = b->var[j] = 0;
    for (size_t r = 0; r < P; r++)
        for (uint32_t j = 0; j < D; j++) b->mu[j] += x[r * D + j];
    for (uint32_t j = 0; j < D; j++) b->mu[j] /= (double)P;
    for (size_t r = 0; r < P; r++)
        for (uint32_t j = 0; j < D; j++) {
            double e = x[r * D + j] - b->mu[j];
            b->var[j] += e * e;
        }
    for (uint32_t j = 0; j < D; j++) b->var[j] /= (double)P;
    b->have_batch = 1;
}

/* The statistics of `mode`: the cached batch ones in TRAIN (when a TRAIN
 * forward has run), else the running averages. */
static void pick_stats(const bnorm *b, fl_mode mode, const fl_real *theta, const double **mu,
                       const double **var)
{
    if (mode == FL_MODE_TRAIN && b->have_batch) {
        *mu = b->mu;
        *var = b->var;
        return;
    }
    for (uint32_t j = 0; j < b->dim; j++) {
        b->rmu[j] = theta[b->rm_off + j];
        b->rvar[j] = theta[b->rv_off + j];
    }
    *mu = b->rmu;
    *var = b->rvar;
}

/* hw * sum_j log_gamma_j - 0.5 log(var_j + eps): the logdet of every row. */
static double log_det(const bnorm *b, const fl_real *theta, const double *var)
{
    double ld = 0;
    for (uint32_t j = 0; j < b->dim; j++)
        ld += (double)theta[b->lg_off + j] - 0.5 * log(vpe(b, var[j]));
    return ld * b->hw;
}

static fl_status forward(void *self, const fl_flow_fwd *a)
{
    bnorm *b = self;
    uint32_t D = b->dim, n = a->n;
    size_t P = (size_t)n * b->hw;
    fl_real *th = a->theta;
    const double *mu, *var;
    if (a->mode == FL_MODE_TRAIN) {
        batch_stats(b, n, a->x);
        mu = b->mu;
        var = b->var;
        /* The running averages are state, updated only by training calls. */
        double m = b->momentum;
        for (uint32_t j = 0; j < D; j++) {
            th[b->rm_off + j] = (fl_real)((1 - m) * th[b->rm_off + j] + m * mu[j]);
            th[b->rv_off + j] = (fl_real)((1 - m) * th[b->rv_off + j] + m * var[j]);
        }
    } else {
        pick_stats(b, a->mode, th, &mu, &var);
    }
    /* y = (x - mu) * scale + beta with scale = exp(log_gamma) / sqrt(var + eps). */
    for (uint32_t j = 0; j < D; j++)
        b->scale[j] = exp((double)th[b->lg_off + j]) / sqrt(vpe(b, var[j]));
    fl_real ld = (fl_real)log_det(b, th, var);
    for (size_t p = 0; p < P; p++) {
        const fl_real *x = a->x + p * D;
        fl_real *y = a->y + p * D;
        for (uint32_t j = 0; j < D; j++)
            y[j] = (fl_real)((x[j] - mu[j]) * b->scale[j] + th[b->beta_off + j]);
    }
    for (uint32_t r = 0; r < n; r++) a->logdet[r] += ld;
    return FL_OK;
}

static fl_status backward(void *self, const fl_flow_bwd *a)
{
    bnorm *b = self;
    uint32_t D = b->dim, n = a->n;
    size_t P = (size_t)n * b->hw; /* pixels: the statistics' sample size */
    const fl_real *th = a->theta;
    fl_real *dth = a->dtheta;
    /* The statistics the preceding forward of the same mode used. */
    const double *mu, *var;
    pick_stats(b, a->mode, th, &mu, &var);
    double *inv = b->scale, *g = b->gam, *s1 = b->s1, *s2 = b->s2;
    double dsum = 0; /* hw * sum_r dlogdet_r: every row's logdet is the same */
    for (uint32_t r = 0; r < n; r++) dsum += a->dlogdet[r];
    dsum *= b->hw;
    for (uint32_t j = 0; j < D; j++) {
        inv[j] = 1 / sqrt(vpe(b, var[j]));
        g[j] = exp((double)th[b->lg_off + j]);
        s1[j] = s2[j] = 0;
    }
    /* With xh = (x - mu) * inv per column, S1 = sum dy, S2 = sum dy * g * xh:
     * dbeta = S1,  dlog_gamma = S2 + sum dlogdet. */
    for (size_t r = 0; r < P; r++)
        for (uint32_t j = 0; j < D; j++) {
            size_t i = r * D + j;
            double dy = a->dy[i];
            s1[j] += dy;
            s2[j] += dy * g[j] * (a->x[i] - mu[j]) * inv[j];
        }
    for (uint32_t j = 0; j < D; j++) {
        dth[b->beta_off + j] += (fl_real)s1[j];
        dth[b->lg_off + j] += (fl_real)(s2[j] + dsum);
    }
    if (a->mode != FL_MODE_TRAIN) {
        /* EVAL: element-wise, and the logdet does not depend on x (the
         * running statistics are state and get no gradient). */
        for (size_t r = 0; r < P; r++)
            for (uint32_t j = 0; j < D; j++) {
                size_t i = r * D + j;
                a->dx[i] += (fl_real)(a->dy[i] * g[j] * inv[j]);
            }
        return FL_OK;
    }
    /* TRAIN: through the batch's mu and var,
     *   dx_r = inv * (g dy_r - g S1/n - xh_r * (S2 + sum dlogdet)/n);
     * the sum dlogdet term is the logdet's -0.5 log(var + eps) through var
     * (dvar/dx_r = 2 (x_r - mu)/n). On images n counts pixels (P = n hw)
     * and the sums run over them; dsum is already hw * sum dlogdet. */
    const double np = (double)P;
    for (size_t r = 0; r < P; r++)
        for (uint32_t j = 0; j < D; j++) {
            size_t i = r * D + j;
            double xh = (a->x[i] - mu[j]) * inv[j];
            a->dx[i] += (fl_real)(inv[j] * (g[j] * (a->dy[i] - s1[j] / np) - xh * (s2[j] + dsum) / np));
        }
    return FL_OK;
}

static fl_status inverse(void *self, const fl_flow_inv *a)
{
    bnorm *b = self;
    uint32_t D = b->dim, n = a->n;
    size_t P = (size_t)n * b->hw;
    const fl_real *th = a->theta;
    const double *mu, *var;
    pick_stats(b, a->mode, th, &mu, &var);
    /* x = (y - beta) * sqrt(var + eps) * exp(-log_gamma) + mu */
    for (uint32_t j = 0; j < D; j++)
        b->scale[j] = sqrt(vpe(b, var[j])) * exp(-(double)th[b->lg_off + j]);
    fl_real ld = (fl_real)-log_det(b, th, var);
    for (size_t p = 0; p < P; p++) {
        const fl_real *y = a->y + p * D;
        fl_real *x = a->x + p * D;
        for (uint32_t j = 0; j < D; j++)
            x[j] = (fl_real)((y[j] - th[b->beta_off + j]) * b->scale[j] + mu[j]);
    }
    if (a->logdet)
        for (uint32_t r = 0; r < n; r++) a->logdet[r] += ld;
    return FL_OK;
}

static const fl_flow_class batch_norm = {
    .base = { sizeof(fl_flow_class), "batch-norm",
              "batch normalisation (Real NVP), per channel: y = (x - mu)/sqrt(var + eps)*exp(log_gamma) "
              "+ beta; batch statistics in training, running averages in evaluation",
              keys, sizeof keys / sizeof keys[0] },
    .flags = FL_FLOW_HAS_INVERSE | FL_FLOW_CHEAP_FORWARD | FL_FLOW_CHEAP_INVERSE |
             FL_FLOW_BATCH_COUPLED | FL_FLOW_SHAPED,
    .create = create,
    .destroy = destroy,
    .forward = forward,
    .backward = backward,
    .inverse = inverse,
};

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    return r->add(r, FL_KIND_FLOW, &batch_norm.base);
}

FL_PLUGIN("flows-batchnorm", "1.0.0", init)
