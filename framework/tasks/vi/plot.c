/* plot.c - the pictures of a vi run (task_vi.h): the target, q and its
 * samples on one grid for a 2D target, and the training curves. */
#include "tasks/vi/vi.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "output/chart.h"
#include "output/plot.h"
#include "output/rundir.h"

#define GRID FL_PLOT_GRID
#define N_SAMPLES FL_PLOT_SAMPLES

#define VI_HIST_SAMPLES 200000  /* q's histogram when a layer has no inverse */

/* The GRID x GRID cell centres of `box`, row j from the bottom. */
static void grid_points(const double box[4], fl_real *z)
{
    double dx = (box[1] - box[0]) / GRID, dy = (box[3] - box[2]) / GRID;
    for (uint32_t k = 0; k < GRID * GRID; k++) {
        z[2 * k] = (fl_real)(box[0] + (k % GRID + 0.5) * dx);
        z[2 * k + 1] = (fl_real)(box[2] + (k / GRID + 0.5) * dy);
    }
}

static int stack_invertible(const fl_stack *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (!(s->L[i].cls->flags & FL_FLOW_HAS_INVERSE)) return 0;
    return 1;
}

fl_status fl_vi_plot_grids(fl_experiment *e, double *target, double *q, int *q_exact)
{
    const fl_vi *v = fl_vi_of(e);
    const double *box = v->info.box;
    const size_t G2 = (size_t)GRID * GRID;
    fl_real *z = fl_alloc(G2 * 2 * sizeof(fl_real)), *l = fl_alloc(G2 * sizeof(fl_real));
    fl_real *smp = NULL;
    fl_status st = z && l ? FL_OK : FL_ERR_NOMEM;
    if (st == FL_OK) {
        grid_points(box, z);
        st = fl_vi_target_logp(e, z, G2, l);
    }
    /* Normalise the target on the grid itself, so both pictures are
     * densities on one scale whatever the target's log Z. */
    double m = -INFINITY, s = 0, cell = (box[1] - box[0]) * (box[3] - box[2]) / (double)G2;
    for (size_t i = 0; st == FL_OK && i < G2; i++) m = fmax(m, (double)l[i]);
    for (size_t i = 0; st == FL_OK && i < G2; i++) s += exp((double)l[i] - m);
    double lz = m + log(s * cell);
    for (size_t i = 0; st == FL_OK && i < G2; i++) {
        double p = exp((double)l[i] - lz);
        target[i] = isfinite(p) ? p : 0;
    }
    *q_exact = stack_invertible(fl_vi_of(e)->flows);
    if (st == FL_OK && *q_exact) {
        st = fl_vi_log_q(e, z, G2, l);
        for (size_t i = 0; st == FL_OK && i < G2; i++) {
            double p = exp((double)l[i]);
            q[i] = isfinite(p) ? p : 0; /* a blown-up cell must not hide the rest */
        }
    } else if (st == FL_OK) {
        smp = fl_alloc((size_t)VI_HIST_SAMPLES * 2 * sizeof(fl_real));
        st = smp ? fl_vi_sample(e, VI_HIST_SAMPLES, fl_rng_key_make(0, "plot.hist"), smp, NULL)
                 : FL_ERR_NOMEM;
        if (st == FL_OK) st = fl_plot_histogram(smp, VI_HIST_SAMPLES, box, q);
    }
    fl_free(z);
    fl_free(l);
    fl_free(smp);
    return st;
}

fl_status fl_plot_vi(fl_experiment *e, const char *dir)
{
    static const fl_curve curves[] = {
        { "train_bound", FL_CURVE_BLUE, 0, NULL },
        { "elbo", FL_CURVE_ORANGE, 0, NULL },
        { "logz_ref", FL_CURVE_GREY, 1, NULL },
    };
    fl_status st = fl_plot_curves(dir, curves, 3, "elbo");
    if (st != FL_OK || fl_vi_of(e)->info.dim != 2) return st;
    const double *box = fl_vi_of(e)->info.box;
    const size_t G2 = (size_t)GRID * GRID;
    double *tg = malloc(G2 * sizeof *tg), *q = malloc(G2 * sizeof *q);
    fl_real *smp = fl_alloc((size_t)N_SAMPLES * 2 * sizeof *smp);
    int exact = 0;
    if (!tg || !q || !smp) st = FL_ERR_NOMEM;
    if (st == FL_OK) st = fl_vi_plot_grids(e, tg, q, &exact);
    if (st == FL_OK) st = fl_vi_sample(e, N_SAMPLES, fl_rng_key_make(0, "plot"), smp, NULL);
    double tmax = tg ? fl_plot_max(tg, G2) : 0, qmax = q ? fl_plot_max(q, G2) : 0;
    double vmax = tmax; /* the target's scale: q saturates where it is too peaked */
    /* one colour scale for target and q, so the two compare by eye */
    fl_map_chart m = { .xlabel = "z1", .ylabel = "z2", .box = { box[0], box[1], box[2], box[3] },
                       .gw = GRID, .gh = GRID, .vmax = vmax, .zlabel = "density" };
    const char *names[3] = { "target.png", "density.png", "samples.png" };
    const char *titles[3] = { "Target density (normalised on the grid)",
                              exact ? "Fitted q(z) (target's colour scale)"
                                    : "Fitted q(z), histogram (target's scale)",
                              "5000 samples of q" };
    for (int k = 0; k < 3 && st == FL_OK; k++) {
        m.title = titles[k];
        m.v = k == 0 ? tg : k == 1 ? q : NULL;
        if (k == 2) {
            m.zlabel = NULL;
            m.pts = smp;
            m.n_pts = N_SAMPLES;
            m.colour = (fl_rgb){ 20, 40, 120 };
            m.alpha = 0.3;
        }
        char *path = fl_strfmt("%s/%s", dir, names[k]);
        st = path ? fl_chart_map(&m, path) : FL_ERR_NOMEM;
        free(path);
    }
    if (st == FL_OK) {
        fl_buf b = { 0 };
        fl_buf_printf(&b, "x_min,x_max,y_min,y_max,target_max,q_max,scale_max,q_from\n"
                          "%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%s\n",
                      box[0], box[1], box[2], box[3], tmax, qmax, vmax,
                      exact ? "inverse" : "histogram");
        st = b.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "plot_grid.csv", b.data, b.len);
        fl_buf_free(&b);
    }
    fl_free(smp);
    free(tg);
    free(q);
    return st;
}
