/* plot.c - the canvas (an RGB raster with a data window, polylines, frames),
 * curves.png and curves.svg from metrics.csv for every task (drawn by
 * chart.c), and what the tasks' 2D
 * pictures share (the smoothed histogram). The pictures themselves are the
 * tasks' (tasks/density_plot.c, tasks/vi/plot.c, tasks/vae/plot.c). */
#include "output/plot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "output/chart.h"
#include "output/metrics.h"
#include "output/pngfile.h"
#include "output/rundir.h"
#include "core/util.h"

#define GRID FL_PLOT_GRID
#define BLUR_SIGMA 1.5      /* histogram smoothing, in cells */

fl_status fl_canvas_init(fl_canvas *c, uint32_t w, uint32_t h, fl_rgb bg)
{
    memset(c, 0, sizeof *c);
    if (w == 0 || h == 0 || w > 65535 || h > 65535) {
        fl_err("bad canvas size %ux%u", w, h);
        return FL_ERR_INVALID;
    }
    c->rgb = malloc((size_t)w * h * 3);
    if (!c->rgb) return FL_ERR_NOMEM;
    c->w = w;
    c->h = h;
    fl_canvas_window(c, 0, 0, 1, 0, 1);
    fl_canvas_fill(c, bg);
    return FL_OK;
}

void fl_canvas_free(fl_canvas *c)
{
    free(c->rgb);
    memset(c, 0, sizeof *c);
}

void fl_canvas_window(fl_canvas *c, uint32_t margin, double x_min, double x_max, double y_min,
                      double y_max)
{
    if (2 * (uint64_t)margin >= c->w || 2 * (uint64_t)margin >= c->h) margin = 0;
    c->px0 = margin;
    c->py0 = margin;
    c->px1 = c->w - margin;
    c->py1 = c->h - margin;
    if (!(x_max > x_min)) x_min -= 0.5, x_max = x_min + 1;
    if (!(y_max > y_min)) y_min -= 0.5, y_max = y_min + 1;
    c->x_min = x_min;
    c->x_max = x_max;
    c->y_min = y_min;
    c->y_max = y_max;
}

static void put(fl_canvas *c, long x, long y, fl_rgb col)
{
    if (x < 0 || y < 0 || x >= (long)c->w || y >= (long)c->h) return;
    uint8_t *p = c->rgb + ((size_t)y * c->w + (size_t)x) * 3;
    p[0] = col.r;
    p[1] = col.g;
    p[2] = col.b;
}

void fl_canvas_fill(fl_canvas *c, fl_rgb col)
{
    for (size_t i = 0; i < (size_t)c->w * c->h; i++) {
        c->rgb[3 * i] = col.r;
        c->rgb[3 * i + 1] = col.g;
        c->rgb[3 * i + 2] = col.b;
    }
}

/* matplotlib's viridis at t = 0, 1/8, ..., 1. */
static const uint8_t viridis[9][3] = {
    { 68, 1, 84 },    { 71, 44, 122 },  { 59, 81, 139 },  { 44, 113, 142 }, { 33, 144, 141 },
    { 39, 173, 129 }, { 92, 200, 99 },  { 170, 220, 50 }, { 253, 231, 37 },
};

fl_rgb fl_colormap(double t)
{
    if (!(t > 0)) t = 0; /* also NaN */
    if (t > 1) t = 1;
    double s = t * 8;
    int k = (int)s;
    if (k > 7) k = 7;
    double f = s - k;
    uint8_t o[3];
    for (int j = 0; j < 3; j++)
        o[j] = (uint8_t)lround(viridis[k][j] + f * (viridis[k + 1][j] - viridis[k][j]));
    return (fl_rgb){ o[0], o[1], o[2] };
}

void fl_canvas_heatmap(fl_canvas *c, const double *v, uint32_t gw, uint32_t gh, double vmin,
                       double vmax)
{
    uint32_t pw = c->px1 - c->px0, ph = c->py1 - c->py0;
    double span = vmax > vmin ? vmax - vmin : 1;
    for (uint32_t py = 0; py < ph; py++) {
        uint32_t j = gh - 1 - (uint32_t)((uint64_t)py * gh / ph); /* row 0 at the bottom */
        for (uint32_t px = 0; px < pw; px++) {
            uint32_t i = (uint32_t)((uint64_t)px * gw / pw);
            double x = v[(size_t)j * gw + i];
            put(c, c->px0 + px, c->py0 + py, fl_colormap(isfinite(x) ? (x - vmin) / span : 0));
        }
    }
}

/* Data coordinates to pixel coordinates (continuous). */
static double to_px(const fl_canvas *c, double x)
{
    return c->px0 + (x - c->x_min) / (c->x_max - c->x_min) * (c->px1 - c->px0);
}

static double to_py(const fl_canvas *c, double y)
{
    return c->py1 - (y - c->y_min) / (c->y_max - c->y_min) * (c->py1 - c->py0);
}

static void blend(fl_canvas *c, long x, long y, fl_rgb col, double a)
{
    if (x < (long)c->px0 || y < (long)c->py0 || x >= (long)c->px1 || y >= (long)c->py1) return;
    uint8_t *p = c->rgb + ((size_t)y * c->w + (size_t)x) * 3;
    const uint8_t s[3] = { col.r, col.g, col.b };
    for (int j = 0; j < 3; j++) p[j] = (uint8_t)lround(p[j] + a * (s[j] - p[j]));
}

void fl_canvas_points(fl_canvas *c, const fl_real *xy, size_t n, size_t stride, int radius,
                      fl_rgb col, double alpha)
{
    for (size_t i = 0; i < n; i++) {
        double x = xy[i * stride], y = xy[i * stride + 1];
        if (!(x >= c->x_min && x <= c->x_max && y >= c->y_min && y <= c->y_max)) continue;
        long cx = (long)floor(to_px(c, x)), cy = (long)floor(to_py(c, y));
        if (cx >= (long)c->px1) cx = (long)c->px1 - 1; /* x == x_max */
        if (cy >= (long)c->py1) cy = (long)c->py1 - 1;
        for (int dy = -radius; dy <= radius; dy++)
            for (int dx = -radius; dx <= radius; dx++)
                if (dx * dx + dy * dy <= radius * radius + radius) /* a rounder disc */
                    blend(c, cx + dx, cy + dy, col, alpha);
    }
}

void fl_canvas_polyline(fl_canvas *c, const double *x, const double *y, size_t n, fl_rgb col)
{
    /* Far-off points are clamped so the integer stepping stays bounded. */
    const double lim = 4.0 * (c->w + c->h);
    for (size_t i = 0; i < n; i++) { /* a point with no neighbour: a 3x3 dot */
        int ok = isfinite(x[i]) && isfinite(y[i]);
        int prev = i > 0 && isfinite(x[i - 1]) && isfinite(y[i - 1]);
        int next = i + 1 < n && isfinite(x[i + 1]) && isfinite(y[i + 1]);
        if (!ok || prev || next) continue;
        long px = lround(fmax(-lim, fmin(lim, to_px(c, x[i]))));
        long py = lround(fmax(-lim, fmin(lim, to_py(c, y[i]))));
        for (long d = 0; d < 9; d++) blend(c, px + d % 3 - 1, py + d / 3 - 1, col, 1.0);
    }
    for (size_t i = 1; i < n; i++) {
        if (!isfinite(x[i - 1]) || !isfinite(y[i - 1]) || !isfinite(x[i]) || !isfinite(y[i]))
            continue;
        double ax = fmax(-lim, fmin(lim, to_px(c, x[i - 1]))), ay = fmax(-lim, fmin(lim, to_py(c, y[i - 1])));
        double bx = fmax(-lim, fmin(lim, to_px(c, x[i]))), by = fmax(-lim, fmin(lim, to_py(c, y[i])));
        long x0 = lround(ax), y0 = lround(ay), x1 = lround(bx), y1 = lround(by);
        /* Bresenham */
        long dx = labs(x1 - x0), dy = -labs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
        long err = dx + dy;
        for (;;) {
            blend(c, x0, y0, col, 1.0);
            if (x0 == x1 && y0 == y1) break;
            long e2 = 2 * err;
            if (e2 >= dy) err += dy, x0 += sx;
            if (e2 <= dx) err += dx, y0 += sy;
        }
    }
}

void fl_canvas_frame(fl_canvas *c, fl_rgb col, uint32_t ticks)
{
    long l = (long)c->px0 - 1, r = c->px1, t = (long)c->py0 - 1, b = c->py1;
    for (long x = l; x <= r; x++) put(c, x, t, col), put(c, x, b, col);
    for (long y = t; y <= b; y++) put(c, l, y, col), put(c, r, y, col);
    for (uint32_t k = 0; ticks && k <= ticks; k++) {
        long tx = c->px0 + (long)((uint64_t)k * (c->px1 - 1 - c->px0) / ticks);
        long ty = c->py0 + (long)((uint64_t)k * (c->py1 - 1 - c->py0) / ticks);
        for (long d = 1; d <= 4; d++) {
            put(c, tx, b + d, col);
            put(c, tx, t - d, col);
            put(c, l - d, ty, col);
            put(c, r + d, ty, col);
        }
    }
}

fl_status fl_canvas_save(const fl_canvas *c, const char *path)
{
    return fl_png_write(path, c->rgb, c->w, c->h);
}

/* ---- curves.png (every task) -------------------------------------------- */

fl_status fl_canvas_save_in(const fl_canvas *c, const char *dir, const char *file)
{
    char *p = fl_strfmt("%s/%s", dir, file);
    if (!p) return FL_ERR_NOMEM;
    fl_status st = fl_canvas_save(c, p);
    free(p);
    return st;
}

/* The y axis label for a curves.png's `what`. */
static const char *what_label(const char *what)
{
    static const struct {
        const char *what, *label;
    } names[] = {
        { "nll", "negative log-likelihood (nats per point)" },
        { "bpd", "bits per dimension" },
        { "elbo", "ELBO and log Z (nats)" },
        { "bound", "bound (nats per image)" },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(what, names[i].what)) return names[i].label;
    return what;
}

fl_status fl_plot_curves(const char *dir, const fl_curve *curves, size_t n_curves,
                         const char *what)
{
    if (n_curves == 0 || n_curves > FL_PLOT_MAX_CURVES) {
        fl_err("%s: cannot plot %zu curves (1 to %d)", dir, n_curves, FL_PLOT_MAX_CURVES);
        return FL_ERR_INVALID;
    }
    char *path = fl_strfmt("%s/metrics.csv", dir);
    if (!path) return FL_ERR_NOMEM;
    fl_metrics_table t;
    fl_status st = fl_metrics_read(path, &t);
    const double *xs = NULL, *ys[FL_PLOT_MAX_CURVES] = { 0 }; /* ys[k]: curve k, NULL when absent */
    size_t n = t.n_rows;
    if (st == FL_OK) {
        xs = fl_metrics_column(&t, "step");
        const char *missing = NULL;
        for (size_t k = 0; k < n_curves; k++) {
            ys[k] = fl_metrics_column(&t, curves[k].column);
            if (!ys[k] && !curves[k].optional && !missing) missing = curves[k].column;
        }
        if (missing) {
            fl_err("%s: no column '%s' in the header", path, missing);
            st = FL_ERR_FORMAT;
        }
    }
    if (st == FL_OK && n == 0) {
        fl_err("%s: no rows", path);
        st = FL_ERR_FORMAT;
    }
    /* one line per present column, labelled with the column's name */
    fl_series ser[FL_PLOT_MAX_CURVES];
    size_t ns = 0;
    for (size_t k = 0; st == FL_OK && k < n_curves; k++)
        if (ys[k])
            ser[ns++] = (fl_series){ .label = curves[k].column, .x = xs, .y = ys[k], .n = n,
                                     .colour = curves[k].colour };
    const char *base = strrchr(dir, '/');
    base = base && base[1] ? base + 1 : dir;
    char *title = fl_strfmt("Training curves: %s", base);
    char *png = fl_strfmt("%s/curves.png", dir), *svg = fl_strfmt("%s/curves.svg", dir);
    if (st == FL_OK && (!title || !png || !svg)) st = FL_ERR_NOMEM;
    double r[4] = { 0, 1, 0, 1 };
    if (st == FL_OK) {
        fl_line_chart c = { .title = title, .xlabel = "training step", .ylabel = what_label(what),
                            .series = ser, .n_series = ns, .w = 640, .h = 400,
                            .x_min = NAN, .x_max = NAN, .y_min = NAN, .y_max = NAN };
        st = fl_chart_lines(&c, png, svg, r);
    }
    if (st == FL_OK) {
        fl_buf b = { 0 };
        fl_buf_printf(&b, "step_min,step_max,%s_min,%s_max", what, what);
        for (size_t k = 0; k < n_curves; k++)
            if (curves[k].legend) fl_buf_printf(&b, ",%s", curves[k].legend);
        fl_buf_printf(&b, "\n%.9g,%.9g,%.9g,%.9g", r[0], r[1], r[2], r[3]);
        for (size_t k = 0; k < n_curves; k++)
            if (curves[k].legend) fl_buf_printf(&b, ",%s", curves[k].column);
        fl_buf_printf(&b, "\n");
        st = b.failed ? FL_ERR_NOMEM : fl_rundir_write(dir, "curves_axes.csv", b.data, b.len);
        fl_buf_free(&b);
    }
    free(title);
    free(png);
    free(svg);
    fl_metrics_table_free(&t);
    free(path);
    return st;
}

/* ---- helpers of the tasks' 2D pictures ---------------------------------- */

/* Histogram of the rows on the grid, as a density, smoothed by a separable
 * Gaussian: a raw 200 x 200 histogram of a few thousand points is mostly
 * empty cells and does not read as a density. */
fl_status fl_plot_histogram(const fl_real *rows, uint64_t n, const double box[4], double *out)
{
    double *h = calloc((size_t)GRID * GRID, sizeof *h);
    if (!h) return FL_ERR_NOMEM;
    double dx = (box[1] - box[0]) / GRID, dy = (box[3] - box[2]) / GRID;
    for (uint64_t r = 0; r < n; r++) {
        double fx = (rows[2 * r] - box[0]) / dx, fy = (rows[2 * r + 1] - box[2]) / dy;
        if (!(fx >= 0 && fy >= 0 && fx < GRID && fy < GRID)) continue;
        h[(size_t)fy * GRID + (size_t)fx] += 1.0 / ((double)n * dx * dy);
    }
    enum { R = 5 };
    double kern[2 * R + 1], ks = 0;
    for (int k = -R; k <= R; k++) ks += kern[k + R] = exp(-0.5 * k * k / (BLUR_SIGMA * BLUR_SIGMA));
    for (int k = 0; k <= 2 * R; k++) kern[k] /= ks;
    for (int j = 0; j < GRID; j++) /* rows: h -> out */
        for (int i = 0; i < GRID; i++) {
            double s = 0;
            for (int k = -R; k <= R; k++)
                if (i + k >= 0 && i + k < GRID) s += kern[k + R] * h[j * GRID + i + k];
            out[j * GRID + i] = s;
        }
    for (int j = 0; j < GRID; j++) /* columns: out -> h -> out */
        for (int i = 0; i < GRID; i++) {
            double s = 0;
            for (int k = -R; k <= R; k++)
                if (j + k >= 0 && j + k < GRID) s += kern[k + R] * out[(j + k) * GRID + i];
            h[j * GRID + i] = s;
        }
    memcpy(out, h, (size_t)GRID * GRID * sizeof *h);
    free(h);
    return FL_OK;
}

double fl_plot_max(const double *v, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, v[i]);
    return m;
}
