/* report_charts.c - report.html's charts: the metric's curve from each
 * cell's metrics.csv, the groups overlaid (one colour and one legend entry
 * per group, its cells sharing them), all charts on the same axes, as PNG
 * and SVG in report_curves/ (the PNG also inlined as a base64 data URI);
 * and the links to each cell's own pictures. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "output/chart.h"
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

void fl_report_group_label(const fl_report *r, size_t gi, fl_buf *b)
{
    const fl_sweep *s = r->s;
    size_t q = 0;
    for (size_t a = 0; a < s->n_axes; a++)
        if (r->in_group[a])
            fl_buf_printf(b, "%s%s=%s", q++ ? ", " : "", s->axes[a].key,
                          fl_sweep_value(s, r->g[gi].first, a));
    if (!q) fl_buf_printf(b, "all cells");
}

/* One cell's curve. */
typedef struct curve {
    double *x, *y;
    size_t n;
    size_t rank; /* its group's rank, from 0 */
    int first;   /* 1: the first curve of its group (carries the legend) */
} curve;

/* A PNG file into `h` as a base64 data URI. */
static fl_status inline_png(const char *png, fl_buf *h)
{
    unsigned char *bytes = NULL;
    size_t nb = 0;
    fl_status st = fl_read_file(png, (char **)&bytes, &nb);
    if (st == FL_OK) fl_report_base64(h, bytes, nb);
    free(bytes);
    return st;
}

fl_status fl_report_charts(const fl_report *r, fl_buf *h)
{
    const fl_sweep *s = r->s;
    curve *cv = calloc(s->n_cells + 1, sizeof *cv);
    size_t *per = calloc(r->n_groups + 1, sizeof *per); /* curves per group */
    if (!cv || !per) {
        free(cv);
        free(per);
        return FL_ERR_NOMEM;
    }
    char *col = NULL;
    size_t m = 0;
    for (size_t k = 0; k < r->n_groups; k++) {
        const fl_report_group *g = &r->g[r->order[k]];
        for (size_t i = 0; i < g->n_cells; i++) {
            char *p = fl_strfmt("%s/%s/metrics.csv", r->dir, s->cells[g->cells[i]].name);
            char *c = NULL;
            if (p && read_curve(p, col ? col : fl_report_metric_name(r), &cv[m].x, &cv[m].y,
                                &cv[m].n, &c)) {
                if (!col) col = c;
                else free(c);
                cv[m].rank = k;
                cv[m].first = per[k]++ == 0;
                m++;
            }
            free(p);
        }
    }
    fl_status st = FL_OK;
    double range[4] = { INFINITY, -INFINITY, INFINITY, -INFINITY };
    for (size_t j = 0; j < m; j++)
        for (size_t i = 0; i < cv[j].n; i++) {
            if (!isfinite(cv[j].x[i]) || !isfinite(cv[j].y[i])) continue;
            range[0] = fmin(range[0], cv[j].x[i]), range[1] = fmax(range[1], cv[j].x[i]);
            range[2] = fmin(range[2], cv[j].y[i]), range[3] = fmax(range[3], cv[j].y[i]);
        }
    if (range[3] >= range[2]) { /* every chart on the same axes */
        double pad = 0.05 * (range[3] - range[2]);
        range[2] -= pad, range[3] += pad;
    } else {
        range[0] = range[1] = range[2] = range[3] = NAN;
    }
    const size_t n_charts = m ? (r->n_groups + FL_REPORT_PER_CHART - 1) / FL_REPORT_PER_CHART : 0;
    char *dir = fl_strfmt("%s/report_curves", r->dir);
    if (!dir) st = FL_ERR_NOMEM;
    if (st == FL_OK && m) st = fl_mkdirs(dir);
    fl_series *ser = calloc(m + 1, sizeof *ser);
    fl_buf *labels = calloc(m + 1, sizeof *labels);
    if (st == FL_OK && (!ser || !labels)) st = FL_ERR_NOMEM;
    for (size_t ch = 0; st == FL_OK && ch < n_charts; ch++) {
        size_t lo = ch * FL_REPORT_PER_CHART, hi = lo + FL_REPORT_PER_CHART, ns = 0;
        if (hi > r->n_groups) hi = r->n_groups;
        for (size_t j = 0; j < m; j++) {
            if (cv[j].rank < lo || cv[j].rank >= hi) continue;
            fl_series *z = &ser[ns++];
            *z = (fl_series){ .x = cv[j].x, .y = cv[j].y, .n = cv[j].n,
                              .colour = palette[(cv[j].rank - lo) % 10],
                              .width = per[cv[j].rank] > 1 ? 1.3 : 1.8,
                              .alpha = per[cv[j].rank] > 1 ? 0.75 : 1 };
            if (cv[j].first) {
                fl_buf_printf(&labels[j], "#%zu ", cv[j].rank + 1);
                fl_report_group_label(r, r->order[cv[j].rank], &labels[j]);
                if (per[cv[j].rank] > 1) fl_buf_printf(&labels[j], " (%zu cells)", per[cv[j].rank]);
                z->label = labels[j].data;
            }
        }
        if (!ns) continue;
        char *title = n_charts > 1 ? fl_strfmt("%s against step, rows %zu to %zu", col, lo + 1, hi)
                                   : fl_strfmt("%s against step", col);
        char *png = fl_strfmt("%s/chart-%zu.png", dir, ch + 1);
        char *svg = fl_strfmt("%s/chart-%zu.svg", dir, ch + 1);
        if (!title || !png || !svg) st = FL_ERR_NOMEM;
        if (st == FL_OK) {
            fl_line_chart c = { .title = title, .xlabel = "training step", .ylabel = col,
                                .series = ser, .n_series = ns, .w = 720, .h = 440,
                                .x_min = range[0], .x_max = range[1], .y_min = range[2],
                                .y_max = range[3] };
            st = fl_chart_lines(&c, png, svg, NULL);
        }
        if (st == FL_OK) {
            fl_buf_printf(h, "<figure><img alt=\"%s against step, report rows %zu to %zu\" "
                             "src=\"data:image/png;base64,", col, lo + 1, hi);
            st = inline_png(png, h);
            fl_buf_printf(h, "\"><figcaption><code>%s</code> from each cell's metrics.csv, "
                             "rows %zu to %zu of the table, one colour per row (its cells, the "
                             "seeds, share it); vector file: <a href=\"report_curves/chart-%zu.svg\">"
                             "chart-%zu.svg</a></figcaption></figure>\n",
                          col, lo + 1, hi, ch + 1, ch + 1);
        }
        free(title);
        free(png);
        free(svg);
    }
    for (size_t j = 0; j < m; j++) {
        free(cv[j].x);
        free(cv[j].y);
        if (labels) fl_buf_free(&labels[j]);
    }
    free(labels);
    free(ser);
    free(cv);
    free(per);
    free(dir);
    free(col);
    return st;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The *.png and *.svg files of one cell directory, sorted (*names owned). */
static size_t pictures_of(const char *path, char ***names)
{
    *names = NULL;
    DIR *d = opendir(path);
    if (!d) return 0;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || (strcmp(de->d_name + len - 4, ".png") && strcmp(de->d_name + len - 4, ".svg")))
            continue;
        if (n == cap) {
            char **grown = realloc(*names, (cap = cap ? 2 * cap : 8) * sizeof *grown);
            if (!grown) break;
            *names = grown;
        }
        if (!((*names)[n] = fl_strdup(de->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(*names, n, sizeof **names, by_name);
    return n;
}

void fl_report_cell_pictures(const fl_report *r, fl_buf *h)
{
    const fl_sweep *s = r->s;
    fl_buf_printf(h, "<h2>Pictures of each cell</h2>\n<p>Each cell's own pictures (written by "
                     "<code>flowlab run</code> and <code>flowlab plot</code>), linked from its "
                     "folder.</p>\n");
    for (size_t k = 0; k < r->n_groups; k++) {
        const fl_report_group *g = &r->g[r->order[k]];
        fl_buf label = { 0 };
        fl_report_group_label(r, r->order[k], &label);
        fl_buf_printf(h, "<h3>Row %zu: ", k + 1);
        fl_report_html_text(h, label.data);
        fl_buf_printf(h, "</h3>\n");
        fl_buf_free(&label);
        for (size_t i = 0; i < g->n_cells; i++) {
            const char *cell = s->cells[g->cells[i]].name;
            char *path = fl_strfmt("%s/%s", r->dir, cell);
            char **names = NULL;
            size_t n = path ? pictures_of(path, &names) : 0;
            fl_buf_printf(h, "<div class=\"cell\"><code>");
            fl_report_html_text(h, cell);
            fl_buf_printf(h, "</code>%s", n ? "<br>" : ": no pictures");
            for (size_t j = 0; j < n; j++) {
                fl_buf_printf(h, "<a href=\"");
                fl_report_html_text(h, cell);
                fl_buf_printf(h, "/");
                fl_report_html_text(h, names[j]);
                fl_buf_printf(h, "\">");
                size_t len = strlen(names[j]);
                if (!strcmp(names[j] + len - 4, ".png")) {
                    fl_buf_printf(h, "<img loading=\"lazy\" alt=\"");
                    fl_report_html_text(h, names[j]);
                    fl_buf_printf(h, "\" src=\"");
                    fl_report_html_text(h, cell);
                    fl_buf_printf(h, "/");
                    fl_report_html_text(h, names[j]);
                    fl_buf_printf(h, "\">");
                }
                fl_report_html_text(h, names[j]);
                fl_buf_printf(h, "</a> ");
                free(names[j]);
            }
            fl_buf_printf(h, "</div>\n");
            free(names);
            free(path);
        }
    }
}
