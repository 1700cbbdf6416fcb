/* plot.h - a small RGB canvas (fl_canvas: raw pixels, no text, for tests and
 * simple rasters), curves.png/.svg of every task, and what the tasks' 2D
 * pictures share. The pictures a reader sees, with axes, labels and
 * legends, are drawn by output/chart.h. Canvas drawing clips to the
 * canvas; nothing here sets fl_err except the functions that return a
 * status. */
#ifndef FL_PLOT_H
#define FL_PLOT_H

#include <stdint.h>

#include <stddef.h>

#include <flowlab/core.h>

typedef struct fl_rgb {
    uint8_t r, g, b;
} fl_rgb;

/* w x h pixels, rows top to bottom. Data coordinates [x_min, x_max] x
 * [y_min, y_max] map onto the plot rectangle [px0, px1) x [py0, py1), y up. */
typedef struct fl_canvas {
    uint32_t w, h;
    uint8_t *rgb;                       /* w*h*3, owned */
    uint32_t px0, py0, px1, py1;
    double x_min, x_max, y_min, y_max;
} fl_canvas;

/* Allocates a w x h canvas filled with `bg`; the plot rectangle is the whole
 * canvas and the data window [0, 1]^2. Free with fl_canvas_free. Returns
 * FL_ERR_INVALID (empty or over 65535 a side) or FL_ERR_NOMEM. */
fl_status fl_canvas_init(fl_canvas *c, uint32_t w, uint32_t h, fl_rgb bg);
void fl_canvas_free(fl_canvas *c);

/* Sets the plot rectangle to the canvas less `margin` pixels on each side
 * and the data window to the given ranges (a side of zero width is widened
 * to +-0.5 so the mapping stays finite). */
void fl_canvas_window(fl_canvas *c, uint32_t margin, double x_min, double x_max, double y_min,
                      double y_max);
void fl_canvas_fill(fl_canvas *c, fl_rgb col);

/* The perceptual colour map (viridis, 9 control points, linear between
 * them): t in [0, 1] from dark blue to yellow, luminance increasing; t is
 * clamped and NaN maps to 0. */
fl_rgb fl_colormap(double t);

/* Paints the gw x gh grid `v` (borrowed; v[j*gw + i] is column i from the
 * left, row j from the bottom) over the plot rectangle, nearest cell per
 * pixel, coloured fl_colormap((v - vmin) / (vmax - vmin)); non-finite
 * values get the low end. */
void fl_canvas_heatmap(fl_canvas *c, const double *v, uint32_t gw, uint32_t gh, double vmin,
                       double vmax);

/* Filled dots of radius `radius` pixels at n points (x at xy[i*stride],
 * y at xy[i*stride+1], data coordinates, borrowed), blended over the canvas
 * with opacity `alpha` in [0, 1] so dense regions come out darker. Points
 * outside the data window are skipped. */
void fl_canvas_points(fl_canvas *c, const fl_real *xy, size_t n, size_t stride, int radius,
                      fl_rgb col, double alpha);

/* A 1-pixel polyline through n points (data coordinates, borrowed),
 * clipped to the plot rectangle; non-finite points break the line, and a
 * point with no finite neighbour is drawn as a 3x3 dot. */
void fl_canvas_polyline(fl_canvas *c, const double *x, const double *y, size_t n, fl_rgb col);

/* A frame around the plot rectangle with `ticks` evenly spaced tick marks
 * per side (outside the rectangle, when the margin allows). */
void fl_canvas_frame(fl_canvas *c, fl_rgb col, uint32_t ticks);

/* Writes the canvas as a PNG (see fl_png_write). */
fl_status fl_canvas_save(const fl_canvas *c, const char *path);

/* One curve of fl_plot_curves. */
typedef struct fl_curve {
    const char *column;  /* its metrics.csv column, plotted against `step` */
    fl_rgb colour;
    int optional;        /* 1: skipped when the column is missing, 0: an error */
    const char *legend;  /* the colour's name, listed in curves_axes.csv; NULL: not listed */
} fl_curve;

#define FL_PLOT_MAX_CURVES 8
/* fl_curve colours (initialisers): matplotlib's first three, and a grey */
#define FL_CURVE_BLUE { 31, 119, 180 }
#define FL_CURVE_ORANGE { 255, 127, 14 }
#define FL_CURVE_GREEN { 44, 160, 44 }
#define FL_CURVE_GREY { 128, 128, 128 }

/* curves.png (640 x 400) and curves.svg (the same chart as a vector file)
 * in `dir` from dir/metrics.csv: each of the n_curves (1 to
 * FL_PLOT_MAX_CURVES) columns against the `step` column, drawn in order,
 * with axes, tick labels, the axis labels ("training step", and a label
 * for `what`: nll, bpd, elbo, bound, else `what` itself), the title
 * "Training curves: <last part of dir>" and a legend naming each drawn
 * column (output/chart.h). Non-numeric or empty values break a line, rows
 * whose step is not a number are skipped, and a trailing \r is ignored.
 * The x range is the steps', the y range all the curves' finite values
 * padded by 5%. curves_axes.csv (data for scripts) gets
 * "step_min,step_max,<what>_min,<what>_max", then the legend of each curve
 * that has one, and the values below (the column names under the legends).
 * The files are written atomically. Returns FL_ERR_IO (no metrics.csv),
 * FL_ERR_FORMAT (a required column missing, or no rows), FL_ERR_INVALID
 * (n_curves out of range) or a write error; fl_err says which. */
fl_status fl_plot_curves(const char *dir, const fl_curve *curves, size_t n_curves,
                         const char *what);

/* The grid of the tasks' 2D pictures (cells per side = pixels) and the
 * number of samples they draw. */
#define FL_PLOT_GRID 200
#define FL_PLOT_SAMPLES 5000

/* `path` = dir/file for fl_canvas_save. */
fl_status fl_canvas_save_in(const fl_canvas *c, const char *dir, const char *file);

/* The density of n 2D points `rows` (n x 2) on the FL_PLOT_GRID^2 cells of
 * `box` (x_min, x_max, y_min, y_max), row j from the bottom, smoothed by a
 * Gaussian of 1.5 cells, into out (FL_PLOT_GRID^2 values). FL_ERR_NOMEM. */
fl_status fl_plot_histogram(const fl_real *rows, uint64_t n, const double box[4], double *out);

/* The largest of v[0..n-1] and 0. */
double fl_plot_max(const double *v, size_t n);

#endif
