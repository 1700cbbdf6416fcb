/* density_plot.c - the pictures of a density run (task_density.h): the
 * learned density, the test data and samples on one grid for 2D data, and
 * the NLL curves. */
#include "tasks/task_density.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "output/chart.h"
#include "output/imagegrid.h"
#include "output/plot.h"
#include "output/rundir.h"

#define GRID FL_PLOT_GRID
#define N_SAMPLES FL_PLOT_SAMPLES

/* exp(log p) at the GRID x GRID cell centres, row j from the bottom. */
static fl_status eval_density(fl_experiment *e, const double box[4], double *dens)
{
    uint32_t chunk = e->eval_batch;
    fl_real *x = fl_alloc((size_t)chunk * 2 * sizeof(fl_real));
    fl_real *logdet = fl_alloc(chunk * sizeof(fl_real));
    double *ldj = malloc(chunk * sizeof *ldj);
    fl_status st = x && logdet && ldj ? FL_OK : FL_ERR_NOMEM;
    const uint64_t total = (uint64_t)GRID * GRID;
    double dx = (box[1] - box[0]) / GRID, dy = (box[3] - box[2]) / GRID;
    for (uint64_t i = 0; st == FL_OK && i < total; i += chunk) {
        uint32_t m = (uint32_t)(total - i < chunk ? total - i : chunk);
        for (uint32_t r = 0; r < m; r++) {
            uint64_t k = i + r;
            x[2 * r] = (fl_real)(box[0] + (k % GRID + 0.5) * dx);
            x[2 * r + 1] = (fl_real)(box[2] + (k / GRID + 0.5) * dy);
        }
        /* the density of the rows: the transform's Jacobian counts (no
         * dequantization noise: grid points are not levels) */
        st = fl_density_preprocess(e, x, m, 0, fl_rng_key_make(0, "plot"), 0, 0, ldj);
        memset(logdet, 0, m * sizeof(fl_real));
        const fl_real *u;
        if (st == FL_OK)
            st = fl_stack_forward(fl_density_flows(e), m, FL_MODE_EVAL, x, NULL, logdet, &u);
        for (uint32_t r = 0; st == FL_OK && r < m; r++) {
            double q = (double)u[2 * r] * u[2 * r] + (double)u[2 * r + 1] * u[2 * r + 1];
            double lp = -0.5 * q - 2 * FL_HALF_LOG_2PI + (double)logdet[r] + ldj[r];
            double p = exp(lp);
            dens[i + r] = isfinite(p) ? p : 0; /* a blown-up cell must not hide the rest */
        }
    }
    fl_free(x);
    fl_free(logdet);
    free(ldj);
    return st;
}

static fl_status plot_2d(fl_experiment *e, const char *dir)
{
    fl_real *rows = NULL, *smp = NULL;
    uint64_t n = 0;
    double *dens = NULL, *hist = NULL;
    fl_status st = fl_experiment_eval_split(e, FL_SPLIT_TEST, &rows, &n);
    if (st == FL_OK && n == 0) {
        fl_err("the test split is empty: nothing to plot");
        st = FL_ERR_INVALID;
    }
    double box[4] = { INFINITY, -INFINITY, INFINITY, -INFINITY };
    for (uint64_t r = 0; st == FL_OK && r < n; r++) {
        box[0] = fmin(box[0], rows[2 * r]);
        box[1] = fmax(box[1], rows[2 * r]);
        box[2] = fmin(box[2], rows[2 * r + 1]);
        box[3] = fmax(box[3], rows[2 * r + 1]);
    }
    for (int a = 0; st == FL_OK && a < 2; a++) {
        double w = box[2 * a + 1] - box[2 * a];
        if (!isfinite(w)) {
            fl_err("the test split has non-finite values");
            st = FL_ERR_NUMERIC;
            break;
        }
        double pad = w > 0 ? 0.1 * w : 0.5;
        box[2 * a] -= pad;
        box[2 * a + 1] += pad;
    }
    if (st == FL_OK) {
        dens = malloc((size_t)GRID * GRID * sizeof *dens);
        hist = malloc((size_t)GRID * GRID * sizeof *hist);
        smp = fl_alloc((size_t)N_SAMPLES * 2 * sizeof *smp);
        if (!dens || !hist || !smp) st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) st = eval_density(e, box, dens);
    if (st == FL_OK) st = fl_plot_histogram(rows, n, box, hist);
    if (st == FL_OK) st = fl_density_sample(e, N_SAMPLES, fl_rng_key_make(0, "plot"), smp);
    double dmax = dens ? fl_plot_max(dens, (size_t)GRID * GRID) : 0;
    double hmax = hist ? fl_plot_max(hist, (size_t)GRID * GRID) : 0;
    /* three pictures on the same axes: the model, the data, the samples */
    fl_map_chart m = { .xlabel = "x1", .ylabel = "x2", .box = { box[0], box[1], box[2], box[3] },
                       .gw = GRID, .gh = GRID };
    char *path = NULL;
    if (st == FL_OK) {
        m.title = "Learned density p(x)";
        m.zlabel = "density";
        m.v = dens;
        m.vmax = dmax;
        st = (path = fl_strfmt("%s/density.png", dir)) ? fl_chart_map(&m, path) : FL_ERR_NOMEM;
        free(path);
    }
    if (st == FL_OK) {
        m.title = "Test data (smoothed histogram)";
        m.zlabel = "density of points";
        m.v = hist;
        m.vmax = hmax;
        st = (path = fl_strfmt("%s/data.png", dir)) ? fl_chart_map(&m, path) : FL_ERR_NOMEM;
        free(path);
    }
    if (st == FL_OK) {
        m.title = "5000 samples from the model";
        m.zlabel = NULL;
        m.v = NULL;
        m.pts = smp;
        m.n_pts = N_SAMPLES;
        m.colour = (fl_rgb){ 20, 40, 120 };
        m.alpha = 0.3;
        st = (path = fl_strfmt("%s/samples.png", dir)) ? fl_chart_map(&m, path) : FL_ERR_NOMEM;
        free(path);
    }
    if (st == FL_OK) {
        fl_buf b = { 0 };
        fl_buf_printf(&b, "x_min,x_max,y_min,y_max,density_max,data_max\n"
                          "%.9g,%.9g,%.9g,%.9g,%.9g,%.9g\n",
                      box[0], box[1], box[2], box[3], dmax, hmax);
        st = b.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "plot_grid.csv", b.data, b.len);
        fl_buf_free(&b);
    }
    fl_free(rows);
    fl_free(smp);
    free(dens);
    free(hist);
    return st;
}

/* samples.png of an image run: FL_DENSITY_N_TEMPS blocks of SAMPLE_ROWS x
 * SAMPLE_COLS samples, and samples_grid.csv saying which block is which. */
#define SAMPLE_COLS 10
#define SAMPLE_ROWS 3
#define SAMPLE_PAD 2

static fl_status plot_images(fl_experiment *e, const char *dir)
{
    const fl_dataset_info *in = &e->info;
    const uint32_t c = in->image_c ? in->image_c : 1, per = SAMPLE_COLS * SAMPLE_ROWS;
    const uint32_t D = in->dim;
    fl_real *smp = fl_alloc((size_t)FL_DENSITY_N_TEMPS * per * D * sizeof *smp);
    if (!smp) return FL_ERR_NOMEM;
    fl_status st = FL_OK;
    /* the same noise at every temperature: one picture per row of z */
    for (int t = 0; t < FL_DENSITY_N_TEMPS && st == FL_OK; t++)
        st = fl_density_sample_at(e, per, fl_rng_key_make(0, "plot"), fl_density_temps[t],
                                  smp + (size_t)t * per * D);
    char *p = st == FL_OK ? fl_strfmt("%s/samples.png", dir) : NULL;
    if (st == FL_OK && !p) st = FL_ERR_NOMEM;
    char labels[FL_DENSITY_N_TEMPS][32];
    const char *lp[FL_DENSITY_N_TEMPS];
    for (int t = 0; t < FL_DENSITY_N_TEMPS; t++) {
        snprintf(labels[t], sizeof labels[t], "T = %.2g", fl_density_temps[t]);
        lp[t] = labels[t];
    }
    uint32_t x0 = 0, y0 = 0;
    if (st == FL_OK)
        st = fl_image_blocks_captioned_png(p, smp, FL_DENSITY_N_TEMPS, per, c, in->image_h,
                                           in->image_w, SAMPLE_COLS, SAMPLE_PAD,
                                           "Samples at temperature T (same noise per column)", lp,
                                           &x0, &y0);
    free(p);
    if (st == FL_OK) {
        fl_buf b = { 0 };
        fl_buf_printf(&b, "block,temperature,first_pixel_row,first_pixel_col,rows,cols\n");
        const uint32_t block_h = SAMPLE_ROWS * (in->image_h + SAMPLE_PAD) + 2 * SAMPLE_PAD;
        for (int t = 0; t < FL_DENSITY_N_TEMPS; t++)
            fl_buf_printf(&b, "%d,%.2f,%u,%u,%u,%u\n", t, fl_density_temps[t],
                          y0 + SAMPLE_PAD + (uint32_t)t * block_h, x0 + SAMPLE_PAD, SAMPLE_ROWS,
                          SAMPLE_COLS);
        st = b.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "samples_grid.csv", b.data, b.len);
        fl_buf_free(&b);
    }
    fl_free(smp);
    return st;
}

fl_status fl_plot_density(fl_experiment *e, const char *dir)
{
    static const fl_curve curves[] = {
        { "train_nll", FL_CURVE_BLUE, 0, NULL },
        { "test_nll", FL_CURVE_ORANGE, 0, NULL },
    };
    static const fl_curve bpd_curves[] = {
        { "train_bpd", FL_CURVE_BLUE, 0, NULL },
        { "test_bpd", FL_CURVE_ORANGE, 0, NULL },
    };
    const int bpd = fl_density_pre_of(e)->bpd != 0;
    fl_status st = fl_plot_curves(dir, bpd ? bpd_curves : curves, 2, bpd ? "bpd" : "nll");
    const fl_dataset_info *in = &e->info;
    const uint32_t c = in->image_c ? in->image_c : 1;
    if (st == FL_OK && in->dim == 2) st = plot_2d(e, dir);
    else if (st == FL_OK && in->image_h && in->image_w &&
             (uint64_t)c * in->image_h * in->image_w == in->dim)
        st = plot_images(e, dir);
    return st;
}
