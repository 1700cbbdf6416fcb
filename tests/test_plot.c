/* test_plot.c - pictures: the heatmap of a known density must look like it
 * (read back from the PNG), and the pictures of a briefly trained moons
 * model must put the learned density and the samples where the data is. */
#include <png.h>
#include <math.h>

#include "common.h"
#include "core/log.h"
#include "output/chart.h"
#include "output/plot.h"
#include "output/pngfile.h"
#include "tasks/task_density.h"

SUITE(plot);

/* Reads an 8-bit RGB PNG; the caller frees the result. */
static uint8_t *read_png(const char *path, uint32_t *w, uint32_t *h)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&img, path), "cannot read %s: %s", path, img.message);
    img.format = PNG_FORMAT_RGB;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(img));
    cr_assert_not_null(buf);
    cr_assert(png_image_finish_read(&img, NULL, buf, 0, NULL), "cannot decode %s: %s", path,
              img.message);
    *w = img.width;
    *h = img.height;
    return buf;
}

static uint8_t *read_in(const char *dir, const char *file, uint32_t *w, uint32_t *h)
{
    char *p = fl_strfmt("%s/%s", dir, file);
    uint8_t *buf = read_png(p, w, h);
    free(p);
    return buf;
}

static double lum(const uint8_t *p)
{
    return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
}

Test(plot, colormap_is_monotonic_in_luminance)
{
    double prev = -1;
    for (int k = 0; k <= 64; k++) {
        fl_rgb c = fl_colormap(k / 64.0);
        double l = lum((const uint8_t[]){ c.r, c.g, c.b });
        cr_assert_gt(l, prev, "luminance falls at t = %g", k / 64.0);
        prev = l;
    }
    fl_rgb lo = fl_colormap(NAN), z = fl_colormap(0), hi = fl_colormap(2);
    cr_assert(lo.r == z.r && lo.g == z.g && lo.b == z.b);
    cr_assert(hi.r == 253 && hi.g == 231 && hi.b == 37);
}

Test(plot, standard_normal_heatmap_reads_back)
{
    enum { G = 200 };
    static double v[G * G];
    double vmax = 0;
    for (int j = 0; j < G; j++)
        for (int i = 0; i < G; i++) {
            double x = -3 + 6.0 * (i + 0.5) / G, y = -3 + 6.0 * (j + 0.5) / G;
            v[j * G + i] = exp(-0.5 * (x * x + y * y)) / 6.283185307179586;
            vmax = fmax(vmax, v[j * G + i]);
        }
    fl_canvas c;
    cr_assert_eq(fl_canvas_init(&c, G, G, (fl_rgb){ 255, 255, 255 }), FL_OK);
    fl_canvas_window(&c, 0, -3, 3, -3, 3);
    fl_canvas_heatmap(&c, v, G, G, 0, vmax);
    char *dir = make_tmpdir();
    char *path = fl_strfmt("%s/normal.png", dir);
    cr_assert_eq(fl_canvas_save(&c, path), FL_OK, "%s", fl_err_msg());
    fl_canvas_free(&c);

    uint32_t w, h;
    uint8_t *img = read_png(path, &w, &h);
    cr_assert(w == G && h == G, "size %ux%u", w, h);
    uint32_t bx = 0, by = 0;
    double best = -1, q[4][3] = { { 0 } };
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            const uint8_t *p = img + 3 * ((size_t)y * w + x);
            if (lum(p) > best) best = lum(p), bx = x, by = y;
            int k = (x >= w / 2) + 2 * (y >= h / 2);
            for (int ch = 0; ch < 3; ch++) q[k][ch] += p[ch] / (G * G / 4.0);
        }
    cr_assert(fabs(bx - 99.5) <= 2 && fabs(by - 99.5) <= 2, "brightest pixel at (%u, %u)", bx, by);
    for (int k = 1; k < 4; k++)
        for (int ch = 0; ch < 3; ch++)
            cr_assert_float_eq(q[k][ch], q[0][ch], 0.5, "quadrant %d channel %d: %g vs %g", k,
                               ch, q[k][ch], q[0][ch]);
    fl_rgb lo = fl_colormap(0);
    const uint32_t corner[4][2] = { { 0, 0 }, { G - 1, 0 }, { 0, G - 1 }, { G - 1, G - 1 } };
    for (int k = 0; k < 4; k++) {
        const uint8_t *p = img + 3 * ((size_t)corner[k][1] * w + corner[k][0]);
        cr_assert(abs(p[0] - lo.r) <= 1 && abs(p[1] - lo.g) <= 1 && abs(p[2] - lo.b) <= 1,
                  "corner %d is (%d, %d, %d)", k, p[0], p[1], p[2]);
    }
    /* The peak is the top of the map. */
    fl_rgb hi = fl_colormap(1);
    const uint8_t *p = img + 3 * ((size_t)by * w + bx);
    cr_assert(abs(p[0] - hi.r) <= 2 && abs(p[1] - hi.g) <= 2 && abs(p[2] - hi.b) <= 2);
    free(img);
    free(path);
    remove_tree(dir);
}

Test(plot, png_write_error_names_the_file)
{
    fl_runtime_init();
    const uint8_t px[3] = { 1, 2, 3 };
    fl_err_clear();
    cr_assert_eq(fl_png_write("/nonexistent-flowlab-dir/x.png", px, 1, 1), FL_ERR_IO);
    assert_contains(fl_err_msg(), "/nonexistent-flowlab-dir/x.png");
    cr_assert_eq(fl_png_write("/tmp/never.png", px, 0, 1), FL_ERR_INVALID);
    cr_assert_eq(fl_png_write_as("/tmp/never.png", px, 1, 1, (fl_png_format)2), FL_ERR_INVALID);
    assert_contains(fl_err_msg(), "/tmp/never.png");
    cr_assert_eq(access("/tmp/never.png", F_OK), -1);
}

Test(plot, png_write_as_grey_reads_back)
{
    char *dir = make_tmpdir();
    char *path = fl_strfmt("%s/grey.png", dir);
    const uint8_t px[6] = { 0, 51, 102, 153, 204, 255 };
    cr_assert_eq(fl_png_write_as(path, px, 3, 2, FL_PNG_GREY), FL_OK, "%s", fl_err_msg());
    uint32_t w, h;
    uint8_t *rgb = read_png(path, &w, &h);
    cr_assert(w == 3 && h == 2);
    for (int i = 0; i < 6; i++)
        cr_assert(rgb[3 * i] == px[i] && rgb[3 * i + 1] == px[i] && rgb[3 * i + 2] == px[i],
                  "pixel %d is (%d, %d, %d), expected grey %d", i, rgb[3 * i], rgb[3 * i + 1],
                  rgb[3 * i + 2], px[i]);
    free(rgb);
    free(path);
    remove_tree(dir);
}

static size_t count_colour(const uint8_t *img, size_t n, const uint8_t rgb[3])
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += !memcmp(img + 3 * i, rgb, 3);
    return k;
}

/* Occurrences of `needle` in `hay`. */
__attribute__((noinline)) static size_t count_str(const char *hay, const char *needle)
{
    size_t k = 0, at = 0;
    for (const char *p; (p = strstr(hay + at, needle)); at = (size_t)(p - hay) + 1) k++;
    return k;
}

static char *slurp(const char *path)
{
    char *t = NULL;
    size_t n;
    cr_assert_eq(fl_read_file(path, &t, &n), FL_OK, "cannot read %s", path);
    return t;
}

Test(plot, line_chart_png_and_svg_have_axes_legend_and_are_deterministic)
{
    fl_runtime_init();
    char *dir = make_tmpdir();
    double x[5] = { 0, 100, 200, 300, 400 }, y1[5] = { 3, 2, 1.5, NAN, 1.2 },
           y2[5] = { 3.2, 2.5, 2, 1.9, 1.85 }, y3[5] = { 2.9, 2.1, 1.4, 1.3, 1.25 };
    const fl_series ser[] = {
        { .label = "alpha & <beta>", .x = x, .y = y1, .n = 5, .colour = FL_CURVE_BLUE },
        { .label = "gamma", .x = x, .y = y2, .n = 5, .colour = FL_CURVE_ORANGE },
        { .label = "delta", .x = x, .y = y3, .n = 5, .colour = FL_CURVE_GREEN, .markers = 1 },
        { .x = x, .y = y3, .n = 5, .colour = FL_CURVE_GREY }, /* no label: no legend entry */
    };
    fl_line_chart c = { .title = "Three runs", .xlabel = "training step", .ylabel = "loss (nats)",
                        .series = ser, .n_series = 4, .w = 500, .h = 300,
                        .x_min = NAN, .x_max = NAN, .y_min = NAN, .y_max = NAN };
    char *png = fl_strfmt("%s/c.png", dir), *svg = fl_strfmt("%s/c.svg", dir);
    char *png2 = fl_strfmt("%s/c2.png", dir);
    double r[4];
    cr_assert_eq(fl_chart_lines(&c, png, svg, r), FL_OK, "%s", fl_err_msg());
    cr_assert(r[0] == 0 && r[1] == 400, "x range %g..%g", r[0], r[1]);
    cr_assert_float_eq(r[2], 1.2 - 0.1, 1e-12); /* 5% of 2 below and above */
    cr_assert_float_eq(r[3], 3.2 + 0.1, 1e-12);
    uint32_t w, h;
    uint8_t *img = read_png(png, &w, &h);
    cr_assert(w == 500 && h == 300, "%ux%u", w, h);
    const uint8_t blue[3] = FL_CURVE_BLUE;
    cr_assert_gt(count_colour(img, (size_t)w * h, blue), 20, "the first line is drawn");
    char *t = slurp(svg);
    assert_contains(t, "<?xml version=\"1.0\"");
    assert_contains(t, "width=\"500\" height=\"300\"");
    assert_contains(t, ">Three runs</text>");
    assert_contains(t, ">training step</text>");
    assert_contains(t, ">loss (nats)</text>");
    assert_contains(t, ">alpha &amp; &lt;beta&gt;</text>");
    assert_contains(t, ">400</text>"); /* a tick label */
    assert_contains(t, "<circle "); /* markers */
    cr_assert_eq(count_str(t, "class=\"legend-entry\""), 3);
    cr_assert(strlen(t) > 100 && !strcmp(t + strlen(t) - 7, "</svg>\n"), "the SVG is closed");
    /* the same drawing gives the same bytes */
    cr_assert_eq(fl_chart_lines(&c, png2, NULL, NULL), FL_OK, "%s", fl_err_msg());
    char *a = NULL, *b = NULL;
    size_t na, nb;
    cr_assert_eq(fl_read_file(png, &a, &na), FL_OK);
    cr_assert_eq(fl_read_file(png2, &b, &nb), FL_OK);
    cr_assert(na == nb && !memcmp(a, b, na), "two drawings of one chart differ");
    /* errors */
    c.w = 50;
    cr_assert_eq(fl_chart_lines(&c, png, NULL, NULL), FL_ERR_INVALID);
    c.w = 500;
    cr_assert_eq(fl_chart_lines(&c, NULL, NULL, NULL), FL_ERR_INVALID);
    cr_assert_eq(fl_chart_lines(&c, "/nonexistent/flowlab/c.png", NULL, NULL), FL_ERR_IO);
    free(a);
    free(b);
    free(t);
    free(img);
    free(png);
    free(png2);
    free(svg);
    remove_tree(dir);
}

Test(plot, map_chart_puts_the_heatmap_in_the_plot_square_with_a_colour_bar)
{
    fl_runtime_init();
    char *dir = make_tmpdir();
    /* left half 0, right half 1 */
    double v[4 * 4];
    for (int k = 0; k < 16; k++) v[k] = k % 4 >= 2;
    fl_map_chart m = { .title = "halves", .xlabel = "x1", .ylabel = "x2", .zlabel = "density",
                       .box = { -1, 1, -1, 1 }, .v = v, .gw = 4, .gh = 4, .vmin = 0, .vmax = 1 };
    char *png = fl_strfmt("%s/m.png", dir);
    cr_assert_eq(fl_chart_map(&m, png), FL_OK, "%s", fl_err_msg());
    uint32_t w, h;
    uint8_t *img = read_png(png, &w, &h);
    cr_assert(w == FL_MAP_W && h == FL_MAP_H);
    const uint8_t *left = img + 3 * ((size_t)(FL_MAP_Y0 + 150) * w + FL_MAP_X0 + 50);
    const uint8_t *right = img + 3 * ((size_t)(FL_MAP_Y0 + 150) * w + FL_MAP_X0 + 250);
    fl_rgb lo = fl_colormap(0), hi = fl_colormap(1);
    cr_assert(left[0] == lo.r && left[1] == lo.g && left[2] == lo.b, "left half");
    cr_assert(right[0] == hi.r && right[1] == hi.g && right[2] == hi.b, "right half");
    /* the colour bar, right of the square: yellow at its top, dark below */
    const uint8_t *top = img + 3 * ((size_t)(FL_MAP_Y0 + 2) * w + FL_MAP_X0 + FL_MAP_SIDE + 22);
    const uint8_t *bot = img + 3 * ((size_t)(FL_MAP_Y0 + FL_MAP_SIDE - 2) * w + FL_MAP_X0 + FL_MAP_SIDE + 22);
    cr_assert_gt(lum(top), 180);
    cr_assert_lt(lum(bot), 80);
    /* a scatter plot: the points' pixels are in the square only */
    const fl_real pts[4] = { 0, 0, 5, 5 }; /* the second lies outside the box */
    fl_map_chart sc = { .box = { -1, 1, -1, 1 }, .pts = pts, .n_pts = 2,
                        .colour = { 200, 0, 0 }, .alpha = 1 };
    cr_assert_eq(fl_chart_map(&sc, png), FL_OK, "%s", fl_err_msg());
    free(img);
    img = read_png(png, &w, &h);
    size_t red = 0;
    for (size_t i = 0; i < (size_t)w * h; i++) red += img[3 * i] > 150 && img[3 * i + 1] < 80;
    const uint8_t *mid = img + 3 * ((size_t)(FL_MAP_Y0 + 150) * w + FL_MAP_X0 + 150);
    cr_assert(mid[0] > 150 && mid[1] < 80, "the point at the centre is drawn there");
    cr_assert_lt(red, 30, "only one dot is drawn (%zu red pixels)", red);
    free(img);
    free(png);
    remove_tree(dir);
}

Test(plot, captioned_image_keeps_the_raster_pixel_for_pixel)
{
    fl_runtime_init();
    char *dir = make_tmpdir();
    uint8_t px[6 * 4];
    for (int k = 0; k < 24; k++) px[k] = (uint8_t)(k * 10);
    const char *labels[2] = { "T = 0.5", "T = 1" };
    const uint32_t ys[2] = { 1, 3 };
    char *png = fl_strfmt("%s/i.png", dir);
    uint32_t x0 = 0, y0 = 0;
    cr_assert_eq(fl_chart_image(png, px, 6, 4, 1, "a title", labels, ys, 2, &x0, &y0), FL_OK,
                 "%s", fl_err_msg());
    cr_assert_gt(x0, 20, "room for the labels");
    cr_assert_gt(y0, 10, "room for the title");
    uint32_t w, h;
    uint8_t *img = read_png(png, &w, &h);
    cr_assert_geq(w, x0 + 6);
    cr_assert_geq(h, y0 + 4);
    for (uint32_t y = 0; y < 4; y++)
        for (uint32_t x = 0; x < 6; x++) {
            const uint8_t *p = img + 3 * ((size_t)(y + y0) * w + x + x0);
            cr_assert(p[0] == px[y * 6 + x] && p[1] == p[0] && p[2] == p[0], "pixel %u,%u", x, y);
        }
    cr_assert_eq(fl_chart_image(png, px, 6, 4, 2, NULL, NULL, NULL, 0, NULL, NULL), FL_ERR_INVALID);
    free(img);
    free(png);
    remove_tree(dir);
}

Test(plot, curves_of_several_columns)
{
    fl_runtime_init();
    char *dir = make_tmpdir();
    char *csv = fl_strfmt("%s/metrics.csv", dir);
    /* CRLF lines; a row whose step is not a number is skipped (its values
     * would set the y range); the last column's values set the top. */
    const char text[] = "step,train_bound,valid_elbo,valid_iwae\r\n"
                        "0,-10,-12,-11\r\n"
                        "eval,1000,1000,1000\r\n"
                        "10,-8,-9,-8.5\r\n"
                        "20,-6,-7,-5\r\n";
    cr_assert_eq(fl_write_atomic(csv, text, sizeof text - 1), FL_OK);
    const fl_curve cv[] = {
        { "train_bound", FL_CURVE_BLUE, 0, "blue" },
        { "valid_elbo", FL_CURVE_ORANGE, 0, "orange" },
        { "valid_iwae", FL_CURVE_GREEN, 0, "green" },
        { "logz_ref", FL_CURVE_GREY, 1, NULL },
    };
    cr_assert_eq(fl_plot_curves(dir, cv, 4, "bound"), FL_OK, "%s", fl_err_msg());
    char *axes = fl_strfmt("%s/curves_axes.csv", dir), *got = NULL;
    size_t n;
    cr_assert_eq(fl_read_file(axes, &got, &n), FL_OK);
    cr_assert_str_eq(got, "step_min,step_max,bound_min,bound_max,blue,orange,green\n"
                          "0,20,-12.35,-4.65,train_bound,valid_elbo,valid_iwae\n");
    uint32_t w, h;
    uint8_t *img = read_in(dir, "curves.png", &w, &h);
    cr_assert(w == 640 && h == 400);
    const uint8_t blue[3] = FL_CURVE_BLUE, orange[3] = FL_CURVE_ORANGE,
                  green[3] = FL_CURVE_GREEN;
    cr_assert_gt(count_colour(img, (size_t)w * h, blue), 100);
    cr_assert_gt(count_colour(img, (size_t)w * h, orange), 100);
    cr_assert_gt(count_colour(img, (size_t)w * h, green), 100);
    /* the SVG beside it: the axis labels, the title and one legend entry
     * per drawn column, none for the missing optional one */
    char *svgp = fl_strfmt("%s/curves.svg", dir), *svg = NULL;
    cr_assert_eq(fl_read_file(svgp, &svg, &n), FL_OK);
    assert_contains(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"400\"");
    assert_contains(svg, ">training step</text>");
    assert_contains(svg, ">bound (nats per image)</text>");
    assert_contains(svg, ">Training curves: ");
    assert_contains(svg, ">valid_iwae</text>");
    cr_assert_eq(count_str(svg, "class=\"legend-entry\""), 3);
    cr_assert_null(strstr(svg, "logz_ref"), "the missing optional curve is in the legend");
    free(svg);
    free(svgp);

    /* A required column missing is an error naming it. */
    const fl_curve need[] = { { "train_bound", FL_CURVE_BLUE, 0, NULL },
                              { "test_nll", FL_CURVE_ORANGE, 0, NULL } };
    cr_assert_eq(fl_plot_curves(dir, need, 2, "nll"), FL_ERR_FORMAT);
    assert_contains(fl_err_msg(), "'test_nll'");
    cr_assert_eq(fl_plot_curves(dir, need, 0, "nll"), FL_ERR_INVALID);
    free(img);
    free(got);
    free(axes);
    free(csv);
    remove_tree(dir);
}

static const char moons_ini[] =
    "[experiment]\nname = plot\ntask = density\nseed = 2\n"
    "[data]\ntype = moons\nnoise = 0.05\ntest_size = 2000\n"
    "[flow.1]\ntype = affine-coupling\nrepeat = 8\nhidden = 64,64\nactivation = relu\n"
    "mask = alternate\nscale_bound = 1\n"
    "[train]\nsteps = 200\nbatch = 256\nlr = 1e-3\neval_every = 100\n";

Test(plot, trained_moons_pictures_match_the_data, .timeout = 120)
{
    fl_runtime_init();
    fl_log_set_level(FL_LOG_WARN);
    fl_registry *r = load_builtin_plugins();
    fl_experiment *e = NULL;
    cr_assert_eq(experiment_from_text(r, "plot.ini", moons_ini, NULL, &e), FL_OK, "%s",
                 fl_err_msg());
    char *dir = make_tmpdir();
    /* No metrics.csv yet: refused, naming the file. */
    cr_assert_eq(fl_plot_density(e, dir), FL_ERR_IO);
    assert_contains(fl_err_msg(), "metrics.csv");

    fl_density_result res;
    cr_assert_eq(fl_density_train(e, dir, 0, &res), FL_OK, "%s", fl_err_msg());
    cr_assert_eq(fl_plot_density(e, dir), FL_OK, "%s", fl_err_msg());

    uint32_t w, h, w2, h2;
    uint8_t *dens = read_in(dir, "density.png", &w, &h);
    uint8_t *data = read_in(dir, "data.png", &w2, &h2);
    cr_assert(w == FL_MAP_W && h == FL_MAP_H && w2 == FL_MAP_W && h2 == FL_MAP_H);
    /* Pearson correlation of the two heatmaps' luminance, inside the plot
     * square (the axes and titles around it differ). */
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0, N = 0;
    for (uint32_t y = FL_MAP_Y0 + 1; y < FL_MAP_Y0 + FL_MAP_SIDE - 1; y++)
        for (uint32_t x = FL_MAP_X0 + 1; x < FL_MAP_X0 + FL_MAP_SIDE - 1; x++) {
            size_t i = (size_t)y * w + x;
            double a = lum(dens + 3 * i), b = lum(data + 3 * i);
            sa += a, sb += b, saa += a * a, sbb += b * b, sab += a * b, N++;
        }
    double cov = sab / N - sa / N * sb / N;
    double corr = cov / sqrt((saa / N - sa / N * sa / N) * (sbb / N - sb / N * sb / N));
    cr_assert_gt(corr, 0.3, "correlation of learned and data density %g", corr);

    /* Samples: the box is the data's padded by 10% each side, so the data
     * spans the plot square's pixels SIDE * [0.1, 1.1] / 1.2 (+- 2 for the
     * dots' radius); only the square's inside is counted. */
    uint8_t *smp = read_in(dir, "samples.png", &w2, &h2);
    cr_assert(w2 == FL_MAP_W && h2 == FL_MAP_H);
    size_t inside = 0, outside = 0;
    const uint32_t lo = FL_MAP_SIDE / 12 - 2, hi = FL_MAP_SIDE * 11 / 12 + 2;
    for (uint32_t y = 2; y < FL_MAP_SIDE - 2; y++)
        for (uint32_t x = 2; x < FL_MAP_SIDE - 2; x++) {
            const uint8_t *p = smp + 3 * ((size_t)(y + FL_MAP_Y0) * w2 + x + FL_MAP_X0);
            if (p[0] == 255 && p[1] == 255 && p[2] == 255) continue;
            int in = x >= lo && x <= hi && y >= lo && y <= hi;
            inside += in;
            outside += !in;
        }
    cr_assert_gt(inside, 1000, "%zu sample pixels inside the data's box", inside);
    cr_assert_lt(outside, inside / 10, "%zu sample pixels outside, %zu inside", outside, inside);

    uint8_t *cur = read_in(dir, "curves.png", &w2, &h2);
    cr_assert(w2 == 640 && h2 == 400);
    char *grid = fl_strfmt("%s/plot_grid.csv", dir), *text = NULL;
    size_t n;
    cr_assert_eq(fl_read_file(grid, &text, &n), FL_OK);
    assert_contains(text, "x_min,x_max,y_min,y_max");
    free(text);
    free(grid);
    free(cur);
    free(smp);
    free(dens);
    free(data);
    remove_tree(dir);
    fl_experiment_free(e);
    fl_registry_free(r);
}
