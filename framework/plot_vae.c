/* plot_vae.c - pictures of a trained VAE: samples, reconstructions and
 * training curves. */
#include "plot_vae.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "imagegrid.h"
#include "plot.h"
#include "rundir.h"
#include "task_vae.h"
#include "util.h"

/* Reads the numeric columns `names` (n_cols of them) of a CSV with a header
 * line into cols[c][row]; *rows gets the number of data rows. Missing or
 * empty fields are NaN. The caller frees each cols[c]. */
static fl_status read_columns(const char *path, const char *const *names, int n_cols,
                              double **cols, size_t *rows)
{
    char *text = NULL;
    size_t len = 0;
    fl_status st = fl_read_file(path, &text, &len);
    if (st != FL_OK) return st;
    size_t cap = 1;
    for (size_t i = 0; i < len; i++) cap += text[i] == '\n';
    int idx[8];
    for (int c = 0; c < n_cols; c++) {
        cols[c] = malloc(cap * sizeof **cols);
        idx[c] = -1;
        if (!cols[c]) st = FL_ERR_NOMEM;
    }
    size_t n = 0;
    const char *p = text, *end = text + len;
    for (size_t line = 0; st == FL_OK && p < end; line++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = (size_t)((nl ? nl : end) - p);
        if (line == 0) {
            /* header: find each wanted name */
            int k = 0;
            for (const char *q = p, *e = p + l; q <= e; k++) {
                const char *c = memchr(q, ',', (size_t)(e - q));
                if (!c) c = e;
                for (int w = 0; w < n_cols; w++)
                    if ((size_t)(c - q) == strlen(names[w]) && memcmp(q, names[w], (size_t)(c - q)) == 0)
                        idx[w] = k;
                q = c + 1;
            }
            for (int w = 0; w < n_cols; w++)
                if (idx[w] < 0) {
                    fl_err("%s: no column '%s' in the header", path, names[w]);
                    st = FL_ERR_FORMAT;
                }
        } else if (l) {
            for (int w = 0; w < n_cols; w++) {
                const char *q = p, *e = p + l;
                for (int k = 0; k < idx[w] && q; k++) {
                    q = memchr(q, ',', (size_t)(e - q));
                    if (q) q++;
                }
                double v = NAN;
                if (q && q < e && *q != ',') {
                    char tmp[64];
                    size_t m = 0;
                    while (q + m < e && q[m] != ',' && m < sizeof tmp - 1) m++;
                    memcpy(tmp, q, m);
                    tmp[m] = 0;
                    char *stop;
                    v = strtod(tmp, &stop);
                    if (stop == tmp) v = NAN;
                }
                cols[w][n] = v;
            }
            n++;
        }
        p = nl ? nl + 1 : end;
    }
    free(text);
    *rows = n;
    return st;
}

static fl_status curves(const char *dir)
{
    static const char *const names[] = { "step", "train_bound", "valid_elbo", "valid_iwae" };
    double *col[4] = { 0 };
    size_t n = 0;
    char *path = fl_strfmt("%s/metrics.csv", dir);
    if (!path) return FL_ERR_NOMEM;
    fl_status st = read_columns(path, names, 4, col, &n);
    free(path);
    if (st == FL_OK && n == 0) {
        fl_err("%s/metrics.csv: no rows yet", dir);
        st = FL_ERR_FORMAT;
    }
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (size_t i = 0; st == FL_OK && i < n; i++) {
        x0 = fmin(x0, col[0][i]);
        x1 = fmax(x1, col[0][i]);
        for (int c = 1; c < 4; c++)
            if (isfinite(col[c][i])) y0 = fmin(y0, col[c][i]), y1 = fmax(y1, col[c][i]);
    }
    if (!(x1 > x0)) x1 = x0 + 1;
    if (!(y1 > y0)) y0 -= 1, y1 += 1;
    fl_canvas c = { 0 };
    if (st == FL_OK) st = fl_canvas_init(&c, 480, 320, (fl_rgb){ 255, 255, 255 });
    if (st == FL_OK) {
        double pad = 0.05 * (y1 - y0);
        fl_canvas_window(&c, 24, x0, x1, y0 - pad, y1 + pad);
        fl_canvas_frame(&c, (fl_rgb){ 0, 0, 0 }, 5);
        fl_canvas_polyline(&c, col[0], col[1], n, (fl_rgb){ 31, 119, 180 });  /* train */
        fl_canvas_polyline(&c, col[0], col[2], n, (fl_rgb){ 255, 127, 14 });  /* valid ELBO */
        fl_canvas_polyline(&c, col[0], col[3], n, (fl_rgb){ 44, 160, 44 });   /* valid IWAE */
        char *p = fl_strfmt("%s/curves.png", dir);
        st = p ? fl_canvas_save(&c, p) : FL_ERR_NOMEM;
        free(p);
    }
    if (st == FL_OK) {
        fl_buf b = { 0 };
        fl_buf_printf(&b,
                      "step_min,step_max,bound_min,bound_max,blue,orange,green\n%.9g,%.9g,%.9g,"
                      "%.9g,train_bound,valid_elbo,valid_iwae\n",
                      c.x_min, c.x_max, c.y_min, c.y_max);
        st = b.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "curves_axes.csv", b.data, b.len);
        fl_buf_free(&b);
    }
    fl_canvas_free(&c);
    for (int k = 0; k < 4; k++) free(col[k]);
    return st;
}

fl_status fl_plot_vae(fl_experiment *e, const char *dir)
{
    fl_status st = curves(dir);
    const uint32_t h = e->info.image_h, w = e->info.image_w, D = e->info.dim;
    if (st != FL_OK || !h || !w || (uint64_t)h * w != D) return st;
    const uint32_t ns = 100, nr = 40;
    fl_real *s = fl_alloc((size_t)ns * D * sizeof(fl_real));
    fl_real *r = fl_alloc((size_t)nr * D * sizeof(fl_real));
    fl_real *x = NULL;
    uint64_t nt = 0;
    st = s && r ? FL_OK : FL_ERR_NOMEM;
    if (st == FL_OK) st = fl_vae_sample(e, ns, fl_rng_key_make(0, "plot.samples"), s);
    char *p = NULL;
    if (st == FL_OK && (p = fl_strfmt("%s/samples.png", dir)))
        st = fl_image_grid_png(p, s, ns, h, w, 10, 2);
    free(p);
    p = NULL;
    if (st == FL_OK) st = fl_experiment_eval_split(e, FL_SPLIT_TEST, &x, &nt);
    if (st == FL_OK) {
        /* test images spread over the split (MNIST's test file comes in
         * runs of one digit) */
        uint32_t m = nt < nr ? (uint32_t)nt : nr;
        uint64_t stride = nt / m;
        for (uint32_t i = 0; i < m; i++)
            memmove(x + (size_t)i * D, x + (size_t)(i * stride) * D, D * sizeof(fl_real));
        st = fl_vae_reconstruct(e, x, m, r);
        if (st == FL_OK && (p = fl_strfmt("%s/reconstructions.png", dir)))
            st = fl_image_pairs_png(p, x, r, m, h, w, 10, 2);
        free(p);
    }
    fl_free(x);
    fl_free(s);
    fl_free(r);
    return st;
}
