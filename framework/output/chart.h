/* chart.h - pictures a reader can read without a side file: axes with tick
 * marks and tick labels, axis labels, a title, a legend and a colour bar,
 * drawn with cairo (docs/architecture.md, "Pictures", says why cairo).
 *
 *   fl_chart_lines  line charts (training curves, report charts) as PNG and
 *                   SVG from the same drawing calls; the SVG keeps its text
 *                   as <text> elements, so it can be searched and tested
 *   fl_chart_map    a heatmap with a colour bar, or a scatter plot, over a
 *                   2D box (PNG)
 *   fl_chart_image  an image raster (a grid of samples) kept pixel for pixel,
 *                   with a title strip and a label beside chosen rows (PNG)
 *
 * Output is deterministic for a given cairo and font set (no time, no
 * randomness); files are written atomically (a temporary file, then
 * rename). Text uses the "DejaVu Sans" face through fontconfig, falling back
 * to any sans-serif face. Nothing here keeps state between calls: the
 * functions may be called from any thread. */
#ifndef FL_CHART_H
#define FL_CHART_H

#include <stddef.h>
#include <stdint.h>

#include <flowlab/core.h>

#include "output/plot.h"

/* One line of a line chart. */
typedef struct fl_series {
    const char *label;      /* legend text; NULL: left out of the legend */
    const double *x, *y;    /* n values each (borrowed); a non-finite one breaks the line */
    size_t n;
    fl_rgb colour;
    double width;           /* line width in pixels; 0: 1.6 */
    double alpha;           /* opacity in (0, 1]; 0: 1 */
    int markers;            /* 1: a dot at every point too (few, discrete x values) */
} fl_series;

/* A line chart. Ranges left NAN come from the data: x spans the finite x
 * values, y the finite y values padded by 5% (a zero-width range is
 * widened to +-0.5). */
typedef struct fl_line_chart {
    const char *title, *xlabel, *ylabel; /* NULL: none */
    const fl_series *series;             /* n_series lines, drawn in order (borrowed) */
    size_t n_series;
    uint32_t w, h;                       /* picture size in pixels (SVG: user units) */
    double x_min, x_max, y_min, y_max;   /* NAN: from the data */
} fl_line_chart;

/* Writes the chart to png_path and to svg_path (either may be NULL, not
 * both), with a legend of the labelled series in the plot corner that
 * hides the fewest points. range (NULL or 4 doubles) receives the axes'
 * x_min, x_max, y_min, y_max. Returns FL_ERR_INVALID (no output, a size
 * under 120 x 100 or over 8000 a side), FL_ERR_NOMEM, FL_ERR_INTERNAL
 * (cairo failed) or FL_ERR_IO; fl_err names the file. */
fl_status fl_chart_lines(const fl_line_chart *c, const char *png_path, const char *svg_path,
                         double range[4]);

/* The layout of every fl_chart_map picture: FL_MAP_W x FL_MAP_H pixels,
 * the plot square FL_MAP_SIDE pixels a side with its top-left corner at
 * (FL_MAP_X0, FL_MAP_Y0); the colour bar and its labels on the right. */
#define FL_MAP_W 480
#define FL_MAP_H 384
#define FL_MAP_X0 72
#define FL_MAP_Y0 32
#define FL_MAP_SIDE 300

/* A 2D picture over box = {x_min, x_max, y_min, y_max}: the heatmap of v
 * when v is not NULL (gw x gh values, v[j*gw + i] column i from the left,
 * row j from the bottom, coloured fl_colormap((v - vmin) / (vmax - vmin)),
 * non-finite values at the low end, with a colour bar labelled zlabel),
 * else n_pts points (x at pts[2i], y at pts[2i+1]) as dots of opacity
 * alpha, so dense regions come out darker. */
typedef struct fl_map_chart {
    const char *title, *xlabel, *ylabel, *zlabel; /* NULL: none */
    double box[4];
    const double *v;            /* heatmap values (borrowed), or NULL */
    uint32_t gw, gh;
    double vmin, vmax;
    const fl_real *pts;         /* points (borrowed), when v is NULL */
    size_t n_pts;
    fl_rgb colour;
    double alpha;
} fl_map_chart;

/* Writes the picture to png_path. Errors as fl_chart_lines. */
fl_status fl_chart_map(const fl_map_chart *c, const char *png_path);

/* Writes the w x h raster px (channels 1 grey or 3 RGB, rows top to
 * bottom, borrowed) unscaled, below a strip with `title` (NULL: no strip)
 * and right of a strip with labels[k] centred on the raster's pixel row
 * label_y[k] (n_labels of them; 0: no strip), on a white background.
 * *x_off and *y_off (either may be NULL) receive where the raster's
 * top-left pixel lands. Errors as fl_chart_lines. */
fl_status fl_chart_image(const char *png_path, const uint8_t *px, uint32_t w, uint32_t h,
                         int channels, const char *title, const char *const *labels,
                         const uint32_t *label_y, size_t n_labels, uint32_t *x_off,
                         uint32_t *y_off);

#endif
