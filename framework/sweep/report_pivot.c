/* report_pivot.c - `flowlab report --pivot ROWS COLS METRIC`: one field's
 * mean +- standard error over the finished cells of each pair of values of
 * two swept keys (an estimator x k table of test log-likelihood), averaged
 * over every other swept key; as Markdown, CSV, HTML, and a chart of the
 * field against COLS with one line per value of ROWS. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "output/chart.h"
#include "sweep/report_impl.h"

fl_status fl_report_pivot_make(fl_report *r)
{
    const fl_report_opts *o = r->o;
    if (!o->pivot_rows || !o->pivot_cols || !o->pivot_metric) return FL_OK;
    const fl_sweep *s = r->s;
    long ar = fl_sweep_axis_find(s, o->pivot_rows), ac = fl_sweep_axis_find(s, o->pivot_cols);
    long f = fl_report_field_index(r, o->pivot_metric);
    if (ar < 0 || ac < 0 || ar == ac) { /* fl_report_check_opts says which */
        fl_err("--pivot %s %s: two different swept keys are needed", o->pivot_rows, o->pivot_cols);
        return FL_ERR_INVALID;
    }
    if (f < 0) {
        fl_buf list = { 0 };
        for (size_t k = 0; k < r->n_fields; k++)
            fl_buf_printf(&list, "%s%s", k ? ", " : "", r->fields[k]);
        fl_err("--pivot: METRIC '%s' is in no cell's results under %s (fields: %s)",
               o->pivot_metric, r->dir, list.data ? list.data : "none");
        fl_buf_free(&list);
        return FL_ERR_INVALID;
    }
    fl_pivot *p = calloc(1, sizeof *p);
    if (!p) return FL_ERR_NOMEM;
    r->pivot = p;
    p->ar = (size_t)ar;
    p->ac = (size_t)ac;
    p->field = f;
    const size_t nr = s->axes[ar].n, nc = s->axes[ac].n;
    p->cell = calloc(nr * nc + 1, sizeof *p->cell);
    fl_buf avg = { 0 };
    for (size_t a = 0; a < s->n_axes; a++)
        if (a != (size_t)ar && a != (size_t)ac)
            fl_buf_printf(&avg, "%s%s", avg.len ? ", " : "", s->axes[a].key);
    p->averaged = avg.data; /* NULL when no other key is swept */
    if (!p->cell || avg.failed) return FL_ERR_NOMEM;
    /* two passes per table cell: mean, then the spread around it */
    for (size_t i = 0; i < nr * nc; i++) {
        double sum = 0, ss = 0;
        size_t n = 0;
        for (int pass = 0; pass < 2; pass++)
            for (size_t c = 0; c < s->n_cells; c++) {
                const fl_report_cell *cd = &r->cd[c];
                if (cd->state != FL_CELL_DONE || !isfinite(cd->v[f]) ||
                    s->cells[c].choice[ar] != i / nc || s->cells[c].choice[ac] != i % nc)
                    continue;
                if (pass == 0) sum += cd->v[f], n++;
                else ss += (cd->v[f] - sum / (double)n) * (cd->v[f] - sum / (double)n);
            }
        p->cell[i].n = n;
        p->cell[i].mean = n ? sum / (double)n : NAN;
        p->cell[i].se = n >= 2 ? sqrt(ss / (double)(n - 1) / (double)n) : NAN;
    }
    return FL_OK;
}

void fl_report_pivot_free(fl_report *r)
{
    if (!r->pivot) return;
    free(r->pivot->cell);
    free(r->pivot->averaged);
    free(r->pivot);
    r->pivot = NULL;
}

/* "mean ± se (n)" for a table cell; "-" without a value. */
static void fmt_cell(char *buf, size_t cap, const fl_report_stat *st, const char *pm)
{
    char m[64], e[64];
    fl_report_fmt_num(m, sizeof m, st->mean, 5);
    if (!st->n) snprintf(buf, cap, "-");
    else if (!isfinite(st->se)) snprintf(buf, cap, "%s (n=%zu)", m, st->n);
    else {
        fl_report_fmt_num(e, sizeof e, st->se, 2);
        snprintf(buf, cap, "%s %s %s (n=%zu)", m, pm, e, st->n);
    }
}

/* The sentence above the table. */
static void caption(const fl_report *r, fl_buf *b, int md)
{
    const fl_pivot *p = r->pivot;
    const char *q = md ? "`" : "";
    fl_buf_printf(b, "%s%s%s by %s%s%s (rows) and %s%s%s (columns): mean %s standard error over "
                     "the finished cells, n = cells",
                  q, r->fields[p->field], q, q, r->s->axes[p->ar].key, q, q,
                  r->s->axes[p->ac].key, q, md ? "±" : "+-");
    if (p->averaged) fl_buf_printf(b, "; averaged over %s", p->averaged);
    fl_buf_printf(b, ".");
}

void fl_report_pivot_md(const fl_report *r, fl_buf *b)
{
    const fl_pivot *p = r->pivot;
    const fl_sweep *s = r->s;
    const fl_sweep_axis *R = &s->axes[p->ar], *C = &s->axes[p->ac];
    fl_buf_printf(b, "Pivot: ");
    caption(r, b, 1);
    fl_buf_printf(b, "\n\n| %s \\ %s |", R->key, C->key);
    for (size_t j = 0; j < C->n; j++) fl_buf_printf(b, " %s |", C->values[j]);
    fl_buf_printf(b, "\n|---|");
    for (size_t j = 0; j < C->n; j++) fl_buf_printf(b, "---:|");
    fl_buf_printf(b, "\n");
    for (size_t i = 0; i < R->n; i++) {
        fl_buf_printf(b, "| %s |", R->values[i]);
        for (size_t j = 0; j < C->n; j++) {
            char cell[192];
            fmt_cell(cell, sizeof cell, &p->cell[i * C->n + j], "±");
            fl_buf_printf(b, " %s |", cell);
        }
        fl_buf_printf(b, "\n");
    }
}

void fl_report_pivot_csv(const fl_report *r, fl_buf *b)
{
    const fl_pivot *p = r->pivot;
    const fl_sweep_axis *R = &r->s->axes[p->ar], *C = &r->s->axes[p->ac];
    fl_buf_csv(b, R->key);
    for (size_t j = 0; j < C->n; j++)
        for (int k = 0; k < 3; k++) {
            fl_buf t = { 0 };
            fl_buf_printf(&t, "%s=%s_%s", C->key, C->values[j], k == 0 ? "mean" : k == 1 ? "se" : "n");
            fl_buf_printf(b, ",");
            fl_buf_csv(b, t.data ? t.data : "");
            fl_buf_free(&t);
        }
    fl_buf_printf(b, "\n");
    for (size_t i = 0; i < R->n; i++) {
        fl_buf_csv(b, R->values[i]);
        for (size_t j = 0; j < C->n; j++) {
            const fl_report_stat *st = &p->cell[i * C->n + j];
            if (isfinite(st->mean)) fl_buf_printf(b, ",%.9g", st->mean);
            else fl_buf_printf(b, ",");
            if (isfinite(st->se)) fl_buf_printf(b, ",%.9g", st->se);
            else fl_buf_printf(b, ",");
            fl_buf_printf(b, ",%zu", st->n);
        }
        fl_buf_printf(b, "\n");
    }
}

static const fl_rgb palette[10] = {
    { 31, 119, 180 }, { 255, 127, 14 }, { 44, 160, 44 }, { 214, 39, 40 }, { 148, 103, 189 },
    { 140, 86, 75 },  { 227, 119, 194 }, { 127, 127, 127 }, { 188, 189, 34 }, { 23, 190, 207 },
};

/* The chart: the field against COLS (when every value of COLS is a
 * number), one line per value of ROWS and error bars of one standard
 * error; 0 when COLS is not numeric. */
static fl_status pivot_chart(const fl_report *r, const char *png, const char *svg, int *drawn)
{
    const fl_pivot *p = r->pivot;
    const fl_sweep_axis *R = &r->s->axes[p->ar], *C = &r->s->axes[p->ac];
    *drawn = 0;
    double *xv = malloc((C->n + 1) * sizeof *xv);
    if (!xv) return FL_ERR_NOMEM;
    for (size_t j = 0; j < C->n; j++) {
        char *end;
        xv[j] = strtod(C->values[j], &end);
        if (end == C->values[j] || *end || !isfinite(xv[j])) {
            free(xv);
            return FL_OK;
        }
    }
    /* per row: the line (n points), then its error bars as one broken line
     * (3 points per column: low, high, a break) */
    const size_t nr = R->n < 10 ? R->n : 10, nc = C->n;
    double *buf = malloc((nr * (2 * nc + 6 * nc) + 1) * sizeof *buf);
    fl_series *ser = calloc(2 * nr + 1, sizeof *ser);
    char **labels = calloc(nr + 1, sizeof *labels);
    fl_status st = buf && ser && labels ? FL_OK : FL_ERR_NOMEM;
    for (size_t i = 0; st == FL_OK && i < nr; i++) {
        double *lx = buf + i * 8 * nc, *ly = lx + nc, *ex = ly + nc, *ey = ex + 3 * nc;
        for (size_t j = 0; j < nc; j++) {
            const fl_report_stat *c = &p->cell[i * nc + j];
            lx[j] = xv[j];
            ly[j] = c->mean;
            double se = isfinite(c->se) ? c->se : 0;
            ex[3 * j] = ex[3 * j + 1] = xv[j];
            ey[3 * j] = c->mean - se;
            ey[3 * j + 1] = c->mean + se;
            ex[3 * j + 2] = ey[3 * j + 2] = NAN;
        }
        labels[i] = fl_strfmt("%s=%s", R->key, R->values[i]);
        if (!labels[i]) st = FL_ERR_NOMEM;
        ser[2 * i] = (fl_series){ .label = labels[i], .x = lx, .y = ly, .n = nc,
                                  .colour = palette[i], .width = 2, .markers = 1 };
        ser[2 * i + 1] = (fl_series){ .x = ex, .y = ey, .n = 3 * nc, .colour = palette[i],
                                      .width = 1.2 };
    }
    char *title = st == FL_OK ? fl_strfmt("%s by %s and %s", r->fields[p->field], R->key, C->key)
                              : NULL;
    if (st == FL_OK && !title) st = FL_ERR_NOMEM;
    /* x padded so the end points are not on the frame */
    double x0 = INFINITY, x1 = -INFINITY;
    for (size_t j = 0; j < nc; j++) x0 = fmin(x0, xv[j]), x1 = fmax(x1, xv[j]);
    double pad = x1 > x0 ? 0.05 * (x1 - x0) : 0.5;
    if (st == FL_OK) {
        fl_line_chart c = { .title = title, .xlabel = C->key, .ylabel = r->fields[p->field],
                            .series = ser, .n_series = 2 * nr, .w = 640, .h = 400,
                            .x_min = x0 - pad, .x_max = x1 + pad, .y_min = NAN, .y_max = NAN };
        st = fl_chart_lines(&c, png, svg, NULL);
        *drawn = st == FL_OK;
    }
    free(title);
    for (size_t i = 0; labels && i < nr; i++) free(labels[i]);
    free(labels);
    free(ser);
    free(buf);
    free(xv);
    return st;
}

fl_status fl_report_pivot_html(const fl_report *r, fl_buf *h)
{
    const fl_pivot *p = r->pivot;
    const fl_sweep_axis *R = &r->s->axes[p->ar], *C = &r->s->axes[p->ac];
    fl_buf t = { 0 };
    caption(r, &t, 0);
    fl_buf_printf(h, "<h2>Pivot</h2>\n<p>");
    fl_report_html_text(h, t.data);
    fl_buf_free(&t);
    fl_buf_printf(h, " Numbers: <a href=\"report_pivot.csv\">report_pivot.csv</a>.</p>\n<table>\n<tr><th>");
    fl_report_html_text(h, R->key);
    fl_buf_printf(h, " \\ ");
    fl_report_html_text(h, C->key);
    fl_buf_printf(h, "</th>");
    for (size_t j = 0; j < C->n; j++) {
        fl_buf_printf(h, "<th>");
        fl_report_html_text(h, C->values[j]);
        fl_buf_printf(h, "</th>");
    }
    fl_buf_printf(h, "</tr>\n");
    for (size_t i = 0; i < R->n; i++) {
        fl_buf_printf(h, "<tr><td class=\"key\">");
        fl_report_html_text(h, R->values[i]);
        fl_buf_printf(h, "</td>");
        for (size_t j = 0; j < C->n; j++) {
            char cell[192];
            fmt_cell(cell, sizeof cell, &p->cell[i * C->n + j], "&plusmn;");
            fl_buf_printf(h, "<td>%s</td>", cell);
        }
        fl_buf_printf(h, "</tr>\n");
    }
    fl_buf_printf(h, "</table>\n");
    char *dir = fl_strfmt("%s/report_curves", r->dir);
    char *png = fl_strfmt("%s/report_curves/pivot.png", r->dir);
    char *svg = fl_strfmt("%s/report_curves/pivot.svg", r->dir);
    fl_status st = dir && png && svg ? fl_mkdirs(dir) : FL_ERR_NOMEM;
    int drawn = 0;
    if (st == FL_OK) st = pivot_chart(r, png, svg, &drawn);
    unsigned char *bytes = NULL;
    size_t nb = 0;
    if (st == FL_OK && drawn) st = fl_read_file(png, (char **)&bytes, &nb);
    if (st == FL_OK && drawn) {
        fl_buf_printf(h, "<figure><img alt=\"pivot chart\" src=\"data:image/png;base64,");
        fl_report_base64(h, bytes, nb);
        fl_buf_printf(h, "\"><figcaption>The table above as lines, one per row, with bars of one "
                         "standard error (first 10 rows); vector file: <a "
                         "href=\"report_curves/pivot.svg\">pivot.svg</a></figcaption></figure>\n");
    }
    free(bytes);
    free(dir);
    free(png);
    free(svg);
    return st;
}
