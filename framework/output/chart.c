/* chart.c - charts with axes, labels and legends (chart.h), drawn with
 * cairo. Every drawing call goes through a "pen" that paints on a cairo
 * image surface and, for a vector file, also appends the same element to
 * an SVG text: one drawing code, two files, and the SVG keeps real <text>
 * (cairo's own SVG surface turns text into glyph outlines). */
#include "output/chart.h"

#include <cairo.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "output/pngfile.h"

#define FONT "DejaVu Sans"
#define FL_CHART_PI 3.14159265358979323846
#define TICK_SIZE 11.0
#define LABEL_SIZE 12.0
#define TITLE_SIZE 14.0

typedef struct pen {
    cairo_t *cr;
    fl_buf *svg; /* NULL: the raster only */
} pen;

enum { START = -1, MIDDLE = 0, END = 1 }; /* text anchors */

static void svg_text_escaped(fl_buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fl_buf_printf(b, "&lt;"); break;
        case '>': fl_buf_printf(b, "&gt;"); break;
        case '&': fl_buf_printf(b, "&amp;"); break;
        case '"': fl_buf_printf(b, "&quot;"); break;
        default: fl_buf_write(b, s, 1);
        }
    }
}

static void set_source(pen *p, fl_rgb c, double alpha)
{
    cairo_set_source_rgba(p->cr, c.r / 255.0, c.g / 255.0, c.b / 255.0, alpha);
}

static void set_font(pen *p, double size, int bold)
{
    cairo_select_font_face(p->cr, FONT, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(p->cr, size);
}

static double text_width(pen *p, const char *s, double size, int bold)
{
    cairo_text_extents_t ext;
    set_font(p, size, bold);
    cairo_text_extents(p->cr, s, &ext);
    return ext.x_advance;
}

/* Text with its baseline at y (vertical: rotated a quarter turn
 * anticlockwise, reading upwards, its baseline at x). */
static void text(pen *p, double x, double y, const char *s, double size, int anchor,
                 int vertical, int bold)
{
    double w = text_width(p, s, size, bold);
    double shift = anchor == START ? 0 : anchor == MIDDLE ? w / 2 : w;
    cairo_save(p->cr);
    cairo_translate(p->cr, x, y);
    if (vertical) cairo_rotate(p->cr, -FL_CHART_PI / 2);
    cairo_move_to(p->cr, -shift, 0);
    cairo_set_source_rgb(p->cr, 0.1, 0.1, 0.1);
    cairo_show_text(p->cr, s);
    cairo_restore(p->cr);
    if (p->svg) {
        fl_buf_printf(p->svg, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%g\"%s%s", x, y, size,
                      anchor == START ? "" : anchor == MIDDLE ? " text-anchor=\"middle\""
                                                              : " text-anchor=\"end\"",
                      bold ? " font-weight=\"bold\"" : "");
        if (vertical) fl_buf_printf(p->svg, " transform=\"rotate(-90 %.1f %.1f)\"", x, y);
        fl_buf_printf(p->svg, ">");
        svg_text_escaped(p->svg, s);
        fl_buf_printf(p->svg, "</text>\n");
    }
}

static void rect(pen *p, double x, double y, double w, double h, const fl_rgb *fill,
                 double fill_alpha, const fl_rgb *stroke)
{
    cairo_rectangle(p->cr, x, y, w, h);
    if (fill) {
        set_source(p, *fill, fill_alpha);
        cairo_fill_preserve(p->cr);
    }
    if (stroke) {
        set_source(p, *stroke, 1);
        cairo_set_line_width(p->cr, 1);
        cairo_stroke_preserve(p->cr);
    }
    cairo_new_path(p->cr);
    if (p->svg) {
        fl_buf_printf(p->svg, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"", x, y,
                      w, h);
        if (fill) fl_buf_printf(p->svg, " fill=\"#%02x%02x%02x\"", fill->r, fill->g, fill->b);
        else fl_buf_printf(p->svg, " fill=\"none\"");
        if (fill && fill_alpha < 1) fl_buf_printf(p->svg, " fill-opacity=\"%.2f\"", fill_alpha);
        if (stroke)
            fl_buf_printf(p->svg, " stroke=\"#%02x%02x%02x\"", stroke->r, stroke->g, stroke->b);
        fl_buf_printf(p->svg, "/>\n");
    }
}

/* A straight segment (grid lines, ticks, legend keys). */
static void segment(pen *p, double x0, double y0, double x1, double y1, fl_rgb c, double width)
{
    cairo_move_to(p->cr, x0, y0);
    cairo_line_to(p->cr, x1, y1);
    set_source(p, c, 1);
    cairo_set_line_width(p->cr, width);
    cairo_stroke(p->cr);
    if (p->svg)
        fl_buf_printf(p->svg,
                      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
                      "stroke=\"#%02x%02x%02x\" stroke-width=\"%g\"/>\n",
                      x0, y0, x1, y1, c.r, c.g, c.b, width);
}

/* ---- axes --------------------------------------------------------------- */

/* The data window and the plot rectangle it maps onto (y up). */
typedef struct frame {
    double x0, y0, x1, y1;             /* pixels: left, top, right, bottom */
    double xmin, xmax, ymin, ymax;
} frame;

static double fx(const frame *f, double x)
{
    return f->x0 + (x - f->xmin) / (f->xmax - f->xmin) * (f->x1 - f->x0);
}

static double fy(const frame *f, double y)
{
    return f->y1 - (y - f->ymin) / (f->ymax - f->ymin) * (f->y1 - f->y0);
}

/* A step of 1, 2 or 5 times a power of ten giving about `target` ticks. */
static double tick_step(double lo, double hi, int target)
{
    double raw = (hi - lo) / target;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

/* The ticks in [lo, hi]: *n of them (at most 32) from *first by step. */
static double ticks(double lo, double hi, int target, int *n, double *first)
{
    double step = tick_step(lo, hi, target);
    *first = ceil(lo / step - 1e-9) * step;
    *n = 0;
    while (*n < 32 && *first + *n * step <= hi + 1e-9 * step) (*n)++;
    return step;
}

/* A tick label: as many decimals as the step needs; %g for extreme values. */
static void tick_label(char *buf, size_t cap, double v, double step)
{
    if (fabs(v) < 1e-9 * step) v = 0; /* not "-0" or "1e-17" */
    int dec = (int)-floor(log10(step) + 1e-9);
    if (fabs(v) >= 1e6 || dec > 5) snprintf(buf, cap, "%.3g", v);
    else snprintf(buf, cap, "%.*f", dec > 0 ? dec : 0, v);
}

static const fl_rgb grid_grey = { 226, 226, 226 },
                    frame_grey = { 110, 110, 110 }, white = { 255, 255, 255 };

/* Widest tick label of the y axis. */
static double y_labels_width(pen *p, const frame *f)
{
    int n;
    double first, step = ticks(f->ymin, f->ymax, 6, &n, &first), w = 0;
    for (int k = 0; k < n; k++) {
        char b[64];
        tick_label(b, sizeof b, first + k * step, step);
        w = fmax(w, text_width(p, b, TICK_SIZE, 0));
    }
    return w;
}

/* Grid lines (when `grid`), then the frame, tick marks and tick labels. */
static void axes(pen *p, const frame *f, int grid, const char *xlabel, const char *ylabel)
{
    int nx, ny;
    double fx0, fy0;
    double sx = ticks(f->xmin, f->xmax, 6, &nx, &fx0), sy = ticks(f->ymin, f->ymax, 6, &ny, &fy0);
    for (int k = 0; grid && k < nx; k++)
        segment(p, fx(f, fx0 + k * sx), f->y0, fx(f, fx0 + k * sx), f->y1, grid_grey, 1);
    for (int k = 0; grid && k < ny; k++)
        segment(p, f->x0, fy(f, fy0 + k * sy), f->x1, fy(f, fy0 + k * sy), grid_grey, 1);
    rect(p, f->x0, f->y0, f->x1 - f->x0, f->y1 - f->y0, NULL, 1, &frame_grey);
    char b[64];
    for (int k = 0; k < nx; k++) {
        double x = fx(f, fx0 + k * sx);
        segment(p, x, f->y1, x, f->y1 + 4, frame_grey, 1);
        tick_label(b, sizeof b, fx0 + k * sx, sx);
        text(p, x, f->y1 + 16, b, TICK_SIZE, MIDDLE, 0, 0);
    }
    for (int k = 0; k < ny; k++) {
        double y = fy(f, fy0 + k * sy);
        segment(p, f->x0 - 4, y, f->x0, y, frame_grey, 1);
        tick_label(b, sizeof b, fy0 + k * sy, sy);
        text(p, f->x0 - 7, y + 4, b, TICK_SIZE, END, 0, 0);
    }
    if (xlabel) text(p, (f->x0 + f->x1) / 2, f->y1 + 36, xlabel, LABEL_SIZE, MIDDLE, 0, 0);
    if (ylabel) text(p, 16, (f->y0 + f->y1) / 2, ylabel, LABEL_SIZE, MIDDLE, 1, 0);
}

static void clip_begin(pen *p, const frame *f)
{
    cairo_save(p->cr);
    cairo_rectangle(p->cr, f->x0, f->y0, f->x1 - f->x0, f->y1 - f->y0);
    cairo_clip(p->cr);
    if (p->svg) fl_buf_printf(p->svg, "<g clip-path=\"url(#plot)\">\n");
}

static void clip_end(pen *p)
{
    cairo_restore(p->cr);
    if (p->svg) fl_buf_printf(p->svg, "</g>\n");
}

/* ---- surfaces and files ------------------------------------------------- */

typedef struct picture {
    cairo_surface_t *surf;
    pen p;
    fl_buf svg;
    uint32_t w, h;
} picture;

static fl_status picture_open(picture *pic, uint32_t w, uint32_t h, int svg, const char *what)
{
    memset(pic, 0, sizeof *pic);
    if (w < 120 || h < 100 || w > 8000 || h > 8000) {
        fl_err("cannot draw %s: bad picture size %ux%u", what, w, h);
        return FL_ERR_INVALID;
    }
    pic->surf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)w, (int)h);
    pic->p.cr = cairo_create(pic->surf);
    if (cairo_status(pic->p.cr) != CAIRO_STATUS_SUCCESS) {
        fl_err("cannot draw %s: cairo: %s", what, cairo_status_to_string(cairo_status(pic->p.cr)));
        return FL_ERR_INTERNAL;
    }
    pic->w = w;
    pic->h = h;
    if (svg) {
        pic->p.svg = &pic->svg;
        fl_buf_printf(&pic->svg,
                      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%u\" height=\"%u\" "
                      "viewBox=\"0 0 %u %u\" font-family=\"DejaVu Sans, sans-serif\" "
                      "fill=\"#282828\">\n",
                      w, h, w, h);
    }
    cairo_set_source_rgb(pic->p.cr, 1, 1, 1);
    cairo_paint(pic->p.cr);
    if (svg) fl_buf_printf(&pic->svg, "<rect width=\"%u\" height=\"%u\" fill=\"#ffffff\"/>\n", w, h);
    return FL_OK;
}

static void picture_close(picture *pic)
{
    if (pic->p.cr) cairo_destroy(pic->p.cr);
    if (pic->surf) cairo_surface_destroy(pic->surf);
    fl_buf_free(&pic->svg);
    memset(pic, 0, sizeof *pic);
}

/* The surface as RGB bytes into a PNG. */
static fl_status picture_png(picture *pic, const char *path)
{
    cairo_surface_flush(pic->surf);
    if (cairo_status(pic->p.cr) != CAIRO_STATUS_SUCCESS) {
        fl_err("cannot draw %s: cairo: %s", path, cairo_status_to_string(cairo_status(pic->p.cr)));
        return FL_ERR_INTERNAL;
    }
    const unsigned char *d = cairo_image_surface_get_data(pic->surf);
    int stride = cairo_image_surface_get_stride(pic->surf);
    uint8_t *rgb = malloc((size_t)pic->w * pic->h * 3);
    if (!rgb) {
        fl_err("cannot write %s: out of memory", path);
        return FL_ERR_NOMEM;
    }
    for (uint32_t y = 0; y < pic->h; y++) {
        const uint32_t *row = (const uint32_t *)(const void *)(d + (size_t)y * stride);
        for (uint32_t x = 0; x < pic->w; x++) {
            uint8_t *o = rgb + ((size_t)y * pic->w + x) * 3;
            o[0] = (uint8_t)(row[x] >> 16);
            o[1] = (uint8_t)(row[x] >> 8);
            o[2] = (uint8_t)row[x];
        }
    }
    fl_status st = fl_png_write(path, rgb, pic->w, pic->h);
    free(rgb);
    return st;
}

static fl_status picture_svg(picture *pic, const char *path)
{
    fl_buf_printf(&pic->svg, "</svg>\n");
    if (pic->svg.failed) {
        fl_err("cannot write %s: out of memory", path);
        return FL_ERR_NOMEM;
    }
    return fl_write_atomic(path, pic->svg.data, pic->svg.len);
}

/* ---- line charts -------------------------------------------------------- */

static void range_of(const fl_line_chart *c, double r[4])
{
    r[0] = r[2] = INFINITY;
    r[1] = r[3] = -INFINITY;
    for (size_t s = 0; s < c->n_series; s++)
        for (size_t i = 0; i < c->series[s].n; i++) {
            double x = c->series[s].x[i], y = c->series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            r[0] = fmin(r[0], x), r[1] = fmax(r[1], x);
            r[2] = fmin(r[2], y), r[3] = fmax(r[3], y);
        }
    if (!(r[1] >= r[0])) r[0] = 0, r[1] = 1;
    if (!(r[3] >= r[2])) r[2] = 0, r[3] = 1;
    double pad = 0.05 * (r[3] - r[2]);
    r[2] -= pad, r[3] += pad;
    if (isfinite(c->x_min)) r[0] = c->x_min;
    if (isfinite(c->x_max)) r[1] = c->x_max;
    if (isfinite(c->y_min)) r[2] = c->y_min;
    if (isfinite(c->y_max)) r[3] = c->y_max;
    for (int a = 0; a < 2; a++)
        if (!(r[2 * a + 1] > r[2 * a])) r[2 * a] -= 0.5, r[2 * a + 1] = r[2 * a] + 1;
}

static void polyline(pen *p, const frame *f, const fl_series *s)
{
    double width = s->width > 0 ? s->width : 1.6, alpha = s->alpha > 0 ? s->alpha : 1;
    /* far-off points are clamped so the path stays finite for cairo */
    const double lim = 1e5;
    size_t i = 0;
    while (i < s->n) {
        while (i < s->n && !(isfinite(s->x[i]) && isfinite(s->y[i]))) i++;
        size_t j = i;
        while (j < s->n && isfinite(s->x[j]) && isfinite(s->y[j])) j++;
        if (j == i) break;
        if (p->svg)
            fl_buf_printf(p->svg, "<polyline fill=\"none\" stroke=\"#%02x%02x%02x\" "
                                  "stroke-width=\"%g\"%s points=\"",
                          s->colour.r, s->colour.g, s->colour.b, width,
                          alpha < 1 ? " stroke-opacity=\"0.7\"" : "");
        for (size_t k = i; k < j; k++) {
            double px = fmax(-lim, fmin(lim, fx(f, s->x[k])));
            double py = fmax(-lim, fmin(lim, fy(f, s->y[k])));
            if (k == i) cairo_move_to(p->cr, px, py);
            else cairo_line_to(p->cr, px, py);
            if (p->svg) fl_buf_printf(p->svg, "%s%.2f,%.2f", k == i ? "" : " ", px, py);
        }
        if (j - i == 1) { /* a lone point: a dot */
            double px = fmax(-lim, fmin(lim, fx(f, s->x[i]))), py = fmax(-lim, fmin(lim, fy(f, s->y[i])));
            cairo_new_path(p->cr);
            cairo_arc(p->cr, px, py, width * 1.2, 0, 2 * FL_CHART_PI);
            set_source(p, s->colour, alpha);
            cairo_fill(p->cr);
        } else {
            set_source(p, s->colour, alpha);
            cairo_set_line_width(p->cr, width);
            cairo_set_line_join(p->cr, CAIRO_LINE_JOIN_ROUND);
            cairo_stroke(p->cr);
        }
        if (p->svg) fl_buf_printf(p->svg, "\"/>\n");
        for (size_t k = i; s->markers && k < j; k++) {
            double px = fmax(-lim, fmin(lim, fx(f, s->x[k]))), py = fmax(-lim, fmin(lim, fy(f, s->y[k])));
            cairo_new_path(p->cr);
            cairo_arc(p->cr, px, py, width + 2, 0, 2 * FL_CHART_PI);
            set_source(p, s->colour, alpha);
            cairo_fill(p->cr);
            if (p->svg)
                fl_buf_printf(p->svg, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%g\" fill=\"#%02x%02x%02x\"/>\n",
                              px, py, width + 2, s->colour.r, s->colour.g, s->colour.b);
        }
        i = j;
    }
}

/* The legend in the plot corner whose box covers the fewest data points
 * (top right, top left, bottom right, bottom left on ties). */
static void legend(pen *p, const frame *f, const fl_line_chart *c)
{
    size_t n = 0;
    double tw = 0;
    for (size_t s = 0; s < c->n_series; s++)
        if (c->series[s].label) n++, tw = fmax(tw, text_width(p, c->series[s].label, TICK_SIZE, 0));
    if (!n) return;
    const double row = 16, bw = 34 + tw, bh = 8 + row * (double)n;
    double best_x = f->x1 - bw - 6, best_y = f->y0 + 6;
    size_t best = (size_t)-1;
    for (int corner = 0; corner < 4; corner++) {
        double bx = corner % 2 ? f->x0 + 6 : f->x1 - bw - 6;
        double by = corner < 2 ? f->y0 + 6 : f->y1 - bh - 6;
        size_t hidden = 0;
        for (size_t s = 0; s < c->n_series; s++)
            for (size_t i = 0; i < c->series[s].n; i++) {
                double px = fx(f, c->series[s].x[i]), py = fy(f, c->series[s].y[i]);
                hidden += px >= bx && px <= bx + bw && py >= by && py <= by + bh;
            }
        if (hidden < best) best = hidden, best_x = bx, best_y = by;
    }
    if (p->svg) fl_buf_printf(p->svg, "<g class=\"legend\">\n");
    const fl_rgb edge = { 190, 190, 190 };
    rect(p, best_x, best_y, bw, bh, &white, 0.88, &edge);
    size_t k = 0;
    for (size_t s = 0; s < c->n_series; s++) {
        if (!c->series[s].label) continue;
        double y = best_y + 4 + row * ((double)k + 0.5);
        if (p->svg) fl_buf_printf(p->svg, "<g class=\"legend-entry\">\n");
        segment(p, best_x + 6, y, best_x + 26, y, c->series[s].colour, 2.5);
        text(p, best_x + 30, y + 4, c->series[s].label, TICK_SIZE, START, 0, 0);
        if (p->svg) fl_buf_printf(p->svg, "</g>\n");
        k++;
    }
    if (p->svg) fl_buf_printf(p->svg, "</g>\n");
}

fl_status fl_chart_lines(const fl_line_chart *c, const char *png_path, const char *svg_path,
                         double range[4])
{
    const char *name = png_path ? png_path : svg_path;
    if (!name) {
        fl_err("fl_chart_lines: no output file");
        return FL_ERR_INVALID;
    }
    picture pic;
    fl_status st = picture_open(&pic, c->w, c->h, svg_path != NULL, name);
    if (st != FL_OK) {
        picture_close(&pic);
        return st;
    }
    pen *p = &pic.p;
    double r[4];
    range_of(c, r);
    frame f = { 0, 0, 0, 0, r[0], r[1], r[2], r[3] };
    f.x0 = (c->ylabel ? 28 : 8) + y_labels_width(p, &f) + 10;
    f.x1 = c->w - 18.0;
    f.y0 = c->title ? 34 : 12;
    f.y1 = c->h - (c->xlabel ? 48.0 : 28.0);
    if (p->svg)
        fl_buf_printf(p->svg, "<clipPath id=\"plot\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                              "height=\"%.1f\"/></clipPath>\n",
                      f.x0, f.y0, f.x1 - f.x0, f.y1 - f.y0);
    if (c->title) text(p, c->w / 2.0, 22, c->title, TITLE_SIZE, MIDDLE, 0, 1);
    axes(p, &f, 1, c->xlabel, c->ylabel);
    clip_begin(p, &f);
    for (size_t s = 0; s < c->n_series; s++) polyline(p, &f, &c->series[s]);
    clip_end(p);
    legend(p, &f, c);
    if (png_path) st = picture_png(&pic, png_path);
    if (st == FL_OK && svg_path) st = picture_svg(&pic, svg_path);
    picture_close(&pic);
    if (range) memcpy(range, r, sizeof r);
    return st;
}

/* ---- maps: heatmaps with a colour bar, scatter plots ---------------------- */

/* An RGB24 surface of gw x gh cells, row 0 of v at the bottom. */
static cairo_surface_t *heat_surface(const double *v, uint32_t gw, uint32_t gh, double vmin,
                                     double vmax)
{
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)gw, (int)gh);
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) return s;
    cairo_surface_flush(s);
    unsigned char *d = cairo_image_surface_get_data(s);
    int stride = cairo_image_surface_get_stride(s);
    double span = vmax > vmin ? vmax - vmin : 1;
    for (uint32_t row = 0; row < gh; row++) {
        uint32_t *o = (uint32_t *)(void *)(d + (size_t)row * stride);
        const double *src = v + (size_t)(gh - 1 - row) * gw;
        for (uint32_t i = 0; i < gw; i++) {
            fl_rgb c = fl_colormap(isfinite(src[i]) ? (src[i] - vmin) / span : 0);
            o[i] = (uint32_t)c.r << 16 | (uint32_t)c.g << 8 | c.b;
        }
    }
    cairo_surface_mark_dirty(s);
    return s;
}

/* Paints `img` (sw x sh pixels) over the rectangle, without smoothing:
 * each grid cell stays one flat colour. */
static void paint_scaled(pen *p, cairo_surface_t *img, double sw, double sh, double x, double y,
                         double w, double h)
{
    cairo_save(p->cr);
    cairo_translate(p->cr, x, y);
    cairo_scale(p->cr, w / sw, h / sh);
    cairo_set_source_surface(p->cr, img, 0, 0);
    cairo_pattern_set_filter(cairo_get_source(p->cr), CAIRO_FILTER_NEAREST);
    cairo_rectangle(p->cr, 0, 0, sw, sh);
    cairo_fill(p->cr);
    cairo_restore(p->cr);
}

static fl_status colour_bar(pen *p, double x, double y0, double y1, double vmin, double vmax,
                            const char *zlabel)
{
    double ramp[256];
    for (int i = 0; i < 256; i++) ramp[i] = i / 255.0;
    cairo_surface_t *bar = heat_surface(ramp, 1, 256, 0, 1);
    if (cairo_surface_status(bar) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(bar);
        return FL_ERR_NOMEM;
    }
    paint_scaled(p, bar, 1, 256, x, y0, 14, y1 - y0);
    cairo_surface_destroy(bar);
    rect(p, x, y0, 14, y1 - y0, NULL, 1, &frame_grey);
    if (!(vmax > vmin)) vmax = vmin + 1;
    frame f = { x, y0, x + 14, y1, 0, 1, vmin, vmax };
    int n;
    double first, step = ticks(vmin, vmax, 5, &n, &first);
    char b[64];
    for (int k = 0; k < n; k++) {
        double yy = fy(&f, first + k * step);
        segment(p, x + 14, yy, x + 18, yy, frame_grey, 1);
        tick_label(b, sizeof b, first + k * step, step);
        text(p, x + 21, yy + 4, b, TICK_SIZE, START, 0, 0);
    }
    if (zlabel) text(p, FL_MAP_W - 8, (y0 + y1) / 2, zlabel, LABEL_SIZE, MIDDLE, 1, 0);
    return FL_OK;
}

fl_status fl_chart_map(const fl_map_chart *c, const char *png_path)
{
    picture pic;
    fl_status st = picture_open(&pic, FL_MAP_W, FL_MAP_H, 0, png_path);
    pen *p = &pic.p;
    frame f = { FL_MAP_X0, FL_MAP_Y0, FL_MAP_X0 + FL_MAP_SIDE, FL_MAP_Y0 + FL_MAP_SIDE,
                c->box[0], c->box[1], c->box[2], c->box[3] };
    if (!(f.xmax > f.xmin)) f.xmin -= 0.5, f.xmax = f.xmin + 1;
    if (!(f.ymax > f.ymin)) f.ymin -= 0.5, f.ymax = f.ymin + 1;
    if (st == FL_OK && c->title) text(p, FL_MAP_W / 2.0, 22, c->title, TITLE_SIZE, MIDDLE, 0, 1);
    if (st == FL_OK && c->v) {
        cairo_surface_t *heat = heat_surface(c->v, c->gw, c->gh, c->vmin, c->vmax);
        if (cairo_surface_status(heat) != CAIRO_STATUS_SUCCESS) {
            fl_err("cannot draw %s: out of memory", png_path);
            st = FL_ERR_NOMEM;
        } else {
            paint_scaled(p, heat, c->gw, c->gh, f.x0, f.y0, FL_MAP_SIDE, FL_MAP_SIDE);
            st = colour_bar(p, f.x1 + 16, f.y0, f.y1, c->vmin, c->vmax, c->zlabel);
        }
        cairo_surface_destroy(heat);
    } else if (st == FL_OK) {
        clip_begin(p, &f);
        set_source(p, c->colour, c->alpha > 0 ? c->alpha : 1);
        for (size_t i = 0; i < c->n_pts; i++) {
            double x = c->pts[2 * i], y = c->pts[2 * i + 1];
            if (!(x >= f.xmin && x <= f.xmax && y >= f.ymin && y <= f.ymax)) continue;
            cairo_new_sub_path(p->cr);
            cairo_arc(p->cr, fx(&f, x), fy(&f, y), 1.4, 0, 2 * FL_CHART_PI);
            cairo_fill(p->cr);
        }
        clip_end(p);
    }
    if (st == FL_OK) {
        axes(p, &f, 0, c->xlabel, c->ylabel);
        st = picture_png(&pic, png_path);
    }
    picture_close(&pic);
    return st;
}

/* ---- captioned image rasters ---------------------------------------------- */

fl_status fl_chart_image(const char *png_path, const uint8_t *px, uint32_t w, uint32_t h,
                         int channels, const char *title, const char *const *labels,
                         const uint32_t *label_y, size_t n_labels, uint32_t *x_off,
                         uint32_t *y_off)
{
    if (!px || (channels != 1 && channels != 3) || w == 0 || h == 0 || w > 7000 || h > 7000) {
        fl_err("cannot write %s: bad raster (%ux%u, %d channels)", png_path, w, h, channels);
        return FL_ERR_INVALID;
    }
    /* measure the strips on a scratch surface */
    cairo_surface_t *scratch = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
    pen m = { cairo_create(scratch), NULL };
    double lw = 0, tw = title ? text_width(&m, title, LABEL_SIZE, 1) : 0;
    for (size_t k = 0; k < n_labels; k++) lw = fmax(lw, text_width(&m, labels[k], TICK_SIZE, 0));
    cairo_destroy(m.cr);
    cairo_surface_destroy(scratch);
    uint32_t left = n_labels ? (uint32_t)ceil(lw) + 12 : 0, top = title ? 24 : 0;
    uint32_t W = left + w, H = top + h;
    if (title && W < (uint32_t)ceil(tw) + 16) W = (uint32_t)ceil(tw) + 16;
    if (W < 120) W = 120; /* picture_open's smallest size */
    if (H < 100) H = 100;
    picture pic;
    fl_status st = picture_open(&pic, W, H, 0, png_path);
    cairo_surface_t *img = st == FL_OK
                               ? cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)w, (int)h)
                               : NULL;
    if (st == FL_OK && cairo_surface_status(img) != CAIRO_STATUS_SUCCESS) {
        fl_err("cannot write %s: out of memory", png_path);
        st = FL_ERR_NOMEM;
    }
    if (st == FL_OK) {
        cairo_surface_flush(img);
        unsigned char *d = cairo_image_surface_get_data(img);
        int stride = cairo_image_surface_get_stride(img);
        for (uint32_t y = 0; y < h; y++) {
            uint32_t *o = (uint32_t *)(void *)(d + (size_t)y * stride);
            for (uint32_t x = 0; x < w; x++) {
                const uint8_t *s = px + ((size_t)y * w + x) * (size_t)channels;
                uint8_t r = s[0], g = channels == 3 ? s[1] : s[0], b = channels == 3 ? s[2] : s[0];
                o[x] = (uint32_t)r << 16 | (uint32_t)g << 8 | b;
            }
        }
        cairo_surface_mark_dirty(img);
        cairo_set_source_surface(pic.p.cr, img, left, top);
        cairo_rectangle(pic.p.cr, left, top, w, h);
        cairo_fill(pic.p.cr);
        if (title) text(&pic.p, W / 2.0, 17, title, LABEL_SIZE, MIDDLE, 0, 1);
        for (size_t k = 0; k < n_labels; k++)
            text(&pic.p, left - 6.0, top + label_y[k] + 4.0, labels[k], TICK_SIZE, END, 0, 0);
        st = picture_png(&pic, png_path);
    }
    if (img) cairo_surface_destroy(img);
    picture_close(&pic);
    if (x_off) *x_off = left;
    if (y_off) *y_off = top;
    return st;
}
