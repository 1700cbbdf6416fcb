/*
 * energies.c - unnormalised 2D target densities for the vi task.
 *
 *   u1 .. u4   the four energies of Rezende & Mohamed (2015), Table 1:
 *              p~(z) = exp(-U(z)), with
 *                w1 = sin(2 pi z1 / 4), w2 = 3 exp(-((z1 - 1)/0.6)^2 / 2),
 *                w3 = 3 sigmoid((z1 - 1)/0.3)
 *              U1 = ((|z| - 2)/0.4)^2/2 - log(e^{-((z1-2)/0.6)^2/2} + e^{-((z1+2)/0.6)^2/2})
 *              U2 = ((z2 - w1)/0.4)^2/2
 *              U3 = -log(e^{-((z2-w1)/0.35)^2/2} + e^{-((z2-w1+w2)/0.35)^2/2})
 *              U4 = -log(e^{-((z2-w1)/0.4)^2/2} + e^{-((z2-w1+w3)/0.35)^2/2})
 *   banana     a twisted Gaussian
 *   mixture    equal-weight Gaussians on a ring
 *
 * Support of U2-U4. As written they do not depend on z1 except through the
 * bounded w's, so their mass is infinite (every slice in z1 carries the same
 * mass: the z2 integrals are 0.4 sqrt(2 pi), 2 x 0.35 sqrt(2 pi) and
 * (0.4 + 0.35) sqrt(2 pi)). The paper shows them on [-4, 4]^2. Here they
 * are multiplied by a box factor in z1,
 *     log b(z1) = -(max(0, |z1| - half_width) / edge)^2 / 2,
 * exactly 1 on [-half_width, half_width] (the paper's densities there) with
 * Gaussian shoulders of width `edge` outside, so that the target is proper,
 * smooth, and any flow sample has a finite log weight. Then log Z is
 * analytic: log(c (2 half_width + edge sqrt(2 pi))), c the z2 integral
 * above. U1 is proper as written; its log Z is left to the host (NAN).
 *
 * Everything is computed in double: log-sum-exp for the two-component
 * energies, and exact gradients.
 */
#include <math.h>
#include <stdlib.h>

#include <flowlab/flowlab.h>

#define T_PI 3.14159265358979323846
#define SQRT_2PI 2.50662827463100050242

typedef enum kind { K_U1, K_U2, K_U3, K_U4, K_BANANA, K_MIXTURE } kind;

typedef struct target {
    kind k;
    double hw, edge;          /* U2-U4 box factor */
    double s1, s2, bend;      /* banana */
    uint32_t nc;              /* mixture */
    double radius, scale;
} target;

static const fl_key u1_keys[] = {
    { "box", FL_KEY_REAL, "4", 0.5, 100, NULL,
      "half-width of the square window [-box, box]^2 for pictures and the host's grid "
      "integral of log Z" },
};

#define BOX_KEYS                                                                          \
    { "half_width", FL_KEY_REAL, "4", 0.5, 100, NULL,                                     \
      "the target is the paper's exp(-U) for |z1| <= half_width (U alone has infinite "   \
      "mass in z1)" },                                                                    \
    { "edge", FL_KEY_REAL, "0.25", 0.01, 10, NULL,                                        \
      "width of the Gaussian shoulders outside |z1| <= half_width: log p~ -= "            \
      "((|z1| - half_width)/edge)^2/2 there" }

static const fl_key u234_keys[] = { BOX_KEYS };

static const fl_key banana_keys[] = {
    { "sigma1", FL_KEY_REAL, "1.5", 0.01, 100, NULL, "std of z1" },
    { "sigma2", FL_KEY_REAL, "0.5", 0.01, 100, NULL, "std of z2 about the bent mean" },
    { "bend", FL_KEY_REAL, "0.25", -100, 100, NULL,
      "curvature b: z2 | z1 ~ N(b (z1^2 - sigma1^2), sigma2^2)" },
};

static const fl_key mixture_keys[] = {
    { "components", FL_KEY_INT, "8", 1, 1024, NULL,
      "number of equal-weight Gaussians, centred on a ring (1 = one Gaussian at (radius, 0))" },
    { "radius", FL_KEY_REAL, "3", 0, 100, NULL, "radius of the ring of centres" },
    { "scale", FL_KEY_REAL, "0.5", 0.01, 100, NULL, "std of each component (isotropic)" },
};

static void destroy(void *self) { free(self); }

/* log(e^a + e^b) and the weight of a, e^a / (e^a + e^b). */
static double lse2(double a, double b, double *pa)
{
    double m = a > b ? a : b;
    double ea = exp(a - m), eb = exp(b - m);
    *pa = ea / (ea + eb);
    return m + log(ea + eb);
}

static double sigmoid(double x)
{
    if (x >= 0) return 1 / (1 + exp(-x));
    double e = exp(x);
    return e / (1 + e);
}

/* log p~(z) and its gradient g (2 numbers) at one point. */
static double eval_u(const target *t, double z1, double z2, double *g)
{
    double lp, g1 = 0, g2 = 0;
    if (t->k == K_U1) {
        double r = sqrt(z1 * z1 + z2 * z2), e = (r - 2) / 0.4, pa;
        double a = -0.5 * ((z1 - 2) / 0.6) * ((z1 - 2) / 0.6);
        double b = -0.5 * ((z1 + 2) / 0.6) * ((z1 + 2) / 0.6);
        lp = -0.5 * e * e + lse2(a, b, &pa);
        /* |z| has no gradient at 0: take the zero subgradient there. */
        double dr = r > 0 ? -e / 0.4 / r : 0;
        g1 = dr * z1 + pa * (-(z1 - 2) / 0.36) + (1 - pa) * (-(z1 + 2) / 0.36);
        g2 = dr * z2;
        if (g) g[0] = g1, g[1] = g2;
        return lp;
    }
    if (t->k == K_BANANA) {
        double m = t->bend * (z1 * z1 - t->s1 * t->s1), a = z1 / t->s1, c = (z2 - m) / t->s2;
        lp = -0.5 * a * a - 0.5 * c * c;
        g2 = -c / t->s2;
        g1 = -a / t->s1 - g2 * 2 * t->bend * z1;
        if (g) g[0] = g1, g[1] = g2;
        return lp;
    }
    if (t->k == K_MIXTURE) {
        /* Streaming log-sum-exp over the components. */
        double m = -INFINITY, s = 0, s1 = 0, s2 = 0, v = t->scale * t->scale;
        for (uint32_t c = 0; c < t->nc; c++) {
            double ang = 2 * T_PI * c / t->nc;
            double d1 = z1 - t->radius * cos(ang), d2 = z2 - t->radius * sin(ang);
            double l = -0.5 * (d1 * d1 + d2 * d2) / v;
            if (l > m) {
                double f = exp(m - l); /* m = -inf: f = 0 */
                s *= f, s1 *= f, s2 *= f;
                m = l;
            }
            double w = exp(l - m);
            s += w, s1 += w * -d1 / v, s2 += w * -d2 / v;
        }
        if (g) g[0] = s1 / s, g[1] = s2 / s;
        return m + log(s);
    }
    /* U2-U4 */
    double w1 = sin(2 * T_PI * z1 / 4), dw1 = (2 * T_PI / 4) * cos(2 * T_PI * z1 / 4);
    if (t->k == K_U2) {
        double e = (z2 - w1) / 0.4;
        lp = -0.5 * e * e;
        g2 = -e / 0.4;
        g1 = -g2 * dw1;
    } else {
        double s_b, wx, dwx;
        if (t->k == K_U3) {
            double q = (z1 - 1) / 0.6;
            wx = 3 * exp(-0.5 * q * q);
            dwx = wx * -q / 0.6;
            s_b = 0.35;
        } else {
            double sg = sigmoid((z1 - 1) / 0.3);
            wx = 3 * sg;
            dwx = 3 * sg * (1 - sg) / 0.3;
            s_b = 0.35;
        }
        double s_a = t->k == K_U3 ? 0.35 : 0.4;
        double ea = (z2 - w1) / s_a, eb = (z2 - w1 + wx) / s_b, pa;
        lp = lse2(-0.5 * ea * ea, -0.5 * eb * eb, &pa);
        /* d(-e^2/2) = -e de: de_a = (dz2 - dw1 dz1)/s_a, de_b = (dz2 + (dwx - dw1) dz1)/s_b */
        double ga = -ea / s_a, gb = -eb / s_b;
        g2 = pa * ga + (1 - pa) * gb;
        g1 = pa * ga * -dw1 + (1 - pa) * gb * (dwx - dw1);
    }
    double out = fabs(z1) - t->hw;
    if (out > 0) {
        double q = out / t->edge;
        lp -= 0.5 * q * q;
        g1 -= (z1 > 0 ? 1 : -1) * q / t->edge;
    }
    if (g) g[0] = g1, g[1] = g2;
    return lp;
}

static fl_status log_prob(void *self, const fl_target_args *a)
{
    const target *t = self;
    for (uint32_t i = 0; i < a->n; i++) {
        double g[2];
        double lp = eval_u(t, a->z[2 * i], a->z[2 * i + 1], a->w ? g : NULL);
        if (a->logp) a->logp[i] = (fl_real)lp;
        if (a->w) {
            a->dz[2 * i] = (fl_real)(a->w[i] * g[0]);
            a->dz[2 * i + 1] = (fl_real)(a->w[i] * g[1]);
        }
    }
    return FL_OK;
}

static fl_status create(const fl_host *h, fl_ctx *cx, fl_target_info *info, kind k, void **self)
{
    target *t = calloc(1, sizeof *t);
    if (!t) {
        h->error(cx, "out of memory");
        return FL_ERR_NOMEM;
    }
    t->k = k;
    info->dim = 2;
    info->log_z = NAN;
    switch (k) {
    case K_U1: {
        double b = h->cfg_real(cx, "box");
        info->box[0] = info->box[2] = -b;
        info->box[1] = info->box[3] = b;
        break;
    }
    case K_U2:
    case K_U3:
    case K_U4: {
        t->hw = h->cfg_real(cx, "half_width");
        t->edge = h->cfg_real(cx, "edge");
        /* The z2 integral of exp(-U) does not depend on z1. */
        double c = k == K_U2 ? 0.4 : k == K_U3 ? 0.7 : 0.75;
        info->log_z = log(c * SQRT_2PI) + log(2 * t->hw + t->edge * SQRT_2PI);
        /* The shoulders out to 5 edge widths, and z2 far enough for U4's
         * lower branch (z2 = w1 - w3 down to -4 - 5 x 0.35). */
        info->box[0] = -(t->hw + 5 * t->edge), info->box[1] = t->hw + 5 * t->edge;
        info->box[2] = k == K_U4 ? -6 : -4, info->box[3] = 4;
        break;
    }
    case K_BANANA:
        t->s1 = h->cfg_real(cx, "sigma1");
        t->s2 = h->cfg_real(cx, "sigma2");
        t->bend = h->cfg_real(cx, "bend");
        /* (z1, z2 - b(z1^2 - s1^2)) has unit Jacobian: Z = 2 pi s1 s2. */
        info->log_z = log(2 * T_PI * t->s1 * t->s2);
        {
            double lo = -t->bend * t->s1 * t->s1, hi = t->bend * 15 * t->s1 * t->s1;
            if (lo > hi) {
                double x = lo;
                lo = hi, hi = x;
            }
            info->box[0] = -4 * t->s1, info->box[1] = 4 * t->s1;
            info->box[2] = lo - 4 * t->s2, info->box[3] = hi + 4 * t->s2;
        }
        break;
    case K_MIXTURE:
        t->nc = (uint32_t)h->cfg_int(cx, "components");
        t->radius = h->cfg_real(cx, "radius");
        t->scale = h->cfg_real(cx, "scale");
        info->log_z = log((double)t->nc * 2 * T_PI * t->scale * t->scale);
        {
            double b = t->radius + 5 * t->scale;
            info->box[0] = info->box[2] = -b;
            info->box[1] = info->box[3] = b;
        }
        break;
    }
    *self = t;
    return FL_OK;
}

#define CREATE(fn, k)                                                                      \
    static fl_status fn(const fl_host *h, fl_ctx *cx, fl_target_info *info, void **self)   \
    {                                                                                      \
        return create(h, cx, info, k, self);                                               \
    }
CREATE(create_u1, K_U1)
CREATE(create_u2, K_U2)
CREATE(create_u3, K_U3)
CREATE(create_u4, K_U4)
CREATE(create_banana, K_BANANA)
CREATE(create_mixture, K_MIXTURE)

#define NK(t) (uint32_t)(sizeof(t) / sizeof((t)[0]))
#define CLASS(var, name, summary, keys, fn)                                                \
    static const fl_target_class var = {                                                   \
        .base = { sizeof(fl_target_class), name, summary, keys, NK(keys) },                \
        .create = fn, .destroy = destroy, .log_prob = log_prob,                            \
    };

CLASS(u1, "u1",
      "Rezende & Mohamed's U1: a ring of radius 2 cut into two arcs at z1 = +-2; log Z by "
      "the host's grid",
      u1_keys, create_u1)
CLASS(u2, "u2",
      "Rezende & Mohamed's U2: a sine wave z2 = sin(pi z1/2) of width 0.4, boxed in z1 "
      "(analytic log Z)",
      u234_keys, create_u2)
CLASS(u3, "u3",
      "Rezende & Mohamed's U3: the sine wave and a second branch split off by a bump at "
      "z1 = 1, boxed in z1 (analytic log Z)",
      u234_keys, create_u3)
CLASS(u4, "u4",
      "Rezende & Mohamed's U4: the sine wave and a branch shifted by 3 sigmoid((z1-1)/0.3), "
      "boxed in z1 (analytic log Z)",
      u234_keys, create_u4)
CLASS(banana, "banana",
      "twisted Gaussian: z1 ~ N(0, sigma1^2), z2 | z1 ~ N(bend (z1^2 - sigma1^2), "
      "sigma2^2) (analytic log Z)",
      banana_keys, create_banana)
CLASS(mixture, "mixture",
      "equal-weight isotropic Gaussians on a ring (default: 8 components; analytic log Z)",
      mixture_keys, create_mixture)

static fl_status init(const fl_host *host, fl_registrar *r)
{
    (void)host;
    const fl_component *cls[] = { &u1.base, &u2.base, &u3.base, &u4.base, &banana.base,
                                  &mixture.base };
    for (size_t i = 0; i < sizeof cls / sizeof *cls; i++) {
        fl_status st = r->add(r, FL_KIND_TARGET, cls[i]);
        if (st != FL_OK) return st;
    }
    return FL_OK;
}

FL_PLUGIN("targets-energies", "1.0.0", init)
