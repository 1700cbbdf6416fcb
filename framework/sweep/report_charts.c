/* report_charts.c - report.html's charts: per group, the metric's curve
 * from each member cell's metrics.csv (one colour per cell) as a PNG, kept
 * in report_curves/ and inlined as a base64 data URI. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "output/metrics.h"
#include "output/plot.h"
#include "sweep/report_impl.h"

static const fl_rgb palette[10] = {
    { 31, 119, 180 }, { 255, 127, 14 }, { 44, 160, 44 }, { 214, 39, 40 }, { 148, 103, 189 },
    { 140, 86, 75 },  { 227, 119, 194 }, { 127, 127, 127 }, { 188, 189, 34 }, { 23, 190, 207 },
};

/* Column `name` of a metrics.csv against its `step` column. `want` is tried
 * first, then test_nll, then the first column after step; *col gets the
 * chosen name (owned). Returns 0 when the file has no usable rows. */
static int read_curve(const char *path, const char *want, double **xs, double **ys, size_t *n,
                      char **col)
{
    *xs = *ys = NULL;
    *n = 0;
    *col = NULL;
    fl_metrics_table t;
    if (fl_metrics_read(path, &t) != FL_OK) {
        fl_err_clear();
        return 0;
    }
    long cs = fl_metrics_find(&t, "step"), cy = want ? fl_metrics_find(&t, want) : -1;
    if (cy < 0) cy = fl_metrics_find(&t, "test_nll");
    for (size_t k = 0; cy < 0 && k < t.n_cols; k++)
        if ((long)k != cs) cy = (long)k;
    if (cy >= 0 && t.n_rows) {
        *xs = malloc(t.n_rows * sizeof **xs);
        *ys = malloc(t.n_rows * sizeof **ys);
        *col = fl_strdup(t.names[cy]);
    }
    if (!*xs || !*ys || !*col) {
        free(*xs);
        free(*ys);
        free(*col);
        *xs = *ys = NULL;
        *col = NULL;
        fl_metrics_table_free(&t);
        return 0;
    }
    memcpy(*xs, t.col[cs], t.n_rows * sizeof **xs);
    memcpy(*ys, t.col[cy], t.n_rows * sizeof **ys);
    *n = t.n_rows;
    fl_metrics_table_free(&t);
    return 1;
}

void fl_report_base64(fl_buf *b, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16;
        if (i + 1 < n) v |= (unsigned)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char out[4] = { tab[v >> 18 & 63], tab[v >> 12 & 63],
                        i + 1 < n ? tab[v >> 6 & 63] : '=', i + 2 < n ? tab[v & 63] : '=' };
        fl_buf_write(b, out, 4);
    }
}

/* The chart of group `gi` (rank k) as an <img> plus caption; nothing when
 * no member has a metrics.csv. */
fl_status fl_report_chart(const fl_report *r, size_t gi, size_t k, fl_buf *h)
{
    const fl_sweep *s = r->s;
    const fl_report_group *g = &r->g[gi];
    double *xs[64] = { 0 }, *ys[64] = { 0 };
    size_t ns[64] = { 0 }, who[64];
    char *col = NULL;
    size_t m = 0;
    for (size_t i = 0; i < g->n_cells && m < 64; i++) {
        char *p = fl_strfmt("%s/%s/metrics.csv", r->dir, s->cells[g->cells[i]].name);
        char *c = NULL;
        if (p && read_curve(p, col ? col : fl_report_metric_name(r), &xs[m], &ys[m], &ns[m], &c)) {
            if (!col) col = c;
            else free(c);
            who[m++] = g->cells[i];
        }
        free(p);
    }
    fl_status st = FL_OK;
    if (m) {
        double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
        for (size_t j = 0; j < m; j++)
            for (size_t i = 0; i < ns[j]; i++) {
                x0 = fmin(x0, xs[j][i]);
                x1 = fmax(x1, xs[j][i]);
                if (isfinite(ys[j][i])) y0 = fmin(y0, ys[j][i]), y1 = fmax(y1, ys[j][i]);
            }
        if (!(y1 >= y0)) y0 = 0, y1 = 1;
        double pad = 0.05 * (y1 - y0);
        fl_canvas cv = { 0 };
        st = fl_canvas_init(&cv, 400, 240, (fl_rgb){ 255, 255, 255 });
        char *dir = fl_strfmt("%s/report_curves", r->dir);
        char *png = fl_strfmt("%s/report_curves/row-%zu.png", r->dir, k + 1);
        if (st == FL_OK && (!dir || !png)) st = FL_ERR_NOMEM;
        if (st == FL_OK) st = fl_mkdirs(dir);
        if (st == FL_OK) {
            fl_canvas_window(&cv, 16, x0, x1, y0 - pad, y1 + pad);
            fl_canvas_frame(&cv, (fl_rgb){ 0, 0, 0 }, 5);
            for (size_t j = 0; j < m; j++) fl_canvas_polyline(&cv, xs[j], ys[j], ns[j], palette[j % 10]);
            st = fl_canvas_save(&cv, png);
        }
        unsigned char *bytes = NULL;
        size_t nb = 0;
        if (st == FL_OK) st = fl_read_file(png, (char **)&bytes, &nb);
        if (st == FL_OK) {
            char a[64], b2[64], c[64], d[64];
            fl_report_fmt_num(a, sizeof a, cv.x_min, 5);
            fl_report_fmt_num(b2, sizeof b2, cv.x_max, 5);
            fl_report_fmt_num(c, sizeof c, cv.y_min, 5);
            fl_report_fmt_num(d, sizeof d, cv.y_max, 5);
            fl_buf_printf(h, "<figure><img alt=\"%s curves of row %zu\" src=\"data:image/png;base64,",
                          col, k + 1);
            fl_report_base64(h, bytes, nb);
            fl_buf_printf(h, "\"><figcaption>row %zu: <code>%s</code> against step (x %s to %s, "
                             "y %s to %s)<br>", k + 1, col, a, b2, c, d);
            for (size_t j = 0; j < m; j++) {
                fl_rgb p = palette[j % 10];
                fl_buf_printf(h, "<span class=\"key\" style=\"background:#%02x%02x%02x\"></span>",
                              p.r, p.g, p.b);
                for (size_t a2 = 0, q = 0; a2 < s->n_axes; a2++)
                    if (!r->in_group[a2]) {
                        fl_buf_printf(h, "%s%s=", q++ ? ", " : "", s->axes[a2].key);
                        fl_report_html_text(h, fl_sweep_value(s, who[j], a2));
                    }
                fl_buf_printf(h, " ");
            }
            fl_buf_printf(h, "</figcaption></figure>\n");
        }
        free(bytes);
        free(dir);
        free(png);
        fl_canvas_free(&cv);
    }
    for (size_t j = 0; j < m; j++) {
        free(xs[j]);
        free(ys[j]);
    }
    free(col);
    return st;
}

